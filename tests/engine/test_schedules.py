import math

import numpy as np
import pytest
import torch

from evtransfer.engine import apply_schedules, cosine_schedule
from evtransfer.engine.schedules import check_schedules, schedule_values


def test_cosine_hand_values():
    # no warm-up: values at i/n = 0, 1/4, 1/2, 3/4 of a half cosine from 4 to 2
    s = cosine_schedule(4.0, 2.0, epochs=1, iters_per_epoch=4)
    h = math.sqrt(2) / 2
    np.testing.assert_allclose(s, [4.0, 3.0 + h, 3.0, 3.0 - h], rtol=0, atol=1e-15)
    assert s.dtype == np.float64


def test_warmup_is_linear_and_joins_base():
    s = cosine_schedule(
        1.0, 0.0, epochs=2, iters_per_epoch=2, warmup_epochs=1, start_warmup_value=0.5
    )
    np.testing.assert_allclose(s, [0.5, 1.0, 1.0, 0.5], rtol=0, atol=1e-15)
    s = cosine_schedule(
        0.07, 0.07, epochs=10, iters_per_epoch=3, warmup_epochs=5, start_warmup_value=0.04
    )
    np.testing.assert_allclose(s[:15], np.linspace(0.04, 0.07, 15), atol=1e-15)
    np.testing.assert_allclose(s[15:], 0.07, atol=1e-15)


@pytest.mark.parametrize("warmup", [0, 0.5, 2])
def test_shape_and_monotone_decay(warmup):
    s = cosine_schedule(1.0, 1e-3, epochs=4, iters_per_epoch=7, warmup_epochs=warmup)
    assert s.shape == (28,)
    w = round(warmup * 7)
    assert np.all(np.diff(s[w:]) < 0) and s[w] == 1.0 and s[-1] > 1e-3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epochs": 0},
        {"iters_per_epoch": 0},
        {"warmup_epochs": 5},
        {"warmup_epochs": -1},
        {"base": float("nan")},
        {"epochs": 2.0},
    ],
)
def test_invalid_arguments(kwargs):
    args = {"base": 1.0, "final": 0.0, "epochs": 2, "iters_per_epoch": 3} | kwargs
    with pytest.raises(ValueError, match="cosine_schedule"):
        cosine_schedule(**args)


def test_apply_schedules_scales_and_per_optimizer_keys():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt1 = torch.optim.AdamW([{"params": [a]}, {"params": [b], "lr_scale": 0.2, "wd_scale": 0.0}])
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=5.0, weight_decay=0.3)
    apply_schedules({"main": opt1, "head": opt2}, {"lr": 1.0, "lr/head": 0.5, "weight_decay": 0.1})
    assert [g["lr"] for g in opt1.param_groups] == [1.0, 0.2]
    assert [g["weight_decay"] for g in opt1.param_groups] == [0.1, 0.0]
    assert opt2.param_groups[0]["lr"] == 0.5 and opt2.param_groups[0]["weight_decay"] == 0.1
    apply_schedules({"head": opt2}, {})
    assert opt2.param_groups[0]["lr"] == 0.5  # no schedule: left alone


def test_schedule_checks():
    with pytest.raises(ValueError, match="'lr' has 2 values"):
        schedule_values({"lr": np.ones(2)}, 2)
    with pytest.raises(ValueError, match="non-finite"):
        check_schedules({"lr": [1.0, np.inf]})
    with pytest.raises(ValueError, match="1-D"):
        check_schedules({"lr": np.ones((2, 2))})
    assert schedule_values({"lr": np.array([0.5, 0.25])}, 1) == {"lr": 0.25}
