#!/usr/bin/env python
"""Measure every GPU-only claim of the project in one command and write results/gpu_<device-name>.md.

At most 8 minutes on one H100/H200-class GPU, no network; the report (and a ``.json`` beside it) holds the figures,
the commands, the torch/CUDA versions and the date, and one line per check is printed.

    python scripts/gpu_check.py                          # all checks, --budget 480 s in all
    python scripts/gpu_check.py --checks 2,4             # rerun some; the report keeps the other checks' results
    python scripts/gpu_check.py --device cpu --dry-run   # every check, tiny, on the CPU (tests/test_gpu_check.py)

The checks (each catches its own failure, so one broken check does not hide the others; each has a time cap, and
the whole run stops starting checks when ``--budget`` is spent):

1. ``throughput``: ResNet-50, bf16 autocast + channels_last, synthetic ImageNet-shaped batches on the GPU, batch 256,
   AdamP, AutoWU: our training loop against timm's training step on the same model, batch and optimizer, in the
   same process, alternating windows (scripts/bench_throughput.py). Targets: ratio >= 1.0, >= 4,500 images/s.
2. ``fp16``: 400 steps of the CIFAR ResNet-18 with AutoWU under fp16 autocast and GradScaler (train.py itself, in
   this process, on synthetic 32x32 data held on the GPU): no NaN in the weights, the scaler's skipped steps
   counted (optimizer steps that never ran), the training loss falling.
3. ``syncs``: our training step (ResNet-50 bf16, AdamP, AutoWU) and then ``AutoWU.step(loss)`` alone (3 ImageNet
   epochs of losses on the GPU) under ``torch.cuda.set_sync_debug_mode("error")``, except at the log intervals and
   the epoch ends; host reads counted independently by wrapping the Tensor methods that read values back; the GP
   test's time per epoch.
4. ``gpu-data``: train.py's epoch time for the CIFAR ResNet-18 config with ``--gpu-data`` (50k synthetic 32x32
   images held on the GPU, the paper's augmentation: crop, flip, AutoAugment, Cutout). Target: <= 1 s.
5. ``compile``: ResNet-50 (as check 1) with and without ``torch.compile``: the compile time (first step) and the
   steady-state ratio, alternating windows.
6. ``jpeg``: the ImageNet input (issue 27) on generated photo JPEGs: timm's pipeline, ours on the CPU workers, and
   ``--imagenet-input gpu`` (nvJPEG batch decode and crops on the GPU), images/s each (scripts/bench_loader.py
   ``--imagenet-sample``).
7. ``sweep``: with the time left, the missing cells of tables, in order (default the convolutional proxy the screen
   chose, ``resnet_s2``: its Table 1, its grid and the automatic methods at its 16K cell; then AutoLR's Table 14 at
   the paper's budget, ``autolr_table14``; ``--table A,B``; a run with a committed record counts as done) through
   ``scripts/sweep.py --local`` with many runs sharing the GPU; the runs still going at the
   deadline get SIGTERM, save ``last.pt`` and continue on the next sweep. Their folders are packed into
   ``runs/gpu_check/<table>_runs.tar.gz`` (and, where sweep.py has ``--export``, the compact records for
   ``results/runs/`` into ``runs/gpu_check/<table>_records.tar.gz``) to bring home.

On this project's lent GPU machine (no network; python3 has torch and timm, not adamp/torch-optimizer), first here:
``bash scripts/gpu_wheels.sh`` (wheels into ``.whl/``, Fashion-MNIST into ``data/fashion-mnist``), then the device
tool's ``run`` with ``carry: [".whl", "data/fashion-mnist"]``, ``timeout_s: 420`` and the command

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 || exit; python3 scripts/gpu_check.py --budget 330 --data-dir data 2>&1 | tee $OUT/gpu_check.log; cp results/gpu_*.md results/gpu_*.json runs/gpu_check/*.tar.gz $OUT/ 2>/dev/null; true

(330 s of checks leaves room in a 15-minute lease for a machine start and a second try with ``--checks`` of those
that failed). Exit status: 0 when every check that ran finished (targets may still be missed: see the report), 1
when a check raised or timed out, 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import importlib.metadata
import importlib.util
import io
import json
import math
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SCRIPT = "scripts/gpu_check.py"
IMAGENET_STEPS_PER_EPOCH = 1_281_167 // 256  # ImageNet at batch 256: AutoWU's epoch in check 3
# check 7's tables, in order: the chosen convolutional proxy's Table 1, grid and automatic methods (issues 24, 25;
# results/proxy_screen.md chose resnet_s2), then AutoLR's Table 14 at its paper's budget (issue 26)
SWEEP_TABLES = "proxy_regime:resnet_s2,proxy_regime_grid:resnet_s2,auto_lr_proxy:resnet_s2,autolr_table14"
DRY_MODEL = ["--model", "test_resnet"]  # timm's 0.5M-parameter test ResNet: a dry run on a CPU takes seconds


def _load_script(name: str):
    """scripts/NAME.py as a module (the scripts folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"_gpu_check_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there (a private name: no clash)
    spec.loader.exec_module(module)
    return module


bench = _load_script("bench_throughput")


class UsageError(Exception):
    """Bad command line: one line, exit 2."""


class CheckTimeout(Exception):
    """A check ran past its time cap."""


# -- the checks ------------------------------------------------------------------------------------------------------
@dataclass
class Ctx:
    """What every check gets: the options, the device, a scratch directory and its own deadline."""
    opts: argparse.Namespace
    device: torch.device
    tmp: Path
    deadline: float  # time.monotonic() by which the check must be done

    @property
    def dry(self) -> bool:
        return self.opts.dry_run

    @property
    def dev(self) -> str:
        return self.device.type


def _bench_argv(ctx: Ctx, extra: list[str]) -> list[str]:
    """bench_throughput's ResNet-50 setting of checks 1, 3 and 5 (tiny images and batches on a dry run)."""
    argv = ["-c", "configs/imagenet_resnet50.yaml", "--device", ctx.dev, "--amp", "bf16", "--channels-last",
            "--batch-size", "256", "--micro-batch", "256", "--sched", "autowu-cos"]
    if ctx.dry:
        argv += DRY_MODEL + ["--img-size", "32", "--batch-size", "2", "--micro-batch", "2", "--steps-per-epoch", "10"]
    return argv + extra  # the check's own flags last: they win


def check_throughput(ctx: Ctx) -> dict:
    timing = ["--steps", "15", "--windows", "6", "--warmup-steps", "5"]
    if ctx.dry:
        timing = ["--steps", "1", "--windows", "2", "--warmup-steps", "2"]
    argv = _bench_argv(ctx, timing)
    r = bench.main(argv)
    ours, theirs = r["ours"], r["timm"]
    figures = {"ratio": r["ratio"], "ratio_rounds": r["ratio_paired"], "ratio_best": r["ratio_best"],
               "ours_images_per_s": ours["images_per_s"], "timm_images_per_s": theirs["images_per_s"],
               "ours_step_ms": ours["step_ms"], "timm_step_ms": theirs["step_ms"],
               "host_reads": r["host_reads"], "ops_per_step": r["ops_per_step"],
               "autowu_share_percent": r["scheduler"]["share_percent"],
               "autowu_test_step_ms": r["scheduler"]["test_step_ms"]}
    criteria = {"ours/timm >= 1.0": r["ratio"] >= 1.0,
                "ours >= 4,500 images/s (H100 target)": ours["images_per_s"] >= 4500}
    summary = (f"ours/timm {r['ratio']:.3f} (rounds {r['ratio_paired']:.3f}); ours {ours['images_per_s']:,.0f} "
               f"images/s, timm {theirs['images_per_s']:,.0f}; AutoWU {r['scheduler']['share_percent']:.3f}% of "
               "the step")
    return {"summary": summary, "figures": figures, "criteria": criteria,
            "commands": [f"python scripts/bench_throughput.py {shlex.join(argv)}"]}


def _run_train(argv: list[str]) -> int:
    """train.py in this process (its parser and main, as tests/conftest.py runs it)."""
    import train
    from framework.config import parse_args
    rc = train.main(parse_args(train.get_args_parser(), argv))
    if rc != 0:
        raise RuntimeError(f"train.py exited with {rc} (its error is in the output below)")
    return rc


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _synthetic_cifar(ctx: Ctx, train_size: int, val_size: int) -> list[str]:
    return ["-c", "configs/cifar10_resnet18.yaml", "--dataset", "synthetic", "--num-classes", "10", "--in-chans",
            "3", "--img-size", "32", "--synthetic-train-size", str(train_size), "--synthetic-val-size",
            str(val_size), "--gpu-data", "--workers", "0", "--device", ctx.dev, "--resume", "none"] + (
                DRY_MODEL if ctx.dry else [])


def check_fp16(ctx: Ctx) -> dict:
    from torch.optim.optimizer import register_optimizer_step_post_hook
    out = ctx.tmp / "fp16"
    if ctx.dry:  # GradScaler's fp16 path needs CUDA here (framework.engine.AmpGrad): bf16 runs the rest of it
        argv = _synthetic_cifar(ctx, 32, 16) + ["--amp", "bf16", "--batch-size", "8", "--micro-batch", "8",
                                                 "--epochs", "3", "--log-interval", "2", "--val-interval", "3"]
    else:  # 40 epochs x 10 steps: AutoWU's exponential warmup grows 1.8x per epoch, as in the demo
        argv = _synthetic_cifar(ctx, 2560, 512) + ["--amp", "fp16", "--batch-size", "256", "--micro-batch", "256",
                                                   "--epochs", "40", "--log-interval", "10", "--val-interval", "40"]
    argv += ["--sched", "autowu-cos", "--output", str(out)]
    executed = [0]

    def count(optimizer, args, kwargs):  # runs after every optimizer.step that really ran
        executed[0] += 1

    handle = register_optimizer_step_post_hook(count)
    try:
        _run_train(argv)
    finally:
        handle.remove()
    results = json.loads((out / "results.json").read_text())
    epochs = _read_jsonl(out / "epochs.jsonl")
    ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    weights = [v for v in ckpt["model"].values() if torch.is_tensor(v) and v.is_floating_point()]
    nonfinite = sum(int((~torch.isfinite(w)).sum()) for w in weights)
    steps = int(results["steps"])
    skipped = steps - executed[0]
    scale = (ckpt.get("scaler") or {}).get("scale")
    losses = [e["train_loss"] for e in epochs if e.get("train_loss") is not None]
    first, last = (losses[0], losses[-1]) if losses else (math.nan, math.nan)
    switch = results.get("switch") or {}
    figures = {"amp": "bf16 (dry run)" if ctx.dry else "fp16", "steps": steps, "optimizer_steps_run": executed[0],
               "skipped_by_scaler": skipped, "final_scale": scale, "nonfinite_weights": nonfinite,
               "train_loss_first_epoch": first, "train_loss_last_epoch": last, "status": results["status"],
               "final_top1": results.get("final_top1"), "switch": switch, "wall_time_s": results.get("wall_time_s")}
    criteria = {"run finished": results["status"] == "finished", "no NaN/inf in the weights": nonfinite == 0,
                "training loss falling (last epoch < first)": last < first}
    summary = (f"{steps} steps ({figures['amp']}), {skipped} skipped by GradScaler"
               + (f" (final scale {scale:g})" if scale is not None else "") + f", {nonfinite} non-finite weights, "
               f"train loss {first:.3f} -> {last:.3f}; AutoWU switched at step {switch.get('step')} "
               f"({switch.get('reason')}); top-1 {results.get('final_top1')}")
    return {"summary": summary, "figures": figures, "criteria": criteria,
            "commands": [f"python train.py {shlex.join(argv)}"]}


def _set_sync_mode(device: torch.device, mode: str) -> None:
    """``torch.cuda.set_sync_debug_mode``: "error" makes any device->host synchronisation raise (CUDA only; on the
    CPU there is nothing to synchronise and the host-read count below is the evidence)."""
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode(mode)


def check_syncs(ctx: Ctx) -> dict:
    import numpy as np
    from framework.optim import create_schedule
    log_interval, epoch_steps, epochs = (2, 4, 2) if ctx.dry else (5, 12, 2)
    argv = _bench_argv(ctx, ["--steps-per-epoch", str(epoch_steps), "--log-interval", str(log_interval)])
    args, info, built = bench.prepare(argv)
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as train.py
    side = bench.Ours(args, info, **built)
    if ctx.device.type != "cuda":
        side.optimizer.sync_free = True  # AdamP's GPU projection (no host read) also on the CPU, so it is the path
    side.run(epoch_steps)  # a warm-up epoch outside the check (cuDNN autotuning, allocator)

    # (a) the engine's training step: "error" from each forward until the scheduler step that ends a log interval or
    # an epoch; from there (the engine's log flush, AutoWU's epoch-end gather and test) to the next forward: allowed
    phase = ["allowed"]
    steps = [0]
    real_step = side.scheduler.step

    def scheduler_step(*a, **kw):
        steps[0] += 1
        if steps[0] % log_interval == 0 or steps[0] % epoch_steps == 0:
            phase[0] = "allowed"
            _set_sync_mode(ctx.device, "default")
        return real_step(*a, **kw)

    def before_forward(module, inputs):
        if phase[0] != "checked":
            phase[0] = "checked"
            _set_sync_mode(ctx.device, "error")

    side.scheduler.step = scheduler_step
    hook = side.model.register_forward_pre_hook(before_forward)
    t0 = time.perf_counter()
    try:
        with bench.count_host_reads(side.optimizer, label=lambda: phase[0]) as reads:
            for _ in range(epochs):
                side.run(epoch_steps)
    finally:
        _set_sync_mode(ctx.device, "default")
        hook.remove()
        del side.scheduler.step
    loop_s = time.perf_counter() - t0
    n_steps = epochs * epoch_steps
    flushes = epochs * math.ceil(epoch_steps / log_interval)
    checked, allowed = reads.get("checked", 0), reads.get("allowed", 0)

    # (b) AutoWU alone, fed 3 epochs of ImageNet-length losses on the device: only the epoch-end step may sync
    spe = 20 if ctx.dry else IMAGENET_STEPS_PER_EPOCH
    sched = create_schedule(args, side.optimizer, side.model, spe)
    n = 3 * spe
    losses = bench.warmup_losses(n, sched.warmup_steps, ctx.device)
    bench.synchronize(ctx.device)
    per_call = np.empty(n)
    mode = [""]
    with bench.count_host_reads(side.optimizer, label=lambda: mode[0]) as sreads:
        try:
            for i, loss in enumerate(losses):
                end = (i + 1) % spe == 0
                want = "allowed" if end else "checked"
                if want != mode[0]:
                    mode[0] = want
                    _set_sync_mode(ctx.device, "default" if end else "error")
                t = time.perf_counter()
                sched.step(loss)
                per_call[i] = time.perf_counter() - t
        finally:
            _set_sync_mode(ctx.device, "default")
    ends = np.arange(spe - 1, n, spe)
    step_us = float(np.median(np.delete(per_call, ends))) * 1e6
    test_ms = [float(v) * 1e3 for v in per_call[ends]]
    tests = sum(1 for h in sched.history if h.get("type") == "test")
    figures = {"loop_steps": n_steps, "log_interval": log_interval, "epoch_steps": epoch_steps,
               "loop_host_reads_in_step": checked, "loop_host_reads_at_flush_or_epoch_end": allowed,
               "engine_log_flushes": flushes, "loop_seconds": loop_s,
               "autowu_steps": n, "autowu_steps_per_epoch": spe, "autowu_host_reads_in_step": sreads.get("checked", 0),
               "autowu_host_reads_at_epoch_end": sreads.get("allowed", 0), "autowu_step_us": step_us,
               "gp_test_ms_per_epoch": test_ms, "gp_tests": tests,
               "sync_debug_mode": "error" if ctx.device.type == "cuda" else "n/a on the CPU (host reads counted)"}
    criteria = {"no host read inside a training step": checked == 0,
                "no host read in AutoWU.step(loss) between epoch ends": sreads.get("checked", 0) == 0}
    summary = (f"{n_steps} training steps under sync-debug 'error': {checked} host reads inside steps, {allowed} at "
               f"the {flushes} log flushes/epoch ends; AutoWU {n} steps: {sreads.get('checked', 0)} inside, "
               f"{step_us:.1f} us/step; epoch-end gather + GP test {', '.join(f'{v:.1f}' for v in test_ms)} ms "
               f"({spe} steps/epoch)")
    return {"summary": summary, "figures": figures, "criteria": criteria,
            "commands": [f"(in-process) scripts/bench_throughput.py's Ours on {shlex.join(argv)}"]}


def check_gpu_data(ctx: Ctx) -> dict:
    out = ctx.tmp / "gpu_data"
    if ctx.dry:
        argv = _synthetic_cifar(ctx, 64, 16) + ["--batch-size", "16", "--micro-batch", "16", "--epochs", "2"]
    else:
        argv = _synthetic_cifar(ctx, 50_000, 1_000) + ["--epochs", "3"]
    argv += ["--warmup-epochs", "1", "--val-interval", "1000", "--output", str(out)]  # the config's schedule, 3 epochs
    t0 = time.perf_counter()
    _run_train(argv)
    total = time.perf_counter() - t0
    epochs = _read_jsonl(out / "epochs.jsonl")
    times = [e["epoch_time"] for e in epochs]
    steady = times[1:] or times  # the first epoch includes cuDNN autotuning and the allocator's growth
    epoch_s = statistics.median(steady)
    images = json.loads((out / "results.json").read_text())
    figures = {"epoch_times_s": times, "epoch_time_s": epoch_s, "images_per_s": epochs[-1]["images_per_s"],
               "train_images": 64 if ctx.dry else 50_000, "run_seconds_incl_data_build": total,
               "config": "configs/cifar10_resnet18.yaml (batch 256, bf16, AdamP)", "status": images["status"]}
    criteria = {"epoch <= 1 s": epoch_s <= 1.0}
    summary = (f"epoch {epoch_s:.2f} s (median of epochs 2+; all: {', '.join(f'{t:.2f}' for t in times)}), "
               f"{epochs[-1]['images_per_s']:,.0f} images/s")
    return {"summary": summary, "figures": figures, "criteria": criteria,
            "commands": [f"python train.py {shlex.join(argv)}"]}


def check_jpeg(ctx: Ctx) -> dict:
    n, workers, batch, windows = (32, 0, 8, ["--windows", "1", "--window-batches", "1", "--warmup", "1"]) if ctx.dry \
        else (1024, min(8, os.cpu_count() or 1), 128, ["--windows", "5", "--window-batches", "4", "--warmup", "3"])
    argv = ["--imagenet-sample", str(n), "--workers", str(workers), "--batch-size", str(batch), "--device", ctx.dev,
            "--modes", "timm,fast,gpu", *windows]
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_loader.py"), *argv], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"bench_loader.py exited with {r.returncode}: {r.stderr.strip().splitlines()[-1:]}")
    rates = {m: float(v.replace(",", "")) for m, v in
             re.findall(r"^imagenet input \[(\w+)[^\]]*\].*?: ([\d,]+) images/s \(median", r.stdout, re.M)}
    figures = {"images_per_s": rates, "workers": workers, "batch": batch, "images": n,
               "fast_over_timm": rates["fast"] / rates["timm"], "gpu_over_timm": rates["gpu"] / rates["timm"]}
    criteria = {"ours >= 2x timm per worker": figures["fast_over_timm"] >= 2.0}
    summary = ", ".join(f"{m} {v:,.0f}" for m, v in rates.items()) + f" images/s ({workers} workers)"
    return {"summary": summary, "figures": figures, "criteria": criteria,
            "commands": [f"python scripts/bench_loader.py {shlex.join(argv)}"]}


def check_compile(ctx: Ctx) -> dict:
    steps, windows, warm = (1, 2, 1) if ctx.dry else (10, 5, 3)
    argv = _bench_argv(ctx, [])
    args, info, built = bench.prepare(argv)
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    eager = bench.Ours(args, info, **built)
    compiled = bench.Ours(args, info, **built)
    compiled.model = torch.compile(compiled.model, backend=ctx.opts.compile_backend)  # train.py --compile's call
    first_eager = bench.time_window(eager, 1, ctx.device)
    first_compiled = bench.time_window(compiled, 1, ctx.device)  # tracing, compiling, autotuning: the compile time
    for side in (eager, compiled):
        side.run(warm)
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    pair = [("eager", eager), ("compiled", compiled)]
    for w in range(windows):
        for name, side in (pair if w % 2 == 0 else pair[::-1]):
            times[name].append(bench.time_window(side, steps, ctx.device))
    batch = args.batch_size
    rate = {k: steps * batch / statistics.median(v) for k, v in times.items()}
    ratio = rate["compiled"] / rate["eager"]
    rounds = statistics.median(e / c for e, c in zip(times["eager"], times["compiled"]))
    figures = {"backend": ctx.opts.compile_backend, "first_step_eager_s": first_eager,
               "first_step_compiled_s": first_compiled, "eager_images_per_s": rate["eager"],
               "compiled_images_per_s": rate["compiled"], "ratio": ratio, "ratio_rounds": rounds,
               "windows_s": times, "steps_per_window": steps}
    criteria = {"compiled >= eager": ratio >= 1.0}
    summary = (f"compile (first step) {first_compiled:.1f} s vs eager first step {first_eager:.1f} s; steady "
               f"compiled/eager {ratio:.3f} (rounds {rounds:.3f}): {rate['compiled']:,.0f} vs {rate['eager']:,.0f} "
               f"images/s")
    return {"summary": summary, "figures": figures, "criteria": criteria,
            "commands": [f"python scripts/bench_throughput.py {shlex.join(argv)} --no-timm [--compile]"]}


def _sweep_counts(table: str, filters: list[str], extra: list[str]) -> tuple[int, int]:
    """(runs, pending) as ``sweep.py --dry-run`` counts them."""
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep.py"), table, "--dry-run", *filters, "--",
                        *extra], cwd=ROOT, capture_output=True, text=True, timeout=120)
    m = re.search(r"^\[sweep\] \S+: (\d+) runs, (\d+) done, (\d+) pending", r.stdout, re.M)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"sweep.py {table} --dry-run failed (exit {r.returncode}): "
                           f"{(r.stderr or r.stdout).strip()[-500:]}")
    return int(m.group(1)), int(m.group(3))


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _pack_runs(table_dir: Path, dest: Path) -> int:
    """The table's run directories as a .tar.gz (checkpoints only of unfinished runs, no TensorBoard); its size."""
    def keep(info: tarfile.TarInfo) -> Optional[tarfile.TarInfo]:
        path = Path(info.name)
        if "tb" in path.parts:
            return None
        if path.suffix == ".pt":
            run = table_dir.parent / path.parent
            if (run / "results.json").exists() or path.name != "last.pt":
                return None
        return info
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(table_dir, arcname=table_dir.name, filter=keep)
    return dest.stat().st_size


def check_sweep(ctx: Ctx) -> dict:
    """``--table``'s tables in order (comma-separated), each with the time the ones before it left."""
    tables = [t for t in ctx.opts.table.split(",") if t]
    done = []
    for table in tables:
        if done and time.monotonic() >= ctx.deadline - 60:
            done.append((table, {"skipped": "no time left", "figures": {}, "criteria": {}, "commands": []}))
            continue
        done.append((table, _sweep_table(ctx, table)))
    if len(done) == 1:
        return done[0][1]
    return {"summary": "; ".join(r.get("summary") or f"{t}: {r.get('skipped')}" for t, r in done),
            "figures": {t: r.get("figures", {}) for t, r in done},
            "criteria": {f"{t}: {k}": v for t, r in done for k, v in r.get("criteria", {}).items()},
            "commands": [c for _, r in done for c in r.get("commands", [])]}


def table_and_block(item: str) -> tuple[str, Optional[str]]:
    """``--table``'s items: ``TABLE`` or ``TABLE:BLOCK`` (only that block's runs, e.g. the proxy the screen chose)."""
    table, _, block = item.partition(":")
    return table, block or None


def _sweep_table(ctx: Ctx, item: str) -> dict:
    opts = ctx.opts
    from experiments import sweep
    table, block = table_and_block(item)
    try:
        spec = sweep.load_table(table)
        sweep.check_filters(spec, blocks=[block] if block else None)
    except sweep.TableError as e:
        return {"skipped": f"no usable table {item!r} ({e}); pass --table NAME or NAME:BLOCK"}
    runs_dir = str(ctx.tmp / "runs") if ctx.dry else opts.runs_dir
    extra = (["--smoke", "2", "--device", "cpu"] if ctx.dry  # a dry run: two steps on synthetic data, scratch folder
             else shlex.split(opts.sweep_extra.format(data_dir=opts.data_dir, device=ctx.dev)))
    only = ["--block", block] if block else []
    pending = [r for r in sweep.expand(spec, runs_dir, blocks=[block] if block else None) if not r.done]
    if ctx.dry:
        pending = pending[:1]
    total, before = _sweep_counts(table, ["--runs-dir", runs_dir, *only], extra)
    if not pending:
        return {"summary": f"{table}: all {total} runs already done", "figures": {"runs": total, "pending": 0},
                "criteria": {}, "commands": []}
    # One sweep.py per pending run, at most --jobs at once: the runs share the GPU, and sweep.py's own checks (stale
    # runs, resuming a cut run from last.pt) apply to each.
    def filters(r) -> list[str]:
        return ((["--block", r.block] if r.block else []) + ["--rows", r.row, "--columns", r.column, "--seeds",
                str(r.seed), "--runs-dir", runs_dir])

    queue = list(pending)
    running: list[tuple[Any, subprocess.Popen, Any]] = []
    logs = ctx.tmp / "sweep_logs"
    logs.mkdir(parents=True, exist_ok=True)
    failed, cut, finished = [], [], []
    start_margin = 0 if ctx.dry else 30  # no new run in the last 30 s: it would only be cut
    threads = max(1, (os.cpu_count() or 1) // opts.jobs)  # the runs share the CPU cores too
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    while queue or running:
        now = time.monotonic()
        while queue and len(running) < opts.jobs and now < ctx.deadline - start_margin:
            r = queue.pop(0)
            log = open(logs / f"{len(pending) - len(queue):03d}.log", "w")
            cmd = [sys.executable, str(ROOT / "scripts" / "sweep.py"), table, "--local", *filters(r), "--", *extra]
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    env=env)
            print(f"[sweep] started {r.name} (pid {proc.pid})", flush=True)
            running.append((r, proc, log))
        if not running:
            break
        if now >= ctx.deadline:  # train.py saves last.pt on SIGTERM; the next sweep resumes it
            for r, proc, _ in running:
                os.killpg(proc.pid, signal.SIGTERM)
                cut.append(r.name)
            for r, proc, log in running:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                log.close()
            running = []
            break
        for item in list(running):
            r, proc, log = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                ok = proc.returncode == 0 and r.done
                print(f"[sweep] {r.name}: {'finished' if ok else f'failed (exit {proc.returncode})'}", flush=True)
                (finished if ok else failed).append(r.name)
        time.sleep(0.2 if ctx.dry else 2.0)
    _, after = _sweep_counts(table, ["--runs-dir", runs_dir, *only], extra)
    table_dir = Path(runs_dir if os.path.isabs(runs_dir) else ROOT / runs_dir) / spec.name
    home = ctx.tmp if ctx.dry else ROOT / "runs" / "gpu_check"
    pack = home / f"{spec.name}_runs.tar.gz"
    size = _pack_runs(table_dir, pack) if table_dir.is_dir() else 0
    records = None
    if hasattr(sweep, "export_records") and finished:  # sweep.py --export: the compact records to commit
        dest = home / "records"
        r = subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep.py"), table, "--runs-dir", runs_dir,
                            "--export", str(dest)], cwd=ROOT, capture_output=True, text=True, timeout=300)
        print(r.stdout[-2000:] + r.stderr[-2000:], flush=True)
        if r.returncode == 0 and (dest / spec.name).is_dir():
            records = home / f"{spec.name}_records.tar.gz"
            with tarfile.open(records, "w:gz") as tar:
                tar.add(dest / spec.name, arcname=spec.name)
    for f in failed:  # the failed run's last lines, for the report
        print(f"[sweep] {f} failed; see its train.log", flush=True)
    figures = {"table": spec.name, "runs": total, "pending_before": before, "pending_after": after,
               "finished_here": finished, "cut_at_deadline": cut, "failed": failed, "not_started": len(queue),
               "jobs": opts.jobs, "train_flags": extra, "runs_archive": str(pack) if size else None,
               "runs_archive_bytes": size, "records_archive": str(records) if records else None}
    summary = (f"{spec.name}: {before} of {total} runs pending, {len(finished)} finished here, {len(cut)} cut at "
               f"the deadline (resumable), {len(failed)} failed, {len(queue)} not started, {after} still pending; "
               f"run folders in {_rel(pack)} ({size / 2**20:.1f} MiB)"
               + (f", records for results/runs/ in {_rel(records)}" if records else ""))
    criteria = {"no run failed": not failed}
    return {"summary": summary, "figures": figures, "criteria": criteria,
            "commands": [f"python scripts/sweep.py {shlex.join([table, '--local', *only, '--runs-dir', runs_dir, '--'])} "
                         f"{shlex.join(extra)}  (here: one sweep.py per run, {opts.jobs} at once)"]}


# -- running, reporting -------------------------------------------------------------------------------------------
@dataclass
class Check:
    number: int
    name: str
    run: Callable[[Ctx], dict]
    cap_s: float  # time cap on the GPU
    title: str


CHECKS = [
    Check(1, "throughput", check_throughput, 120, "ResNet-50 training throughput, ours vs timm"),
    Check(2, "fp16", check_fp16, 90, "fp16 with GradScaler and AutoWU"),
    Check(3, "syncs", check_syncs, 90, "no host syncs per step"),
    Check(4, "gpu-data", check_gpu_data, 90, "--gpu-data CIFAR ResNet-18 epoch"),
    Check(5, "compile", check_compile, 240, "torch.compile on vs off, ResNet-50"),
    Check(6, "jpeg", check_jpeg, 120, "ImageNet input: timm, ours on the CPU, nvJPEG on the GPU"),
    Check(7, "sweep", check_sweep, 0, "missing cells of the tables a CPU is slowest at (--table)"),
]
CHECK_NAMES = {c.name: c for c in CHECKS}


def parse_checks(text: str) -> list[Check]:
    chosen = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        check = next((c for c in CHECKS if item in (str(c.number), c.name)), None)
        if check is None:
            raise UsageError(f"--checks: unknown check {item!r}; use numbers 1-{len(CHECKS)} or names "
                             f"{', '.join(CHECK_NAMES)}")
        if check not in chosen:
            chosen.append(check)
    if not chosen:
        raise UsageError("--checks is empty; e.g. --checks 1,3 or --checks throughput,syncs")
    return sorted(chosen, key=lambda c: c.number)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="The checks and the command for the project's lent GPU machine: the docstring "
                                       "of scripts/gpu_check.py and README's GPU section.")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                   help="cuda (the checks); cpu only with --dry-run")
    p.add_argument("--dry-run", action="store_true",
                   help="every check with tiny models, batches and step counts (to see that the script starts)")
    p.add_argument("--checks", default=",".join(c.name for c in CHECKS),
                   help="comma-separated numbers or names (default: all): " + ", ".join(
                       f"{c.number}={c.name}" for c in CHECKS))
    p.add_argument("--budget", type=float, default=480.0,
                   help="seconds for the whole run; no check starts after it, check 7 takes what is left")
    p.add_argument("--output", default=None, help="the report (default results/gpu_<device>.md; a dry run: "
                   "runs/gpu_check/gpu_<device>_dry-run.md); a .json with the figures is written beside it")
    p.add_argument("--fresh", action="store_true",
                   help="drop the earlier results of checks not run now (default: the report keeps them)")
    p.add_argument("--data-dir", default="data", help="train.py --data-dir for check 7 (Fashion-MNIST)")
    p.add_argument("--table", default=SWEEP_TABLES,
                   help="check 7: the tables whose missing cells to run, in order, comma-separated, each TABLE or "
                   "TABLE:BLOCK (default: the tables of the proxy the screen chose, resnet_s2, then AutoLR's Table "
                   f"14 at the paper's budget; issue 26: {SWEEP_TABLES})")
    p.add_argument("--runs-dir", default="runs", help="check 7: sweep.py --runs-dir")
    p.add_argument("--jobs", type=int, default=8, help="check 7: runs at once on the GPU")
    p.add_argument("--sweep-extra", default="--device {device} --gpu-data --data-dir {data_dir}",
                   help="check 7: train.py flags for every run ({device}, {data_dir} filled in)")
    p.add_argument("--compile-backend", default=None,
                   help="check 5: torch.compile backend (default inductor, as train.py --compile; eager on a dry run)")
    return p


def parse(argv: Optional[list[str]]) -> argparse.Namespace:
    opts = get_parser().parse_args(argv)
    opts.selected = parse_checks(opts.checks)
    if not opts.budget > 0 or not math.isfinite(opts.budget):
        raise UsageError(f"--budget must be > 0 seconds (a finite number), got {opts.budget:g}")
    if opts.output and Path(opts.output).is_dir():
        raise UsageError(f"--output {opts.output} is a directory; give the report's file name (e.g. "
                         f"{Path(opts.output) / 'gpu_check.md'}; its .json is written beside it)")
    try:  # check 7's train.py flags: filled in and split now, not when the check comes
        shlex.split(opts.sweep_extra.format(device=opts.device, data_dir=opts.data_dir))
    except KeyError as e:
        raise UsageError(f"--sweep-extra {opts.sweep_extra!r}: {{{e.args[0]}}} is not filled in; the placeholders are "
                         "{device} and {data_dir}") from None
    except (ValueError, IndexError) as e:  # a lone brace, an unclosed quote
        raise UsageError(f"--sweep-extra {opts.sweep_extra!r}: {e}") from None
    if any(c.name == "sweep" for c in opts.selected):
        from experiments.tables import TableError, check_filters, load_table
        for item in [t for t in opts.table.split(",") if t] or [""]:
            table, block = table_and_block(item)
            try:
                check_filters(load_table(table), blocks=[block] if block else None)
            except TableError as e:
                raise UsageError(f"--table {item}: {e}") from None
    if opts.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {opts.jobs}")
    if opts.device == "cpu" and not opts.dry_run:
        raise UsageError("--device cpu runs only with --dry-run (the full-size checks take hours on a CPU); "
                         "run on a GPU machine, or add --dry-run to check that the script starts")
    if opts.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is visible here; run this on a GPU machine, or check the "
                         "script with --device cpu --dry-run")
    if opts.compile_backend is None:
        opts.compile_backend = "eager" if opts.dry_run else "inductor"
    return opts


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def environment(device: torch.device) -> dict:
    def version(dist: str) -> Optional[str]:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    env = {"device": device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
           "python": platform.python_version(), "timm": version("timm"), "adamp": version("adamp"),
           "torch_optimizer": version("torch-optimizer"), "numpy": version("numpy"),
           "host": platform.node(), "cpus": os.cpu_count(), "git_commit": commit,
           "uncommitted_changes": dirty}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu_memory_gib=round(props.total_memory / 2**30, 1), capability=f"{props.major}.{props.minor}",
                   multiprocessors=props.multi_processor_count)
    return env


class Tee(io.TextIOBase):
    """Writes to the console and keeps a copy (the check's output goes into the report)."""

    def __init__(self, console: Any):
        self.console, self.buffer_ = console, io.StringIO()

    def write(self, text: str) -> int:
        self.console.write(text)
        self.console.flush()
        return self.buffer_.write(text)

    def flush(self) -> None:
        self.console.flush()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.buffer_.getvalue().rstrip().splitlines()[-lines:])


def _on_alarm(signum: int, frame: Any) -> None:
    raise CheckTimeout("the check ran past its time cap")


def run_check(check: Check, ctx: Ctx) -> dict:
    """Run one check; whatever it raises becomes its result ("error"), so the next check still runs."""
    t0 = time.perf_counter()
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out, err = Tee(sys.__stdout__ if sys.stdout is None else sys.stdout), None
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(ctx.deadline - time.monotonic(), 1.0) + (120 if check.name == "sweep"
                                                                                        else 0))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            result = check.run(ctx)
    except BaseException as e:  # noqa: BLE001  (one check's failure must not hide the others; Ctrl-C still stops)
        if isinstance(e, KeyboardInterrupt):
            raise
        err = e
        result = {}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if ctx.device.type == "cuda":
            torch.cuda.set_sync_debug_mode(0)
        if check.name == "compile":
            torch._dynamo.reset()
        gc.collect()
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
    seconds = time.perf_counter() - t0
    entry = {"number": check.number, "name": check.name, "title": check.title, "seconds": round(seconds, 1),
             "run_at": started, "output_tail": out.tail()}
    if err is not None:
        kind = "timeout" if isinstance(err, CheckTimeout) else "error"
        tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        entry.update(status=kind, summary=f"{type(err).__name__}: {err}".splitlines()[0][:300],
                     traceback="\n".join(tb.rstrip().splitlines()[-25:]))
    elif "skipped" in result:
        entry.update(status="skipped", summary=result["skipped"])
    else:
        criteria = result.get("criteria", {})
        if ctx.dry:
            status = "ran"  # tiny models on a CPU: the targets do not apply
        else:
            status = "pass" if all(criteria.values()) else "miss"
        entry.update(status=status, summary=result["summary"], figures=result.get("figures", {}),
                     criteria=criteria, commands=result.get("commands", []))
    return entry


def summary_line(entry: dict) -> str:
    return (f"[gpu-check] {entry['number']} {entry['name']:<10} {entry['status'].upper():<7} {entry['summary']} "
            f"({entry['seconds']:.0f} s)")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, list) and value and all(isinstance(v, float) for v in value):
        return "[" + ", ".join(f"{v:.4g}" for v in value) + "]"
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def write_report(path: Path, meta: dict, entries: dict[str, dict]) -> None:
    """The report (markdown) and the same content as JSON beside it; rewritten after every check."""
    env = meta["environment"]
    lines = [f"# GPU check on {env['device']}{' (dry run)' if meta['dry_run'] else ''}", "",
             f"Made by `{meta['command']}` (issue 16), {meta['date']}; commit {env['git_commit']}"
             + (" with uncommitted changes" if env["uncommitted_changes"] else "") + f"; host {env['host']}, "
             f"{env['cpus']} CPUs.", "",
             f"torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, Python {env['python']}, timm "
             f"{env['timm']}, adamp {env['adamp']}, torch-optimizer {env['torch_optimizer']}"
             + (f"; {env['gpu_memory_gib']} GiB, compute capability {env['capability']}, {env['multiprocessors']} "
                "SMs" if "gpu_memory_gib" in env else "") + ".",
             f"Budget {meta['budget']:.0f} s; this run took {meta['wall_s']:.0f} s. A check this command did not run "
             "keeps its earlier result (see its date). Statuses: pass (every criterion "
             "met), miss (ran, a criterion or target missed), ran (dry run: no targets), error/timeout (the check "
             "broke; its traceback is below), skipped.", "",
             "| # | check | status | result | s | run at |", "|---|---|---|---|---:|---|"]
    ordered = sorted(entries.values(), key=lambda e: e["number"])
    for e in ordered:
        lines.append(f"| {e['number']} | {e['title']} | {e['status']} | {e['summary'].replace('|', '/')} | "
                     f"{e['seconds']:.0f} | {e['run_at']} |")
    for e in ordered:
        lines += ["", f"## {e['number']}. {e['title']} ({e['name']}): {e['status']}", "", e["summary"], ""]
        for name, ok in e.get("criteria", {}).items():
            lines.append(f"- {'met' if ok else 'MISSED'}: {name}")
        if e.get("commands"):
            lines += ["", "Equivalent command" + ("s" if len(e["commands"]) > 1 else "") + ":", ""]
            lines += [f"    {c}" for c in e["commands"]]
        if e.get("figures"):
            lines += ["", "| figure | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v).replace('|', '/')} |" for k, v in e["figures"].items()]
        if e.get("traceback"):
            lines += ["", "```", e["traceback"], "```"]
        if e.get("output_tail"):
            lines += ["", "Output (last lines):", "", "```", e["output_tail"], "```"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps({**meta, "checks": entries}, indent=1, default=str) + "\n")


def main(argv: Optional[list[str]] = None) -> int:
    try:
        opts = parse(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t_start = time.monotonic()
    end = t_start + opts.budget
    device = torch.device(opts.device)
    env = environment(device)
    name = slug(env["device"])
    path = Path(opts.output) if opts.output else (
        ROOT / "runs" / "gpu_check" / f"gpu_{name}_dry-run.md" if opts.dry_run else ROOT / "results" / f"gpu_{name}.md")
    entries: dict[str, dict] = {}
    earlier = path.with_suffix(".json")
    if not opts.fresh and earlier.exists():  # keep what the checks not run now found earlier
        try:
            report = json.loads(earlier.read_text())
            if not isinstance(report, dict):
                raise ValueError(f"a JSON {type(report).__name__}, not an object")
            checks = report.get("checks", {})
            if not isinstance(checks, dict):
                raise ValueError(f"its checks are a {type(checks).__name__}")
            entries = {k: v for k, v in checks.items() if k in CHECK_NAMES and isinstance(v, dict)}
        except (ValueError, OSError) as e:  # not JSON, not UTF-8, not an object, a directory
            print(f"error: {earlier} is not a report of this script ({str(e)[:100]}): its "
                  "results cannot be kept; move it away, give another --output, or pass --fresh to replace it",
                  file=sys.stderr)
            return 2
    command = "python " + shlex.join([SCRIPT, *(sys.argv[1:] if argv is None else argv)])
    meta = {"command": command, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "dry_run": opts.dry_run, "budget": opts.budget, "environment": env, "wall_s": 0.0}
    print(f"[gpu-check] {env['device']}; torch {env['torch']}, CUDA {env['cuda']}; checks "
          f"{', '.join(c.name for c in opts.selected)}; budget {opts.budget:.0f} s; report {path}", flush=True)
    broken = False
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        for check in opts.selected:
            left = end - time.monotonic()
            if left < (5 if opts.dry_run else 20):
                entry = {"number": check.number, "name": check.name, "title": check.title, "status": "skipped",
                         "summary": f"budget spent ({opts.budget:.0f} s)", "seconds": 0.0, "run_at": meta["date"]}
            else:
                # the sweep stops its runs at its deadline and waits for their checkpoints: 45 s kept for that
                if check.name == "sweep":
                    cap = left if opts.dry_run else max(left - 45, 5)
                else:
                    cap = min(left, check.cap_s * (5 if opts.dry_run else 1))
                workdir = Path(tmp) / check.name
                workdir.mkdir()
                ctx = Ctx(opts=opts, device=device, tmp=workdir, deadline=time.monotonic() + cap)
                print(f"[gpu-check] {check.number} {check.name}: {check.title} (cap {cap:.0f} s)", flush=True)
                entry = run_check(check, ctx)
                broken |= entry["status"] in ("error", "timeout")
            entries[check.name] = entry
            print(summary_line(entry), flush=True)
            meta["wall_s"] = time.monotonic() - t_start
            write_report(path, meta, entries)
    print(f"[gpu-check] report: {path} (and {path.with_suffix('.json').name}); {meta['wall_s']:.0f} s", flush=True)
    for check in opts.selected:
        print(summary_line(entries[check.name]), flush=True)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
