"""The loop bodies: :func:`train_one_epoch` (gradient accumulation, AMP, DDP ``no_sync``, per-step scheduler calls)
and :func:`evaluate` (top-1/top-5 over the sharded validation set).

No device-to-host synchronisation happens per optimizer step: step losses go into a device buffer that is read (and
averaged over ranks) every ``log_interval`` steps and at the epoch end; the LR a step used is a host float already.
Divergence (non-finite losses) is judged on those rank-averaged values, so every rank takes the same decision.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import DistInfo, all_reduce_mean, all_reduce_sum, any_rank
from .logger import RunLogger


# -- AMP and the optimizer step ----------------------------------------------------------------------------------
class AmpGrad:
    """Mixed precision in one helper: ``scale -> backward -> unscale -> clip -> step -> update`` (fp16 uses a
    GradScaler; bf16 and fp32 have no scaler), so the order can never be got wrong at a call site."""

    def __init__(self, amp: str, device: torch.device, clip_grad: Optional[float] = None):
        if amp not in ("none", "fp16", "bf16"):
            raise ValueError(f"--amp {amp!r}: use none, fp16 or bf16")
        if amp == "fp16" and device.type != "cuda":
            raise ValueError("--amp fp16 needs a GPU (GradScaler); on CPU use --amp bf16 or none")
        self.device_type = device.type
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(amp)
        self.scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
        self.clip_grad = clip_grad

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def __call__(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, params: list[torch.Tensor],
                 update: bool) -> None:
        """Back-propagate ``loss``; on the last micro-batch of the step (``update``) clip, step and zero grads."""
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        if not update:
            return
        if self.scaler is not None:
            if self.clip_grad:
                self.scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, self.clip_grad)
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            if self.clip_grad:
                torch.nn.utils.clip_grad_norm_(params, self.clip_grad)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def build_loss(label_smoothing: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy with label smoothing for class indices; soft-target cross-entropy for mixed (float) targets."""
    def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.is_floating_point():
            return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        return F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)
    return loss_fn


# -- preemption ---------------------------------------------------------------------------------------------------
class StopFlag:
    """Set by SIGTERM/SIGUSR1 (SLURM preemption, torchrun's forwarded SIGTERM) and SIGINT (Ctrl-C); the loop stops
    at the next optimizer-step boundary on which every rank agrees, saves and exits. A second SIGINT raises
    ``KeyboardInterrupt`` at once (train.py exits 130 without saving)."""

    def __init__(self) -> None:
        self.signal: Optional[int] = None
        self._previous: dict = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, getattr(signal, "SIGUSR1", None), signal.SIGINT):
            if sig is not None:
                self._previous[sig] = signal.signal(sig, self._handler)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            if self.signal is not None:
                raise KeyboardInterrupt
            sys.stderr.write("interrupted: saving at the next optimizer step, then exiting (Ctrl-C again exits at "
                             "once without saving)\n")
        self.signal = signum

    @property
    def raised(self) -> bool:
        return self.signal is not None


# -- the loop ------------------------------------------------------------------------------------------------------
@dataclass
class LoopState:
    """The position and running counters of a run (saved in every checkpoint)."""
    epoch: int = 0
    step: int = 0  # optimizer steps taken
    nonfinite_run: int = 0  # non-finite step losses in a row (rank-averaged)
    nonfinite_total: int = 0
    epoch_loss_sum: float = 0.0  # finite step losses of the current epoch read so far
    epoch_loss_n: int = 0
    elapsed_s: float = 0.0  # training wall time of earlier (interrupted) processes
    history_logged: int = 0  # scheduler history entries already in events.jsonl
    final_top1: Optional[float] = None
    final_top5: Optional[float] = None
    best_top1: Optional[float] = None
    best_top5: Optional[float] = None
    best_epoch: Optional[int] = None
    images_per_s: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class EpochResult:
    status: str  # "done", "preempted" or "diverged"
    batch_index: int  # the next micro-batch of the epoch (for a mid-epoch checkpoint)
    train_loss: Optional[float]
    last_lr: Optional[float]  # the LR the epoch's last step used
    images: int
    seconds: float


def train_one_epoch(model: nn.Module, train: Iterable, optimizer: torch.optim.Optimizer, scheduler: Any,
                    amp: AmpGrad, loss_fn: Callable, state: LoopState, *, steps_per_epoch: int, accum_steps: int,
                    batch_size: int, info: DistInfo, logger: RunLogger, args: argparse.Namespace,
                    stop: StopFlag, start_batch: int = 0, max_steps: Optional[int] = None,
                    total_steps: Optional[int] = None) -> EpochResult:
    """Train one epoch from micro-batch ``start_batch``: ``accum_steps`` micro-batches make one optimizer step of
    ``batch_size`` images (all ranks together); the scheduler sees each optimizer step's loss (its micro-batch mean,
    on the device). Stops early on preemption, divergence, or after ``max_steps`` optimizer steps in all."""
    model.train()
    device = info.device
    params = [p for p in model.parameters() if p.requires_grad]
    channels_last = getattr(args, "channels_last", False)
    ddp = isinstance(model, nn.parallel.DistributedDataParallel)
    epoch = state.epoch
    first = start_batch // accum_steps
    losses = torch.zeros(steps_per_epoch, device=device)  # this epoch's step losses, read at log intervals
    lrs: list[float] = [0.0] * steps_per_epoch
    flushed = first
    t0 = time.perf_counter()
    steps_at_start = state.step
    status, s = "done", first - 1
    step_loss: Optional[torch.Tensor] = None

    def flush(upto: int) -> bool:
        """Write steps ``flushed .. upto-1`` of this epoch; return True if the run diverged."""
        nonlocal flushed
        if upto <= flushed:
            return False
        values = all_reduce_mean(losses[flushed:upto], info).tolist()  # the one host read per log interval
        rows, bad = [], []
        for k, loss in enumerate(values):
            idx = flushed + k
            rows.append((epoch * steps_per_epoch + idx, epoch, lrs[idx], loss))
            if math.isfinite(loss):
                state.nonfinite_run = 0
                state.epoch_loss_sum += loss
                state.epoch_loss_n += 1
            else:
                state.nonfinite_run += 1
                state.nonfinite_total += 1
                bad.append(epoch * steps_per_epoch + idx)
        logger.log_steps(rows)
        flushed = upto
        if bad:
            logger.log_event({"type": "nonfinite", "epoch": epoch, "step": bad[-1], "count": len(bad),
                              "consecutive": state.nonfinite_run, "total": state.nonfinite_total})
            logger.warning(f"non-finite training loss at {len(bad)} step(s) up to step {bad[-1]} "
                           f"({state.nonfinite_run} in a row, {state.nonfinite_total} in all)")
        done_steps = state.step - steps_at_start
        elapsed = time.perf_counter() - t0
        if total_steps:
            rate = done_steps / max(elapsed, 1e-9)
            eta = (total_steps - state.step) / rate if rate > 0 else float("nan")
            finite = [v for v in values if math.isfinite(v)]
            logger.info(f"epoch {epoch} [{upto:>{len(str(steps_per_epoch))}}/{steps_per_epoch} "
                        f"{100.0 * state.step / total_steps:5.1f}%] step {state.step} lr {lrs[upto - 1]:.3e} "
                        f"loss {(sum(finite) / len(finite)) if finite else float('nan'):.4f} "
                        f"{done_steps * batch_size / max(elapsed, 1e-9):.0f} img/s ETA {_hms(eta)}")
        return state.nonfinite_run >= args.max_nonfinite > 0

    for i, (x, y) in enumerate(train, start=start_batch):
        if i >= steps_per_epoch * accum_steps:  # a loader with a trailing partial step: it is not a step
            break
        k = i % accum_steps
        last = k == accum_steps - 1
        s = i // accum_steps
        if k == 0:
            lrs[s] = float(optimizer.param_groups[0]["lr"])  # the LR this step uses (set by the scheduler)
            step_loss = None
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        sync = contextlib.nullcontext() if (last or not ddp) else model.no_sync()
        with sync:
            with amp.autocast():
                loss = loss_fn(model(x), y)
            amp(loss / accum_steps if accum_steps > 1 else loss, optimizer, params, update=last)
        micro = loss.detach().float()
        step_loss = micro if step_loss is None else step_loss + micro  # out of place: the scheduler keeps it
        if not last:
            continue
        if accum_steps > 1:  # without accumulation the micro-batch loss is the step loss: no extra kernel
            step_loss = step_loss / accum_steps
        losses[s] = step_loss
        scheduler.step(step_loss)
        state.step += 1
        history = getattr(scheduler, "history", ())  # pure schedules may keep none
        for entry in history[state.history_logged:]:
            logger.log_event(entry)
            if entry.get("type") == "test":
                p_min = " ".join(f"{p:.2f}" for p in entry.get("p_min", []))
                logger.info(f"AutoWU test at step {entry['step']} (epoch {entry['epoch']}): P_min [{p_min}], "
                            f"{entry['votes']} votes, {'passed' if entry['passed'] else 'not passed'} "
                            f"({entry['consecutive']} in a row)")
            elif entry.get("type") == "switch":
                logger.info(f"AutoWU switch at step {entry['step']} (epoch {entry['epoch']}): t*={entry['t_star']:.1f}"
                            f", decay from lr {entry['lr']:.4g} ({entry['reason']})")
        state.history_logged = len(history)
        at_end = s + 1 == steps_per_epoch
        hit_max = max_steps is not None and state.step >= max_steps
        if (s + 1) % args.log_interval == 0 or at_end or hit_max:
            if flush(s + 1):
                status = "diverged"
                break
        if any_rank(stop.raised, info):
            flush(s + 1)
            status = "preempted"
            break
        if hit_max:
            status = "done" if at_end else "stopped"
            break
    flush(s + 1)
    seconds = time.perf_counter() - t0
    images = (s + 1 - first) * batch_size
    train_loss = state.epoch_loss_sum / state.epoch_loss_n if state.epoch_loss_n else None
    last_lr = lrs[s] if s >= first else None
    return EpochResult(status, (s + 1) * accum_steps, train_loss, last_lr, images, seconds)


@torch.no_grad()
def evaluate(model: nn.Module, val: Iterable, amp: AmpGrad, info: DistInfo, channels_last: bool = False) -> dict:
    """Validation loss (plain cross-entropy), top-1 and top-5 (%) over every rank's shard."""
    model.eval()
    device = info.device
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, top-1 hits, top-5 hits, samples
    for x, y in val:
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with amp.autocast():
            logits = model(x)
        logits = logits.float()
        maxk = min(5, logits.shape[-1])
        top = logits.topk(maxk, dim=-1).indices
        hits = top.eq(y.view(-1, 1))
        totals += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(),
                               hits[:, :1].sum().double(), hits.sum().double(),
                               torch.tensor(float(y.shape[0]), dtype=torch.float64, device=device)])
    loss_sum, top1, top5, n = all_reduce_sum(totals, info).tolist()
    if n == 0:
        return {"val_loss": None, "top1": None, "top5": None}
    return {"val_loss": loss_sum / n, "top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n}


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
