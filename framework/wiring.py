"""A run's training parts wired from its settings, in one place: the optimizer over the model, the loss, and the LR
schedule with what its registry entry asks for (the model for rollback, probe batches for AutoLR). train.py and the
benchmarks (scripts/bench_throughput.py, scripts/bench_checkpoint.py) build them here, so a benchmark measures what
train.py runs."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import torch
from torch import nn

import autowu

from .engine import AmpGrad, build_loss, probe_loss
from .optim import create_optimizer, create_schedule


@dataclass
class TrainingParts:
    optimizer: torch.optim.Optimizer
    loss_fn: Callable
    scheduler: Any
    schedule: autowu.ScheduleEntry  # the registry entry of --sched (how train.py logs and saves it)


def wire_training(args: argparse.Namespace, model: nn.Module, amp: AmpGrad, steps_per_epoch: int, *,
                  probe_batches: Optional[Callable[[], Iterator]] = None, forwards_per_step: int = 1,
                  run_dir: Optional[str] = None) -> TrainingParts:
    """Optimizer, loss and schedule for ``model``. ``probe_batches``: training batches on the device for a schedule
    that probes (AutoLR); ``run_dir``: where AutoWU's rollback snapshots go as files (None: host memory)."""
    optimizer = create_optimizer(args, model, steps_per_epoch)
    loss_fn = build_loss(args.label_smoothing)
    schedule = autowu.schedule_entry(args.sched)
    scheduler = create_schedule(args, optimizer, model, steps_per_epoch, loss_fn=probe_loss(amp, loss_fn),
                                batches=probe_batches, forwards_per_step=forwards_per_step)
    if run_dir is not None:
        schedule.attach_run_dir(scheduler, run_dir)
    return TrainingParts(optimizer, loss_fn, scheduler, schedule)
