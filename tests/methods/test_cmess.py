from dataclasses import replace

import pytest
import torch
from torch import nn

from evtransfer.data.transfer import TransferDataConfig, load_transfer_data
from evtransfer.engine.fit import FitConfig
from evtransfer.methods._stages import StageConfig
from evtransfer.methods.cmess import CmessConfig, PseudoPairs, cml_losses, fuse, train_cmess
from evtransfer.models import create_model


def test_fuse_is_a_convex_mix_with_a_confidence_threshold():
    p_s = torch.tensor([0.9, 0.1, 0.0]).view(1, 3, 1, 1)
    p_t = torch.tensor([0.1, 0.3, 0.6]).view(1, 3, 1, 1)
    label, conf = fuse(p_s, p_t, lam=0.5, confidence=0.0)
    assert int(label) == 0 and float(conf) == pytest.approx(0.5)
    label, _ = fuse(p_s, p_t, lam=0.2, confidence=0.0)  # 0.2·P_S + 0.8·P_T: class 2 (0.48)
    assert int(label) == 2
    label, _ = fuse(p_s, p_t, lam=0.5, confidence=0.6)
    assert int(label) == 255


def test_pseudo_pairs_cover_both_sets():
    pairs = PseudoPairs(torch.zeros(3, 2, 4, 4), torch.zeros(3, 4, 4, dtype=torch.long),
                        torch.ones(5, 2, 4, 4), torch.ones(5, 4, 4, dtype=torch.long), seed=0)
    assert len(pairs) == 5
    seen = {int(pairs.perm[i]) % 5 for i in range(len(pairs))}
    assert seen == set(range(5))
    item = pairs[4]
    assert set(item) == {"x_t", "y_t", "x_s", "y_s"} and float(item["x_s"].mean()) == 1.0


def test_cml_losses_train_one_shared_network():
    model = create_model("segformer_b0", in_chans=5, num_classes=4, seed=0)
    gen = torch.Generator().manual_seed(0)
    batch = {"x_t": torch.randn(2, 5, 32, 48, generator=gen),
             "y_t": torch.randint(0, 4, (2, 32, 48), generator=gen),
             "x_s": torch.randn(2, 5, 32, 48, generator=gen),
             "y_s": torch.randint(0, 4, (2, 32, 48), generator=gen)}
    losses = cml_losses(model, batch, CmessConfig())
    assert all(torch.isfinite(v) for v in losses.values())
    assert float(losses["l_kd"]) > 0  # the cross branch differs from the target branch
    losses["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)


def test_train_cmess_runs_all_stages_and_resumes(tiny_world, tmp_path):
    data = load_transfer_data(tiny_world, TransferDataConfig(), cache_dir=tmp_path / "cache",
                              progress=False)
    fit = FitConfig(steps=4, batch=4, ckpt_every=0)
    cfg = CmessConfig(stages=StageConfig(source=fit, synthetic=fit, recon=fit), cml=fit)
    result = train_cmess(data, cfg, tmp_path / "run", progress=False)
    assert set(result.minutes) == {"M_S", "M_T", "recon", "CML"}
    probs = result.predict(data.test_x[:2])
    assert probs.shape == (2, data.num_classes, *data.test_x.shape[-2:])
    torch.testing.assert_close(probs.sum(1), torch.ones(2, *data.test_x.shape[-2:]))
    pseudo = list((tmp_path / "run").glob("TPL-*/pseudo.safetensors"))
    assert len(pseudo) == 1
    # inference is the target branch alone: SegFormer-B0's size (3.72 M with 11 classes)
    assert abs(result.params - 3.72e6) < 0.01e6
    again = train_cmess(data, cfg, tmp_path / "run", progress=False)
    assert again.minutes == result.minutes  # every stage reused, nothing retrained
    torch.testing.assert_close(again.predict(data.test_x[:2]), probs)
    changed = train_cmess(data, replace(cfg, fuse_lambda=0.9), tmp_path / "run", progress=False)
    assert changed.minutes["M_S"] == result.minutes["M_S"]  # only TPL and CML are redone
    assert len(list((tmp_path / "run").glob("TPL-*"))) == 2


# hand-built pseudo-labelling: fused confidences (k + 0.5) / 1000 sit mid-bin of the 1000-bin
# histogram, so they stay in their bin in float16 (TPL stores confidences as halves)
CLASS0 = [0.9505, 0.9005, 0.8005, 0.6005, 0.5005, 0.4505, 0.4005, 0.3505]
CLASS1 = [0.6505, 0.6005, 0.5505, 0.5005]


@pytest.mark.parametrize("fraction, expected", [
    (0.25, [0.900, 0.650, 1.0]),  # class 0: top 2 of 8; class 1: top 1 of 4
    (0.5, [0.600, 0.600, 1.0]),  # top 4 of 8; top 2 of 4
    (0.75, [0.450, 0.550, 1.0]),  # top 6 of 8; top 3 of 4
])
def test_class_thresholds_are_the_bin_of_the_last_pixel_in_each_classes_top_fraction(
        fraction, expected):
    from evtransfer.methods.cmess import class_thresholds

    label = torch.tensor([0] * len(CLASS0) + [1] * len(CLASS1))
    conf = torch.tensor(CLASS0 + CLASS1)
    thr = class_thresholds(label, conf, num_classes=3, fraction=fraction)
    torch.testing.assert_close(thr, torch.tensor(expected), rtol=0, atol=1e-6)
    kept = (conf >= thr[label]).tolist()
    assert sum(kept[:8]) == round(fraction * 8) and sum(kept[8:]) == round(fraction * 4)


class _Table(nn.Module):
    """M_S stand-in: the "image" of a window is each pixel's index code (from `_Code`), mapped
    to stored log-probabilities, so P_S is exactly the table."""

    def __init__(self, log_p: torch.Tensor):
        super().__init__()
        self.register_buffer("log_p", log_p)  # (pixels, C)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        n = len(self.log_p)
        idx = (img[:, 0] * n - 0.5).round().long()
        return self.log_p[idx].permute(0, 3, 1, 2)


class _Code(nn.Module):
    """Reconstruction stand-in: channel 0 of the window (the pixel index code)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1]


class _Rest(nn.Module):
    """M_T' stand-in: channels 1: of the window (log P_T)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 1:]


def _tpl_inputs():
    """One 1 x 13 window: 8 pixels where P_S = P_T favour class 0 (CLASS0 confidences), 4
    where both favour class 1 (CLASS1), and one where P_S says class 2 and P_T class 1: with
    λ = 0.2 the fused label is 1 at 0.6905, swapping the paths gives 2 at 0.7299."""
    rows = [[c, (1 - c) / 2, (1 - c) / 2] for c in CLASS0]
    rows += [[(1 - c) / 2, c, (1 - c) / 2] for c in CLASS1]
    p_s = torch.tensor(rows + [[0.05, 0.05, 0.9]])
    p_t = torch.tensor(rows + [[0.1, 0.850625, 0.049375]])
    n = len(p_s)
    code = (torch.arange(n) + 0.5) / n
    x = torch.cat([code[None], p_t.log().T]).view(1, 4, 1, n)
    return x, _Table(p_s.log()), _Rest(), _Code()


@pytest.mark.parametrize("fraction, kept0, kept1", [
    (0.0, 3, 0),  # confidence >= 0.7 alone
    (0.25, 3, 2),  # class 0: top 2 (or the 3 confident ones); class 1: top 2 of 5
    (0.5, 4, 3),
    (0.75, 6, 4),
])
def test_target_path_labeling_fuses_masks_and_keeps_each_classes_top_fraction(
        fraction, kept0, kept1, tmp_path):
    from types import SimpleNamespace

    from evtransfer.methods.cmess import target_path_labeling

    x, m_s, m_t, recon = _tpl_inputs()
    cfg = CmessConfig(fuse_lambda=0.2, confidence=0.7, class_fraction=fraction)
    data = SimpleNamespace(target_x=x, num_classes=3)
    label, conf = target_path_labeling(m_s, m_t, recon, data, cfg, tmp_path / "p.safetensors",
                                       "cpu")
    ignore = 255
    # class-1 pixels in descending confidence: the mixed pixel (0.6905) first, then CLASS1
    class1 = [12, 8, 9, 10, 11]
    expected = [0] * kept0 + [ignore] * (8 - kept0) + [ignore] * 5
    for i in class1[:kept1]:
        expected[i] = 1
    assert label.dtype == torch.uint8 and label.shape == (1, 1, 13)
    assert label.flatten().tolist() == expected
    torch.testing.assert_close(conf.flatten().float(), torch.tensor(CLASS0 + CLASS1 + [0.6905]),
                               rtol=0, atol=1e-3)


@pytest.mark.parametrize("share, kept", [
    (3.9 / 13, [0, 1, 2, 12]),  # the 4 most confident of 13: 0.9505, 0.9005, 0.8005, 0.6905
    (6.9 / 13, [0, 1, 2, 3, 8, 9, 12]),  # then 0.6505 (8) and 0.6005 twice (3, 9)
])
def test_share_rule_keeps_the_targets_most_confident_share_whatever_the_scale(share, kept,
                                                                              tmp_path):
    from types import SimpleNamespace

    from evtransfer.methods.cmess import target_path_labeling

    x, m_s, m_t, recon = _tpl_inputs()
    cfg = CmessConfig(fuse_lambda=0.2, confidence_rule="share", keep_share=share,
                      class_fraction=0.0)
    data = SimpleNamespace(target_x=x, num_classes=3)
    label, _ = target_path_labeling(m_s, m_t, recon, data, cfg, tmp_path / "a.safetensors",
                                    "cpu")
    assert [i for i, v in enumerate(label.flatten().tolist()) if v != 255] == kept
    # P_T at temperature 3 (every confidence lower, their order kept): a fixed threshold keeps
    # fewer pixels, the share rule follows the scores' own distribution and keeps the same
    dull = SimpleNamespace(target_x=torch.cat([x[:, :1], x[:, 1:] / 3], 1), num_classes=3)
    only_t = replace(cfg, fuse_lambda=0.0)
    a, _ = target_path_labeling(m_s, m_t, recon, data, only_t, tmp_path / "b.safetensors", "cpu")
    b, c = target_path_labeling(m_s, m_t, recon, dull, only_t, tmp_path / "c.safetensors", "cpu")
    assert float(c.max()) < 0.7
    assert torch.equal(a, b)


def test_unknown_confidence_rule_and_share_out_of_range_are_refused():
    from evtransfer.bench import TransferBenchConfig
    from evtransfer.config import load_config

    with pytest.raises(ValueError, match="confidence_rule 'adaptive'.*fixed, share"):
        CmessConfig(confidence_rule="adaptive")
    with pytest.raises(ValueError, match="keep_share"):
        load_config(TransferBenchConfig, None, ["cmess.keep_share=0"])
