from dataclasses import replace

import pytest
import torch

from evtransfer.data.transfer import TransferDataConfig, load_transfer_data
from evtransfer.engine.dense import FitConfig
from evtransfer.engine.transfer import StageConfig
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


def test_class_thresholds_keep_the_most_confident_fraction_of_each_class():
    from evtransfer.methods.cmess import class_thresholds

    label = torch.tensor([0] * 10 + [1] * 4)
    conf = torch.cat([torch.linspace(0.05, 0.95, 10), torch.tensor([0.2, 0.3, 0.4, 0.45])])
    thr = class_thresholds(label, conf, num_classes=3, fraction=0.5)
    kept = conf >= thr[label]
    assert kept[:10].sum() == 5 and kept[:10][5:].all()  # the top half of class 0
    assert kept[10:].tolist() == [False, False, True, True]
    assert thr[2] == 1.0  # never predicted
