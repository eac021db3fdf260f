import numpy as np
import pytest
import torch

from evtransfer import Events
from evtransfer.represent import EventBatch, event_image, histogram, stacked_histogram

from . import reference as ref
from .reference import assert_close, random_events, streams_of

W, H = 19, 13


def _streams(rng) -> list[Events]:
    return [random_events(rng, 500, W, H), Events.empty(W, H), random_events(rng, 1, W, H),
            random_events(rng, 64, W, H)]


def test_histogram_matches_reference(rng, device, backend):
    streams = _streams(rng)
    ours = histogram(streams, device=device, backend=backend)
    assert ours.shape == (4, 2, H, W) and ours.device.type == device
    assert_close(ours, ref.histogram(streams_of(streams), W, H))
    assert ours.sum((1, 2, 3)).tolist() == [len(s) for s in streams]


def test_histogram_channel_order_and_border(backend):
    ev = Events([0, 0, W - 1, W - 1, W - 1], [0, 0, H - 1, H - 1, 0], [1, 2, 3, 4, 4],
                [-1, -1, 1, 1, -1], W, H)
    counts = histogram(ev, backend=backend)[0]
    assert counts[0, 0, 0] == 2 and counts[1, 0, 0] == 0  # two negative events at (0, 0)
    assert counts[1, H - 1, W - 1] == 2 and counts[0, 0, W - 1] == 1
    assert counts.sum() == 5


def test_histogram_batch_equals_per_stream(rng, device, backend):
    streams = _streams(rng)
    together = histogram(streams, device=device, backend=backend)
    for k, stream in enumerate(streams):
        assert torch.equal(together[k], histogram(stream, device=device, backend=backend)[0])


@pytest.mark.parametrize("lengths", [(500, 40, 7), (2, 0, 60), (61, 59, 3)])
def test_stacked_matches_reference(rng, device, backend, lengths):
    windows, per_window = 3, 20  # K·N = 60: full, shrunk and empty blocks
    streams = [random_events(rng, n, W, H) for n in lengths]
    ours = stacked_histogram(streams, windows, per_window, device=device, backend=backend)
    assert ours.shape == (len(lengths), 6, H, W)
    assert_close(ours, ref.stacked(streams_of(streams), W, H, windows, per_window))


def test_stacked_hand_computed_windows(backend):
    # K = 2, N = 2 over 5 events: the block is events 1..4; window 0 = events 1, 2
    ev = Events([0, 1, 2, 3, 4], [0, 0, 0, 0, 0], [0, 1, 2, 3, 4], [1, -1, 1, 1, -1], 5, 1)
    stack = stacked_histogram(ev, 2, 2, backend=backend)[0, :, 0]
    expected = torch.tensor([[0, 1, 0, 0, 0], [0, 0, 1, 0, 0],  # w0 neg, w0 pos
                             [0, 0, 0, 0, 1], [0, 0, 0, 1, 0]],  # w1 neg, w1 pos
                            dtype=torch.float32)
    assert torch.equal(stack, expected)
    # 5 events < K·N = 6 with K = 2, N = 3: windows of 5 // 2 = 2, the newest event dropped
    short = stacked_histogram(ev, 2, 3, backend=backend)[0, :, 0]
    assert short.sum() == 4 and short[:, 4].sum() == 0 and short[1, 0] == 1


def test_stacked_single_window_is_histogram_of_last_events(rng, backend):
    ev = random_events(rng, 300, W, H)
    torch.testing.assert_close(stacked_histogram(ev, 1, 120, backend=backend),
                               histogram(ev[180:], backend=backend))


def test_ecddp_configuration_shape(rng):
    ev = random_events(rng, 1000, W, H)
    assert stacked_histogram(ev).shape == (1, 20, H, W)  # 10 windows × (neg, pos)


@pytest.mark.parametrize("background", ["white", "black"])
def test_event_image_colours(device, background):
    # pixel 0: 2 pos 1 neg -> blue; pixel 1: 1 pos 2 neg -> red; pixel 2: tie; pixel 3: none
    ev = Events([0, 0, 0, 1, 1, 1, 2, 2], [0] * 8, range(8), [1, 1, -1, 1, -1, -1, 1, -1], 4, 1)
    image = event_image(ev, background=background, device=device)[0, :, 0].cpu()
    base = 1.0 if background == "white" else 0.0
    expected = torch.tensor([[0, 0, 1], [1, 0, 0], [base] * 3, [base] * 3]).T
    assert image.dtype == torch.float32 and torch.equal(image, expected.float())


def test_event_image_batch(rng):
    streams = _streams(rng)
    counts = ref.histogram(streams_of(streams), W, H)
    net = counts[:, 1] - counts[:, 0]
    image = event_image(streams).numpy()
    assert np.array_equal(image[:, 2] == 1, (net >= 0))  # blue channel set unless red
    assert np.array_equal(image[:, 0] == 1, (net <= 0))


def test_invalid_arguments(rng):
    ev = random_events(rng, 10, W, H)
    with pytest.raises(ValueError, match="windows must be a positive integer"):
        stacked_histogram(ev, 0, 10)
    with pytest.raises(ValueError, match="events_per_window must be a positive integer"):
        stacked_histogram(ev, 2, -5)
    with pytest.raises(ValueError, match="background must be one of"):
        event_image(ev, background="grey")
    batch = EventBatch(torch.tensor([0.5]), torch.tensor([1.0]), torch.tensor([3]),
                       torch.tensor([1]), None, 1, W, H)
    with pytest.raises(ValueError, match="histograms need integer pixel coordinates"):
        histogram(batch)
