"""Batch arithmetic, in one place: how a GLOBAL batch (the images of one optimizer step) is split over processes,
micro-batches and gradient accumulation, and how many optimizer steps an epoch has.

``--micro-batch`` is the per-device MAXIMUM: :func:`split_batch` takes the largest per-device micro-batch not above it
that divides each process's share of the batch, so a config written for one process runs unchanged on 2, 8 or 64.
A run's position is counted in optimizer steps and samples, never in micro-batches (:meth:`BatchSplit.micro_batches`
converts), so a checkpoint can continue under another split at the same step and sample.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional


class BatchError(ValueError):
    """A batch that cannot be split as asked; the message says what to change."""


@dataclass(frozen=True)
class BatchSplit:
    """``batch_size = micro_batch x world_size x accum_steps``."""
    batch_size: int  # global: images per optimizer step, all processes together
    micro_batch: int  # images per device per forward pass
    world_size: int
    accum_steps: int  # micro-batches per optimizer step on each process

    @property
    def per_process(self) -> int:
        return self.batch_size // self.world_size

    def micro_batches(self, samples: int) -> int:
        """Micro-batches each process has consumed after ``samples`` images of an epoch (all processes together);
        ``samples`` must fall on a micro-batch boundary."""
        per_round = self.micro_batch * self.world_size
        if samples % per_round:
            raise BatchError(f"position {samples} samples is not a whole number of micro-batches of "
                             f"{self.micro_batch} x {self.world_size} processes")
        return samples // per_round

    def describe(self) -> str:
        return (f"batch {self.batch_size} = {self.micro_batch} x {self.world_size} processes x {self.accum_steps} "
                "accumulation")

    def to_dict(self) -> dict:
        return asdict(self)


def split_batch(batch_size: int, world_size: int, max_micro: Optional[int] = None, even: bool = False) -> BatchSplit:
    """The split of global ``batch_size`` over ``world_size`` processes with the largest micro-batch
    ``<= max_micro`` (None: the whole per-process share, no accumulation) that divides the per-process share.
    ``even``: the micro-batch must be even (mixup/cutmix pair each image with the batch's mirror)."""
    if batch_size < 1:
        raise BatchError(f"--batch-size must be >= 1, got {batch_size}")
    if world_size < 1:
        raise BatchError(f"the number of processes must be >= 1, got {world_size}")
    if batch_size % world_size:
        raise BatchError(f"--batch-size {batch_size} is not divisible by the {world_size} processes: the global batch "
                         f"is shared equally, so choose a multiple of {world_size} (or another process count)")
    share = batch_size // world_size
    cap = share if max_micro is None else int(max_micro)
    if cap < 1:
        raise BatchError(f"--micro-batch must be >= 1, got {max_micro}")
    micro = next((m for m in range(min(cap, share), 0, -1) if share % m == 0 and (m % 2 == 0 or not even)), None)
    if micro is None:
        raise BatchError(f"no even micro-batch <= {cap} divides the {share} images per process (batch {batch_size} / "
                         f"{world_size} processes), and --mixup/--cutmix need an even --micro-batch: change "
                         "--batch-size or --micro-batch")
    return BatchSplit(batch_size, micro, world_size, share // micro)


def steps_per_epoch(train_size: int, batch_size: int) -> int:
    """Optimizer steps per epoch: whole global batches of the training set (the last partial batch is dropped)."""
    steps = train_size // batch_size
    if steps < 1:
        raise BatchError(f"the training set has {train_size} images, fewer than one batch of {batch_size}: lower "
                         "--batch-size or enlarge the set")
    return steps
