"""Augmentations: one draw per sample applied alike to every tensor of the batch."""

import torch

from evtransfer.data.augment import hflip, random_resized_crop


def test_hflip_flips_every_tensor_of_a_sample_alike():
    x = torch.arange(2 * 3 * 4.0).view(2, 1, 3, 4)
    batch = hflip({"x": x, "y": x[:, 0].long()}, torch.Generator().manual_seed(3))
    for i in range(2):
        flipped = torch.equal(batch["x"][i], x[i].flip(-1))
        assert flipped or torch.equal(batch["x"][i], x[i])
        assert torch.equal(batch["y"][i], batch["x"][i, 0].long())


def test_random_resized_crop_keeps_pairs_aligned():
    x = torch.arange(64.0).view(1, 1, 8, 8).repeat(3, 2, 1, 1)
    y = torch.arange(64).view(1, 8, 8).repeat(3, 1, 1)
    batch = {"x": x, "y": y}
    assert random_resized_crop(batch, torch.Generator(), (1.0, 1.0)) is batch
    out = random_resized_crop(batch, torch.Generator().manual_seed(0), (0.3, 0.6))
    assert out["y"].dtype == torch.int64 and out["x"].shape == x.shape
    assert set(out["y"].unique().tolist()) <= set(range(64))  # nearest: no new label values
    assert not torch.equal(out["y"], y)


def test_hflip_negates_the_x_component_of_a_flipped_flow():
    x = torch.arange(4 * 3 * 5.0).view(4, 1, 3, 5)
    flow = torch.stack([x[:, 0] + 1, -x[:, 0]], 1)  # (B, 2, H, W): u, v
    out = hflip({"x": x, "flow": flow}, torch.Generator().manual_seed(0), flow=("flow",))
    flipped = [not torch.equal(out["x"][i], x[i]) for i in range(4)]
    assert any(flipped) and not all(flipped)
    for i, f in enumerate(flipped):
        want = torch.stack([-flow[i, 0].flip(-1), flow[i, 1].flip(-1)]) if f else flow[i]
        assert torch.equal(out["flow"][i], want)
