import math

import numpy as np
import pytest
import torch

from evtransfer import Events
from evtransfer.represent import evsegnet_encoding, time_surface

from . import reference as ref
from .reference import assert_close, random_events, streams_of

W, H = 21, 11


def _streams(rng) -> list[Events]:
    return [random_events(rng, 400, W, H), Events.empty(W, H), random_events(rng, 1, W, H),
            Events([0, W - 1, 3], [H - 1, 0, 3], [50, 50, 50], [1, -1, 1], W, H)]


def test_time_surface_matches_reference(rng, device):
    streams = _streams(rng)
    ours = time_surface(streams, 20_000.0, device=device)
    assert ours.shape == (4, 2, H, W) and ours.device.type == device
    assert_close(ours, ref.time_surface(streams_of(streams), W, H, 20_000.0))


def test_time_surface_reference_times(rng, device):
    streams = _streams(rng)
    refs = [200_000, 0, 10**6, 50]
    ours = time_surface(streams, 5_000, t_ref_us=refs, device=device)
    assert_close(ours, ref.time_surface(streams_of(streams), W, H, 5_000, refs))
    shared = time_surface(streams[:1], 5_000, t_ref_us=150_000, device=device)
    assert_close(shared, ref.time_surface(streams_of(streams[:1]), W, H, 5_000, [150_000]))


def test_time_surface_hand_values():
    ev = Events([2, 2, 2], [1, 1, 1], [0, 100, 400], [1, 1, -1], 4, 3)
    surface = time_surface(ev, 1000.0, t_ref_us=1400)[0]
    assert math.isclose(float(surface[1, 1, 2]), math.exp(-1.3), rel_tol=1e-6)  # latest pos
    assert math.isclose(float(surface[0, 1, 2]), math.exp(-1.0), rel_tol=1e-6)
    assert surface.count_nonzero() == 2


def test_time_surface_refuses_bad_arguments(rng):
    ev = random_events(rng, 20, W, H)
    with pytest.raises(ValueError, match="after its reference time"):
        time_surface(ev, 100.0, t_ref_us=int(ev.t[-1]) - 1)
    with pytest.raises(ValueError, match="2 values for 1 streams"):
        time_surface(ev, 100.0, t_ref_us=[10**6, 10**6])
    for tau in (0, -5.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="tau_us must be a positive finite number"):
            time_surface(ev, tau)


def test_evsegnet_matches_reference(rng, device):
    streams = _streams(rng)
    ours = evsegnet_encoding(streams, device=device)
    assert ours.shape == (4, 6, H, W) and ours.device.type == device
    assert_close(ours, ref.evsegnet(streams_of(streams), W, H), scale=10.0)


def test_evsegnet_hand_values():
    # t normalised over [0, 200]: pos events at pixel (1, 0) at 0 and 1; neg at 0.5
    ev = Events([1, 1, 3, 1], [0, 0, 2, 0], [0, 100, 100, 200], [1, -1, 1, 1], 4, 3)
    enc = evsegnet_encoding(ev)[0]
    assert enc[:, 0, 1].tolist() == [2.0, 1.0, 0.5, 0.5, 0.5, 0.0]
    assert enc[:, 2, 3].tolist() == [1.0, 0.0, 0.5, 0.0, 0.0, 0.0]
    assert enc[:, 1, 1].abs().sum() == 0


def test_evsegnet_one_timestamp_is_zero_time():
    ev = Events([0, 0, 1], [0, 0, 0], [9, 9, 9], [1, 1, -1], 2, 1)
    enc = evsegnet_encoding(ev)[0, :, 0]
    assert torch.equal(enc, torch.tensor([[2.0, 0], [0, 1], [0, 0], [0, 0], [0, 0], [0, 0]]))
    assert np.isfinite(enc.numpy()).all()
