"""AutoWU's LR, given the switch: the exponential (or linear) warmup before it, the decay after it.

- :class:`WarmupCurve`: Eq. 1 (``eta_t = eta_min gamma^t``, ``gamma = (eta_max/eta_min)^(1/W)``) or Eq. 6 (linear).
- :func:`paper_lr`: the paper's LR as a pure function of the step and the switch (warmup curve, then cosine or
  constant-then-cosine from the switch LR, Section 2.2).
- :class:`OfficialLR`: the official code's LR, advanced step by step as its torch schedulers do (LambdaLR or
  ExponentialLR warmup; ExponentialLR or ReduceLROnPlateau in the decay phase; CosineAnnealingLR or the half-cosine
  LambdaLR in the final phase), because its LR depends on when each of them was stepped.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import torch

from .comm import stack_losses
from .schedules import decay_lr

# torch.optim.lr_scheduler.ReduceLROnPlateau as the official decay_phase_stat='loss' builds it (patience=5, defaults)
PLATEAU_PATIENCE, PLATEAU_THRESHOLD, PLATEAU_EPS = 5, 1e-4, 1e-8


class WarmupCurve:
    """The warmup LR at any (fractional) step: ``kind`` 'exp' (Eq. 1) or 'linear' (Eq. 6) from ``eta_min`` to
    ``eta_max`` over ``warmup_steps`` (``unit='epoch'``: over ``warmup_epochs``, changing at epoch ends only);
    capped at ``eta_max`` unless ``uncapped`` (the official warmup_only ablation)."""

    def __init__(self, eta_min: float, eta_max: float, kind: str, unit: str, steps_per_epoch: int,
                 warmup_steps: int, warmup_epochs: int, uncapped: bool = False):
        self.eta_min, self.eta_max, self.kind, self.unit = float(eta_min), float(eta_max), kind, unit
        self.steps_per_epoch, self.warmup_steps, self.warmup_epochs = steps_per_epoch, warmup_steps, warmup_epochs
        self.uncapped = uncapped
        self.span = warmup_epochs if unit == "epoch" else warmup_steps
        self.gamma = (self.eta_max / self.eta_min) ** (1.0 / self.span)  # per warmup unit (step or epoch)

    def __call__(self, t: float) -> float:
        t = max(float(t), 0.0)
        if self.unit == "epoch":
            t = float(math.floor(t / self.steps_per_epoch))
        if not self.uncapped:
            t = min(t, float(self.span))
        if self.kind == "linear":
            return self.eta_min + (self.eta_max - self.eta_min) * t / self.span
        return self.eta_min * self.gamma**t


def paper_lr(step: int, curve: WarmupCurve, decay_start: Optional[tuple[int, float]], total_steps: int,
             cooldown_steps: Optional[int]) -> float:
    """The paper's LR of ``step``: the warmup curve until the switch, then the decay from ``decay_start`` = (the
    switch step, the LR at t*): cosine when ``cooldown_steps`` is None, else constant, then cosine over the last
    ``cooldown_steps``."""
    if decay_start is None:
        return curve(step)
    return decay_lr(step, decay_start[0], total_steps, decay_start[1], cooldown_steps)


def half_cosine(x: float) -> float:
    """The official ``half_cosine`` cooldown factor at fraction ``x`` of the steps left: 0.5 at x = 0, 0 at x = 1."""
    return 0.5 + 0.5 * math.cos(0.5 * math.pi * (1.0 + x))


class OfficialLR:
    """The LR the official code's torch schedulers produce. ``sched`` names the scheduler of the current phase and
    its counters (plain data, for state_dict); :meth:`advance` is one ``step()`` of it."""

    def __init__(self, curve: WarmupCurve, decay_phase_factor: float):
        self.curve, self.decay_phase_factor = curve, float(decay_phase_factor)
        self.lr = curve.eta_min
        self.sched: dict = {"kind": "warmup", "n": 0}
        self.stats: list[Any] = []  # decay_phase_stat='loss': the losses of the current decay "epoch"

    def switch_lr(self, argmin_x: list[float]) -> float:
        """The official switch LR: the mean over the posteriors of the warmup LR at each argmin, interpolated
        (exp or linear) between ``min_lr`` at x = 0 and the LR of the interval's last step at x = 1."""
        lo, hi = self.curve.eta_min, self.lr
        if self.curve.kind == "linear":
            return float(np.mean([lo + (hi - lo) * x for x in argmin_x]))
        return float(np.mean([lo * (hi / lo) ** x for x in argmin_x]))

    def start_decay(self, plateau: bool) -> None:
        """The constant decay phase: ReduceLROnPlateau on the loss, or ExponentialLR(decay_phase_factor)."""
        self.sched = {"kind": "plateau", "n": 0, "best": math.inf, "bad": 0} if plateau else {"kind": "factor", "n": 0}
        self.stats = []

    def start_final(self, steps_left: int, cooldown_type: str) -> None:
        """Cosine (or half cosine) from the current LR to 0 over ``steps_left`` steps."""
        kind = cooldown_type if steps_left > 0 else "const"
        self.sched = {"kind": kind, "n": 0, "base": self.lr, "T_max": steps_left}
        if kind == "half_cosine":
            self.lr = self.lr * half_cosine(0.0)  # LambdaLR applies its factor at construction: LR / 2
        self.stats = []

    def decay_metric(self, loss: Any, steps_per_epoch: int) -> Optional[float]:
        """decay_phase_stat='loss': collect the step's loss; the mean of each ``steps_per_epoch`` of them."""
        self.stats.append(loss)
        if len(self.stats) < steps_per_epoch:
            return None
        metric = float(stack_losses(self.stats).double().mean())
        self.stats = []
        return metric

    def advance(self, metric: Optional[float]) -> None:
        """One ``step()`` of the torch scheduler the official code runs in the current phase."""
        s, kind = self.sched, self.sched["kind"]
        if kind == "plateau":  # ReduceLROnPlateau(mode='min', factor=decay_phase_factor, patience=5), torch defaults
            if metric is None:  # the official code raises TypeError here (a GP switch into this phase)
                return
            s["n"] += 1
            if metric < s["best"] * (1.0 - PLATEAU_THRESHOLD):
                s["best"], s["bad"] = metric, 0
            else:
                s["bad"] += 1
            if s["bad"] > PLATEAU_PATIENCE:
                new = max(self.lr * self.decay_phase_factor, 0.0)
                if self.lr - new > PLATEAU_EPS:
                    self.lr = new
                s["bad"] = 0
            return
        s["n"] += 1
        n, c = s["n"], self.curve
        if kind == "warmup":
            if c.kind == "linear":  # LambdaLR on min_lr, as the official code
                x = n / c.span
                self.lr = c.eta_min * ((1 - x) + x * (c.eta_max / c.eta_min))
            else:  # ExponentialLR
                self.lr *= c.gamma
        elif kind == "factor":  # ExponentialLR(gamma=decay_phase_factor)
            self.lr *= self.decay_phase_factor
        elif kind == "cosine":  # CosineAnnealingLR(T_max, eta_min=0)
            self.lr = s["base"] * 0.5 * (1.0 + math.cos(math.pi * n / s["T_max"]))
        elif kind == "half_cosine":
            self.lr = s["base"] * half_cosine(n / s["T_max"])

    def state(self) -> dict:
        return {"lr": self.lr, "sched": dict(self.sched),
                "stats": stack_losses(self.stats).cpu() if self.stats else torch.empty(0)}

    def load(self, lr: float, sched: dict, stats: list[float]) -> None:
        self.lr, self.sched, self.stats = float(lr), dict(sched), list(stats)
