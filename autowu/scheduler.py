"""AutoWU (Kim et al., 2021): the official constructor and attribute names over a one-way pipe.

    step(loss) -> PendingLosses (autowu/comm.py: on the device, averaged across ranks once per test interval)
               -> SwitchTest.observe (autowu/switch_test.py: Algorithm 1's GP test and patience) -> SwitchEvent
               -> the LR (autowu/lr_policy.py: warmup curve, then the decay) -> the optimizer's groups

Rollback snapshots live in autowu/rollback.py, the loop-facing calls (timm, Lightning) in autowu/compat.py. This
file wires them and keeps the official code's names and its step-by-step state machine (``variant='official'``).

Automated warmup (Kim et al., 2021): a drop-in for the official ``AutoWU`` class, with exact resume.

The constructor is the official one (same arguments, positional order, defaults and behaviour; checked against
LR trajectories recorded from the official code in ``tests/fixtures/official``)::

    AutoWU(optimizer, steps_per_epoch, total_epochs, min_lr=1e-5, max_lr=1.0, max_warmup_fraction=0.5,
           warmup_unit='step', warmup_type='exp', warmup_only=False, immediate_cooldown=False,
           decay_phase_stat=None, decay_phase_factor=1.0, cooldown_fraction=0.2, cooldown_type='cosine',
           device=torch.device('cpu'))

Warmup (Eq. 1): ``eta_0 = min_lr``, ``eta_t = gamma * eta_{t-1}``, ``gamma = (max_lr/min_lr)^(1/W)``,
``W = floor(max_warmup_fraction * T)``, ``T = steps_per_epoch * total_epochs`` optimizer steps. At the end of
every warmup epoch the GP minimum test of :mod:`autowu.gp` runs on the losses so far; after ``patience``
consecutive passes the decay starts from the LR of the estimated loss minimum (Eq. 5); if the warmup reaches
``W`` steps first, the decay starts from the LR reached. Then the decay phase (``phase == 'decay'``: constant,
or ReduceLROnPlateau with ``decay_phase_stat='loss'``) and the final cosine over the last ``cooldown_fraction``
of the steps (``phase == 'final'``); ``immediate_cooldown=True`` goes straight to the final cosine.

``variant='official'`` (default) does what the official code does where it differs from the paper;
``variant='paper'`` is the paper's reading (``train.py``'s ``autowu-cos``/``autowu-const-cos`` use it). The
differences (README, "Differences from the paper and the official code"):

* switch LR: official = the mean over the ``n_test`` posteriors of ``min_lr (lr_t/min_lr)^x_i`` with ``lr_t``
  the LR of the epoch's last step; paper = ``eta_min gamma^{t*}`` with ``t* = t mean(x_i)`` (Eq. 5);
* the cap ``W``: official switches at step ``W`` without a test and decays from the LR of step ``W - 1``
  (``max_lr / gamma``); paper runs the test when ``W`` is an epoch end and decays from ``eta_W = max_lr``;
* the final cosine: official reaches 0 at step ``T - 1`` (its cosine starts one step early); paper at ``T``;
* official-only options: ``warmup_unit='epoch'``, ``warmup_only``, ``decay_phase_stat``,
  ``decay_phase_factor`` and ``cooldown_type='half_cosine'`` (which halves the LR when the cooldown starts).

Kept from this library in both variants: every param group keeps its ratio to group 0 (the official code forces
one LR on all groups), exact resume through ``state_dict``, no host sync per step, DDP decisions broadcast from
rank 0, an epoch of only non-finite losses switches at once (``reason='non-finite'``), optional rollback.

Usage, as in the official README::

    scheduler = AutoWU(optimizer, len(train_loader), total_epochs, immediate_cooldown=True,
                       cooldown_type='cosine', device=device)
    ...  # after each optimizer step:
    scheduler.step(loss)          # or scheduler.step(metrics=loss); timm: scheduler.step_update(n, metric=loss)

Args:
    optimizer: the optimizer; group ``g`` gets ``eta * lr_g / lr_0`` (ratios to group 0's initial LR are kept).
    steps_per_epoch: optimizer steps per epoch (the test runs at each epoch end).
    total_epochs: the epoch budget; ``T = steps_per_epoch * total_epochs``.
    min_lr, max_lr, max_warmup_fraction: Eq. 1's ``eta_min``, ``eta_max``, ``rho_w`` (paper: 1e-5, 1.0, 0.5).
    warmup_unit: ``'step'`` (the LR grows every step) or ``'epoch'`` (official only: at epoch ends, over
        ``floor(max_warmup_fraction * total_epochs)`` epochs; the cap stays ``W`` steps).
    warmup_type: ``'exp'`` (Eq. 1) or ``'linear'`` (Eq. 6, the Appendix C.2 ablation).
    warmup_only: official ablation: no decay phase, the warmup LR goes on growing; a switch only resets it.
    immediate_cooldown: ``True`` = cosine from the switch, ``False`` (default) = constant, then cosine.
    decay_phase_stat: ``None`` or ``'loss'``: ReduceLROnPlateau (patience 5, factor ``decay_phase_factor``) on
        the average loss of each ``steps_per_epoch`` steps of the decay phase.
    decay_phase_factor: in (0, 1]; with ``decay_phase_stat=None`` the official code multiplies the LR by it once,
        at a GP switch into the constant phase (its per-epoch decay is never stepped), and so do we.
    cooldown_fraction: fraction of the ``T`` steps spent in the final cosine (paper: 0.2).
    cooldown_type: ``'cosine'`` or ``'half_cosine'`` (official only).
    device: accepted for compatibility. The GP always runs on the CPU in float64 (about 5 ms per test); the
        losses stay on their own device until the epoch ends.
    decay, eta_min, eta_max, rho_w, warmup: this library's names for ``immediate_cooldown`` (``'cosine'`` /
        ``'const-cosine'``), ``min_lr``, ``max_lr``, ``max_warmup_fraction``, ``warmup_type``. Give one name per
        setting: both is a TypeError.
    variant: ``'official'`` (default) or ``'paper'``, see above.
    n_test, confidence, patience: the test's ``n_test``, ``c`` and ``p`` (paper: 5, 0.95, 3).
    fit_subset, test_subset, grid_size: at most 100 losses for the fit, 500 per posterior, 500 grid points.
    lengthscale, fit_steps, fit_lr: 0.2; Adam for 100 steps with LR 0.01 (Section 2.1.2).
    seed: seeds the subsampling (an integer >= 0); the generator's state is part of ``state_dict``.
    rollback: beyond the paper (Appendix D's weakness): when switching, restore ``model`` and ``optimizer`` to
        the epoch-end snapshot nearest ``t*``. The last ``patience + 2`` epoch-end snapshots are kept in host
        memory (and in ``state_dict``, so resume stays exact). Training time is not rewound: the step count and
        data order go on; only the weights and optimizer state return to before the LR grew too far.
    model: the model to snapshot (required when ``rollback=True``).
    process_group: for DDP; by default the global group when ``torch.distributed`` is initialised. Each rank's
        epoch losses are averaged across ranks once per epoch, and rank 0's decision is broadcast, so every rank
        switches at the same step to the same LR.
    test_every: beyond the paper: run the test every ``test_every`` optimizer steps instead of at each epoch end
        (default ``steps_per_epoch``: the paper's cadence, bit-identical). Once the loss minimum is passed the
        LR keeps growing by at least ``gamma^(patience * test_every)`` before the switch (Appendix D's
        overshoot); a finer cadence bounds it. Everything that happens "per epoch" (loss transfer, the
        cross-rank average, the all-non-finite rule, rollback snapshots) then happens per test.
        ``results/cadence.md`` measures what finer cadences cost in false switches.
    max_overshoot: beyond the paper, the same choice stated as a goal: ``test_every`` becomes the largest ``k``
        with ``gamma^(patience * k) <= max_overshoot``, never more than ``steps_per_epoch`` (never coarser than
        the paper; exponential warmup only). When even ``k = 1`` exceeds it (few, large warmup steps), ``k = 1``
        with a warning. Give ``test_every`` or ``max_overshoot``. ``results/cadence.md`` recommends ``3`` (with
        ``patience=3``): ``patience * k`` steps must outlast transient loss spikes, or they switch falsely.

Attributes an official user reads: ``last_step`` (steps taken), ``min_lr``, ``max_lr``, ``phase``
(``'warmup'|'decay'|'final'``), ``scheduler`` (this object: one scheduler runs every phase), ``total_steps``.
"""
from __future__ import annotations

import copy
import functools
import inspect
import math
import numbers
import warnings
from collections import deque
from typing import Any, Optional

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer

from .comm import PendingLosses, broadcast_from_rank0
from .compat import LoopCalls
from .gp import GPState, MinimumTest
from .lr_policy import OfficialLR, WarmupCurve, paper_lr
from .rollback import Snapshots
from .schedules import (StepScheduler, _check_bool, _check_choice, _check_fraction, _check_int, _check_loadable,
                        _check_positive, _is_real, _is_step)
from .switch_test import SwitchEvent, SwitchTest

DECAYS = ("cosine", "const-cosine")
WARMUPS = ("exp", "linear")
VARIANTS = ("official", "paper")
WARMUP_UNITS = ("step", "epoch")
COOLDOWN_TYPES = ("cosine", "half_cosine")
PHASES = ("warmup", "decay", "final")
OFFICIAL_KINDS = ("warmup", "factor", "plateau", "cosine", "half_cosine", "const")  # autowu/lr_policy.py's OfficialLR
# this library's clearer names -> the official argument each one aliases
ALIASES = {"eta_min": "min_lr", "eta_max": "max_lr", "rho_w": "max_warmup_fraction", "warmup": "warmup_type",
           "decay": "immediate_cooldown"}
TEST_SETTINGS = ("n_test", "confidence", "fit_subset", "test_subset", "grid_size", "lengthscale", "fit_steps",
                 "fit_lr")


def _one_name_per_setting(init):
    """Reject an official argument given together with this library's alias for it (``min_lr`` and ``eta_min``)."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        given = signature.bind(self, *args, **kwargs).arguments
        for alias, official in ALIASES.items():
            if alias in given and official in given:
                raise TypeError(f"AutoWU got {official}={given[official]!r} and {alias}={given[alias]!r}: two names "
                                f"for one setting ({alias} is this library's name for the official {official}); "
                                "give only one")
        init(self, *args, **kwargs)
    return wrapper


def _check_settings(s: dict, names: dict) -> None:
    """Every constructor argument checked, each error naming the argument as the caller gave it (``names``)."""
    _check_choice("variant", s["variant"], VARIANTS)
    _check_choice("decay", s["decay"], DECAYS)
    _check_choice("warmup_unit", s["warmup_unit"], WARMUP_UNITS)
    _check_choice("cooldown_type", s["cooldown_type"], COOLDOWN_TYPES)
    _check_choice("decay_phase_stat", s["decay_phase_stat"], (None, "loss"))
    _check_fraction("decay_phase_factor", s["decay_phase_factor"], allow_zero=True)
    if s["decay_phase_factor"] == 0:
        raise ValueError("decay_phase_factor=0 must be in (0, 1]")
    if s["variant"] == "paper":
        for name, default in (("warmup_unit", "step"), ("warmup_only", False), ("decay_phase_stat", None),
                              ("decay_phase_factor", 1.0), ("cooldown_type", "cosine")):
            if s[name] != default:
                raise ValueError(f"{name}={s[name]!r} is an option of the official code that the paper does not "
                                 f"have; use variant='official' (the default) or leave {name} at {default!r}")
    _check_fraction("cooldown_fraction", s["cooldown_fraction"], allow_zero=True)
    _check_positive(names["eta_min"], s["eta_min"])
    _check_positive(names["eta_max"], s["eta_max"])
    if s["eta_max"] <= s["eta_min"]:
        raise ValueError(f"{names['eta_max']}={s['eta_max']} must be greater than {names['eta_min']}={s['eta_min']}")
    if not math.isfinite(float(s["eta_max"]) / float(s["eta_min"])):
        raise ValueError(f"{names['eta_max']}={s['eta_max']} / {names['eta_min']}={s['eta_min']} overflows: the warmup "
                         "LR would be infinite; give a ratio below 1e300 (the paper: 1.0 / 1e-5)")
    _check_fraction(names["rho_w"], s["rho_w"])
    _check_choice(names["warmup"], s["warmup"], WARMUPS)
    for name in ("n_test", "patience", "fit_subset", "test_subset", "grid_size", "fit_steps"):
        _check_int(name, s[name], 1 if name != "grid_size" else 2)
    _check_int("seed", s["seed"], 0)
    _check_fraction("confidence", s["confidence"])
    _check_positive("lengthscale", s["lengthscale"])
    _check_positive("fit_lr", s["fit_lr"])
    _check_bool("rollback", s["rollback"])
    if s["rollback"] and s["model"] is None:
        raise ValueError("rollback=True needs model=<the nn.Module being trained> to snapshot and restore")
    if s["rollback"] and not isinstance(s["model"], nn.Module):
        raise ValueError(f"rollback=True needs model=<the nn.Module being trained>, got {type(s['model']).__name__} "
                         f"({s['model']!r:.40})")


def _cadence(test_every: Optional[int], max_overshoot: Optional[float], curve: WarmupCurve, patience: int,
             steps_per_epoch: int) -> int:
    """Steps between tests: ``test_every``, or the largest ``k <= steps_per_epoch`` with
    ``gamma^(patience*k) <= max_overshoot``; the paper's cadence (one per epoch) by default."""
    if test_every is not None and max_overshoot is not None:
        raise ValueError(f"test_every={test_every} and max_overshoot={max_overshoot}: give only one of them")
    if test_every is not None:
        _check_int("test_every", test_every, 1)
        return int(test_every)
    if max_overshoot is None:
        return steps_per_epoch
    if not (_is_real(max_overshoot) and 1 < max_overshoot < math.inf):
        raise ValueError(f"max_overshoot={max_overshoot!r} must be a number > 1 (the LR growth allowed between "
                         "passing the minimum and the switch, e.g. 1.5)")
    if curve.kind != "exp" or curve.unit != "step":
        raise ValueError("max_overshoot needs warmup='exp' and warmup_unit='step': a linear or per-epoch warmup "
                         "has no fixed LR growth per step; give test_every instead")
    growth = patience * math.log(curve.gamma)  # log of the LR growth over `patience` tests 1 step apart
    k = min(int(math.floor(math.log(max_overshoot) / growth * (1 + 1e-12))), steps_per_epoch)
    if k < 1:
        warnings.warn(f"max_overshoot={max_overshoot}: even a test every step lets the LR grow by "
                      f"gamma^patience = {math.exp(growth):.3g} (warmup of {curve.warmup_steps} steps); testing "
                      "every step", stacklevel=4)
        k = 1
    return k


class AutoWU(LoopCalls, StepScheduler):
    """Automated warmup (Kim et al., 2021): a drop-in for the official ``AutoWU`` class, with exact resume.
    The module docstring has the constructor, the variants and every argument."""

    @_one_name_per_setting
    def __init__(self, optimizer: Optimizer, steps_per_epoch: int, total_epochs: int,
                 min_lr: float = 1e-5, max_lr: float = 1.0, max_warmup_fraction: float = 0.5,
                 warmup_unit: str = "step", warmup_type: str = "exp", warmup_only: bool = False,
                 immediate_cooldown: bool = False, decay_phase_stat: Optional[str] = None,
                 decay_phase_factor: float = 1.0, cooldown_fraction: float = 0.2, cooldown_type: str = "cosine",
                 device: Any = torch.device("cpu"), *, decay: Optional[str] = None, eta_min: Optional[float] = None,
                 eta_max: Optional[float] = None, rho_w: Optional[float] = None, warmup: Optional[str] = None,
                 variant: str = "official", n_test: int = 5, confidence: float = 0.95,
                 patience: int = 3, fit_subset: int = 100, test_subset: int = 500, grid_size: int = 500,
                 lengthscale: float = 0.2, fit_steps: int = 100, fit_lr: float = 0.01, seed: int = 0,
                 rollback: bool = False, model: Optional[nn.Module] = None, process_group: Any = None,
                 test_every: Optional[int] = None, max_overshoot: Optional[float] = None):
        super().__init__(optimizer, steps_per_epoch, total_epochs)
        names = {"eta_min": ("min_lr", "eta_min")[eta_min is not None],
                 "eta_max": ("max_lr", "eta_max")[eta_max is not None],
                 "rho_w": ("max_warmup_fraction", "rho_w")[rho_w is not None],
                 "warmup": ("warmup_type", "warmup")[warmup is not None]}
        _check_bool("immediate_cooldown", immediate_cooldown)
        _check_bool("warmup_only", warmup_only)
        s = dict(locals())
        s.update(eta_min=min_lr if eta_min is None else eta_min, eta_max=max_lr if eta_max is None else eta_max,
                 rho_w=max_warmup_fraction if rho_w is None else rho_w, warmup=warmup_type if warmup is None else warmup,
                 decay=decay if decay is not None else ("cosine" if immediate_cooldown else "const-cosine"))
        _check_settings(s, names)
        self.warmup_steps = int(math.floor(s["rho_w"] * self.total_steps))
        if self.warmup_steps < 1:
            raise ValueError(f"{names['rho_w']} * total steps = {s['rho_w']} * {self.total_steps} < 1: no warmup "
                             f"step; increase {names['rho_w']} or the number of epochs")
        self.warmup_epochs = int(math.floor(s["rho_w"] * self.total_epochs))
        if warmup_unit == "epoch" and self.warmup_epochs < 1:
            raise ValueError(f"warmup_unit='epoch' with {names['rho_w']} * total_epochs = {s['rho_w']} * "
                             f"{self.total_epochs} < 1: no warmup epoch; increase {names['rho_w']} or the number "
                             "of epochs")
        self.variant, self.decay, self.warmup = variant, s["decay"], s["warmup"]
        self.cooldown_fraction, self.warmup_unit, self.warmup_only = float(cooldown_fraction), warmup_unit, bool(
            warmup_only)
        self.cooldown_type, self.decay_phase_stat = cooldown_type, decay_phase_stat
        self.decay_phase_factor, self.device = float(decay_phase_factor), device
        self.eta_min, self.eta_max, self.rho_w = float(s["eta_min"]), float(s["eta_max"]), float(s["rho_w"])
        self.patience, self.seed = int(patience), int(seed)
        self.rollback, self.model, self.process_group = bool(rollback), model, process_group
        # the pipe: losses -> switch test -> switch -> LR
        self.curve = WarmupCurve(self.eta_min, self.eta_max, self.warmup, warmup_unit, self.steps_per_epoch,
                                 self.warmup_steps, self.warmup_epochs, uncapped=self.warmup_only)
        self.gamma = self.curve.gamma  # per warmup unit (step or epoch)
        self.test_every = _cadence(test_every, max_overshoot, self.curve, self.patience, self.steps_per_epoch)
        self.max_overshoot = None if max_overshoot is None else float(max_overshoot)
        self._test_kwargs = {k: int(s[k]) if isinstance(s[k], numbers.Integral) else float(s[k]) for k in TEST_SETTINGS}
        self.min_test = MinimumTest(**self._test_kwargs)
        self.pending = PendingLosses(process_group)
        self.test = SwitchTest(self.min_test, self.patience, self.seed,
                               share=functools.partial(broadcast_from_rank0, group=process_group))
        self.official = OfficialLR(self.curve, self.decay_phase_factor)  # variant='official': the LR step by step
        self.snapshots = Snapshots(model, optimizer, keep=self.patience + 2, group=process_group)
        self.phase = "warmup"
        self.history: list[dict] = []
        self.switch: Optional[dict] = None
        self.decay_start_step, self.decay_start_lr = 0, 0.0
        self._timm = False  # step_update() seen: step(int) is then timm's epoch-end call
        self._apply_lr(self.lr_at(0))

    # -- the official attribute names ------------------------------------------------------------------------
    last_step = property(lambda self: self.last_epoch, doc="Optimizer steps taken (the official name).")
    min_lr = property(lambda self: self.eta_min)
    max_lr = property(lambda self: self.eta_max)
    max_warmup_fraction = property(lambda self: self.rho_w)
    warmup_type = property(lambda self: self.warmup)
    immediate_cooldown = property(lambda self: self.decay == "cosine")
    scheduler = property(lambda self: self, doc="The official code's scheduler of the current phase: one object "
                         "runs every phase here, so it is this one (scheduler.scheduler.get_last_lr() works).")
    losses = property(lambda self: self.test.losses, doc="L_0 .. L_{t-1} of the warmup so far (NaN = non-finite).")
    consecutive = property(lambda self: self.test.consecutive)
    gp_state = property(lambda self: self.test.gp_state)
    rng = property(lambda self: self.test.rng)
    _epoch_losses = property(lambda self: self.pending.items)

    @property
    def cooldown_steps(self) -> Optional[int]:
        return None if self.decay == "cosine" else int(round(self.cooldown_fraction * self.total_steps))

    def warmup_lr(self, t: float) -> float:
        """The warmup LR at (possibly fractional) step ``t``: Eq. 1 (exp) or Eq. 6 (linear)."""
        return self.curve(t)

    def lr_at(self, step: int) -> float:
        if self.variant == "official":
            if step != self.last_epoch:
                raise ValueError(f"lr_at({step}): the official variant knows the LR of the current step "
                                 f"({self.last_epoch}) only; it depends on the losses to come")
            return self.official.lr
        start = None if self.phase == "warmup" else (self.decay_start_step, self.decay_start_lr)
        return paper_lr(step, self.curve, start, self.total_steps, self.cooldown_steps)

    def is_test_step(self, t: int) -> bool:
        """Whether the test runs after ``t`` optimizer steps (the paper: at each epoch end)."""
        return t % self.test_every == 0

    def keep_snapshots_in(self, directory: str) -> None:
        """Rollback snapshots as files in ``directory`` (autowu/rollback.py); call before ``load_state_dict``."""
        self.snapshots.keep_in(directory)

    def reduce_pending_losses(self) -> None:
        """Average the unfinished interval's losses across ranks now (a collective: call it on every rank before
        rank 0 saves a mid-epoch checkpoint; ``train.py`` does), so a resumed test sees the average, not rank 0's
        own losses. A no-op outside DDP and after the warmup."""
        if self.phase == "warmup":
            self.pending.reduce_now()

    # -- one optimizer step: the pipe ------------------------------------------------------------------------
    def _record(self, loss: Any) -> None:
        """The step's loss (checked by autowu/compat.py) in, the next step's LR out."""
        if self._past_the_end():
            return
        self.last_epoch += 1
        self._step_count += 1
        if self.variant == "official":
            self._step_official(loss)
        else:
            self._step_paper(loss)
        self._apply_lr(self.lr_at(self.last_epoch))

    def _step_paper(self, loss: Any) -> None:
        t = self.last_epoch  # steps taken = index of the next step
        if self.phase == "warmup":
            self.pending.append(loss)
            if self.is_test_step(t) or t >= self.warmup_steps:
                self._end_interval(t, self.is_test_step(t), at_cap=t >= self.warmup_steps)
        if self.phase == "decay" and (self.cooldown_steps is None or t >= self.total_steps - self.cooldown_steps):
            self.phase = "final"  # the cosine part of the decay (the official name)

    def _step_official(self, loss: Any) -> None:
        """One call of the official ``AutoWU.step``: the same order of checks and the same scheduler steps."""
        t, spe, lr = self.last_epoch, self.steps_per_epoch, self.official
        if t >= (1 - self.cooldown_fraction) * self.total_steps and not self.warmup_only and self.phase != "final":
            self._start_final(t)
        switched, interval_end, metric = False, False, None
        if self.phase == "warmup":
            if t >= self.warmup_steps:  # the cap: the official code switches without a test, even at an epoch end
                if not self.warmup_only:
                    self._switch_to_decay(SwitchEvent(t, (t - 1) // spe, float(t), "max-warmup", lr=lr.lr))
            else:
                self.pending.append(loss)
                interval_end = t % spe == 0
                if self.is_test_step(t):
                    switched = self._end_interval(t, True, at_cap=False)
        elif self.phase == "decay" and self.decay_phase_stat == "loss":
            metric = lr.decay_metric(loss, spe)
            interval_end = metric is not None
        if self.phase == "warmup":
            must_step = not switched and (self.warmup_unit == "step" or interval_end)
        else:
            must_step = interval_end if self.phase == "decay" else True
        if must_step:
            lr.advance(metric)

    def _end_interval(self, t: int, run_test: bool, at_cap: bool) -> bool:
        """The interval's losses (averaged across ranks) into the switch test; act on its decision."""
        losses = self.pending.take()
        if self.rollback and run_test:
            self.snapshots.take(t)
        entries, event = self.test.observe(t, (t - 1) // self.steps_per_epoch, losses, run_test=run_test,
                                           at_cap=at_cap, switch_lr=self._switch_lr)
        self.history += entries
        if event is not None:
            self._switch_to_decay(event)
        return event is not None

    def _switch_lr(self, t_star: float, argmin_x: list[float]) -> float:
        """The LR a passed test decays from: the paper's ``eta_{t*}`` (Eq. 5), or the official interpolation."""
        return float(self.curve(t_star)) if self.variant == "paper" else self.official.switch_lr(argmin_x)

    def _switch_to_decay(self, event: SwitchEvent) -> None:
        lr = float(self.curve(event.t_star) if event.lr is None else event.lr)
        self.switch = {"type": "switch", "epoch": event.epoch, "step": event.step, "t_star": float(event.t_star),
                       "lr": lr, "reason": event.reason}
        if event.reason == "non-finite":
            self.switch["note"] = "every loss of the epoch was non-finite: the LR is past the minimum"
        if self.rollback and event.reason != "max-warmup":
            self.switch["rollback_step"] = self.snapshots.restore_nearest(event.t_star)
        self.history.append(self.switch)
        self.pending.clear()
        self.decay_start_step, self.decay_start_lr = event.step, lr
        if self.variant == "paper":
            self.phase = "decay"
            return
        self.official.lr = lr
        if self.warmup_only:  # the official ablation: the LR is reset, the warmup goes on
            return
        self.phase = "decay"
        if self.decay == "cosine":
            self._start_final(event.step)
        else:
            self.official.start_decay(plateau=self.decay_phase_stat == "loss")

    def _start_final(self, t: int) -> None:
        """The official final phase: cosine (or half cosine) from the current LR to 0 over the steps left."""
        if self.phase == "warmup":  # the cooldown begins before the warmup ended (max_warmup_fraction large)
            self.switch = {"type": "switch", "epoch": (t - 1) // self.steps_per_epoch, "step": t,
                           "t_star": float(t), "lr": self.official.lr, "reason": "cooldown"}
            self.history.append(self.switch)
            self.pending.clear()
        self.phase = "final"
        self.official.start_final(self.total_steps - t, self.cooldown_type)

    # -- checkpointing ---------------------------------------------------------------------------------------
    def _config(self) -> dict:
        return {**super()._config(), "decay": self.decay, "warmup": self.warmup, "eta_min": self.eta_min,
                "eta_max": self.eta_max, "rho_w": self.rho_w, "cooldown_fraction": self.cooldown_fraction,
                "patience": self.patience, "rollback": self.rollback, **self._test_kwargs, "variant": self.variant,
                "warmup_unit": self.warmup_unit, "warmup_only": self.warmup_only, "cooldown_type": self.cooldown_type,
                "decay_phase_stat": self.decay_phase_stat, "decay_phase_factor": self.decay_phase_factor,
                "test_every": self.test_every, "max_overshoot": self.max_overshoot}

    def state_dict(self) -> dict:
        """Everything needed to continue the identical trajectory: phase, step, recorded losses, the interval's
        pending losses, test history, GP parameters with their Adam state, the generator, rollback snapshots."""
        return {"config": self._config(), "step": self.last_epoch, "phase": self.phase,
                "losses": torch.from_numpy(self.test.losses.copy()), "pending": self.pending.local(),
                "pending_reduced": self.pending.reduced, "consecutive": self.test.consecutive,
                "history": copy.deepcopy(self.history), "decay_start_step": self.decay_start_step,
                "decay_start_lr": self.decay_start_lr, "gp_state": self.test.gp_state.to_dict(),
                "rng": copy.deepcopy(self.test.rng.bit_generator.state), "snapshots": list(self.snapshots.entries),
                "official": {**self.official.state(), "timm": self._timm}}

    def load_state_dict(self, state_dict: dict) -> None:
        """Check every key, then build every part (generator, GP state, history) aside, and only then replace this
        scheduler's state: a bad state_dict raises ValueError naming the key and leaves the scheduler untouched."""
        _check_loadable(state_dict, self._config(), _state_checks(self.total_steps, self.variant), added_later={
            # settings later versions added, with the behaviour states saved before them had
            "test_every": self.steps_per_epoch, "max_overshoot": None, "warmup_unit": "step", "warmup_only": False,
            "cooldown_type": "cosine", "decay_phase_stat": None, "decay_phase_factor": 1.0, "variant": "official"})
        _check_counts(state_dict)
        rng = _part(state_dict, "rng", _generator)
        gp_state = _part(state_dict, "gp_state", _gp_state)
        history = _part(state_dict, "history", _history)
        official = state_dict.get("official", {"lr": self.eta_min, "sched": {"kind": "warmup", "n": 0},
                                               "stats": torch.empty(0), "timm": False})
        # nothing below can fail: the scheduler changes all at once
        self.last_epoch = int(state_dict["step"])
        self._step_count = self.last_epoch + 1
        self.phase = state_dict["phase"]
        self.test.losses = state_dict["losses"].double().numpy().copy()
        self.test.consecutive, self.test.gp_state, self.test.rng = int(state_dict["consecutive"]), gp_state, rng
        self.pending.load([float(x) for x in state_dict["pending"].tolist()], state_dict.get("pending_reduced", 0))
        self.history = history
        self.switch = next((h for h in reversed(self.history) if h["type"] == "switch"), None)
        self.decay_start_step = int(state_dict["decay_start_step"])
        self.decay_start_lr = float(state_dict["decay_start_lr"])
        self.snapshots.entries.clear()
        self.snapshots.entries.extend(state_dict["snapshots"])
        self.official.load(official["lr"], official["sched"], [float(x) for x in official["stats"].tolist()])
        self._timm = bool(official["timm"])
        self._apply_lr(self.lr_at(self.last_epoch))


def _part(state_dict: dict, key: str, build) -> Any:
    try:
        return build(state_dict[key])
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"cannot load AutoWU state: {key!r} is not usable ({type(e).__name__}: {e}); pass the "
                         "dict returned by AutoWU.state_dict()") from None


def _generator(state: dict) -> np.random.Generator:
    rng = np.random.default_rng()
    rng.bit_generator.state = copy.deepcopy(state)
    return rng


def _gp_state(d: dict) -> GPState:
    state = GPState.from_dict(d)
    numbers_ok = all(_is_real(v) and math.isfinite(v) for v in (state.mean, state.raw_outputscale, state.raw_noise))
    moments_ok = all(isinstance(m, (list, tuple)) and len(m) == 3 and all(_is_real(x) and math.isfinite(x) for x in m)
                     for m in (state.adam_m, state.adam_v))
    if not (numbers_ok and moments_ok and isinstance(state.adam_t, numbers.Integral) and state.adam_t >= 0):
        raise ValueError("mean, raw_outputscale, raw_noise must be finite numbers, adam_m and adam_v lists of 3 of "
                         "them, adam_t an integer >= 0")
    return state


def _check_counts(state_dict: dict) -> None:
    """The losses held against the steps taken: the recorded and pending losses are losses of steps taken, and
    ``pending_reduced`` counts leading pending losses."""
    step, n_losses, n_pending = state_dict["step"], len(state_dict["losses"]), len(state_dict["pending"])
    if n_losses + n_pending > step:
        raise ValueError(f"cannot load AutoWU state: it holds {n_losses} recorded and {n_pending} pending losses, "
                         f"more than the {step} steps taken; pass the dict returned by AutoWU.state_dict()")
    reduced = state_dict.get("pending_reduced", 0)
    if isinstance(reduced, bool) or not isinstance(reduced, int) or not 0 <= reduced <= n_pending:
        raise ValueError(f"cannot load AutoWU state: 'pending_reduced' is {reduced!r:.40}, expected an integer in "
                         f"[0, {n_pending}] (the pending losses already averaged across ranks)")


def _history(entries: list) -> list:
    if not all(isinstance(h, dict) and isinstance(h.get("type"), str) for h in entries):
        raise ValueError("every entry must be a dict with a 'type'")
    return copy.deepcopy(entries)


def _state_checks(total_steps: int, variant: str) -> dict:
    """What :meth:`AutoWU.load_state_dict` checks, key by key, before changing anything."""
    def vector(v):
        return None if isinstance(v, torch.Tensor) and v.dim() == 1 else "a 1-D tensor"

    def count(v):
        return None if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else "an integer >= 0"

    def lr(v):
        return None if isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 else "a finite LR >= 0"

    def of_type(kind, what):
        return lambda v: None if isinstance(v, kind) else what

    def official(v):
        ok = (isinstance(v, dict) and {"lr", "sched", "stats", "timm"} <= set(v) and lr(v["lr"]) is None
              and isinstance(v["sched"], dict) and v["sched"].get("kind") in OFFICIAL_KINDS
              and vector(v["stats"]) is None)
        return None if ok else ("a dict with keys 'lr', 'sched' (its 'kind' one of "
                                f"{', '.join(OFFICIAL_KINDS)}), 'stats', 'timm' (the official variant's state)")

    checks = {"config": of_type(dict, "a dict (the settings the state was saved with)"),
              "step": _is_step(total_steps),
              "phase": lambda v: None if v in PHASES else f"one of {PHASES}",
              "losses": vector, "pending": vector, "consecutive": count, "history": of_type(list, "a list"),
              "decay_start_step": _is_step(total_steps), "decay_start_lr": lr,
              "gp_state": lambda v: None if isinstance(v, dict) and set(v) == set(GPState().to_dict()) else
              f"a dict with keys {sorted(GPState().to_dict())}",
              "rng": of_type(dict, "a dict (numpy bit generator state)"),
              "snapshots": of_type((list, tuple, deque), "a list")}
    if variant == "official":
        checks["official"] = official
    return checks
