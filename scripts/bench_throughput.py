#!/usr/bin/env python
"""Training throughput of the framework's loop against timm's training step, on synthetic data held on the device.

    python scripts/bench_throughput.py -c configs/fashion_mnist_resnet.yaml --sched autowu-cos --device cpu
    python scripts/bench_throughput.py -c configs/cifar10_resnet18.yaml --batch-size 64 --steps 3 --windows 2
    python scripts/bench_throughput.py -c configs/cifar10_resnet18.yaml --device cuda --amp bf16 --channels-last \\
        --steps 50 --windows 5 [--compile]

Every train.py flag means the same here (the YAML of ``-c`` and the command line are parsed by the same code), and
the model, optimizer, schedule, AMP helper and loss come from the same framework functions train.py calls. Our side
runs :func:`framework.engine.train_one_epoch` itself, one call per timed window, on micro-batches that already sit on
the device at the config's resolution, so the figures measure compute and the loop, not the loader
(``scripts/bench_loader.py`` measures the loader).

The reference is timm's own training step (the loop of timm's ``train.py``/``train_one_epoch``, built only from timm
pieces): the same model created the same way, the same batch, micro-batch, precision and memory format, the
optimizer from ``timm.optim.create_optimizer_v2`` with the same optimizer type and hyperparameters, timm's cosine
schedule stepped per update, ``NativeScaler`` for fp16, and ``loss.item()`` after every micro-batch as timm's
single-process loop does. Windows of the two alternate so that load from other processes hits both alike.

Printed: optimizer steps/s and images/s (median of ``--windows`` windows of ``--steps`` steps, after
``--warmup-steps``), the ratio ours/timm, host reads (device->host synchronisations on a GPU) and ATen operators
(about the kernel launches on a GPU) per step of each loop, inside and outside ``optimizer.step``, and the share of our step time that AutoWU takes: its per-step ``step(loss)`` plus its epoch-end GP test amortised
over an epoch of ``--steps-per-epoch`` steps (default: the dataset's training-set size / batch). On a GPU the clock
is read only after ``torch.cuda.synchronize()`` at the window edges; cuDNN autotuning and TF32 matmuls are switched
on for both sides, as timm's ``train.py`` does.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import train  # noqa: E402  (train.py's parser and argument checks: the benchmark runs what a run would)
from framework.config import ConfigError, parse_args  # noqa: E402
from framework.distributed import DistInfo, init_distributed  # noqa: E402
from framework.augment import uses_mixup  # noqa: E402
from framework.batch import BatchError, BatchSplit, split_batch  # noqa: E402
from framework.datasets import DATASETS  # noqa: E402
from framework.engine import AmpGrad, StopFlag, TrainStats, train_one_epoch  # noqa: E402
from framework.logger import RunLogger  # noqa: E402
from framework.optim import create_schedule  # noqa: E402
from framework.wiring import wire_training  # noqa: E402
from framework.runspec import Position  # noqa: E402
HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


def get_args_parser() -> argparse.ArgumentParser:
    parser = train.get_args_parser()
    parser.description = __doc__.split("\n")[0]
    g = parser.add_argument_group("benchmark")
    g.add_argument("--steps", type=int, default=20, help="optimizer steps per timed window")
    g.add_argument("--windows", type=int, default=5, help="timed windows per side (the median is reported)")
    g.add_argument("--warmup-steps", type=int, default=5, help="untimed optimizer steps per side first")
    g.add_argument("--steps-per-epoch", type=int, default=None,
                   help="epoch length for AutoWU (default: training-set size / batch)")
    g.add_argument("--no-timm", action="store_true", help="time only our loop")
    g.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="wall: elapsed time (the figure to report); cpu: CPU seconds of this process, which other "
                        "processes on a shared machine barely disturb (CPU device only; use with OMP_NUM_THREADS=1, "
                        "as idle OpenMP threads spin and count)")
    return parser


# -- what both sides share ------------------------------------------------------------------------------------------
def resolve(args: argparse.Namespace, info: DistInfo) -> tuple[int, int, int, int, int]:
    """Check the config as train.py does; return (num_classes, in_chans, img_size, accum_steps, steps_per_epoch)."""
    for name in ("steps", "windows"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.warmup_steps < 0:
        raise ConfigError(f"--warmup-steps must be >= 0, got {args.warmup_steps}")
    args.output = args.output or "(benchmark: nothing is written)"  # prepare_args insists on a run directory
    train.prepare_args(args, info)
    if args.dataset == "synthetic":
        if None in (args.num_classes, args.in_chans, args.img_size):
            raise ConfigError("--dataset synthetic needs --num-classes, --in-chans and --img-size")
        meta = (args.num_classes, args.in_chans, args.img_size)
    else:
        meta = DATASETS[args.dataset].shape
    num_classes, in_chans, img_size = (v if v is not None else m
                                       for v, m in zip((args.num_classes, args.in_chans, args.img_size), meta))
    try:
        split = split_batch(args.batch_size, info.world_size, args.micro_batch, even=uses_mixup(args))
    except BatchError as e:
        raise ConfigError(str(e)) from None
    args.micro_batch, accum = split.micro_batch, split.accum_steps  # the micro-batch a run would use
    steps_per_epoch = args.steps_per_epoch
    if steps_per_epoch is None:
        dataset = DATASETS.get(args.dataset)
        images = args.train_subset or (dataset.train_size if dataset else args.synthetic_train_size)
        steps_per_epoch = max(1, images // args.batch_size)
    if steps_per_epoch < 1:
        raise ConfigError(f"--steps-per-epoch must be >= 1, got {steps_per_epoch}")
    return num_classes, in_chans, img_size, accum, steps_per_epoch


def new_model(args: argparse.Namespace, num_classes: int, in_chans: int, img_size: int,
              device: torch.device) -> nn.Module:
    """The model as train.py builds it (framework.models.build_model)."""
    from framework.models import build_model
    return build_model(args, num_classes, in_chans, img_size, device)


class DeviceBatches:
    """``n`` micro-batches that are the same device-resident tensors: the engine's loop with no loader cost."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, n: int):
        self.x, self.y, self.n = x, y, n

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(self.n):
            yield self.x, self.y


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- our side: the framework exactly as train.py wires it -----------------------------------------------------------
class Ours:
    """Model, optimizer, schedule, AMP helper and loss from the framework; each window is one train_one_epoch call."""

    name = "ours"

    def __init__(self, args: argparse.Namespace, info: DistInfo, dims: tuple[int, int, int], accum: int,
                 steps_per_epoch: int, x: torch.Tensor, y: torch.Tensor):
        self.args, self.info, self.accum, self.x, self.y = args, info, accum, x, y
        self.model = new_model(args, *dims, info.device)
        self.amp = AmpGrad(args.amp, info.device, args.clip_grad)
        parts = wire_training(args, self.model, self.amp, steps_per_epoch,
                              probe_batches=lambda: iter(DeviceBatches(x, y, 1_000_000)), forwards_per_step=accum)
        self.optimizer, self.loss_fn, self.scheduler, self.schedule = (parts.optimizer, parts.loss_fn,
                                                                       parts.scheduler, parts.schedule)
        self.schedule.prepare(self.scheduler)  # as train.py before the first step (the LR range test; else nothing)
        if args.compile:
            self.model = torch.compile(self.model)
        self.pos, self.stats = Position(), TrainStats()
        self.split = BatchSplit(args.batch_size, args.micro_batch, info.world_size, accum)
        self.logger = RunLogger("(benchmark)", enabled=False)  # disabled: writes nothing, like a rank > 0
        self.stop = StopFlag()

    def run(self, steps: int) -> None:
        self.pos.sample = 0  # each window is an "epoch" of ``steps`` steps
        result = train_one_epoch(self.model, DeviceBatches(self.x, self.y, steps * self.accum), self.optimizer,
                                 self.scheduler, self.amp, self.loss_fn, self.pos, self.stats, split=self.split,
                                 steps_per_epoch=steps, info=self.info, logger=self.logger, stop=self.stop,
                                 describe=self.schedule, log_interval=self.args.log_interval,
                                 max_nonfinite=self.args.max_nonfinite, channels_last=self.args.channels_last)
        if result.status != "done":
            raise RuntimeError(f"our training loop stopped early ({result.status}) during the benchmark")


# -- the reference: timm's training step -----------------------------------------------------------------------------
class Timm:
    """The single-process loop of timm's ``train_one_epoch`` (timm/train.py), built only from timm pieces."""

    name = "timm"

    def __init__(self, args: argparse.Namespace, info: DistInfo, dims: tuple[int, int, int], accum: int,
                 steps_per_epoch: int, x: torch.Tensor, y: torch.Tensor):
        from timm.loss import LabelSmoothingCrossEntropy
        from timm.optim import create_optimizer_v2
        from timm.scheduler import create_scheduler_v2
        from timm.utils import AverageMeter, NativeScaler
        self.args, self.device, self.accum, self.x, self.y = args, info.device, accum, x, y
        self.model = new_model(args, *dims, info.device)
        self.optimizer = create_optimizer_v2(self.model, **timm_optimizer_kwargs(args))
        self.scheduler, _ = create_scheduler_v2(self.optimizer, sched="cosine", num_epochs=args.epochs,
                                                warmup_epochs=int(args.warmup_epochs), step_on_epochs=False,
                                                updates_per_epoch=steps_per_epoch)
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.amp)
        self.autocast: Callable[[], Any] = ((lambda: torch.autocast(self.device.type, dtype=dtype)) if dtype
                                            else contextlib.nullcontext)
        # timm: the loss scaler only for float16 on CUDA; bf16 and fp32 step the optimizer directly
        self.scaler = NativeScaler(device=self.device.type) if dtype == torch.float16 else None
        self.loss_fn = (LabelSmoothingCrossEntropy(smoothing=args.label_smoothing) if args.label_smoothing
                        else nn.CrossEntropyLoss())
        if args.compile:
            self.model = torch.compile(self.model)
        self.losses = AverageMeter()
        self.num_updates = 0

    def run(self, steps: int) -> None:
        from timm.models import model_parameters
        from timm.utils import dispatch_clip_grad
        model, optimizer, args, accum = self.model, self.optimizer, self.args, self.accum
        model.train()
        for _ in range(steps):
            for k in range(accum):
                need_update = k == accum - 1
                inp, target = self.x.to(self.device), self.y.to(self.device)
                if args.channels_last:
                    inp = inp.contiguous(memory_format=torch.channels_last)
                with self.autocast():
                    loss = self.loss_fn(model(inp), target)
                if accum > 1:
                    loss = loss / accum
                if self.scaler is not None:
                    self.scaler(loss, optimizer, clip_grad=args.clip_grad, parameters=model_parameters(model),
                                need_update=need_update)
                else:
                    loss.backward()
                    if need_update:
                        if args.clip_grad is not None:
                            dispatch_clip_grad(model_parameters(model), value=args.clip_grad)
                        optimizer.step()
                self.losses.update(loss.item() * accum, inp.size(0))  # timm, single process: a host read per batch
            self.num_updates += 1
            optimizer.zero_grad()
            self.scheduler.step_update(num_updates=self.num_updates, metric=self.losses.avg)


def timm_optimizer_kwargs(args: argparse.Namespace) -> dict:
    """``create_optimizer_v2`` arguments for the same optimizer and hyperparameters as framework.optim's.

    timm registers ``adamp`` with Nesterov momentum and ``wd_ratio=0.01``, and ``sgd`` as Nesterov SGD; the adamp
    package and our SGD use neither, so those are set explicitly (``momentum`` is timm's plain-momentum SGD)."""
    kw: dict[str, Any] = {"lr": args.lr, "weight_decay": args.weight_decay,
                          "filter_bias_and_bn": args.wd_exclude_bias_norm}
    if args.opt == "adamp":
        kw.update(opt="adamp", betas=tuple(args.opt_betas), eps=args.opt_eps, delta=args.adamp_delta,
                  wd_ratio=0.1, nesterov=False)
    elif args.opt == "lamb":
        kw.update(opt="lamb", betas=tuple(args.opt_betas), eps=args.opt_eps)
    elif args.opt == "sgd":
        kw.update(opt="momentum", momentum=args.momentum)
    else:
        raise ConfigError(f"--opt {args.opt!r} has no timm counterpart here")
    return kw


# -- measurements ----------------------------------------------------------------------------------------------------
def time_window(side: Any, steps: int, device: torch.device, clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds for ``steps`` optimizer steps; the device is synchronised only at the window's edges."""
    synchronize(device)
    t0 = clock()
    side.run(steps)
    synchronize(device)
    return clock() - t0


@contextlib.contextmanager
def count_host_reads(optimizer: torch.optim.Optimizer, label: Optional[Callable[[], str]] = None):
    """Count the Tensor methods that read a value back to the host (a device sync on a GPU), split into calls made
    inside ``optimizer.step`` and everywhere else. Yields ``{"loop": n, "optimizer": n}``; with ``label``, each read
    is also counted under the key ``label()`` returns at that moment (e.g. the part of the step it happened in)."""
    counts = {"loop": 0, "optimizer": 0}
    inside = [False]
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def counting(name: str) -> Callable:
        original = originals[name]

        def wrapper(self, *a, **kw):
            counts["optimizer" if inside[0] else "loop"] += 1
            if label is not None:
                key = label()
                counts[key] = counts.get(key, 0) + 1
            return original(self, *a, **kw)
        return wrapper

    step = optimizer.step

    def counted_step(*a, **kw):
        inside[0] = True
        try:
            return step(*a, **kw)
        finally:
            inside[0] = False

    for name in HOST_READS:
        setattr(torch.Tensor, name, counting(name))
    optimizer.step = counted_step  # instance attribute: GradScaler and the loops call optimizer.step()
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
        del optimizer.step


def count_ops(side: Any) -> dict:
    """Top-level ATen operators of one optimizer step (on a GPU, roughly its kernel launches), split into those
    issued inside ``optimizer.step`` and the rest (forward, backward, the loop's own bookkeeping)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        side.run(1)
    counts = {"loop": 0, "optimizer": 0}
    for event in prof.events():
        if not event.name.startswith("aten::"):
            continue
        names, parent = [], event.cpu_parent
        while parent is not None:
            names.append(parent.name)
            parent = parent.cpu_parent
        if any(n.startswith("aten::") for n in names):
            continue  # called by another operator
        counts["optimizer" if any(n.startswith("Optimizer.step") for n in names) else "loop"] += 1
    return counts


def warmup_losses(n: int, warmup_steps: int, device: torch.device) -> list[torch.Tensor]:
    """``n`` step losses shaped like an AutoWU warmup (falling, then rising past the minimum, with noise; as in
    autowu.bench), each a 0-d float32 tensor on ``device`` as a training loop hands them to ``step(loss)``."""
    rng = np.random.default_rng(0)
    x = np.arange(n) / max(warmup_steps, n)
    curve = 2.3 - 1.8 * x + 6.0 * np.maximum(x - 0.7, 0) ** 2 + 0.15 * rng.standard_normal(n)
    return list(torch.tensor(curve, dtype=torch.float32, device=device).unbind())


def scheduler_cost(args: argparse.Namespace, optimizer: torch.optim.Optimizer, model: nn.Module,
                   steps_per_epoch: int, device: torch.device, max_epochs: int = 3) -> dict:
    """Host time of AutoWU over up to ``max_epochs`` warmup epochs fed a realistic loss curve as device tensors:
    ``step(loss)`` on ordinary steps (median), and the test steps (every ``test_every`` steps: each epoch end by
    default, ``--autowu-test-every`` / ``--autowu-max-overshoot`` otherwise) that gather the losses since the last
    test and run the GP test (median; CPU time of this thread with ``--clock cpu``), amortised as
    ``step + (test_step - step) / test_every`` per optimizer step."""
    sched_args = copy.copy(args)
    if sched_args.sched not in ("autowu-cos", "autowu-const-cos"):
        sched_args.sched = "autowu-cos"
    sched = create_schedule(sched_args, optimizer, model, steps_per_epoch)
    epochs = max(1, min(max_epochs, sched.warmup_steps // steps_per_epoch))
    n = epochs * steps_per_epoch
    losses = warmup_losses(n, sched.warmup_steps, device)
    synchronize(device)
    per_call, per_call_cpu = np.empty(n), np.empty(n)
    for i, loss in enumerate(losses):
        c0 = time.thread_time()  # outside the wall-clock window: a CPU clock read costs about as much as step()
        t0 = time.perf_counter()
        sched.step(loss)
        per_call[i] = time.perf_counter() - t0
        per_call_cpu[i] = time.thread_time() - c0
    every = sched.test_every
    ends = np.arange(every - 1, n, every)
    ordinary = np.delete(per_call, ends)
    # medians: a call that happened to be descheduled (a busy machine) must not count as scheduler work
    step_s = float(np.median(ordinary)) if ordinary.size else 0.0
    # --clock cpu: the test steps (milliseconds) in this thread's CPU time, which a busy machine barely disturbs
    test_step_s = float(np.median((per_call_cpu if args.clock == "cpu" else per_call)[ends]))
    amortized_s = step_s + (test_step_s - step_s) / every
    return {"step_us": step_s * 1e6, "test_step_ms": test_step_s * 1e3, "test_every": every,
            "amortized_us": amortized_s * 1e6, "epochs": epochs,
            "tests": sum(1 for h in sched.history if h.get("type") == "test")}


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {os.cpu_count()} cores"


def prepare(argv: Optional[list[str]] = None) -> tuple[argparse.Namespace, DistInfo, dict]:
    """Parse and check the arguments; return them, the device info and what both sides are built from
    (``dims``, ``accum``, ``steps_per_epoch`` and one device-resident micro-batch ``x``, ``y``)."""
    args = parse_args(get_args_parser(), argv)
    try:
        info = init_distributed(args.device, None)
    except RuntimeError as e:  # --device cuda without a GPU
        raise ConfigError(str(e)) from None
    if info.distributed:
        raise ConfigError("run the benchmark as one process (python, not torchrun): it times a single device")
    if args.clock == "cpu" and info.device.type != "cpu":
        raise ConfigError("--clock cpu measures CPU seconds and cannot time a GPU; use --clock wall")
    num_classes, in_chans, img_size, accum, steps_per_epoch = resolve(args, info)
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.micro_batch, in_chans, img_size, img_size, generator=gen).to(info.device)
    y = torch.randint(0, num_classes, (args.micro_batch,), generator=gen).to(info.device)
    return args, info, {"dims": (num_classes, in_chans, img_size), "accum": accum,
                        "steps_per_epoch": steps_per_epoch, "x": x, "y": y}


def main(argv: Optional[list[str]] = None) -> dict:
    """Run the benchmark; print the figures and return them."""
    args, info, built = prepare(argv)
    device, steps_per_epoch = info.device, built["steps_per_epoch"]
    in_chans, img_size, num_classes = built["dims"][1], built["dims"][2], built["dims"][0]
    accum = built["accum"]
    if device.type == "cuda":  # what timm's train.py sets; train.py should do the same (see results/)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
    try:
        sides = [Ours(args, info, **built)]
        if not args.no_timm:
            sides.append(Timm(args, info, **built))
    except ValueError as e:  # a setting the framework rejects (e.g. --amp fp16 on a CPU, an unknown model)
        raise ConfigError(str(e)) from None
    n_params = sum(p.numel() for p in sides[0].model.parameters())
    print(f"device: {describe_device(device)}; torch {torch.__version__}; host {platform.node()}")
    print(f"model {args.model} ({n_params / 1e6:.2f}M params) at {in_chans}x{img_size}x{img_size}, {num_classes} "
          f"classes; batch {args.batch_size} = {args.micro_batch} x {accum} accumulation; amp {args.amp}; "
          f"channels_last {args.channels_last}; compile {args.compile}; opt {args.opt}; sched {args.sched}; "
          f"log-interval {args.log_interval}")
    print(f"timing: {args.warmup_steps} warm-up steps, then {args.windows} windows x {args.steps} optimizer steps "
          f"per side, alternating; synthetic data on the device; clock: "
          + ("wall" if args.clock == "wall" else "CPU seconds of this process (steps/s = steps per CPU-second)"))

    reads: dict[str, dict] = {}
    ops: dict[str, dict] = {}
    counted = args.warmup_steps - 1  # the first step (lazy initialisation) is not counted
    for side in sides:  # warm-up (compilation, allocator, autotuning); host reads counted on eager runs
        if args.warmup_steps:
            side.run(1)
        if args.compile or counted < 1:
            side.run(max(counted, 0))
        else:
            with count_host_reads(side.optimizer) as counts:
                side.run(counted)
            reads[side.name] = dict(counts, steps=counted)
            ops[side.name] = count_ops(side)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    times: dict[str, list[float]] = {side.name: [] for side in sides}
    for w in range(args.windows):
        for side in (sides if w % 2 == 0 else sides[::-1]):
            times[side.name].append(time_window(side, args.steps, device, clock))

    result: dict[str, Any] = {"device": describe_device(device), "config": args.config, "model": args.model,
                              "batch_size": args.batch_size, "micro_batch": args.micro_batch, "amp": args.amp,
                              "channels_last": args.channels_last, "compile": args.compile}
    noisy = False
    for side in sides:
        secs = statistics.median(times[side.name])
        steps_per_s = args.steps / secs
        best = args.steps / min(times[side.name])
        result[side.name] = {"steps_per_s": steps_per_s, "images_per_s": steps_per_s * args.batch_size,
                             "step_ms": 1e3 * secs / args.steps, "best_steps_per_s": best,
                             "windows_steps_per_s": [args.steps / t for t in times[side.name]]}
        windows = " ".join(f"{args.steps / t:.3f}" for t in times[side.name])
        print(f"{side.name:5s} {steps_per_s:10.3f} steps/s {steps_per_s * args.batch_size:10.1f} images/s "
              f"{1e3 * secs / args.steps:9.2f} ms/step   (median; best window {best:.3f} steps/s; "
              f"windows: {windows})")
        noisy |= max(times[side.name]) > 1.2 * min(times[side.name])
    if "timm" in result:
        result["ratio"] = result["ours"]["steps_per_s"] / result["timm"]["steps_per_s"]
        result["ratio_best"] = result["ours"]["best_steps_per_s"] / result["timm"]["best_steps_per_s"]
        # windows of one round ran back to back, so their ratio is the least affected by load that comes and goes
        result["ratio_paired"] = statistics.median(t / o for o, t in zip(times["ours"], times["timm"]))
        print(f"ratio ours/timm: {result['ratio']:.3f} (medians); {result['ratio_paired']:.3f} (median of the "
              f"rounds' ratios); {result['ratio_best']:.3f} (best windows)")
    if noisy:  # other processes took the device or the CPU during some windows
        print("warning: windows of one side differ by more than 20%: the machine was busy; more --windows or a quiet "
              "machine give steadier figures (the best windows are the least disturbed)")
    if reads:  # our engine reads its loss buffer at each log interval and at the end of a train_one_epoch call
        flushes = math.ceil(counted / args.log_interval)
        print(f"host reads (device syncs on a GPU) in {counted} warm-up steps: "
              + "; ".join(f"{name} loop {r['loop']}, inside optimizer.step {r['optimizer']}" for name, r in reads.items())
              + f"  (our log flushes in these steps: {flushes}, log-interval {args.log_interval})")
    result["host_reads"] = reads
    if ops:
        print("ATen ops per optimizer step (~kernel launches on a GPU): "
              + "; ".join(f"{name} loop {c['loop']}, inside optimizer.step {c['optimizer']}" for name, c in ops.items()))
    result["ops_per_step"] = ops

    cost = scheduler_cost(args, sides[0].optimizer, sides[0].model, steps_per_epoch, device)
    share = 100.0 * cost["amortized_us"] * 1e-3 / result["ours"]["step_ms"]
    result["scheduler"] = {**cost, "steps_per_epoch": steps_per_epoch, "share_percent": share}
    print(f"AutoWU: step(loss) {cost['step_us']:.1f} us; gather + GP test {cost['test_step_ms']:.2f} ms every "
          f"{cost['test_every']} steps ({cost['tests']} tests over {cost['epochs']} epochs of {steps_per_epoch} "
          "steps); amortized "
          f"{cost['amortized_us']:.1f} us/step = {share:.4f}% of our {result['ours']['step_ms']:.2f} ms step")
    if not cost["tests"]:
        print("note: no GP test ran (the warmup, rho_w x epochs x steps per epoch, is shorter than an epoch): the "
              "figure above has no test in it; raise --epochs or lower --steps-per-epoch")
    return result


if __name__ == "__main__":
    try:
        main()
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
