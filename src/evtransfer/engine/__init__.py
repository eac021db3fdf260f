"""Training engine: loop, checkpoints, schedules, EMA, distributed, logging, configs, seeding.

The engine knows no paper and no model. A method builds a `TrainState` and calls `train`
(see `evtransfer.engine.loop` for an example); everything here also works in a single
process without torchrun. On top of the loop: `engine.fit` (a supervised run over a dataset
and the stage folders that cache it), `engine.trainers` (the dense trainers) and
`engine.predict` (batched inference).
"""

from evtransfer.config import (
    ConfigError,
    load_config,
    parse_override,
    run_metadata,
    save_resolved,
    to_dict,
)
from evtransfer.engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_module_weights,
    read_state,
    read_weights,
    resolve_checkpoint,
    save_checkpoint,
)
from evtransfer.engine.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_mean,
    all_reduce_min,
    barrier,
    destroy_distributed,
    get_dist_info,
    init_distributed,
    is_main,
    select_device,
    unwrap,
    wrap_ddp,
)
from evtransfer.engine.ema import EmaTeacher
from evtransfer.engine.guard import NonFiniteError
from evtransfer.engine.loader import ResumableBatchSampler, make_loader
from evtransfer.engine.logging import MetricLogger, read_metrics
from evtransfer.engine.loop import (
    LoopConfig,
    TrainState,
    move_to_device,
    train,
    train_one_epoch,
)
from evtransfer.engine.schedules import apply_schedules, cosine_schedule
from evtransfer.engine.seed import (
    capture_rng_state,
    derive_seed,
    make_generator,
    restore_rng_state,
    seed_everything,
    worker_init_fn,
)

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DistInfo",
    "EmaTeacher",
    "LoopConfig",
    "MetricLogger",
    "NonFiniteError",
    "ResumableBatchSampler",
    "TrainState",
    "all_gather_objects",
    "all_reduce_mean",
    "all_reduce_min",
    "apply_schedules",
    "barrier",
    "capture_rng_state",
    "cosine_schedule",
    "derive_seed",
    "destroy_distributed",
    "get_dist_info",
    "init_distributed",
    "is_main",
    "load_checkpoint",
    "load_config",
    "load_module_weights",
    "make_generator",
    "make_loader",
    "move_to_device",
    "parse_override",
    "read_metrics",
    "read_state",
    "read_weights",
    "resolve_checkpoint",
    "restore_rng_state",
    "run_metadata",
    "save_checkpoint",
    "save_resolved",
    "seed_everything",
    "select_device",
    "to_dict",
    "train",
    "train_one_epoch",
    "unwrap",
    "worker_init_fn",
    "wrap_ddp",
]
