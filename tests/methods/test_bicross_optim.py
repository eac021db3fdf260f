"""BiCross's optimisers against the reference's `get_optimizer` (BiCross/utils.py): the code
puts the backbone (`net.pretrained`) into both of its Adams, so it moves by the sum of two Adam
steps; ours is one Adam group at (lr_backbone + lr_scratch). Adam's state is per optimiser, but
both see the same gradients at every step, so their moments (and steps) are equal and the two
updates add to one at the summed rate; this test checks that, step by step."""

import copy

import torch
from torch import nn

from evtransfer.methods.bicross import BicrossConfig, _backbone, _param_groups, build_depth_model
from tests.refs import REFS, import_ref, ref_attr, stub_module

REPO = "Theia-4869+BiCross"


def _ref_get_optimizer():
    # BiCross/utils.py imports torchvision.transforms (does not import here: stubbed, unused by
    # get_optimizer); the `BiCross` package stands in for BiCross/__init__.py, which imports
    # every trainer (wandb, cv2), so only BiCross/Loss.py and BiCross/utils.py are loaded.
    pkg = stub_module("BiCross", __path__=[str(REFS / REPO / "BiCross")])
    tv = stub_module("torchvision", transforms=stub_module("torchvision.transforms"))
    utils = import_ref(REPO, "BiCross.utils", stubs={
        "BiCross": pkg, "torchvision": tv, "torchvision.transforms": tv.transforms})
    return ref_attr(utils, "get_optimizer")


class _RefLayout(nn.Module):
    """Our network's modules under the reference DPT's top-level names (shared parameters)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.pretrained = nn.ModuleList(_backbone(model))
        self.scratch = nn.ModuleList([model.layer_rn, model.fusion, model.head])
        self.uncertaity_head = model.uncertainty_head


def _loss(model, x):
    out = model.forward_all(x)
    return out.raw.square().mean() + out.uncertainty.mean() + out.layers[3].square().mean()


def _train(model, opts, x, steps=3):
    for _ in range(steps):
        for o in opts:
            o.zero_grad()
        _loss(model, x).backward()
        for o in opts:
            o.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_backbone_moves_by_both_adams_like_the_reference():
    get_optimizer = _ref_get_optimizer()
    cfg = BicrossConfig()
    model = build_depth_model(cfg, 3, seed=0)
    ours = copy.deepcopy(model)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    config = {"general": {"optim": "adam", "lr_backbone": 1e-5, "lr_scratch": 1e-4}}
    ref_opts = get_optimizer(config, _RefLayout(model))
    start = torch.cat([p.detach().flatten() for p in model.parameters()])
    ref = _train(model, list(ref_opts), x)

    def ours_with(in_both):
        net = copy.deepcopy(ours)
        groups = _param_groups(net, [], cfg.backbone_lr_scale, in_both)
        for g in groups:
            g["lr"] = 1e-4 * g.get("lr_scale", 1.0)
        return net, torch.optim.AdamW(groups, lr=1e-4, weight_decay=0.0)

    net, opt = ours_with(True)
    got = _train(net, [opt], x)
    assert float((ref - start).abs().max()) > 1e-5  # the steps moved the weights
    # p - a·u - b·u and p - (a + b)·u round differently in float32: one ulp of |p| ~ 1
    # (1.2e-7) per step, against moves of ~3e-4
    torch.testing.assert_close(got - start, ref - start, rtol=1e-3, atol=1e-6)
    # the paper's reading (backbone at lr_backbone only) moves it ~10x less
    net, opt = ours_with(False)
    other = _train(net, [opt], x)
    assert float((other - ref).abs().max()) > 0.5 * float((ref - start).abs().max())


def test_no_stage_clips_gradients_by_default():
    cfg = BicrossConfig()
    assert all(getattr(cfg, s).clip_grad == 0.0 for s in ("rgb", "cfkd", "scts", "supervised"))
    from evtransfer.engine.fit import FitConfig
    assert FitConfig().clip_grad == 1.0  # the other methods keep theirs


