"""AutoWU: automated learning-rate scheduling for large-batch training (Kim et al., ICML 2021 AutoML workshop).

``from autowu import AutoWU`` gives the scheduler with the official API; the baseline schedules, ``sqrt_scaled_lr``
and ``create_scheduler`` serve the training framework. Depends on torch and numpy only (GPyTorch is used by the
tests as the reference the fast GP test is checked against).
"""
from .factory import REGISTRY, SCHEDULES, ScheduleEntry, create_scheduler, schedule_entry
from .gp import MinimumTest
from .scheduler import AutoWU
from .schedules import (ConstantCosine, StepScheduler, WarmupCosine, cosine_lr, decay_lr, sqrt_scaled_lr,
                        warmup_cosine_lr)

__all__ = ["AutoWU", "AutoLR", "ConstantCosine", "MinimumTest", "REGISTRY", "SCHEDULES", "ScheduleEntry", "StepScheduler",
           "WarmupCosine", "cosine_lr", "create_scheduler", "schedule_entry", "decay_lr", "sqrt_scaled_lr", "warmup_cosine_lr"]
__version__ = "0.1.0"


def __getattr__(name):  # AutoLR is imported lazily so a broken/missing AutoLR never breaks AutoWU users
    if name == "AutoLR":
        from .autolr import AutoLR
        return AutoLR
    raise AttributeError(f"module 'autowu' has no attribute {name!r}")
