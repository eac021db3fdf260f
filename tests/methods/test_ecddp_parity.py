"""ECDDP against its public code (../shared/refs/Yan98+Event-Camera-Data-Dense-Pre-training):
the pre-training Swin with its fusion, heads and whole loss on the same random weights and
inputs, Sinkhorn–Knopp, K-means, the masking, the initialisation and the released layout.

The reference imports packages that do not load here; each is stubbed with the few names it
uses: timm (`DropPath`, `to_2tuple`, `trunc_normal_`, and `Block`, rebuilt with timm's
attribute names: norm1, attn, ls1, drop_path1, norm2, mlp.fc1/fc2, ls2, drop_path2), kornia
(the augmentation classes, never called: the test passes the crops in), omegaconf
(`OmegaConf.create` as attribute access over dicts), torch_scatter (`scatter_mean` over dim 1
with dim_size = max index + 1, as torch_scatter's default) and the `model` package's
`__init__` (it imports mmseg; the package is replaced by a bare one on the same folder).
"""

import random
from collections import Counter

import pytest
import torch
from refs import import_ref, ref_attr, ref_root, stub_module
from torch import nn

from evtransfer.methods.ecddp import (
    BackboneConfig,
    EcddpNet,
    HeadConfig,
    MaskConfig,
    PretrainConfig,
    ViewConfig,
    Views,
    cosine_kmeans,
    ecddp_losses,
    patch_loss,
    sample_masks,
    sample_views,
    sinkhorn_knopp,
)
from evtransfer.models.released.ecddp import ecddp_swin_t, load_ecddp_backbone
from evtransfer.models.ssl import DenseTokenEncoder
from evtransfer.models.swin import SwinTransformer

REPO = "Yan98+Event-Camera-Data-Dense-Pre-training"


class _Cfg(dict):
    """omegaconf stub: attribute access over nested dicts."""

    def __getattr__(self, key):
        try:
            value = self[key]
        except KeyError:
            raise AttributeError(key) from None
        return _Cfg(value) if isinstance(value, dict) else value


class _Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    """timm Block's attributes (attn is replaced by the reference's AttentionPool)."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, norm_layer=nn.LayerNorm,
                 **_):
        super().__init__()
        self.norm1, self.attn, self.norm2 = norm_layer(dim), nn.Identity(), norm_layer(dim)
        self.ls1 = self.ls2 = self.drop_path1 = self.drop_path2 = nn.Identity()
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))


def _drop_path(p=0.0):
    if p:
        raise NotImplementedError("the stub DropPath supports drop_path 0 only")
    return nn.Identity()


def _scatter_mean(src, index, dim=1):
    size = int(index.max()) + 1
    out = src.new_zeros(src.shape[0], size, src.shape[2])
    out.scatter_add_(1, index[..., None].expand_as(src), src)
    count = src.new_zeros(src.shape[0], size).scatter_add_(1, index, torch.ones_like(src[..., 0]))
    return out / count.clamp(min=1)[..., None]


class _Unused:
    def __init__(self, *args, **kwargs):
        pass


def _stubs():
    layers = stub_module("timm.models.layers", DropPath=_drop_path,
                         to_2tuple=lambda x: tuple(x) if isinstance(x, list | tuple) else (x, x),
                         trunc_normal_=nn.init.trunc_normal_)
    vit = stub_module("timm.models.vision_transformer", Block=_Block)
    models = stub_module("timm.models", layers=layers, vision_transformer=vit)
    aug = stub_module("kornia.augmentation", RandomCrop=_Unused, RandomResizedCrop=_Unused,
                      RandomHorizontalFlip=_Unused)
    package = stub_module("model")
    package.__path__ = [str(ref_root(REPO) / "model")]
    return {"timm": stub_module("timm", models=models), "timm.models": models,
            "timm.models.layers": layers, "timm.models.vision_transformer": vit,
            "kornia": stub_module("kornia", augmentation=aug), "kornia.augmentation": aug,
            "omegaconf": stub_module("omegaconf", OmegaConf=stub_module("o", create=_Cfg)),
            "torch_scatter": stub_module("torch_scatter", scatter_mean=_scatter_mean),
            "model": package}


@pytest.fixture(scope="module")
def ref():
    """The reference's pre-training module (model/pretrain_model.py) and its Swin module."""
    stubs = _stubs()
    pretrain = import_ref(REPO, "model.pretrain_model", stubs=stubs)
    swin = import_ref(REPO, "model.network.swin_pretrain", stubs=stubs)
    return pretrain, swin


# --- key map: ours -> the reference's PretrainModel.student ----------------------------------
_HEAD = [(".pool.query", ".att.cls_token"), (".pool.pos_embed", ".att.absolute_pos_embed"),
         (".pool.norm.", ".att.norm.")]
_BLOCK = [("q.", "attn.q."), ("k.", "attn.k."), ("v.", "attn.v."), ("proj.", "attn.proj."),
          ("mlp.0.", "mlp.fc1."), ("mlp.2.", "mlp.fc2.")]


def to_reference(name: str) -> str:
    """Our EcddpNet parameter name → the reference student's."""
    for ours, theirs in (("backbone.encoder.", "backbone."), ("backbone.fusion.", "backbone.")):
        if name.startswith(ours):
            return theirs + name[len(ours):]
    if ".pool.blocks." in name:
        head, rest = name.split(".pool.blocks.")
        idx, rest = rest.split(".", 1)
        for ours, theirs in _BLOCK:
            if rest.startswith(ours):
                rest = theirs + rest[len(ours):]
                break
        return f"{head}.att.blocks.{idx}.{rest}"
    for ours, theirs in _HEAD:
        name = name.replace(ours, theirs)
    return name


def load_into_reference(ours: nn.Module, theirs: nn.Module) -> None:
    mapped = {to_reference(k): v for k, v in ours.state_dict().items()}
    missing, unexpected = theirs.load_state_dict(mapped, strict=False)
    assert not unexpected, unexpected[:5]
    assert all(k.endswith("relative_position_index") for k in missing), missing[:5]


EMBED, PROTOS, K = 8, 32, 4


def tiny_cfg(n_local=2) -> PretrainConfig:
    return PretrainConfig(
        backbone=BackboneConfig(embed_dim=EMBED, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2),
                                window=2),
        heads=HeadConfig(prototypes=PROTOS, hidden=16, bottleneck=8),
        views=ViewConfig(view=64, global_size=64, local_size=32, local_number=n_local),
        masks=MaskConfig(count_base=7), clusters=K, amp="off")


def reference_model(pretrain, n_local=2):
    heads = dict(head_n_prototypes=PROTOS, head_bottleneck_dim=8, head_nlayers=3,
                 head_hidden_dim=16)
    cfg = {"dino": {"loss_weight": 1.0, **heads},
           "ibot": {"loss_weight": 1.0, "mask_sample_probability": 0.5,
                    "mask_ratio_min_max": [0.1, 0.5], "separate_head": True, **heads},
           "crops": {"global_crops_scale": [0.32, 1.0], "local_crops_number": n_local,
                     "local_crops_scale": [0.05, 0.32], "global_crops_size": 64,
                     "local_crops_size": 32, "input_size": 64},
           "train": {"centering": "sinkhorn_knopp"}}
    return ref_attr(pretrain, "PretrainModel")(
        num_clusters=K, aug_downsample=16, cfg=cfg, img_size=64, patch_size=4, in_chans=2,
        embed_dim=EMBED, depths=[1, 1, 2, 1], num_heads=[1, 1, 2, 2], window_size=2,
        out_indices=(0, 1, 2, 3), drop_path_rate=0.0)


def reference_views(view: torch.Tensor, v: Views) -> dict:
    """The reference collate's dict for our crops and masks."""
    masks = v.masks.flatten(1)
    idx = masks.flatten().nonzero().flatten()
    weight = (1 / masks.sum(-1).clamp(min=1.0))[:, None].expand_as(masks)[masks]
    return {"collated_global_crops": v.global_crops, "collated_local_crops": v.local_crops,
            "t_grid": v.grid, "img": view, "collated_masks": masks, "mask_indices_list": idx,
            "masks_weight": weight, "upperbound": len(idx),
            "n_masked_patches": torch.tensor([len(idx)])}


def test_pretraining_losses_and_gradients_match_the_reference(ref):
    """Swin + fusion, the three heads with attention pooling, K-means, Sinkhorn–Knopp and the
    weighted sum of the image, context and patch losses: the reference's
    `PretrainModel.forward_imp` and our `ecddp_losses` on the same weights and crops."""
    pretrain, _ = ref
    cfg = tiny_cfg()
    student, teacher = EcddpNet(cfg, 2, seed=0), EcddpNet(cfg, 2, seed=1)
    model = reference_model(pretrain)
    load_into_reference(student, model.student)
    load_into_reference(teacher, model.teacher)
    gen = torch.Generator().manual_seed(3)
    view = torch.relu(torch.randn(3, 2, 64, 64, generator=gen))
    views = sample_views(view, cfg, gen)
    if not views.masks.any():
        views = views._replace(masks=views.masks.index_fill(1, torch.tensor([1]), True))
    torch.manual_seed(11)  # the reference's K-means draws from the global RNG
    loss, parts = model.forward_imp(reference_views(view, views), 0.05)
    ours = ecddp_losses(student, teacher, view, cfg, 0.05, torch.Generator().manual_seed(11),
                        views=views)
    w = 1 / (4 + 2 * cfg.views.local_number)
    torch.testing.assert_close(ours["image_local"] * w, parts["dino_local_crops_loss"].detach(),
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w * (2 * ours["context"] + 2 * ours["image_global"]),
                               parts["dino_global_crops_loss"].detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours["patch"], 2 * parts["ibot_loss"].detach(), rtol=1e-5,
                               atol=1e-6)
    torch.testing.assert_close(ours["loss"], loss, rtol=1e-5, atol=1e-6)
    assert float(ours["contexts_kept"]) > 0 and float(ours["context"]) > 0
    loss.backward()
    ours["loss"].backward()
    theirs = dict(model.student.named_parameters())
    checked = 0
    for name, p in student.named_parameters():
        q = theirs[to_reference(name)]
        if p.grad is None:
            assert q.grad is None or not q.grad.any(), name
            continue
        scale = float(q.grad.abs().max())  # float32 sums: tolerance relative to the tensor
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-4 * scale + 1e-9,
                                   msg=lambda m, name=name: f"{name}: {m}")
        checked += 1
    assert checked > 60


def test_released_layout_loads_strictly_and_computes_the_reference_tokens(ref, tmp_path):
    """The released Swin-T file layout ({"model": {"student.backbone.*", …}, "optimizer",
    "current_epoch"}), saved from the reference backbone, loads through ours and gives its
    dense tokens (masked and not) within 1e-5; the fine-tuning encoder takes the Swin part."""
    _, swin = ref
    torch.manual_seed(0)
    theirs = ref_attr(swin, "SWIN")(in_chans=6, embed_dim=96, depths=[2, 2, 6, 2],
                                    num_heads=[3, 6, 12, 24], window_size=7,
                                    out_indices=(0, 1, 2, 3), drop_path_rate=0.0, mask_dim=4)
    with torch.no_grad():  # norms away from 1/0, so that a swapped norm would show
        for m in theirs.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
        theirs.mask_token.normal_()
    state = {f"student.backbone.{k}": v for k, v in theirs.state_dict().items()}
    state |= {f"teacher.backbone.{k}": v + 1 for k, v in theirs.state_dict().items()}
    path = tmp_path / "ecddp_swin_t.pt"
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []},
                "current_epoch": 300}, path)
    ours = ecddp_swin_t(6)
    assert load_ecddp_backbone(ours, path) == len(ours.state_dict())
    x = torch.randn(2, 6, 64, 64)
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[0, 1:3, 0:2] = True
    with torch.no_grad():
        for m in (None, mask):
            want = theirs(x, masks=None if m is None else m.flatten(1), is_training=True)
            got = ours(x, m).flatten(2).transpose(1, 2)
            torch.testing.assert_close(got, want["x_norm_patchtokens"], rtol=1e-5, atol=1e-5)
    encoder = SwinTransformer(6, 0, 96, (2, 2, 6, 2), (3, 6, 12, 24), 7, eps=1e-6)
    assert load_ecddp_backbone(encoder, path) == len(encoder.state_dict())
    torch.testing.assert_close(encoder.state_dict()["norm3.weight"], theirs.norm3.weight)


def test_another_architecture_is_refused_naming_its_tensors(tmp_path):
    small = DenseTokenEncoder(SwinTransformer(6, 0, 32, (1, 1, 2, 1), (1, 2, 4, 8), 4,
                                              mask_token=True, eps=1e-6), 256)
    state = {f"student.backbone.{k.split('.', 1)[1]}": v for k, v in small.state_dict().items()}
    path = tmp_path / "other.pt"
    torch.save({"model": state}, path)
    with pytest.raises(ValueError, match=r"other\.pt: not the architecture.*patch_embed"):
        load_ecddp_backbone(ecddp_swin_t(6), path)
    torch.save({"model": {"backbone.x": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match="not an ECDDP pre-training checkpoint"):
        load_ecddp_backbone(ecddp_swin_t(6), path)


def test_sinkhorn_matches_both_reference_losses(ref):
    pretrain, _ = ref
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(20, 9, generator=gen)
    dino = ref_attr(pretrain, "DINOLoss")(9)
    ibot = ref_attr(pretrain, "iBOTPatchLoss")(9)
    ours = sinkhorn_knopp(logits, 0.06, 3)
    torch.testing.assert_close(ours, dino.sinkhorn_knopp_teacher(logits, 0.06), rtol=1e-6,
                               atol=1e-7)
    torch.testing.assert_close(ours, ibot.sinkhorn_knopp_teacher(logits, 0.06,
                                                                 torch.tensor([20])))


def test_patch_loss_matches_ibot_forward_masked(ref):
    pretrain, _ = ref
    gen = torch.Generator().manual_seed(1)
    masks = torch.rand(4, 9, generator=gen) < 0.4
    n = int(masks.sum())
    t = torch.softmax(torch.randn(n, 7, generator=gen), -1)
    s = torch.randn(n, 7, generator=gen, requires_grad=True)
    weights = (1 / masks.sum(-1).clamp(min=1.0))[:, None].expand_as(masks)[masks]
    want = ref_attr(pretrain, "iBOTPatchLoss")(7).forward_masked(s, t, masks, n, weights)
    got = patch_loss(t, s, weights, 4, 0.1)
    torch.testing.assert_close(got, want)
    g1, = torch.autograd.grad(got, s)
    g2, = torch.autograd.grad(want, s)
    torch.testing.assert_close(g1, g2)


def test_kmeans_matches_the_reference_on_the_same_draws(ref):
    pretrain, _ = ref
    x = torch.randn(3, 30, 16, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(5)
    want, _ = ref_attr(pretrain, "batch_cosine_KMeans")(x, num_clusters=6)
    got, _ = cosine_kmeans(x, 6, 10, torch.Generator().manual_seed(5))
    assert torch.equal(got, want)


def reference_mask_counts(pretrain, n_batches: int, batch: int) -> list[int]:
    """Masked-token counts of the reference collate (model/pretrain_model.py) on its 12 × 12
    grid (global crops 192, tokens at stride 16), for `n_batches` batches of 2·batch crops."""
    reference_model(pretrain)  # sets the module's collate_data (and a 4 × 4 mask generator)
    collate = ref_attr(pretrain, "collate_data")
    gen_cls = ref_attr(pretrain, "MaskingGenerator")
    pretrain.mask_generator = gen_cls(input_size=(12, 12), max_num_patches=0.5 * 144)
    crops = torch.zeros(2 * batch, 1, 1, 1)
    counts = []
    random.seed(0)
    for _ in range(n_batches):
        out = collate({"global_crops": crops, "local_crops": crops, "img": crops,
                       "s_grid": crops, "t_grid": crops})
        counts += out["collated_masks"].sum(1).tolist()
    return counts


def test_mask_counts_follow_the_code_not_the_ratio(ref):
    """The code draws int(64·r) tokens on its 12 × 12 grid (n_tokens² with n_tokens = 8),
    r spread over [0.1, 0.5]: counts 6–31, not 14–71 (the ratios of 144)."""
    pretrain, _ = ref
    want = reference_mask_counts(pretrain, 60, 4)
    gen = torch.Generator().manual_seed(0)
    got = [int(c) for _ in range(60)
           for c in sample_masks(8, 12, 12, MaskConfig(), gen).flatten(1).sum(1)]
    ratio = [int(c) for _ in range(60)
             for c in sample_masks(8, 12, 12, MaskConfig(count_base=0), gen).flatten(1).sum(1)]
    for counts in (want, got):
        masked = [c for c in counts if c]
        assert len(masked) == len(counts) // 2  # int(8 · 0.5) crops of each batch
        assert 5 <= min(masked) and max(masked) <= 31
    mean = lambda c: sum(c) / len(c)  # noqa: E731
    assert abs(mean(got) - mean(want)) < 0.1 * mean(want)
    assert mean(ratio) > 1.8 * mean(want)  # the ratio reading masks about 2.25× more
    assert Counter(c == 0 for c in got) == Counter(c == 0 for c in want)


def _std(m: nn.Module) -> float:
    return float(m.weight.std())


def test_init_follows_the_codes_effective_rule(ref):
    """The reference SWIN keeps PyTorch's default linear and conv init (its truncated-normal
    rule is never applied): our "torch" scheme gives the same per-layer weight scales (and
    zero mask token), "trunc_normal" gives std 0.02."""
    _, swin = ref
    theirs = ref_attr(swin, "SWIN")(in_chans=6, embed_dim=32, depths=[1, 1, 2, 1],
                                    num_heads=[1, 2, 4, 8], window_size=4,
                                    out_indices=(0, 1, 2, 3), drop_path_rate=0.0, mask_dim=4)
    cfg = tiny_cfg()
    cfg.backbone = BackboneConfig(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8),
                                  window=4)
    ours = EcddpNet(cfg, 6, seed=0).backbone
    ref_layers = {n: m for n, m in theirs.named_modules()
                  if isinstance(m, nn.Linear | nn.Conv2d | nn.ConvTranspose2d)}
    checked = 0
    for name, m in ours.named_modules():
        if not isinstance(m, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
            continue
        other = ref_layers[name.split(".", 1)[1]]
        assert abs(_std(m) / _std(other) - 1) < 0.15, name
        checked += 1
    assert checked == len(ref_layers)
    assert not ours.encoder.mask_token.any() and not theirs.mask_token.any()
    cfg.backbone.init = "trunc_normal"
    trunc = EcddpNet(cfg, 6, seed=0).backbone
    assert abs(_std(trunc.encoder.layers[2].blocks[0].mlp.fc1) - 0.02) < 0.002
    assert _std(ours.encoder.layers[2].blocks[0].mlp.fc1) > 2 * 0.02  # 1/√(3·128) = 0.051
    with pytest.raises(ValueError, match="backbone.init"):
        BackboneConfig(init="xavier").build(6, 0)
    with pytest.raises(ValueError, match="count_base"):
        sample_masks(2, 4, 4, MaskConfig(), torch.Generator())


def _data_stubs():
    """data/seg_utils.py imports numba's `jit` (installed) and h5py/hdf5plugin (installed):
    nothing to stub but the `data` package, whose __init__ imports the datasets."""
    package = stub_module("data")
    package.__path__ = [str(ref_root(REPO) / "data")]
    return {"data": package}


@pytest.mark.parametrize("n", [10 * 37 + 5, 10 * 50 + 3])
def test_stacked_histogram_matches_the_reference_dsec_input(n):
    """ECDDP's DSEC input: the last 10·N events (or all, when fewer) split into 10 windows of
    (loaded // 10) events (data/DESC_dataset.py:288-303, this split rule is the test's glue
    around the reference), each a (neg, pos) `generate_event_histogram` (data/seg_utils.py)."""
    from evtransfer.events import Events
    from evtransfer.represent import stacked_histogram

    seg_utils = import_ref(REPO, "data.seg_utils", stubs=_data_stubs())
    rng = torch.Generator().manual_seed(n)
    x = torch.randint(0, 20, (n,), generator=rng)
    y = torch.randint(0, 12, (n,), generator=rng)
    p = torch.randint(0, 2, (n,), generator=rng) * 2 - 1
    t = torch.arange(n) * 10
    per = 40
    got = stacked_histogram(Events(x.numpy(), y.numpy(), t.numpy(), p.numpy(), 20, 12), 10,
                            per)[0]
    events = torch.stack([x, y, t, p], 1).numpy()[-10 * per:]
    size = len(events) // 10
    hist = ref_attr(seg_utils, "generate_event_histogram")
    want = torch.cat([torch.from_numpy(hist(events[i * size:(i + 1) * size].copy(), (12, 20)))
                      for i in range(10)])
    assert torch.equal(got, want)


def _eval_stubs():
    """eval_seg.py and trainer/seg_trainer.py import the training stack; stubbed names:
    pytorch_lightning.LightningModule, utils (MetricLogger, update_opt), model (create_model,
    encoderdecoder_model.EncoderDecoder), data.DESC_dataset.DatasetProvider, ttach,
    mmseg.ops.resize; the `trainer` package is bare (its __init__ scans the trainers)."""
    trainer = stub_module("trainer")
    trainer.__path__ = [str(ref_root(REPO) / "trainer")]
    encdec = stub_module("model.encoderdecoder_model", EncoderDecoder=type("EncoderDecoder",
                                                                           (), {}))
    mmseg_ops = stub_module("mmseg.ops", resize=None)
    desc = stub_module("data.DESC_dataset", DatasetProvider=None)
    return {"trainer": trainer, "pytorch_lightning": stub_module("pl", LightningModule=nn.Module),
            "utils": stub_module("utils", MetricLogger=None, update_opt=None),
            "model": stub_module("model", create_model=None, encoderdecoder_model=encdec),
            "model.encoderdecoder_model": encdec, "data": stub_module("data", DESC_dataset=desc),
            "data.DESC_dataset": desc, "ttach": stub_module("ttach"),
            "mmseg": stub_module("mmseg", ops=mmseg_ops), "mmseg.ops": mmseg_ops}


def test_segmentation_scores_match_the_reference_evaluation():
    """mIoU, accuracy and mean class accuracy of ECDDP's evaluation (trainer/seg_trainer.py
    confusion and IoU, eval_seg.py mACC: absent classes count 0, label 255 ignored) against
    `evaluate_segmentation`, on a split where one class never occurs."""
    from evtransfer.metrics import evaluate_segmentation

    seg = import_ref(REPO, "trainer.seg_trainer", stubs=_eval_stubs())
    evaluation = import_ref(REPO, "eval_seg", stubs=_eval_stubs())
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (3, 16, 20), generator=gen)  # class 10 of 11 absent
    labels[:, :2] = 255
    pred = torch.where(torch.rand(3, 16, 20, generator=gen) < 0.6, labels.clamp(max=10),
                       torch.randint(0, 11, (3, 16, 20), generator=gen))
    conf = ref_attr(seg, "semseg_compute_confusion")(pred, labels, 11, 255)
    ours = evaluate_segmentation(pred, labels, 11)
    assert ours["miou"] == pytest.approx(
        float(ref_attr(seg, "semseg_accum_confusion_to_iou")(conf)[0]), abs=1e-9)
    assert ours["acc"] == pytest.approx(
        float(ref_attr(seg, "semseg_accum_confusion_to_acc")(conf)), abs=1e-9)
    assert ours["macc"] == pytest.approx(
        float(ref_attr(evaluation, "semseg_accum_confusion_to_macc")(conf)), abs=1e-9)
