#!/usr/bin/env python
"""Train an image classifier with the paper's schedules (baseline, AutoWU, AutoLR) and optimizers (AdamP, LAMB, SGD).

    python train.py --config configs/cifar10_resnet18.yaml --output runs/c10 [--flag value ...]
    torchrun --nproc_per_node 8 train.py -c configs/imagenet_resnet50.yaml --batch-size 16384 --micro-batch 128 ...
    srun python train.py -c ...          (one task per GPU; SLURM_PROCID/SLURM_LOCALID/SLURM_NTASKS)

YAML keys are the flag names below; the command line wins. ``--batch-size`` is the GLOBAL batch of one optimizer step;
gradient accumulation makes up ``batch = micro-batch x processes x accumulation``. The run directory (``--output``)
receives everything (see docs/DESIGN.md); a run that finds ``last.pt`` there resumes from it.
"""
from __future__ import annotations

import argparse
import errno
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Optional

import torch
from torch import nn

import autowu
from framework.checkpoint import (CheckpointError, check_resumable, load_resumable, resume_path, rng_state,
                                  save_checkpoint, seed_everything, set_rng_state)
from framework.config import ConfigError, parse_args, write_config, yaml_mapping
from framework.distributed import DistInfo, Heartbeat, any_rank, cleanup, init_distributed
from framework.engine import AmpGrad, LoopState, StopFlag, build_loss, evaluate, train_one_epoch
from framework.logger import RunLogger
from framework.optim import (check_schedule, create_optimizer, create_schedule, parameters_finite,
                            resolve_optimizer_defaults)
from framework.rundir import lock_run_dir
from framework.validate import check_args, check_model_builds, data_source

NOT_CONFIG = ("config", "local_rank", "dist_timeout")  # parsed flags that are not part of a run's config
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.ENOENT, errno.EACCES)  # end in one line


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("AutoWU training", description=__doc__.split("\n")[0], add_help=True)
    flag = argparse.BooleanOptionalAction
    g = p.add_argument_group("general")
    g.add_argument("-c", "--config", default=None, help="YAML file of flag values (keys = flag names)")
    g.add_argument("--output", default=None, help="run directory; everything the run writes goes here")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    g.add_argument("--resume", default="auto", help="auto (OUTPUT/last.pt if present) | none | PATH")
    g.add_argument("--smoke", type=int, default=0,
                   help="N>0: synthetic data at the config's resolution, tiny batch, N optimizer steps, then exit")
    g.add_argument("--local-rank", "--local_rank", dest="local_rank", type=int, default=None,
                   help=argparse.SUPPRESS)  # set by the legacy torch.distributed.launch
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="synthetic",
                   choices=["fashion_mnist", "cifar10", "cifar100", "imagenet", "synthetic"])
    g.add_argument("--data-dir", default="data")
    g.add_argument("--img-size", type=int, default=None, help="default: the dataset's")
    g.add_argument("--in-chans", type=int, default=None, help="default: the dataset's")
    g.add_argument("--num-classes", type=int, default=None, help="default: the dataset's")
    g.add_argument("--synthetic-train-size", type=int, default=512)
    g.add_argument("--synthetic-val-size", type=int, default=128)
    g.add_argument("--train-subset", type=int, default=None,
                   help="a fixed random subset of N training images (the same for every run and seed)")
    g.add_argument("--val-subset", type=int, default=None,
                   help="a fixed random subset of N validation images")
    g.add_argument("--workers", type=int, default=4, help="data-loading processes per rank")
    g.add_argument("--pin-mem", action=flag, default=True)
    g.add_argument("--gpu-data", action=flag, default=False, help="hold small datasets on the device")
    g.add_argument("--auto-augment", action=flag, default=False, help="AutoAugment (CIFAR policy on CIFAR)")
    g.add_argument("--cutout", type=int, default=0, help="Cutout square side in pixels (0 = off)")
    g.add_argument("--crop-pad", type=int, default=0, help="random crop after padding by this many pixels")
    g.add_argument("--hflip", action=flag, default=False, help="random horizontal flip")
    g.add_argument("--reprob", type=float, default=0.0, help="random-erasing probability")
    g.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (0 = off)")
    g.add_argument("--cutmix", type=float, default=0.0, help="cutmix alpha (0 = off)")
    g.add_argument("--label-smoothing", type=float, default=0.0)
    g = p.add_argument_group("model")
    g.add_argument("--model", default="fmnist_cnn", help="a timm model name (cifar_resnet18, wrn28_10, resnet50, ...)")
    g.add_argument("--drop-path", type=float, default=None)
    g.add_argument("--sync-bn", action=flag, default=False, help="SyncBatchNorm across ranks")
    g.add_argument("--channels-last", action=flag, default=False)
    g.add_argument("--compile", action=flag, default=False, help="torch.compile the model")
    g = p.add_argument_group("optimizer (unset values: the paper's, Appendix A)")
    g.add_argument("--opt", default="adamp", choices=["adamp", "lamb", "sgd"])
    g.add_argument("--weight-decay", type=float, default=None)
    g.add_argument("--momentum", type=float, default=None, help="SGD momentum")
    g.add_argument("--opt-betas", type=float, nargs=2, default=None)
    g.add_argument("--opt-eps", type=float, default=None)
    g.add_argument("--adamp-delta", type=float, default=None)
    g.add_argument("--clip-grad", type=float, default=None, help="clip the gradient norm to this value")
    g.add_argument("--wd-exclude-bias-norm", action=flag, default=False, help="no weight decay on biases and norms")
    g = p.add_argument_group("schedule")
    g.add_argument("--sched", default="autowu-cos", choices=list(autowu.SCHEDULES))
    g.add_argument("--epochs", type=int, default=10)
    g.add_argument("--lr", type=float, default=None, help="peak LR of baseline/const-cosine, initial LR otherwise "
                   "(default: lr-base scaled to the batch size)")
    g.add_argument("--lr-base", type=float, default=None, help="LR at --lr-base-size images (AdamP 1e-3, LAMB 1e-2)")
    g.add_argument("--lr-base-size", type=int, default=256)
    g.add_argument("--lr-scale", default="sqrt", choices=["sqrt", "linear", "none"])
    g.add_argument("--warmup-epochs", type=float, default=5.0, help="baseline linear warmup (Section 3: 5)")
    g.add_argument("--cooldown-fraction", type=float, default=0.2, help="final cosine share of const-cosine")
    g.add_argument("--autowu-eta-min", type=float, default=1e-5)
    g.add_argument("--autowu-eta-max", type=float, default=1.0)
    g.add_argument("--autowu-rho-w", type=float, default=0.5)
    g.add_argument("--autowu-warmup", default="exp", choices=["exp", "linear"])
    g.add_argument("--autowu-n-test", type=int, default=5)
    g.add_argument("--autowu-confidence", type=float, default=0.95)
    g.add_argument("--autowu-patience", type=int, default=3)
    g.add_argument("--autowu-rollback", action=flag, default=False)
    g.add_argument("--sched-kwargs", type=yaml_mapping, default=None, help="mapping passed to the scheduler class")
    g = p.add_argument_group("batch")
    g.add_argument("--batch-size", type=int, default=256, help="GLOBAL batch: images per optimizer step")
    g.add_argument("--micro-batch", type=int, default=None, help="images per device per forward "
                   "(default: batch-size / processes, i.e. no accumulation)")
    g.add_argument("--val-batch-size", type=int, default=None, help="per device (default: the micro-batch)")
    g = p.add_argument_group("run")
    g.add_argument("--amp", default="none", choices=["none", "fp16", "bf16"])
    g.add_argument("--log-interval", type=int, default=50, help="optimizer steps between log writes")
    g.add_argument("--checkpoint-interval", type=int, default=0, help="also keep epoch_NNN.pt every N epochs")
    g.add_argument("--max-nonfinite", type=int, default=20, help="stop after this many non-finite losses in a row")
    g.add_argument("--val-interval", type=int, default=1, help="validate every N epochs (and after the last)")
    g.add_argument("--dist-timeout", type=float, default=600.0, help="seconds a collective waits for the other "
                   "ranks before the job ends (a dead or frozen rank); the log names the rank that went silent")
    return p


def config_dict(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if k not in NOT_CONFIG}


def prepare_args(args: argparse.Namespace, info: DistInfo) -> None:
    """Resolve defaults and check the batch arithmetic; raise ConfigError before anything is written."""
    if args.output is None and not args.smoke:
        raise ConfigError("--output DIR is required (the run directory that receives logs and checkpoints)")
    for name in ("batch_size", "epochs", "log_interval", "val_interval", "lr_base_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    resolve_optimizer_defaults(args)  # the peak LR follows the config's real batch size, also in smoke mode
    if args.smoke:
        from framework.data import DATASET_META
        if args.dataset != "synthetic":
            args.num_classes, args.in_chans, args.img_size = DATASET_META[args.dataset]
        args.dataset, args.micro_batch, args.batch_size = "synthetic", 2, 4 * info.world_size
        args.synthetic_train_size, args.synthetic_val_size = args.smoke * args.batch_size, 2 * info.world_size
        args.val_batch_size, args.workers, args.checkpoint_interval = 2, 0, 0
        args.train_subset = args.val_subset = None
        if info.device.type == "cpu":  # GPU-only settings of a real config
            args.amp, args.compile, args.sync_bn = "none", False, False
    if args.sync_bn and info.distributed and info.device.type != "cuda":
        raise ConfigError("--sync-bn needs GPUs (PyTorch's SyncBatchNorm is CUDA-only); use --no-sync-bn on CPU")
    if args.micro_batch is None:
        if args.batch_size % info.world_size:
            raise ConfigError(f"--batch-size {args.batch_size} is not divisible by the {info.world_size} processes; "
                              "set --micro-batch so that batch = micro-batch x processes x accumulation")
        args.micro_batch = args.batch_size // info.world_size
    per_step = args.micro_batch * info.world_size
    if args.micro_batch < 1 or args.batch_size % per_step:
        raise ConfigError(f"--batch-size {args.batch_size} is not a multiple of --micro-batch {args.micro_batch} x "
                          f"{info.world_size} processes = {per_step}: choose them so that batch = micro-batch x "
                          "processes x accumulation steps")
    if args.val_batch_size is None:
        args.val_batch_size = args.micro_batch


def environment(info: DistInfo, accum_steps: int) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.path.dirname(os.path.abspath(__file__)),
                                capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    cuda = info.device.type == "cuda"
    return {"git_commit": commit, "torch": torch.__version__, "cuda": torch.version.cuda if cuda else None,
            "device": torch.cuda.get_device_name(info.device) if cuda else platform.processor() or "cpu",
            "host": platform.node(), "python": platform.python_version(), "world_size": info.world_size,
            "launcher": info.launcher, "accum_steps": accum_steps, "argv": sys.argv}


def main(args: argparse.Namespace) -> int:
    try:
        check_args(args)  # flag values, output and data paths: before anything is created or written
    except ConfigError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    info = init_distributed(args.device, args.local_rank, args.dist_timeout)
    if info.device.type == "cuda":  # fixed input shapes: cuDNN autotunes its kernels once (timm's train.py does too)
        torch.backends.cudnn.benchmark = True
    try:
        prepare_args(args, info)
        from framework.data import build_data
        from framework.models import create_model
        data = build_data(args, rank=info.rank, world_size=info.world_size, device=info.device)
        check_schedule(args, data.steps_per_epoch)
        check_model_builds(args, data.num_classes, data.in_chans, data.img_size)
        ckpt_file = None if args.smoke else resume_path(args.resume, args.output)
        ckpt, ckpt_file, ckpt_notes = load_resumable(ckpt_file)  # a damaged last.pt falls back to prev.pt
        if ckpt is not None:
            check_resumable(ckpt["config"], config_dict(args), ckpt_file)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        sys.stderr.write(f"error{f' (rank {info.rank})' if info.distributed else ''}: {e}\n")
        cleanup()
        return 2
    temp_output = args.output is None  # smoke mode without --output: a throwaway run directory
    try:
        lock = lock_run_dir(None if temp_output else args.output, info)  # one run per run directory
    except ConfigError as e:
        sys.stderr.write(f"error{f' (rank {info.rank})' if info.distributed else ''}: {e}\n")
        cleanup()
        return 2
    if temp_output:
        args.output = tempfile.mkdtemp(prefix="smoke-") if info.is_main else "/nonexistent"
    steps_per_epoch, accum = data.steps_per_epoch, data.accum_steps
    total_steps = steps_per_epoch * args.epochs
    if info.is_main:
        os.makedirs(args.output, exist_ok=True)
        write_config(argparse.Namespace(**config_dict(args)), os.path.join(args.output, "args.yaml"))
    resume_pos = {"step": ckpt["step"], "epoch": ckpt["epoch"]} if ckpt else None
    if info.is_main:
        logger = RunLogger(args.output, True, resume=resume_pos)
    else:  # AUTOWU_LOG_ALL_RANKS=1 (a check that ranks agree): OUTPUT/rankN/ gets this rank's steps.csv/events.jsonl
        all_ranks = os.environ.get("AUTOWU_LOG_ALL_RANKS") == "1" and not temp_output
        logger = RunLogger(os.path.join(args.output, f"rank{info.rank}"), all_ranks, resume=resume_pos,
                           tensorboard=False, console=False)
    logger.write_json("env.json", environment(info, accum))
    for note in (lock.notes if lock else []) + ckpt_notes:
        logger.warning(note)
    logger.info(f"data: {data_source(args)}")
    heartbeat = Heartbeat(info, min(10.0, args.dist_timeout / 6), lambda rank, s: logger.warning(
        f"rank {rank} has not answered for {s:.0f} s; the job ends after --dist-timeout {args.dist_timeout:g} s "
        "unless it recovers")) if info.distributed else None
    logger.info(f"{args.model} on {args.dataset}: batch {args.batch_size} = {args.micro_batch} x {info.world_size} "
                f"processes x {accum} accumulation; {steps_per_epoch} steps/epoch x {args.epochs} epochs; "
                f"{args.opt} + {args.sched} (lr {args.lr:.4g}); device {info.device}")

    seed_everything(args.seed)  # identical initial weights on every rank
    model = create_model(args, data.num_classes, data.in_chans, data.img_size)
    if args.sync_bn and info.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(info.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer(args, model)
    amp = AmpGrad(args.amp, info.device, args.clip_grad)
    loss_fn = build_loss(args.label_smoothing)

    probe = None
    if args.sched == "autolr":  # AutoLR probes on training micro-batches from loaders of its own (epoch-0 order),
        probe = build_data(args, rank=info.rank, world_size=info.world_size, device=info.device).train

    def autolr_batches():  # so that probing never disturbs the training iterator
        for x, y in probe:
            yield x.to(info.device, non_blocking=True), y.to(info.device, non_blocking=True)

    def autolr_loss(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with amp.autocast():
            return loss_fn(m(x), y)

    scheduler = create_schedule(args, optimizer, model, steps_per_epoch, loss_fn=autolr_loss,
                                batches=autolr_batches, forwards_per_step=accum)
    if hasattr(scheduler, "keep_snapshots_in") and not temp_output:  # rollback snapshots: files, written once
        scheduler.keep_snapshots_in(os.path.join(args.output, "rollback"))
    state = LoopState()
    start_batch = 0
    if ckpt is not None:  # the scheduler is built first: building it rewrites the groups' LR
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if amp.scaler is not None and ckpt.get("scaler"):
            amp.scaler.load_state_dict(ckpt["scaler"])
        state = LoopState(**ckpt["loop"])
        start_batch = ckpt["batch_index"]
        logger.info(f"resumed from {ckpt_file}: epoch {state.epoch}, step {state.step}, micro-batch {start_batch}")
    raw_model = model
    if args.compile:
        model = torch.compile(model)
    if info.distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None)

    def save(path: str, batch_index: int) -> None:  # on every rank (collectives), rank 0 writes
        rngs = _gather_rng(info)
        if hasattr(scheduler, "reduce_pending_losses"):  # AutoWU mid-epoch: save the cross-rank average
            scheduler.reduce_pending_losses()
        error = None
        if info.is_main:
            try:
                save_checkpoint(path, model=raw_model, optimizer=optimizer, scheduler=scheduler, scaler=amp.scaler,
                                epoch=state.epoch, step=state.step, batch_index=batch_index, config=config_dict(args),
                                rng_per_rank=rngs,
                                extra={"loop": state.to_dict()})
            except CheckpointError as e:  # disk full, ...: every rank stops; the previous checkpoint is intact
                error = e
        if any_rank(error is not None, info):
            raise error or CheckpointError("rank 0 could not write the checkpoint; its log says why")

    stop = StopFlag()
    stop.install()
    try:
        status, process_start = "finished", time.perf_counter()
        last_epoch = 1 if args.smoke else args.epochs
        for epoch in range(state.epoch, last_epoch):
            state.epoch = epoch
            if start_batch and ckpt is not None and len(ckpt.get("rng_per_rank", [])) == info.world_size:
                set_rng_state(ckpt["rng_per_rank"][info.rank])  # mid-epoch resume: continue the same random stream
            else:  # dropout / augmentation streams are a function of (seed, epoch, rank)
                seed_everything(args.seed + 1_000_003 * (epoch + 1) + 7919 * info.rank + start_batch)
            data.train.set_epoch(epoch, start_batch=start_batch)
            result = train_one_epoch(model, data.train, optimizer, scheduler, amp, loss_fn, state,
                                     steps_per_epoch=steps_per_epoch, accum_steps=accum, batch_size=args.batch_size,
                                     info=info, logger=logger, args=args, stop=stop, start_batch=start_batch,
                                     max_steps=args.smoke or None, total_steps=total_steps)
            start_batch = 0
            if result.status == "preempted":
                state.elapsed_s += time.perf_counter() - process_start
                save(os.path.join(args.output, "last.pt"), result.batch_index)
                logger.log_event({"type": "preempted", "epoch": epoch, "step": state.step, "signal": stop.signal,
                                  "batch_index": result.batch_index})
                logger.info(f"signal {stop.signal}: saved {args.output}/last.pt at step {state.step}; exiting so the "
                            "requeued job resumes from it")
                return 130 if stop.signal == signal.SIGINT else 0  # Ctrl-C: the shell's "interrupted" status
            if result.status == "diverged":
                status = "diverged"
                logger.log_event({"type": "diverged", "epoch": epoch, "step": state.step,
                                  "consecutive": state.nonfinite_run, "total": state.nonfinite_total})
                logger.warning(f"diverged: {state.nonfinite_run} non-finite losses in a row (--max-nonfinite "
                               f"{args.max_nonfinite}) at step {state.step}; stopping. The last good checkpoint is "
                               f"{args.output}/last.pt (if an epoch finished)")
                break
            images_per_s = result.images / max(result.seconds, 1e-9)
            record = {"epoch": epoch, "step": state.step, "lr": result.last_lr,
                      "train_loss": result.train_loss, "val_loss": None, "top1": None, "top5": None,
                      "epoch_time": result.seconds, "images_per_s": images_per_s}
            if (epoch + 1) % args.val_interval == 0 or epoch + 1 == last_epoch:
                record.update(evaluate(model, data.val, amp, info, args.channels_last))
                state.final_top1, state.final_top5 = record["top1"], record["top5"]
                if record["top1"] is not None and (state.best_top1 is None or record["top1"] > state.best_top1):
                    state.best_top1, state.best_top5, state.best_epoch = record["top1"], record["top5"], epoch
            state.images_per_s.append(images_per_s)
            logger.log_epoch(record)
            logger.info(f"epoch {epoch}: train loss {_fmt(record['train_loss'])} val loss {_fmt(record['val_loss'])} "
                        f"top1 {_fmt(record['top1'])} top5 {_fmt(record['top5'])} ({result.seconds:.1f}s, "
                        f"{images_per_s:.0f} img/s)")
            state.epoch, state.epoch_loss_sum, state.epoch_loss_n = epoch + 1, 0.0, 0
            state.elapsed_s += time.perf_counter() - process_start
            process_start = time.perf_counter()
            if not args.smoke:
                if parameters_finite(raw_model.parameters()):
                    save(os.path.join(args.output, "last.pt"), 0)
                    if args.checkpoint_interval and (epoch + 1) % args.checkpoint_interval == 0 and info.is_main:
                        keep_copy(os.path.join(args.output, "last.pt"), os.path.join(args.output,
                                                                                   f"epoch_{epoch:03d}.pt"), logger)
                else:
                    logger.warning(f"epoch {epoch}: non-finite weights; last.pt is left as it was")
            if result.status == "stopped":
                break

        state.elapsed_s += time.perf_counter() - process_start
        if status == "finished" and not parameters_finite(raw_model.parameters()):  # never "finished" with NaNs
            status = "diverged"
            logger.warning("the weights are not finite at the end of training: the run diverged")
        hardware = (f"{info.world_size}x {torch.cuda.get_device_name(info.device)}" if info.device.type == "cuda"
                    else f"{info.world_size}x cpu ({platform.node()})")
        results = {"status": status, "config": config_dict(args), "final_top1": state.final_top1,
                   "final_top5": state.final_top5, "best_top1": state.best_top1, "best_top5": state.best_top5,
                   "best_epoch": state.best_epoch, "switch": getattr(scheduler, "switch", None),
                   "wall_time_s": state.elapsed_s, "epochs": state.epoch, "steps": state.step,
                   "images_per_s": (sum(state.images_per_s) / len(state.images_per_s)) if state.images_per_s else None,
                   "hardware": hardware}
        if hasattr(scheduler, "extra_forward_passes"):  # AutoLR's cost (its paper: <= 16.6% on CIFAR-10)
            results["autolr"] = {"extra_forward_passes": scheduler.extra_forward_passes,
                                 "overhead": scheduler.overhead, "compute_overhead": scheduler.compute_overhead}
        logger.write_json("results.json", results)
        logger.info(f"{status}: final top1 {_fmt(state.final_top1)} best top1 {_fmt(state.best_top1)} "
                    f"(epoch {state.best_epoch}); {state.step} steps in {state.elapsed_s:.0f}s")
        return 0
    except CheckpointError as e:
        logger.warning(f"error: {e}")
        sys.stderr.write(f"error: {e}\n")
        return 1
    except OSError as e:  # the run directory's disk is full, gone or read-only while writing logs
        if e.errno not in DISK_ERRORS:
            raise
        message = (f"cannot write to the run directory {args.output}: {e.strerror} ({errno.errorcode[e.errno]}"
                   f"{f', {e.filename}' if e.filename else ''}); last.pt is the last checkpoint. Free space or fix "
                   "the directory, then run the same command to resume")
        sys.stderr.write(f"error: {message}\n")
        return 1
    except RuntimeError as e:  # a collective failed: name the rank that stopped answering
        if heartbeat is None:
            raise
        message = heartbeat.describe_failure(e)
        heartbeat.stop(finished=False)
        logger.warning(f"error: {message}")
        sys.stderr.write(f"error (rank {info.rank}): {message}\n")
        return 1
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        stop.uninstall()
        if lock is not None:
            lock.release()
        logger.close()
        if temp_output and info.is_main:
            shutil.rmtree(args.output, ignore_errors=True)
        cleanup()


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


if __name__ == "__main__":
    try:
        parsed = parse_args(get_args_parser())
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(main(parsed))
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the loop started: no traceback, nothing saved
        print("interrupted: exiting without saving (the last checkpoint, if any, is as it was)", file=sys.stderr)
        sys.exit(130)
