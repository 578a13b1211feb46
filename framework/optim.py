"""Optimizers and LR schedules from the resolved config: AdamP, LAMB, SGD; the schedules of :mod:`autowu`.

Defaults are the paper's (Appendix A): AdamP with weight decay 0.1, betas (0.9, 0.999), eps 1e-8, delta 0.1; LAMB with
weight decay 0.1, betas (0.9, 0.999), eps 1e-6. The baseline's peak LR is ``lr_base * sqrt(B / 256)`` with
``lr_base`` 1e-3 for AdamP (Section 3) and 1e-2 for LAMB (Appendix B). SGD (momentum 0.9, weight decay 5e-4, base LR
0.1 per 256 images) is there for comparison only. A value given in the YAML or on the command line wins.
"""
from __future__ import annotations

import argparse
import difflib
import math
from typing import Any, Callable, Iterable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

import autowu

from .config import ConfigError

OPT_DEFAULTS: dict[str, dict[str, Any]] = {
    "adamp": {"lr_base": 1e-3, "weight_decay": 0.1, "opt_betas": [0.9, 0.999], "opt_eps": 1e-8, "adamp_delta": 0.1},
    "lamb": {"lr_base": 1e-2, "weight_decay": 0.1, "opt_betas": [0.9, 0.999], "opt_eps": 1e-6},
    "sgd": {"lr_base": 0.1, "weight_decay": 5e-4, "momentum": 0.9},
    # the automatic methods users weigh against AutoWU (issue 25), as their authors say to use them, with AdamP's
    # weight decay (Appendix A, decoupled) and betas. Schedule-Free AdamW removes the schedule, not the LR: the
    # baseline's sqrt-rule LR, its warmup inside the optimizer (--warmup-epochs), and --sched constant.
    "schedulefree_adamw": {"lr_base": 1e-3, "weight_decay": 0.1, "opt_betas": [0.9, 0.999], "opt_eps": 1e-8},
    # Prodigy and D-Adaptation estimate the step size: lr=1 at every batch size, the schedule on top (Prodigy:
    # safeguard_warmup=True with a warmup, cosine; D-Adaptation: decoupled weight decay)
    "prodigy": {"lr": 1.0, "weight_decay": 0.1, "opt_betas": [0.9, 0.999], "opt_eps": 1e-8},
    "dadapt_adam": {"lr": 1.0, "weight_decay": 0.1, "opt_betas": [0.9, 0.999], "opt_eps": 1e-8},
}


def resolve_optimizer_defaults(args: argparse.Namespace) -> None:
    """Fill the optimizer settings left unset (None) with the paper's values for ``args.opt``, and ``args.lr`` (the
    peak LR of the baseline schedules) from ``lr_base`` and the global batch size unless it was given."""
    if not isinstance(args.opt, str) or args.opt not in OPT_DEFAULTS:
        raise ConfigError(f"--opt {args.opt!r}: use one of {', '.join(OPT_DEFAULTS)}")
    for key, value in OPT_DEFAULTS[args.opt].items():
        if getattr(args, key, None) is None:
            setattr(args, key, list(value) if isinstance(value, list) else value)
    if args.lr is None:
        args.lr = scaled_lr(args.lr_base, args.batch_size, args.lr_base_size, args.lr_scale)


def scaled_lr(lr_base: float, batch_size: int, ref: int, rule: str) -> float:
    """Peak LR for global batch ``batch_size``: ``sqrt`` (the paper: ``lr_base * sqrt(B/ref)``), ``linear`` or ``none``."""
    if rule not in LR_SCALE_RULES:
        raise ConfigError(f"--lr-scale {rule!r}: use one of {', '.join(LR_SCALE_RULES)}")
    rooted = autowu.sqrt_scaled_lr(lr_base, batch_size, ref=ref)  # checks lr_base > 0, batch_size and ref >= 1
    if rule == "sqrt":
        return rooted
    return float(lr_base) * batch_size / ref if rule == "linear" else float(lr_base)


LR_SCALE_RULES = ("sqrt", "linear", "none")


def param_groups(model: nn.Module, weight_decay: float, exclude_bias_norm: bool) -> list[dict]:
    """One group, or two with biases and 1-d (norm) parameters free of weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"the model ({type(model).__name__}) has no parameter with requires_grad=True: nothing to "
                          "train; unfreeze some parameters before building the optimizer")
    if not exclude_bias_norm or weight_decay == 0:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def create_optimizer(args: argparse.Namespace, model: nn.Module, steps_per_epoch: int = 1) -> torch.optim.Optimizer:
    """The ``--opt`` optimizer over ``model``'s parameters with the resolved settings; initial LR ``args.lr``.
    ``steps_per_epoch`` turns ``--warmup-epochs`` into Schedule-Free's ``warmup_steps`` and Prodigy's
    ``safeguard_warmup``. The weight decay of the groups is decoupled (AdamW-style) for all three added methods.
    The settings it reads are checked first (ConfigError naming the setting and its flag)."""
    check_optimizer_settings(args)
    groups = param_groups(model, args.weight_decay, args.wd_exclude_bias_norm)
    warmup_steps = int(round((getattr(args, "warmup_epochs", 0) or 0) * steps_per_epoch))
    if args.opt == "adamp":
        return _adamp_class()(groups, lr=args.lr, betas=tuple(args.opt_betas), eps=args.opt_eps, delta=args.adamp_delta)
    if args.opt == "lamb":
        from torch_optimizer import Lamb
        return Lamb(groups, lr=args.lr, betas=tuple(args.opt_betas), eps=args.opt_eps)
    if args.opt == "sgd":
        return torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum, nesterov=False)
    betas, eps = tuple(args.opt_betas), args.opt_eps
    if args.opt == "schedulefree_adamw":
        from schedulefree import AdamWScheduleFree
        return AdamWScheduleFree(groups, lr=args.lr, betas=betas, eps=eps, warmup_steps=warmup_steps)
    if args.opt == "prodigy":
        from prodigyopt import Prodigy
        return Prodigy(groups, lr=args.lr, betas=betas, eps=eps, decouple=True, safeguard_warmup=warmup_steps > 0)
    if args.opt == "dadapt_adam":
        from dadaptation import DAdaptAdam
        return DAdaptAdam(groups, lr=args.lr, betas=betas, eps=eps, decouple=True)
    raise ValueError(f"--opt {args.opt!r}: use one of {', '.join(OPT_DEFAULTS)}")


# the settings each optimizer reads (beyond lr and weight_decay)
_READS = {"adamp": ("opt_betas", "opt_eps", "adamp_delta"), "lamb": ("opt_betas", "opt_eps"), "sgd": ("momentum",),
          "schedulefree_adamw": ("opt_betas", "opt_eps"), "prodigy": ("opt_betas", "opt_eps"),
          "dadapt_adam": ("opt_betas", "opt_eps")}


def check_optimizer_settings(args: argparse.Namespace) -> None:
    """The settings ``args.opt`` reads, as train.py's flags allow them (framework/validate.py's ranges), for callers
    that build the optimizer themselves: one ConfigError naming the setting (and its flag) and the range."""
    if not isinstance(args.opt, str) or args.opt not in OPT_DEFAULTS:
        raise ConfigError(f"--opt {args.opt!r}: use one of {', '.join(OPT_DEFAULTS)}")

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    def bad(name: str, value: Any, wanted: str) -> ConfigError:
        return ConfigError(f"{name} (--{name.replace('_', '-')}) must be {wanted}, got {value!r:.60}")

    if not (number(args.lr) and args.lr > 0):
        raise bad("lr", args.lr, "a finite number > 0")
    if not (number(args.weight_decay) and args.weight_decay >= 0):
        raise bad("weight_decay", args.weight_decay, "a finite number >= 0")
    reads = _READS[args.opt]
    betas = getattr(args, "opt_betas", None)
    if "opt_betas" in reads and not (isinstance(betas, (list, tuple)) and len(betas) == 2
                                     and all(number(b) and 0 <= b < 1 for b in betas)):
        raise bad("opt_betas", betas, "two numbers in [0, 1) (Adam's betas)")
    for name in ("opt_eps", "adamp_delta"):
        value = getattr(args, name, None)
        if name in reads and not (number(value) and value > 0):
            raise bad(name, value, "a finite number > 0")
    momentum = getattr(args, "momentum", None)
    if "momentum" in reads and not (number(momentum) and 0 <= momentum < 1):
        raise bad("momentum", momentum, "a number in [0, 1)")


def effective_lr(group: dict) -> float:
    """The step size a group's update really uses: Prodigy's and D-Adaptation's ``d * lr``, Schedule-Free's LR after
    its warmup (``scheduled_lr``), else ``lr``."""
    if "d" in group:
        return float(group["d"]) * float(group["lr"])
    if "scheduled_lr" in group and "k" in group and "warmup_steps" in group:
        # Schedule-Free writes ``scheduled_lr`` during its step: before the step it holds the previous step's LR
        # (0 before the first). The coming step k uses lr * (k + 1) / warmup_steps during its warmup, then lr.
        k, warmup = int(group["k"]), int(group["warmup_steps"])
        return float(group["lr"]) * ((k + 1) / warmup if k < warmup else 1.0)
    return float(group.get("scheduled_lr", group["lr"]))


def set_optimizer_mode(optimizer: torch.optim.Optimizer, train: bool) -> None:
    """Schedule-Free optimizers hold two points: ``train()`` before training steps, ``eval()`` before evaluating or
    saving (the model then holds the averaged weights x). A no-op for every other optimizer."""
    if uses_optimizer_modes(optimizer):
        (optimizer.train if train else optimizer.eval)()


MODE_OPTIMIZERS = ("schedulefree_adamw",)  # --opt names whose optimizer has train/eval modes (uses_optimizer_modes)
STEP_SIZE_ESTIMATORS = ("prodigy", "dadapt_adam")  # --opt names that estimate their step size d (effective_lr)


def uses_optimizer_modes(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` has Schedule-Free's train/eval modes."""
    return callable(getattr(optimizer, "eval", None)) and "train_mode" in optimizer.param_groups[0]


def _adamp_class() -> type:
    """``adamp.AdamP``, the same arithmetic, faster: the Adam moments and the update of a parameter group are
    multi-tensor (``torch._foreach_*``: one fused kernel per operation on a GPU instead of one per parameter);
    ``reshape`` in place of the package's ``view``, which fails on channels_last (non-contiguous) conv weights; on a
    GPU the projection test is decided on the device, so a step never waits for the GPU (``_projection``).
    Bitwise the package's weights on the CPU (tests/test_bench.py); the state (``step``, ``exp_avg``,
    ``exp_avg_sq``) is the package's, so checkpoints load either way."""
    from adamp import AdamP

    class AdamPAnyLayout(AdamP):
        sync_free = None  # None: on GPU tensors only; True/False forces it (tests)

        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                params = [p for p in group["params"] if p.grad is not None]
                if params:
                    self._group_step(group, params)
            return loss

        def _group_step(self, group: dict, params: list) -> None:
            """The package's ``step`` for one group (Heo et al. 2021, Algorithm 1), operation by operation."""
            beta1, beta2 = group["betas"]
            lr, wd = group["lr"], group["weight_decay"]
            grads = [p.grad for p in params]
            states = [self.state[p] for p in params]
            for p, st in zip(params, states):
                if len(st) == 0:
                    st["step"], st["exp_avg"], st["exp_avg_sq"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                st["step"] += 1
            exp_avgs, exp_avg_sqs = [st["exp_avg"] for st in states], [st["exp_avg_sq"] for st in states]
            torch._foreach_mul_(exp_avgs, beta1)
            torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)
            torch._foreach_mul_(exp_avg_sqs, beta2)
            torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
            denoms = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_div_(denoms, [math.sqrt(1 - beta2 ** st["step"]) for st in states])
            torch._foreach_add_(denoms, group["eps"])
            if group["nesterov"]:  # beta1 * exp_avg + (1 - beta1) * grad
                numer = torch._foreach_mul(exp_avgs, beta1)
                torch._foreach_add_(numer, torch._foreach_mul(grads, 1 - beta1))
            else:
                numer = exp_avgs
            perturbs = list(torch._foreach_div(numer, denoms))
            wd_ratios = []
            for i, p in enumerate(params):
                ratio = 1
                if p.dim() > 1:
                    perturbs[i], ratio = self._projection(p, grads[i], perturbs[i], group["delta"],
                                                          group["wd_ratio"], group["eps"])
                wd_ratios.append(ratio)
            if wd > 0:
                for p, ratio in zip(params, wd_ratios):
                    p.mul_(1 - lr * wd * ratio)
            steps = {st["step"] for st in states}
            if len(steps) == 1:  # the usual case: every parameter has taken the same number of steps
                torch._foreach_add_(params, perturbs, alpha=-lr / (1 - beta1 ** steps.pop()))
            else:
                for p, perturb, st in zip(params, perturbs, states):
                    p.add_(perturb, alpha=-lr / (1 - beta1 ** st["step"]))

        def _channel_view(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(x.size(0), -1)

        def _layer_view(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(1, -1)

        def _projection(self, p, grad, perturb, delta, wd_ratio, eps):
            """AdamP's projection (Heo et al. 2021, Algorithm 1): remove the radial part of the update of a
            scale-invariant weight, tested on the channel view, then on the layer view. The package decides with
            ``if cosine.max() < delta / sqrt(d)``, a device-to-host read per weight per step; here both views are
            computed and ``torch.where`` picks the same result on the device (bitwise the same values)."""
            if not (self.sync_free if self.sync_free is not None else p.is_cuda):
                return super()._projection(p, grad, perturb, delta, wd_ratio, eps)
            expand = [-1] + [1] * (p.dim() - 1)
            out, taken = perturb, None
            for view in (self._channel_view, self._layer_view):
                w = view(p.data)
                cosine = F.cosine_similarity(view(grad), w, dim=1, eps=eps).abs_()
                hit = cosine.max() < delta / math.sqrt(w.size(1))
                p_n = p.data / w.norm(dim=1).view(expand).add_(eps)
                projected = perturb - p_n * view(p_n * perturb).sum(dim=1).view(expand)
                if taken is None:
                    out, taken = torch.where(hit, projected, perturb), hit
                else:
                    out, taken = torch.where(taken, out, torch.where(hit, projected, perturb)), taken | hit
            return out, torch.where(taken, wd_ratio, 1.0)

    return AdamPAnyLayout


# constructor arguments train.py provides itself (from the loop, or fixed by the schedule's name)
SET_BY_TRAIN = {"model", "loss_fn", "batches", "process_group", "device", "immediate_cooldown",
                "cooldown_type"}


def scheduler_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Constructor arguments of schedule ``args.sched``: the run settings its registry entry reads, then
    ``--sched-kwargs``. A key given both ways with different values, or one the class does not take, is a
    ConfigError naming both."""
    entry = autowu.schedule_entry(args.sched)
    kw = {arg: getattr(args, dest) for dest, arg in entry.settings.items()}
    extra = dict(args.sched_kwargs or {})
    clashes = [f"--{dest.replace('_', '-')} {_flag_text(kw[arg])} and --sched-kwargs {arg}={extra[arg]!r}"
               for dest, arg in entry.settings.items() if arg in extra and extra[arg] != kw[arg]]
    if clashes:
        raise ConfigError(f"--sched {args.sched}: {'; '.join(clashes)} set the same argument differently; give it "
                          "once, with the flag (and drop it from --sched-kwargs)")
    set_by_train = SET_BY_TRAIN | set(entry.fixed)
    allowed = sorted(entry.arguments() - set_by_train)
    for key in extra:
        if key in set_by_train:
            raise ConfigError(f"--sched-kwargs {key!r}: train.py sets it itself; use the flag for it if there is one")
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ConfigError(f"--sched-kwargs: {entry.cls.__name__} (--sched {args.sched}) has no setting {key!r}; "
                              f"{hint}its settings are {', '.join(allowed)}")
    kw.update(extra)
    return kw


def _flag_text(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def create_schedule(args: argparse.Namespace, optimizer: torch.optim.Optimizer, model: nn.Module,
                    steps_per_epoch: int, loss_fn: Optional[Callable] = None,
                    batches: Optional[Callable[[], Iterator]] = None, forwards_per_step: int = 1) -> Any:
    """The LR schedule ``args.sched`` over ``args.epochs`` epochs of ``steps_per_epoch`` optimizer steps, fed what
    its registry entry asks for: ``model``; probe ``batches()`` (on the device) with ``loss_fn(model, x, y)`` and
    ``forwards_per_step`` (micro-batches per optimizer step, for an overhead figure)."""
    entry = autowu.schedule_entry(args.sched)
    kw = scheduler_kwargs(args)
    if entry.needs_model(kw):
        kw["model"] = model
    if entry.needs_probe:
        kw.update(loss_fn=loss_fn, batches=batches)
        kw.setdefault("forwards_per_step", forwards_per_step)
    return entry.build(optimizer, steps_per_epoch=steps_per_epoch, total_epochs=args.epochs, **kw)


def check_schedule(args: argparse.Namespace, steps_per_epoch: int) -> None:
    """Build the schedule once on stand-ins (a one-parameter optimizer, a one-layer model, an empty probe) so a bad
    setting (e.g. ``rho_w * T < 1``, warmup longer than the run) is reported before the run writes anything."""
    stand_in = nn.Linear(1, 1)
    probe = torch.optim.SGD(stand_in.parameters(), lr=args.lr)
    create_schedule(args, probe, stand_in, steps_per_epoch, loss_fn=lambda m, x, y: m(x).sum(), batches=lambda: iter(()))


def parameters_finite(params: Iterable[torch.Tensor]) -> bool:
    """Whether every parameter is finite (one host read; called once per epoch before saving)."""
    flags = [torch.isfinite(p).all() for p in params]
    return bool(torch.stack(flags).all().item()) if flags else True
