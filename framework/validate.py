"""Checks of train.py's parsed flags that need no data, no model and no process group, so that a bad value ends in one
line that names the flag and what to do, exit code 2, before the run directory is created or changed.

:func:`check_args` covers the value ranges of every numeric flag, combinations that cannot work (``--smoke`` with
``--resume`` or with a shape that differs from the dataset's, ``--amp fp16`` or ``--device cuda`` without a GPU),
unknown ``--model`` names (with the nearest names), unknown ``--sched-kwargs`` keys, the output path and the data
path. The AutoWU settings (``--autowu-*``) are checked by the scheduler itself, which ``check_schedule`` builds
before anything is written.
"""
from __future__ import annotations

import argparse
import math
import os
from typing import Optional

import torch

from .config import ConfigError
from .logger import check_run_dir

# flag -> (lowest, highest, lowest allowed?, highest allowed?); None = unbounded. An unset (None) value is not checked.
RANGES: dict[str, tuple[Optional[float], Optional[float], bool, bool]] = {
    "seed": (0, 2**32 - 1, True, True),
    "smoke": (0, None, True, True),
    "img_size": (1, None, True, True),
    "in_chans": (1, None, True, True),
    "num_classes": (2, None, True, True),
    "synthetic_train_size": (1, None, True, True),
    "synthetic_val_size": (1, None, True, True),
    "train_subset": (1, None, True, True),
    "val_subset": (1, None, True, True),
    "workers": (0, None, True, True),
    "cutout": (0, None, True, True),
    "crop_pad": (0, None, True, True),
    "reprob": (0, 1, True, True),
    "mixup": (0, None, True, True),
    "cutmix": (0, None, True, True),
    "label_smoothing": (0, 1, True, False),
    "drop_path": (0, 1, True, False),
    "weight_decay": (0, None, True, True),
    "momentum": (0, 1, True, False),
    "opt_eps": (0, None, False, True),
    "adamp_delta": (0, None, False, True),
    "clip_grad": (0, None, False, True),
    "epochs": (1, None, True, True),
    "lr": (0, None, False, True),
    "lr_base": (0, None, False, True),
    "lr_base_size": (1, None, True, True),
    "warmup_epochs": (0, None, True, True),
    "cooldown_fraction": (0, 1, True, True),
    "batch_size": (1, None, True, True),
    "micro_batch": (1, None, True, True),
    "val_batch_size": (1, None, True, True),
    "log_interval": (1, None, True, True),
    "checkpoint_interval": (0, None, True, True),
    "max_nonfinite": (0, None, True, True),
    "val_interval": (1, None, True, True),
    "dist_timeout": (1, None, True, True),
}
HINTS = {"clip_grad": "leave it unset for no clipping", "max_nonfinite": "0 never stops",
         "checkpoint_interval": "0 keeps only last.pt", "workers": "0 loads in the main process",
         "smoke": "0 is a normal run", "label_smoothing": "0 is plain cross-entropy"}
# keys of a schedule class that train.py sets itself (not for --sched-kwargs)
def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _range_text(lo, hi, lo_ok, hi_ok) -> str:
    if hi is None:
        return f"{'>=' if lo_ok else '>'} {lo}"
    return f"in {'[' if lo_ok else '('}{lo}, {hi}{']' if hi_ok else ')'}"


def check_ranges(args: argparse.Namespace) -> None:
    for name, (lo, hi, lo_ok, hi_ok) in RANGES.items():
        value = getattr(args, name, None)
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if v is None:
                continue
            bad = isinstance(v, float) and not math.isfinite(v)
            bad = bad or (lo is not None and (v < lo if lo_ok else v <= lo))
            bad = bad or (hi is not None and (v > hi if hi_ok else v >= hi))
            if bad:
                hint = f" ({HINTS[name]})" if name in HINTS else ""
                raise ConfigError(f"{_flag(name)} must be {_range_text(lo, hi, lo_ok, hi_ok)}, got {v}{hint}")
    betas = getattr(args, "opt_betas", None)
    if betas is not None and not all(math.isfinite(b) and 0 <= b < 1 for b in betas):
        raise ConfigError(f"--opt-betas must be two numbers in [0, 1), got {' '.join(str(b) for b in betas)}")


def check_smoke(args: argparse.Namespace) -> None:
    """``--smoke`` replaces the data by synthetic images of the dataset's own shape: a different shape or a checkpoint
    to resume would be ignored, so they are refused."""
    if not args.smoke:
        return
    if args.resume not in ("auto", "none"):
        raise ConfigError(f"--smoke never resumes (it writes no checkpoint); drop --resume {args.resume}")
    if args.dataset == "synthetic":
        return
    from .datasets import DATASETS
    info = DATASETS[args.dataset]
    native = {"num_classes": info.num_classes, "in_chans": info.in_chans, "img_size": info.img_size}
    for name, value in native.items():
        given = getattr(args, name)
        if given is not None and given != value:
            raise ConfigError(f"--smoke runs at {args.dataset}'s own shape ({_flag(name)} {value}); {_flag(name)} "
                              f"{given} would be ignored: drop it, or use --dataset synthetic {_flag(name)} {given}")


def check_device(args: argparse.Namespace) -> None:
    gpu = torch.cuda.is_available()
    if args.device == "cuda" and not gpu:
        raise ConfigError("--device cuda but PyTorch sees no GPU (torch.cuda.is_available() is False); use "
                          "--device cpu or auto")
    on_cpu = args.device == "cpu" or not gpu
    if args.amp == "fp16" and on_cpu and not args.smoke:  # smoke mode drops GPU-only settings on the CPU
        raise ConfigError("--amp fp16 needs a GPU (it scales the loss for float16 CUDA kernels); on the CPU use "
                          "--amp bf16 or --amp none")


def check_model(name: str) -> None:
    import timm

    from .models import unknown_model  # (importing it registers our models with timm)
    if timm.is_model(name):
        return
    raise ConfigError(unknown_model(name))


def check_output(output: Optional[str], rollback: bool = False) -> None:
    """The run directory must be a directory (or creatable as one) that this process can write in.
    ``rollback``: the run keeps AutoWU's rollback snapshots in ``OUTPUT/rollback/``."""
    if output is None:
        return
    if not output.strip():
        raise ConfigError(f"--output is empty ({output!r}); give the run directory, e.g. --output runs/my_run")
    path = os.path.abspath(output)
    if os.path.islink(path) and not os.path.exists(path):
        raise ConfigError(f"--output {output} is a symlink to {os.readlink(path)}, which does not exist; create that "
                          "directory or choose another --output")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"--output {output} is a file, not a directory; choose a directory path")
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise ConfigError(f"--output {output} cannot be created: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        why = "read-only" if probe == path else f"{probe} is read-only"
        raise ConfigError(f"--output {output} is not writable ({why}); choose a directory you can write to")
    check_run_dir(output, rollback=rollback)  # a log file of the run directory replaced by a directory


def check_data_dir(args: argparse.Namespace) -> None:
    """A real dataset is read from ``--data-dir``: a directory that does not exist is an error, never a silent
    fallback (only the default ``data``, absent outside a checkout, may fall back to the system's Fashion-MNIST)."""
    if args.dataset == "synthetic" or args.smoke:
        return
    default = args.data_dir == "data"
    if not os.path.isdir(args.data_dir) and not (default and args.dataset == "fashion_mnist"):
        raise ConfigError(f"--data-dir {args.data_dir} does not exist (or is not a directory); give the directory "
                          f"that holds {args.dataset} (`python scripts/prepare_data.py --dataset {args.dataset} "
                          f"--data-dir DIR` fetches or checks it)")
    if args.dataset == "fashion_mnist" and not default:
        from .datasets import DEBIAN_FASHION_MNIST, FASHION_FILES, _idx_file, fashion_mnist_dirs, find_fashion_mnist
        names = [n for pair in FASHION_FILES.values() for n in pair]
        found = find_fashion_mnist(args.data_dir)
        for d in fashion_mnist_dirs(args.data_dir):
            if str(d) == DEBIAN_FASHION_MNIST or (found is not None and _inside(found, args.data_dir)):
                continue
            missing = [n for n in names if _idx_file(d, n) is None]
            if 0 < len(missing) < len(names):  # some of the four files: an interrupted download, not another place
                raise ConfigError(f"--data-dir {args.data_dir}: {d} holds part of Fashion-MNIST but not "
                                  f"{', '.join(m + '[.gz]' for m in missing)} (an interrupted download?); fetch "
                                  "it with `python scripts/prepare_data.py --dataset fashion_mnist --data-dir "
                                  f"{args.data_dir}`")
        if found is not None and not _inside(found, args.data_dir):
            raise ConfigError(f"--data-dir {args.data_dir} does not hold Fashion-MNIST; the system's copy is in "
                              f"{found}: pass --data-dir {found} to train on it")


def _inside(path, directory: str) -> bool:
    path, directory = os.path.abspath(path), os.path.abspath(directory)
    return path == directory or path.startswith(os.path.join(directory, ""))


def data_source(args: argparse.Namespace) -> str:
    """Where the training images come from, for the log ("read from ..." naming the directory or files)."""
    from . import datasets as data
    if args.dataset == "synthetic":
        return f"synthetic images (seed {args.seed})"
    if args.dataset == "fashion_mnist":
        d = data.find_fashion_mnist(args.data_dir)
        if d is None:
            return f"Fashion-MNIST: not found from --data-dir {args.data_dir}"
        files = [str(data._idx_file(d, n)) for pair in data.FASHION_FILES.values() for n in pair]
        fallback = "" if _inside(d, args.data_dir) else f" (--data-dir {args.data_dir} does not hold it: the system's copy)"
        return f"Fashion-MNIST read from {', '.join(files)}{fallback}"
    if args.dataset in ("cifar10", "cifar100"):
        d, _ = data.find_cifar(args.dataset, args.data_dir)
        return f"{args.dataset} read from {d}"
    if args.dataset == "imagenet":
        return f"ImageNet read from {data.imagenet_root(args.data_dir)} (train/ and val/)"
    return f"{args.dataset} read by its reader (framework/datasets.py) from --data-dir {args.data_dir}"


def check_args(args: argparse.Namespace) -> None:
    """Every check of this module; raises :class:`ConfigError` with the message for the user."""
    check_ranges(args)
    check_smoke(args)
    check_device(args)
    check_model(args.model)
    check_output(args.output, rollback=bool(getattr(args, "autowu_rollback", False)))
    check_data_dir(args)
