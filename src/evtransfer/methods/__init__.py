"""The transfer methods, one file each, and the table the benchmark and CLI read them from.

Every entry is `name -> (config dataclass, train function)`; a train function takes
`(data, cfg, root, *, seed, device, progress)` and returns a `MethodResult`. Configs that have
a `stages` field share the common stages (source model, synthetic model, reconstruction), so
the benchmark injects one `StageConfig` into all of them and trains each stage once per seed.
"""

from evtransfer.methods import baselines, bicross, cmess, ecddp, ess, evdistill
from evtransfer.methods.result import MethodResult

METHODS = {
    "source_only": (baselines.BaselineConfig, baselines.source_only),
    "recon_source": (baselines.BaselineConfig, baselines.recon_source),
    "cmess": (cmess.CmessConfig, cmess.train_cmess),
    "evdistill": (evdistill.EvdistillConfig, evdistill.train_evdistill),
    "ess": (ess.EssConfig, ess.train_ess),
    "ess_supervised": (ess.EssConfig, ess.train_ess_supervised),
    "oracle": (baselines.BaselineConfig, baselines.oracle),
    "bicross": (bicross.BicrossConfig, bicross.train_bicross),
    "ecddp": (ecddp.EcddpConfig, ecddp.train_ecddp),
}

# Spike-camera depth (`bench transfer --task depth`): BiCross, its ablations and its baselines
# take `DepthTransferData` and predict depth; `spike_supervised` also takes `labeled`.
DEPTH_METHODS = {name: (bicross.BicrossConfig, fn) for name, fn in bicross.ENTRIES.items()}

# Methods that also take the target train labels (`labels`): the upper-bound rows.
TARGET_LABELED = ("oracle", "ess_supervised", "ecddp")  # ecddp: a label_fraction of them

__all__ = ["DEPTH_METHODS", "METHODS", "TARGET_LABELED", "MethodResult"]
