"""The builder: :func:`build_data` returns a :class:`Data` whose ``train`` yields micro-batches of exactly the split's
micro-batch for this rank and whose ``val`` yields this rank's share of the validation set.

Concerns live in their own modules: the datasets and their readers (framework/datasets.py), augmentation
(framework/augment.py, framework/gpu_data.py), the loaders (framework/loaders.py), the batch split
(framework/batch.py). The pipeline is *batched* for CIFAR / Fashion-MNIST when ``--gpu-data`` is set, and for them on
the CPU whenever their augmentation has no per-sample-only part (no ``--auto-augment``, no ``--reprob``): the same
augmentation, several times faster (scripts/bench_loader.py); *workers* otherwise (ImageNet always; CIFAR with
AutoAugment on the CPU; synthetic). Mixup/CutMix (timm ``Mixup``) is applied by the training loader itself: it then
yields float soft targets (label smoothing folded in), which the engine's loss handles as soft-target cross-entropy.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch.utils.data import DataLoader, Dataset

from .augment import DEIT_RAND_AUGMENT, array_transform, imagenet_transforms, mixup_fn, uses_mixup
from .batch import BatchSplit, split_batch, steps_per_epoch
from .datasets import DATASET_NAMES, DATASETS, SyntheticImages, check_imagenet, imagenet_root, subset
from .gpu_data import BatchAugment, grouped_randaugment, parse_rand_augment, random_erasing
from .seeding import derive_seed
from .loaders import SeededDataset, TensorDataset, TensorTrainLoader, TensorValLoader, TrainLoader, WorkerTrainLoader


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
    split: BatchSplit  # batch = micro-batch x processes x accumulation (framework/batch.py)
    pipeline: str  # "batched" or "workers"
    new_train_loader: Callable[[], TrainLoader]  # another loader over the same training set (AutoLR's probes)
    unreadable: Callable[[], int] = lambda: 0  # reads of unreadable images skipped so far (ImageNet folders)

    @property
    def accum_steps(self) -> int:  # micro-batches per optimizer step on each rank
        return self.split.accum_steps


def build_data(args: argparse.Namespace, *, rank: int, world_size: int, device: torch.device,
               pipeline: str = "auto") -> Data:
    """Load ``args.dataset`` and build this rank's training and validation iterables (docs/DESIGN.md).

    ``pipeline``: "auto" (see the module docstring), "batched" or "workers" (scripts/bench_loader.py compares them).
    Raises FileNotFoundError for a missing dataset and ValueError for settings that do not fit together."""
    if pipeline not in ("auto", "batched", "workers"):
        raise ValueError(f"pipeline {pipeline!r}: use auto, batched or workers")
    name = args.dataset
    split = split_batch(int(args.batch_size), world_size, args.micro_batch, even=uses_mixup(args))
    micro, batch, accum = split.micro_batch, split.batch_size, split.accum_steps
    if name == "imagenet":
        return _build_imagenet(args, rank=rank, world_size=world_size, device=device, split=split)
    if name == "synthetic":
        num_classes, in_chans, img_size = args.num_classes, args.in_chans, args.img_size
        if not (num_classes and in_chans and img_size):
            raise ValueError("--dataset synthetic needs --num-classes, --in-chans and --img-size")
        mean, std = (0.5,) * in_chans, (0.25,) * in_chans
        train_set = SyntheticImages(args.synthetic_train_size, num_classes, in_chans, img_size, args.seed, 0)
        val_set = SyntheticImages(args.synthetic_val_size, num_classes, in_chans, img_size, args.seed, 1)
        train_x, train_y = train_set, train_set.labels
        val_x, val_y = val_set.tensors()
    elif name in DATASETS and DATASETS[name].load is not None:
        info = DATASETS[name]
        num_classes, in_chans, img_size = info.shape
        given = {"num-classes": (args.num_classes, num_classes), "in-chans": (args.in_chans, in_chans),
                 "img-size": (args.img_size, img_size)}
        for flag, (value, native) in given.items():
            if value is not None and value != native:
                raise ValueError(f"--{flag} {value} does not match {name} ({native}); leave it unset")
        mean, std = info.mean, info.std
        train_x, train_y = info.load(args.data_dir, "train")
        val_x, val_y = info.load(args.data_dir, "val")
    else:
        raise ValueError(f"--dataset {name!r}: use one of {', '.join(DATASET_NAMES)}")

    train_x, train_y = subset(train_x, train_y, args.train_subset, "train-subset")
    val_x, val_y = subset(val_x, val_y, args.val_subset, "val-subset")
    train_size = len(train_y)
    steps = steps_per_epoch(train_size, batch)
    mixup = mixup_fn(args, num_classes)
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
        images, labels = train_x.to(data_device), train_y.to(data_device)

        def new_train_loader() -> TrainLoader:
            return TensorTrainLoader(images, labels, augment, **common)
    else:
        base = train_x if isinstance(train_x, Dataset) else TensorDataset(train_x, train_y)
        dataset = SeededDataset(base, array_transform(args, mean, std, img_size), args.seed)

        def new_train_loader() -> TrainLoader:
            return WorkerTrainLoader(dataset, workers=args.workers, pin_memory=_pin(args, device), device=device,
                                     **common)
    val = TensorValLoader(val_x.to(data_device), val_y.to(data_device), augment,
                          batch_size=_val_batch(args, split), rank=rank, world_size=world_size)
    return Data(new_train_loader(), val, num_classes, in_chans, img_size, train_size, steps, split, pipeline,
                new_train_loader)


def imagenet_input(args: argparse.Namespace) -> str:
    """``--imagenet-input``: fast (framework/jpeg.py; ``--auto-augment``'s RandAugment and ``--reprob``'s random
    erasing run on the device, framework/gpu_data.py), timm (PIL + timm's per-sample transforms) or gpu."""
    return getattr(args, "imagenet_input", "fast")


class _OnDevice:
    """A validation loader whose batches' images go through ``fn`` (to the device, normalised)."""

    def __init__(self, loader: Iterable, fn: Callable):
        self.loader, self.fn = loader, fn

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            yield self.fn(x), y


def _val_batch(args: argparse.Namespace, split: BatchSplit) -> int:
    return int(args.val_batch_size or split.micro_batch)


def _pin(args: argparse.Namespace, device: torch.device) -> bool:
    return bool(args.pin_mem) and device.type == "cuda"


def _build_imagenet(args: argparse.Namespace, *, rank: int, world_size: int, device: torch.device,
                    split: BatchSplit) -> Data:
    """ImageNet from an ImageFolder layout through DataLoader workers (timm transforms)."""
    from . import jpeg
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
    img_size = args.img_size or DATASETS["imagenet"].img_size
    mode = imagenet_input(args)
    pin = _pin(args, device)
    if mode == "timm":
        train_tf, val_tf = imagenet_transforms(args, img_size)
        train_set = jpeg.safe_image_folder(str(root / "train"))  # an unreadable image: skipped, warned, counted
        val_set = jpeg.safe_image_folder(str(root / "val"), transform=val_tf)
        on_device = collate = val_norm = None
    else:  # framework/jpeg.py: libjpeg-turbo at reduced size, uint8 crops, normalised on the device
        mean, std = DATASETS["imagenet"].mean, DATASETS["imagenet"].std
        gpu = mode == "gpu"
        train_set = jpeg.FastImageFolder(str(root / "train"), img_size, train=True, seed=args.seed,
                                         hflip=0.5 if args.hflip else 0.0, gpu_decode=gpu)
        val_set = jpeg.FastImageFolder(str(root / "val"), img_size, train=False)
        collate = jpeg.collate_gpu_decode if gpu else None

        def val_norm(x: torch.Tensor) -> torch.Tensor:
            return jpeg.normalize(x.to(device, non_blocking=True), mean, std)

        rand_augment = parse_rand_augment(DEIT_RAND_AUGMENT) if args.auto_augment else None

        def on_device(x, seed: int) -> torch.Tensor:
            """uint8 crops (or, with gpu, file bytes and boxes) -> the normalised, augmented batch on the device."""
            x = jpeg.decode_batch_on_device(x[0], x[1], img_size, device) if gpu else x.to(device, non_blocking=True)
            if rand_augment is not None:  # the DeiT recipe's RandAugment, one draw per group of 8 images
                x = grouped_randaugment(x, derive_seed(seed, 0), 8, **rand_augment)
            x = jpeg.normalize(x, mean, std)
            return random_erasing(x, args.reprob or 0.0, derive_seed(seed, 1))  # timm's, in its 'pixel' mode
    for folder in (train_set, val_set):  # a folder of which no image can be read: refused now, not mid-epoch (this
        try:                             # reads one file, or every file only when none can be read)
            folder[0]
        except jpeg.UnreadableImage as e:
            raise ValueError(f"{e}; check the files with `python scripts/prepare_data.py --dataset imagenet "
                             f"--data-dir {args.data_dir}`") from None
    num_classes = len(train_set.classes)
    if args.num_classes is not None and args.num_classes != num_classes:
        raise ValueError(f"--num-classes {args.num_classes} but {root / 'train'} has {num_classes} class folders")
    train_base, train_y = subset(train_set, torch.tensor(train_set.targets), args.train_subset, "train-subset")
    val_base, _ = subset(val_set, torch.tensor(val_set.targets), args.val_subset, "val-subset")
    if mode == "timm":  # per-sample transforms seeded by (seed, epoch, index)
        train_base = SeededDataset(train_base, train_tf, args.seed)
    steps = steps_per_epoch(len(train_y), split.batch_size)
    mixup = mixup_fn(args, num_classes)

    def new_train_loader() -> TrainLoader:
        return WorkerTrainLoader(train_base, workers=args.workers, pin_memory=pin, device=device,
                                 micro_batch=split.micro_batch, num_batches=steps * split.accum_steps, rank=rank,
                                 world_size=world_size, seed=args.seed, mixup=mixup, on_device=on_device,
                                 collate_fn=collate)
    shard = list(range(rank, len(val_base), world_size))
    val = DataLoader(torch.utils.data.Subset(val_base, shard), batch_size=_val_batch(args, split), shuffle=False,
                     num_workers=args.workers, pin_memory=pin, persistent_workers=args.workers > 0,
                     prefetch_factor=4 if args.workers > 0 else None)
    if val_norm is not None:
        val = _OnDevice(val, val_norm)
    return Data(new_train_loader(), val, num_classes, 3, img_size, len(train_y), steps, split, "workers",
                new_train_loader, lambda: train_set.unreadable.value + val_set.unreadable.value)
