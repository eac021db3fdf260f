"""`evtransfer weights list|inspect|convert` on files in the official layouts, written from the
reference networks (../shared/refs/uzh-rpg+rpg_e2vid, uzh-rpg+ess), and on bad files."""

from __future__ import annotations

import json
import os
import pickle
import re

import torch

from evtransfer.cli import main
from evtransfer.inference import load_model
from evtransfer.methods._stages import StageConfig, reconstruction_network
from evtransfer.models.released import CATALOGUE
from tests.inference.test_released_parity import _checkpoint
from tests.models.test_e2vid_released import (
    LIGHTWEIGHT,
    UPSAMPLE,
    _reference,
    _save_official,
    _windows,
)


def test_list_prints_the_catalogue(capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    for e in CATALOGUE:
        assert f"{e.name}  (" in out and e.file_name in out
    assert main(["weights", "list", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["name"] for r in rows] == [e.name for e in CATALOGUE]
    ess = next(r for r in rows if r["name"] == "ess-dsec")
    assert ess["package"]["num_windows"] == 20 and ess["expects"]["size"] == [440, 640]


def test_e2vid_lightweight_inspects_and_converts_to_recon_weights(tmp_path, capsys):
    """The converted file is what `stages.recon_weights` reads (strictly) with the
    lightweight architecture; its reconstructions over 3 windows equal rpg_e2vid's."""
    ref = _reference(LIGHTWEIGHT, seed=2)
    path = tmp_path / "E2VID_lightweight.pth.tar"
    _save_official(ref, LIGHTWEIGHT, path)
    assert main(["weights", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    n = len(ref.state_dict())
    assert "(layout rpg_e2vid)" in out
    assert f"--as e2vid-lightweight: all {n} tensors map onto RecurrentUNet" in out
    out_file = tmp_path / "e2vid.safetensors"
    assert main(["weights", "convert", str(path), "--as", "e2vid-lightweight", "-o",
                 str(out_file)]) == 0
    cfg = StageConfig(recon_weights=str(out_file), recon_norm="bn", recon_decoder="transposed",
                      recon_base_channels=32)
    ours = reconstruction_network(cfg, 5).eval()
    state_ref = state_ours = None
    with torch.no_grad():
        for x in _windows(3, 5, 32, 48, seed=1):
            want, state_ref = ref(x, state_ref)
            got, state_ours = ours(x, state_ours)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_other_e2vid_architecture_is_converted_only_as_itself(tmp_path, capsys):
    ref = _reference({**UPSAMPLE, "base_num_channels": 8}, seed=0)
    path = tmp_path / "E2VID.pth.tar"
    _save_official(ref, {**UPSAMPLE, "base_num_channels": 8}, path)
    assert main(["weights", "convert", str(path), "--as", "e2vid-lightweight", "-o",
                 str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "E2VID.pth.tar: an E2VID" in err and "--as e2vid" in err and err.count("\n") == 1
    assert main(["weights", "convert", str(path), "--as", "e2vid", "-o",
                 str(tmp_path / "x.safetensors")]) == 0


def test_ess_checkpoint_converts_to_a_package_load_model_takes(tmp_path, capsys):
    """An ESS `Epoch_N.pt` written from the reference networks: inspect names both ESS entries
    (the 6-class one refused, saying which fits), convert writes a package whose network
    returns the reference decoder's logits on a short sequence."""
    path = tmp_path / "Epoch_3.pt"
    e2vid, decoder = _checkpoint(path, 11, seed=4)
    assert main(["weights", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "(layout ess)" in out and "--as ess-dsec: all" in out
    assert "--as ess-ddd17: refused:" in out and "convert it --as ess-dsec" in out
    package = tmp_path / "ess.safetensors"
    assert main(["weights", "convert", str(path), "--as", "ess-dsec", "-o", str(package)]) == 0
    model = load_model(package)
    assert model.input.num_windows == 20 and model.input.window_events == 100_000
    assert model.spec.label_space == "dsec11" and model.spec.provenance["file"] == "Epoch_3.pt"
    x = torch.randn(1, 100, 32, 48) * (torch.rand(1, 100, 32, 48) < 0.2)
    state = None
    with torch.no_grad():
        for w in x.split(5, dim=1):  # ESS runs E2VID window by window after the normalisation
            nz = w != 0
            mean = w.sum() / nz.sum()
            std = ((w ** 2).sum() / nz.sum() - mean ** 2).sqrt()
            _, state, latent = e2vid(nz * (w - mean) / std, state)
        want = decoder(latent)[1]
        got = model.network(x)
    assert float((got - want).abs().max()) <= 1e-5 * float(want.abs().max())


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this would run",))


def test_bad_files_give_one_line_errors(tmp_path, capsys):
    evil = tmp_path / "Epoch_1.pt"
    torch.save({"front_sensor_b": _RunsCode(), "back_end": {}, "epoch": 1}, evil)
    bare = tmp_path / "model.pth"
    bare.write_bytes(pickle.dumps(_RunsCode(), protocol=2))
    good = tmp_path / "good.pth"
    torch.save({"front_sensor_a": {}, "front_sensor_b": {}, "back_end": {}, "epoch": 1,
                "step_count": 2}, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:100])
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    other = tmp_path / "other.pth"
    torch.save({"encoder.stem.weight": torch.ones(2)}, other)
    cases = ((evil, "refused.*run code"), (bare, "refused.*run code"),
             (truncated, "not a readable torch checkpoint"), (text, "not a"),
             (other, r"not a released layout.*encoder\.stem\.weight"),
             (tmp_path / "absent.pt", "not found"))
    for path, what in cases:
        for argv in (["inspect", str(path)],
                     ["convert", str(path), "--as", "ess-dsec", "-o",
                      str(tmp_path / "o.safetensors")]):
            assert main(["weights", *argv]) == 2, (path, argv)
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and str(path) in err, err
            assert re.search(what, err) or argv[0] == "convert" and path == other, err
    assert not (tmp_path / "o.safetensors").exists()
    assert main(["weights", "convert", str(good), "--as", "e2vid-lightweight", "-o",
                 str(tmp_path / "o.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "not e2vid-lightweight's layout" in err and "found a ESS" in err


def test_ecddp_swin_converts_to_an_encoder_that_init_fills(tmp_path, capsys):
    """ECDDP's released layout ({"model": student/teacher backbones, "optimizer",
    "current_epoch"}) converts to an encoder checkpoint that `--init` loads into a
    fine-tuning UPerNet Swin-T of another input width (only the patch embedding's conv left
    at its init, as ECDDP's fine-tuning re-initialises it); the student, not the teacher."""
    from evtransfer.models import create_model
    from evtransfer.models.released.ecddp import ecddp_swin_t
    from evtransfer.models.weights import encoder_init

    released = ecddp_swin_t(6, seed=3)
    names = {k.replace("encoder.", "", 1) if k.startswith("encoder.") else
             k.replace("fusion.", "", 1): v for k, v in released.state_dict().items()}
    state = {f"student.backbone.{k}": v for k, v in names.items()}
    state |= {f"teacher.backbone.{k}": v + 1 for k, v in names.items()}
    path = tmp_path / "ecddp_swin_t.pt"
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []},
                "current_epoch": 300}, path)
    assert main(["weights", "inspect", str(path)]) == 0
    assert "--as ecddp-swin-t: all" in capsys.readouterr().out
    out = tmp_path / "ecddp-enc.safetensors"
    assert main(["weights", "convert", str(path), "--as", "ecddp-swin-t", "-o", str(out)]) == 0
    with encoder_init(out) as scope:
        net = create_model("upernet_swin_t", in_chans=20, num_classes=11, eps=1e-6)
    report = scope.reports[0][1]
    assert [k for k, *_ in report.mismatched] == ["patch_embed.proj.weight"]
    w = "layers.2.blocks.3.attn.qkv.weight"
    assert torch.equal(net.encoder.state_dict()[w], released.encoder.state_dict()[w])


def test_bicross_layouts_are_recognised_and_foreign_tensors_named(tmp_path, capsys):
    """A BiCross trainer file whose tensors are not DPT-Hybrid's is refused by name. The
    loader's parity (tests/models/test_dpt_parity.py) runs on a reduced hybrid; a full-size
    file is 490 MB, too large for this suite."""
    path = tmp_path / "DPTDepthModel_best.pt"
    torch.save({"model_state_dict": {"backbone.layer1.weight": torch.ones(2)},
                "optimizer_backbone_state_dict": {"state": {}, "param_groups": []}}, path)
    assert main(["weights", "inspect", str(path)]) == 1
    out = capsys.readouterr().out
    assert "(layout bicross)" in out and "--as bicross: refused:" in out
    assert "backbone.layer1.weight" in out
    assert main(["weights", "convert", str(path), "--as", "bicross", "-o",
                 str(tmp_path / "b.safetensors")]) == 2
    assert "backbone.layer1.weight" in capsys.readouterr().err
    assert main(["weights", "convert", str(path), "--as", "dpt-hybrid-midas", "-o",
                 str(tmp_path / "b.safetensors")]) == 2
    assert "not dpt-hybrid-midas's layout" in capsys.readouterr().err
