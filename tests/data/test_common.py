"""Shared dataset pieces: ESS chunking, representation stacking, ESS resizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evtransfer.data._common import ess_chunks, represent_chunks, resize_bilinear, resize_nearest
from evtransfer.events import Events


def _events(n: int) -> Events:
    return Events(np.arange(n) % 4, np.zeros(n), np.arange(n) * 10, np.ones(n), 4, 3)


def test_ess_chunks_equal_sizes_and_drop_the_newest_remainder():
    chunks = ess_chunks(_events(10), 3)
    assert [list(c.t) for c in chunks] == [[0, 10, 20], [30, 40, 50], [60, 70, 80]]
    assert [len(c) for c in ess_chunks(_events(2), 3)] == [0, 0, 0]
    with pytest.raises(ValueError, match="positive"):
        ess_chunks(_events(3), 0)


def test_represent_chunks_stacks_channels_and_checks_shapes():
    def count(ev: Events) -> torch.Tensor:
        out = torch.zeros(1, ev.height, ev.width)
        out[0, 0, 0] = len(ev)
        return out

    stacked = represent_chunks(ess_chunks(_events(9), 3), count)
    assert stacked.shape == (3, 3, 4) and stacked[:, 0, 0].tolist() == [3, 3, 3]
    with pytest.raises(ValueError, match="spatial size"):
        represent_chunks([_events(2)], lambda ev: torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match="\\(C, H, W\\)"):
        represent_chunks([_events(2)], lambda ev: torch.zeros(3, 4))


def test_resize_nearest_reproduces_opencv_float_reciprocal():
    rows = np.arange(260, dtype=np.uint16)[:, None] * np.ones((1, 3), np.uint16)
    out = resize_nearest(rows, (200, 3))[:, 0]
    # 1/(200/260) = 1.2999…, so output row 10 reads input row 12 (not 13), row 199 reads 258
    assert out[10] == 12 and out[1] == 1 and out[199] == 258
    cols = np.arange(346, dtype=np.uint16)[None, :]
    assert resize_nearest(cols, (1, 352))[0, [0, 175, 176, 351]].tolist() == [0, 172, 173, 345]


def test_resize_nearest_matches_cv2_when_available():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    for (h, w), (oh, ow) in [
        ((200, 346), (200, 352)),
        ((440, 640), (448, 640)),
        ((13, 11), (7, 5)),
    ]:
        a = rng.integers(0, 255, (h, w), dtype=np.uint8)
        expected = cv2.resize(a, (ow, oh), interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(resize_nearest(a, (oh, ow)), expected)


def test_resize_bilinear_align_corners_against_float64_reference():
    rng = np.random.default_rng(1)
    src = rng.random((2, 5, 7))
    out = resize_bilinear(torch.from_numpy(src).float(), (5, 9)).double().numpy()
    pos = np.arange(9) * (7 - 1) / (9 - 1)
    lo = np.minimum(np.floor(pos).astype(int), 5)
    frac = pos - lo
    ref = src[:, :, lo] * (1 - frac) + src[:, :, lo + 1] * frac
    np.testing.assert_allclose(out, ref, atol=1e-6)
