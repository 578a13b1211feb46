"""Probe cases: the library used wrongly (AutoWU, AutoLR, the schedules, the registry, the optimizers)."""
from __future__ import annotations

import torch

from fault_probe import case, expect_ok, expect_raise


def _opt(lr: float = 0.1):
    return torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=lr)


@case("library", "AutoWU with total_steps 0")
def autowu_zero_total_steps(p):
    from autowu import AutoWU
    return expect_raise(p, lambda: AutoWU(_opt(), steps_per_epoch=0, total_epochs=10), "steps_per_epoch")
