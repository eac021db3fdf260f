"""Object crops located with label maps (world recognition)."""

from __future__ import annotations

import pytest
import torch

from evtransfer.data.crops import CropConfig, crop_sites, cut


def _quadrants() -> torch.Tensor:
    """One 8 × 8 map, 4 × 4 quadrants: TL all class 1; TR half class 5 (rest 2); BL a quarter
    class 7 (rest 255); BR all 255."""
    label = torch.full((1, 8, 8), 255, dtype=torch.int64)
    label[0, :4, :4] = 1
    label[0, :4, 4:] = 2
    label[0, :2, 4:] = 5
    label[0, 4:6, :2] = 7
    return label


def test_crop_sites_hand_computed():
    sites, cls = crop_sites(_quadrants(), CropConfig(classes=(1, 5, 7), size=4, stride=4))
    got = sorted(zip(map(tuple, sites.tolist()), cls.tolist(), strict=True))
    assert got == [((0, 0, 0), 0), ((0, 0, 1), 1)]  # BL holds 25 % of class 7: no crop
    sites, cls = crop_sites(_quadrants(), CropConfig(classes=(1, 5, 7), size=4, stride=4,
                                                     min_share=0.6))
    assert sites.tolist() == [[0, 0, 0]] and cls.tolist() == [0]


def test_crop_sites_cap_and_seed():
    label = torch.ones(3, 8, 8, dtype=torch.int64)
    cfg = CropConfig(classes=(1,), size=4, stride=2, max_per_class=5, seed=3)
    sites, cls = crop_sites(label, cfg)
    assert len(sites) == 5 and set(cls.tolist()) == {0}
    assert len({tuple(s) for s in sites.tolist()}) == 5
    torch.testing.assert_close(crop_sites(label, cfg)[0], sites)
    others = {tuple(map(tuple, crop_sites(label, CropConfig(classes=(1,), size=4, stride=2,
                                                            max_per_class=5, seed=s))[0].tolist()))
              for s in range(4)}
    assert len(others) > 1


def test_cut_matches_slicing():
    x = torch.arange(2 * 3 * 8 * 10, dtype=torch.float32).view(2, 3, 8, 10)
    cfg = CropConfig(size=4, stride=3)
    sites = torch.tensor([[0, 0, 0], [1, 1, 2], [1, 0, 1]])
    crops = cut(x, sites, cfg)
    assert crops.shape == (3, 3, 4, 4)
    for k, (n, r, c) in enumerate(sites.tolist()):
        torch.testing.assert_close(crops[k], x[n, :, 3 * r:3 * r + 4, 3 * c:3 * c + 4])
        torch.testing.assert_close(cut(x[:, 0], sites, cfg)[k], x[n, 0, 3 * r:3 * r + 4,
                                                                  3 * c:3 * c + 4])


@pytest.mark.parametrize("cfg, match", [
    (CropConfig(size=4, stride=4, min_share=0.4), "min_share"),
    (CropConfig(size=16), "do not fit"),
    (CropConfig(size=4, stride=4, classes=()), "empty"),
])
def test_crop_sites_rejects_bad_configs(cfg, match):
    with pytest.raises(ValueError, match=match):
        crop_sites(torch.zeros(1, 8, 8, dtype=torch.int64), cfg)
