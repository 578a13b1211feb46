"""AutoLR: explore-exploit LR tuning from a local quadratic along the optimizer's own step (ICLR 2020 submission,
"AutoLR: A Method for Automatic Tuning of Learning Rate").

Explore (Section 2.1): for ``explore_epochs`` the seed LR is kept; the local fit may only raise it. Exploit: every
``recompute_window`` steps the loss-drop rate is measured and, once the saturation test says the current LR has
served its purpose, the LR moves to ``lr + eps_min`` where ``eps_min`` minimises ``L(eps) = k0 + k1 eps + k2 eps^2``
(Eq. 2), the loss one step on with the LR perturbed by ``eps``, clipped so that ``|eps|^3 < r * L`` (Eq. 3).
A change that lowers the loss-drop rate is rolled back (Section 2.2).

AutoLR as an LR scheduler: call ``step()`` once after every ``optimizer.step()``.

The seed LR is the optimizer's group-0 LR; every group keeps its ratio to group 0.

At each check (every ``recompute_window`` optimizer steps; Appendix C: about twice per epoch) AutoLR

1. recovers the step direction of the step just taken, ``d = (theta_{t-1} - theta_t) / lr`` (Section 2: any
   optimizer whose step can be read off the parameters: SGD, momentum, Adam, AdamP, LAMB, ...). ``theta_{t-1}``
   is copied by an ``optimizer.register_step_pre_hook`` just before the optimizer steps that end a window;
2. measures the loss-drop rate of the window, ``(L_S(theta_start) - L_S(theta_t)) / steps``, both losses on the
   *same* superbatch ``S`` (Section 2.2);
3. explore (``step < explore_steps``): fits the quadratic and raises the LR by ``eps_min`` if it is positive,
   never lowers it (Section 2.1);
4. exploit: if the previous check changed the LR and this window's drop rate is lower than the one before the
   change, restores model, optimizer and LR from before the change (rollback, Section 2.2). Otherwise the
   saturation test: relative first (the drop rate fell by ``saturation_threshold`` x from the first window of
   training), and the first time it passes the drop rate of that moment becomes an absolute threshold used from
   then on (Section 2.1, "Saturation Threshold"). Only when saturated is the quadratic fitted (Appendix C) and
   the LR moved to ``lr + eps_min``.

The fit: the loss is evaluated at ``n_eps`` values of ``eps`` (Eq. 1-2), each on the same superbatch of
``superbatch`` mini-batches whose losses are averaged (forward passes only, under ``torch.no_grad``, one
mini-batch at a time: no extra activation memory). ``k0, k1, k2`` by least squares; ``eps_min = -k1 / (2 k2)``
(for ``k2 <= 0`` the quadratic has no minimum and the step goes to the threshold in the descent direction),
clipped to ``|eps_min| <= (r L)^(1/3)`` with ``L`` the superbatch loss at ``theta_t`` (Eq. 3).

Choices where the paper is silent (a careful reimplementation's; all are arguments):

- ``eps`` samples: ``lr * eps_span * linspace(-1, 1, n_eps)``, i.e. LRs in ``[0.5 lr, 1.5 lr]`` by default
  (relative to the LR, so one setting serves SGD at 0.1 and Adam at 1e-3; odd ``n_eps`` includes ``eps = 0``).
- A fit whose loss samples do not differ by more than ``LOSS_RESOLUTION`` (4 float32 ulps) of the loss keeps the
  LR: it happens once the LR is so small that the step no longer changes the loss, and the least-squares slope of
  equal numbers is rounding noise which, divided by a tiny ``eps``, sent the LR down 10x at every check (seen at
  batch 16K, 3 steps per epoch: from 1e-13 to 1e-46 in 40 checks, results/auto_lr.md).
- ``max_change``: one decision never changes the LR by more than this factor (default 10, a staircase step).
  The paper's only bound is Eq. 3, which for Adam at LR 1e-3 still allows a 60x increase; ``inf`` disables it.
- Loss-drop rate per optimizer step; the relative test's reference is the first window of training (a later
  increase in the explore phase is not a new reference); at the first saturation the absolute threshold is the
  drop rate of that moment, or, if that rate is not positive, the relative threshold's value.
- Rollback applies to exploit-phase changes (explore increases are exploration the paper wants even when the
  loss does not improve). A change made right after a rollback is final, so training cannot loop. Like
  AutoWU's rollback, time is not rewound: the step count and the data order go on.
- Probe mode ``train`` (default): the loss the optimizer minimises (BatchNorm on batch statistics), as an
  optimizer wrapper calling the training closure would; dropout draws the *same* masks for every ``eps`` on a
  given mini-batch (the "same superbatch" principle applied to dropout noise). ``eval`` evaluates with running
  statistics and no dropout. Either way the parameters, buffers (BatchNorm statistics), module modes and the
  global RNGs (CPU and the model's GPUs) are exactly as before each check.
- The superbatch is the first ``superbatch`` mini-batches of a fresh ``batches()`` iterator (fewer if it ends
  sooner; the count used is in ``history``). A check's passes each start a fresh iterator but every ``eps`` of
  a pass sees the same mini-batch, since all settings are evaluated on a mini-batch before the next is drawn.
- Distributed: each rank probes its own mini-batches; the losses are averaged across ranks (one all-reduce per
  pass), so every rank takes the same decision. The step direction is each rank's own (identical under DDP).

Memory: between checks one copy of the parameters (the window start, on their device); during a check two more
(``theta_t`` and ``d``). A pending rollback keeps the model and optimizer state in host memory. ``state_dict``
holds the window start and any pending rollback snapshot (exact resume).

Cost: ``extra_forward_passes`` counts AutoLR's mini-batch forwards; ``overhead`` is that over the training
forwards (``forwards_per_step`` per optimizer step, e.g. the accumulation steps), ``compute_overhead`` over the
training compute counting a backward as two forwards (Appendix C's accounting, <= 16.6% on CIFAR-10).

Args:
    optimizer: the optimizer (group 0's LR is the seed LR).
    steps_per_epoch, total_epochs: the budget, in optimizer steps per epoch and epochs.
    model: the trained module (its parameters are perturbed and restored in place).
    loss_fn: ``loss_fn(model, inputs, targets) -> 0-d loss``: the training loss, with its autocast.
    batches: ``batches() -> iterator of (inputs, targets)`` training mini-batches on the model's device.
    explore_epochs: explore length in epochs, may be fractional (default ``0.2 * total_epochs``, Table 8's
        10/50 for (Fashion-)MNIST; the paper uses 20-30% of the budget).
    recompute_window: optimizer steps between checks (default ``steps_per_epoch // 2``, Appendix C).
    n_eps: loss samples per fit (>= 3; Appendix C uses 5).
    superbatch: mini-batches averaged per loss (Section 2.2 and Appendix B: 100).
    eps_threshold: ``r`` of Eq. 3 (Table 8: 1e-3 for MNIST, Fashion-MNIST and ImageNet, 5e-3 for CIFAR-10).
    saturation_threshold: the relative saturation threshold (Table 8: 100 for MNIST, Fashion-MNIST and
        CIFAR-10, 500 for ImageNet).
    eps_span, max_change, probe_mode: see the choices above.
    forwards_per_step: training forward passes per optimizer step (for ``overhead``).
    seed: seeds the dropout masks of the probes (the training RNG is untouched).
    process_group: for DDP; by default the global group when ``torch.distributed`` is initialised.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from .autolr_probe import START, Probe
from .rollback import _to_cpu
from .schedules import StepScheduler, _check_int, _check_loadable, _check_positive, _is_real, _is_step

PROBE_MODES = ("train", "eval")
LOSS_RESOLUTION = 4 * 2.0 ** -23  # relative: a fit needs loss samples that differ by more (4 float32 ulps)


class AutoLR(StepScheduler):
    """AutoLR as an LR scheduler: call ``step()`` once after every ``optimizer.step()``. The module docstring has
    the method, the choices where the paper is silent and every argument."""

    def __init__(self, optimizer: Optimizer, steps_per_epoch: int, total_epochs: int, *, model: nn.Module,
                 loss_fn: Callable[[nn.Module, Tensor, Tensor], Tensor],
                 batches: Callable[[], Iterator[tuple[Tensor, Tensor]]], explore_epochs: Optional[float] = None,
                 recompute_window: Optional[int] = None, n_eps: int = 5, superbatch: int = 100,
                 eps_threshold: float = 1e-3, saturation_threshold: float = 100.0, eps_span: float = 0.5,
                 max_change: float = 10.0, probe_mode: str = "train", forwards_per_step: int = 1, seed: int = 0,
                 process_group: Any = None):
        super().__init__(optimizer, steps_per_epoch, total_epochs)
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be the nn.Module being trained, got {type(model).__name__}")
        for name, fn in (("loss_fn", loss_fn), ("batches", batches)):
            if not callable(fn):
                raise ValueError(f"{name} must be callable, got {type(fn).__name__}; see the AutoLR docstring")
        if explore_epochs is None:
            explore_epochs = 0.2 * self.total_epochs
        if (isinstance(explore_epochs, bool) or not isinstance(explore_epochs, (int, float))
                or not 0 <= explore_epochs <= self.total_epochs):
            raise ValueError(f"explore_epochs={explore_epochs!r} must be a number in [0, total_epochs="
                             f"{self.total_epochs}]")
        if recompute_window is None:
            recompute_window = max(1, self.steps_per_epoch // 2)
        _check_int("recompute_window", recompute_window, 1)
        _check_int("n_eps", n_eps, 3)
        _check_int("superbatch", superbatch, 1)
        _check_int("forwards_per_step", forwards_per_step, 1)
        _check_positive("eps_threshold", eps_threshold)
        _check_positive("saturation_threshold", saturation_threshold)
        if saturation_threshold < 1:
            raise ValueError(f"saturation_threshold={saturation_threshold!r} must be >= 1 (the drop rate must "
                             "fall by this factor)")
        _check_positive("eps_span", eps_span)
        if eps_span > 1:
            raise ValueError(f"eps_span={eps_span!r} must be in (0, 1]: the samples' LRs lr*(1 +- eps_span) must "
                             "not be negative")
        if isinstance(max_change, bool) or not isinstance(max_change, (int, float)) or not max_change > 1:
            raise ValueError(f"max_change={max_change!r} must be > 1 (float('inf') for no bound)")
        if probe_mode not in PROBE_MODES:
            raise ValueError(f"probe_mode={probe_mode!r} must be one of {PROBE_MODES}")
        _check_int("seed", seed, 0)
        self.model, self.loss_fn, self.batches, self.process_group = model, loss_fn, batches, process_group
        self.explore_epochs = float(explore_epochs)
        self.explore_steps = int(round(self.explore_epochs * self.steps_per_epoch))
        self.recompute_window, self.n_eps, self.superbatch = int(recompute_window), int(n_eps), int(superbatch)
        self.eps_threshold, self.saturation_threshold = float(eps_threshold), float(saturation_threshold)
        self.eps_span, self.max_change, self.probe_mode = float(eps_span), float(max_change), probe_mode
        self.forwards_per_step, self.seed = int(forwards_per_step), int(seed)
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        if not self.params:
            raise ValueError("the optimizer has no parameters")
        self.probe = Probe(model, self.params, loss_fn, batches, self.superbatch, probe_mode, self.seed, process_group)
        # State (all of it in state_dict).
        self.lr = self.base_lrs[0]
        self.window_start = [p.detach().clone() for p in self.params]
        self.window_start_step = 0
        self.rate_ref: Optional[float] = None  # drop rate of the first window (reference of the relative test)
        self.abs_threshold: Optional[float] = None  # set at the first saturation (then the test is absolute)
        self.pending: Optional[dict] = None  # an exploit change awaiting its rollback check
        self.final_next = False  # the next change is not rolled back (set by a rollback)
        self.postponed = False  # the check's optimizer step was skipped (e.g. AMP overflow): check at the next step
        self.n_checks = 0
        self.history: list[dict] = []
        # Transient: theta_{t-1}, copied just before the optimizer step that ends a window.
        self._prev: Optional[list[Tensor]] = None
        self._prev_step = -1
        self._hook = optimizer.register_step_pre_hook(self._before_optimizer_step)
        self._apply_lr(self.lr)

    # -- the schedule --------------------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        return self.lr

    @property
    def phase(self) -> str:
        return "explore" if self.last_epoch < self.explore_steps else "exploit"

    @property
    def extra_forward_passes(self) -> int:
        """AutoLR's mini-batch forwards so far."""
        return self.probe.extra_forward_passes

    @property
    def overhead(self) -> float:
        """AutoLR's forwards / the training forwards so far."""
        return self.extra_forward_passes / max(1, self.last_epoch * self.forwards_per_step)

    @property
    def compute_overhead(self) -> float:
        """AutoLR's forwards / training compute in forward-pass units (backward = 2 forwards; Appendix C)."""
        return self.overhead / 3.0

    def _check_due(self, step: int) -> bool:
        return 0 < step < self.total_steps and (step % self.recompute_window == 0 or self.postponed)

    def _before_optimizer_step(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        if self._check_due(self.last_epoch + 1):
            with torch.no_grad():
                self._prev = [p.detach().clone() for p in self.params]
            self._prev_step = self.last_epoch

    def step(self, loss: Any = None, *, metrics: Any = None, epoch: Optional[int] = None) -> None:  # type: ignore[override]
        """Call once after each ``optimizer.step()``. ``loss`` is accepted for the protocol and not used: AutoLR
        measures its own superbatch losses."""
        if epoch is not None:
            raise ValueError("step(epoch=...) is not supported: AutoLR counts optimizer steps itself")
        if self._past_the_end():
            return
        self.last_epoch += 1
        self._step_count += 1
        t = self.last_epoch
        if self._check_due(t):
            if self._prev is None or self._prev_step != t - 1:  # the optimizer step did not run: try the next one
                self.postponed = True
            else:
                self.postponed = False
                self._check(t)
        self._apply_lr(self.lr)

    # -- one check -----------------------------------------------------------------------------------------------
    def _check(self, t: int) -> None:
        lr, phase = self.lr, self.phase
        steps = t - self.window_start_step
        self.n_checks += 1
        with torch.no_grad():
            cur = [p.detach().clone() for p in self.params]  # theta_t, restored bit-exactly after the probes
            d, self._prev = self._prev, None
            for di, c in zip(d, cur):  # d = (theta_{t-1} - theta_t) / lr, in theta_{t-1}'s memory
                di.sub_(c).div_(lr)
        entry: dict = {"type": "autolr", "step": t, "epoch": (t - 1) // self.steps_per_epoch, "phase": phase,
                       "lr_before": lr, "lr_after": lr, "action": "keep", "rolled_back": False}
        xs = np.linspace(-1.0, 1.0, self.n_eps)
        if self.n_eps % 2:
            xs[self.n_eps // 2] = 0.0
        grid = [lr * self.eps_span * float(x) for x in xs]
        passes_before = self.extra_forward_passes
        if phase == "explore":  # one pass: window start and the eps grid (+ eps = 0 if not on it)
            settings: list[Any] = [START] + grid + ([] if 0.0 in grid else [0.0])
            losses, used = self.probe(settings, self.window_start, cur, d, self.n_checks)
            l_start, l_now = losses[0], losses[settings.index(0.0)]
            fit = (grid, losses[1:1 + len(grid)])
        else:
            (l_start, l_now), used = self.probe([START, 0.0], self.window_start, cur, d, self.n_checks)
            fit = None
        rate = (l_start - l_now) / steps
        if self.rate_ref is None:  # the first window of training: the relative test's reference
            self.rate_ref = rate
        entry.update(superbatch_used=used, window_steps=steps, loss_window_start=l_start, loss_now=l_now,
                     drop_rate=rate)
        if phase == "exploit" and self.pending is not None:
            pending, self.pending = self.pending, None
            entry["rate_before_change"] = pending["rate_before"]
            if not rate >= pending["rate_before"]:  # the change lowered the loss-drop rate (or NaN): roll back
                self._rollback(pending)
                entry.update(action="rollback", rolled_back=True, rollback_to_step=pending["step"],
                             lr_after=self.lr)
                self._finish(entry, cur, passes_before, restart_window=True)
                return
        saturated = self._saturation(rate, entry) if phase == "exploit" else False
        if phase == "exploit" and saturated:
            losses, used2 = self.probe(grid, self.window_start, cur, d, self.n_checks)
            fit = (grid, losses)
            entry["superbatch_used_fit"] = used2
        if fit is not None:
            eps = self._fit(fit[0], fit[1], l_now, entry)
            new_lr = self._bounded_lr(lr, eps)
            if phase == "explore":
                new_lr = max(new_lr, lr)  # Section 2.1: only increases in the explore phase
            if new_lr != lr:
                entry["action"] = "increase" if new_lr > lr else "decrease"
                if phase == "exploit" and not self.final_next:
                    self.pending = {"step": t, "lr_before": lr, "rate_before": rate,
                                    "model": _to_cpu(self.model.state_dict()),
                                    "optimizer": _to_cpu(self.optimizer.state_dict())}
                if phase == "exploit":
                    self.final_next = False
                self.lr = new_lr
                entry["lr_after"] = new_lr
        self._finish(entry, cur, passes_before, restart_window=False)

    def _finish(self, entry: dict, cur: list[Tensor], passes_before: int, restart_window: bool) -> None:
        if restart_window:  # after a rollback the window restarts from the restored parameters
            cur = [p.detach().clone() for p in self.params]
        self.window_start, self.window_start_step = cur, entry["step"]
        entry["extra_forward_passes"] = self.extra_forward_passes - passes_before
        self.history.append(entry)

    def _saturation(self, rate: float, entry: dict) -> bool:
        """Section 2.1: relative threshold until it first passes, then the absolute threshold it yields."""
        ref = self.rate_ref
        if self.abs_threshold is None:
            limit = ref / self.saturation_threshold if ref is not None and ref > 0 else math.inf
            saturated = not rate > limit  # a non-positive or NaN reference: the seed LR never helped
            entry.update(saturation_mode="relative", saturation_limit=_finite_or_none(limit),
                         saturation_ratio=(ref / rate) if ref is not None and rate > 0 else None)
            if saturated:
                self.abs_threshold = rate if rate > 0 else (limit if math.isfinite(limit) else 0.0)
        else:
            saturated = not rate > self.abs_threshold
            entry.update(saturation_mode="absolute", saturation_limit=self.abs_threshold)
        entry["saturated"] = bool(saturated)
        return saturated

    def _fit(self, eps: list[float], losses: list[float], l_now: float, entry: dict) -> float:
        """Least-squares quadratic (Eq. 2), its minimiser, clipped by Eq. 3. Returns the clipped eps (0: no fit)."""
        entry.update(eps=list(eps), losses=list(losses))
        if not all(math.isfinite(v) for v in losses):
            entry["note"] = "non-finite loss among the samples: LR kept"
            return 0.0
        if not max(losses) - min(losses) > LOSS_RESOLUTION * max(abs(v) for v in losses):
            # a fit to equal numbers is rounding noise (its slope can be anything once divided by a tiny eps), not a
            # descent direction to follow to the threshold
            entry["note"] = "the loss samples do not differ beyond float32 rounding: no slope to follow, LR kept"
            return 0.0
        scale = max(abs(e) for e in eps)
        a2, a1, a0 = np.polyfit(np.asarray(eps) / scale, np.asarray(losses, dtype=np.float64), 2)
        k0, k1, k2 = float(a0), float(a1 / scale), float(a2 / scale**2)
        eps_max = (self.eps_threshold * l_now) ** (1.0 / 3.0) if l_now > 0 else 0.0  # Eq. 3: |eps|^3 < r L
        if k2 > 0:
            raw: Optional[float] = -k1 / (2.0 * k2)
            eps_min = min(max(raw, -eps_max), eps_max)
        else:  # no minimum: go to the threshold in the descent direction
            raw = None
            eps_min = -math.copysign(eps_max, k1) if k1 != 0 else 0.0
        entry.update(k0=k0, k1=k1, k2=k2, eps_min_raw=raw, eps_max=eps_max, eps_min=eps_min)
        return eps_min

    def _bounded_lr(self, lr: float, eps: float) -> float:
        return min(max(lr + eps, lr / self.max_change), lr * self.max_change)

    def _rollback(self, pending: dict) -> None:
        self.model.load_state_dict(pending["model"])
        self.optimizer.load_state_dict(copy.deepcopy(pending["optimizer"]))
        self.lr = pending["lr_before"]
        self.final_next = True

    # -- checkpointing -------------------------------------------------------------------------------------------
    def _config(self) -> dict:
        return {**super()._config(), "explore_steps": self.explore_steps, "recompute_window": self.recompute_window,
                "n_eps": self.n_eps, "superbatch": self.superbatch, "eps_threshold": self.eps_threshold,
                "saturation_threshold": self.saturation_threshold, "eps_span": self.eps_span,
                "max_change": self.max_change, "probe_mode": self.probe_mode, "seed": self.seed}

    def state_dict(self) -> dict:
        """Plain data: settings, step, LR, window start (host tensors), thresholds, pending rollback snapshot,
        counters and history."""
        return {"config": self._config(), "step": self.last_epoch, "lr": self.lr,
                "window_start": _to_cpu(self.window_start), "window_start_step": self.window_start_step,
                "rate_ref": self.rate_ref, "abs_threshold": self.abs_threshold, "pending": _to_cpu(self.pending),
                "final_next": self.final_next, "postponed": self.postponed, "n_checks": self.n_checks,
                "extra_forward_passes": self.extra_forward_passes, "history": copy.deepcopy(self.history)}

    def load_state_dict(self, state_dict: dict) -> None:
        """Check every key, then load: a bad state raises ValueError naming the key and changes nothing."""
        _check_loadable(state_dict, self._config(), _state_checks(self.total_steps))
        saved = state_dict["window_start"]
        if (len(saved) != len(self.params) or not all(isinstance(s, Tensor) for s in saved)
                or any(s.shape != p.shape for s, p in zip(saved, self.params))):
            raise ValueError("cannot load AutoLR state: its window-start parameters do not match this optimizer's "
                             "parameters; build the scheduler on the same model and optimizer as the saved run")
        self.last_epoch = int(state_dict["step"])
        self._step_count = self.last_epoch + 1
        self.lr = float(state_dict["lr"])
        self.window_start = [s.to(device=p.device, dtype=p.dtype, copy=True) for s, p in zip(saved, self.params)]
        self.window_start_step = int(state_dict["window_start_step"])
        self.rate_ref = state_dict["rate_ref"]
        self.abs_threshold = state_dict["abs_threshold"]
        self.pending = copy.deepcopy(state_dict["pending"])
        self.final_next = bool(state_dict["final_next"])
        self.postponed = bool(state_dict["postponed"])
        self.n_checks = int(state_dict["n_checks"])
        self.probe.extra_forward_passes = int(state_dict["extra_forward_passes"])
        self.history = copy.deepcopy(state_dict["history"])
        self._prev, self._prev_step = None, -1
        self._apply_lr(self.lr)


def _state_checks(total_steps: int) -> dict:
    """What :meth:`AutoLR.load_state_dict` checks, key by key, before changing anything."""
    def number_or_none(v):
        return None if v is None or _is_real(v) else "a number or None"

    def count(v):
        return None if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else "an integer >= 0"

    def of_type(kind, what):
        return lambda v: None if isinstance(v, kind) else what

    return {"step": _is_step(total_steps), "window_start_step": _is_step(total_steps),
            "lr": lambda v: None if _is_real(v) and 0 < v < math.inf else "a finite LR > 0",
            "window_start": of_type((list, tuple), "a list of tensors (the parameters at the window start)"),
            "rate_ref": number_or_none, "abs_threshold": number_or_none,
            "pending": of_type((dict, type(None)), "a dict or None (a pending rollback snapshot)"),
            "final_next": of_type((bool, int), "True or False"), "postponed": of_type((bool, int), "True or False"),
            "n_checks": count, "extra_forward_passes": count, "history": of_type(list, "a list")}


def _finite_or_none(x: float) -> Optional[float]:
    return float(x) if math.isfinite(x) else None
