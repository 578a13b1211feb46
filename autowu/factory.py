"""``create_scheduler``: one entry point from a schedule name to a scheduler (timm's ``create_scheduler_v2`` role)."""
from __future__ import annotations

from typing import Any

from torch.optim import Optimizer

from .scheduler import AutoWU
from .schedules import ConstantCosine, StepScheduler, WarmupCosine

SCHEDULES = ("baseline", "const-cosine", "autowu-cos", "autowu-const-cos", "autolr")


def create_scheduler(name: str, optimizer: Optimizer, *, steps_per_epoch: int, total_epochs: int,
                     **kwargs: Any) -> StepScheduler:
    """Build the schedule ``name`` (one of :data:`SCHEDULES`); ``kwargs`` go to its class.

    ``baseline`` -> :class:`WarmupCosine` (``peak_lr``, ``warmup_epochs``); ``const-cosine`` ->
    :class:`ConstantCosine`; ``autowu-cos`` / ``autowu-const-cos`` -> :class:`AutoWU` with ``decay='cosine'`` /
    ``'const-cosine'``; ``autolr`` -> :class:`autowu.autolr.AutoLR`.
    """
    common = dict(steps_per_epoch=steps_per_epoch, total_epochs=total_epochs)
    if name == "baseline":
        return WarmupCosine(optimizer, **common, **kwargs)
    if name == "const-cosine":
        return ConstantCosine(optimizer, **common, **kwargs)
    if name in ("autowu-cos", "autowu-const-cos"):
        decay = "cosine" if name == "autowu-cos" else "const-cosine"
        return AutoWU(optimizer, **common, decay=decay, **kwargs)
    if name == "autolr":
        from .autolr import AutoLR
        return AutoLR(optimizer, **common, **kwargs)
    raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")


def schedule_class(name: str) -> type:
    """The class that :func:`create_scheduler` builds for ``name`` (to list its keyword arguments)."""
    if name == "autolr":
        from .autolr import AutoLR
        return AutoLR
    classes = {"baseline": WarmupCosine, "const-cosine": ConstantCosine, "autowu-cos": AutoWU,
               "autowu-const-cos": AutoWU}
    if name not in classes:
        raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")
    return classes[name]
