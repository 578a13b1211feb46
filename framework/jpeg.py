"""ImageNet input at the speed GPUs eat it: JPEG decode with libjpeg-turbo, at reduced size when the crop allows,
crops and flips on uint8 tensors, uint8 batches (pinned), normalisation on the device.

The training transform is the paper's ImageNet recipe (He et al. 2016, as timm's default): RandomResizedCrop to
``size`` (scale 0.08-1, aspect ratio 3/4-4/3, torchvision's sampling: 10 tries, then the centre crop of the closest
allowed ratio), horizontal flip with probability 1/2, bilinear resampling with antialias; validation: resize the
shorter side to ``size / crop_pct`` and take the centre ``size`` crop. What differs from timm's pipeline is where the
work happens, not what it computes:

- decode: ``simplejpeg`` (libjpeg-turbo) at the smallest of the DCT scales 1/8, 1/4, 1/2, 1 (its SIMD ones; the
  others, e.g. 7/8, decode slower than full size here) at which the crop still has ``size`` pixels on both sides,
  as PIL's ``draft`` does; without simplejpeg, ``torchvision.io.decode_jpeg`` (full
  size). Anything libjpeg-turbo cannot read as RGB (PNG, CMYK JPEGs) goes through PIL with the same box;
- crop + resize in one ``resized_crop`` on the uint8 tensor, flip by indexing; no float image on the CPU;
- the batch stays uint8 (4x less to pin and copy); :func:`normalize` runs on the device.

Randomness: the crop and flip of image ``i`` in epoch ``e`` come from ``random.Random(derive_seed(seed, e, i, 7))``,
so a seed fixes the crops whatever the worker count. An image that cannot be read is replaced by the next readable
one of the dataset, with a warning naming the file, and counted (:attr:`FastImageFolder.unreadable`, shared with
the workers) so the run can report it; never a traceback mid-epoch. ``gpu_decode`` mode returns the file bytes and
the crop box instead, for batched nvJPEG decoding on the GPU (:func:`decode_batch_on_device`).
"""
from __future__ import annotations

import copy
import io
import math
import multiprocessing
import random
import sys
import warnings
from typing import Optional, Sequence

import torch
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from .seeding import derive_seed

try:  # libjpeg-turbo with DCT scaling; optional (torchvision's decoder otherwise)
    import simplejpeg
except ImportError:  # pragma: no cover - depends on the installation
    simplejpeg = None

from PIL.Image import DecompressionBombError as _Bomb

SCALE, RATIO = (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0)


class UnreadableImage(ValueError):
    """A file that no decoder can read (truncated, corrupt, not an image); the message names it."""


def rrc_box(h: int, w: int, rng: random.Random, scale: Sequence[float] = SCALE,
            ratio: Sequence[float] = RATIO) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of a RandomResizedCrop box: torchvision's ``RandomResizedCrop.get_params``
    (area fraction uniform in ``scale``, log aspect ratio uniform in ``ratio``, 10 tries, then the centre crop
    of the closest allowed ratio), drawn from ``rng``."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.randint(0, h - ch), rng.randint(0, w - cw), ch, cw
    in_ratio = w / h
    if in_ratio < min(ratio):
        cw, ch = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        ch, cw = h, int(round(h * max(ratio)))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def center_box(h: int, w: int, size: int, crop_pct: float) -> tuple[int, int, int, int]:
    """The validation crop as a box of the original image: the centre ``size`` crop after resizing the shorter side
    to ``size / crop_pct`` (timm's eval transform)."""
    side = min(h, w) * crop_pct  # the shorter side scaled to size/crop_pct, then a size crop: crop_pct of it
    ch, cw = int(round(side)), int(round(side))
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def jpeg_size(data: bytes) -> Optional[tuple[int, int]]:
    """``(height, width)`` from a JPEG's header, without decoding; None when it is not a JPEG simplejpeg reads."""
    if simplejpeg is None:
        return None
    try:
        h, w, _, _ = simplejpeg.decode_jpeg_header(data)  # (height, width, colorspace, subsampling)
        return h, w
    except ValueError:
        return None


def decode_crop(data: bytes, box_of, size: int, name: str = "<bytes>") -> tuple[torch.Tensor, tuple]:
    """Decode ``data`` and return the uint8 (3, size, size) crop ``box_of(h, w)`` resized to ``size``, and the box.
    The decode is at the smallest DCT scale that leaves the crop ``size`` pixels on both sides."""
    hw = jpeg_size(data)
    if hw is not None:
        h, w = hw
        top, left, ch, cw = box = box_of(h, w)
        d = 1  # decode at 1/d: the largest of 1, 2, 4, 8 (libjpeg-turbo's SIMD scales) leaving the crop `size` px
        while d < 8 and min(cw, ch) >= 2 * d * size:
            d *= 2
        try:
            arr = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=True,
                                         min_width=math.ceil(w / d), min_height=math.ceil(h / d))
        except ValueError:
            arr = None  # e.g. CMYK: PIL below
        if arr is not None:
            img = torch.from_numpy(arr).permute(2, 0, 1)
            sy, sx = img.shape[1] / h, img.shape[2] / w
            return _resized_crop(img, (top * sy, left * sx, ch * sy, cw * sx), size), box
    img = _decode_any(data, name)
    box = box_of(img.shape[1], img.shape[2])
    return _resized_crop(img, box, size), box


def _decode_any(data: bytes, name: str) -> torch.Tensor:
    """uint8 (3, H, W) of any image: torchvision's libjpeg-turbo decoder, else PIL (PNG, CMYK, grayscale)."""
    from torchvision.io import ImageReadMode, decode_image
    try:
        return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError):
        pass
    try:
        from PIL import Image
        with Image.open(io.BytesIO(data)) as im:
            return TF.pil_to_tensor(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as e:
        raise UnreadableImage(f"{name}: not a readable image ({type(e).__name__}: {e})") from None


def _resized_crop(img: torch.Tensor, box: Sequence[float], size: int) -> torch.Tensor:
    top, left, h, w = (int(round(v)) for v in box)
    h, w = max(h, 1), max(w, 1)
    return TF.resized_crop(img, top, left, h, w, [size, size], antialias=True)


class SkipsUnreadable:
    """An image dataset that replaces an unreadable image by the next readable one: a warning naming the file (once
    per file and process), and a count shared with the DataLoader workers (``unreadable``) that the run reports."""

    samples: list

    def _init_skips(self) -> None:
        self.unreadable = multiprocessing.Value("i", 0)  # shared with the DataLoader workers (fork or spawn)
        self._warned: set = set()

    def _first_readable(self, index: int, load) -> tuple:
        """``load(path, i)`` for the first readable sample from ``index`` on (wrapping round)."""
        for attempt in range(len(self.samples)):
            i = (index + attempt) % len(self.samples)
            path = self.samples[i][0]
            try:
                return load(path, i)
            except (UnreadableImage, OSError, SyntaxError, _Bomb) as e:  # what PIL and the decoders raise for bad files
                self._skip(path, e)
        raise UnreadableImage(f"{getattr(self, 'root', '?')}: no image of the dataset can be read")

    def _skip(self, path: str, error: Exception) -> None:
        with self.unreadable.get_lock():
            self.unreadable.value += 1
        if path not in self._warned:
            self._warned.add(path)
            warnings.warn(f"skipped an unreadable image, {path} ({error}); the next readable one is used in its place",
                          stacklevel=3)
            print(f"warning: skipped an unreadable image: {path}", file=sys.stderr, flush=True)


def safe_image_folder(root: str, transform=None) -> Dataset:
    """torchvision's ``ImageFolder`` (timm's ImageNet input) that skips an unreadable image like
    :class:`FastImageFolder` instead of raising mid-epoch."""
    from torchvision.datasets import ImageFolder

    class SafeImageFolder(SkipsUnreadable, ImageFolder):
        def __getitem__(self, index: int):
            def load(path: str, i: int):
                img = self.loader(path)
                return (self.transform(img) if self.transform is not None else img), self.targets[i]
            return self._first_readable(index, load)

    ds = SafeImageFolder(root, transform=transform)
    ds._init_skips()
    return ds


class FastImageFolder(SkipsUnreadable, Dataset):
    """An ImageFolder layout (``root/<class>/<image>``, torchvision's class order) read as uint8 crops.

    Item ``(index, epoch)`` (train) or ``index`` (val): ``(uint8 (3, size, size), label)``; with ``gpu_decode`` the
    train item is ``(file bytes as a uint8 tensor, box and flip as an int tensor, label)``."""

    def __init__(self, root: str, size: int, *, train: bool, seed: int = 0, crop_pct: float = 224 / 256,
                 hflip: float = 0.5, gpu_decode: bool = False):
        from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
        self.root, self.size, self.train, self.seed = root, size, train, seed
        self.crop_pct, self.hflip, self.gpu_decode = crop_pct, hflip, gpu_decode
        self.classes, class_to_idx = find_classes(root)
        self.samples = make_dataset(root, class_to_idx, extensions=IMG_EXTENSIONS)
        self.targets = [label for _, label in self.samples]
        self._init_skips()

    def __len__(self) -> int:
        return len(self.samples)

    def restrict(self, indices: Sequence[int]) -> "FastImageFolder":
        """This dataset on ``indices`` only (``--train-subset``): a copy sharing the unreadable-image count."""
        out = copy.copy(self)
        out.samples = [self.samples[i] for i in indices]
        out.targets = [self.targets[i] for i in indices]
        return out

    def __getitem__(self, key):
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        return self._first_readable(index, lambda path, i: (*self._load(path, i, epoch), self.targets[i]))

    def _load(self, path: str, index: int, epoch: int) -> tuple:
        with open(path, "rb") as f:
            data = f.read()
        rng = random.Random(derive_seed(self.seed, epoch, index, 7))
        if not self.train:
            img, _ = decode_crop(data, lambda h, w: center_box(h, w, self.size, self.crop_pct), self.size, path)
            return (img,)
        if self.gpu_decode and jpeg_size(data) is not None:
            h, w = jpeg_size(data)
            box = rrc_box(h, w, rng)
            flip = int(rng.random() < self.hflip)
            return torch.frombuffer(bytearray(data), dtype=torch.uint8), torch.tensor([*box, flip])
        img, _ = decode_crop(data, lambda h, w: rrc_box(h, w, rng), self.size, path)
        if rng.random() < self.hflip:
            img = img.flip(-1)
        if self.gpu_decode:  # not a JPEG: decoded here, sent as an already cropped image
            return img.contiguous(), torch.tensor([-1, 0, 0, 0, 0])
        return (img.contiguous(),)


def collate_gpu_decode(items: list) -> tuple:
    """Batch of ``gpu_decode`` items: the list of byte tensors (or decoded crops), boxes (N, 5) and labels."""
    return [it[0] for it in items], torch.stack([it[1] for it in items]), torch.tensor([it[2] for it in items])


def decode_batch_on_device(datas: list, boxes: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
    """uint8 (N, 3, size, size) on ``device`` from a ``gpu_decode`` batch: the JPEGs decoded together by
    ``torchvision.io.decode_jpeg(list, device=...)`` (nvJPEG on a GPU), each cropped, resized and flipped there."""
    from torchvision.io import ImageReadMode, decode_jpeg
    jpegs = [k for k, b in enumerate(boxes.tolist()) if b[0] >= 0]
    decoded = decode_jpeg([datas[k] for k in jpegs], device=device, mode=ImageReadMode.RGB) if jpegs else []
    out = torch.empty(len(datas), 3, size, size, dtype=torch.uint8, device=device)
    for k, img in zip(jpegs, decoded):
        top, left, h, w, flip = boxes[k].tolist()
        crop = TF.resized_crop(img, top, left, h, w, [size, size], antialias=True)
        out[k] = crop.flip(-1) if flip else crop
    for k in set(range(len(datas))) - set(jpegs):  # decoded on the CPU already (not a JPEG)
        out[k] = datas[k].to(device)
    return out


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 ``(x / 255 - mean) / std``, on ``x``'s device."""
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1) * 255.0
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1) * 255.0
    return (x.float() - m) / s


def sample_jpeg_folder(root: str, classes: int = 4, per_class: int = 16, size: tuple = (500, 375),
                       quality: int = 90, seed: int = 0) -> str:
    """A deterministic ImageNet-like folder (``root/train``, ``root/val``, one folder per class) of photo JPEGs for
    benchmarks and tests: crops of the photo matplotlib ships (``grace_hopper.jpg``), rescaled to ``size``
    (ImageNet's typical 500x375; every fifth one portrait), channels permuted and flipped per image, re-encoded at
    ``quality``. Returns ``root``."""
    import os

    import numpy as np
    from matplotlib import cbook
    from PIL import Image
    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        photo = im.convert("RGB")
    rng = np.random.default_rng(seed)
    k = 0
    for split, per in (("train", per_class), ("val", max(1, per_class // 4))):
        for c in range(classes):
            folder = os.path.join(root, split, f"n{c:08d}")
            os.makedirs(folder, exist_ok=True)
            for i in range(per):
                w, h = photo.size
                s = rng.uniform(0.6, 1.0)
                cw, ch = int(w * s), int(h * s * 0.75)
                x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
                a = np.asarray(photo.crop((x0, y0, x0 + cw, y0 + ch)).resize(size, Image.BICUBIC))
                a = a[:, :, rng.permutation(3)][:, ::(-1 if k % 2 else 1)]
                if k % 5 == 0:
                    a = a.transpose(1, 0, 2)
                Image.fromarray(np.ascontiguousarray(a)).save(os.path.join(folder, f"{split}_{k:05d}.JPEG"), "JPEG",
                                                              quality=quality)
                k += 1
    return root
