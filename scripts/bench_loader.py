#!/usr/bin/env python
"""Images per second of the training input pipeline alone (framework/data.py), so you can see whether input or
compute limits a run. Takes train.py's flags and configs; the figure is the median of several timed windows after a
warm-up, each window ending with the batches on the run's device (host->device copy and GPU work included).

    python scripts/bench_loader.py -c configs/fashion_mnist_resnet.yaml --device cpu --pipeline both
    python scripts/bench_loader.py -c configs/cifar10_resnet18.yaml --gpu-data --with-model
    python scripts/bench_loader.py --dataset synthetic --img-size 224 --in-chans 3 --num-classes 1000 \
        --synthetic-train-size 4096 --batch-size 256 --workers 4
    python scripts/bench_loader.py --imagenet-sample 512 --workers 1 --batch-size 64   # timm's input vs ours

``--imagenet-sample N`` builds the deterministic ImageNet-like JPEG folder of framework/jpeg.py
(``sample_jpeg_folder``: N training photos, 500x375, quality 90) in a temporary directory and times the training
input of ``--imagenet-input timm`` and ``fast`` on it, one after the other, with images/s per worker process
(per core when workers <= cores) and each pipeline's peak worker memory.

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
    # allow_abbrev=False: train.py's --device must not be taken for an abbreviation of --device-work
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=False, allow_abbrev=False)
    p.add_argument("--pipeline", default="auto", choices=["auto", "batched", "workers", "both"],
                   help="the pipeline to time (both: batched and workers, one after the other)")
    p.add_argument("--windows", type=int, default=5, help="timed windows (the median is reported)")
    p.add_argument("--window-batches", type=int, default=20, help="micro-batches per timed window")
    p.add_argument("--warmup", type=int, default=5, help="micro-batches before timing (workers start, caches)")
    p.add_argument("--with-model", action="store_true", help="also time the model's training step")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--imagenet-sample", type=int, default=0, metavar="N",
                   help="time timm's and our ImageNet input on N generated photo JPEGs (see above)")
    p.add_argument("--device-work", action="store_true",
                   help="with --imagenet-sample: time each pipeline up to the normalised, augmented batch (the "
                   "device's part, here on the CPU, included: with --workers 0 every image's whole cost on one core)")
    p.add_argument("--modes", default=None,
                   help="with --imagenet-sample: the --imagenet-input modes to time (default timm,fast; plus gpu on "
                   "a GPU: nvJPEG batch decode and crops on the device, timed up to the normalised batch)")
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


def imagenet_comparison(opts: argparse.Namespace, rest: list[str]) -> int:
    """timm's ImageNet input against ours on the generated JPEG set, same workers and batch: images/s, per worker,
    the ratio, and each pipeline's peak worker memory (the largest resident set of a worker, from /proc)."""
    import hashlib
    import tempfile

    from framework.jpeg import sample_jpeg_folder
    root = sample_jpeg_folder(tempfile.mkdtemp(prefix="jpegs-"), classes=8, per_class=max(opts.imagenet_sample // 8, 1))
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(root, "train")) for f in fs)
    digest = hashlib.md5(b"".join(open(f, "rb").read() for f in files)).hexdigest()[:12]
    size_kb = sum(os.path.getsize(f) for f in files) / len(files) / 1e3
    print(f"{len(files)} training JPEGs (500x375 photos, mean {size_kb:.0f} kB, set md5 {digest}) in {root}", flush=True)
    device = torch.device("cuda" if torch.cuda.is_available() and "cpu" not in rest else "cpu")
    modes = opts.modes.split(",") if opts.modes else ["timm", "fast"] + (["gpu"] if device.type == "cuda" else [])
    rates = {}
    for mode in modes:
        args = parse_args(get_args_parser(), ["--dataset", "imagenet", "--data-dir", root, "--imagenet-input", mode,
                                              "--hflip", *rest])
        args.micro_batch = split_batch(args.batch_size, 1, args.micro_batch).micro_batch
        args.val_batch_size = args.val_batch_size or args.micro_batch
        data = build_data(args, rank=0, world_size=1, device=device if mode == "gpu" else torch.device("cpu"))
        # timm / fast: the workers' output as the DataLoader delivers it (timm: float, normalised; ours: uint8, to
        # be normalised on the device), the CPU cost of the input; gpu: up to the normalised batch on the device
        batches = endless(data.train) if mode == "gpu" or opts.device_work else _raw_batches(data.train)
        r = time_windows(batches, device if mode == "gpu" else torch.device("cpu"), opts.windows,
                         opts.window_batches, opts.warmup, args.micro_batch)
        peak = _worker_peak_mb(data.train)
        rates[mode] = statistics.median(r)
        per = rates[mode] / max(args.workers, 1)
        report(f"imagenet input [{mode}{', on ' + str(device) if mode == 'gpu' else ''}], {args.workers} workers "
               f"({per:,.0f} images/s per worker" + (f"; peak worker memory {peak:,.0f} MB" if peak else "") + ")",
               r)
        del data
    if "fast" in rates and "timm" in rates:
        print(f"ours / timm: {rates['fast'] / rates['timm']:.2f}x", flush=True)
    return 0


def _raw_batches(train) -> Iterator:
    epoch = 0
    while True:
        train.set_epoch(epoch)
        for batch in train.loader:
            yield batch[0], batch[-1]
        epoch += 1


def _worker_peak_mb(train) -> float:
    """The largest peak resident set (VmHWM) among the loader's live worker processes, in MB (0 without workers)."""
    iterator = getattr(getattr(train, "loader", None), "_iterator", None)
    peaks = []
    for w in getattr(iterator, "_workers", []) or []:
        try:
            with open(f"/proc/{w.pid}/status") as f:
                peaks += [int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM")]
        except OSError:
            pass
    return max(peaks, default=0.0)


def check_opts(opts: argparse.Namespace) -> None:
    """ConfigError naming a benchmark option that cannot give a figure (before anything is built)."""
    for name, least in (("windows", 1), ("window_batches", 1), ("warmup", 0), ("imagenet_sample", 0)):
        if getattr(opts, name) < least:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= {least}, got {getattr(opts, name)}")
    if opts.threads is not None and opts.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {opts.threads}")
    if opts.modes is not None:
        known = next(a.choices for a in get_args_parser()._actions if "--imagenet-input" in a.option_strings)
        modes = opts.modes.split(",")
        unknown = [m for m in modes if m not in known]
        if unknown or not modes:
            raise ConfigError(f"--modes {opts.modes}: unknown mode(s) {', '.join(unknown) or '(none given)'}; "
                              f"use a comma-separated list of {', '.join(known)}")


def main(argv: list[str] | None = None) -> int:
    opts, rest = bench_parser().parse_known_args(argv)
    try:
        check_opts(opts)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if opts.threads:
        torch.set_num_threads(opts.threads)
    if opts.imagenet_sample:
        try:
            return imagenet_comparison(opts, rest)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
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
