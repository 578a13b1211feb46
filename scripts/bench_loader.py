#!/usr/bin/env python
"""Images per second of the training input pipeline alone (framework/data.py), so you can see whether input or
compute limits a run. Takes train.py's flags and configs; the figure is the median of several timed windows after a
warm-up, each window ending with the batches on the run's device (host->device copy and GPU work included).

    python scripts/bench_loader.py -c configs/fashion_mnist_resnet.yaml --device cpu --pipeline both
    python scripts/bench_loader.py -c configs/cifar10_resnet18.yaml --gpu-data --with-model
    python scripts/bench_loader.py --dataset synthetic --img-size 224 --in-chans 3 --num-classes 1000 \
        --synthetic-train-size 4096 --batch-size 256 --workers 4

``--with-model`` also times the model's training step (forward, backward, SGD) on one micro-batch held on the
device: if that figure is the lower one, compute is the limit.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Iterator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from framework.augment import uses_mixup  # noqa: E402
from framework.batch import split_batch  # noqa: E402
from framework.config import ConfigError, parse_args  # noqa: E402
from framework.data import build_data  # noqa: E402
from train import get_args_parser  # noqa: E402


def bench_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=False)
    p.add_argument("--pipeline", default="auto", choices=["auto", "batched", "workers", "both"],
                   help="the pipeline to time (both: batched and workers, one after the other)")
    p.add_argument("--windows", type=int, default=5, help="timed windows (the median is reported)")
    p.add_argument("--window-batches", type=int, default=20, help="micro-batches per timed window")
    p.add_argument("--warmup", type=int, default=5, help="micro-batches before timing (workers start, caches)")
    p.add_argument("--with-model", action="store_true", help="also time the model's training step")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    return p


def endless(train) -> Iterator:
    epoch = 0
    while True:
        train.set_epoch(epoch)
        yield from train
        epoch += 1


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_windows(batches: Iterator, device: torch.device, n_windows: int, per_window: int, warmup: int,
                 images: int) -> list[float]:
    """images/s of ``n_windows`` windows of ``per_window`` batches each, after ``warmup`` batches."""
    for _ in range(warmup):
        x, y = next(batches)
    rates = []
    for _ in range(n_windows):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(per_window):
            x, y = next(batches)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        sync(device)
        rates.append(per_window * images / (time.perf_counter() - t0))
    return rates


def model_rate(args: argparse.Namespace, data, device: torch.device, opts: argparse.Namespace) -> list[float]:
    from framework.models import create_model
    model = create_model(args, data.num_classes, data.in_chans, data.img_size).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(args.micro_batch, data.in_chans, data.img_size, data.img_size, device=device)
    y = torch.randint(0, data.num_classes, (args.micro_batch,), device=device)

    def steps():
        while True:
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            yield x, y
    return time_windows(steps(), device, opts.windows, max(opts.window_batches // 4, 2), 2, args.micro_batch)


def report(label: str, rates: list[float]) -> None:
    print(f"{label}: {statistics.median(rates):,.0f} images/s (median of {len(rates)} windows; "
          f"range {min(rates):,.0f}..{max(rates):,.0f})", flush=True)


def main(argv: list[str] | None = None) -> int:
    opts, rest = bench_parser().parse_known_args(argv)
    try:
        args = parse_args(get_args_parser(), rest)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if opts.threads:
        torch.set_num_threads(opts.threads)
    device = torch.device("cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    try:
        args.micro_batch = split_batch(args.batch_size, 1, args.micro_batch, even=uses_mixup(args)).micro_batch
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.val_batch_size = args.val_batch_size or args.micro_batch
    pipelines = ["batched", "workers"] if opts.pipeline == "both" else [opts.pipeline]
    data = None
    print(f"{args.dataset}, micro-batch {args.micro_batch}, {args.workers} workers, gpu-data {args.gpu_data}, "
          f"device {device}, torch threads {torch.get_num_threads()}", flush=True)
    for pipeline in pipelines:
        try:
            data = build_data(args, rank=0, world_size=1, device=device, pipeline=pipeline)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        rates = time_windows(endless(data.train), device, opts.windows, opts.window_batches, opts.warmup,
                             args.micro_batch)
        report(f"loader [{data.pipeline}{', on ' + str(device) if args.gpu_data else ''}]", rates)
        del data.train  # stop this pipeline's workers before the next
    if opts.with_model and data is not None:
        report(f"model {args.model} training step", model_rate(args, data, device, opts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
