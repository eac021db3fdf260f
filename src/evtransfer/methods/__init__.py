"""The transfer methods, one file each, and the table the benchmark and CLI read them from.

Every entry is `name -> (config dataclass, train function)`; a train function takes
`(data, cfg, root, *, seed, device, progress)` and returns a `MethodResult`. Configs that have
a `stages` field share the common stages (source model, synthetic model, reconstruction), so
the benchmark injects one `StageConfig` into all of them and trains each stage once per seed.
"""

from evtransfer.methods import baselines, cmess
from evtransfer.methods.result import MethodResult

METHODS = {
    "source_only": (baselines.BaselineConfig, baselines.source_only),
    "recon_source": (baselines.BaselineConfig, baselines.recon_source),
    "cmess": (cmess.CmessConfig, cmess.train_cmess),
    "oracle": (baselines.BaselineConfig, baselines.oracle),
}

__all__ = ["METHODS", "MethodResult"]
