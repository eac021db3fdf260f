"""Segmenters assembled from other registry networks, for packages that run them alone.

`e2vid_segmenter` is ESS's inference network (Sun et al., ECCV 2022; code: uzh-rpg/ess
training/ess_trainer.py `val_step`): K event windows → E2VID's input normalisation of each
window → the frozen recurrent E2VID encoder run over the windows, oldest first, from a fresh
state → the latents (strides 2, 4, 8) of the last window → the task decoder → logits. A
released ESS `Epoch_N.pt` loads into it (`models.released`), so `evtransfer evaluate` runs it.
"""

from __future__ import annotations

from torch import Tensor, nn

from evtransfer.models.heads import LatentSegDecoder, latent_seg_decoder
from evtransfer.models.recurrent import INPUT_NORMS, RecurrentUNet, e2vid, normalize_windows


class E2vidSegmenter(nn.Module):
    """Event windows (B, K·bins, H, W) → logits (B, classes, H, W) (see the module docstring).

    `input_norm`: "batch" standardises the non-zero entries of each window with statistics
    pooled over the batch (code: uzh-rpg/ess e2vid/image_reconstructor.py
    `update_reconstruction` runs E2VID's `EventPreprocessor` on the batched window), "sample"
    per batch item, "none" leaves the windows as they come. H and W must be multiples of
    2^num_encoders (ESS's inputs, 440 × 640 and 200 × 352, are; its `CropParameters` pad is
    then empty)."""

    def __init__(self, events: RecurrentUNet, decoder: LatentSegDecoder,
                 input_norm: str = "batch") -> None:
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {input_norm!r}")
        self.events, self.decoder, self.input_norm = events, decoder, input_norm

    def forward(self, x: Tensor) -> Tensor:
        x = normalize_windows(x, self.events.in_chans, self.input_norm)
        last, state = self.events.history(x)
        latents, _ = self.events.encode(last, state)
        return self.decoder(latents, x.shape[-2:]).logits


def e2vid_segmenter(in_chans: int = 100, num_classes: int = 11, bins: int = 5,
                    base_channels: int = 32, num_encoders: int = 3, num_residual_blocks: int = 2,
                    norm: str = "bn", decoder: str = "transposed", skip: str = "sum",
                    decoder_res_blocks: int = 5, input_norm: str = "batch",
                    seed: int = 0) -> E2vidSegmenter:
    """ESS's inference network over `in_chans // bins` windows of `bins` channels; the E2VID
    arguments are `models.recurrent.e2vid`'s (defaults: E2VID_lightweight), the decoder
    `latent_seg_decoder`'s (code: uzh-rpg/ess models/style_networks.py SemSegE2VID, 5
    residual blocks)."""
    if bins < 1 or in_chans % bins:
        raise ValueError(f"in_chans ({in_chans}) must be a multiple of bins ({bins})")
    events = e2vid(in_chans=bins, base_channels=base_channels, num_encoders=num_encoders,
                   num_residual_blocks=num_residual_blocks, norm=norm, decoder=decoder,
                   skip=skip, seed=seed)
    head = latent_seg_decoder(num_classes, tuple(events.feature_channels[:3]),
                              decoder_res_blocks, seed=seed)
    return E2vidSegmenter(events, head, input_norm)


MODELS = {"e2vid_segmenter": e2vid_segmenter}
