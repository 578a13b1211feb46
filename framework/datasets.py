"""The datasets, each described once (:data:`DATASETS`: shape, classes, mean/std, sizes, reader), and the readers
of their files. Everyone (train.py, the loaders, smoke mode, the benchmarks) reads the description from here.

- ``fashion_mnist``: the four idx files (``*-idx?-ubyte[.gz]``) from ``--data-dir`` (plain, ``fashion-mnist/`` or
  torchvision's ``FashionMNIST/raw/``) or the Debian package ``dataset-fashion-mnist`` (/usr/share/datasets/...);
- ``cifar10`` / ``cifar100``: torchvision's download layout (``cifar-10-batches-py/``, ``cifar-100-python/``);
- ``imagenet``: ``train/`` and ``val/`` with one folder per class (torchvision ``ImageFolder``);
- ``synthetic``: deterministic random images at any size whose class sets a smooth colour pattern (learnable).
``scripts/prepare_data.py`` fetches or checks each of them. Adding a dataset: a reader here and one entry in
:data:`DATASETS`.
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .seeding import derive_seed

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
SUBSET_SEED = 0  # --train-subset / --val-subset draw the same images whatever --seed is


def _read_idx(path: Path) -> np.ndarray:
    """An idx file (LeCun's MNIST format, optionally gzipped) as a uint8 array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # a truncated or corrupted .gz (gzip.BadGzipFile is an OSError)
        raise ValueError(f"{path} cannot be read ({type(e).__name__}: {e}); the file is damaged: download it again "
                         "(scripts/prepare_data.py) or reinstall dataset-fashion-mnist") from None
    if len(raw) < 4:
        raise ValueError(f"{path} is not an idx file: {len(raw)} bytes (truncated download?)")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08 or not 1 <= ndim <= 4 or len(raw) < 4 + 4 * ndim:
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
    images_path, labels_path = _idx_file(d, images_name), _idx_file(d, labels_name)
    images, labels = _read_idx(images_path), _read_idx(labels_path)
    again = "download it again (scripts/prepare_data.py) or reinstall dataset-fashion-mnist"
    if labels.ndim != 1:
        raise ValueError(f"{labels_path} is not a labels file: it holds an array of shape {labels.shape}, not one "
                         f"label per image (an images file under a labels file's name?); {again}")
    side = DATASETS["fashion_mnist"].img_size
    if images.ndim != 3 or images.shape[1:] != (side, side):
        raise ValueError(f"{images_path} holds images of shape {images.shape[1:]}, not Fashion-MNIST's {side}x{side} "
                         f"(a labels file or another dataset under its name?); {again}")
    if len(images) != len(labels):
        raise ValueError(f"{d}: {images_name} has shape {images.shape} for {len(labels)} labels")
    if len(images) == 0:
        raise ValueError(f"{images_path} holds no images (0 in its header); {again}")
    classes = DATASETS["fashion_mnist"].num_classes
    if labels.max() >= classes:
        raise ValueError(f"{labels_path} holds the label {int(labels.max())}, but Fashion-MNIST's classes are 0-"
                         f"{classes - 1}; {again}")
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


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles CIFAR's python batches (dicts of lists, bytes, strings and NumPy uint8 arrays) and nothing else: a
    global other than NumPy's array constructors is refused, so a crafted file cannot run code (``pickle.load``, as
    torchvision uses, would run whatever the file names)."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}  # encode: bytes in protocol 2

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class("numpy._core.multiarray" if name == "_reconstruct" else module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR batch never holds")


def read_cifar_batch(path: Path) -> dict:
    """One CIFAR python batch as a dict, through :class:`_ArrayUnpickler`; ValueError naming the file when it is
    not one (truncated, or holding anything but arrays, lists, dicts and strings)."""
    try:
        with open(path, "rb") as fh:
            batch = _ArrayUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(f"{path} is not a CIFAR python batch ({type(e).__name__}: {e}); it is refused unread. "
                         "Download the dataset again with scripts/prepare_data.py") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path} is not a CIFAR python batch (it holds a {type(batch).__name__}, not a dict); "
                         "download the dataset again with scripts/prepare_data.py")
    return batch


def load_cifar(name: str, data_dir: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10/100 (Krizhevsky 2009) from torchvision's download layout: uint8 (N, 3, 32, 32), int64 labels."""
    d, looked = find_cifar(name, data_dir)
    if d is None:
        raise FileNotFoundError(
            f"{name} not found: looked for {CIFAR_LAYOUT[name][0]}/ (python version, as torchvision downloads it) in "
            f"{', '.join(str(p) for p in looked)}. Download it with `python scripts/prepare_data.py --dataset {name} "
            f"--data-dir {data_dir}` (torchvision) or unpack {CIFAR_LAYOUT[name][0]}.tar.gz there")
    _, train_files, test_files, key = CIFAR_LAYOUT[name]
    classes = 10 if name == "cifar10" else 100
    images, labels = [], []
    for f in train_files if split == "train" else test_files:
        batch = read_cifar_batch(d / f)
        again = "download the dataset again with scripts/prepare_data.py"
        try:
            pixels = np.asarray(batch["data"])
            if pixels.dtype != np.uint8 and not (np.issubdtype(pixels.dtype, np.integer) and pixels.size
                                                 and 0 <= pixels.min() and pixels.max() <= 255):
                raise ValueError(f"its pixels are {pixels.dtype}, not bytes 0-255")
            batch_images = pixels.astype(np.uint8).reshape(-1, 3, 32, 32)
            batch_labels = np.asarray(batch[key])
            if batch_labels.ndim != 1 or len(batch_labels) != len(batch_images):
                raise ValueError(f"it holds {len(batch_images)} images but {batch_labels.size} {key}")
            if len(batch_labels) and (not np.issubdtype(batch_labels.dtype, np.integer) or batch_labels.min() < 0
                                      or batch_labels.max() >= classes):
                bad = next((v for v in batch_labels.tolist() if not (type(v) is int and 0 <= v < classes)),
                           batch_labels.tolist()[0])
                raise ValueError(f"it holds the label {bad!r}, but {name}'s classes are 0-{classes - 1}")
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"{d / f} is not a CIFAR python batch ({type(e).__name__}: {e}); {again}") from None
        images.append(batch_images)
        labels.extend(batch_labels.tolist())
    return torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.int64)


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's


def _has_image(folder: Path) -> bool:
    """Whether ``folder`` (or a folder below it, as ImageFolder searches) holds a file with an image extension;
    stops at the first one."""
    for _, _, files in os.walk(folder, followlinks=True):
        if any(f.lower().endswith(IMAGE_EXTENSIONS) for f in files):
            return True
    return False


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
        if split == "train" and len(classes[split]) == 1:
            problems.append(f"{d}/ has only one class folder ({classes[split][0]}); a classifier needs at least 2 "
                            "classes")
        empty = [c for c in classes[split] if not any(os.scandir(d / c))]
        if empty:
            problems.append(f"{d}/ has {len(empty)} empty class folder(s): {', '.join(empty[:5])}")
        imageless = [c for c in classes[split] if c not in empty and not _has_image(d / c)]
        if imageless:
            problems.append(f"{d}/ has {len(imageless)} class folder(s) without an image file "
                            f"({', '.join(IMAGE_EXTENSIONS)}): {', '.join(str(d / c) for c in imageless[:5])}")
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


def subset_indices(n: int, k: int, what: str) -> torch.Tensor:
    """The sorted indices of the fixed random subset of ``k`` of ``n`` images (seed SUBSET_SEED)."""
    if not 0 < k <= n:
        raise ValueError(f"--{what} {k}: must be between 1 and the {n} images available")
    return torch.randperm(n, generator=torch.Generator().manual_seed(SUBSET_SEED))[:k].sort().values


def subset(images: Any, labels: torch.Tensor, k: Optional[int], what: str) -> tuple[Any, torch.Tensor]:
    """A fixed random subset of ``k`` images (seed SUBSET_SEED, kept in dataset order), or everything."""
    if k is None:
        return images, labels
    idx = subset_indices(len(labels), k, what)
    if hasattr(images, "restrict"):  # a dataset that subsets itself (framework/jpeg.py's FastImageFolder)
        return images.restrict(idx.tolist()), labels[idx]
    if isinstance(images, torch.Tensor):
        return images[idx], labels[idx]
    return torch.utils.data.Subset(images, idx.tolist()), labels[idx]


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset, described once."""
    name: str
    num_classes: int
    in_chans: int
    img_size: int  # native side in pixels
    mean: tuple  # per-channel mean / std of the training images (ImageNet: timm's constants)
    std: tuple
    train_size: int
    val_size: int
    load: Optional[Callable[[str, str], tuple[torch.Tensor, torch.Tensor]]]  # (data_dir, "train"|"val") -> uint8
    # (N, C, H, W) images and int64 labels held in memory; None: read from an image folder (ImageNet)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(num_classes, in_chans, img_size)`` (smoke mode builds synthetic stand-ins of this shape)."""
        return self.num_classes, self.in_chans, self.img_size


DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (
    DatasetInfo("fashion_mnist", 10, 1, 28, (0.2860,), (0.3530,), 60_000, 10_000, load_fashion_mnist),
    DatasetInfo("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 50_000, 10_000,
                lambda d, s: load_cifar("cifar10", d, s)),
    DatasetInfo("cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 50_000, 10_000,
                lambda d, s: load_cifar("cifar100", d, s)),
    DatasetInfo("imagenet", 1000, 3, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1_281_167, 50_000, None),
)}
DATASET_NAMES = (*DATASETS, "synthetic")  # synthetic: any shape, given by --num-classes/--in-chans/--img-size
