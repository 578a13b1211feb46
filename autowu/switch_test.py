"""Algorithm 1 of Kim et al. (2021), its decision: when to stop the warmup, and from which step's LR to decay.

Read beside the paper (Section 2.1, Algorithm 1):

    L <- L ++ (the losses of the epoch just finished)                     # the loss history L_0 .. L_{t-1}
    fit a GP to (x = s / t, L_s) on a subset of the history              # Section 2.1.2 (autowu/gp.py)
    draw n_test posteriors; p_i = P(min of posterior i is before x = 1)  # the "minimum test"
    passed <- #{i : p_i > c} > n_test / 2                                # majority of the posteriors
    consecutive <- consecutive + 1 if passed else 0
    if consecutive >= patience: switch, t* = t * mean_i argmin_i         # Eq. 5
    if t >= W (the warmup cap, rho_w * T): switch at t* = t

:class:`SwitchTest` holds exactly that state (the history, the consecutive count, the GP's parameters and the
subsampling generator) and returns decisions as data: the test entries of the log and, when the warmup ends, a
:class:`SwitchEvent`. It never sees an optimizer or a model; the losses it receives are already averaged across
ranks (autowu/comm.py), and ``share`` makes every rank adopt rank 0's outcome. Beyond the paper: an interval whose
every loss is non-finite ends the warmup at once (the LR is past the minimum).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .gp import GPState, MinimumTest


@dataclass(frozen=True)
class SwitchEvent:
    """The end of the warmup: after ``step`` optimizer steps (in ``epoch``), decaying from the LR at ``t_star``
    (``lr``; None: the warmup curve's LR at ``t_star``). ``reason``: gp-test, max-warmup, non-finite."""
    step: int
    epoch: int
    t_star: float
    reason: str
    lr: Optional[float] = None


class SwitchTest:
    """The warmup's stopping rule (Algorithm 1): feed it each test interval's losses with :meth:`observe`."""

    def __init__(self, min_test: MinimumTest, patience: int, seed: int,
                 share: Callable[[list[float]], list[float]] = lambda values: values):
        self.min_test, self.patience, self.share = min_test, int(patience), share
        self.losses = np.empty(0, dtype=np.float64)  # L_0 .. L_{t-1} (NaN = non-finite)
        self.consecutive = 0
        self.gp_state = GPState()
        self.rng = np.random.default_rng(seed)

    def observe(self, t: int, epoch: int, losses: np.ndarray, *, run_test: bool, at_cap: bool,
                switch_lr: Callable[[float, list[float]], float]) -> tuple[list[dict], Optional[SwitchEvent]]:
        """Append the interval's ``losses`` (steps up to ``t``); when ``run_test``, test. Returns the test's log
        entries and the switch, if the warmup ends here. ``switch_lr(t_star, argmins)``: the LR a passed test would
        decay from (the paper's Eq. 5 or the official interpolation, decided by the caller)."""
        self.losses = np.concatenate([self.losses, losses])
        if run_test and losses.size and not np.isfinite(losses).any():
            return [], SwitchEvent(t, epoch, self._t_star_from_history(switch_lr), "non-finite")
        entries: list[dict] = []
        if run_test:
            entry, event = self._test(t, epoch, switch_lr)
            entries.append(entry)
            if event is not None:
                return entries, event
        if at_cap:
            return entries, SwitchEvent(t, epoch, float(t), "max-warmup")
        return entries, None

    def _test(self, t: int, epoch: int, switch_lr) -> tuple[dict, Optional[SwitchEvent]]:
        entry: dict = {"type": "test", "epoch": epoch, "step": t}
        if int(np.isfinite(self.losses).sum()) < 3:
            entry.update(p_min=[], votes=0, passed=False, t_star=None, note="fewer than 3 finite losses")
            decision: dict = {"passed": False}
        else:
            decision = self._decide(switch_lr)
            entry.update(decision)
        self.consecutive = self.consecutive + 1 if decision["passed"] else 0
        entry["consecutive"] = self.consecutive
        if self.consecutive >= self.patience:
            return entry, SwitchEvent(t, epoch, decision["t_star"], "gp-test", lr=decision.get("lr_t_star"))
        return entry, None

    def _decide(self, switch_lr) -> dict:
        """Run the minimum test (every rank: same losses, same generator) and adopt rank 0's outcome."""
        n = self.min_test.n_test
        try:
            with np.errstate(all="ignore"):
                result, gp_state = self.min_test(self.losses, self.rng, self.gp_state)
            p_min, argmin_x = result.p_min, result.argmin_x
            ok = all(math.isfinite(v) for v in p_min + argmin_x + [gp_state.mean, gp_state.noise])
        except (np.linalg.LinAlgError, ValueError, FloatingPointError, OverflowError):
            ok, gp_state, p_min, argmin_x = False, self.gp_state, [math.nan] * n, [math.nan] * n
        vec = self.share([float(ok), *p_min, *argmin_x, gp_state.mean, gp_state.raw_outputscale, gp_state.raw_noise,
                          *gp_state.adam_m, *gp_state.adam_v, float(gp_state.adam_t)])
        p_min, argmin_x, rest = vec[1:1 + n], vec[1 + n:1 + 2 * n], vec[1 + 2 * n:]
        if not bool(vec[0]):  # numerical failure (e.g. astronomically large losses): the test does not pass
            return {"p_min": [], "votes": 0, "passed": False, "t_star": None, "note": "GP computation failed"}
        self.gp_state = GPState(rest[0], rest[1], rest[2], list(rest[3:6]), list(rest[6:9]), int(rest[9]))
        votes = int(sum(p > self.min_test.confidence for p in p_min))
        t_star = self.losses.shape[0] * float(np.mean(argmin_x))  # Eq. 5
        return {"p_min": [float(p) for p in p_min], "votes": votes, "passed": votes > n / 2, "t_star": t_star,
                "lr_t_star": switch_lr(t_star, argmin_x)}

    def _t_star_from_history(self, switch_lr) -> float:
        """t* for a switch forced by an all-non-finite interval: Eq. 5 on the finite history (0 if there is none)."""
        finite = np.flatnonzero(np.isfinite(self.losses))
        if finite.size < 3:
            return float(finite[int(np.argmin(self.losses[finite]))]) if finite.size else 0.0
        decision = self._decide(switch_lr)
        last_finite = float(finite[-1])  # the GP may place its argmin in the non-finite tail: stay in the history
        return last_finite if decision["t_star"] is None else min(decision["t_star"], last_finite)
