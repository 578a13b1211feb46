"""Per-sample augmentation (torchvision / timm transforms) and timm's Mixup/CutMix; their seeds come from
framework/seeding.py. The batched (whole micro-batch at once) augmentation is framework/gpu_data.py.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable, Optional, Sequence

import torch

from .seeding import seeded_rngs

DEIT_RAND_AUGMENT = "rand-m9-mstd0.5-inc1"  # Touvron et al. 2020, the ViT-S/16 recipe of Appendix B


def mixup_fn(args: argparse.Namespace, num_classes: int) -> Optional[Any]:
    """timm ``Mixup`` (mixup alpha ``--mixup``, CutMix alpha ``--cutmix``, label smoothing folded into the soft
    targets) when either is on, else None. Its targets are float (N, classes): train with soft-target cross-entropy."""
    if not uses_mixup(args):
        return None
    from timm.data import Mixup
    return Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, label_smoothing=args.label_smoothing or 0.0,
                 num_classes=num_classes)


def uses_mixup(args: argparse.Namespace) -> bool:
    """Mixup or CutMix is on (they pair each image with the batch's mirror: the micro-batch must be even)."""
    return bool(getattr(args, "mixup", 0) or getattr(args, "cutmix", 0))


def mix(mixup: Optional[Any], x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if mixup is None:
        return x, y
    with seeded_rngs(seed):  # timm's Mixup draws lambda and the box from NumPy's global generator
        return mixup(x, y)


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
    if deit:
        check_timm_randaugment()
    interpolation = "bicubic" if deit else "bilinear"
    from .datasets import DATASETS
    mean, std = DATASETS["imagenet"].mean, DATASETS["imagenet"].std
    train = create_transform(img_size, is_training=True, hflip=0.5 if args.hflip else 0.0,
                             color_jitter=0.4 if deit else None, auto_augment=DEIT_RAND_AUGMENT if deit else None,
                             interpolation=interpolation, re_prob=args.reprob or 0.0, re_mode="pixel", re_count=1,
                             mean=mean, std=std)
    val = create_transform(img_size, is_training=False, interpolation=interpolation, crop_pct=224 / 256,
                           mean=mean, std=std)
    return train, val


def check_timm_randaugment() -> None:
    """timm's RandAugment with ``inc1`` posterizes down to 0 bits at the top magnitude; Pillow 13 refuses that, so
    the run would stop mid-epoch the first time the draw comes up. Refuse before the run instead (ValueError)."""
    from PIL import Image
    from timm.data.auto_augment import posterize
    try:
        posterize(Image.new("RGB", (2, 2)), 0)
    except ValueError as e:
        import PIL
        raise ValueError(f"--imagenet-input timm --auto-augment: timm's RandAugment cannot run with Pillow "
                         f"{PIL.__version__} ({e}: its posterize draws 0 bits); install pillow<13 (constraints.txt "
                         "pins 12.3.0) or use --imagenet-input fast, which runs RandAugment on the device") from None
