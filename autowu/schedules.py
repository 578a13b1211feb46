"""Step-based LR schedules: the paper's baseline, constant-then-cosine, and the base class every schedule here uses.

All LRs are pure functions of the optimizer-step index (nanoGPT ``get_lr`` / timm ``_get_lr`` style), so a
schedule's state is a step count and resuming is exact.
"""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Optional

import torch

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


def sqrt_scaled_lr(base_lr: float, batch_size: int, ref: int = 256) -> float:
    """The paper's baseline LR rule, ``base_lr * sqrt(batch_size / ref)`` (Section 3, Appendix B)."""
    _check_positive("base_lr", base_lr)
    _check_int("batch_size", batch_size, 1)
    _check_int("ref", ref, 1)
    return float(base_lr) * math.sqrt(int(batch_size) / int(ref))


def cosine_lr(step: float, start_step: float, end_step: float, start_lr: float) -> float:
    """Cosine annealing from ``start_lr`` at ``start_step`` to 0 at ``end_step`` (flat before, 0 after)."""
    if step <= start_step:
        return start_lr
    if step >= end_step:
        return 0.0
    return start_lr * 0.5 * (1.0 + math.cos(math.pi * (step - start_step) / (end_step - start_step)))


def decay_lr(step: float, start_step: float, total_steps: int, start_lr: float, cooldown_steps: Optional[int]) -> float:
    """The decay phase: cosine from ``start_step`` (``cooldown_steps=None``) or constant, then cosine over the
    last ``cooldown_steps`` steps (constant-then-cosine, Section 2.2). A constant phase that would start after the
    cooldown has begun degenerates to cosine from ``start_step``."""
    if cooldown_steps is not None and not (isinstance(cooldown_steps, numbers.Integral) and not isinstance(
            cooldown_steps, bool) and 0 <= cooldown_steps <= total_steps):
        raise ValueError(f"cooldown_steps={cooldown_steps!r} must be None (cosine from start_step) or an integer in "
                         f"[0, total_steps={total_steps}]")
    cos_start = start_step if cooldown_steps is None else max(start_step, total_steps - cooldown_steps)
    return cosine_lr(step, cos_start, total_steps, start_lr)


def warmup_cosine_lr(step: int, total_steps: int, warmup_steps: int, peak_lr: float) -> float:
    """The paper's baseline: linear warmup from 0 to ``peak_lr`` over ``warmup_steps``, then cosine to 0 at
    ``total_steps`` (Section 3: "5 epochs of a linear warmup from 0 to a predetermined peak LR followed by a cosine
    decay to 0"; Appendix C.1)."""
    if step < warmup_steps:
        return peak_lr * step / warmup_steps
    return cosine_lr(step, warmup_steps, total_steps, peak_lr)


class StepScheduler(LRScheduler):
    """Base of every schedule in this package: an :class:`~torch.optim.lr_scheduler.LRScheduler` counted in
    optimizer steps, with ``step(loss)`` / ``step(metrics=loss)`` accepted by all (Lightning passes the monitored
    metric to ``reduce_on_plateau`` schedulers).

    Parameter groups keep their ratio to group 0's initial LR: a schedule computes one LR ``eta`` and group ``g``
    gets ``eta * lr_g / lr_0`` (no-weight-decay groups, layer-wise scales). A group with an ``lr_scale`` key (timm's
    ``create_optimizer_v2(..., layer_decay=...)`` puts the layer-wise factor there; timm's own schedulers multiply
    by it) gets ``eta * lr_g / lr_0 * lr_scale_g``, as under timm's schedulers. The official AutoWU forced one LR on
    every group.

    ``LRScheduler.__init__`` is not called: it would call ``step()`` once, which for a loss-driven schedule would
    record a loss that does not exist. We set the attributes PyTorch and Lightning read (``optimizer``,
    ``base_lrs``, ``last_epoch`` = optimizer steps taken, ``_last_lr``, ``_step_count``).
    """

    def __init__(self, optimizer: Optimizer, steps_per_epoch: int, total_epochs: int):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        _check_int("steps_per_epoch", steps_per_epoch, 1)
        _check_int("total_epochs", total_epochs, 1)
        self.optimizer = optimizer
        self.steps_per_epoch = int(steps_per_epoch)
        self.total_epochs = int(total_epochs)
        self.total_steps = self.steps_per_epoch * self.total_epochs
        if not optimizer.param_groups:
            raise ValueError("the optimizer has no param groups: add the model's parameters before building the "
                             "scheduler")
        lrs = [_group_number(g, "initial_lr" if "initial_lr" in g else "lr", i)
               for i, g in enumerate(optimizer.param_groups)]
        scales = [_group_number(g, "lr_scale", i) for i, g in enumerate(optimizer.param_groups)]
        if lrs[0] <= 0 or not math.isfinite(lrs[0]):
            raise ValueError(f"param group 0 has lr={lrs[0]}; the schedule keeps every group's ratio to group 0, so "
                             "group 0 needs a positive LR (any value, e.g. 1.0, if all groups share the schedule)")
        for i, (lr, scale) in enumerate(zip(lrs, scales)):
            if not (lr >= 0 and math.isfinite(lr) and scale >= 0 and math.isfinite(scale)):
                raise ValueError(f"param group {i} has lr={lr}, lr_scale={scale}: both must be finite and >= 0 (a "
                                 "negative one would step up the gradient)")
        self.group_ratios = [lr / lrs[0] * scale for lr, scale in zip(lrs, scales)]
        self.history: list[dict] = []  # the decisions of a loss-driven schedule (AutoWU, AutoLR); empty otherwise
        for g, lr in zip(optimizer.param_groups, lrs):
            g.setdefault("initial_lr", lr)
        self.base_lrs = lrs
        self.last_epoch = 0  # PyTorch's name: the number of optimizer steps taken so far
        self._step_count = 1
        self._last_lr: list[float] = []
        # torch's schedulers warn when step() comes before the first optimizer.step(); a post-step hook tells us
        self._optimizer_stepped = _Flag()
        self._optimizer_hook = optimizer.register_step_post_hook(self._optimizer_stepped)
        self._last_schedule_lr = float("nan")  # set with the first LR the subclass applies
        self._timm = False  # step_update() seen: step(int, metric) is then timm's epoch-end call

    # -- what subclasses provide -------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        """The LR (of group 0) used by optimizer step ``step`` (0-based)."""
        raise NotImplementedError

    # -- the protocol --------------------------------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        """Optimizer steps taken so far (= index of the next step)."""
        return self.last_epoch

    @property
    def epoch(self) -> int:
        return self.last_epoch // self.steps_per_epoch

    t_in_epochs = False  # timm's scheduler attribute (its train.py reads it): the schedules step per optimizer update

    def step(self, loss: Any = None, metric: Any = None, *, metrics: Any = None,  # type: ignore[override]
             epoch: Optional[int] = None) -> None:
        """Call once after each optimizer step. ``loss`` is ignored by pure schedules. timm's epoch-end
        ``step(epoch, metric)`` (and its resume call ``step(start_epoch)``) is a no-op once :meth:`step_update`
        counts the updates."""
        if epoch is not None:
            raise ValueError("step(epoch=...) is not supported: the schedule counts optimizer steps itself")
        if self._timm_epoch_call(loss, metric):
            return
        self._warn_if_before_optimizer_step()
        if self._past_the_end():
            return
        self.last_epoch += 1
        self._step_count += 1
        self._apply_lr(self.lr_at(self.last_epoch))

    def step_update(self, num_updates: int, metric: Any = None) -> None:
        """timm's per-update call, ``scheduler.step_update(num_updates=num_updates, metric=...)`` after each optimizer
        update: one step. Its resume call ``step_update(start_epoch * updates_per_epoch)`` (no metric) is a no-op when
        the count is the one a loaded ``state_dict`` restored."""
        if isinstance(num_updates, bool) or not isinstance(num_updates, numbers.Integral):
            raise ValueError(f"step_update(num_updates={num_updates!r}) needs timm's integer update count")
        if metric is None and num_updates == self.last_epoch:
            return
        if num_updates != self.last_epoch + 1:
            raise ValueError(f"step_update(num_updates={num_updates}) but {type(self).__name__} has counted "
                             f"{self.last_epoch} updates: call it once after every optimizer update (after a resume, "
                             "load the scheduler's state_dict first; timm's checkpoints do not hold it)")
        self._timm = True
        self.step(metric)

    def _timm_epoch_call(self, loss: Any, metric: Any) -> bool:
        """Whether ``step(loss, metric)`` is timm's epoch-end ``step(epoch, metric)`` (after :meth:`step_update`, or
        with a metric) or its resume call ``step(start_epoch)``: an integer epoch that matches the steps counted."""
        if not isinstance(loss, numbers.Integral) or isinstance(loss, bool):
            return False
        spe = self.steps_per_epoch
        if metric is None and not self._timm:  # timm's resume call lr_scheduler.step(start_epoch)
            return 0 < loss and 0 < self.last_epoch == loss * spe
        if self.last_epoch % spe or loss != self.last_epoch // spe:
            raise ValueError(f"step({loss}) looks like timm's epoch-end call, but {type(self).__name__} has counted "
                             f"{self.last_epoch / spe:g} epochs of {spe} updates: steps_per_epoch must be timm's "
                             "updates_per_epoch, and step_update(num_updates, metric=loss) must run after every update")
        return True

    def _past_the_end(self) -> bool:
        """A step beyond the last one the schedule was built for: its LR is undefined (0 for ever, or a cosine that
        starts again). The usual cause is stepping per micro-batch or with the wrong ``steps_per_epoch``. It is
        ignored (the LR stays at its last value) with one warning: raising here, as torch's OneCycleLR does, would
        end a long run at its last step before its final evaluation and checkpoint."""
        if self.last_epoch < self.total_steps:
            return False
        if not getattr(self, "_warned_past_end", False):
            self._warned_past_end = True
            warnings.warn(f"{type(self).__name__}.step() called after the last of its total_steps={self.total_steps} "
                          f"optimizer steps (steps_per_epoch={self.steps_per_epoch} x total_epochs="
                          f"{self.total_epochs}): ignored, the LR stays at its last value. Call step() once per "
                          "optimizer step (not per micro-batch), and build the scheduler with the steps the run "
                          "really takes", stacklevel=3)
        return True

    def _warn_if_before_optimizer_step(self) -> None:
        """torch's warning, for the same mistake: the first ``scheduler.step()`` before any ``optimizer.step()``."""
        if self._step_count == 1 and self.last_epoch == 0 and not self._optimizer_stepped.seen:
            warnings.warn("Detected call of `lr_scheduler.step()` before `optimizer.step()`. Call them in the order "
                          "`optimizer.step()`, then `scheduler.step(loss)`: the scheduler's step records the loss "
                          "of the optimizer step just taken and sets the LR of the next one.", UserWarning,
                          stacklevel=3)
        if self._optimizer_hook is not None:
            self._optimizer_hook.remove()
            self._optimizer_hook = None

    @property
    def last_schedule_lr(self) -> float:
        """The LR this schedule computed for the next optimizer step, before per-group ratios and timm's
        ``lr_scale`` (the curve to plot: with layer-decay groups, group 0's LR is the lowest layer's)."""
        return self._last_schedule_lr

    def get_last_lr(self) -> list[float]:
        return list(self._last_lr)

    def get_lr(self) -> list[float]:
        return [self.lr_at(self.last_epoch) * r for r in self.group_ratios]

    def _apply_lr(self, lr: float) -> None:
        if len(self.optimizer.param_groups) != len(self.group_ratios):
            raise ValueError(f"the optimizer has {len(self.optimizer.param_groups)} param groups but "
                             f"{type(self).__name__} was built for {len(self.group_ratios)}: a group added later "
                             "would keep its LR for ever. Add every group first, then build the scheduler")
        self._last_schedule_lr = float(lr)
        self._last_lr = [lr * r for r in self.group_ratios]
        for g, group_lr in zip(self.optimizer.param_groups, self._last_lr):
            if isinstance(g["lr"], torch.Tensor):  # a tensor LR (e.g. for a captured CUDA graph) is filled in place,
                g["lr"].fill_(group_lr)            # as torch's schedulers do: the optimizer keeps its tensor
            else:
                g["lr"] = group_lr

    def _config(self) -> dict:
        """Settings a checkpoint must match to be loaded into this scheduler."""
        return {"class": type(self).__name__, "steps_per_epoch": self.steps_per_epoch,
                "total_epochs": self.total_epochs, "group_ratios": self.group_ratios}

    def state_dict(self) -> dict:
        return {"config": self._config(), "step": self.last_epoch}

    def load_state_dict(self, state_dict: dict) -> None:
        _check_loadable(state_dict, self._config(), {"step": _is_step(self.total_steps)})
        self.last_epoch = int(state_dict["step"])
        self._step_count = self.last_epoch + 1
        self._apply_lr(self.lr_at(self.last_epoch))


class WarmupCosine(StepScheduler):
    """Baseline: linear warmup from 0 to ``peak_lr`` over ``warmup_epochs`` (default 5, Section 3), then cosine
    to 0 at the last step. ``peak_lr`` defaults to the optimizer's group-0 LR."""

    def __init__(self, optimizer: Optimizer, steps_per_epoch: int, total_epochs: int,
                 peak_lr: Optional[float] = None, warmup_epochs: float = 5):
        super().__init__(optimizer, steps_per_epoch, total_epochs)
        self.peak_lr = float(self.base_lrs[0] if peak_lr is None else peak_lr)
        _check_positive("peak_lr", self.peak_lr)
        _check_warmup_epochs(warmup_epochs, self.total_epochs)
        self.warmup_steps = int(round(warmup_epochs * self.steps_per_epoch))
        self._apply_lr(self.lr_at(0))

    def lr_at(self, step: int) -> float:
        return warmup_cosine_lr(step, self.total_steps, self.warmup_steps, self.peak_lr)

    def _config(self) -> dict:
        return {**super()._config(), "peak_lr": self.peak_lr, "warmup_steps": self.warmup_steps}


class ConstantCosine(StepScheduler):
    """Optional linear warmup, then constant ``peak_lr``, then cosine to 0 over the last ``cooldown_fraction`` of
    the steps (the paper's constant-then-cosine shape with fraction 0.2, Section 2.2)."""

    def __init__(self, optimizer: Optimizer, steps_per_epoch: int, total_epochs: int,
                 peak_lr: Optional[float] = None, cooldown_fraction: float = 0.2, warmup_epochs: float = 0):
        super().__init__(optimizer, steps_per_epoch, total_epochs)
        self.peak_lr = float(self.base_lrs[0] if peak_lr is None else peak_lr)
        _check_positive("peak_lr", self.peak_lr)
        _check_fraction("cooldown_fraction", cooldown_fraction, allow_zero=True)
        _check_warmup_epochs(warmup_epochs, self.total_epochs)
        self.warmup_steps = int(round(warmup_epochs * self.steps_per_epoch))
        self.cooldown_steps = int(round(cooldown_fraction * self.total_steps))
        self._apply_lr(self.lr_at(0))

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.peak_lr * step / self.warmup_steps
        return decay_lr(step, self.warmup_steps, self.total_steps, self.peak_lr, self.cooldown_steps)

    def _config(self) -> dict:
        return {**super()._config(), "peak_lr": self.peak_lr, "warmup_steps": self.warmup_steps,
                "cooldown_steps": self.cooldown_steps}


# -- argument checks shared by the schedules ----------------------------------------------------------------------
def _check_int(name: str, value: Any, minimum: int) -> None:
    """An integer (Python's or NumPy's; not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")


def _is_real(value: Any) -> bool:
    """A real number (Python's or NumPy's), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_positive(name: str, value: Any) -> None:
    if not _is_real(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a finite number > 0")


def _check_warmup_epochs(value: Any, total_epochs: int) -> None:
    if not (_is_real(value) and 0 <= value <= total_epochs):
        raise ValueError(f"warmup_epochs={value!r} must be in [0, total_epochs={total_epochs}] (a number of epochs)")


def _group_number(group: dict, key: str, index: int) -> float:
    """A param group's ``lr`` / ``initial_lr`` / ``lr_scale`` (default 1) as a float: a number or a one-element
    tensor; anything else (a string, None) is refused naming the group and the key."""
    value = group.get(key, 1.0) if key == "lr_scale" else group[key]
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        return float(value)
    if not _is_real(value):
        raise ValueError(f"param group {index} has {key}={value!r:.40}: it must be a number")
    return float(value)


def _check_fraction(name: str, value: Any, allow_zero: bool = False) -> None:
    ok = _is_real(value) and math.isfinite(value)
    low_ok = ok and (value >= 0 if allow_zero else value > 0)
    if not (low_ok and value <= 1 if allow_zero else low_ok and value < 1):
        interval = "[0, 1]" if allow_zero else "(0, 1)"
        raise ValueError(f"{name}={value!r} must be in {interval}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool) and not (isinstance(value, int) and value in (0, 1)):
        raise ValueError(f"{name}={value!r} must be True or False")


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if not any(value is c or (isinstance(value, str) and value == c) for c in choices):
        raise ValueError(f"{name}={value!r} must be one of {choices}")


class _Flag:
    """A picklable optimizer post-step hook that remembers that the optimizer stepped."""

    def __init__(self) -> None:
        self.seen = False

    def __call__(self, *_: Any) -> None:
        self.seen = True


def _is_step(total_steps: int):
    def check(v: Any) -> Optional[str]:
        ok = isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= total_steps
        return None if ok else f"an integer in [0, {total_steps}] (the optimizer steps taken)"
    return check


def _check_state(state_dict: Any, checks: dict, owner: str) -> None:
    """A scheduler state dict: each key present and its value as ``checks[key]`` wants (a function returning None
    or what was expected). One message naming the key."""
    if not isinstance(state_dict, dict):
        raise ValueError(f"cannot load {owner} state: expected the dict returned by state_dict(), got "
                         f"{type(state_dict).__name__}")
    for key, check in checks.items():
        if key not in state_dict:
            raise ValueError(f"cannot load {owner} state: key {key!r} is missing (keys present: "
                             f"{sorted(map(str, state_dict))}); pass the dict returned by {owner}.state_dict()")
        wanted = check(state_dict[key])
        if wanted is not None:
            raise ValueError(f"cannot load {owner} state: {key!r} is {state_dict[key]!r:.80}, expected {wanted}")


_MISSING = object()


def _check_loadable(state_dict: Any, mine: dict, checks: dict, added_later: Optional[dict] = None) -> None:
    """What every ``load_state_dict`` checks before it changes anything, in this order: a dict; saved by this class
    with these settings (:func:`_check_config`: a state of another class or shape names that first); then each key
    (:func:`_check_state`)."""
    owner = mine.get("class", "scheduler")
    _check_state(state_dict, {}, owner)
    _check_config(mine, state_dict.get("config"), added_later)
    _check_state(state_dict, checks, owner)


def _check_config(mine: dict, theirs: Any, added_later: Optional[dict] = None) -> None:
    """The settings a state was saved with (its ``config``) against this scheduler's: a state without them could
    come from a scheduler of another shape, and is refused. A setting the state lacks (saved by an older version)
    passes only when it is in ``added_later`` and this scheduler has the value that older version implied; any other
    missing setting is refused, naming it."""
    owner = mine.get("class", "scheduler")
    if not isinstance(theirs, dict):
        raise ValueError(f"cannot load {owner} state: its 'config' (the settings it was saved "
                         "with) is missing, so it cannot be checked against this scheduler; pass the dict returned "
                         "by state_dict()")
    if "class" in theirs and theirs["class"] != mine.get("class"):
        raise ValueError(f"cannot load {owner} state: it was saved by {theirs['class']!r:.60}, not by {owner}; load it "
                         f"into the class that saved it ({theirs['class']!s:.60}), built with that run's settings")
    unknown = sorted(str(k) for k in theirs if k not in mine)
    if unknown:
        raise ValueError(f"cannot load {owner} state: it was saved with the setting(s) {', '.join(unknown)}, which "
                         f"this version of {owner} does not have (a newer version saved it?); load it with the "
                         "version that saved it")
    for key in [k for k in mine if k not in theirs]:
        implied = (added_later or {}).get(key, _MISSING)
        if implied is _MISSING or implied != mine[key]:
            then = "" if implied is _MISSING else f" (it behaved as {key}={implied!r})"
            raise ValueError(f"cannot load {owner} state: it was saved without the setting {key!r}, by an older "
                             f"version{then}, and this scheduler has {key}={mine[key]!r}; build the scheduler with the "
                             "settings of the run that saved it")
    for key, value in mine.items():
        if key in theirs and theirs[key] != value:
            raise ValueError(f"cannot load scheduler state: it was saved with {key}={theirs[key]!r} but this "
                             f"scheduler has {key}={value!r}; build the scheduler with the same settings as the run "
                             "that saved it")
