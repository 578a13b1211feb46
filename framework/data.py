"""Datasets, augmentation and loaders for train.py: :func:`build_data` returns a :class:`Data` whose ``train`` yields
micro-batches of exactly ``micro_batch`` images for this rank and whose ``val`` yields this rank's share of the
validation set.

Datasets (``--dataset``):
- ``fashion_mnist``: the four idx files (``*-idx?-ubyte[.gz]``) from ``--data-dir`` (plain, ``fashion-mnist/`` or
  torchvision's ``FashionMNIST/raw/``) or the Debian package ``dataset-fashion-mnist`` (/usr/share/datasets/...);
- ``cifar10`` / ``cifar100``: torchvision's download layout (``cifar-10-batches-py/``, ``cifar-100-python/``);
- ``imagenet``: ``train/`` and ``val/`` with one folder per class (torchvision ``ImageFolder``);
- ``synthetic``: deterministic random images at any size whose class sets a smooth colour pattern (learnable).
``scripts/prepare_data.py`` fetches or checks each of them.

Pipelines (both shuffle and shard like ``DistributedSampler(drop_last=True)`` with seed ``seed + epoch``):
- *batched*: the uint8 training set is held in memory (on the GPU with ``--gpu-data``) and each micro-batch is
  augmented at once by framework/gpu_data.py. Used for CIFAR / Fashion-MNIST when ``--gpu-data`` is set, and for
  them on the CPU whenever their augmentation has no per-sample-only part (no ``--auto-augment``, no ``--reprob``):
  it is the same augmentation, several times faster (scripts/bench_loader.py);
- *workers*: a ``DataLoader`` with worker processes, pinned memory, persistent workers and prefetching that applies
  torchvision / timm transforms per sample (ImageNet always; CIFAR with AutoAugment on the CPU; synthetic).
Augmentation randomness is a function of ``(seed, epoch, sample or batch index)`` only, never of the global RNGs, of
the worker count or of where a run resumed, so ``set_epoch(epoch, start_batch=k)`` yields exactly the tail of the
full epoch. Mixup/CutMix (timm ``Mixup``) is applied by the training loader itself: it then yields float soft targets
(label smoothing folded in), which the engine's loss handles as soft-target cross-entropy.
"""
from __future__ import annotations

import argparse
import gzip
import os
import pickle
import random
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .gpu_data import BatchAugment

# (num_classes, in_chans, img_size): the native shape of each dataset (smoke mode uses it for synthetic stand-ins)
DATASET_META = {"fashion_mnist": (10, 1, 28), "cifar10": (10, 3, 32), "cifar100": (100, 3, 32),
                "imagenet": (1000, 3, 224)}

# per-channel mean / std of the training images (ImageNet: timm's constants)
MEAN_STD = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
SUBSET_SEED = 0  # --train-subset / --val-subset draw the same images whatever --seed is
DEIT_RAND_AUGMENT = "rand-m9-mstd0.5-inc1"  # Touvron et al. 2020, the ViT-S/16 recipe of Appendix B


@dataclass
class Data:
    """What train.py needs to know about its data (see docs/DESIGN.md)."""
    train: "TrainLoader"
    val: Iterable
    num_classes: int
    in_chans: int
    img_size: int
    train_size: int
    steps_per_epoch: int  # optimizer steps per epoch: train_size // batch_size (last partial batch dropped)
    accum_steps: int  # micro-batches per optimizer step on each rank
    pipeline: str  # "batched" or "workers"


# -- seeds, sharding, mixup ----------------------------------------------------------------------------------------
def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (NumPy's SeedSequence hash)."""
    return int(np.random.SeedSequence([int(p) % 2**63 for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


@contextmanager
def seeded_rngs(seed: int, restore: bool = True):
    """Run a block with Python's, NumPy's and torch's CPU generators seeded from ``seed``: library transforms
    (torchvision, timm) and timm's Mixup draw from those global generators. ``restore``: put the caller's states back
    afterwards (needed in the training process; DataLoader workers own their generators and skip the cost)."""
    saved = (random.getstate(), np.random.get_state(), torch.get_rng_state()) if restore else None
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)  # CPU only: torch.manual_seed also seeds every device (slow)
    try:
        yield
    finally:
        if saved is not None:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


def shard_indices(n: int, *, epoch: int, seed: int, rank: int, world_size: int) -> torch.Tensor:
    """This rank's sample order for ``epoch``: a permutation seeded with ``seed + epoch``, cut to a multiple of
    ``world_size`` and dealt round-robin (``DistributedSampler(shuffle=True, drop_last=True)``)."""
    g = torch.Generator().manual_seed(seed + epoch)
    perm = torch.randperm(n, generator=g)
    return perm[rank:(n // world_size) * world_size:world_size]


def mixup_fn(args: argparse.Namespace, num_classes: int) -> Optional[Any]:
    """timm ``Mixup`` (mixup alpha ``--mixup``, CutMix alpha ``--cutmix``, label smoothing folded into the soft
    targets) when either is on, else None. Its targets are float (N, classes): train with soft-target cross-entropy."""
    if not (getattr(args, "mixup", 0) or getattr(args, "cutmix", 0)):
        return None
    from timm.data import Mixup
    return Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, label_smoothing=args.label_smoothing or 0.0,
                 num_classes=num_classes)


def _mix(mixup: Optional[Any], x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if mixup is None:
        return x, y
    with seeded_rngs(seed):  # timm's Mixup draws lambda and the box from NumPy's global generator
        return mixup(x, y)


# -- the training iterables ------------------------------------------------------------------------------------------
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
            yield _mix(self.mixup, x, self.labels[idx], self.batch_seed(b, 1))


class WorkerTrainLoader(TrainLoader):
    """The workers pipeline: a ``DataLoader`` over a :class:`SeededDataset` whose batches of ``(index, epoch)`` keys
    come from this object's shard, so per-sample augmentation is seeded by (seed, epoch, index)."""

    def __init__(self, dataset: "SeededDataset", *, workers: int, pin_memory: bool, **kw: Any):
        super().__init__(len(dataset), **kw)
        self.loader = DataLoader(dataset, batch_sampler=_KeySampler(self), num_workers=workers,
                                 pin_memory=pin_memory, persistent_workers=workers > 0,
                                 prefetch_factor=4 if workers > 0 else None,
                                 generator=torch.Generator())  # its own generator: no draw from the global RNG

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for b, (x, y) in enumerate(self.loader, start=self.start_batch):
            if self.mixup is not None:  # mix on the device, like DeiT
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            yield _mix(self.mixup, x, y, self.batch_seed(b, 1))


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


# -- validation iterables ----------------------------------------------------------------------------------------
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


# -- datasets on disk ----------------------------------------------------------------------------------------------
def _read_idx(path: Path) -> np.ndarray:
    """An idx file (LeCun's MNIST format, optionally gzipped) as a uint8 array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path} is not an idx file of unsigned bytes (magic {raw[:4].hex()})")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but holds {data.size} bytes (truncated download?)")
    return data.reshape(shape)


def fashion_mnist_dirs(data_dir: str) -> list[Path]:
    """Where Fashion-MNIST's idx files are looked for, in order."""
    d = Path(data_dir)
    return [d, d / "fashion-mnist", d / "fashion_mnist", d / "FashionMNIST" / "raw", Path(DEBIAN_FASHION_MNIST)]


def find_fashion_mnist(data_dir: str) -> Optional[Path]:
    """The first of :func:`fashion_mnist_dirs` holding all four idx files (plain or .gz), or None."""
    for d in fashion_mnist_dirs(data_dir):
        if all(_idx_file(d, name) for pair in FASHION_FILES.values() for name in pair):
            return d
    return None


def _idx_file(d: Path, name: str) -> Optional[Path]:
    for candidate in (d / name, d / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_fashion_mnist(data_dir: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST (Xiao et al. 2017): uint8 images (N, 1, 28, 28) and int64 labels; 60k train / 10k val."""
    d = find_fashion_mnist(data_dir)
    if d is None:
        looked = ", ".join(str(p) for p in fashion_mnist_dirs(data_dir))
        raise FileNotFoundError(
            f"Fashion-MNIST not found: looked for {', '.join(n + '[.gz]' for p in FASHION_FILES.values() for n in p)} "
            f"in {looked}. Get it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or "
            f"`python scripts/prepare_data.py --dataset fashion_mnist --data-dir {data_dir}`")
    images_name, labels_name = FASHION_FILES[split]
    images = _read_idx(_idx_file(d, images_name))
    labels = _read_idx(_idx_file(d, labels_name))
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(f"{d}: {images_name} has shape {images.shape} for {len(labels)} labels")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


CIFAR_LAYOUT = {  # folder, training files, test files, label key (torchvision's download layout)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels"),
}


def find_cifar(name: str, data_dir: str) -> tuple[Optional[Path], list[Path]]:
    """(folder holding the python-pickle batches or None, the folders looked in)."""
    folder, train_files, test_files, _ = CIFAR_LAYOUT[name]
    d = Path(data_dir)
    candidates = [d / folder, d / name / folder, d]
    for c in candidates:
        if all((c / f).is_file() for f in train_files + test_files):
            return c, candidates
    return None, candidates


def load_cifar(name: str, data_dir: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10/100 (Krizhevsky 2009) from torchvision's download layout: uint8 (N, 3, 32, 32), int64 labels."""
    d, looked = find_cifar(name, data_dir)
    if d is None:
        raise FileNotFoundError(
            f"{name} not found: looked for {CIFAR_LAYOUT[name][0]}/ (python version, as torchvision downloads it) in "
            f"{', '.join(str(p) for p in looked)}. Download it with `python scripts/prepare_data.py --dataset {name} "
            f"--data-dir {data_dir}` (torchvision) or unpack {CIFAR_LAYOUT[name][0]}.tar.gz there")
    _, train_files, test_files, key = CIFAR_LAYOUT[name]
    images, labels = [], []
    for f in train_files if split == "train" else test_files:
        with open(d / f, "rb") as fh:
            batch = pickle.load(fh, encoding="latin1")
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(batch[key])
    return torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.int64)


def imagenet_root(data_dir: str) -> Path:
    d = Path(data_dir)
    return d / "imagenet" if not (d / "train").is_dir() and (d / "imagenet" / "train").is_dir() else d


def check_imagenet(data_dir: str) -> list[str]:
    """What is wrong with an ImageFolder layout (``train/`` and ``val/``, one folder per class, same classes in
    both, no empty class); an empty list when it looks usable."""
    root = imagenet_root(data_dir)
    problems: list[str] = []
    classes: dict[str, list[str]] = {}
    for split in ("train", "val"):
        d = root / split
        if not d.is_dir():
            problems.append(f"missing folder {d}/ (one sub-folder of images per class)")
            continue
        classes[split] = sorted(e.name for e in os.scandir(d) if e.is_dir())
        if not classes[split]:
            problems.append(f"{d}/ has no class folders (val/ must be sorted into class folders too, e.g. with "
                            "the valprep.sh script of the PyTorch ImageNet example)")
        empty = [c for c in classes[split] if not any(os.scandir(d / c))]
        if empty:
            problems.append(f"{d}/ has {len(empty)} empty class folder(s): {', '.join(empty[:5])}")
    if len(classes) == 2 and classes["train"] != classes["val"]:
        problems.append(f"train/ has {len(classes['train'])} classes but val/ has {len(classes['val'])} "
                        "(or different names)")
    return problems


class SyntheticImages(Dataset):
    """Deterministic random uint8 images: image ``i`` = its class's smooth colour pattern (a random 4x4 pattern per
    class, upsampled) plus noise, both from the seed; labels uniform over the classes. A network can learn it,
    so a loss decreases."""

    def __init__(self, n: int, num_classes: int, in_chans: int, img_size: int, seed: int, split: int = 0):
        g = torch.Generator().manual_seed(derive_seed(seed, 101))
        self.patterns = torch.rand(num_classes, in_chans, 4, 4, generator=g)
        self.labels = torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(
            derive_seed(seed, 102, split)))
        self.img_size, self.seed, self.split = img_size, seed, split

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        y = int(self.labels[i])
        pattern = F.interpolate(self.patterns[y:y + 1], size=(self.img_size,) * 2, mode="bilinear",
                                align_corners=False)[0]
        g = torch.Generator().manual_seed(derive_seed(self.seed, 103, self.split, i))
        noise = torch.randn(pattern.shape, generator=g)
        return (64 + 128 * pattern + 24 * noise).round().clamp(0, 255).to(torch.uint8), y

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images as one uint8 (N, C, H, W) tensor (the batched pipeline)."""
        return torch.stack([self[i][0] for i in range(len(self))]), self.labels.clone()


def _subset(images: Any, labels: torch.Tensor, k: Optional[int], what: str) -> tuple[Any, torch.Tensor]:
    """A fixed random subset of ``k`` images (seed SUBSET_SEED, kept in dataset order), or everything."""
    if k is None:
        return images, labels
    n = len(labels)
    if not 0 < k <= n:
        raise ValueError(f"--{what} {k}: must be between 1 and the {n} images available")
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(SUBSET_SEED))[:k].sort().values
    if isinstance(images, torch.Tensor):
        return images[idx], labels[idx]
    return torch.utils.data.Subset(images, idx.tolist()), labels[idx]


# -- per-sample transforms -----------------------------------------------------------------------------------------
def array_transform(args: argparse.Namespace, mean: Sequence[float], std: Sequence[float], img_size: int) -> Callable:
    """torchvision v2 training transform of a uint8 CHW tensor (the CIFAR recipe of Appendix A): random crop with
    padding, flip, AutoAugment (CIFAR-10 policy), to float, normalise, Cutout (RandomErasing of a fixed square,
    value 0 = the mean), random erasing ``--reprob``."""
    from torchvision.transforms import v2
    t: list = []
    if args.crop_pad:
        t.append(v2.RandomCrop(img_size, padding=args.crop_pad))
    if args.hflip:
        t.append(v2.RandomHorizontalFlip())
    if args.auto_augment:
        t.append(v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10))
    t += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    if args.cutout:
        area = min(args.cutout, img_size) ** 2 / img_size ** 2
        t.append(v2.RandomErasing(p=1.0, scale=(area, area), ratio=(1.0, 1.0), value=0))
    if args.reprob:
        t.append(v2.RandomErasing(p=args.reprob, value=0))
    return v2.Compose(t)


def imagenet_transforms(args: argparse.Namespace, img_size: int) -> tuple[Callable, Callable]:
    """timm transforms. Default (He et al. 2016): RandomResizedCrop + flip, bilinear; val resize 256 / centre 224.
    ``--auto-augment``: the DeiT recipe (RandAugment rand-m9-mstd0.5-inc1, bicubic, random erasing ``--reprob``
    in 'pixel' mode)."""
    from timm.data import create_transform
    deit = bool(args.auto_augment)
    interpolation = "bicubic" if deit else "bilinear"
    mean, std = MEAN_STD["imagenet"]
    train = create_transform(img_size, is_training=True, hflip=0.5 if args.hflip else 0.0,
                             color_jitter=0.4 if deit else None, auto_augment=DEIT_RAND_AUGMENT if deit else None,
                             interpolation=interpolation, re_prob=args.reprob or 0.0, re_mode="pixel", re_count=1,
                             mean=mean, std=std)
    val = create_transform(img_size, is_training=False, interpolation=interpolation, crop_pct=224 / 256,
                           mean=mean, std=std)
    return train, val


# -- build_data --------------------------------------------------------------------------------------------------
def build_data(args: argparse.Namespace, *, rank: int, world_size: int, device: torch.device,
               pipeline: str = "auto") -> Data:
    """Load ``args.dataset`` and build this rank's training and validation iterables (docs/DESIGN.md).

    ``pipeline``: "auto" (see the module docstring), "batched" or "workers" (scripts/bench_loader.py compares them).
    Raises FileNotFoundError for a missing dataset and ValueError for settings that do not fit together."""
    if pipeline not in ("auto", "batched", "workers"):
        raise ValueError(f"pipeline {pipeline!r}: use auto, batched or workers")
    name = args.dataset
    micro, batch = int(args.micro_batch), int(args.batch_size)
    if micro < 1 or batch % (micro * world_size):
        raise ValueError(f"--batch-size {batch} is not a multiple of --micro-batch {micro} x {world_size} processes "
                         f"= {micro * world_size}: choose batch = micro-batch x processes x accumulation steps")
    accum = batch // (micro * world_size)

    if name == "imagenet":
        return _build_imagenet(args, rank=rank, world_size=world_size, device=device, micro=micro, accum=accum)
    if name == "synthetic":
        num_classes, in_chans, img_size = args.num_classes, args.in_chans, args.img_size
        if not (num_classes and in_chans and img_size):
            raise ValueError("--dataset synthetic needs --num-classes, --in-chans and --img-size")
        mean, std = (0.5,) * in_chans, (0.25,) * in_chans
        train_set = SyntheticImages(args.synthetic_train_size, num_classes, in_chans, img_size, args.seed, 0)
        val_set = SyntheticImages(args.synthetic_val_size, num_classes, in_chans, img_size, args.seed, 1)
        train_x, train_y = train_set, train_set.labels
        val_x, val_y = val_set.tensors()
    elif name in ("fashion_mnist", "cifar10", "cifar100"):
        num_classes, in_chans, img_size = DATASET_META[name]
        given = {"num-classes": (args.num_classes, num_classes), "in-chans": (args.in_chans, in_chans),
                 "img-size": (args.img_size, img_size)}
        for flag, (value, native) in given.items():
            if value is not None and value != native:
                raise ValueError(f"--{flag} {value} does not match {name} ({native}); leave it unset")
        mean, std = MEAN_STD[name]
        load = load_fashion_mnist if name == "fashion_mnist" else (lambda d, s: load_cifar(name, d, s))
        train_x, train_y = load(args.data_dir, "train")
        val_x, val_y = load(args.data_dir, "val")
    else:
        raise ValueError(f"--dataset {name!r}: use one of {', '.join([*DATASET_META, 'synthetic'])}")

    train_x, train_y = _subset(train_x, train_y, args.train_subset, "train-subset")
    val_x, val_y = _subset(val_x, val_y, args.val_subset, "val-subset")
    train_size = len(train_y)
    steps = _steps(train_size, batch)
    mixup = _checked_mixup(args, num_classes, micro)
    per_sample_only = bool(args.auto_augment or args.reprob)
    if pipeline == "auto":
        pipeline = "batched" if args.gpu_data or (name != "synthetic" and not per_sample_only) else "workers"
    if pipeline == "batched" and args.reprob:
        raise ValueError("--reprob (random erasing) is not available with --gpu-data; use --cutout")
    data_device = device if args.gpu_data else torch.device("cpu")
    common = dict(micro_batch=micro, num_batches=steps * accum, rank=rank, world_size=world_size, seed=args.seed,
                  mixup=mixup)
    augment = BatchAugment(mean, std, data_device, crop_pad=args.crop_pad or 0, hflip=bool(args.hflip),
                           auto_augment=bool(args.auto_augment), cutout=args.cutout or 0)
    if pipeline == "batched":
        if isinstance(train_x, Dataset):  # synthetic: generated per sample, held as one tensor here
            train_x = torch.stack([train_x[i][0] for i in range(len(train_x))])
        train: TrainLoader = TensorTrainLoader(train_x.to(data_device), train_y.to(data_device), augment, **common)
    else:
        base = train_x if isinstance(train_x, Dataset) else TensorDataset(train_x, train_y)
        dataset = SeededDataset(base, array_transform(args, mean, std, img_size), args.seed)
        train = WorkerTrainLoader(dataset, workers=args.workers, pin_memory=_pin(args, device), device=device,
                                  **common)
    val = TensorValLoader(val_x.to(data_device), val_y.to(data_device), augment, batch_size=_val_batch(args),
                          rank=rank, world_size=world_size)
    return Data(train, val, num_classes, in_chans, img_size, train_size, steps, accum, pipeline)


def _steps(train_size: int, batch: int) -> int:
    steps = train_size // batch
    if steps < 1:
        raise ValueError(f"the training set has {train_size} images, fewer than one batch of {batch}: lower "
                         "--batch-size or enlarge the set")
    return steps


def _checked_mixup(args: argparse.Namespace, num_classes: int, micro: int) -> Optional[Any]:
    mixup = mixup_fn(args, num_classes)
    if mixup is not None and micro % 2:
        raise ValueError(f"--mixup/--cutmix need an even --micro-batch (got {micro}): they pair each image with "
                         "the batch's mirror")
    return mixup


def _val_batch(args: argparse.Namespace) -> int:
    return int(args.val_batch_size or args.micro_batch)


def _pin(args: argparse.Namespace, device: torch.device) -> bool:
    return bool(args.pin_mem) and device.type == "cuda"


def _build_imagenet(args: argparse.Namespace, *, rank: int, world_size: int, device: torch.device, micro: int,
                    accum: int) -> Data:
    """ImageNet from an ImageFolder layout through DataLoader workers (timm transforms)."""
    from torchvision.datasets import ImageFolder
    problems = check_imagenet(args.data_dir)
    if problems:
        raise FileNotFoundError(
            f"ImageNet not usable at {imagenet_root(args.data_dir)}: " + "; ".join(problems) +
            ". Expected DIR/train/<class>/*.JPEG and DIR/val/<class>/*.JPEG (check with `python "
            f"scripts/prepare_data.py --dataset imagenet --data-dir {args.data_dir}`)")
    if args.gpu_data:
        raise ValueError("--gpu-data holds small datasets (CIFAR, Fashion-MNIST) on the device; ImageNet is read "
                         "by DataLoader workers: drop --gpu-data")
    root = imagenet_root(args.data_dir)
    img_size = args.img_size or DATASET_META["imagenet"][2]
    train_tf, val_tf = imagenet_transforms(args, img_size)
    train_set, val_set = ImageFolder(str(root / "train")), ImageFolder(str(root / "val"), transform=val_tf)
    num_classes = len(train_set.classes)
    if args.num_classes is not None and args.num_classes != num_classes:
        raise ValueError(f"--num-classes {args.num_classes} but {root / 'train'} has {num_classes} class folders")
    train_base, train_y = _subset(train_set, torch.tensor(train_set.targets), args.train_subset, "train-subset")
    val_base, _ = _subset(val_set, torch.tensor(val_set.targets), args.val_subset, "val-subset")
    steps = _steps(len(train_y), args.batch_size)
    mixup = _checked_mixup(args, num_classes, micro)
    pin = _pin(args, device)
    train = WorkerTrainLoader(SeededDataset(train_base, train_tf, args.seed), workers=args.workers, pin_memory=pin,
                              device=device, micro_batch=micro, num_batches=steps * accum, rank=rank,
                              world_size=world_size, seed=args.seed, mixup=mixup)
    shard = list(range(rank, len(val_base), world_size))
    val = DataLoader(torch.utils.data.Subset(val_base, shard), batch_size=_val_batch(args), shuffle=False,
                     num_workers=args.workers, pin_memory=pin, persistent_workers=args.workers > 0,
                     prefetch_factor=4 if args.workers > 0 else None)
    return Data(train, val, num_classes, 3, img_size, len(train_y), steps, accum, "workers")
