"""The schedule registry: one :class:`ScheduleEntry` per schedule name, and ``create_scheduler`` (timm's
``create_scheduler_v2`` role) built on it.

An entry says everything a training loop needs to know about a schedule, so no caller switches on names: its class
and the constructor arguments the name fixes; the run settings it reads (train.py's flag names, as ``dest`` strings)
and the constructor argument each one becomes; what it needs from the loop (the model; probe mini-batches with a
loss function); and how its decisions (``sched.history`` entries) are described: a console line, TensorBoard
scalars, and the block(s) it adds to results.json. Adding a schedule is its class plus one entry in
:data:`REGISTRY`. The library does not import the framework: the setting names are plain strings here.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from torch.optim import Optimizer

from .scheduler import AutoWU
from .schedules import ConstantCosine, StepScheduler, WarmupCosine


def _no_line(entry: dict) -> Optional[str]:
    return None


def _no_scalars(entry: dict) -> dict[str, float]:
    return {}


def _no_results(sched: Any) -> dict:
    return {}


@dataclass(frozen=True)
class ScheduleEntry:
    """How one schedule name is built, fed and described (see the module docstring)."""
    name: str
    load: Callable[[], type]  # the class (a callable so a heavy or optional class is imported only when used)
    fixed: dict = field(default_factory=dict)  # constructor arguments the name itself fixes
    settings: dict = field(default_factory=dict)  # run setting (flag dest) -> constructor argument
    needs_model: Callable[[dict], bool] = lambda kwargs: False  # given the constructor arguments
    needs_probe: bool = False  # probe mini-batches: ``loss_fn(model, x, y)``, ``batches()``, ``forwards_per_step``
    describe: Callable[[dict], Optional[str]] = _no_line  # console line for a history entry (None: no line)
    scalars: Callable[[dict], dict] = _no_scalars  # TensorBoard scalars for a history entry, at its "step"
    results: Callable[[Any], dict] = _no_results  # keys this schedule adds to results.json
    before_save: Callable[[Any], None] = lambda sched: None  # a collective every rank runs before a checkpoint
    attach_run_dir: Callable[[Any, str], None] = lambda sched, directory: None  # files it keeps in the run directory
    prepare: Callable[[Any], None] = lambda sched: None  # work before the first step of a run that does not resume

    @property
    def cls(self) -> type:
        return self.load()

    def arguments(self) -> set[str]:
        """The keyword arguments the class accepts (beyond the optimizer and the step grid)."""
        params = inspect.signature(self.cls.__init__).parameters
        return {n for n, p in params.items() if n not in ("self", "optimizer", "steps_per_epoch", "total_epochs")
                and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}

    def build(self, optimizer: Optimizer, *, steps_per_epoch: int, total_epochs: int, **kwargs: Any) -> StepScheduler:
        fixed = sorted(set(self.fixed) & set(kwargs))
        if fixed:
            raise ValueError(f"schedule {self.name!r} fixes {', '.join(f'{k}={self.fixed[k]!r}' for k in fixed)}; "
                             "do not pass it (choose another schedule name, or build the class yourself)")
        return self.cls(optimizer, steps_per_epoch=steps_per_epoch, total_epochs=total_epochs,
                        **self.fixed, **kwargs)


# -- AutoWU's decisions -------------------------------------------------------------------------------------------
def _autowu_line(entry: dict) -> Optional[str]:
    if entry.get("type") == "test":
        p_min = " ".join(f"{p:.2f}" for p in entry.get("p_min", []))
        return (f"AutoWU test at step {entry['step']} (epoch {entry['epoch']}): P_min [{p_min}], {entry['votes']} "
                f"votes, {'passed' if entry['passed'] else 'not passed'} ({entry['consecutive']} in a row)")
    if entry.get("type") == "switch":
        return (f"AutoWU switch at step {entry['step']} (epoch {entry['epoch']}): t*={entry['t_star']:.1f}, decay "
                f"from lr {entry['lr']:.4g} ({entry['reason']})")
    return None


def _autowu_scalars(entry: dict) -> dict[str, float]:
    if entry.get("type") == "test" and entry.get("p_min"):
        return {"autowu/votes": entry["votes"], "autowu/p_min_mean": sum(entry["p_min"]) / len(entry["p_min"])}
    if entry.get("type") == "switch":
        return {"autowu/switch_lr": entry["lr"], "autowu/t_star": entry["t_star"]}
    return {}


def _autowu_results(sched: Any) -> dict:
    return {"switch": sched.switch}


def _autolr_results(sched: Any) -> dict:  # AutoLR's cost (its paper: <= 16.6% on CIFAR-10)
    return {"autolr": {"extra_forward_passes": sched.extra_forward_passes, "overhead": sched.overhead,
                       "compute_overhead": sched.compute_overhead}}


def _range_test_class() -> type:
    from .range_test import RangeTestCosine
    return RangeTestCosine


def _range_test_line(entry: dict) -> Optional[str]:
    if entry.get("type") == "range-test":
        return (f"LR range test (torch-lr-finder, {entry['steps']} steps, steepest descent): peak LR "
                f"{entry['lr']:.4g}")
    return None


def _autolr_class() -> type:
    from .autolr import AutoLR
    return AutoLR


_PEAK = {"lr": "peak_lr"}
_AUTOWU_SETTINGS = {"autowu_eta_min": "eta_min", "autowu_eta_max": "eta_max", "autowu_rho_w": "rho_w",
                    "autowu_warmup": "warmup", "autowu_n_test": "n_test", "autowu_confidence": "confidence",
                    "autowu_patience": "patience", "cooldown_fraction": "cooldown_fraction",
                    "autowu_rollback": "rollback", "seed": "seed", "autowu_test_every": "test_every",
                    "autowu_max_overshoot": "max_overshoot"}


def _autowu(name: str, decay: str) -> ScheduleEntry:
    return ScheduleEntry(name, lambda: AutoWU, fixed={"decay": decay, "variant": "paper"}, settings=_AUTOWU_SETTINGS,
                         needs_model=lambda kw: bool(kw.get("rollback")), describe=_autowu_line,
                         scalars=_autowu_scalars, results=_autowu_results,
                         before_save=lambda sched: sched.reduce_pending_losses(),  # mid-epoch: the rank average
                         attach_run_dir=_autowu_run_dir)


def _autowu_run_dir(sched: Any, directory: str) -> None:
    """Rollback snapshots go to ``directory/rollback/`` (written once each) instead of every checkpoint."""
    if sched.rollback:
        sched.keep_snapshots_in(os.path.join(directory, "rollback"))


REGISTRY: dict[str, ScheduleEntry] = {e.name: e for e in (
    ScheduleEntry("baseline", lambda: WarmupCosine, settings={**_PEAK, "warmup_epochs": "warmup_epochs"}),
    ScheduleEntry("const-cosine", lambda: ConstantCosine, settings={**_PEAK, "cooldown_fraction": "cooldown_fraction"}),
    # a constant LR (Schedule-Free's: its warmup is inside the optimizer)
    ScheduleEntry("constant", lambda: ConstantCosine, fixed={"cooldown_fraction": 0.0}, settings=_PEAK),
    _autowu("autowu-cos", "cosine"),
    _autowu("autowu-const-cos", "const-cosine"),
    ScheduleEntry("autolr", _autolr_class, needs_model=lambda kw: True, needs_probe=True, results=_autolr_results),
    ScheduleEntry("range-test-cos", _range_test_class, settings={"warmup_epochs": "warmup_epochs"},
                  needs_model=lambda kw: True, needs_probe=True, describe=_range_test_line,
                  results=lambda sched: {"range_test": {k: v for k, v in sched.found.items()
                                                        if k not in ("lrs", "losses")}},
                  prepare=lambda sched: sched.prepare()),
)}
SCHEDULES = tuple(REGISTRY)


def schedule_entry(name: str) -> ScheduleEntry:
    """The registry entry of ``name``; ValueError naming the choices for an unknown one."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):  # TypeError: an unhashable name (a list from a YAML file)
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}") from None


def create_scheduler(name: str, optimizer: Optimizer, *, steps_per_epoch: int, total_epochs: int,
                     **kwargs: Any) -> StepScheduler:
    """Build the schedule ``name`` (one of :data:`SCHEDULES`); ``kwargs`` go to its class.

    ``baseline`` -> :class:`WarmupCosine` (``peak_lr``, ``warmup_epochs``); ``const-cosine`` ->
    :class:`ConstantCosine`; ``autowu-cos`` / ``autowu-const-cos`` -> :class:`AutoWU` with ``decay='cosine'`` /
    ``'const-cosine'`` and the paper's reading (``variant='paper'``, see :class:`AutoWU`); ``autolr`` -> :class:`autowu.autolr.AutoLR`.
    """
    return schedule_entry(name).build(optimizer, steps_per_epoch=steps_per_epoch, total_epochs=total_epochs, **kwargs)
