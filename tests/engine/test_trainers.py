"""The dense trainers (segmentation with an auxiliary head, depth, flow) run, finish and
predict; their losses are tested in tests/test_losses.py."""

import pytest
import torch

from evtransfer.data._common import TensorDict
from evtransfer.engine.fit import FitConfig
from evtransfer.engine.predict import predict_depth
from evtransfer.engine.trainers import train_depth, train_flow, train_segmenter_with_aux
from evtransfer.models.flow import iterative_flow_net
from evtransfer.models.swin import SwinTransformer, UPerNet

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
FIT = FitConfig(steps=2, batch=2, ckpt_every=0, log_every=1, warmup_steps=1)


def _swin(in_chans):
    return SwinTransformer(in_chans, 0, 8, (1, 1, 1, 1), (1, 1, 2, 2), 2)


@pytest.mark.parametrize("device", DEVICES)
def test_trainers_run_and_predict(tmp_path, device):
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 4, 32, 32, generator=gen)
    seg = UPerNet(_swin(4), 3, 8, 4).to(dev)
    labels = torch.randint(0, 3, (4, 32, 32), generator=gen)
    minutes = train_segmenter_with_aux(seg, TensorDict(x=x, y=labels), FIT,
                                       run_dir=tmp_path / "seg", seed=0, device=dev,
                                       progress=False)
    assert minutes >= 0 and (tmp_path / "seg" / "done.json").exists()
    depth_net = UPerNet(_swin(4), 1, 8, None).to(dev)
    depth = torch.rand(4, 32, 32, generator=gen) * 40
    depth[:, :4] = 0  # invalid rows
    train_depth(depth_net, TensorDict(x=x, y=depth), FIT, run_dir=tmp_path / "depth", seed=0,
                device=dev, progress=False)
    pred = predict_depth(depth_net, x, device=dev)
    assert pred.shape == (4, 32, 32) and float(pred.min()) > 0 and float(pred.max()) <= 80
    flow_net = iterative_flow_net(_swin(2), dim=8, hidden=8, iters=2).to(dev)
    flow = torch.randn(4, 2, 32, 32, generator=gen)
    train_flow(flow_net, TensorDict(x=x, y=flow), FIT, run_dir=tmp_path / "flow", seed=0,
               device=dev, progress=False)
    assert (tmp_path / "flow" / "done.json").exists()
