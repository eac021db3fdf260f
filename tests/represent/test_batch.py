import numpy as np
import pytest
import torch

from evtransfer import Events
from evtransfer.represent import EventBatch, as_event_batch
from evtransfer.represent.batch import normalised_time, stream_time_range

from .reference import random_events

W, H = 9, 7


def _flat(**changes) -> dict:
    base = {
        "x": torch.tensor([0, 8, 3], dtype=torch.int16),
        "y": torch.tensor([6, 0, 2], dtype=torch.int16),
        "t": torch.tensor([5, 9, 1]),
        "p": torch.tensor([1, -1, 1], dtype=torch.int8),
        "b": torch.tensor([0, 0, 1]),
        "batch_size": 2,
        "width": W,
        "height": H,
    }
    return {**base, **changes}


def test_from_event_list(rng, device):
    streams = [random_events(rng, 5, W, H), Events.empty(W, H), random_events(rng, 3, W, H)]
    batch = as_event_batch(streams, device)
    assert batch.device.type == device and batch.batch_size == 3 and len(batch) == 8
    assert batch.b.tolist() == [0] * 5 + [2] * 3
    assert batch.counts().tolist() == [5, 0, 3]
    assert torch.equal(batch.t.cpu(), torch.from_numpy(np.concatenate([s.t for s in streams])))
    single = as_event_batch(streams[0])
    assert single.b is None and single.stream_index().tolist() == [0] * 5


def test_time_range_and_normalised_time(rng, device):
    streams = [random_events(rng, 30, W, H, offset=10**15), Events.empty(W, H),
               Events([1, 2], [1, 1], [7, 7], [1, 1], W, H), random_events(rng, 9, W, H)]
    batch = as_event_batch(streams, device)
    first, span = stream_time_range(batch)
    assert first.tolist() == [int(s.t[0]) if len(s) else 0 for s in streams]
    assert span.tolist() == [s.duration_us for s in streams]
    expected = np.concatenate(
        [4 * (s.t - s.t[0]) / max(s.duration_us, 1) for s in streams if len(s)])
    np.testing.assert_allclose(normalised_time(batch, 4).cpu().numpy(), expected, rtol=2e-7)


def test_torch_events_are_validated(device):
    good = Events([1, 2], [3, 4], [0, 5], [1, -1], W, H).to_torch(device)
    assert len(as_event_batch([good, good])) == 4
    bad = type(good)(good.x, good.y, good.t.flip(0), good.p, W, H)
    with pytest.raises(ValueError, match="t decreases within a stream"):
        as_event_batch(bad)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"x": torch.tensor([0, 9, 3], dtype=torch.int16)}, r"x outside \[0, 9\)"),
        ({"y": torch.tensor([-1, 0, 2], dtype=torch.int16)}, r"y outside \[0, 7\)"),
        ({"x": torch.tensor([0.0, 9.0, 3.0])}, r"x outside \(-1, 9\)"),
        ({"x": torch.tensor([0.0, float("nan"), 3.0])}, "x has non-finite values"),
        ({"p": torch.tensor([1, 0, 1], dtype=torch.int8)}, "p must be -1 or \\+1"),
        ({"t": torch.tensor([5.0, 9.0, 1.0])}, "t must be an integer tensor"),
        ({"t": torch.tensor([5, 9, 1], dtype=torch.int32)}, "t must be int64"),
        ({"t": torch.tensor([9, 5, 1])}, "t decreases within a stream"),
        ({"b": torch.tensor([1, 0, 0])}, "b must be non-decreasing"),
        ({"b": torch.tensor([0, 0, 2])}, r"b outside \[0, 2\)"),
        ({"b": None}, "b is required when batch_size is 2"),
        ({"p": torch.tensor([1, -1])}, "p has 2 entries but t has 3"),
        ({"width": 0}, "sensor size must be positive"),
        ({"batch_size": 0, "b": None}, "batch_size must be >= 1"),
    ],
)
def test_event_batch_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        EventBatch(**_flat(**changes))


def test_bad_event_inputs():
    ev = Events([1], [1], [0], [1], W, H)
    with pytest.raises(ValueError, match="need at least one stream"):
        as_event_batch([])
    with pytest.raises(ValueError, match="different sensor sizes"):
        as_event_batch([ev, Events([1], [1], [0], [1], W + 1, H)])
    with pytest.raises(TypeError, match="events must be Events, TorchEvents"):
        as_event_batch([ev, ev.to_torch()])
    with pytest.raises(TypeError, match="events must be Events, TorchEvents"):
        as_event_batch(np.zeros(4))
