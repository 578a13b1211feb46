"""AutoWU: exponential warmup until a GP test finds the loss minimum, then a predefined decay (Algorithm 1)."""
from __future__ import annotations

import copy
import functools
import inspect
import math
import numbers
import os
import warnings
from collections import deque
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.optim import Optimizer

from .comm import active_group, comm_device, mean_over_ranks
from .gp import GPState, MinimumTest
from .schedules import (StepScheduler, _check_bool, _check_choice, _check_config, _check_fraction, _check_int,
                        _check_positive, _check_state, _is_step, decay_lr)

DECAYS = ("cosine", "const-cosine")
WARMUPS = ("exp", "linear")
VARIANTS = ("official", "paper")
WARMUP_UNITS = ("step", "epoch")
COOLDOWN_TYPES = ("cosine", "half_cosine")
PHASES = ("warmup", "decay", "final")
# this library's clearer names -> the official argument each one aliases
ALIASES = {"eta_min": "min_lr", "eta_max": "max_lr", "rho_w": "max_warmup_fraction", "warmup": "warmup_type",
           "decay": "immediate_cooldown"}
# torch.optim.lr_scheduler.ReduceLROnPlateau as the official decay_phase_stat='loss' builds it (patience=5, defaults)
PLATEAU_PATIENCE, PLATEAU_THRESHOLD, PLATEAU_EPS = 5, 1e-4, 1e-8


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


def _half_cosine(x: float) -> float:
    """The official ``half_cosine`` cooldown factor at fraction ``x`` of the steps left: 0.5 at x = 0, 0 at x = 1."""
    return 0.5 + 0.5 * math.cos(0.5 * math.pi * (1.0 + x))


class AutoWU(StepScheduler):
    """Automated warmup (Kim et al., 2021): a drop-in for the official ``AutoWU`` class, with exact resume.

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

    t_in_epochs = False  # timm's scheduler attribute (its train.py reads it): AutoWU steps per optimizer update

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
        # an error names the argument as the caller gave it
        n_min, n_max = ("min_lr", "eta_min")[eta_min is not None], ("max_lr", "eta_max")[eta_max is not None]
        n_rho, n_warmup = ("max_warmup_fraction", "rho_w")[rho_w is not None], ("warmup_type", "warmup")[
            warmup is not None]
        eta_min = min_lr if eta_min is None else eta_min
        eta_max = max_lr if eta_max is None else eta_max
        rho_w = max_warmup_fraction if rho_w is None else rho_w
        warmup = warmup_type if warmup is None else warmup
        _check_choice("variant", variant, VARIANTS)
        _check_bool("immediate_cooldown", immediate_cooldown)
        _check_bool("warmup_only", warmup_only)
        if decay is None:
            decay = "cosine" if immediate_cooldown else "const-cosine"
        _check_choice("decay", decay, DECAYS)
        _check_choice("warmup_unit", warmup_unit, WARMUP_UNITS)
        _check_choice("cooldown_type", cooldown_type, COOLDOWN_TYPES)
        _check_choice("decay_phase_stat", decay_phase_stat, (None, "loss"))
        _check_fraction("decay_phase_factor", decay_phase_factor, allow_zero=True)
        if decay_phase_factor == 0:
            raise ValueError("decay_phase_factor=0 must be in (0, 1]")
        if variant == "paper":
            for name, value, default in (("warmup_unit", warmup_unit, "step"), ("warmup_only", warmup_only, False),
                                         ("decay_phase_stat", decay_phase_stat, None),
                                         ("decay_phase_factor", decay_phase_factor, 1.0),
                                         ("cooldown_type", cooldown_type, "cosine")):
                if value != default:
                    raise ValueError(f"{name}={value!r} is an option of the official code that the paper does not "
                                     f"have; use variant='official' (the default) or leave {name} at {default!r}")
        _check_fraction("cooldown_fraction", cooldown_fraction, allow_zero=True)
        _check_positive(n_min, eta_min)
        _check_positive(n_max, eta_max)
        if eta_max <= eta_min:
            raise ValueError(f"{n_max}={eta_max} must be greater than {n_min}={eta_min}")
        _check_fraction(n_rho, rho_w)
        _check_choice(n_warmup, warmup, WARMUPS)
        for name, value in (("n_test", n_test), ("patience", patience), ("fit_subset", fit_subset),
                            ("test_subset", test_subset), ("grid_size", grid_size), ("fit_steps", fit_steps)):
            _check_int(name, value, 1 if name != "grid_size" else 2)
        _check_int("seed", seed, 0)
        _check_fraction("confidence", confidence)
        _check_positive("lengthscale", lengthscale)
        _check_positive("fit_lr", fit_lr)
        if rollback and model is None:
            raise ValueError("rollback=True needs model=<the nn.Module being trained> to snapshot and restore")
        self.warmup_steps = int(math.floor(rho_w * self.total_steps))
        if self.warmup_steps < 1:
            raise ValueError(f"{n_rho} * total steps = {rho_w} * {self.total_steps} < 1: no warmup step; increase "
                             f"{n_rho} or the number of epochs")
        self.warmup_epochs = int(math.floor(rho_w * self.total_epochs))
        if warmup_unit == "epoch" and self.warmup_epochs < 1:
            raise ValueError(f"warmup_unit='epoch' with {n_rho} * total_epochs = {rho_w} * {self.total_epochs} < 1: "
                             f"no warmup epoch; increase {n_rho} or the number of epochs")
        self.variant, self.decay, self.warmup, self.cooldown_fraction = variant, decay, warmup, float(cooldown_fraction)
        self.warmup_unit, self.warmup_only, self.cooldown_type = warmup_unit, bool(warmup_only), cooldown_type
        self.decay_phase_stat, self.decay_phase_factor = decay_phase_stat, float(decay_phase_factor)
        self.device = device
        self.eta_min, self.eta_max, self.rho_w = float(eta_min), float(eta_max), float(rho_w)
        span = self.warmup_epochs if warmup_unit == "epoch" else self.warmup_steps
        self.gamma = (self.eta_max / self.eta_min) ** (1.0 / span)  # per warmup unit (step or epoch)
        self.patience, self.seed = int(patience), int(seed)
        self.rollback, self.model, self.process_group = bool(rollback), model, process_group
        self.test_every = self._cadence(test_every, max_overshoot)
        self.max_overshoot = None if max_overshoot is None else float(max_overshoot)
        self.min_test = MinimumTest(n_test=n_test, confidence=confidence, fit_subset=fit_subset,
                                    test_subset=test_subset, grid_size=grid_size, lengthscale=lengthscale,
                                    fit_steps=fit_steps, fit_lr=fit_lr)
        self._test_kwargs = dict(n_test=n_test, confidence=confidence, fit_subset=fit_subset,
                                 test_subset=test_subset, grid_size=grid_size, lengthscale=lengthscale,
                                 fit_steps=fit_steps, fit_lr=fit_lr)
        # State (all of it goes into state_dict).
        self.phase = "warmup"
        self.losses = np.empty(0, dtype=np.float64)  # L_0 .. L_{t-1} of completed warmup epochs (NaN = non-finite)
        self._epoch_losses: list[Any] = []  # this epoch's losses, kept on their device until the epoch ends
        self._reduced = 0  # how many leading _epoch_losses are already averaged across ranks (reduce_pending_losses)
        self.consecutive = 0
        self.history: list[dict] = []
        self.switch: Optional[dict] = None
        self.decay_start_step = 0
        self.decay_start_lr = 0.0
        # variant='official': the LR is advanced step by step as the official code's torch schedulers do
        self._lr = self.eta_min
        self._sched: dict = {"kind": "warmup", "n": 0}
        self._stats: list[Any] = []  # decay_phase_stat='loss': the losses of the current decay "epoch"
        self._timm = False  # step_update() seen: step(int) is then timm's epoch-end call
        self.gp_state = GPState()
        self.rng = np.random.default_rng(self.seed)
        self.snapshots: deque = deque(maxlen=self.patience + 2)
        self._apply_lr(self.lr_at(0))

    # -- official attribute names --------------------------------------------------------------------------------
    @property
    def last_step(self) -> int:
        """Optimizer steps taken so far (the official name of ``last_epoch`` / ``num_steps``)."""
        return self.last_epoch

    @property
    def min_lr(self) -> float:
        return self.eta_min

    @property
    def max_lr(self) -> float:
        return self.eta_max

    @property
    def max_warmup_fraction(self) -> float:
        return self.rho_w

    @property
    def warmup_type(self) -> str:
        return self.warmup

    @property
    def immediate_cooldown(self) -> bool:
        return self.decay == "cosine"

    @property
    def scheduler(self) -> "AutoWU":
        """The official code keeps the torch scheduler of the current phase here; one object runs every phase
        here, so it is this one (``scheduler.scheduler.get_last_lr()`` works as before)."""
        return self

    # -- the schedule --------------------------------------------------------------------------------------------
    @property
    def cooldown_steps(self) -> Optional[int]:
        return None if self.decay == "cosine" else int(round(self.cooldown_fraction * self.total_steps))

    def warmup_lr(self, t: float) -> float:
        """The warmup LR at (possibly fractional) step ``t``: Eq. 1 (exp) or Eq. 6 (linear); with
        ``warmup_unit='epoch'`` it changes at epoch ends only."""
        t = max(float(t), 0.0)
        span = self.warmup_steps
        if self.warmup_unit == "epoch":
            t, span = float(math.floor(t / self.steps_per_epoch)), self.warmup_epochs
        if not self.warmup_only:
            t = min(t, float(span))
        if self.warmup == "linear":
            return self.eta_min + (self.eta_max - self.eta_min) * t / span
        return self.eta_min * self.gamma**t

    def lr_at(self, step: int) -> float:
        if self.variant == "official":
            if step != self.last_epoch:
                raise ValueError(f"lr_at({step}): the official variant knows the LR of the current step "
                                 f"({self.last_epoch}) only; it depends on the losses to come")
            return self._lr
        if self.phase == "warmup":
            return self.warmup_lr(step)
        return decay_lr(step, self.decay_start_step, self.total_steps, self.decay_start_lr, self.cooldown_steps)

    def _cadence(self, test_every: Optional[int], max_overshoot: Optional[float]) -> int:
        """Steps between tests: ``test_every``, or the largest ``k <= steps_per_epoch`` with
        ``gamma^(patience*k) <= max_overshoot``."""
        if test_every is not None and max_overshoot is not None:
            raise ValueError(f"test_every={test_every} and max_overshoot={max_overshoot}: give only one of them")
        if test_every is not None:
            _check_int("test_every", test_every, 1)
            return int(test_every)
        if max_overshoot is None:
            return self.steps_per_epoch
        if isinstance(max_overshoot, bool) or not (isinstance(max_overshoot, (int, float)) and max_overshoot > 1):
            raise ValueError(f"max_overshoot={max_overshoot!r} must be a number > 1 (the LR growth allowed between "
                             "passing the minimum and the switch, e.g. 1.5)")
        if self.warmup != "exp" or self.warmup_unit != "step":
            raise ValueError("max_overshoot needs warmup='exp' and warmup_unit='step': a linear or per-epoch warmup "
                             "has no fixed LR growth per step; give test_every instead")
        growth = self.patience * math.log(self.gamma)  # log of the LR growth over `patience` tests 1 step apart
        k = min(int(math.floor(math.log(max_overshoot) / growth * (1 + 1e-12))), self.steps_per_epoch)
        if k < 1:
            warnings.warn(f"max_overshoot={max_overshoot}: even a test every step lets the LR grow by "
                          f"gamma^patience = {math.exp(growth):.3g} (warmup of {self.warmup_steps} steps); testing "
                          "every step", stacklevel=3)
            k = 1
        return k

    def is_test_step(self, t: int) -> bool:
        """Whether the test runs after ``t`` optimizer steps (the paper: at each epoch end)."""
        return t % self.test_every == 0

    # -- the loop's call -----------------------------------------------------------------------------------------
    def step(self, loss: Any = None, metric: Any = None, *, metrics: Any = None,  # type: ignore[override]
             epoch: Optional[int] = None) -> None:
        """Record the loss of the optimizer step just taken and set the LR of the next one.

        ``loss``: a float or a 0-d floating tensor on any device (not read on the host until the epoch ends).
        ``metrics=`` is Lightning's and ReduceLROnPlateau's name for it. ``step(epoch, metric)`` with an integer
        epoch is timm's epoch-end call: a no-op once :meth:`step_update` feeds the losses.
        """
        if epoch is not None:
            raise ValueError("step(epoch=...) is not supported: AutoWU counts optimizer steps itself")
        if loss is None:
            loss = metrics
        if loss is None or isinstance(loss, numbers.Integral):
            _refuse_wrappers()  # SequentialLR / ChainedScheduler call step() or step(0)
        if self._is_timm_epoch_call(loss, metric) or self._is_timm_resume_sync(loss, metric):
            return
        if metric is not None:
            raise ValueError(f"AutoWU.step(loss, metric={metric!r}): pass the step's loss only, scheduler.step(loss)")
        if loss is None:
            raise ValueError("AutoWU.step() needs the loss of the optimizer step just taken: call "
                             "scheduler.step(loss)")
        loss = _detach_loss(loss)
        self._warn_if_before_optimizer_step()
        self.last_epoch += 1
        self._step_count += 1
        if self.variant == "official":
            self._step_official(loss)
        else:
            self._step_paper(loss)
        self._apply_lr(self.lr_at(self.last_epoch))

    def step_update(self, num_updates: int, metric: Any = None) -> None:
        """timm's per-update call: ``scheduler.step_update(num_updates=num_updates, metric=loss)`` after each
        optimizer update, with the loss of that update (not timm's running ``losses_m.avg``). Without a metric it is
        timm's resume call ``step_update(start_epoch * updates_per_epoch)``: a no-op when the count is the one a
        loaded ``state_dict`` restored."""
        if metric is None and num_updates == self.last_epoch and not isinstance(num_updates, bool):
            return
        if metric is None:
            raise ValueError("AutoWU.step_update(num_updates, metric) needs metric=<the loss of this optimizer "
                             "update> (in timm's train.py: metric=loss, not losses_m.avg)")
        if isinstance(num_updates, bool) or not isinstance(num_updates, int):
            raise ValueError(f"step_update(num_updates={num_updates!r}) needs timm's integer update count")
        if num_updates != self.last_epoch + 1:
            raise ValueError(f"step_update(num_updates={num_updates}) but AutoWU has counted {self.last_epoch} "
                             "updates: call it once after every optimizer update (after a resume, load the "
                             "scheduler's state_dict first; timm's checkpoints do not hold it)")
        self._timm = True
        self.step(metric)

    def _is_timm_resume_sync(self, loss: Any, metric: Any) -> bool:
        """timm's ``lr_scheduler.step(start_epoch)`` after a resume: an integer epoch with no metric whose start is
        exactly the restored step count (the loaded state_dict already set the LR)."""
        return (metric is None and isinstance(loss, numbers.Integral) and not isinstance(loss, bool) and loss > 0
                and self.last_epoch > 0 and loss * self.steps_per_epoch == self.last_epoch)

    def _is_timm_epoch_call(self, loss: Any, metric: Any) -> bool:
        if not (isinstance(loss, numbers.Integral) and not isinstance(loss, bool)):
            return False
        if not (self._timm or metric is not None):
            return False
        if self.last_epoch % self.steps_per_epoch or loss != self.last_epoch // self.steps_per_epoch:
            raise ValueError(f"step({loss}) looks like timm's epoch-end call, but AutoWU has counted "
                             f"{self.last_epoch / self.steps_per_epoch:g} epochs of {self.steps_per_epoch} updates: "
                             "steps_per_epoch must be timm's updates_per_epoch, and step_update(num_updates, "
                             "metric=loss) must run after every update")
        return True

    def _step_paper(self, loss: Any) -> None:
        if self.phase == "warmup":
            self._epoch_losses.append(loss)
        t = self.last_epoch  # number of steps taken = index of the next step
        if self.phase == "warmup":
            test_now = self.is_test_step(t)
            if test_now or t >= self.warmup_steps:
                self._end_of_warmup_epoch(t, test_now)
        if self.phase == "decay" and (self.cooldown_steps is None or t >= self.total_steps - self.cooldown_steps):
            self.phase = "final"  # the cosine part of the decay (the official name)

    def _step_official(self, loss: Any) -> None:
        """One call of the official ``AutoWU.step``: the same order of checks and the same scheduler steps."""
        t, spe = self.last_epoch, self.steps_per_epoch
        if t >= (1 - self.cooldown_fraction) * self.total_steps and not self.warmup_only and self.phase != "final":
            self._start_final(t)
        switched, epoch_end, metric = False, False, None
        if self.phase == "warmup":
            if t >= self.warmup_steps:  # the cap: the official code switches without a test, even at an epoch end
                if not self.warmup_only:
                    self._start_decay(t, (t - 1) // spe, float(t), "max-warmup", lr=self._lr)
            else:
                self._epoch_losses.append(loss)
                epoch_end = t % spe == 0
                if self.is_test_step(t):
                    n_switches = sum(h["type"] == "switch" for h in self.history)
                    self._end_of_warmup_epoch(t, True)
                    switched = sum(h["type"] == "switch" for h in self.history) > n_switches
        elif self.phase == "decay" and self.decay_phase_stat == "loss":
            self._stats.append(loss)
            if len(self._stats) >= spe:
                metric = float(_stack(self._stats).double().mean())
                self._stats = []
                epoch_end = True
        if self.phase == "warmup":
            must_step = not switched and (self.warmup_unit == "step" or epoch_end)
        else:
            must_step = epoch_end if self.phase == "decay" else True
        if must_step:
            self._advance(metric)

    def _advance(self, metric: Optional[float]) -> None:
        """One ``step()`` of the torch scheduler the official code runs in the current phase."""
        s, kind = self._sched, self._sched["kind"]
        if kind == "plateau":  # ReduceLROnPlateau(mode='min', factor=decay_phase_factor, patience=5), torch defaults
            if metric is None:  # the official code raises TypeError here (a GP switch into this phase)
                return
            s["n"] += 1
            if metric < s["best"] * (1.0 - PLATEAU_THRESHOLD):
                s["best"], s["bad"] = metric, 0
            else:
                s["bad"] += 1
            if s["bad"] > PLATEAU_PATIENCE:
                new = max(self._lr * self.decay_phase_factor, 0.0)
                if self._lr - new > PLATEAU_EPS:
                    self._lr = new
                s["bad"] = 0
            return
        s["n"] += 1
        n = s["n"]
        if kind == "warmup":
            if self.warmup == "linear":  # LambdaLR on min_lr, as the official code
                x = n / (self.warmup_epochs if self.warmup_unit == "epoch" else self.warmup_steps)
                self._lr = self.eta_min * ((1 - x) + x * (self.eta_max / self.eta_min))
            else:  # ExponentialLR
                self._lr *= self.gamma
        elif kind == "factor":  # ExponentialLR(gamma=decay_phase_factor)
            self._lr *= self.decay_phase_factor
        elif kind == "cosine":  # CosineAnnealingLR(T_max, eta_min=0)
            self._lr = s["base"] * 0.5 * (1.0 + math.cos(math.pi * n / s["T_max"]))
        elif kind == "half_cosine":
            self._lr = s["base"] * _half_cosine(n / s["T_max"])

    def _start_final(self, t: int) -> None:
        """The official final phase: cosine (or half cosine) from the current LR to 0 over the steps left."""
        if self.phase == "warmup":  # the cooldown begins before the warmup ended (max_warmup_fraction large)
            self.switch = {"type": "switch", "epoch": (t - 1) // self.steps_per_epoch, "step": t,
                           "t_star": float(t), "lr": self._lr, "reason": "cooldown"}
            self.history.append(self.switch)
            self._epoch_losses, self._reduced = [], 0
        self.phase = "final"
        t_max = self.total_steps - t
        kind = self.cooldown_type if t_max > 0 else "const"
        self._sched = {"kind": kind, "n": 0, "base": self._lr, "T_max": t_max}
        if kind == "half_cosine":
            self._lr = self._lr * _half_cosine(0.0)  # LambdaLR applies its factor at construction: LR / 2
        self._stats = []

    def _end_of_warmup_epoch(self, t: int, run_test: bool) -> None:
        epoch_losses = self._gather_epoch_losses()
        self.losses = np.concatenate([self.losses, epoch_losses])
        epoch = (t - 1) // self.steps_per_epoch
        if self.rollback and run_test:
            self._snapshot(t)
        if run_test and epoch_losses.size and not np.isfinite(epoch_losses).any():
            t_star = self._t_star_from_history(t)
            self._start_decay(t, epoch, t_star, "non-finite")
            return
        if run_test:
            self._run_test(t, epoch)
        if self.phase == "warmup" and t >= self.warmup_steps:
            self._start_decay(t, epoch, float(t), "max-warmup")

    def _run_test(self, t: int, epoch: int) -> None:
        finite = int(np.isfinite(self.losses).sum())
        entry: dict = {"type": "test", "epoch": epoch, "step": t}
        if finite < 3:
            entry.update(p_min=[], votes=0, passed=False, t_star=None, note="fewer than 3 finite losses")
            passed, t_star = False, None
        else:
            decision = self._decide(lambda: self.min_test(self.losses, self.rng, self.gp_state))
            passed, t_star = decision["passed"], decision["t_star"]
            entry.update({k: v for k, v in decision.items() if k != "gp_state"})
        self.consecutive = self.consecutive + 1 if passed else 0
        entry["consecutive"] = self.consecutive
        self.history.append(entry)
        if self.consecutive >= self.patience:
            self._start_decay(t, epoch, t_star, "gp-test", lr=decision.get("lr_t_star"))

    def _decide(self, run) -> dict:
        """Run the test (every rank runs it: same losses, same generator) and adopt rank 0's outcome."""
        n = self.min_test.n_test
        try:
            with np.errstate(all="ignore"):
                result, gp_state = run()
            p_min, argmin_x = result.p_min, result.argmin_x
            ok = all(math.isfinite(v) for v in p_min + argmin_x + [gp_state.mean, gp_state.noise])
        except (np.linalg.LinAlgError, ValueError, FloatingPointError, OverflowError):
            ok, gp_state, p_min, argmin_x = False, self.gp_state, [math.nan] * n, [math.nan] * n
        vec = [float(ok), *p_min, *argmin_x, gp_state.mean, gp_state.raw_outputscale, gp_state.raw_noise,
               *gp_state.adam_m, *gp_state.adam_v, float(gp_state.adam_t)]
        vec = self._broadcast(vec)
        ok = bool(vec[0])
        p_min, argmin_x = vec[1:1 + n], vec[1 + n:1 + 2 * n]
        rest = vec[1 + 2 * n:]
        if not ok:  # numerical failure (e.g. astronomically large losses): the test does not pass
            return {"p_min": [], "votes": 0, "passed": False, "t_star": None, "note": "GP computation failed"}
        self.gp_state = GPState(rest[0], rest[1], rest[2], list(rest[3:6]), list(rest[6:9]), int(rest[9]))
        votes = int(sum(p > self.min_test.confidence for p in p_min))
        t = self.losses.shape[0]
        t_star = t * float(np.mean(argmin_x))  # Eq. 5
        return {"p_min": [float(p) for p in p_min], "votes": votes, "passed": votes > n / 2, "t_star": t_star,
                "lr_t_star": self._switch_lr(t_star, argmin_x)}

    def _switch_lr(self, t_star: float, argmin_x: list[float]) -> float:
        """The LR the decay starts from after a passed test. Paper (Eq. 5): ``eta_{t*}``. Official: the mean over
        the posteriors of the warmup LR at each argmin, interpolated (exp or linear) between ``min_lr`` at x = 0 and
        the LR of the epoch's last step at x = 1."""
        if self.variant == "paper":
            return float(self.warmup_lr(t_star))
        lo, hi = self.eta_min, self._lr
        if self.warmup == "linear":
            return float(np.mean([lo + (hi - lo) * x for x in argmin_x]))
        return float(np.mean([lo * (hi / lo) ** x for x in argmin_x]))

    def _t_star_from_history(self, t: int) -> float:
        """t* for a switch forced by an all-non-finite epoch: Eq. 5 on the finite history (0 if there is none)."""
        finite = np.flatnonzero(np.isfinite(self.losses))
        if finite.size < 3:
            return float(finite[int(np.argmin(self.losses[finite]))]) if finite.size else 0.0
        decision = self._decide(lambda: self.min_test(self.losses, self.rng, self.gp_state))
        last_finite = float(finite[-1])  # the GP may place its argmin in the non-finite tail: stay in the history
        return last_finite if decision["t_star"] is None else min(decision["t_star"], last_finite)

    def _start_decay(self, t: int, epoch: int, t_star: float, reason: str, lr: Optional[float] = None) -> None:
        lr = float(self.warmup_lr(t_star) if lr is None else lr)
        t_star = float(t_star)
        self.switch = {"type": "switch", "epoch": epoch, "step": t, "t_star": t_star, "lr": lr, "reason": reason}
        if reason == "non-finite":
            self.switch["note"] = "every loss of the epoch was non-finite: the LR is past the minimum"
        if self.rollback and reason != "max-warmup":
            self.switch["rollback_step"] = self._restore_nearest(t_star)
        self.history.append(self.switch)
        self._epoch_losses, self._reduced = [], 0
        self.decay_start_step, self.decay_start_lr = t, lr
        if self.variant == "paper":
            self.phase = "decay"
            return
        self._lr = lr
        if self.warmup_only:  # the official ablation: the LR is reset, the warmup goes on
            return
        self.phase = "decay"
        if self.decay == "cosine":
            self._start_final(t)
            return
        self._sched = ({"kind": "plateau", "n": 0, "best": math.inf, "bad": 0} if self.decay_phase_stat == "loss"
                       else {"kind": "factor", "n": 0})
        self._stats = []

    # -- per-epoch data movement and collectives -----------------------------------------------------------------
    def _group(self):
        return active_group(self.process_group)

    def _comm_device(self, like: Optional[torch.Tensor]) -> torch.device:
        return comm_device(self._group(), like)

    def _gather_epoch_losses(self) -> np.ndarray:
        """Stack the epoch's losses on their device, average across ranks, move to the host once."""
        done, rest = self._take_pending()
        if done is None and rest is None:
            return np.empty(0)
        parts = [x.cpu() for x in (done, self._all_reduce_mean(rest)) if x is not None]
        out = torch.cat(parts).double().numpy()
        out[~np.isfinite(out)] = np.nan
        return out

    def reduce_pending_losses(self) -> None:
        """Average the unfinished epoch's losses across ranks now (a collective: call it on every rank, before
        rank 0 saves a checkpoint in the middle of an epoch; ``train.py`` does). Without it, a mid-epoch
        ``state_dict`` holds the calling rank's own losses of that epoch, and after a resume the epoch's test would
        see rank 0's losses for those steps in place of the average over ranks. A no-op outside DDP."""
        if self._group() is None or self.phase != "warmup":
            return
        done, rest = self._take_pending()
        parts = [x for x in (done, self._all_reduce_mean(rest)) if x is not None]
        if parts:
            self._epoch_losses = list(torch.cat([x.to(parts[0].device) for x in parts]).unbind())
        self._reduced = len(self._epoch_losses)

    def _take_pending(self) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Remove the epoch's losses; return them as float64 vectors on their device: the prefix already averaged
        across ranks, and the rest (None where empty)."""
        buf, n, k = self._stack_pending(), len(self._epoch_losses), self._reduced
        self._epoch_losses, self._reduced = [], 0
        if buf is None:
            return None, None
        return (buf[:k] if k else None), (buf[k:] if k < n else None)

    def _stack_pending(self) -> Optional[torch.Tensor]:
        """The epoch's losses as one vector on the device of the first tensor among them (None if none)."""
        return _stack(self._epoch_losses) if self._epoch_losses else None

    def _all_reduce_mean(self, buf: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        return None if buf is None else mean_over_ranks(buf, self._group())

    def _broadcast(self, values: list[float]) -> list[float]:
        group = self._group()
        if group is None:
            return values
        vec = torch.tensor(values, dtype=torch.float64, device=self._comm_device(None))
        dist.broadcast(vec, src=dist.get_global_rank(group, 0) if group is not dist.group.WORLD else 0, group=group)
        return vec.cpu().tolist()

    # -- rollback ------------------------------------------------------------------------------------------------
    def keep_snapshots_in(self, directory: str) -> None:
        """Write each rollback snapshot once, to ``directory/step_NNNNNNNNN.pt`` (rank 0 only), instead of holding
        it in host memory: ``state_dict()`` then names the files rather than holding ``patience + 2`` copies of the
        model and optimizer, so checkpoints stay the size they are without rollback. The files of the window (and
        one older, for the checkpoint before the last) are kept; the rest are deleted. Call it before
        ``load_state_dict``; a relative file name in the state is looked up here."""
        self._snapshot_dir = directory

    def _holds_snapshots(self) -> bool:
        """Rank 0 of the group keeps the snapshots (the ranks hold identical states under DDP); the others keep the
        steps only and receive the chosen snapshot by broadcast."""
        group = self._group()
        return group is None or dist.get_rank(group) == 0

    def _snapshot(self, t: int) -> None:
        entry: dict = {"step": t}
        if self._holds_snapshots():
            directory = getattr(self, "_snapshot_dir", None)
            if directory is None:
                entry.update(model=_to_cpu(self.model.state_dict()), optimizer=_to_cpu(self.optimizer.state_dict()))
            else:
                entry["file"] = f"step_{t:09d}.pt"
                os.makedirs(directory, exist_ok=True)
                path = os.path.join(directory, entry["file"])
                tmp = f"{path}.tmp.{os.getpid()}"
                try:
                    torch.save({"step": t, "model": self.model.state_dict(),
                                "optimizer": self.optimizer.state_dict()}, tmp)
                    os.replace(tmp, path)
                except BaseException:
                    if os.path.exists(tmp):
                        os.remove(tmp)
                    raise
        self.snapshots.append(entry)
        self._prune_snapshot_files()

    def _prune_snapshot_files(self, keep_older: int = 1) -> None:
        """Delete snapshot files older than the window, but ``keep_older`` of them (the previous checkpoint's)."""
        directory = getattr(self, "_snapshot_dir", None)
        if directory is None or not self._holds_snapshots() or not os.path.isdir(directory):
            return
        window = {e.get("file") for e in self.snapshots}
        first = min((e["step"] for e in self.snapshots), default=None)
        older = sorted(f for f in os.listdir(directory) if f.startswith("step_") and f.endswith(".pt")
                       and f not in window and (first is None or int(f[5:-3]) < first))
        for name in older[:len(older) - keep_older] if first is not None else older:
            os.remove(os.path.join(directory, name))

    def _load_snapshot(self, snap: dict) -> Optional[dict]:
        """The model and optimizer states of ``snap`` on this rank (rank 0), or None if its file is gone."""
        if "model" in snap:
            return {"model": snap["model"], "optimizer": copy.deepcopy(snap["optimizer"])}
        if "file" not in snap:
            return None
        path = os.path.join(getattr(self, "_snapshot_dir", None) or "", snap["file"])
        if not os.path.isfile(path):
            return None
        return torch.load(path, map_location="cpu", weights_only=True)

    def _restore_nearest(self, t_star: float) -> Optional[int]:
        if not self.snapshots:
            return None
        snap = min(self.snapshots, key=lambda s: abs(s["step"] - t_star))  # every rank has the same steps
        state = self._load_snapshot(snap) if self._holds_snapshots() else None
        group = self._group()
        if group is not None:  # rank 0's snapshot to every rank
            box = [state]
            src = dist.get_global_rank(group, 0) if group is not dist.group.WORLD else 0
            dist.broadcast_object_list(box, src=src, group=group)
            state = box[0]
        self.snapshots.clear()
        self._prune_snapshot_files(keep_older=0)
        if state is None:  # the snapshot's file was deleted: no rollback (the switch entry says so)
            return None
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        return int(snap["step"])

    # -- checkpointing -------------------------------------------------------------------------------------------
    def _config(self) -> dict:
        return {**super()._config(), "decay": self.decay, "warmup": self.warmup, "eta_min": self.eta_min,
                "eta_max": self.eta_max, "rho_w": self.rho_w, "cooldown_fraction": self.cooldown_fraction,
                "patience": self.patience, "rollback": self.rollback, **self._test_kwargs, "variant": self.variant,
                "warmup_unit": self.warmup_unit, "warmup_only": self.warmup_only, "cooldown_type": self.cooldown_type,
                "decay_phase_stat": self.decay_phase_stat, "decay_phase_factor": self.decay_phase_factor,
                "test_every": self.test_every, "max_overshoot": self.max_overshoot}

    def state_dict(self) -> dict:
        """Everything needed to continue the identical trajectory: phase, step, recorded losses, the epoch's
        pending losses, test history, GP parameters with their Adam state, the generator, rollback snapshots."""
        pending = self._gather_local_pending()
        return {"config": self._config(), "step": self.last_epoch, "phase": self.phase,
                "losses": torch.from_numpy(self.losses.copy()), "pending": pending, "pending_reduced": self._reduced,
                "consecutive": self.consecutive, "history": copy.deepcopy(self.history),
                "decay_start_step": self.decay_start_step, "decay_start_lr": self.decay_start_lr,
                "gp_state": self.gp_state.to_dict(), "rng": copy.deepcopy(self.rng.bit_generator.state),
                "snapshots": list(self.snapshots),
                "official": {"lr": self._lr, "sched": dict(self._sched), "timm": self._timm,
                             "stats": _stack(self._stats).cpu() if self._stats else torch.empty(0)}}

    def load_state_dict(self, state_dict: dict) -> None:
        """Check every key, then build every part (generator, GP state, history) aside, and only then replace this
        scheduler's state: a bad state_dict raises ValueError naming the key and leaves the scheduler untouched."""
        _check_state(state_dict, self._state_checks(), "AutoWU")
        _check_config(self._config(), state_dict.get("config"))

        def part(key: str, build: Callable[[Any], Any]) -> Any:
            try:
                return build(state_dict[key])
            except (ValueError, TypeError, KeyError, AttributeError) as e:
                raise ValueError(f"cannot load AutoWU state: {key!r} is not usable ({type(e).__name__}: {e}); pass "
                                 "the dict returned by AutoWU.state_dict()") from None

        def generator(state: dict) -> np.random.Generator:
            rng = np.random.default_rng()
            rng.bit_generator.state = copy.deepcopy(state)
            return rng

        def history(entries: list) -> list:
            if not all(isinstance(h, dict) and isinstance(h.get("type"), str) for h in entries):
                raise ValueError("every entry must be a dict with a 'type'")
            return copy.deepcopy(entries)

        rng = part("rng", generator)
        gp_state = part("gp_state", GPState.from_dict)
        hist = part("history", history)
        losses = state_dict["losses"].double().numpy().copy()
        pending = [float(x) for x in state_dict["pending"].tolist()]
        official = state_dict.get("official", {"lr": self.eta_min, "sched": {"kind": "warmup", "n": 0},
                                               "stats": torch.empty(0), "timm": False})
        # nothing below can fail: the scheduler changes all at once
        self.last_epoch = int(state_dict["step"])
        self._step_count = self.last_epoch + 1
        self.phase = state_dict["phase"]
        self.losses, self._epoch_losses = losses, pending
        self._reduced = int(state_dict.get("pending_reduced", 0))
        self.consecutive = int(state_dict["consecutive"])
        self.history = hist
        self.switch = next((h for h in reversed(self.history) if h["type"] == "switch"), None)
        self.decay_start_step = int(state_dict["decay_start_step"])
        self.decay_start_lr = float(state_dict["decay_start_lr"])
        self.gp_state, self.rng = gp_state, rng
        self.snapshots = deque(state_dict["snapshots"], maxlen=self.patience + 2)
        self._lr, self._sched = float(official["lr"]), dict(official["sched"])
        self._stats, self._timm = [float(x) for x in official["stats"].tolist()], bool(official["timm"])
        self._apply_lr(self.lr_at(self.last_epoch))

    def _state_checks(self) -> dict:
        """What :meth:`load_state_dict` checks, key by key, before changing anything."""
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
                  and isinstance(v["sched"], dict) and vector(v["stats"]) is None)
            return None if ok else "a dict with keys 'lr', 'sched', 'stats', 'timm' (the official variant's state)"

        checks = {"config": of_type(dict, "a dict (the settings the state was saved with)"),
                  "step": _is_step(self.total_steps),
                  "phase": lambda v: None if v in PHASES else f"one of {PHASES}",
                  "losses": vector, "pending": vector, "consecutive": count, "history": of_type(list, "a list"),
                  "decay_start_step": _is_step(self.total_steps), "decay_start_lr": lr,
                  "gp_state": lambda v: None if isinstance(v, dict) and set(v) == set(GPState().to_dict()) else
                  f"a dict with keys {sorted(GPState().to_dict())}",
                  "rng": of_type(dict, "a dict (numpy bit generator state)"),
                  "snapshots": of_type((list, tuple, deque), "a list")}
        if self.variant == "official":
            checks["official"] = official
        return checks

    def _gather_local_pending(self) -> torch.Tensor:
        """This rank's losses of the unfinished epoch, on the host (a sync, but only when checkpointing)."""
        buf = self._stack_pending()
        return buf.cpu() if buf is not None else torch.empty(0)


def _stack(items: list) -> torch.Tensor:
    """Losses (0-d tensors and floats) as one vector on the device of the first tensor, in float64 so that a huge
    finite loss (1e300) stays finite (float32 on MPS, which has no float64)."""
    device = next((x.device for x in items if isinstance(x, torch.Tensor)), torch.device("cpu"))
    dtype = torch.float32 if device.type == "mps" else torch.float64
    return torch.stack([x.to(device=device, dtype=dtype) if isinstance(x, torch.Tensor)
                        else torch.tensor(x, dtype=dtype, device=device) for x in items])


TIMM_HINT = ("timm users: call scheduler.step_update(num_updates, metric=loss) after every optimizer update; "
             "step(epoch, metric) at epoch ends is then ignored")


def _detach_loss(loss: Any) -> Any:
    """The step's loss, checked (without reading a tensor on the host): a float or a 0-d floating tensor."""
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise ValueError(f"AutoWU.step(loss) needs a scalar loss, got a tensor of shape {tuple(loss.shape)}; "
                             "pass the mean loss of the optimizer step")
        if not loss.is_floating_point():
            raise ValueError(f"AutoWU.step(loss) needs a floating-point loss, got a {loss.dtype} tensor; "
                             + (TIMM_HINT if not loss.is_complex() else "pass the real-valued loss"))
        if loss.device.type == "meta":
            raise ValueError("AutoWU.step(loss) got a tensor on the 'meta' device, which holds no value; pass the "
                             "loss computed on a real device")
        return loss.detach().reshape(())
    if isinstance(loss, (bool, numbers.Integral)):
        raise ValueError(f"AutoWU.step({loss!r}): an {type(loss).__name__} is not a loss; pass the float loss of "
                         f"the optimizer step ({TIMM_HINT})")
    if isinstance(loss, numbers.Real):
        return float(loss)
    kind = "a complex number" if isinstance(loss, numbers.Complex) else type(loss).__name__
    raise ValueError(f"AutoWU.step(loss) needs a float or a 0-d floating tensor, got {kind} ({loss!r:.40}); "
                     "pass the loss of the optimizer step, e.g. scheduler.step(loss)")


def _refuse_wrappers() -> None:
    """``step()`` without a loss from inside SequentialLR / ChainedScheduler: say what to do instead."""
    frame = inspect.currentframe()
    try:
        for _ in range(6):
            frame = frame.f_back if frame is not None else None
            owner = frame.f_locals.get("self") if frame is not None else None
            if isinstance(owner, (torch.optim.lr_scheduler.SequentialLR, torch.optim.lr_scheduler.ChainedScheduler)):
                raise TypeError(f"AutoWU cannot run inside {type(owner).__name__}: it needs the loss at every step, "
                                "which that wrapper does not pass, and it decides its own phases. Use AutoWU alone "
                                "(its decay options: immediate_cooldown, cooldown_fraction, cooldown_type, "
                                "decay_phase_stat), or step each scheduler yourself: scheduler.step(loss), then the "
                                "other's step()")
    finally:
        del frame


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return copy.deepcopy(obj)

