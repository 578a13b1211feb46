#!/usr/bin/env python
"""Train an image classifier with the paper's schedules (baseline, AutoWU, AutoLR) and optimizers (AdamP, LAMB, SGD).

    python train.py --config configs/cifar10_resnet18.yaml --output runs/c10 [--flag value ...]
    torchrun --nproc_per_node 8 train.py -c configs/imagenet_resnet50.yaml --batch-size 16384 --micro-batch 128 ...
    srun python train.py -c ...          (one task per GPU; SLURM_PROCID/SLURM_LOCALID/SLURM_NTASKS)

YAML keys are the flag names below; the command line wins. ``--batch-size`` is the GLOBAL batch of one optimizer step;
``--micro-batch`` the per-device maximum: ``batch = micro-batch x processes x accumulation`` (framework/batch.py). The run directory (``--output``)
receives everything (see docs/DESIGN.md); a run that finds ``last.pt`` there resumes from it.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

import autowu
from framework.batch import BatchSplit
from framework.checkpoint import (CheckpointError, discard_checkpoints, load_resumable, resume_path, run_files,
                                  save_checkpoint)
from framework.seeding import epoch_seed, rng_state, seed_everything, set_rng_state
from framework.config import ConfigError, OneLineParser, parse_args, write_config, yaml_mapping
from framework.data import build_data
from framework.wiring import wire_training
from framework.datasets import DATASET_NAMES, DATASETS
from framework.distributed import (DistInfo, Heartbeat, agree_on_resume, any_rank, barrier, check_ranks_agree,
                                   cleanup, init_distributed)
from framework.engine import (AmpGrad, StopFlag, TrainStats, batchnorm_recompute_batches, bf16_kernels,
                              evaluate, recompute_batchnorm, train_one_epoch, validates)
from framework.logger import RunLogger
from framework.models import build_model, check_input
from framework.optim import (OPT_DEFAULTS, check_schedule, parameters_finite, resolve_optimizer_defaults,
                             set_optimizer_mode, uses_optimizer_modes)
from framework.rundir import lock_run_dir
from framework.runspec import Position, check_resume, thread_change
from framework.validate import check_args, data_source

NOT_CONFIG = ("config", "local_rank", "dist_timeout")  # parsed flags that are not part of a run's config
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.ENOENT, errno.EACCES)  # end in one line


EPILOG = """\
three commands to start with:
  demo (CPU, ~3 min):   python train.py -c configs/fashion_mnist_demo.yaml --output runs/demo
  test suite:           bash scripts/test.sh          (or: python -m pytest -q tests)
  several processes:    torchrun --nproc_per_node 8 train.py -c configs/imagenet_resnet50.yaml --output runs/r50
                        (SLURM: srun --ntasks-per-node 8 python train.py -c ...; see scripts/slurm/)
The same config runs on any number of processes: --batch-size is the global batch and --micro-batch the per-device
maximum. A run directory holding last.pt resumes from it when its settings allow (docs/DESIGN.md, "Resume").
"""


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser("train.py", description=__doc__.split("\n")[0], epilog=EPILOG, add_help=True,
                      formatter_class=_HelpFormatter)
    flag = argparse.BooleanOptionalAction
    g = p.add_argument_group("general")
    g.add_argument("-c", "--config", default=None, help="YAML file of flag values (keys = flag names); the command "
                   "line wins")
    g.add_argument("--output", default=None, help="run directory; everything the run writes goes here (required "
                   "unless --smoke)")
    g.add_argument("--seed", type=int, default=0, help="weights, shuffling, augmentation and dropout")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: a GPU if one is visible")
    g.add_argument("--resume", default="auto", help="auto (OUTPUT/last.pt if present) | none (start afresh) | PATH")
    g.add_argument("--smoke", type=int, default=0,
                   help="N>0: synthetic data at the config's resolution, tiny batch, N optimizer steps, then exit")
    g.add_argument("--local-rank", "--local_rank", dest="local_rank", type=int, default=None,
                   help=argparse.SUPPRESS)  # set by the legacy torch.distributed.launch
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="synthetic", choices=list(DATASET_NAMES), help="what to train on")
    g.add_argument("--data-dir", default="data", help="where the dataset files are (scripts/prepare_data.py)")
    g.add_argument("--img-size", type=int, default=None, help="image side in pixels (default: the dataset's)")
    g.add_argument("--in-chans", type=int, default=None, help="image channels (default: the dataset's)")
    g.add_argument("--num-classes", type=int, default=None, help="classes (default: the dataset's)")
    g.add_argument("--synthetic-train-size", type=int, default=512, help="--dataset synthetic: training images")
    g.add_argument("--synthetic-val-size", type=int, default=128, help="--dataset synthetic: validation images")
    g.add_argument("--train-subset", type=int, default=None,
                   help="a fixed random subset of N training images (the same for every run and seed)")
    g.add_argument("--val-subset", type=int, default=None,
                   help="a fixed random subset of N validation images")
    g.add_argument("--workers", type=int, default=4, help="data-loading processes per rank")
    g.add_argument("--pin-mem", action=flag, default=True, help="pinned host memory for GPU copies")
    g.add_argument("--gpu-data", action=flag, default=False, help="hold small datasets on the device")
    g.add_argument("--imagenet-input", default="fast", choices=["fast", "timm", "gpu"],
                   help="ImageNet: fast (libjpeg-turbo at reduced size, uint8 crops; normalisation, --auto-augment's "
                   "RandAugment and --reprob on the device), timm "
                   "(PIL + timm's per-sample transforms), gpu (nvJPEG batch decode "
                   "and crops on the GPU)")
    g.add_argument("--pipeline", default="auto", choices=["auto", "batched", "workers"],
                   help="input pipeline: batched (whole micro-batches, AutoAugment drawn per group of 8 images), "
                   "workers (per sample, DataLoader processes); auto: batched where the augmentation allows")
    g.add_argument("--auto-augment", action=flag, default=False, help="AutoAugment (CIFAR policy on CIFAR; "
                   "RandAugment, the DeiT recipe, on ImageNet)")
    g.add_argument("--cutout", type=int, default=0, help="Cutout square side in pixels (0 = off)")
    g.add_argument("--crop-pad", type=int, default=0, help="random crop after padding by this many pixels")
    g.add_argument("--hflip", action=flag, default=False, help="random horizontal flip")
    g.add_argument("--reprob", type=float, default=0.0, help="random-erasing probability")
    g.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (0 = off)")
    g.add_argument("--cutmix", type=float, default=0.0, help="cutmix alpha (0 = off)")
    g.add_argument("--label-smoothing", type=float, default=0.0, help="cross-entropy label smoothing")
    g = p.add_argument_group("model")
    g.add_argument("--model", default="fmnist_cnn", help="a timm model name (cifar_resnet18, wrn28_10, resnet50, ...)")
    g.add_argument("--drop-path", type=float, default=None, help="stochastic depth rate (default: the model's)")
    g.add_argument("--sync-bn", action=flag, default=False, help="SyncBatchNorm across ranks (GPUs)")
    g.add_argument("--channels-last", action=flag, default=False, help="channels_last memory format")
    g.add_argument("--compile", action=flag, default=False, help="torch.compile the model")
    g = p.add_argument_group("optimizer (unset values: the paper's for --opt, Appendix A)")
    g.add_argument("--opt", default="adamp", choices=list(OPT_DEFAULTS),
                   help="AdamP (the paper's), LAMB (Appendix B), SGD (for comparison); schedulefree_adamw, prodigy, "
                   "dadapt_adam: the learning-rate-free packages, as their authors use them (results/auto_lr.md)")
    g.add_argument("--weight-decay", type=float, default=None, help="(paper App. A: 0.1 for AdamP and LAMB; SGD 5e-4)")
    g.add_argument("--momentum", type=float, default=None, help="SGD momentum (default 0.9)")
    g.add_argument("--opt-betas", type=float, nargs=2, default=None, help="(paper App. A: 0.9 0.999)")
    g.add_argument("--opt-eps", type=float, default=None, help="(paper App. A: AdamP 1e-8, LAMB 1e-6)")
    g.add_argument("--adamp-delta", type=float, default=None, help="AdamP's projection threshold (paper App. A: 0.1)")
    g.add_argument("--clip-grad", type=float, default=None, help="clip the gradient norm to this value (off)")
    g.add_argument("--wd-exclude-bias-norm", action=flag, default=False, help="no weight decay on biases and norms")
    g = p.add_argument_group("schedule")
    g.add_argument("--sched", default="autowu-cos", choices=list(autowu.REGISTRY),
                   help="baseline: linear warmup + cosine (paper Sec. 3); autowu-*: AutoWU with cosine or "
                   "constant-then-cosine decay (Sec. 2); autolr: AutoLR (Kim et al. 2021b); const-cosine: constant, then "
                   "cosine; constant: warmup, then constant (Schedule-Free); range-test-cos: torch-lr-finder's "
                   "suggestion, then the baseline")
    g.add_argument("--epochs", type=int, default=10, help="epochs of training (the schedule's budget T)")
    g.add_argument("--lr", type=float, default=None, help="peak LR of baseline/const-cosine, initial LR otherwise "
                   "(default: --lr-base scaled to the batch size)")
    g.add_argument("--lr-base", type=float, default=None,
                   help="LR at --lr-base-size images (paper Sec. 3: AdamP 1e-3; App. B: LAMB 1e-2; SGD 0.1)")
    g.add_argument("--lr-base-size", type=int, default=256, help="the batch size --lr-base refers to")
    g.add_argument("--lr-scale", default="sqrt", choices=["sqrt", "linear", "none"],
                   help="how the peak LR grows with the batch (paper Sec. 3: sqrt)")
    g.add_argument("--warmup-epochs", type=float, default=5.0, help="baseline linear warmup (paper Sec. 3: 5)")
    g.add_argument("--cooldown-fraction", type=float, default=0.2,
                   help="final cosine share of the constant-then-cosine decay (paper Sec. 2.2: 0.2)")
    g.add_argument("--autowu-eta-min", type=float, default=1e-5, help="AutoWU's initial LR (paper Sec. 2.1.1: 1e-5)")
    g.add_argument("--autowu-eta-max", type=float, default=1.0,
                   help="AutoWU's largest possible LR (paper Sec. 2.1.1: 1)")
    g.add_argument("--autowu-rho-w", type=float, default=0.5,
                   help="largest warmup share of the steps (paper Sec. 2.1.1: 0.5)")
    g.add_argument("--autowu-warmup", default="exp", choices=["exp", "linear"],
                   help="warmup growth (paper Sec. 2.1.1: exp, Eq. 1; App. C.2: linear, Eq. 6)")
    g.add_argument("--autowu-n-test", type=int, default=5,
                   help="GP posterior samples per minimum test (paper Sec. 2.1.2: 5)")
    g.add_argument("--autowu-confidence", type=float, default=0.95,
                   help="confidence c of the minimum test (paper Sec. 2.1.2: 0.95)")
    g.add_argument("--autowu-patience", type=int, default=3,
                   help="passed tests in a row before the switch (paper Sec. 2.1.2: 3)")
    g.add_argument("--autowu-rollback", action=flag, default=False,
                   help="at the switch, restore the weights of the step nearest t* (not in the paper)")
    g.add_argument("--autowu-test-every", type=int, default=None,
                   help="beyond the paper: GP test every N optimizer steps (default: each epoch end, the paper's)")
    g.add_argument("--autowu-max-overshoot", type=float, default=None,
                   help="beyond the paper: test often enough that the LR grows at most this factor between "
                   "passing the minimum and the switch (results/cadence.md recommends 3)")
    g.add_argument("--sched-kwargs", type=yaml_mapping, default=None,
                   help="mapping of further scheduler-class arguments, e.g. '{fit_steps: 50}'; an argument that has "
                   "a flag above must be set with the flag")
    g = p.add_argument_group("batch")
    g.add_argument("--batch-size", type=int, default=256, help="GLOBAL batch: images per optimizer step, all "
                   "processes together")
    g.add_argument("--micro-batch", type=int, default=None, help="per-device MAXIMUM images per forward: the largest "
                   "micro-batch <= it that divides batch/processes is used, the rest is gradient accumulation "
                   "(default: batch/processes, no accumulation)")
    g.add_argument("--val-batch-size", type=int, default=None, help="per device (default: the micro-batch used)")
    g = p.add_argument_group("run")
    g.add_argument("--amp", default="none", choices=["none", "fp16", "bf16"], help="mixed precision")
    g.add_argument("--log-interval", type=int, default=50, help="optimizer steps between log writes")
    g.add_argument("--checkpoint-interval", type=int, default=0, help="also keep epoch_NNN.pt every N epochs (0: "
                   "only last.pt)")
    g.add_argument("--max-nonfinite", type=int, default=20, help="stop after this many non-finite losses in a row "
                   "(0: never)")
    g.add_argument("--val-interval", type=int, default=1, help="validate every N epochs, and after the last")
    g.add_argument("--dist-timeout", type=float, default=600.0, help="seconds a collective waits for the other "
                   "ranks before the job ends (a dead or frozen rank); the log names the rank that went silent")
    return p


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every flag's default in its help; the epilog's line breaks kept."""


def config_dict(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if k not in NOT_CONFIG}


def prepare_args(args: argparse.Namespace, info: DistInfo) -> None:
    """Resolve defaults; raise ConfigError for settings that cannot run (before anything is written)."""
    if args.output is None and not args.smoke:
        raise ConfigError("--output DIR is required (the run directory that receives logs and checkpoints)")
    for name in ("batch_size", "epochs", "log_interval", "val_interval", "lr_base_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    resolve_optimizer_defaults(args)  # the peak LR follows the config's real batch size, also in smoke mode
    if args.smoke:
        if args.dataset != "synthetic":
            args.num_classes, args.in_chans, args.img_size = DATASETS[args.dataset].shape
        args.dataset, args.micro_batch, args.batch_size = "synthetic", 2, 4 * info.world_size
        args.synthetic_train_size, args.synthetic_val_size = args.smoke * args.batch_size, 2 * info.world_size
        args.val_batch_size, args.workers, args.checkpoint_interval = 2, 0, 0
        args.train_subset = args.val_subset = None
        if info.device.type == "cpu":  # GPU-only settings of a real config
            args.amp, args.compile, args.sync_bn = "none", False, False
    if args.sync_bn and info.distributed and info.device.type != "cuda":
        raise ConfigError("--sync-bn needs GPUs (PyTorch's SyncBatchNorm is CUDA-only); use --no-sync-bn on CPU")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else ``platform.processor()``: a table cell names its
    hardware from it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def environment(info: DistInfo, split: BatchSplit, amp: str) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.path.dirname(os.path.abspath(__file__)),
                                capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    cuda = info.device.type == "cuda"
    return {"git_commit": commit, "torch": torch.__version__, "cuda": torch.version.cuda if cuda else None,
            "device": torch.cuda.get_device_name(info.device) if cuda else platform.processor() or "cpu",
            "cpu": cpu_model(), "host": platform.node(), "python": platform.python_version(),
            "cpu_threads": torch.get_num_threads(), "world_size": info.world_size,
            "launcher": info.launcher, "accum_steps": split.accum_steps, "split": split.to_dict(),
            "bf16_kernels": bf16_kernels(amp, info.device), "argv": sys.argv}


ENV_MACHINE_KEYS = ("git_commit", "torch", "device", "cpu", "host", "cpu_threads", "bf16_kernels")


def earlier_environments(path: str) -> list:
    """What ran the earlier parts of a resumed run (from its env.json before this part overwrites it): that file's
    own ``earlier`` list plus its machine keys. A run cut on one machine and resumed on another records both."""
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError):
        return []
    if not isinstance(old, dict):
        return []
    earlier = old.get("earlier")
    return [e for e in (earlier if isinstance(earlier, list) else []) if isinstance(e, dict)] + [
        {k: old[k] for k in ENV_MACHINE_KEYS if k in old}]


@dataclass
class Plan:
    """What :func:`plan` decided and built before anything is written: the data, the model, the precision, and the
    checkpoint to continue (if any)."""
    data: Any
    model: nn.Module
    amp: AmpGrad
    ckpt: Optional[dict] = None
    ckpt_file: Optional[str] = None
    position: Position = field(default_factory=Position)
    note: Optional[str] = None  # how the resumed run differs (another batch split)
    warnings: list = field(default_factory=list)  # e.g. a damaged last.pt and the fallback to prev.pt


@dataclass
class RunRecord:
    """The run's results so far (train.py owns them; saved in checkpoints so a resumed run keeps them)."""
    final_top1: Optional[float] = None
    final_top5: Optional[float] = None
    best_top1: Optional[float] = None
    best_top5: Optional[float] = None
    best_epoch: Optional[int] = None
    images_per_s: list = field(default_factory=list)
    elapsed_s: float = 0.0  # training wall time, earlier (interrupted) processes included
    # the training half of an epoch's row whose steps are all done but whose row is not written yet (a signal came
    # at its end or during its validation): the resumed run, which has no step of that epoch left to train, writes it
    trained_epoch: Optional[dict] = None

    def validated(self, epoch: int, metrics: dict) -> None:
        self.final_top1, self.final_top5 = metrics["top1"], metrics["top5"]
        if metrics["top1"] is not None and (self.best_top1 is None or metrics["top1"] > self.best_top1):
            self.best_top1, self.best_top5, self.best_epoch = metrics["top1"], metrics["top5"], epoch

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Run:
    """Everything built for training (:func:`build`)."""
    args: argparse.Namespace
    info: DistInfo
    data: Any
    logger: RunLogger
    model: nn.Module  # wrapped (compile, DDP) for training
    raw_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    schedule: autowu.ScheduleEntry
    amp: AmpGrad
    loss_fn: Callable
    temp_output: bool
    pos: Position = field(default_factory=Position)
    stats: TrainStats = field(default_factory=TrainStats)
    record: RunRecord = field(default_factory=RunRecord)


def disk_error(e: OSError, output: str) -> str:
    """What a disk error (one of DISK_ERRORS) did: the run directory, the reason, its errno name and the file."""
    return (f"cannot write to the run directory {output}: {e.strerror} "
            f"({errno.errorcode[e.errno]}{f', {e.filename}' if e.filename else ''})")


def main(args: argparse.Namespace) -> int:
    """parse (done by the caller) -> plan -> build -> resume -> loop -> finish."""
    try:
        check_args(args)  # flag values, output and data paths: before anything is created or written
    except ConfigError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    try:
        info = init_distributed(args.device, args.local_rank, args.dist_timeout)
    except torch.distributed.DistError as e:  # a rank that never joined (it failed first), an unreachable master
        reason = " ".join(str(e).split())[:300]
        sys.stderr.write(f"error: the process group did not form within --dist-timeout {args.dist_timeout:g} s "
                         f"({reason}); a rank that failed before joining says why in its own log, else check "
                         "MASTER_ADDR/MASTER_PORT\n")
        return 1
    if info.device.type == "cuda":  # fixed input shapes: cuDNN autotunes its kernels once (timm's train.py does too)
        torch.backends.cudnn.benchmark = True
    where = f" (rank {info.rank})" if info.distributed else ""
    try:
        p = plan(args, info)
        done = already_finished(args, p)
        if any_rank(info.is_main and done is not None, info):  # rank 0's results.json decides for every rank
            if done:
                print(done)
            cleanup()
            return 0
        lock = lock_run_dir(args.output, info)  # one run per run directory (none for a throwaway smoke run)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        sys.stderr.write(f"error{where}: {e}\n")
        cleanup()
        return 2
    try:
        run = build(args, info, p)
    except OSError as e:  # args.yaml / env.json / the logs cannot be written (disk full, quota, read-only)
        if e.errno not in DISK_ERRORS:
            raise
        sys.stderr.write(f"error{where}: {disk_error(e, args.output)} before training started; its checkpoints are as "
                         "they were. Free space or fix the directory, then run the same command\n")
        if lock is not None:
            lock.release()
        cleanup()
        return 1
    for note in (lock.notes if lock else []) + p.warnings:
        run.logger.warning(note)
    run.logger.info(f"data: {data_source(args)}")
    heartbeat = Heartbeat(info, min(10.0, args.dist_timeout / 6), lambda rank, s: run.logger.warning(
        f"rank {rank} has not answered for {s:.0f} s; the job ends after --dist-timeout {args.dist_timeout:g} s "
        "unless it recovers")) if info.distributed else None
    stop = StopFlag()
    stop.install()
    try:
        resume(run, p)
        status = loop(run, p, stop)
        if status == "preempted":
            return 130 if stop.signal == signal.SIGINT else 0  # Ctrl-C: the shell's "interrupted" status
        finish(run, status)
        return 0
    except CheckpointError as e:  # disk full while saving: the previous checkpoint is intact
        run.logger.warning(f"error: {e}")
        sys.stderr.write(f"error{where}: {e}\n")
        return 1
    except OSError as e:  # the run directory's disk is full, gone or read-only while writing logs
        if e.errno not in DISK_ERRORS:
            raise
        sys.stderr.write(f"error{where}: {disk_error(e, args.output)}; last.pt is the last checkpoint. Free space or "
                         "fix the directory, then run the same command to resume\n")
        return 1
    except RuntimeError as e:  # a collective failed: name the rank that stopped answering
        if heartbeat is None:
            raise
        message = heartbeat.describe_failure(e)
        heartbeat.stop(finished=False)
        run.logger.warning(f"error: {message}")
        sys.stderr.write(f"error{where}: {message}\n")
        return 1
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        stop.uninstall()
        if lock is not None:
            lock.release()
        run.logger.close()
        if run.temp_output and info.is_main:
            shutil.rmtree(args.output, ignore_errors=True)
        cleanup()


def plan(args: argparse.Namespace, info: DistInfo) -> Plan:
    """Resolve the settings, build the data and the model, check the schedule and decide whether (and where) a
    checkpoint continues: every refusal happens here, before the run directory is touched."""
    prepare_args(args, info)
    data = build_data(args, rank=info.rank, world_size=info.world_size, device=info.device, pipeline=args.pipeline)
    check_ranks_agree({**config_dict(args), "train_size": data.train_size, "steps_per_epoch": data.steps_per_epoch},
                      info)  # ranks started with other settings or data: exit 2 on every rank, nothing written
    check_schedule(args, data.steps_per_epoch)
    try:
        model = build_model(args, data.num_classes, data.in_chans, data.img_size, info.device,
                            sync_bn=args.sync_bn and info.distributed)
    except ConfigError:
        raise
    except (ValueError, TypeError, AssertionError) as e:  # e.g. a model option the model does not take
        raise ConfigError(f"--model {args.model} cannot be built with these settings: {e}") from None
    check_input(model, args.model, data.in_chans, data.img_size, info.device)  # an image size it cannot take
    out = Plan(data, model, AmpGrad(args.amp, info.device, args.clip_grad))
    if args.smoke and args.output and run_files(args.output):
        raise ConfigError(f"--smoke would write into --output {args.output}, which holds a run "
                          f"({', '.join(run_files(args.output))}); give --smoke a new directory, or no --output")
    error = None
    try:
        out.ckpt_file = None if args.smoke else resume_path(args.resume, args.output)
        out.ckpt, out.ckpt_file, out.warnings = load_resumable(out.ckpt_file)  # a damaged last.pt: prev.pt
        if out.ckpt is not None:
            out.position, out.note = check_resume(out.ckpt, config_dict(args), data.split, data.steps_per_epoch,
                                                  out.ckpt_file)
            threads = thread_change(out.ckpt, torch.get_num_threads(), info.device.type)
            out.warnings += [threads] if threads else []
        elif args.resume == "auto" and not args.smoke and info.is_main:
            check_no_results(args.output)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        error = e
    # every rank continues from the same checkpoint, or every rank stops (a last.pt only one node sees, a refusal
    # on one rank): one line each, nothing written
    agree_on_resume(error, out.ckpt_file, out.position.to_dict() if out.ckpt is not None else None, info)
    return out


def check_no_results(output: str) -> None:
    """A fresh start (no checkpoint to resume) into a directory that holds a run's results: refused, since it would
    delete them (a finished run whose checkpoints were removed to save space). ``--resume none`` replaces them."""
    path = os.path.join(output, "results.json")
    results = _read_results(path)
    if results is not None:
        raise ConfigError(f"--output {output} holds the results of a run ({path}, status "
                          f"{results.get('status', '?')!r}) but no checkpoint to resume (last.pt); starting afresh "
                          "would replace them. Choose another --output, or pass --resume none to replace that run")


def _read_results(path: str) -> Optional[dict]:
    """results.json as a dict, or None when it is absent or not a readable JSON object (a failed run)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def already_finished(args: argparse.Namespace, p: Plan) -> Optional[str]:
    """The line to print when the checkpoint to continue is at the end of training and the run's results.json is
    there: nothing to do, and nothing is rewritten. None otherwise (a run killed before writing its results resumes
    and writes them)."""
    if p.ckpt is None or args.smoke or p.position.epoch < args.epochs:
        return None
    results = _read_results(os.path.join(args.output, "results.json"))
    if results is None:
        return None
    return (f"{args.output} holds a run that has ended ({results.get('status', '?')}: {p.position.epoch} epochs, "
            f"{p.position.step} steps; results.json); nothing to do. To train it again, pass --resume none or "
            "choose another --output")


def build(args: argparse.Namespace, info: DistInfo, p: Plan) -> Run:
    """The run directory, logger, optimizer, loss and schedule."""
    data, split = p.data, p.data.split
    temp_output = args.output is None  # smoke mode without --output: a throwaway run directory
    if temp_output:
        args.output = tempfile.mkdtemp(prefix="smoke-") if info.is_main else "/nonexistent"
    resume_pos = p.position.to_dict() if p.ckpt else None
    if info.is_main:
        os.makedirs(args.output, exist_ok=True)
        replaced = discard_checkpoints(args.output) if p.ckpt is None and not temp_output else []
        write_config(argparse.Namespace(**config_dict(args)), os.path.join(args.output, "args.yaml"))
        logger = RunLogger(args.output, True, resume=resume_pos)
    else:  # AUTOWU_LOG_ALL_RANKS=1 (a check that ranks agree): OUTPUT/rankN/ gets this rank's steps.csv/events.jsonl
        all_ranks = os.environ.get("AUTOWU_LOG_ALL_RANKS") == "1" and not temp_output
        logger = RunLogger(os.path.join(args.output, f"rank{info.rank}"), all_ranks, resume=resume_pos,
                           tensorboard=False, console=False)
    env = environment(info, split, args.amp)
    if resume_pos is not None:  # the machines of the run's earlier parts stay in its record
        env["earlier"] = earlier_environments(logger.path("env.json"))
    logger.write_json("env.json", env)
    if info.is_main and replaced:
        logger.info(f"started afresh: removed the earlier run's {', '.join(os.path.basename(f) for f in replaced)}")
    logger.info(f"{args.model} on {args.dataset}: {split.describe()}; {data.steps_per_epoch} steps/epoch x "
                f"{args.epochs} epochs; {args.opt} + {args.sched} (lr {args.lr:.4g}); device {info.device}")

    model, amp = p.model, p.amp
    probe = data.new_train_loader() if autowu.schedule_entry(args.sched).needs_probe else None  # its own loader
    # (epoch-0 order): probing never disturbs the training iterator

    def probe_batches():
        for x, y in probe:
            yield x.to(info.device, non_blocking=True), y.to(info.device, non_blocking=True)

    parts = wire_training(args, model, amp, data.steps_per_epoch, probe_batches=probe_batches,
                          forwards_per_step=split.accum_steps, run_dir=None if temp_output else args.output)
    optimizer, loss_fn, scheduler, schedule = parts.optimizer, parts.loss_fn, parts.scheduler, parts.schedule
    return Run(args, info, data, logger, model, model, optimizer, scheduler, schedule, amp, loss_fn, temp_output)


def resume(run: Run, p: Plan) -> None:
    """Load the checkpoint ``plan`` accepted (the scheduler is built first: building it rewrites the groups' LR),
    then wrap the model for training (compile, DDP)."""
    ckpt, args, info = p.ckpt, run.args, run.info
    if ckpt is not None:
        run.raw_model.load_state_dict(ckpt["model"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.scheduler.load_state_dict(ckpt["scheduler"])
        if run.amp.scaler is not None and ckpt.get("scaler"):
            run.amp.scaler.load_state_dict(ckpt["scaler"])
        run.pos = p.position
        stats, record = _saved_counters(ckpt)
        run.stats, run.record = TrainStats(**stats), RunRecord(**record)
        run.logger.info(f"resumed from {p.ckpt_file}: epoch {run.pos.epoch}, step {run.pos.step}, sample "
                        f"{run.pos.sample}")
        if p.note:
            run.logger.info(p.note)
    else:  # work a schedule does once before training (the LR range test; logged with its history): not on a resume
        run.schedule.prepare(run.scheduler)
    if args.compile:
        run.model = torch.compile(run.model)
    if info.distributed:
        run.model = nn.parallel.DistributedDataParallel(
            run.model, device_ids=[info.device.index] if info.device.type == "cuda" else None)


def _saved_counters(ckpt: dict) -> tuple[dict, dict]:
    """The loop's counters and the run's record from a checkpoint (older ones held both in one ``loop`` dict)."""
    if "stats" in ckpt:
        return ckpt["stats"], ckpt["record"]
    loop = ckpt.get("loop", {})
    stats = {k: loop[k] for k in TrainStats().to_dict() if k in loop}
    record = {k: loop[k] for k in RunRecord().to_dict() if k in loop}
    return stats, record


def save(run: Run, path: str) -> None:
    """Checkpoint at the current position; on every rank (collectives), rank 0 writes. A failed write (disk full)
    stops every rank with :class:`CheckpointError`; the previous checkpoint is intact."""
    rngs = _gather_rng(run.info)
    run.schedule.before_save(run.scheduler)
    set_optimizer_mode(run.optimizer, train=False)  # Schedule-Free: save the averaged weights, as its README says
    error = None
    if run.info.is_main:
        try:
            save_checkpoint(path, model=run.raw_model, optimizer=run.optimizer, scheduler=run.scheduler,
                            scaler=run.amp.scaler, position=run.pos.to_dict(), split=run.data.split.to_dict(),
                            steps_per_epoch=run.data.steps_per_epoch, config=config_dict(run.args), rng_per_rank=rngs,
                            extra={"stats": run.stats.to_dict(), "record": run.record.to_dict()})
        except CheckpointError as e:
            error = e
    set_optimizer_mode(run.optimizer, train=True)
    if any_rank(error is not None, run.info):
        raise error or CheckpointError("rank 0 could not write the checkpoint; its log says why")


def loop(run: Run, p: Plan, stop: StopFlag) -> str:
    """Train epoch by epoch from the run's position; return ``finished``, ``diverged`` or ``preempted``."""
    args, info, data, logger, pos, record = run.args, run.info, run.data, run.logger, run.pos, run.record
    output = args.output
    last_epoch = 1 if args.smoke else args.epochs
    total_steps = data.steps_per_epoch * args.epochs
    process_start = time.perf_counter()
    ckpt = p.ckpt

    def preempted() -> str:  # SIGTERM/SIGUSR1/SIGINT: save where the epoch is, exit for the requeued job
        record.elapsed_s += time.perf_counter() - process_start
        save(run, os.path.join(output, "last.pt"))
        logger.log_event({"type": "preempted", "epoch": pos.epoch, "step": pos.step, "signal": stop.signal,
                          "batch_index": data.split.micro_batches(pos.sample), "sample": pos.sample})
        logger.info(f"signal {stop.signal}: saved {output}/last.pt at step {pos.step}; exiting so the "
                    "requeued job resumes from it")
        barrier(info)  # no rank exits before rank 0 has written: an exit ends the others (srun --kill-on-bad-exit)
        return "preempted"

    while pos.epoch < last_epoch:
        epoch = pos.epoch
        start_batch = data.split.micro_batches(pos.sample)
        if start_batch and ckpt is not None and len(ckpt.get("rng_per_rank", [])) == info.world_size:
            set_rng_state(ckpt["rng_per_rank"][info.rank])  # mid-epoch resume: continue the same random stream
        else:  # dropout / augmentation streams are a function of (seed, epoch, rank)
            seed_everything(epoch_seed(args.seed, epoch, info.rank, start_batch))
        data.train.set_epoch(epoch, start_batch=start_batch)
        set_optimizer_mode(run.optimizer, train=True)  # Schedule-Free: train() before training steps
        result = train_one_epoch(run.model, data.train, run.optimizer, run.scheduler, run.amp, run.loss_fn, pos,
                                 run.stats, split=data.split, steps_per_epoch=data.steps_per_epoch, info=info,
                                 logger=logger, stop=stop, describe=run.schedule, log_interval=args.log_interval,
                                 max_nonfinite=args.max_nonfinite, channels_last=args.channels_last,
                                 max_steps=args.smoke or None, total_steps=total_steps)
        epoch_done = data.split.micro_batches(pos.sample) >= data.steps_per_epoch * data.split.accum_steps
        trained = record.trained_epoch
        if trained is not None and trained["epoch"] == epoch and result.images == 0:
            epoch_record = dict(trained)  # resumed after the epoch's last step: its row as trained before the stop
        else:
            epoch_record = {"epoch": epoch, "step": pos.step, "lr": result.last_lr, "train_loss": result.train_loss,
                            "val_loss": None, "top1": None, "top5": None, "epoch_time": result.seconds,
                            "images_per_s": result.images / max(result.seconds, 1e-9)}
        images_per_s = epoch_record["images_per_s"]
        record.trained_epoch = dict(epoch_record) if epoch_done else None
        if result.status == "preempted":
            return preempted()
        if result.status == "diverged":
            logger.log_event({"type": "diverged", "epoch": epoch, "step": pos.step,
                              "consecutive": run.stats.nonfinite_run, "total": run.stats.nonfinite_total})
            logger.warning(f"diverged: {run.stats.nonfinite_run} non-finite losses in a row (--max-nonfinite "
                           f"{args.max_nonfinite}) at step {pos.step}; stopping. The last good checkpoint is "
                           f"{output}/last.pt (if an epoch finished)")
            record.elapsed_s += time.perf_counter() - process_start
            return "diverged"
        if validates(epoch, args.val_interval, last_epoch):
            set_optimizer_mode(run.optimizer, train=False)  # Schedule-Free: evaluate the averaged weights x,
            if uses_optimizer_modes(run.optimizer):     # with BatchNorm statistics recomputed for them
                recompute_batchnorm(run.model, data.new_train_loader(), run.amp, info.device, args.channels_last,
                                    max_batches=batchnorm_recompute_batches(
                                        data.steps_per_epoch * data.split.accum_steps))
            metrics = evaluate(run.model, data.val, run.amp, info, args.channels_last, stop=stop)
            if metrics.get("stopped"):  # a signal during validation: the resumed run validates this epoch
                return preempted()
            epoch_record.update(metrics)
            record.validated(epoch, epoch_record)
        record.images_per_s.append(images_per_s)
        record.trained_epoch = None
        logger.log_epoch(epoch_record)
        logger.info(f"epoch {epoch}: train loss {_fmt(epoch_record['train_loss'])} val loss "
                    f"{_fmt(epoch_record['val_loss'])} top1 {_fmt(epoch_record['top1'])} top5 "
                    f"{_fmt(epoch_record['top5'])} ({epoch_record['epoch_time']:.1f}s, {images_per_s:.0f} img/s)")
        pos.epoch, pos.sample = epoch + 1, 0
        run.stats.new_epoch()
        record.elapsed_s += time.perf_counter() - process_start
        process_start = time.perf_counter()
        if not args.smoke:
            if parameters_finite(run.raw_model.parameters()):
                save(run, os.path.join(output, "last.pt"))
                if args.checkpoint_interval and (epoch + 1) % args.checkpoint_interval == 0 and info.is_main:
                    keep_copy(os.path.join(output, "last.pt"), os.path.join(output, f"epoch_{epoch:03d}.pt"), logger)
            else:
                logger.warning(f"epoch {epoch}: non-finite weights; last.pt is left as it was")
        if result.status == "stopped":
            break
    record.elapsed_s += time.perf_counter() - process_start
    return "finished"


def finish(run: Run, status: str) -> None:
    """results.json and the closing line."""
    info, rec, pos = run.info, run.record, run.pos
    if status == "finished" and not parameters_finite(run.raw_model.parameters()):  # never "finished" with NaNs
        status = "diverged"
        run.logger.warning("the weights are not finite at the end of training: the run diverged")
    hardware = (f"{info.world_size}x {torch.cuda.get_device_name(info.device)}" if info.device.type == "cuda"
                else f"{info.world_size}x cpu: {cpu_model()}, {torch.get_num_threads()} threads ({platform.node()})")
    kernels = bf16_kernels(run.args.amp, info.device)
    if kernels in ("emulated", "reference"):  # a CPU without bf16 kernels
        hardware += f", bf16 {kernels}"
    results = {"status": status, "config": config_dict(run.args), "final_top1": rec.final_top1,
               "final_top5": rec.final_top5, "best_top1": rec.best_top1, "best_top5": rec.best_top5,
               "best_epoch": rec.best_epoch, "switch": None, "wall_time_s": rec.elapsed_s, "epochs": pos.epoch,
               "steps": pos.step,
               "images_per_s": (sum(rec.images_per_s) / len(rec.images_per_s)) if rec.images_per_s else None,
               "hardware": hardware, "split": run.data.split.to_dict(), **run.schedule.results(run.scheduler),
               "unreadable_image_reads": run.data.unreadable(), **run.logger.results()}
    if results["unreadable_image_reads"]:
        run.logger.warning(f"{results['unreadable_image_reads']} reads of unreadable images were replaced by the next "
                           "readable image (rank 0's count; each file is named in a warning above)")
    run.logger.write_json("results.json", results)
    run.logger.info(f"{status}: final top1 {_fmt(rec.final_top1)} best top1 {_fmt(rec.best_top1)} "
                    f"(epoch {rec.best_epoch}); {pos.step} steps in {rec.elapsed_s:.0f}s")


def keep_copy(src: str, dst: str, logger: RunLogger) -> None:
    """``--checkpoint-interval``'s copy of last.pt; a failed copy is a warning (last.pt itself is sound)."""
    try:
        shutil.copyfile(src, dst)
    except OSError as e:
        try:
            os.remove(dst)
        except OSError:
            pass
        logger.warning(f"could not keep {dst}: {e.strerror or e}; {src} is intact")


def _gather_rng(info: DistInfo) -> list:
    """Every rank's RNG states (so a mid-epoch resume continues each rank's dropout/augmentation stream)."""
    mine = rng_state()
    if not info.distributed:
        return [mine]
    import torch.distributed as dist
    out: list = [None] * info.world_size
    dist.all_gather_object(out, mine)
    return out


def _fmt(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.4f}"


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """``python train.py ARGV``: a bad config file is one ``error:`` line and exit 2; Ctrl-C before the loop, 130."""
    try:
        parsed = parse_args(get_args_parser(), argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        return main(parsed)
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the loop started: no traceback, nothing saved
        print("interrupted: exiting without saving (the last checkpoint, if any, is as it was)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(cli())
