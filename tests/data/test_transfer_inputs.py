"""`EventInput` kinds (voxel, 2-channel histogram, Ev-SegNet 6 channels) and the cache key."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from evtransfer.data.synthetic import SensorRandomization
from evtransfer.data.transfer import EventInput, TransferDataConfig, _key
from evtransfer.events import Events
from evtransfer.represent import evsegnet_encoding, histogram, voxel_grid


def _events() -> Events:
    rng = np.random.default_rng(0)
    n = 200
    return Events(rng.integers(0, 12, n).astype(np.int16), rng.integers(0, 9, n).astype(np.int16),
                  np.sort(rng.integers(0, 10_000, n)).astype(np.int64),
                  rng.choice(np.array([-1, 1], np.int8), n), width=12, height=9)


def _standardised(x: np.ndarray) -> np.ndarray:
    """Non-zero entries of one item → (v − mean) / std (N − 1), float64."""
    nz = x != 0
    v = x[nz]
    out = np.zeros_like(x)
    out[nz] = (v - v.mean()) / v.std(ddof=1)
    return out


@pytest.mark.parametrize("kind, channels", [("voxel", 5), ("histogram", 2), ("evsegnet", 6)])
def test_channels_and_raw_values(kind, channels):
    ev = _events()
    rep = EventInput(kind=kind, normalize=False).representation()
    x = rep(ev)
    assert rep.channels() == channels and x.shape == (1, channels, 9, 12)
    ref = {"voxel": lambda: voxel_grid(ev, 5, normalize=False), "histogram": lambda: histogram(ev),
           "evsegnet": lambda: evsegnet_encoding(ev)}[kind]()
    torch.testing.assert_close(x, ref)


def test_normalize_standardises_the_counts_only():
    ev = _events()
    hist = EventInput(kind="histogram").representation()(ev)[0].double().numpy()
    raw = histogram(ev)[0].double().numpy()
    np.testing.assert_allclose(hist, _standardised(raw), rtol=1e-5, atol=1e-6)
    seg = EventInput(kind="evsegnet").representation()(ev)[0].double().numpy()
    raw = evsegnet_encoding(ev)[0].double().numpy()
    np.testing.assert_allclose(seg[:2], _standardised(raw[:2]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(seg[2:], raw[2:], rtol=0, atol=0)  # timestamp statistics as is


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="events.kind"):
        EventInput(kind="surface")


def test_cache_key_of_voxel_inputs_is_the_one_before_kinds(tmp_path):
    (tmp_path / "world.yaml").write_text("width: 8\n")
    cfg = TransferDataConfig()
    legacy = asdict(cfg)
    legacy["events"] = {"bins": 5, "normalize": True}  # the fields EventInput had before `kind`
    del legacy["synthetic"]["randomize"]  # ... and SyntheticConfig before `randomize`
    blob = json.dumps(legacy, sort_keys=True, default=str) + "width: 8\n"
    assert _key(tmp_path, cfg) == hashlib.sha256(blob.encode()).hexdigest()[:16]
    assert _key(tmp_path, TransferDataConfig(events=EventInput(kind="histogram"))) != _key(
        tmp_path, cfg)
    randomized = replace(cfg.synthetic, randomize=SensorRandomization(enabled=True))
    assert _key(tmp_path, replace(cfg, synthetic=randomized)) != _key(tmp_path, cfg)
