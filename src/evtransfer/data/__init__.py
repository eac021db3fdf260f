"""Benchmark datasets as torch `Dataset`s, one module per benchmark, each reproducing its
published protocol (configs are dataclasses whose defaults are the papers' choices):

- `dsec_semantic`: DSEC-Semantic (ESS protocol);
- `ddd17`: DDD17 segmentation (ESS protocol, Ev-SegNet labels);
- `mvsec`: MVSEC monocular depth (outdoor day2 → day1, indoor_flying splits 1–3);
- `recognition`: N-Caltech101 and UHSR spike-camera recognition;
- `depth_sources`: paired RGB + depth sources (KITTI, Virtual KITTI 2, generic folders).

Samples are dicts; a `representation` callable (one event window → (C, H, W) tensor; an
`Events`, or for DSEC's default sub-pixel rectification an `EventBatch`) and a joint
`transform` (dict → dict) can be given to every dataset that yields events. Nothing is
imported here, so `import evtransfer.data` stays light.
"""
