import os
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn

from evtransfer.engine import (
    all_gather_objects,
    all_reduce_mean,
    barrier,
    get_dist_info,
    init_distributed,
    is_main,
    read_metrics,
    read_weights,
    select_device,
    unwrap,
    wrap_ddp,
)

from . import tiny_run

TINY = Path(tiny_run.__file__)


def test_single_process_defaults(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = init_distributed()
    assert (info.rank, info.world_size, info.backend, info.distributed) == (0, 1, None, False)
    assert get_dist_info() == info and is_main()
    barrier()
    x = torch.tensor([1.0, 2.0])
    y = all_reduce_mean(x)
    assert torch.equal(x, y) and y.data_ptr() != x.data_ptr()
    assert all_gather_objects({"a": 1}) == [{"a": 1}]
    net = nn.Linear(2, 2)
    assert wrap_ddp(net, torch.device("cpu")) is net and unwrap(net) is net


def test_bad_torchrun_environment(monkeypatch):
    monkeypatch.setenv("RANK", "zero")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="RANK='zero'"):
        init_distributed()


def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else None
    if expected is None and not torch.backends.mps.is_available():
        assert select_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda")
    else:
        assert select_device("auto").type in ("cuda", "mps")
    with pytest.raises(ValueError, match="device must be"):
        select_device("tpu")


@pytest.mark.slow
def test_two_gloo_ranks_match_single_process(tmp_path):
    """torchrun, 2 CPU processes x batch 4 == one process x batch 8, after 24 AdamW steps."""
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(TINY),
        "--run-dir",
        str(ddp_dir),
        "--batch-size",
        "4",
        "--epochs",
        "2",
    ]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    single = tiny_run.run(single_dir, epochs=2, batch_size=8)

    rank0 = safetensors.torch.load_file(str(ddp_dir / "final_rank0.safetensors"))
    rank1 = safetensors.torch.load_file(str(ddp_dir / "final_rank1.safetensors"))
    ref = single.modules["net"].state_dict()
    assert rank0.keys() == rank1.keys() == ref.keys()
    for key in ref:
        assert torch.equal(rank0[key], rank1[key]), key
        torch.testing.assert_close(rank0[key], ref[key], rtol=0, atol=1e-6)
    teacher = read_weights(ddp_dir / "checkpoints" / "last")["ema.net"]
    for key, value in single.ema["net"].state_dict().items():
        torch.testing.assert_close(teacher[key], value, rtol=0, atol=1e-6)

    ddp_log, ref_log = read_metrics(ddp_dir), read_metrics(single_dir)
    assert [r["step"] for r in ddp_log] == list(range(1, 25))  # one writer, each step once
    for a, b in zip(ddp_log, ref_log, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
