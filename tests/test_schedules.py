"""Baseline schedules: the paper's warmup+cosine, constant-then-cosine, sqrt LR scaling."""
import math

import pytest
import torch

from autowu import ConstantCosine, WarmupCosine, create_scheduler, sqrt_scaled_lr


def opt(lrs=(1.0,)):
    return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs])


def trajectory(s, n):
    out = []
    for _ in range(n):
        out.append(s.get_last_lr()[0])
        s.step()
    out.append(s.get_last_lr()[0])
    return out


def test_sqrt_scaling_matches_paper_baseline():
    assert sqrt_scaled_lr(1e-3, 16384) == pytest.approx(0.008)  # Appendix C.1: (0.008, 5) is the 16K baseline
    assert sqrt_scaled_lr(1e-3, 256) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="batch_size"):
        sqrt_scaled_lr(1e-3, 0)


def test_warmup_cosine_shape():
    s = WarmupCosine(opt(), steps_per_epoch=10, total_epochs=20, peak_lr=0.008, warmup_epochs=5)
    lrs = trajectory(s, 200)
    assert lrs[0] == 0.0 and lrs[25] == pytest.approx(0.004) and lrs[50] == pytest.approx(0.008)
    assert all(a < b for a, b in zip(lrs[:50], lrs[1:51]))
    assert all(a > b for a, b in zip(lrs[50:200], lrs[51:201]))
    assert lrs[125] == pytest.approx(0.004)  # half-way through the cosine
    assert lrs[200] == 0.0


def test_constant_cosine_is_flat_then_cosine_over_last_fraction():
    s = ConstantCosine(opt(), 10, 20, peak_lr=0.1, cooldown_fraction=0.2)
    lrs = trajectory(s, 200)
    assert all(lr == 0.1 for lr in lrs[:161])
    assert lrs[180] == pytest.approx(0.05) and lrs[200] == 0.0


def test_groups_keep_ratios_and_resume_is_exact():
    s = create_scheduler("baseline", opt((2.0, 0.2)), steps_per_epoch=10, total_epochs=20, peak_lr=0.01)
    for _ in range(37):
        s.step(1.23)  # the loss is accepted and ignored
    lr0, lr1 = s.get_last_lr()
    assert lr1 == pytest.approx(lr0 / 10)
    t = create_scheduler("baseline", opt((2.0, 0.2)), steps_per_epoch=10, total_epochs=20, peak_lr=0.01)
    t.load_state_dict(s.state_dict())
    assert trajectory(t, 50) == trajectory(s, 50)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="warmup_epochs"):
        WarmupCosine(opt(), 10, 20, peak_lr=0.1, warmup_epochs=30)
    with pytest.raises(ValueError, match="peak_lr"):
        WarmupCosine(opt(), 10, 20, peak_lr=math.nan)
    with pytest.raises(ValueError, match="param group 0"):
        WarmupCosine(opt((0.0,)), 10, 20)
