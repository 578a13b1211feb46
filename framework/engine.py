"""The loop bodies: :func:`train_one_epoch` (gradient accumulation, AMP, DDP ``no_sync``, per-step scheduler calls)
and :func:`evaluate` (top-1/top-5 over the sharded validation set).

No device-to-host synchronisation happens per optimizer step: step losses go into a device buffer that is read (and
averaged over ranks) every ``log_interval`` steps and at the epoch end; the LR a step used is a host float already.
Divergence (non-finite losses) is judged on those rank-averaged values, so every rank takes the same decision.
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
import types
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from autowu.factory import ScheduleEntry

from .batch import BatchSplit
from .distributed import DistInfo, all_reduce_mean, all_reduce_sum, any_rank
from .logger import RunLogger
from .optim import effective_lr
from .runspec import Position


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


def cpu_bf16_native() -> bool:
    """Whether this CPU runs bf16 matrix products and convolutions in oneDNN (AVX-512 BF16 or AMX). Without it,
    PyTorch falls back to reference kernels (``aten::_slow_conv2d``, a scalar bf16 GEMM): on a 2-core AMD EPYC with
    AVX2 only, 1 thread, 7.9x slower than fp32 for ``fmnist_resnet_s2`` and 13-16x for ``fmnist_mlp`` (measured)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _in_cpu_bf16_autocast(input: torch.Tensor) -> bool:
    return (input.device.type == "cpu" and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16)


def _rounded(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.to(torch.bfloat16).float()


def _bf16_conv_forward(self: nn.Module, input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]):
    """A convolution under CPU bf16 autocast, computed as an fp32 convolution of bf16-rounded operands, its output
    rounded to bf16: the numbers of a bf16 kernel (a product of two bf16 values is exact in fp32, the sums are fp32
    as in oneDNN's bf16 kernels), up to the order of the sums. In the backward, the gradients of the input and the
    weight pass through the same roundings, so they are bf16 like a bf16 kernel's. Outside bf16 autocast: the
    module's own forward."""
    if not _in_cpu_bf16_autocast(input):
        return type(self)._conv_forward(self, input, weight, bias)
    with torch.autocast("cpu", enabled=False):
        out = type(self)._conv_forward(self, _rounded(input), _rounded(weight), _rounded(bias))
    return out.to(torch.bfloat16)


def _bf16_linear_forward(self: nn.Linear, input: torch.Tensor) -> torch.Tensor:
    """``nn.Linear`` under CPU bf16 autocast the same way as :func:`_bf16_conv_forward`."""
    if not _in_cpu_bf16_autocast(input):
        return nn.Linear.forward(self, input)
    with torch.autocast("cpu", enabled=False):
        out = F.linear(_rounded(input), _rounded(self.weight), _rounded(self.bias))
    return out.to(torch.bfloat16)


def emulate_bf16(model: nn.Module) -> int:
    """On a CPU without bf16 kernels (:func:`cpu_bf16_native`), make the convolutions and ``nn.Linear`` layers of
    ``model`` compute bf16 autocast's numbers with fp32 kernels (:func:`_bf16_conv_forward`); returns how many
    modules it changed. Subclasses with a forward of their own are left as they are. The parameters, the state dict
    and the modules' classes stay as they were. ``build_model`` calls it for ``--amp bf16`` on the CPU;
    ``AUTOWU_BF16=native`` keeps PyTorch's own (slow) kernels, for comparison."""
    if cpu_bf16_native() or os.environ.get("AUTOWU_BF16") == "native":
        return 0
    n = 0
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd) and not isinstance(m, nn.modules.conv._ConvTransposeNd):
            m._conv_forward = types.MethodType(_bf16_conv_forward, m)
            n += 1
        elif isinstance(m, nn.Linear) and type(m).forward is nn.Linear.forward:
            m.forward = types.MethodType(_bf16_linear_forward, m)
            n += 1
    return n


def bf16_kernels(amp: str, device: torch.device) -> Optional[str]:
    """What computes a run's bf16 products (recorded in env.json as ``bf16_kernels``): ``native`` (oneDNN's bf16
    kernels, or a GPU's), ``emulated`` (:func:`emulate_bf16`), ``reference`` (PyTorch's slow kernels, asked for
    with ``AUTOWU_BF16=native``), or None when the run is not bf16."""
    if amp != "bf16":
        return None
    if device.type != "cpu" or cpu_bf16_native():
        return "native"
    return "reference" if os.environ.get("AUTOWU_BF16") == "native" else "emulated"


def build_loss(label_smoothing: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy with label smoothing for class indices; soft-target cross-entropy for mixed (float) targets."""
    def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.is_floating_point():
            return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        return F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)
    return loss_fn


def probe_loss(amp: AmpGrad, loss_fn: Callable) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """``loss(model, x, y)``: the training loss under the run's autocast (what AutoLR's probes evaluate)."""
    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with amp.autocast():
            return loss_fn(model(x), y)
    return loss


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
class TrainStats:
    """The loop's running counters across steps (saved in every checkpoint, so a resumed run continues them)."""
    nonfinite_run: int = 0  # non-finite step losses in a row (rank-averaged)
    nonfinite_total: int = 0
    epoch_loss_sum: float = 0.0  # finite step losses of the current epoch read so far
    epoch_loss_n: int = 0
    history_logged: int = 0  # scheduler history entries already in events.jsonl

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def new_epoch(self) -> None:
        self.epoch_loss_sum, self.epoch_loss_n = 0.0, 0


@dataclass
class EpochResult:
    status: str  # "done", "stopped" (max_steps), "preempted" or "diverged"
    train_loss: Optional[float]
    last_lr: Optional[float]  # the LR the epoch's last step used
    images: int
    seconds: float


def train_one_epoch(model: nn.Module, train: Iterable, optimizer: torch.optim.Optimizer, scheduler: Any,
                    amp: AmpGrad, loss_fn: Callable, pos: Position, stats: TrainStats, *, split: BatchSplit,
                    steps_per_epoch: int, info: DistInfo, logger: RunLogger, stop: StopFlag,
                    describe: Optional[ScheduleEntry] = None, log_interval: int = 50, max_nonfinite: int = 0,
                    channels_last: bool = False, max_steps: Optional[int] = None,
                    total_steps: Optional[int] = None) -> EpochResult:
    """Train epoch ``pos.epoch`` from its sample ``pos.sample``: ``split.accum_steps`` micro-batches make one
    optimizer step of ``split.batch_size`` images (all ranks together); the scheduler sees each optimizer step's loss
    (its micro-batch mean, on the device). ``pos`` and ``stats`` advance with every step. Stops early on preemption
    (``stop``), divergence (``max_nonfinite`` non-finite losses in a row), or after ``max_steps`` steps in all.
    ``describe``: the schedule's registry entry (console lines and TensorBoard scalars for its decisions)."""
    model.train()
    device = info.device
    params = [p for p in model.parameters() if p.requires_grad]
    ddp = isinstance(model, nn.parallel.DistributedDataParallel)
    accum_steps, batch_size = split.accum_steps, split.batch_size
    epoch = pos.epoch
    start_batch = split.micro_batches(pos.sample)
    first = start_batch // accum_steps
    losses = torch.zeros(steps_per_epoch, device=device)  # this epoch's step losses, read at log intervals
    lrs: list[float] = [0.0] * steps_per_epoch  # the LR each step used (group 0)
    sched_lrs: list[float] = [0.0] * steps_per_epoch  # the schedule's own LR for it (before group ratios)
    flushed = first
    t0 = time.perf_counter()
    steps_at_start = pos.step
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
            rows.append((epoch * steps_per_epoch + idx, epoch, lrs[idx], loss, sched_lrs[idx]))
            if math.isfinite(loss):
                stats.nonfinite_run = 0
                stats.epoch_loss_sum += loss
                stats.epoch_loss_n += 1
            else:
                stats.nonfinite_run += 1
                stats.nonfinite_total += 1
                bad.append(epoch * steps_per_epoch + idx)
        logger.log_steps(rows)
        flushed = upto
        if bad:
            logger.log_event({"type": "nonfinite", "epoch": epoch, "step": bad[-1], "count": len(bad),
                              "consecutive": stats.nonfinite_run, "total": stats.nonfinite_total})
            logger.warning(f"non-finite training loss at {len(bad)} step(s) up to step {bad[-1]} "
                           f"({stats.nonfinite_run} in a row, {stats.nonfinite_total} in all)")
        done_steps = pos.step - steps_at_start
        elapsed = time.perf_counter() - t0
        if total_steps:
            rate = done_steps / max(elapsed, 1e-9)
            eta = (total_steps - pos.step) / rate if rate > 0 else float("nan")
            finite = [v for v in values if math.isfinite(v)]
            logger.info(f"epoch {epoch} [{upto:>{len(str(steps_per_epoch))}}/{steps_per_epoch} "
                        f"{100.0 * pos.step / total_steps:5.1f}%] step {pos.step} lr {sched_lrs[upto - 1]:.3e} "
                        f"loss {(sum(finite) / len(finite)) if finite else float('nan'):.4f} "
                        f"{done_steps * batch_size / max(elapsed, 1e-9):.0f} img/s ETA {_hms(eta)}")
        return stats.nonfinite_run >= max_nonfinite > 0

    for i, (x, y) in enumerate(train, start=start_batch):
        if i >= steps_per_epoch * accum_steps:  # a loader with a trailing partial step: it is not a step
            break
        k = i % accum_steps
        last = k == accum_steps - 1
        s = i // accum_steps
        if k == 0:
            lrs[s] = effective_lr(optimizer.param_groups[0])  # the LR this step uses (Prodigy, D-Adapt: d * lr)
            sched_lrs[s] = float(getattr(scheduler, "last_schedule_lr", lrs[s]))
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
        pos.step += 1
        pos.sample = (s + 1) * batch_size
        history = getattr(scheduler, "history", ())  # a plain torch scheduler keeps none
        for entry in history[stats.history_logged:]:
            line = describe.describe(entry) if describe else None
            logger.log_event(entry, describe.scalars(entry) if describe else None)
            if line:
                logger.info(line)
        stats.history_logged = len(history)
        at_end = s + 1 == steps_per_epoch
        hit_max = max_steps is not None and pos.step >= max_steps
        if (s + 1) % log_interval == 0 or at_end or hit_max:
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
    train_loss = stats.epoch_loss_sum / stats.epoch_loss_n if stats.epoch_loss_n else None
    last_lr = lrs[s] if s >= first else None
    return EpochResult(status, train_loss, last_lr, images, seconds)


BN_RECOMPUTE_MAX_BATCHES = 50  # micro-batches per recompute, at most one epoch's (train.py)


def batchnorm_recompute_batches(micro_batches_per_epoch: int) -> int:
    """The micro-batches one :func:`recompute_batchnorm` runs: at most 50, at most one epoch's."""
    return min(BN_RECOMPUTE_MAX_BATCHES, micro_batches_per_epoch)


def validates(epoch: int, val_interval: int, epochs: int) -> bool:
    """Whether train.py validates after ``epoch`` (0-based): every ``val_interval`` epochs and after the last."""
    return (epoch + 1) % val_interval == 0 or epoch + 1 == epochs


def batchnorm_recompute_forwards(epochs: int, val_interval: int, micro_batches_per_epoch: int) -> int:
    """The forward passes :func:`recompute_batchnorm` spends in a run with Schedule-Free's modes (before each
    validation; a model with BatchNorm): the cost its README's recipe adds to training, counted on results pages."""
    evaluations = sum(validates(e, val_interval, epochs) for e in range(epochs))
    return evaluations * batchnorm_recompute_batches(micro_batches_per_epoch)


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, batches, amp: "AmpGrad", device: torch.device, channels_last: bool,
                        max_batches: int) -> None:
    """BatchNorm's running statistics for the weights the model holds now (Schedule-Free's averaged point): up to
    ``max_batches`` training micro-batches forward in train mode, no gradients (the Schedule-Free README's recipe;
    at most one epoch's worth). A no-op for a model without BatchNorm."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return
    was_training = model.training
    model.train()
    batches.set_epoch(0)
    for i, (x, _) in enumerate(batches):
        if i >= max_batches:
            break
        x = x.to(device, non_blocking=True)
        if channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with amp.autocast():
            model(x)
    model.train(was_training)


@torch.no_grad()
def evaluate(model: nn.Module, val: Iterable, amp: AmpGrad, info: DistInfo, channels_last: bool = False,
             stop: Optional[StopFlag] = None) -> dict:
    """Validation loss (plain cross-entropy), top-1 and top-5 (%) over every rank's shard. With ``stop``: when it is
    raised on any rank (checked before every batch), return ``{"stopped": True}`` at once, so a preempted run saves
    within one validation batch of the signal."""
    model.eval()
    device = info.device
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, top-1 hits, top-5 hits, samples
    for x, y in val:
        if stop is not None and any_rank(stop.raised, info):
            return {"stopped": True}
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
