"""The loaders: this rank's training micro-batches and validation batches.

Both training pipelines shuffle and shard like ``DistributedSampler(drop_last=True)`` with seed ``seed + epoch``:
- *batched* (:class:`TensorTrainLoader`): the uint8 training set is held in memory (on the GPU with ``--gpu-data``)
  and each micro-batch is augmented at once by framework/gpu_data.py;
- *workers* (:class:`WorkerTrainLoader`): a ``DataLoader`` with worker processes, pinned memory, persistent workers
  and prefetching that applies torchvision / timm transforms per sample.
``set_epoch(epoch, start_batch=k)`` yields exactly the tail of the full epoch. Step ``s`` of an epoch uses samples
``s*B .. (s+1)*B-1`` of the epoch's permutation under any split of the global batch ``B`` (the shard is dealt
round-robin), which is what lets a run resume under another split (framework/runspec.py).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Optional

import torch
from torch.utils.data import DataLoader, Dataset

from .augment import mix
from .seeding import derive_seed, seeded_rngs
from .gpu_data import BatchAugment


def shard_indices(n: int, *, epoch: int, seed: int, rank: int, world_size: int) -> torch.Tensor:
    """This rank's sample order for ``epoch``: a permutation seeded with ``seed + epoch``, cut to a multiple of
    ``world_size`` and dealt round-robin (``DistributedSampler(shuffle=True, drop_last=True)``)."""
    g = torch.Generator().manual_seed(seed + epoch)
    perm = torch.randperm(n, generator=g)
    return perm[rank:(n // world_size) * world_size:world_size]

class TrainLoader:
    """Common part: ``num_batches`` micro-batches of ``micro_batch`` per epoch, ``set_epoch(epoch, start_batch)``."""

    def __init__(self, n: int, *, micro_batch: int, num_batches: int, rank: int, world_size: int, seed: int,
                 mixup: Optional[Any] = None, device: torch.device = torch.device("cpu")):
        self.n, self.micro_batch, self.num_batches = n, micro_batch, num_batches
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.mixup, self.device = mixup, device
        self.epoch, self.start_batch = 0, 0

    def __len__(self) -> int:
        return self.num_batches

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's shuffle and start at micro-batch ``start_batch`` (mid-epoch resume)."""
        if not 0 <= start_batch <= self.num_batches:
            raise ValueError(f"start_batch {start_batch} outside 0..{self.num_batches}")
        self.epoch, self.start_batch = epoch, start_batch

    def batch_indices(self) -> Iterator[tuple[int, torch.Tensor]]:
        order = shard_indices(self.n, epoch=self.epoch, seed=self.seed, rank=self.rank, world_size=self.world_size)
        for b in range(self.start_batch, self.num_batches):
            yield b, order[b * self.micro_batch:(b + 1) * self.micro_batch]

    def batch_seed(self, b: int, stream: int) -> int:
        return derive_seed(self.seed, self.epoch, self.rank, b, stream)


class TensorTrainLoader(TrainLoader):
    """The batched pipeline: a uint8 (N, C, H, W) training set in memory (on ``images.device``), augmented one
    micro-batch at a time by :class:`~framework.gpu_data.BatchAugment`."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: BatchAugment, **kw: Any):
        super().__init__(len(labels), device=images.device, **kw)
        self.images, self.labels, self.augment = images, labels, augment

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for b, idx in self.batch_indices():
            idx = idx.to(self.images.device)
            x = self.augment(self.images[idx], self.batch_seed(b, 0))
            yield mix(self.mixup, x, self.labels[idx], self.batch_seed(b, 1))


class WorkerTrainLoader(TrainLoader):
    """The workers pipeline: a ``DataLoader`` over a :class:`SeededDataset` whose batches of ``(index, epoch)`` keys
    come from this object's shard, so per-sample augmentation is seeded by (seed, epoch, index)."""

    def __init__(self, dataset: Dataset, *, workers: int, pin_memory: bool,
                 on_device: Optional[Callable[[Any], torch.Tensor]] = None, collate_fn: Optional[Callable] = None,
                 **kw: Any):
        """``dataset[(index, epoch)]`` -> (image, label); ``on_device(x, seed)``: what the batch's images become on
        the run's device, with the batch's seed for its augmentation there (framework/jpeg.py: uint8 -> normalised float, or the nvJPEG decode of file bytes)."""
        super().__init__(len(dataset), **kw)
        self.on_device = on_device
        self.loader = DataLoader(dataset, batch_sampler=_KeySampler(self), num_workers=workers,
                                 pin_memory=pin_memory, persistent_workers=workers > 0,
                                 prefetch_factor=4 if workers > 0 else None, collate_fn=collate_fn,
                                 generator=torch.Generator())  # its own generator: no draw from the global RNG

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for b, batch in enumerate(self.loader, start=self.start_batch):
            x, y = batch[:-1] if len(batch) > 2 else batch[0], batch[-1]
            if self.on_device is not None:
                x, y = self.on_device(x, self.batch_seed(b, 2)), y.to(self.device, non_blocking=True)
            elif self.mixup is not None:  # mix on the device, like DeiT
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            yield mix(self.mixup, x, y, self.batch_seed(b, 1))


class _KeySampler:
    """Batch sampler of a WorkerTrainLoader: lists of ``(index, epoch)`` keys, read at each new epoch."""

    def __init__(self, owner: TrainLoader):
        self.owner = owner

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for _, idx in self.owner.batch_indices():
            yield [(i, self.owner.epoch) for i in idx.tolist()]

    def __len__(self) -> int:
        return self.owner.num_batches - self.owner.start_batch


class SeededDataset(Dataset):
    """Wraps a dataset of ``(image, label)``; item ``(index, epoch)`` applies ``transform`` with the global RNGs
    seeded from ``(seed, epoch, index)`` (and restored after), so augmentation does not depend on workers or order."""

    def __init__(self, base: Dataset, transform: Callable, seed: int):
        self.base, self.transform, self.seed = base, transform, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, epoch = key
        img, label = self.base[index]
        in_worker = torch.utils.data.get_worker_info() is not None
        with seeded_rngs(derive_seed(self.seed, epoch, index, 7), restore=not in_worker):
            return self.transform(img), int(label)


class TensorDataset(Dataset):
    """uint8 (N, C, H, W) images + labels as a map-style dataset of (CHW uint8 tensor, label)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


# -- validation ----------------------------------------------------------------------------------------
class TensorValLoader:
    """Every ``world_size``-th validation image from ``rank`` on (no drop: ranks' shards cover the set exactly once),
    normalised, in batches of ``batch_size``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: BatchAugment, *, batch_size: int,
                 rank: int, world_size: int):
        self.images, self.labels = images[rank::world_size], labels[rank::world_size]
        self.augment, self.batch_size = augment, batch_size

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(self.labels), self.batch_size):
            yield self.augment(self.images[i:i + self.batch_size]), self.labels[i:i + self.batch_size]
