"""BiCross's losses, mean-teacher update and depth metrics against the reference code
(Theia-4869/BiCross BiCross/Loss.py, BiCross/Trainer_crossdomain.py, BiCross/Tester.py) on the
same inputs: values and the gradients the losses route.

Stubs, all for packages that do not import here: the `BiCross` package itself (its
__init__.py imports every trainer, with wandb and cv2) is replaced by a bare package so that
single modules load; BiCross/Tester.py imports wandb, `cv2.cv2`, timm's StdConv2dSame (unused
by `run_eval`), `numpy.core.numeric.Inf` (gone in NumPy 2) and calls
`torch.cuda.current_device()` at import, which the test answers with 0 on a CPU machine.
BiCross/Loss.py `ContrastiveLoss` builds its labels with `.cuda()`; on a CPU machine the test
makes `Tensor.cuda` return the tensor unchanged.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from evtransfer.engine.ema import EmaTeacher
from evtransfer.methods.bicross import (
    BicrossConfig,
    build_depth_model,
    ckd_loss,
    fkd_loss,
    projection_head,
    sig_loss,
    uncertainty_loss,
)
from evtransfer.metrics import DepthMetrics
from tests.refs import REFS, import_ref, ref_attr, stub_module

REPO = "Theia-4869+BiCross"


def _pkg():
    return stub_module("BiCross", __path__=[str(REFS / REPO / "BiCross")])


def _loss(name: str):
    return ref_attr(import_ref(REPO, "BiCross.Loss", stubs={"BiCross": _pkg()}), name)()


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _grad(fn, *xs):
    xs = [x.clone().requires_grad_(True) for x in xs]
    value = fn(*xs)
    value.backward()
    return value.detach(), [x.grad for x in xs]


def test_sig_loss_and_uncertainty_loss_match_reference():
    pred = torch.rand(300, generator=_gen(0)) * 40 + 1e-3
    gt = torch.rand(300, generator=_gen(1)) * 60 + 0.5
    unc = torch.rand(300, generator=_gen(2))
    ref_sig, ref_sig_g = _grad(_loss("SigLoss"), pred, gt)
    sig, sig_g = _grad(lambda p, g: sig_loss(p, g, 0.1, 0.15), pred, gt)
    torch.testing.assert_close(sig, ref_sig, rtol=1e-5, atol=0)
    torch.testing.assert_close(sig_g[0], ref_sig_g[0], rtol=1e-5, atol=1e-9)
    ref_u, ref_u_g = _grad(_loss("Uncertainty_L1_Loss"), unc, pred, gt)
    u, u_g = _grad(uncertainty_loss, unc, pred, gt)
    torch.testing.assert_close(u, ref_u, rtol=1e-5, atol=0)
    for a, b in zip(u_g[:2], ref_u_g[:2], strict=True):  # unc and pred (not detached in both)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9)


def test_contrastive_kd_with_its_heads_matches_reference(monkeypatch):
    if not torch.cuda.is_available():
        monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    ref = _loss("ContrastiveLoss")
    torch.manual_seed(0)
    heads = {k: projection_head(48, 32, 16) for k in ("rgb", "spike")}
    # Trainer_crossmodality.py:75-90 heads: pool, flatten, Linear, BatchNorm1d, ReLU, Linear
    assert list(heads["rgb"].state_dict()) == [
        "2.weight", "2.bias", "3.weight", "3.bias", "3.running_mean", "3.running_var",
        "3.num_batches_tracked", "5.weight", "5.bias"]
    rgb = torch.randn(6, 48, 3, 4, generator=_gen(3))
    spike = torch.randn(6, 48, 3, 4, generator=_gen(4))

    def run(fn):
        return _grad(lambda r, s: fn(heads["rgb"](r), heads["spike"](s)), rgb, spike)

    ref_v, ref_g = run(ref)
    v, g = run(ckd_loss)
    assert float(v) > 0.1
    torch.testing.assert_close(v, ref_v, rtol=1e-5, atol=0)
    for a, b in zip(g, ref_g, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


def test_unfiltered_fine_kd_is_the_reference_mse_on_the_spike_side():
    # Trainer_crossmodality.py:262 `self.loss_dist(path_4_rgb, path_4_spike)`, loss_dist =
    # torch.nn.MSELoss() (train_config.json loss_distillation "mse"); the RGB model is not
    # optimised there, so only the spike side's gradient matters
    rgb = torch.randn(2, 8, 5, 6, generator=_gen(5))
    spike = torch.randn(2, 8, 5, 6, generator=_gen(6))
    ref_v, ref_g = _grad(nn.MSELoss(), rgb, spike)
    v, g = _grad(lambda r, s: fkd_loss(r, s, None), rgb, spike)
    torch.testing.assert_close(v, ref_v, rtol=1e-6, atol=0)
    torch.testing.assert_close(g[1], ref_g[1], rtol=1e-6, atol=1e-9)
    assert g[0] is None or not g[0].any()  # ours detaches the frozen RGB side


def test_mean_teacher_update_matches_the_reference_rule():
    # Trainer_crossdomain.py:407-408: for every parameter, teacher = α·teacher + (1 − α)·student
    # (α = train_config.json alpha 0.999); the DPT has no float buffers to differ on
    cfg = BicrossConfig()
    student = build_depth_model(cfg, 4, seed=0)
    assert not [n for n, b in student.named_buffers() if b.is_floating_point()]
    ema = EmaTeacher(student, cfg.ema_momentum)
    expected = [p.detach().double().clone() for p in ema.module.parameters()]
    g = _gen(7)
    for _ in range(3):
        with torch.no_grad():
            for p in student.parameters():
                p.add_(torch.randn(p.shape, generator=g))
        ema.update(student)
        expected = [0.999 * t + 0.001 * s.detach().double()
                    for t, s in zip(expected, student.parameters(), strict=True)]
    for t, e in zip(ema.module.parameters(), expected, strict=True):
        torch.testing.assert_close(t.double(), e, rtol=1e-5, atol=1e-6)


def _tester_class(monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    layers = stub_module("timm.models.layers", StdConv2dSame=nn.Conv2d)
    timm = stub_module("timm", models=stub_module("timm.models", layers=layers))
    tv = stub_module("torchvision", transforms=stub_module("torchvision.transforms"))
    stubs = {"BiCross": _pkg(), "wandb": stub_module("wandb"),
             "cv2": stub_module("cv2", cv2=stub_module("cv2.cv2")),
             "numpy.core.numeric": stub_module("numpy.core.numeric", Inf=math.inf),
             "timm": timm, "timm.models": timm.models, "timm.models.layers": layers,
             "torchvision": tv, "torchvision.transforms": tv.transforms}
    return ref_attr(import_ref(REPO, "BiCross.Tester", stubs=stubs), "Tester")


class _Fixed(nn.Module):
    """Returns the stored depth of each call, in the reference's 8-tuple."""

    def __init__(self, preds):
        super().__init__()
        self.preds = list(preds)

    def forward(self, x):
        return (self.preds.pop(0), *[None] * 7)


def test_depth_metrics_match_the_reference_evaluation(monkeypatch):
    tester = object.__new__(_tester_class(monkeypatch))
    h, w, n, dmax = 250, 400, 3, 80.0  # the "respike" branch: network output 250 x 400
    g = _gen(8)
    gt = torch.rand(n, h, w, generator=g) * 100  # some beyond dmax: invalid
    gt[0, :10] = 0.0
    gt[1, 5, :] = math.inf
    gt[2, 7, :] = math.nan
    pred = gt.nan_to_num(20.0, posinf=20.0) * (0.5 + torch.rand(n, h, w, generator=g))
    pred[0, 100, :50] = 1e-5  # capped to 1e-3
    pred[1, 200, :50] = 500.0  # capped to dmax
    pred[2, 150, :50] = 1e8  # the largest depth 1 / max(s·x + t, 1e-8) gives: capped too
    tester.config = {"general": {"modality": "spike", "dataset": ["respike"]},
                     "wandb": {"enable": False}}
    tester.device, tester.dmax = torch.device("cpu"), dmax
    tester.loss_depth = _loss("SigLoss")
    tester.model = _Fixed([pred[i:i + 1].clone() for i in range(n)])
    loader = [{"spike": torch.zeros(1, 1), "depth": gt[i:i + 1, None].clone()} for i in range(n)]
    errors = {}
    tester.validate_errors = _recorder(tester.validate_errors, errors)
    tester.run_eval(loader)
    ours = DepthMetrics(form="kitti", min_depth=1e-3, max_depth=dmax, garg_crop=True)
    for i in range(n):
        ours.update(pred[i:i + 1], gt[i:i + 1])
    got = ours.compute(per_image=True)
    for key, ref_key in (("abs_rel", "abs_rel"), ("sq_rel", "sq_rel"), ("rmse", "rmse"),
                         ("rmse_log", "rmse_log"), ("d1", "a1"), ("d2", "a2"), ("d3", "a3")):
        assert got[key] == pytest.approx(np.mean(errors[ref_key]), rel=1e-5), key
    assert 0.1 < got["d1"] < 0.9  # a non-trivial case


def _recorder(fn, errors):
    """Wrap `validate_errors` to keep each image's values (run_eval only prints the means)."""
    names = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")

    def wrapped(gt, pred):
        values = fn(gt, pred)
        for name, v in zip(names, values, strict=True):
            errors.setdefault(name, []).append(float(v))
        return values

    return wrapped
