"""ECDDP's released pre-trained Swin-T (Yang, Pan, Liu, ECCV 2024; code:
Yan98/Event-Camera-Data-Dense-Pre-training).

File layout (code: trainer/base_trainer.py `save`): a torch file holding
`{"model": PretrainModel.state_dict(), "optimizer": ..., "current_epoch": int}`. The student's
backbone is under `student.backbone.` (the EMA teacher's under `teacher.backbone.`): the Swin
(`patch_embed.*`, `layers.{i}.blocks.{j}.*`, `layers.{i}.downsample.*`, `norm0`…`norm3`,
`mask_token`), the dense-token fusion `fpns.*`, and the persistent `relative_position_index`
buffers (recomputed here, as the code's fine-tuning drops them too: model/swin_model.py).
Input: ECDDP's pre-training voxel grid (6 bins, summed polarity, code: config/pretrain).

`ecddp_swin_t()` builds the released architecture; `load_ecddp_backbone(net, path)` loads the
file strictly into it (or into a bare `SwinTransformer`, the fine-tuning encoder, leaving the
fusion out) and refuses another architecture, naming the first tensors that do not map.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from evtransfer.models.ssl import DenseTokenEncoder
from evtransfer.models.swin import SwinTransformer, swin_init
from evtransfer.models.weights import read_state_dict

PREFIXES = ("student.backbone.", "teacher.backbone.")

RELEASED = {
    "paper": "Yang, Pan, Liu, Event Camera Data Dense Pre-training, ECCV 2024",
    "published": "the README's 'pre-trained swin-t/7' (Google Drive, file id "
                 "12OOBZa1HupsI7-E-Ct8VhdK05O98yNoi)",
    "layout": "torch file {'model': {'student.backbone.*', 'teacher.backbone.*', heads, loss "
              "centres}, 'optimizer': ..., 'current_epoch': int}",
    "architecture": "ecddp_swin_t(): Swin-T/7, LayerNorm eps 1e-6, stage norms, mask token, "
                    "768-channel stride-16 fusion",
    "pretraining_input": "6-bin voxel grid, summed polarity, no normalisation, random 320 x 320 "
                         "crop of 480 x 640 E-TartanAir events (code: config/pretrain, "
                         "data/ETartanAir_dataset.py)",
    "finetuning_input": "DSEC: 20-channel stacked (neg, pos) histograms of 10 x 50 000 events, "
                        "bottom 40 rows removed, resized to 448 x 640; the patch embedding is "
                        "re-initialised (code: config/seg/swin_small.yml keep_patch_keys false)",
}
"""What the released checkpoint is and expects (for a weights catalogue)."""


def ecddp_swin_t(in_chans: int = 6, seed: int = 0) -> DenseTokenEncoder:
    """The released pre-training backbone: Swin-T/7 (LayerNorm eps 1e-6, stage norms, mask
    token) + the 768-channel stride-16 fusion (code: config/pretrain/swin_small.yml)."""
    swin = SwinTransformer(in_chans, 0, 96, (2, 2, 6, 2), (3, 6, 12, 24), 7, stage_norms=True,
                           mask_token=True, eps=1e-6)
    net = DenseTokenEncoder(swin_init(swin, "torch", seed), 768)
    swin_init(net.fusion, "torch", seed)
    return net


def ecddp_backbone_state(state: Mapping[str, Tensor], which: str = "student"
                         ) -> dict[str, Tensor]:
    """The `which` (student / teacher) backbone of a released state dict renamed onto
    `DenseTokenEncoder` names (`encoder.*`, `fusion.fpns.*`), index buffers dropped."""
    prefix = f"{which}.backbone."
    if prefix not in PREFIXES:
        raise ValueError(f"which must be 'student' or 'teacher', got {which!r}")
    out = {}
    for key, value in state.items():
        if not key.startswith(prefix) or key.endswith("relative_position_index"):
            continue
        name = key[len(prefix):]
        out[("fusion." if name.startswith("fpns.") else "encoder.") + name] = value
    return out


def load_ecddp_backbone(net: nn.Module, path: str | Path, which: str = "student") -> int:
    """Load ECDDP's released checkpoint `path` strictly into `net` (a `DenseTokenEncoder`
    such as `ecddp_swin_t()`, or a bare `SwinTransformer`, which takes the Swin without the
    fusion); returns the number of tensors loaded. Raises ValueError naming the file and the
    first tensors that do not map (another architecture), or that the net lacks."""
    path = Path(path)
    raw = read_state_dict(path)
    state = ecddp_backbone_state(raw, which)
    if not state:
        raise ValueError(f"{path}: no '{which}.backbone.' tensors; this is not an ECDDP "
                         f"pre-training checkpoint (first keys: {list(raw)[:5]})")
    if isinstance(net, SwinTransformer):
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        if net.mask_token is None:
            state.pop("mask_token", None)
    target = net.state_dict()
    unmapped = [f"{k} {tuple(v.shape)}" for k, v in state.items()
                if k not in target or target[k].shape != v.shape]
    missing = [k for k in target if k not in state]
    if unmapped or missing:
        raise ValueError(f"{path}: not the architecture of {type(net).__name__} "
                         f"({len(unmapped)} tensors do not map, first: {unmapped[:3]}; "
                         f"{len(missing)} missing, first: {missing[:3]})")
    net.load_state_dict(state, strict=True)
    return len(state)
