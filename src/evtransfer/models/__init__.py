"""Networks: the registry (`create_model`, `list_models`), encoders, heads and pretrained
weight loading from local files. Every encoder has `forward_features(x)` returning its
multi-scale maps (shallow to deep) and `feature_channels` / `feature_strides`."""

from evtransfer.models.mit import (
    Branches,
    MiTConfig,
    MixVisionTransformer,
    SegFormer,
    SegFormerHead,
)
from evtransfer.models.registry import create_model, list_models
from evtransfer.models.weights import (
    KEY_MAPS,
    LoadReport,
    adapt_input_conv,
    load_pretrained,
    read_state_dict,
)

__all__ = [
    "KEY_MAPS",
    "Branches",
    "LoadReport",
    "MiTConfig",
    "MixVisionTransformer",
    "SegFormer",
    "SegFormerHead",
    "adapt_input_conv",
    "create_model",
    "list_models",
    "load_pretrained",
    "read_state_dict",
]
