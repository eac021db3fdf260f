"""Events and spikes → dense float32 tensors for networks.

Event representations take `Events`, a sequence of `Events` (a batch), `TorchEvents` or an
`EventBatch` (flat tensors with a stream index, for data already on a GPU) and return
(B, C, H, W) float32 on the input's device or on `device`:

- `voxel_grid`: B time bins, linear in time (E2VID / ESS / ECDDP), summed or split polarity,
  optional mean/std normalisation of non-zero entries (`normalize_nonzero`);
- `histogram`: (neg, pos) counts; `stacked_histogram`: K windows of N events (ECDDP's 20
  channels); `event_image`: red/blue display image;
- `time_surface`: exponential decay per polarity; `evsegnet_encoding`: Ev-SegNet's 6 channels.

Spike representations take `Spikes` or a (T, H, W) tensor and key frame(s): `tfp`, `tfi`,
`spike_stack` (BiCross's ±1 input).

`objects` wraps each representation a network takes as a frozen dataclass holding its
parameters (`VoxelGrid`, `Histogram`, `EvSegNet`, `SpikeStack`), registered by the name configs
and model packages store (`REPRESENTATIONS`, `get_representation`).
"""

from evtransfer.represent.batch import EventBatch, EventsLike, as_event_batch
from evtransfer.represent.histogram import event_image, histogram, stacked_histogram
from evtransfer.represent.objects import (
    REPRESENTATIONS,
    EvSegNet,
    Histogram,
    Representation,
    SpikeStack,
    VoxelGrid,
    get_representation,
    representation_names,
    representation_of,
    representation_type,
)
from evtransfer.represent.spikes import spike_stack, tfi, tfp
from evtransfer.represent.surface import evsegnet_encoding, time_surface
from evtransfer.represent.voxel import normalize_nonzero, voxel_grid

__all__ = [
    "REPRESENTATIONS",
    "EvSegNet",
    "Histogram",
    "Representation",
    "SpikeStack",
    "VoxelGrid",
    "get_representation",
    "representation_names",
    "representation_of",
    "representation_type",
    "EventBatch",
    "EventsLike",
    "as_event_batch",
    "event_image",
    "evsegnet_encoding",
    "histogram",
    "normalize_nonzero",
    "spike_stack",
    "stacked_histogram",
    "tfi",
    "tfp",
    "time_surface",
    "voxel_grid",
]
