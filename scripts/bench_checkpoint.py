#!/usr/bin/env python
"""What AutoWU's rollback costs a checkpoint: ``last.pt`` size, save time and the snapshots' host memory per rank for
a config's model and optimizer, on the CPU, with the rollback window full (``patience + 2`` epoch-end snapshots).

    python scripts/bench_checkpoint.py -c configs/imagenet_resnet50.yaml --autowu-rollback [--repeats 3] [--dir DIR]

Builds the model and optimizer exactly as train.py does (the config's flags; ``--sched autowu-cos`` unless another
AutoWU schedule is given), takes one optimizer step so the optimizer has its state, then feeds AutoWU a falling loss
(no switch) for ``patience + 2`` of the config's epochs at its real steps per epoch, and times ``save_checkpoint`` of
``last.pt`` the way train.py calls it. Prints n, mean (std) of the save time, the file size, and the bytes of
snapshot tensors this process holds.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import train  # noqa: E402
from framework.checkpoint import save_checkpoint  # noqa: E402
from framework.seeding import rng_state  # noqa: E402
from framework.config import ConfigError, parse_args  # noqa: E402
from framework.datasets import DATASETS  # noqa: E402
from framework.models import create_model  # noqa: E402
from framework.engine import AmpGrad  # noqa: E402
from framework.optim import resolve_optimizer_defaults  # noqa: E402
from framework.wiring import wire_training  # noqa: E402



def tensor_bytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def main(argv=None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--repeats", type=int, default=3)
    pre.add_argument("--dir", default=None, help="where to write last.pt (default: a temp directory, removed)")
    ours, rest = pre.parse_known_args(argv)
    if ours.repeats < 1:
        print(f"error: --repeats must be >= 1, got {ours.repeats}", file=sys.stderr)
        return 2
    if ours.dir is not None and os.path.exists(ours.dir) and not os.path.isdir(ours.dir):
        print(f"error: --dir {ours.dir} is a file; give a folder for last.pt", file=sys.stderr)
        return 2
    try:
        args = parse_args(train.get_args_parser(), rest)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.sched.startswith("autowu"):
        args.sched = "autowu-cos"
    resolve_optimizer_defaults(args)
    info = DATASETS.get(args.dataset)
    classes, chans, size = ((info.num_classes, info.in_chans, info.img_size) if info is not None
                            else (args.num_classes, args.in_chans, args.img_size))
    model = create_model(args, args.num_classes or classes, args.in_chans or chans, args.img_size or size)
    steps = (DATASETS[args.dataset].train_size if args.dataset in DATASETS else args.synthetic_train_size) // args.batch_size
    run_dir = ours.dir or tempfile.mkdtemp(prefix="bench-ckpt-")
    os.makedirs(run_dir, exist_ok=True)
    parts = wire_training(args, model, AmpGrad(args.amp, torch.device("cpu")), steps, run_dir=run_dir)  # as train.py
    optimizer, scheduler = parts.optimizer, parts.scheduler
    model.train()
    size = args.img_size or size  # the config's resolution: a model with a fixed-size head takes no other
    model(torch.randn(2, args.in_chans or chans, size, size)).logsumexp(-1).mean().backward()
    optimizer.step()  # the optimizer's state (Adam moments) exists from the first step on
    optimizer.zero_grad(set_to_none=True)
    epochs = args.autowu_patience + 2
    t0 = time.perf_counter()
    for t in range(epochs * steps):
        scheduler.step(10.0 - 1e-3 * t)  # falling: no minimum, no switch
    if scheduler.phase != "warmup":  # the warmup cap (rho_w x epochs) came first: the window never fills
        print(f"error: the AutoWU warmup of this config (--autowu-rho-w {args.autowu_rho_w} x --epochs {args.epochs}) "
              f"ends within the {epochs} epochs the rollback window needs (--autowu-patience {args.autowu_patience} "
              "+ 2): raise --epochs or --autowu-rho-w", file=sys.stderr)
        if ours.dir is None:
            shutil.rmtree(run_dir, ignore_errors=True)
        return 2
    feed_s = time.perf_counter() - t0
    path = os.path.join(run_dir, "last.pt")
    times = []
    for _ in range(ours.repeats):
        t0 = time.perf_counter()
        save_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler, scaler=None,
                        position={"epoch": epochs, "step": epochs * steps, "sample": 0}, split={},
                        steps_per_epoch=steps, config=train.config_dict(args), rng_per_rank=[rng_state()],
                        extra={"stats": {}, "record": {}})
        times.append(time.perf_counter() - t0)
    size = os.path.getsize(path)
    held = tensor_bytes(list(getattr(scheduler, "snapshots", [])))
    side = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(os.path.join(run_dir, "rollback"))
               for f in fs) if os.path.isdir(os.path.join(run_dir, "rollback")) else 0
    print(f"{args.model} + {args.opt}, {steps} steps/epoch, {epochs} warmup epochs fed in {feed_s:.1f} s "
          f"({len(getattr(scheduler, 'snapshots', []))} snapshots); torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs")
    print(f"last.pt: {size / 1e6:.1f} MB; save time n={len(times)}: {statistics.mean(times):.2f} s "
          f"({statistics.stdev(times) if len(times) > 1 else 0.0:.2f}); snapshot tensors held in this process: "
          f"{held / 1e6:.1f} MB; snapshot files in {run_dir}/rollback: {side / 1e6:.1f} MB")
    if ours.dir is None:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
