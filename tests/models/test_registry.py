import pytest
import torch

from evtransfer.models import create_model, list_models
from evtransfer.models.mit import MixVisionTransformer, SegFormer

VARIANTS = ("b0", "b1", "b2", "b3", "b4", "b5")


def test_every_mit_and_segformer_size_is_registered():
    assert list_models("mit_b*") == [f"mit_{v}" for v in VARIANTS]
    assert list_models("segformer_*") == [f"segformer_{v}" for v in VARIANTS]
    names = list_models()
    assert names == sorted(names) and len(names) == len(set(names))


@pytest.mark.parametrize("variant, depths, dims, decoder", [
    ("b0", (2, 2, 2, 2), (32, 64, 160, 256), 256),  # paper Tab. 6 and its configs
    ("b1", (2, 2, 2, 2), (64, 128, 320, 512), 256),
    ("b2", (3, 4, 6, 3), (64, 128, 320, 512), 768),
    ("b3", (3, 4, 18, 3), (64, 128, 320, 512), 768),
    ("b4", (3, 8, 27, 3), (64, 128, 320, 512), 768),
    ("b5", (3, 6, 40, 3), (64, 128, 320, 512), 768),
])
def test_registered_sizes_are_built_as_in_the_paper(variant, depths, dims, decoder):
    with torch.device("meta"):
        model = create_model(f"segformer_{variant}", num_classes=19, in_chans=5)
    assert isinstance(model, SegFormer)
    assert tuple(len(s.blocks) for s in model.encoder.stages) == depths
    assert model.feature_channels == dims
    assert model.encoder.stages[0].patch_embed.proj.in_channels == 5
    assert model.decoder.embed_dim == decoder
    assert model.decoder.classifier.out_channels == 19


def test_create_model_builds_an_encoder_with_forward_features():
    enc = create_model("mit_b0", in_chans=2, seed=3)
    assert isinstance(enc, MixVisionTransformer)
    feats = enc.forward_features(torch.randn(1, 2, 64, 64))
    assert [f.shape[1] for f in feats] == list(enc.feature_channels)


def test_create_model_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match="unknown model 'segformer_b9'"):
        create_model("segformer_b9", num_classes=2)
    with pytest.raises(ValueError, match="mit_b0.*num_classes"):
        create_model("mit_b0", num_classes=2)
    with pytest.raises(ValueError, match="segformer_b0.*num_classes"):
        create_model("segformer_b0")
