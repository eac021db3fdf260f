"""The catalogue of released checkpoints: complete entries whose packages are valid, layout
recognition, the restricted reader, and the `--init` rule (a checkpoint that does not fill
the encoder is an error)."""

from __future__ import annotations

import os

import pytest
import torch

from evtransfer.engine.package import CLASS_NAMES, InputSpec
from evtransfer.models import create_model, list_models
from evtransfer.models.mit import build_mit
from evtransfer.models.released import (
    CATALOGUE,
    LAYOUTS,
    PRODUCTS,
    entry,
    layout_of,
    read_torch_file,
)
from evtransfer.models.weights import encoder_init, save_encoder


def test_every_entry_is_complete_and_its_package_valid():
    names = [e.name for e in CATALOGUE]
    assert len(names) == len(set(names))
    assert {"e2vid-lightweight", "e2vid", "ess-dsec", "ess-ddd17", "evdistill-ddd17-student",
            "evdistill-ddd17-teacher", "ecddp-swin-t", "bicross",
            "dpt-hybrid-midas"} <= set(names)
    for e in CATALOGUE:
        assert entry(e.name) is e
        assert e.layout in LAYOUTS and e.product in PRODUCTS
        assert e.paper and e.file_name and e.published and e.key_map and e.figure
        assert e.expects is not None and e.expects.source.startswith("code:")
        if e.product != "package":
            assert not e.package and e.used_by
            continue
        spec = InputSpec(**e.package)  # raises on an inconsistent protocol
        assert e.model in list_models()
        assert spec.channels() == e.kwargs["in_chans"]
        assert tuple(spec.size) == tuple(e.expects.size)
        assert tuple(spec.sensor) == tuple(e.expects.sensor)
        if e.task == "segmentation" and e.label_space:
            assert len(CLASS_NAMES[e.label_space]) == e.kwargs["num_classes"]
    with pytest.raises(ValueError, match="unknown released checkpoint 'ess'.*ess-dsec"):
        entry("ess")


def test_layouts_are_recognised_from_their_keys():
    t = torch.zeros(1)
    assert layout_of({"arch": "E2VIDRecurrent", "model": {"num_bins": 5},
                      "state_dict": {"unetrecurrent.head.conv2d.weight": t}}) == "rpg_e2vid"
    assert layout_of({"front_sensor_a": {}, "front_sensor_b": {}, "back_end": {},
                      "epoch": 3, "step_count": 1}) == "ess"
    assert layout_of({"backbone.conv1.weight": t, "aspp.conv1.weight": t,
                      "decoder.conv1.weight": t}) == "evdistill"
    assert layout_of({"state_dict": {"module.backbone.conv1.weight": t,
                                     "module.aspp.conv1.weight": t,
                                     "module.decoder.conv1.weight": t}}) == "evdistill"
    assert layout_of({"model": {"student.backbone.patch_embed.proj.weight": t},
                      "current_epoch": 1}) == "ecddp"
    assert layout_of({"model_state_dict": {"scratch.output_conv.0.weight": t}}) == "bicross"
    assert layout_of({"pretrained.model.cls_token": t, "scratch.layer1_rn.weight": t}) == "dpt"
    for other in ({"encoder.stages.0.weight": t}, {"backbone.conv1.weight": t}, [t], t):
        assert layout_of(other) is None


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this would run",))


def test_files_are_read_without_running_code(tmp_path):
    evil = tmp_path / "Epoch_1.pt"
    torch.save({"front_sensor_b": _RunsCode()}, evil)
    with pytest.raises(ValueError, match=r"Epoch_1.pt: refused.*run code"):
        read_torch_file(evil)
    with pytest.raises(ValueError, match="not found"):
        read_torch_file(tmp_path / "absent.pt")
    good = tmp_path / "ok.pt"
    torch.save({"epoch": 2, "w": torch.ones(3)}, good)
    assert read_torch_file(good)["w"].shape == (3,)


def test_init_that_does_not_fill_the_encoder_is_an_error(tmp_path):
    """`--init` (the encoder_init scope): an input conv for other channels may stay at its
    init, but a checkpoint of another architecture (0 tensors in the first model) or one
    that fills an encoder partially is refused when the model is built, not trained from
    scratch."""
    mit = build_mit("b0", in_chans=2, seed=5)
    whole = save_encoder(tmp_path / "mit.safetensors", mit, {"method": "test"})
    with encoder_init(whole) as scope:
        create_model("segformer_b0", in_chans=1, num_classes=3)  # stem adapted: fine
    assert scope.reports[0][1].loaded
    other = r"mit.safetensors: matches no tensor of upernet_swin_t's encoder"
    with encoder_init(whole), pytest.raises(ValueError, match=other):
        create_model("upernet_swin_t", in_chans=2, num_classes=3)
    state = mit.state_dict()
    part = tmp_path / "part.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in list(state.items())[:-4]}, str(part))
    partial = r"part.safetensors: --init into .* loads \d+ of the \d+ .*not loaded: .*lacks"
    with encoder_init(part), pytest.raises(ValueError, match=partial):
        create_model("segformer_b0", in_chans=2, num_classes=3)


def test_image_input_spec_of_evdistill_packages():
    """EvDistill's packages take a half of its released PNGs (3 channels, no window)."""
    spec = InputSpec(modality="images", kind="event_image", sensor=(346, 260), size=(256, 512))
    assert spec.channels() == 3 and "event image" in spec.window_text()
    assert InputSpec(**{**entry("evdistill-ddd17-teacher").package}).kind == "aps_frame"
    with pytest.raises(ValueError, match="image kind must be one of"):
        InputSpec(modality="images", kind="voxel", sensor=(346, 260), size=(256, 512))
    with pytest.raises(ValueError, match="'events', 'spikes' or 'images'"):
        InputSpec(modality="frames", sensor=(346, 260), size=(256, 512))
