import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evtransfer import Events
from evtransfer.represent import EventBatch, as_event_batch, normalize_nonzero, voxel_grid

from . import reference as ref
from .reference import assert_close, random_events, streams_of

W, H = 23, 17


def _batch(rng) -> list[Events]:
    """Three streams: long, short with a huge clock offset, and one event."""
    return [
        random_events(rng, 400, W, H),
        random_events(rng, 37, W, H, span=2_000, offset=1_700_000_000_000_000),
        random_events(rng, 1, W, H),
    ]


@pytest.mark.parametrize("bins", [1, 2, 5])
@pytest.mark.parametrize("polarity", ["sum", "split"])
def test_matches_float64_reference(rng, device, backend, bins, polarity):
    streams = _batch(rng)
    ours = voxel_grid(streams, bins, polarity=polarity, device=device, backend=backend)
    assert ours.device.type == device
    expected = ref.voxel(streams_of(streams), W, H, bins, split=polarity == "split")
    assert_close(ours, expected, scale=np.abs(expected).max())


def test_hand_computed_values(backend):
    # t_norm = 2·t/100: 0, 0.5, 1, 2 -> bins (0), (0, 1 halves), (1), (2)
    ev = Events([1, 1, 1, 4], [2, 2, 2, 0], [0, 25, 50, 100], [1, 1, -1, 1], 5, 3)
    grid = voxel_grid(ev, 3, backend=backend)[0]
    assert grid[0, 2, 1] == 1.5 and grid[1, 2, 1] == -0.5 and grid[2, 0, 4] == 1.0
    assert grid.abs().sum() == 3.0
    split = voxel_grid(ev, 3, polarity="split", backend=backend)[0]
    assert split[0, 2, 1] == 1.5 and split[1, 2, 1] == 0.5 and split[4, 2, 1] == 1.0
    assert split[2, 0, 4] == 1.0 and split.sum() == 4.0


@pytest.mark.parametrize(
    "events",
    [
        Events.empty(W, H),
        Events([3], [4], [10], [-1], W, H),
        Events([0, W - 1, 5, 0], [0, H - 1, 3, H - 1], [7, 7, 7, 7], [1, -1, 1, 1], W, H),
        Events([W - 1, W - 1, 0], [H - 1, H - 1, 0], [0, 5, 9], [1, 1, -1], W, H),
        Events([2, 2, 6], [1, 1, 1], [40, 41, 41], [1, -1, -1], W, H),
    ],
    ids=["empty", "one-event", "one-timestamp", "border", "1us-span"],
)
def test_edge_cases(device, backend, events):
    for polarity in ("sum", "split"):
        ours = voxel_grid(events, 4, polarity=polarity, device=device, backend=backend)
        expected = ref.voxel(streams_of([events]), W, H, 4, split=polarity == "split")
        assert_close(ours, expected)
    if len(events) and len(set(events.t.tolist())) == 1:
        assert voxel_grid(events, 4, backend=backend)[0, 1:].abs().sum() == 0  # all in bin 0


def test_batch_equals_per_stream(rng, device, backend):
    streams = [*_batch(rng), Events.empty(W, H), random_events(rng, 50, W, H)]
    together = voxel_grid(streams, 5, polarity="split", device=device, backend=backend)
    for k, stream in enumerate(streams):
        alone = voxel_grid(stream, 5, polarity="split", device=device, backend=backend)
        torch.testing.assert_close(together[k], alone[0], rtol=0, atol=1e-6)


def test_backends_agree(rng):
    streams = _batch(rng)
    results = [voxel_grid(streams, 5, backend=b) for b in ref.BACKENDS]
    for other in results[1:]:
        torch.testing.assert_close(other, results[0], rtol=1e-5, atol=1e-5)


def test_torch_and_flat_inputs_match_events(rng, device):
    streams = _batch(rng)
    expected = voxel_grid(streams, 3, device=device, backend="torch")
    as_torch = [s.to_torch(device) for s in streams]
    torch.testing.assert_close(voxel_grid(as_torch, 3, backend="torch"), expected)
    flat = as_event_batch(streams, device)
    rebuilt = EventBatch(flat.x.int(), flat.y.long(), flat.t, flat.p.short(), flat.b, 3, W, H)
    torch.testing.assert_close(voxel_grid(rebuilt, 3, backend="torch"), expected)


def test_normalized_matches_reference(rng, device, backend):
    # timestamps on a 1/8-bin grid keep every weight exact in float32, so the set of
    # non-zero entries is the same as in float64
    streams = []
    for n in (300, 20):
        ev = random_events(rng, n, W, H)
        t = np.sort(rng.integers(0, 33, n)) * 125
        t[0], t[-1] = 0, 4000
        streams.append(Events(ev.x, ev.y, t, ev.p, W, H))
    for polarity in ("sum", "split"):
        ours = voxel_grid(streams, 5, polarity=polarity, normalize=True, device=device,
                          backend=backend)
        expected = ref.voxel(streams_of(streams), W, H, 5, polarity == "split", normalize=True)
        assert_close(ours, expected)


def test_normalize_nonzero_edge_cases():
    grid = torch.zeros(3, 2, 4, 5)
    grid[1, 0, 2, 3] = 7.0  # a single non-zero entry: std undefined -> v - mean = 0
    grid[2, :, 1, :] = 2.5  # constant non-zero entries: std 0 -> v - mean = 0
    out = normalize_nonzero(grid)
    assert torch.equal(out, torch.zeros_like(grid))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) float"):
        normalize_nonzero(torch.zeros(2, 3, 4))


def test_subpixel_events_are_bilinear(rng, device):
    n = 200
    x = torch.from_numpy(rng.uniform(-0.999, W - 0.001, n).astype(np.float32))
    y = torch.from_numpy(rng.uniform(-0.999, H - 0.001, n).astype(np.float32))
    x[:3] = torch.tensor([0.0, W - 1.0, -0.5])
    t = torch.from_numpy(np.sort(rng.integers(0, 10_000, n)))
    p = torch.from_numpy(rng.choice([-1, 1], n).astype(np.int8))
    b = torch.from_numpy(np.repeat([0, 1], [150, 50]))
    batch = EventBatch(x, y, t, p, b, 2, W, H).to(device)
    streams = [(x[s].numpy(), y[s].numpy(), t[s].numpy(), p[s].numpy())
               for s in (slice(0, 150), slice(150, n))]
    for polarity in ("sum", "split"):
        ours = voxel_grid(batch, 4, polarity=polarity)
        assert_close(ours, ref.voxel(streams, W, H, 4, split=polarity == "split"))
    with pytest.raises(ValueError, match="numba"):
        voxel_grid(batch, 4, backend="numba")


@settings(max_examples=25, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.integers(0, 6), st.integers(0, 4), st.integers(0, 60),
                  st.sampled_from([-1, 1])),
        max_size=30,
    ),
    bins=st.integers(1, 6),
)
def test_property_random_small_streams(data, bins):
    x, y, t, p = (np.array([d[i] for d in data], dtype=np.int64) for i in range(4))
    ev = Events(x, y, t, p, 7, 5, sort=True)
    expected = ref.voxel(streams_of([ev]), 7, 5, bins)
    assert_close(voxel_grid(ev, bins, backend="torch"), expected)
    # each event's weights sum to its polarity
    assert abs(float(voxel_grid(ev, bins).sum()) - float(p.sum())) < 1e-4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bins": 0}, "bins must be a positive integer"),
        ({"bins": 2.5}, "bins must be a positive integer"),
        ({"bins": 3, "polarity": "both"}, "polarity must be one of"),
        ({"bins": 3, "backend": "cuda"}, "backend must be one of"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        voxel_grid(Events([1], [1], [0], [1], 4, 4), **kwargs)
