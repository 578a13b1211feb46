"""Batched augmentation of uint8 image batches, vectorised over the batch and run wherever the batch lives (the GPU
with ``--gpu-data``, the CPU otherwise): the CIFAR recipe of the paper (Appendix A: random crop with padding,
horizontal flip, AutoAugment, Cutout) without a per-sample Python loop, airbench-style.

Semantics match the per-sample torchvision pipeline of framework/data.py:
- crop: zero-pad by ``pad`` pixels, then a uniformly placed crop of the original size (``v2.RandomCrop(padding=)``);
- flip: each image mirrored left-right with probability 1/2 (``v2.RandomHorizontalFlip``);
- AutoAugment: torchvision's ``v2.AutoAugment`` (CIFAR-10 policy). torchvision draws one sub-policy per call, so the
  batch is split into groups of ``aa_group`` images that each get their own draw (per-sample when ``aa_group=1``);
- Cutout (DeVries & Taylor 2017): a ``size`` x ``size`` square set to 0 after normalisation (the channel mean), placed
  uniformly inside the image like ``v2.RandomErasing(scale=(s^2/HW,)*2, ratio=(1, 1), value=0)``.
All randomness comes from one host integer seed per batch (a ``torch.Generator`` on the batch's device, and the seed
for AutoAugment's CPU draws), so a batch's augmentation is a function of that seed only.
"""
from __future__ import annotations

import random
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms import v2


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad ``x`` (N, C, H, W) by ``pad`` on every side and cut a random H x W window per image."""
    if pad <= 0:
        return x
    n, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=gen.device)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=gen.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(n, c, h, w + 2 * pad)
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(n, c, h, w)
    return xp.gather(2, rows).gather(3, cols)  # rows, then columns, of each image's window


def random_hflip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=gen, device=gen.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def cutout(x: torch.Tensor, size: int, gen: torch.Generator, value: float = 0.0) -> torch.Tensor:
    """Set one ``size`` x ``size`` square per image (placed uniformly inside it) to ``value``."""
    if size <= 0:
        return x
    n, _, h, w = x.shape
    size_h, size_w = min(size, h), min(size, w)
    top = torch.randint(0, h - size_h + 1, (n,), generator=gen, device=gen.device)
    left = torch.randint(0, w - size_w + 1, (n,), generator=gen, device=gen.device)
    r = torch.arange(h, device=x.device)[None, :]
    c = torch.arange(w, device=x.device)[None, :]
    in_rows = (r >= top[:, None]) & (r < (top + size_h)[:, None])  # (N, H)
    in_cols = (c >= left[:, None]) & (c < (left + size_w)[:, None])  # (N, W)
    mask = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # (N, 1, H, W)
    return x.masked_fill(mask, value)


def grouped_autoaugment(x: torch.Tensor, seed: int, group: int,
                        policy: v2.AutoAugmentPolicy = v2.AutoAugmentPolicy.CIFAR10) -> torch.Tensor:
    """torchvision's AutoAugment on a uint8 batch, one sub-policy draw per group of ``group`` images. torchvision
    draws its choices from the global CPU generator: it is seeded with ``seed`` inside a forked RNG, so the caller's
    random streams are untouched and nothing waits for the device."""
    aa = v2.AutoAugment(policy)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.cat([aa(chunk) for chunk in x.split(max(group, 1))])


def grouped_randaugment(x: torch.Tensor, seed: int, group: int, num_ops: int = 2, magnitude: float = 9.0,
                        magnitude_std: float = 0.5) -> torch.Tensor:
    """RandAugment on a uint8 batch, on the batch's device: torchvision's ``v2.RandAugment`` (``num_ops`` ops of its
    14, Identity included), one draw of ops and magnitude per group of ``group`` images. The magnitude follows timm's
    ``rand-m9-mstd0.5``: drawn per group from N(``magnitude``, ``magnitude_std``), clipped to [0, 10], and scaled as
    a fraction m/10 of each op's maximum (101 bins); posterize and solarize get stronger with it, as timm's ``inc1``.
    What differs from timm's per-sample PIL version: torchvision's op set (no Invert or SolarizeAdd, an Identity
    op instead) and every drawn op applied (timm applies each with probability 1/2). Seeded like
    :func:`grouped_autoaugment`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = []
        for chunk in x.split(max(group, 1)):
            m = float(torch.randn(()).item()) * magnitude_std + magnitude
            m = min(max(m, 0.0), 10.0)
            ra = v2.RandAugment(num_ops=num_ops, magnitude=round(m * 10), num_magnitude_bins=101)
            out.append(ra(chunk))
        return torch.cat(out)


def parse_rand_augment(spec: str) -> dict:
    """timm's RandAugment string (``rand-m9-n2-mstd0.5[-inc1]``) -> keyword arguments of :func:`grouped_randaugment`;
    a part it does not know is a ``ValueError`` naming it."""
    parts = spec.split("-")
    if parts[0] != "rand":
        raise ValueError(f"RandAugment spec {spec!r} must start with 'rand-' (timm's format, e.g. rand-m9-mstd0.5)")
    kw: dict = {}
    for part in parts[1:]:
        key = next((k for k in ("mstd", "inc", "m", "n") if part.startswith(k)), None)
        try:
            value = float(part[len(key):]) if key else None
        except ValueError:
            value = None
        if key is None or value is None:
            raise ValueError(f"RandAugment spec {spec!r}: unknown part {part!r} (known: mN, nN, mstdX, inc1)")
        if key == "inc" and value != 1:
            raise ValueError(f"RandAugment spec {spec!r}: only inc1 (severity grows with the magnitude) is built")
        kw.update({"m": {"magnitude": value}, "n": {"num_ops": int(value)}, "mstd": {"magnitude_std": value},
                   "inc": {}}[key])
    return kw


def random_erasing(x: torch.Tensor, prob: float, seed: int, mode: str = "pixel", count: int = 1) -> torch.Tensor:
    """timm's ``RandomErasing`` (its batch mode, on the batch's device, after normalisation, as timm's
    ``PrefetchLoader`` does) with every draw taken from ``seed``: Python's and torch's generators are forked, so the
    caller's random streams are untouched."""
    from timm.data.random_erasing import RandomErasing
    if prob <= 0:
        return x
    state = random.getstate()
    try:
        random.seed(seed)
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=x.device.type):
            torch.manual_seed(seed)
            return RandomErasing(prob, mode=mode, max_count=count, device=x.device)(x)
    finally:
        random.setstate(state)


class BatchAugment:
    """uint8 (N, C, H, W) batch -> normalised float32 batch, with the training augmentation when ``train``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device, *, crop_pad: int = 0,
                 hflip: bool = False, auto_augment: bool = False, cutout: int = 0, aa_group: int = 8):
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1) * 255.0
        self.inv_std = 1.0 / (torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1) * 255.0)
        self.crop_pad, self.hflip, self.auto_augment, self.cutout = crop_pad, hflip, auto_augment, cutout
        self.aa_group = aa_group

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) * self.inv_std

    def __call__(self, x: torch.Tensor, seed: Optional[int] = None) -> torch.Tensor:
        """Augment with randomness drawn from ``seed`` (a host integer) and normalise; ``seed=None``: only normalise
        (validation)."""
        if seed is None:
            return self.normalize(x)
        gen = torch.Generator(device=x.device)
        gen.manual_seed(seed)
        x = random_crop(x, self.crop_pad, gen)
        if self.hflip:
            x = random_hflip(x, gen)
        if self.auto_augment:
            x = grouped_autoaugment(x, seed + 1, self.aa_group)
        x = self.normalize(x)
        return cutout(x, self.cutout, gen)
