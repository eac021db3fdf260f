from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from evtransfer.config import ConfigError, load_config, parse_override, save_resolved, to_dict
from evtransfer.engine import LoopConfig


@dataclass
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    kind: Literal["adamw", "sgd"] = "adamw"


@dataclass
class Data:
    root: Path = Path("data")
    crop: list[int] = field(default_factory=lambda: [64, 64])
    classes: dict[str, int] = field(default_factory=dict)
    limit: int | None = None


@dataclass
class Cfg:
    name: str
    seed: int = 0
    optim: Optim = field(default_factory=Optim)
    data: Data = field(default_factory=Data)
    train: LoopConfig = field(default_factory=LoopConfig)
    flags: tuple[bool, ...] = ()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_yaml_maps_onto_nested_dataclasses_with_coercion(tmp_path):
    path = _write(
        tmp_path,
        "name: run\n"
        "optim: {lr: 1e-4, betas: [0, 0.99], kind: sgd}\n"  # YAML reads 1e-4 as a string
        "data: {root: /x, crop: [32, 48], classes: {car: 1}, limit: null}\n"
        "train: {epochs: 3, amp: bf16}\n"
        "flags: [true, false]\n",
    )
    cfg = load_config(Cfg, path)
    assert cfg.name == "run" and cfg.seed == 0
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.betas == (0.0, 0.99) and isinstance(cfg.optim.betas[0], float)
    assert cfg.optim.kind == "sgd"
    assert cfg.data.root == Path("/x") and cfg.data.crop == [32, 48]
    assert cfg.data.classes == {"car": 1} and cfg.data.limit is None
    assert cfg.train.epochs == 3 and cfg.train.amp == "bf16" and cfg.train.log_every == 20
    assert cfg.flags == (True, False)


def test_unknown_key_names_dotted_key_and_file(tmp_path):
    path = _write(tmp_path, "name: a\noptim: {lrr: 0.1}\n")
    with pytest.raises(ConfigError, match=r"cfg\.yaml.*'optim\.lrr'"):
        load_config(Cfg, path)
    with pytest.raises(ConfigError, match="unknown key 'extra'"):
        load_config(Cfg, {"name": "a", "extra": 1})


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"name": "a", "seed": "3"}, "seed"),
        ({"name": "a", "seed": 1.5}, "seed"),
        ({"name": "a", "seed": True}, "seed"),
        ({"name": 5}, "name"),
        ({"name": "a", "optim": {"kind": "adam"}}, "optim.kind"),
        ({"name": "a", "optim": {"betas": [0.9]}}, "optim.betas"),
        ({"name": "a", "optim": {"lr": "fast"}}, "optim.lr"),
        ({"name": "a", "data": {"crop": 64}}, "data.crop"),
        ({"name": "a", "data": {"crop": [64, "x"]}}, r"data.crop\[1\]"),
        ({"name": "a", "train": {"progress": "yes"}}, "train.progress"),
        ({"name": "a", "optim": 3}, "optim"),
    ],
)
def test_wrong_types_name_the_key(data, key):
    with pytest.raises(ConfigError, match=key):
        load_config(Cfg, data)


def test_missing_required_key_and_dataclass_validation():
    with pytest.raises(ConfigError, match="missing required key 'name'"):
        load_config(Cfg, {})
    with pytest.raises(ConfigError, match="train.epochs must be >= 1"):
        load_config(Cfg, {"name": "a", "train": {"epochs": 0}})


def test_overrides(tmp_path):
    path = _write(tmp_path, "name: a\noptim: {lr: 0.1}\n")
    cfg = load_config(
        Cfg, path, ["optim.lr=1e-4", "train.epochs=7", "data.crop=[8, 16]", "data.classes.road=0"]
    )
    assert cfg.optim.lr == 1e-4 and cfg.train.epochs == 7
    assert cfg.data.crop == [8, 16] and cfg.data.classes == {"road": 0}
    assert load_config(Cfg, path).optim.lr == 0.1  # the file itself is untouched
    with pytest.raises(ConfigError, match="unknown key 'optim.momentum'"):
        load_config(Cfg, path, ["optim.momentum=0.9"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(Cfg, path, ["optim.lr"])
    with pytest.raises(ConfigError, match="'seed' has no sub-keys"):
        load_config(Cfg, path, ["seed.x=1"])


def test_parse_override_uses_yaml_values():
    assert parse_override("a.b=true") == (["a", "b"], True)
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    assert parse_override("a=null") == (["a"], None)
    assert parse_override("a=x=y") == (["a"], "x=y")


def test_dict_source_is_not_mutated():
    source = {"name": "a", "optim": {"lr": 0.5}}
    load_config(Cfg, source, ["optim.lr=0.25"])
    assert source == {"name": "a", "optim": {"lr": 0.5}}


def test_save_resolved_round_trips(tmp_path):
    cfg = load_config(Cfg, {"name": "a", "optim": {"lr": 2e-4}}, ["train.epochs=4"])
    run_dir = save_resolved(cfg, tmp_path / "run", argv=["evtransfer", "train", "--x"])
    assert load_config(Cfg, run_dir / "config.yaml") == cfg
    assert yaml.safe_load((run_dir / "config.yaml").read_text()) == to_dict(cfg)
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["version"] == __import__("evtransfer").__version__
    assert meta["argv"] == ["evtransfer", "train", "--x"]
    sha = meta["git_sha"]
    assert sha is None or (len(sha) == 40 and int(sha, 16) >= 0)


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(Cfg, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(Cfg, _write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Cfg, _write(tmp_path, "a: [1,\n"))
