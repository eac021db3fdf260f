"""Synthetic neuromorphic data from frames: DVS events, spike-camera spikes, camera motion.

- `DvsSimulator` / `simulate_events`: ESIM-model event camera with v2e non-idealities, presets
  `ideal`, `clean`, `noisy` (`dvs_preset`).
- `SpikeSimulator` / `simulate_spikes` / `spikes_from_image`: integrate-and-fire spike camera.
- `random_motion`, `warp`, `pseudo_video`: one labeled image -> a labeled pseudo-video.
- `interpolate_frames`: raise a video's frame rate (log-linear by default, pluggable).
- `open_frames`: frame folders, videos and images as streams of (frame, t_us).
"""

from evtransfer.simulate._checks import SimulationError
from evtransfer.simulate.dvs import DvsSimulator, simulate_events
from evtransfer.simulate.dvs_config import PRESETS, DvsConfig, dvs_preset
from evtransfer.simulate.motion import (
    CameraMotion,
    PseudoVideo,
    frame_times,
    interpolate_frames,
    pose_homography,
    pseudo_video,
    random_motion,
    warp,
)
from evtransfer.simulate.sources import FrameSource, luminance, open_frames
from evtransfer.simulate.spikes import (
    SpikeConfig,
    SpikeSimulator,
    simulate_spikes,
    spikes_from_image,
)

__all__ = [
    "PRESETS",
    "CameraMotion",
    "DvsConfig",
    "DvsSimulator",
    "FrameSource",
    "PseudoVideo",
    "SimulationError",
    "SpikeConfig",
    "SpikeSimulator",
    "dvs_preset",
    "frame_times",
    "interpolate_frames",
    "luminance",
    "open_frames",
    "pose_homography",
    "pseudo_video",
    "random_motion",
    "simulate_events",
    "simulate_spikes",
    "spikes_from_image",
    "warp",
]
