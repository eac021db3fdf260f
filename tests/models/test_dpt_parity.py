"""Our DPT-Hybrid with BiCross's uncertainty head against the reference (Theia-4869/BiCross
DPT/models.py `DPTDepthModel`, DPT/vit.py, DPT/blocks.py) on the same random weights, loaded
through `models.released.bicross` from a file saved in BiCross's layout.

timm does not import here. The reference imports `timm` (DPT/vit.py: `timm.create_model
("vit_base_resnet50_384")`) and `timm.models.layers.StdConv2dSame` (DPT/models.py, the spike
stem): the test stubs both. The stub's `create_model` returns a module in timm's layout and
names (`patch_embed.backbone.stem/stages[i].blocks[j]`, `patch_embed.proj`, `cls_token`,
`pos_embed`, `blocks[i].attn.qkv/mlp.fc1`, `norm`, `head`) whose ResNet stages and
transformer blocks are OUR modules (models/dpt.py), since timm's own are not here; those are
checked against an independent implementation, transformers' DPT-Hybrid, in test_dpt.py. What
this test compares is therefore everything DPT/BiCross's own code does around them: the
position-embedding resize, the hooks, readout projection and reassembly, the fusion blocks,
both heads, the inverse-affine depth, and the key map of the released checkpoints. The ViT
is full width (768, 12 blocks, 12 heads, as DPT/vit.py hard-codes) with a narrow MLP and one
bottleneck per stem stage, to stay fast.
"""

import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from evtransfer.models.dpt import DPTDepth, StdConv2d, ViTHybrid, pad_same
from evtransfer.models.released.bicross import load_bicross, load_dpt_init, read_bicross_checkpoint
from tests.refs import import_ref, ref_attr, stub_module

REPO = "Theia-4869+BiCross"
SCALE, SHIFT = 6.016e-5, 0.00579  # code: BiCross Trainer_*.py (outdoor)
ENCODER = dict(stem_depths=(1, 1, 1), stem_widths=(256, 512, 256), embed_dim=768, depth=12,
               num_heads=12, hooks=(8, 11), mlp_ratio=0.25)


class _Alias(nn.Module):
    """One of our modules exposed under timm's attribute names (`names`: timm name -> our
    submodule); runs our module's forward, so hooks on the alias fire as on timm's."""

    def __init__(self, impl: nn.Module, names: dict[str, nn.Module]) -> None:
        super().__init__()
        object.__setattr__(self, "impl", impl)  # not registered: the aliases own the weights
        for name, module in names.items():
            setattr(self, name, module)

    def forward(self, x):
        return self.impl(x)


def _bottleneck(b) -> _Alias:
    names = {n: getattr(b, n) for n in ("conv1", "norm1", "conv2", "norm2", "conv3", "norm3")}
    if b.down is not None:
        names["downsample"] = _Alias(b.down, {"conv": b.down[0], "norm": b.down[1]})
    return _Alias(b, names)


class _Backbone(nn.Module):
    """timm ResNetV2 (preact=False, stem 'same') layout over our stem; `stem.conv` is looked
    up at run time because BiCross replaces it for spikes."""

    def __init__(self, enc: ViTHybrid) -> None:
        super().__init__()
        self.stem = nn.Module()
        self.stem.conv, self.stem.norm = enc.stem_conv, enc.stem_norm
        self.stages = nn.ModuleList()
        for stage in enc.stages:
            s = nn.Module()
            s.blocks = nn.Sequential(*[_bottleneck(b) for b in stage])
            s.forward = s.blocks.forward
            self.stages.append(s)

    def forward(self, x):
        x = F.relu(self.stem.norm(self.stem.conv(x)))
        x = F.max_pool2d(pad_same(x, 3, 2, value=float("-inf")), 3, 2)
        for stage in self.stages:
            x = stage(x)
        return x


def _timm_model(enc: ViTHybrid) -> nn.Module:
    """A `vit_base_resnet50_384` in timm's names, over our encoder's modules."""
    model = nn.Module()
    model.patch_embed = nn.Module()
    model.patch_embed.backbone = _Backbone(enc)
    model.patch_embed.proj = enc.patch_proj
    model.cls_token, model.pos_embed = enc.cls_token, enc.pos_embed
    model.pos_drop = nn.Identity()
    model.blocks = nn.ModuleList([
        _Alias(b, {"norm1": b.norm1, "attn": b.attn, "norm2": b.norm2,
                   "mlp": _Alias(b.mlp, {"fc1": b.mlp[0], "fc2": b.mlp[2]})})
        for b in enc.blocks])
    model.norm = nn.LayerNorm(enc.embed_dim, eps=1e-6)  # in the file, unused by DPT
    model.head = nn.Linear(enc.embed_dim, 10)  # timm's classifier: in the file, unused by DPT
    return model


class _StdConv2dSame(StdConv2d):
    """timm >= 0.4.12 `StdConv2dSame(cin, cout, kernel_size, stride, bias=False, eps=1e-6)`
    (weights standardised by F.batch_norm, biased variance: our StdConv2d)."""

    def __init__(self, cin, cout, kernel_size, stride=1, bias=False, eps=1e-6):
        k = kernel_size[0] if isinstance(kernel_size, tuple) else kernel_size
        s = stride[0] if isinstance(stride, tuple) else stride
        super().__init__(cin, cout, k, s, same=True, eps=eps)


def _ref_models():
    layers = stub_module("timm.models.layers", StdConv2dSame=_StdConv2dSame)
    models = stub_module("timm.models", layers=layers)
    timm = stub_module("timm", models=models, create_model=lambda name, pretrained=False:
                       _timm_model(ViTHybrid(3, **ENCODER)))
    mod = import_ref(REPO, "DPT.models", stubs={"timm": timm, "timm.models": models,
                                                "timm.models.layers": layers})
    return ref_attr(mod, "DPTDepthModel")


def _reference(spike: bool, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    ref = _ref_models()(path=None, scale=SCALE, shift=SHIFT, invert=True,
                        backbone="vitb_rn50_384", non_negative=False, with_uncertainty=True,
                        features=64, spike_input=spike)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # PyTorch's default init, plus random tokens and norms
        for name, p in ref.named_parameters():
            if name.endswith(("cls_token", "pos_embed")):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif "norm" in name and p.ndim == 1:
                p.copy_(float(name.endswith("weight")) + 0.2 * torch.randn(p.shape, generator=g))
    return ref.eval()


def _ours(in_chans: int) -> DPTDepth:
    enc = ViTHybrid(in_chans, **ENCODER, stem_eps=1e-8 if in_chans == 3 else 1e-6)
    return DPTDepth(enc, features=64, readout="project", uncertainty=True,
                    depth_mode="inverse_affine", scale=SCALE, shift=SHIFT).eval()


def _save(tmp_path, ref: nn.Module, name="DPTDepthModel_best.pt"):
    path = tmp_path / name
    # the trainers' layout (BiCross/Trainer_*.py torch.save); optimizer states alongside
    torch.save({"model_state_dict": ref.state_dict(),
                "optimizer_backbone_state_dict": {"state": {}, "param_groups": []},
                "optimizer_scratch_state_dict": {"state": {}, "param_groups": []}}, path)
    return path


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spike", [False, True], ids=["rgb", "spike128"])
def test_dpt_hybrid_with_uncertainty_matches_reference(tmp_path, spike):
    ref = _reference(spike, seed=3)
    ours = _ours(128 if spike else 3)
    layout, left = load_bicross(ours, _save(tmp_path, ref))
    assert (layout, left) == ("bicross", [])
    x = torch.randn(2, 128 if spike else 3, 64, 96, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        depth, unc, p1, p2, p3, p4, layer4, _ = ref(x)
        ref.invert = False  # the same network's raw output (inverse depth)
        raw = ref(x)[0]
        out = ours.forward_all(x)
    assert float(raw.std()) > 0.02 * float(raw.abs().mean())  # not a constant output
    _close(out.raw[:, 0], raw)
    _close(out.depth[:, 0], depth)
    _close(out.uncertainty[:, 0], unc)
    for a, b in zip(out.paths, [p1, p2, p3, p4], strict=True):
        _close(a, b)
    _close(out.layers[3], layer4)


def test_other_layouts_and_bad_files(tmp_path):
    ref = _reference(False, seed=5)
    state = ref.state_dict()
    # DPT's / MiDaS's plain state dict: everything but the uncertainty head
    plain = {k: v for k, v in state.items() if not k.startswith("uncertaity_head.")}
    torch.save(plain, tmp_path / "dpt_hybrid.pt")
    ours = _ours(3)
    layout, left = load_bicross(ours, tmp_path / "dpt_hybrid.pt")
    assert layout == "dpt" and left and all(k.startswith("uncertainty_head.") for k in left)
    with pytest.warns(UserWarning, match="dpt layout"):  # BiCross's stage-0 start, recognised
        load_dpt_init(_ours(3), tmp_path / "dpt_hybrid.pt", "bicross.rgb_init")
    # timm's ImageNet weights (the reference's stage-0 start): the encoder only
    timm_state = {k[len("pretrained.model."):]: v for k, v in state.items()
                  if k.startswith("pretrained.model.")}
    torch.save(timm_state, tmp_path / "vit_base_resnet50_384.pth")
    fresh = _ours(3)
    layout, left = load_bicross(fresh, tmp_path / "vit_base_resnet50_384.pth")
    assert layout == "timm" and not any(k.startswith("encoder.") for k in left)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        for a, b in zip(fresh.forward_features(x), ours.forward_features(x), strict=True):
            _close(a, b)
    # another architecture: refused, naming the first tensors that do not map
    other = dict(state)
    other["pretrained.model.blocks.0.attn.q_bias"] = torch.zeros(768)
    torch.save({"model_state_dict": other}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt: 1 of .*attn\.q_bias"):
        load_bicross(_ours(3), tmp_path / "other.pt")
    # the right names on another size: refused with the shapes
    with pytest.raises(ValueError, match=r"stem_conv.weight \(64, 3, 7, 7\) vs ours"):
        load_bicross(_ours(128), _save(tmp_path, ref))
    # a truncated file, and a pickle that would run code: one-line errors, nothing executed
    (tmp_path / "cut.pt").write_bytes((tmp_path / "dpt_hybrid.pt").read_bytes()[:1000])
    with pytest.raises(ValueError, match="cut.pt: not a (readable )?torch checkpoint"):
        read_bicross_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(_Evil(str(tmp_path / "ran"))))
    with pytest.raises(ValueError, match="evil.pt: (refused|not a torch checkpoint)"):
        read_bicross_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "ran").exists()


class _Evil:
    """Unpickling it would create a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))
