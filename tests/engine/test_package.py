import json

import pytest
import torch
from safetensors.torch import save_file

from evtransfer.engine.checkpoint import save_checkpoint
from evtransfer.engine.package import (
    CLASS_NAMES,
    InputSpec,
    ModelSpec,
    build_network,
    find_package,
    method_spec,
    read_package,
    save_package,
)
from evtransfer.io.base import FormatError
from evtransfer.models import create_model
from evtransfer.represent import EvSegNet, SpikeStack, VoxelGrid
from evtransfer.viz import DSEC11_PALETTE

NET = {"model": "segformer_b0", "kwargs": {"in_chans": 5, "num_classes": 11},
       "task": "segmentation", "output": "logits"}
INPUTS = InputSpec(window_us=50_000, sensor=(64, 48), size=(48, 64))


def _package(path, **overrides):
    net = create_model("segformer_b0", in_chans=5, num_classes=11, seed=3)
    spec = method_spec({**NET, **overrides}, method="cmess", inputs=INPUTS, label_space="dsec11",
                       provenance={"seed": 3})
    return save_package(path, net, spec), net


def test_round_trip_keeps_weights_and_spec(tmp_path):
    path, net = _package(tmp_path / "m.safetensors")
    spec, state, file = read_package(path)
    assert file == path and spec.method == "cmess" and spec.input == INPUTS
    assert spec.class_names == CLASS_NAMES["dsec11"]
    assert spec.palette == tuple(tuple(int(c) for c in rgb) for rgb in DSEC11_PALETTE)
    assert spec.evtransfer_version and spec.provenance == {"seed": 3}
    rebuilt = build_network(spec, state, file=file)
    for k, v in net.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[k], v), k
    assert not rebuilt.training


def test_method_input_overrides_and_unknown_keys():
    spec = method_spec({**NET, "input": {"size": (32, 64)}}, method="x", inputs=INPUTS)
    assert spec.input.size == (32, 64) and spec.input.window_us == 50_000
    with pytest.raises(ValueError, match="unknown MethodResult.spec keys"):
        method_spec({**NET, "weights": 1}, method="x", inputs=INPUTS)


@pytest.mark.parametrize("fields, match", [
    ({"window_us": 0}, "exactly one of window_us and window_events"),
    ({"window_events": 100}, "exactly one of window_us and window_events"),
    ({"kind": "frames"}, r"event kind must be one of \('voxel', 'histogram', 'evsegnet'\)"),
    ({"kind": "voxel", "bins": 0}, "bins must be >= 1"),
    ({"modality": "spikes", "kind": "voxel", "frames": 4}, r"spike kind .*\('spike_stack',\)"),
    ({"modality": "spikes", "kind": "spike_stack"}, "frames >= 1"),
    ({"crop_bottom": 48}, "crop_bottom"),
    ({"size": (0, 64)}, "size"),
    ({"resize": "cubic"}, "resize"),
])
def test_input_spec_refuses_inconsistent_fields(fields, match):
    base = {"window_us": 50_000, "sensor": (64, 48), "size": (48, 64)}
    with pytest.raises(ValueError, match=match):
        InputSpec(**{**base, **fields})


def test_input_channels_and_model_spec_checks():
    assert InputSpec(bins=5, num_windows=20, window_events=100_000, sensor=(640, 480),
                     size=(440, 640)).channels() == 100
    assert InputSpec(kind="evsegnet", window_us=1, sensor=(4, 4), size=(4, 4)).channels() == 6
    with pytest.raises(ValueError, match="in_chans=3 but the input spec gives 5"):
        ModelSpec("m", "segmentation", "segformer_b0", {"in_chans": 3, "num_classes": 2}, INPUTS)
    with pytest.raises(ValueError, match="outputs"):
        ModelSpec("m", "depth", "dpt_mit_b0", {}, INPUTS, output="logits")
    with pytest.raises(ValueError, match="2 class_names for 11 classes"):
        ModelSpec("m", "segmentation", "segformer_b0", {"num_classes": 11}, INPUTS,
                  class_names=("a", "b"))


def test_find_package_in_folders(tmp_path):
    _package(tmp_path / "run" / "models" / "cmess-seed0.safetensors")
    assert find_package(tmp_path / "run").name == "cmess-seed0.safetensors"
    _package(tmp_path / "run" / "models" / "cmess-seed1.safetensors")
    with pytest.raises(FormatError, match="holds 2 model packages"):
        find_package(tmp_path / "run")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError, match="no model package"):
        find_package(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        find_package(tmp_path / "missing")


def test_training_checkpoint_is_refused_clearly(tmp_path):
    net = create_model("segformer_b0", in_chans=5, num_classes=11)
    ckpt = save_checkpoint(tmp_path / "stage" / "checkpoints" / "last", {"model": net}, {})
    with pytest.raises(FormatError, match="training checkpoint"):
        read_package(ckpt / "model.safetensors")
    with pytest.raises(FormatError, match="training stage or checkpoint folder"):
        read_package(tmp_path / "stage")


def _raw(path, meta):
    save_file({"w": torch.zeros(2)}, str(path), metadata=meta)
    return path


def test_foreign_broken_and_newer_files_are_refused(tmp_path):
    with pytest.raises(FormatError, match="not an evtransfer model package"):
        read_package(_raw(tmp_path / "a.safetensors", {"format": "pt"}))
    with pytest.raises(FormatError, match="not valid JSON"):
        read_package(_raw(tmp_path / "b.safetensors", {"format": "evtransfer.model",
                                                        "spec": "{"}))
    path, _ = _package(tmp_path / "c.safetensors")
    spec = json.loads(read_package(path)[0].to_json())
    newer = _raw(tmp_path / "d.safetensors", {"format": "evtransfer.model",
                                              "spec": json.dumps({**spec, "format_version": 9})})
    with pytest.raises(FormatError, match="version 9 is not supported"):
        read_package(newer)
    extra = _raw(tmp_path / "e.safetensors", {"format": "evtransfer.model",
                                              "spec": json.dumps({**spec, "colour": 1})})
    with pytest.raises(FormatError, match=r"unknown fields \['colour'\]"):
        read_package(extra)
    (tmp_path / "f.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(FormatError, match="not a readable safetensors"):
        read_package(tmp_path / "f.safetensors")


def test_weights_of_another_network_are_refused(tmp_path):
    path, _ = _package(tmp_path / "m.safetensors")
    spec, state, file = read_package(path)
    with pytest.raises(FormatError, match="weights do not fit"):
        build_network(spec, {k: v for k, v in state.items() if "classifier" not in k}, file=file)
    wrong = ModelSpec.from_dict({**json.loads(spec.to_json()),
                                 "kwargs": {"in_chans": 5, "num_classes": 11},
                                 "model": "segformer_b1"})
    with pytest.raises(FormatError, match="weights do not fit"):
        build_network(wrong, state, file=file)
    unknown = ModelSpec.from_dict({**json.loads(spec.to_json()), "model": "nonet"})
    with pytest.raises(FormatError, match="cannot build"):
        build_network(unknown, state, file=file)


# the spec JSON a package held before representations were objects (evtransfer 0.x, format 1)
OLD_SPEC = {"class_names": [], "depth_range": [0.001, 80.0], "evtransfer_version": "0.1.0",
            "format_version": 1, "input": {"bins": 5, "crop_bottom": 40, "frames": 0,
                                           "kind": "evsegnet", "modality": "events",
                                           "normalize": True, "num_windows": 2,
                                           "resize": "bilinear", "sensor": [640, 480],
                                           "size": [440, 640], "window_events": 100000,
                                           "window_us": 0},
            "kwargs": {"in_chans": 12, "num_classes": 11}, "label_space": "dsec11",
            "method": "ess", "model": "segformer_b0", "output": "logits", "palette": [],
            "provenance": {}, "task": "segmentation"}


def test_old_spec_json_resolves_to_representation_objects(tmp_path):
    path = _raw(tmp_path / "old.safetensors", {"format": "evtransfer.model",
                                               "spec": json.dumps(OLD_SPEC)})
    spec = read_package(path)[0]
    assert spec.input.representation() == EvSegNet(normalize=True)
    assert spec.input.channels() == 12
    assert json.loads(spec.to_json()) == OLD_SPEC  # the file format is unchanged
    assert INPUTS.representation() == VoxelGrid(bins=5, normalize=True)
    spikes = InputSpec(modality="spikes", kind="spike_stack", frames=4, sensor=(4, 4),
                       size=(4, 4))
    assert spikes.representation() == SpikeStack(frames=4) and spikes.channels() == 4
    images = InputSpec(modality="images", kind="aps_frame", sensor=(4, 4), size=(4, 4))
    with pytest.raises(ValueError, match="read from files"):
        images.representation()
