import numpy as np
import pytest

from evtransfer.events import Events, EventsError, Spikes


def make(n=100, w=64, h=48, seed=0):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, 10_000, n))
    return Events(rng.integers(0, w, n), rng.integers(0, h, n), t, rng.choice([-1, 1], n), w, h)


def test_dtypes_are_normalised_without_copying_inputs():
    x = np.array([1, 2], dtype=np.int64)
    ev = Events(x, [0, 1], [5, 5], [1, -1], 4, 3)
    assert (ev.x.dtype, ev.y.dtype, ev.t.dtype, ev.p.dtype) == (
        np.int16, np.int16, np.int64, np.int8)
    assert x.dtype == np.int64 and len(ev) == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(x=[0, 4]), "x outside"),
        (dict(y=[-1, 0]), "y outside"),
        (dict(p=[0, 1]), "p must be -1 or \\+1"),
        (dict(t=[5, 4]), "t decreases at index 1"),
        (dict(x=[0]), "equal lengths"),
        (dict(t=[0.5, 1.0]), "non-integer"),
        (dict(x=[0, 70000]), "do not fit in int16"),
    ],
)
def test_invalid_input_names_the_problem(kwargs, message):
    args = dict(x=[0, 1], y=[0, 1], t=[1, 2], p=[1, -1])
    args.update(kwargs)
    with pytest.raises(EventsError, match=message):
        Events(**args, width=4, height=3)


def test_sort_on_request_is_stable():
    ev = Events([0, 1, 2], [0, 0, 0], [5, 3, 3], [1, -1, 1], 4, 1, sort=True)
    assert ev.t.tolist() == [3, 3, 5] and ev.x.tolist() == [1, 2, 0]


def test_time_window_is_start_inclusive_end_exclusive_and_zero_copy():
    ev = make(1000)
    w = ev.time_window(2000, 5000)
    ref = (ev.t >= 2000) & (ev.t < 5000)
    np.testing.assert_array_equal(w.t, ev.t[ref])
    np.testing.assert_array_equal(w.x, ev.x[ref])
    assert np.shares_memory(w.t, ev.t)
    assert len(ev.time_window(20_000, 30_000)) == 0
    with pytest.raises(EventsError):
        ev.time_window(5, 4)


def test_last_before():
    ev = Events([0, 1, 2, 3], [0] * 4, [10, 20, 20, 30], [1] * 4, 4, 1)
    assert ev.last_before(20, 5).t.tolist() == [10]
    assert ev.last_before(21, 2).t.tolist() == [20, 20]
    assert len(ev.last_before(0, 3)) == 0


def test_concatenate_checks_order_and_sensor():
    ev = make(200)
    a, b = ev[:100], ev[100:]
    c = Events.concatenate([a, b])
    np.testing.assert_array_equal(c.t, ev.t)
    with pytest.raises(EventsError, match="overlap"):
        Events.concatenate([b, a])
    np.testing.assert_array_equal(Events.concatenate([b, a], sort=True).t, ev.t)
    with pytest.raises(EventsError, match="sensor sizes"):
        Events.concatenate([a, Events.empty(3, 3)])


def test_immutable_and_shift():
    ev = make(10)
    with pytest.raises(AttributeError):
        ev.x = ev.y
    shifted = ev.shift_time(1_000_000_000_000)
    assert shifted.t[0] == ev.t[0] + 1_000_000_000_000 and shifted.t.dtype == np.int64


def test_to_torch_keeps_dtypes():
    torch = pytest.importorskip("torch")
    te = make(5).to_torch("cpu")
    assert (te.x.dtype, te.t.dtype, te.p.dtype) == (torch.int16, torch.int64, torch.int8)
    assert len(te) == 5 and (te.width, te.height) == (64, 48)


def test_spikes_pack_roundtrip_and_slicing():
    rng = np.random.default_rng(1)
    bits = (rng.random((30, 5, 13)) < 0.3).astype(np.uint8)
    sp = Spikes(bits, rate_hz=20_000)
    packed = sp.pack()
    assert packed.data.shape == (30, 5, 2) and packed.width == 13
    np.testing.assert_array_equal(packed.unpack(), bits)
    assert packed.firing_rate() == pytest.approx(bits.mean())
    np.testing.assert_array_equal(sp.timestamps_us()[:3], [0, 50, 100])
    win = packed.time_window(100, 250)  # frames at 100, 150, 200
    assert len(win) == 3 and win.t0_us == 100
    np.testing.assert_array_equal(win.unpack(), bits[2:5])


def test_spikes_validation():
    with pytest.raises(EventsError, match="0 or 1"):
        Spikes(np.full((2, 2, 2), 2, np.uint8), 20_000)
    with pytest.raises(EventsError, match="cannot hold width"):
        Spikes(np.zeros((2, 2, 2), np.uint8), 20_000, width=20, packed=True)
    with pytest.raises(EventsError, match="rate_hz"):
        Spikes(np.zeros((2, 2, 2), np.uint8), 0)
