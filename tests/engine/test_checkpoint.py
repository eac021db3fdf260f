import os

import pytest
import safetensors.torch
import torch
from torch import nn

from evtransfer.engine import (
    CheckpointError,
    load_checkpoint,
    load_module_weights,
    read_state,
    resolve_checkpoint,
    save_checkpoint,
)
from evtransfer.engine import checkpoint as ckpt_mod


def _modules(seed=0):
    torch.manual_seed(seed)
    return {"enc": nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), "head": nn.Linear(4, 2)}


RNG = torch.Generator().manual_seed(3).get_state()


def _state(step=7):
    opt = torch.optim.AdamW(nn.Linear(2, 2).parameters(), lr=0.1, betas=(0.8, 0.9))
    return {"step": step, "opt": opt.state_dict(), "rng": RNG, "note": None, "t": (1, 2.5)}


def _equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip(tmp_path):
    src = _modules(0)
    save_checkpoint(tmp_path / "last", src, _state(7))
    files = sorted(p.name for p in (tmp_path / "last").iterdir())
    assert files == ["model.safetensors", "state.pt"]
    dst = _modules(1)
    assert not _equal(src["enc"], dst["enc"])
    state = load_checkpoint(tmp_path / "last", dst)
    assert _equal(src["enc"], dst["enc"]) and _equal(src["head"], dst["head"])
    assert state["step"] == 7 and state["note"] is None and state["t"] == (1, 2.5)
    assert torch.equal(state["rng"], RNG)
    assert state["opt"]["param_groups"][0]["betas"] == (0.8, 0.9)
    keys = safetensors.torch.load_file(str(tmp_path / "last" / "model.safetensors")).keys()
    assert "enc/0.weight" in keys and "head/bias" in keys


def test_overwrite_replaces_and_leaves_no_temporaries(tmp_path):
    save_checkpoint(tmp_path / "last", _modules(0), _state(1))
    new = _modules(2)
    save_checkpoint(tmp_path / "last", new, _state(2))
    assert sorted(os.listdir(tmp_path)) == ["last"]
    dst = _modules(3)
    assert load_checkpoint(tmp_path / "last", dst)["step"] == 2
    assert _equal(new["head"], dst["head"])


def test_failed_write_keeps_the_good_checkpoint(tmp_path, monkeypatch):
    good = _modules(0)
    save_checkpoint(tmp_path / "last", good, _state(1))

    def partial_save(obj, path):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", partial_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "last", _modules(5), _state(2))
    monkeypatch.undo()
    dst = _modules(9)
    assert load_checkpoint(tmp_path / "last", dst)["step"] == 1
    assert _equal(good["enc"], dst["enc"])
    save_checkpoint(tmp_path / "last", _modules(6), _state(3))  # the stale temp is discarded
    assert sorted(os.listdir(tmp_path)) == ["last"]


def test_crash_between_renames_falls_back_to_old(tmp_path):
    good = _modules(0)
    save_checkpoint(tmp_path / "last", good, _state(4))
    os.replace(tmp_path / "last", tmp_path / ".last.old")  # as if killed after the first rename
    assert resolve_checkpoint(tmp_path / "last") == tmp_path / ".last.old"
    dst = _modules(1)
    assert load_checkpoint(tmp_path / "last", dst)["step"] == 4
    assert _equal(good["head"], dst["head"])
    save_checkpoint(tmp_path / "last", _modules(2), _state(5))
    assert sorted(os.listdir(tmp_path)) == ["last"]
    assert read_state(tmp_path / "last")["step"] == 5


class _Evil:
    def __reduce__(self):
        return (open, (str(_Evil.marker), "w"))


def test_loading_never_executes_code(tmp_path):
    save_checkpoint(tmp_path / "last", _modules(0), _state(1))
    _Evil.marker = tmp_path / "pwned"
    torch.save(
        {"format": "evtransfer.checkpoint", "version": 1, "x": _Evil()},
        tmp_path / "last" / "state.pt",
    )
    with pytest.raises(CheckpointError, match="state.pt.*refused"):
        load_checkpoint(tmp_path / "last", _modules(1))
    assert not _Evil.marker.exists()


def test_save_refuses_non_plain_state(tmp_path):
    with pytest.raises(ValueError, match=r"state\.x.*_Evil"):
        save_checkpoint(tmp_path / "last", _modules(0), {"x": _Evil()})
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "last", _modules(0), {"version": 2})
    assert not (tmp_path / "last").exists()


def test_corrupted_and_foreign_files(tmp_path):
    save_checkpoint(tmp_path / "last", _modules(0), _state(1))
    state_file = tmp_path / "last" / "state.pt"
    data = state_file.read_bytes()
    state_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="state.pt: corrupted"):
        load_checkpoint(tmp_path / "last", _modules(1))
    torch.save({"step": 3}, state_file)
    with pytest.raises(CheckpointError, match="not an evtransfer checkpoint"):
        read_state(tmp_path / "last")
    save_checkpoint(tmp_path / "last", _modules(0), _state(1))
    (tmp_path / "last" / "model.safetensors").write_bytes(b"\x05\x00\x00\x00")
    with pytest.raises(CheckpointError, match="model.safetensors: corrupted"):
        load_checkpoint(tmp_path / "last", _modules(1))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "elsewhere", _modules(1))


def test_module_mismatches_are_named(tmp_path):
    save_checkpoint(tmp_path / "last", _modules(0), _state(1))
    with pytest.raises(CheckpointError, match="no module 'tail'"):
        load_checkpoint(tmp_path / "last", {**_modules(1), "tail": nn.Linear(1, 1)})
    with pytest.raises(CheckpointError, match=r"modules \['head'\] not being loaded"):
        load_checkpoint(tmp_path / "last", {"enc": _modules(1)["enc"]})
    enc = _modules(1)["enc"]
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    with pytest.raises(CheckpointError, match="'head' key '(weight|bias)': shape"):
        load_checkpoint(tmp_path / "last", {"enc": enc, "head": nn.Linear(4, 3)})
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())  # untouched
    with pytest.raises(CheckpointError, match="missing keys"):
        load_module_weights(tmp_path / "last", "head", nn.Sequential(nn.Linear(4, 2)))


def test_single_module_loading(tmp_path):
    src = _modules(0)
    save_checkpoint(tmp_path / "last", src, _state(1))
    head = nn.Linear(4, 2)
    load_module_weights(tmp_path / "last", "head", head)
    assert _equal(head, src["head"])


def test_tied_weights_and_bad_names(tmp_path):
    lin = nn.Linear(3, 3, bias=False)
    tied = nn.ModuleDict({"a": lin, "b": nn.Linear(3, 3, bias=False)})
    tied["b"].weight = lin.weight
    save_checkpoint(tmp_path / "t", {"m": tied}, {})
    fresh = nn.ModuleDict({"a": nn.Linear(3, 3, bias=False), "b": nn.Linear(3, 3, bias=False)})
    load_checkpoint(tmp_path / "t", {"m": fresh})
    assert torch.equal(fresh["a"].weight, lin.weight) and torch.equal(fresh["b"].weight, lin.weight)
    with pytest.raises(ValueError, match="module name 'a/b'"):
        save_checkpoint(tmp_path / "u", {"a/b": lin}, {})


def test_missing_weights_file(tmp_path):
    save_checkpoint(tmp_path / "last", _modules(0), _state(1))
    os.remove(tmp_path / "last" / "model.safetensors")
    with pytest.raises(CheckpointError, match="missing weights file"):
        load_checkpoint(tmp_path / "last", _modules(1))
