import numpy as np
import pytest
import torch
from torch import nn

from evtransfer.engine import EmaTeacher

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _net(dtype, device):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).to(device, dtype)


def _snapshot(module):
    return {k: v.detach().cpu().double().numpy().copy() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_update_matches_float64_reference(device, dtype):
    student = _net(dtype, device)
    ema = EmaTeacher(student, momentum=0.9)
    expected = _snapshot(student)
    for m in (0.9, 0.5, 0.99):
        with torch.no_grad():
            for p in student.parameters():
                p.add_(torch.randn_like(p))
        student.train()
        student(torch.randn(5, 3, device=device, dtype=dtype))  # moves BN running stats
        s = _snapshot(student)
        for k in expected:
            if k.endswith("num_batches_tracked"):
                expected[k] = s[k]
            else:
                expected[k] = m * expected[k] + (1 - m) * s[k]
        ema.update(student, m)
    got = _snapshot(ema.module)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=tol, atol=tol, err_msg=k)


def test_teacher_is_frozen_copy_and_student_untouched():
    student = _net(torch.float32, "cpu")
    ema = EmaTeacher(student)
    assert all(not p.requires_grad for p in ema.module.parameters())
    assert all(p.requires_grad for p in student.parameters())
    assert not ema.module.training
    before = _snapshot(student)
    with torch.no_grad():
        next(ema.module.parameters()).add_(1.0)
    ema.update(student)  # default momentum 0.999
    after = _snapshot(student)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert next(ema.module.parameters()).data_ptr() != next(student.parameters()).data_ptr()


def test_momentum_extremes():
    student = _net(torch.float32, "cpu")
    ema = EmaTeacher(student)
    with torch.no_grad():
        for p in student.parameters():
            p.mul_(3.0)
    frozen = _snapshot(ema.module)
    ema.update(student, 1.0)
    assert all(np.array_equal(frozen[k], v) for k, v in _snapshot(ema.module).items())
    ema.update(student, 0.0)
    s = _snapshot(student)
    assert all(np.array_equal(s[k], v) for k, v in _snapshot(ema.module).items())


def test_update_does_not_record_autograd():
    student = _net(torch.float32, "cpu")
    ema = EmaTeacher(student)
    ema.update(student, 0.5)
    assert all(p.grad_fn is None for p in ema.module.parameters())


def test_errors():
    student = _net(torch.float32, "cpu")
    with pytest.raises(ValueError, match="momentum"):
        EmaTeacher(student, momentum=1.5)
    ema = EmaTeacher(student)
    with pytest.raises(ValueError, match="differ in tensors"):
        ema.update(nn.Linear(3, 4))
    other = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Linear(5, 2))
    with pytest.raises(ValueError, match="shape"):
        ema.update(other)
