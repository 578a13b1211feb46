"""framework/data.py and framework/gpu_data.py: every dataset through its real reader (Fashion-MNIST from the
Debian package, CIFAR and ImageNet as tiny fakes in their on-disk formats), sharding, exact mid-epoch resume,
augmentation semantics of the batched pipeline, error messages."""
from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import framework.datasets as fdata
from framework.augment import mixup_fn
from framework.data import build_data
from framework.datasets import DATASETS, find_fashion_mnist
from framework.loaders import shard_indices
from framework.gpu_data import BatchAugment, cutout, grouped_autoaugment, random_crop, random_hflip

CPU = torch.device("cpu")


def make_args(**kw) -> argparse.Namespace:
    d = dict(dataset="synthetic", data_dir="data", img_size=None, in_chans=None, num_classes=None,
             synthetic_train_size=64, synthetic_val_size=32, train_subset=None, val_subset=None, workers=0,
             pin_mem=True, gpu_data=False, auto_augment=False, cutout=0, crop_pad=0, hflip=False, reprob=0.0,
             mixup=0.0, cutmix=0.0, label_smoothing=0.0, batch_size=16, micro_batch=8, val_batch_size=10, seed=0)
    d.update(kw)
    return argparse.Namespace(**d)


def synth(**kw) -> argparse.Namespace:
    return make_args(**{"dataset": "synthetic", "img_size": 16, "in_chans": 3, "num_classes": 4, **kw})


def epoch_batches(data, epoch: int = 0, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    data.train.set_epoch(epoch, start_batch=start)
    return [(x.clone(), y.clone()) for x, y in data.train]


# -- fakes in the real on-disk formats -------------------------------------------------------------------------------
def fake_cifar(root: Path, name: str = "cifar10", n_train: int = 60, n_test: int = 25) -> Path:
    """torchvision's python-pickle layout; image i's first two pixels encode i (so samples can be told apart)."""
    folder, train_files, test_files, key = fdata.CIFAR_LAYOUT[name]
    d = root / folder
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    classes = 10 if name == "cifar10" else 100

    def write(path: Path, ids: np.ndarray) -> None:
        data = rng.integers(0, 256, (len(ids), 3072), dtype=np.uint8)
        data[:, 0], data[:, 1] = ids % 256, ids // 256
        with open(path, "wb") as f:
            pickle.dump({"data": data, key: [int(i) % classes for i in ids]}, f)

    per = n_train // len(train_files)
    for k, f in enumerate(train_files):
        write(d / f, np.arange(k * per, (k + 1) * per))
    write(d / test_files[0], np.arange(10_000, 10_000 + n_test))
    return root


def decode_ids(x: torch.Tensor, name: str = "cifar10") -> list[int]:
    """Undo the normalisation of unaugmented CIFAR batches and read the encoded sample ids."""
    mean, std = DATASETS[name].mean, DATASETS[name].std
    px = (x[:, 0, 0, :2] * std[0] + mean[0]) * 255
    px = px.round().long()
    return (px[:, 0] + 256 * px[:, 1]).tolist()


def fake_imagefolder(root: Path, classes: int = 3, per_class: int = 4, size: int = 40) -> Path:
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"n{c:08d}"
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


# -- datasets ------------------------------------------------------------------------------------------------------
def test_fashion_mnist_from_debian_package():
    assert find_fashion_mnist("/nonexistent") is not None, "apt-get install dataset-fashion-mnist"
    data = build_data(make_args(dataset="fashion_mnist", batch_size=256, micro_batch=128, val_batch_size=1000,
                                crop_pad=2, hflip=True), rank=0, world_size=1, device=CPU)
    assert (data.num_classes, data.in_chans, data.img_size) == DATASETS["fashion_mnist"].shape
    assert data.train_size == 60_000 and data.steps_per_epoch == 234 and data.accum_steps == 2
    assert len(data.train) == 468 and data.pipeline == "batched"
    data.train.set_epoch(0)
    x, y = next(iter(data.train))
    assert x.shape == (128, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    xs, ys = zip(*data.val)
    xv, yv = torch.cat(xs), torch.cat(ys)
    assert xv.shape == (10_000, 1, 28, 28)
    assert torch.bincount(yv).tolist() == [1000] * 10  # the test set is balanced
    assert abs(xv.mean().item()) < 0.1 and 0.9 < xv.std().item() < 1.1  # normalised with the train statistics
    assert xv.min().item() == pytest.approx(-0.2860 / 0.3530, abs=1e-4)  # black = (0 - mean) / std


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pickles_load_with_labels_and_exact_pixels(tmp_path, name):
    root = fake_cifar(tmp_path, name)
    data = build_data(make_args(dataset=name, data_dir=str(root), batch_size=20, micro_batch=10),
                      rank=0, world_size=1, device=CPU)
    assert (data.num_classes, data.in_chans, data.img_size) == DATASETS[name].shape
    assert data.train_size == 60 and data.steps_per_epoch == 3
    xv, yv = zip(*data.val)
    ids = decode_ids(torch.cat(xv), name)
    assert ids == list(range(10_000, 10_025))  # validation: every image, in order, unaugmented
    assert torch.cat(yv).tolist() == [i % DATASETS[name].num_classes for i in ids]
    data.train.set_epoch(0)
    for x, y in data.train:  # labels travel with their images through the shuffle
        assert y.tolist() == [i % DATASETS[name].num_classes for i in decode_ids(x, name)]


@pytest.mark.parametrize("pipeline", ["batched", "workers"])
def test_cifar_recipe_shapes_and_ranges(tmp_path, pipeline):
    root = fake_cifar(tmp_path)
    args = make_args(dataset="cifar10", data_dir=str(root), batch_size=20, micro_batch=10, crop_pad=4, hflip=True,
                     auto_augment=True, cutout=16)
    data = build_data(args, rank=0, world_size=1, device=CPU, pipeline=pipeline)
    for x, y in epoch_batches(data):
        assert x.shape == (10, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (10,)
        lo = (torch.tensor([0.0]) - torch.tensor(DATASETS["cifar10"].mean)) / torch.tensor(DATASETS["cifar10"].std)
        hi = (torch.tensor([1.0]) - torch.tensor(DATASETS["cifar10"].mean)) / torch.tensor(DATASETS["cifar10"].std)
        assert (x >= lo.view(1, 3, 1, 1) - 1e-4).all() and (x <= hi.view(1, 3, 1, 1) + 1e-4).all()
        zero_squares = (x == 0).all(dim=1).sum(dim=(1, 2))  # Cutout: a 16x16 square at the mean (0)
        assert (zero_squares >= 256).all()


def test_auto_pipeline_choice(tmp_path):
    root = str(fake_cifar(tmp_path))
    kw = dict(dataset="cifar10", data_dir=root, batch_size=20, micro_batch=10)
    assert build_data(make_args(**kw, crop_pad=4), rank=0, world_size=1, device=CPU).pipeline == "batched"
    assert build_data(make_args(**kw, auto_augment=True), rank=0, world_size=1, device=CPU).pipeline == "workers"
    assert build_data(make_args(**kw, auto_augment=True, gpu_data=True), rank=0, world_size=1,
                      device=CPU).pipeline == "batched"


def test_imagefolder_train_val_and_mixup(tmp_path):
    root = fake_imagefolder(tmp_path)
    args = make_args(dataset="imagenet", data_dir=str(root), img_size=32, batch_size=4, micro_batch=2,
                     val_batch_size=5, hflip=True, mixup=0.8, cutmix=1.0, label_smoothing=0.1)
    data = build_data(args, rank=0, world_size=1, device=CPU)
    assert (data.num_classes, data.in_chans, data.img_size, data.train_size) == (3, 3, 32, 12)
    batches = epoch_batches(data)
    assert len(batches) == 6
    for x, y in batches:
        assert x.shape == (2, 3, 32, 32) and y.shape == (2, 3) and y.is_floating_point()
        assert torch.allclose(y.sum(1), torch.ones(2)) and (y >= 0.1 / 3 - 1e-6).all()  # smoothed soft targets
    n_val = sum(len(y) for _, y in data.val)
    x, y = next(iter(data.val))
    assert n_val == 12 and x.shape == (5, 3, 32, 32) and y.dtype == torch.int64
    deit = build_data(make_args(**{**vars(args), "auto_augment": True, "reprob": 0.25, "mixup": 0.0,
                                   "cutmix": 0.0}), rank=0, world_size=1, device=CPU)
    assert epoch_batches(deit)[0][0].shape == (2, 3, 32, 32)


# -- sharding and resume ---------------------------------------------------------------------------------------------
def test_ranks_get_disjoint_shards_and_val_covers_everything_once(tmp_path):
    root = str(fake_cifar(tmp_path))
    world = 3
    train_ids, val_ids = [], []
    for rank in range(world):
        data = build_data(make_args(dataset="cifar10", data_dir=root, batch_size=24, micro_batch=4),
                          rank=rank, world_size=world, device=CPU)
        assert data.accum_steps == 2 and data.steps_per_epoch == 2 and len(data.train) == 4
        ids = [i for x, _ in epoch_batches(data, epoch=1) for i in decode_ids(x)]
        assert len(ids) == 16
        train_ids.append(set(ids))
        val_ids += [i for x, _ in data.val for i in decode_ids(x)]
    assert sum(len(s) for s in train_ids) == len(set.union(*train_ids)) == 48  # disjoint, one epoch's worth
    assert sorted(val_ids) == list(range(10_000, 10_025))  # every validation image exactly once


@pytest.mark.parametrize("n,world", [(50, 1), (50, 3), (17, 4)])
def test_shards_match_distributed_sampler(n, world):
    from torch.utils.data.distributed import DistributedSampler
    for rank in range(world):
        ref = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=11, drop_last=True)
        ref.set_epoch(4)
        assert shard_indices(n, epoch=4, seed=11, rank=rank, world_size=world).tolist() == list(ref)


@pytest.mark.parametrize("pipeline,extra", [
    ("batched", dict(crop_pad=4, hflip=True, cutout=8, auto_augment=True)),
    ("workers", dict(crop_pad=4, hflip=True, cutout=8, auto_augment=True, mixup=0.8, cutmix=1.0)),
])
def test_start_batch_yields_exactly_the_tail_of_the_epoch(pipeline, extra):
    data = build_data(synth(synthetic_train_size=64, batch_size=16, micro_batch=4, **extra), rank=0, world_size=1,
                      device=CPU, pipeline=pipeline)
    full = epoch_batches(data, epoch=2)
    assert len(full) == 16
    torch.manual_seed(999)  # the global RNG state must not matter
    tail = epoch_batches(data, epoch=2, start=5)
    assert len(tail) == 11
    for (xa, ya), (xb, yb) in zip(full[5:], tail):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = epoch_batches(data, epoch=3)
    assert not torch.equal(torch.cat([x for x, _ in full]), torch.cat([x for x, _ in other]))


def test_loaders_leave_global_rngs_alone():
    data = build_data(synth(crop_pad=2, hflip=True, auto_augment=True, mixup=0.5), rank=0, world_size=1, device=CPU)
    torch.manual_seed(5)
    np.random.seed(5)
    before = torch.get_rng_state(), np.random.get_state()[1].copy()
    epoch_batches(data)
    assert torch.equal(torch.get_rng_state(), before[0]) and np.array_equal(np.random.get_state()[1], before[1])


def test_batch_arithmetic_and_errors():
    # --micro-batch is the per-device maximum: 16 / 2 processes = 8 per process, the largest divisor <= 6 is 4
    data = build_data(synth(batch_size=16, micro_batch=6), rank=0, world_size=2, device=CPU)
    assert (data.split.micro_batch, data.split.accum_steps) == (4, 2) and len(data.train) == 4 * 2
    with pytest.raises(ValueError, match="--batch-size 15 is not divisible by the 2 processes"):
        build_data(synth(batch_size=15, micro_batch=6), rank=0, world_size=2, device=CPU)
    with pytest.raises(ValueError, match="fewer than one batch"):
        build_data(synth(synthetic_train_size=10, batch_size=16), rank=0, world_size=1, device=CPU)
    with pytest.raises(ValueError, match="even --micro-batch"):
        build_data(synth(batch_size=9, micro_batch=3, mixup=0.8), rank=0, world_size=1, device=CPU)
    with pytest.raises(ValueError, match="train-subset 100"):
        build_data(synth(train_subset=100), rank=0, world_size=1, device=CPU)
    data = build_data(synth(synthetic_train_size=70, batch_size=32, micro_batch=8), rank=1, world_size=2, device=CPU)
    assert (data.steps_per_epoch, data.accum_steps, len(data.train)) == (2, 2, 4)


def test_subset_is_fixed_whatever_the_seed(tmp_path):
    root = str(fake_cifar(tmp_path))
    picked = []
    for seed in (0, 1):
        data = build_data(make_args(dataset="cifar10", data_dir=root, batch_size=10, micro_batch=10, seed=seed,
                                    train_subset=30, val_subset=7), rank=0, world_size=1, device=CPU)
        assert data.train_size == 30
        picked.append(sorted(i for x, _ in epoch_batches(data) for i in decode_ids(x)))
        assert len([i for x, _ in data.val for i in decode_ids(x)]) == 7
    assert picked[0] == picked[1] and len(set(picked[0])) == 30


def test_missing_datasets_say_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setattr(fdata, "DEBIAN_FASHION_MNIST", str(tmp_path / "no-debian"))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as e:
        build_data(make_args(dataset="fashion_mnist", data_dir=str(tmp_path)), rank=0, world_size=1, device=CPU)
    assert str(tmp_path) in str(e.value) and "prepare_data.py" in str(e.value)
    with pytest.raises(FileNotFoundError, match="cifar-100-python") as e:
        build_data(make_args(dataset="cifar100", data_dir=str(tmp_path)), rank=0, world_size=1, device=CPU)
    assert "prepare_data.py --dataset cifar100" in str(e.value)
    (tmp_path / "train" / "n01").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as e:
        build_data(make_args(dataset="imagenet", data_dir=str(tmp_path)), rank=0, world_size=1, device=CPU)
    assert f"missing folder {tmp_path / 'val'}" in str(e.value) and "empty class folder(s): n01" in str(e.value)


def test_fashion_mnist_from_torchvision_layout(tmp_path):
    src = find_fashion_mnist("/nonexistent")
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    import gzip
    for f in src.iterdir():  # torchvision keeps the un-gzipped idx files there
        (raw / f.name.removesuffix(".gz")).write_bytes(gzip.decompress(f.read_bytes()))
    assert find_fashion_mnist(str(tmp_path)) == raw
    data = build_data(make_args(dataset="fashion_mnist", data_dir=str(tmp_path), train_subset=100, val_subset=50,
                                batch_size=50, micro_batch=50), rank=0, world_size=1, device=CPU)
    assert data.train_size == 100 and sum(len(y) for _, y in data.val) == 50


# -- synthetic data ----------------------------------------------------------------------------------------------
def test_synthetic_is_deterministic_and_learnable():
    args = synth(synthetic_train_size=400, synthetic_val_size=200, batch_size=400, micro_batch=400,
                 val_batch_size=200, img_size=24, in_chans=1, num_classes=5)
    a = build_data(args, rank=0, world_size=1, device=CPU)
    b = build_data(args, rank=0, world_size=1, device=CPU)
    (xa, ya), (xb, yb) = epoch_batches(a)[0], epoch_batches(b)[0]
    assert torch.equal(xa, xb) and torch.equal(ya, yb) and xa.shape == (400, 1, 24, 24)
    means = torch.stack([xa[ya == c].mean(0) for c in range(5)])  # nearest class mean beats chance by far
    xv, yv = next(iter(a.val))
    pred = torch.cdist(xv.flatten(1), means.flatten(1)).argmin(1)
    assert (pred == yv).float().mean() > 0.8


# -- batched augmentation semantics ----------------------------------------------------------------------------------
def test_random_crop_is_a_shifted_window_of_the_padded_image():
    x = torch.randint(1, 256, (32, 3, 8, 8), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    out = random_crop(x, 2, g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(32):
        hits = [(dy, dx) for dy in range(5) for dx in range(5)
                if torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8])]
        assert hits, "every crop is a window of the zero-padded image"
        offsets.add(hits[0])
    assert len(offsets) > 5
    assert torch.equal(random_crop(x, 0, g), x)


def test_hflip_mirrors_about_half_the_images():
    x = torch.rand(400, 1, 5, 7)
    out = random_hflip(x, torch.Generator().manual_seed(0))
    same = [torch.equal(out[i], x[i]) for i in range(400)]
    mirrored = [torch.equal(out[i], x[i].flip(-1)) for i in range(400)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 150 < sum(mirrored) < 250


def test_cutout_zeroes_one_square_inside_each_image():
    x = torch.ones(50, 3, 32, 32)
    out = cutout(x, 16, torch.Generator().manual_seed(0))
    zeros = out[:, 0] == 0
    assert (zeros.sum(dim=(1, 2)) == 256).all() and torch.equal(zeros, (out == 0).all(1))
    rows, cols = zeros.any(2), zeros.any(1)
    assert (rows.sum(1) == 16).all() and (cols.sum(1) == 16).all()  # one 16x16 square, not clipped
    assert len({tuple(r.nonzero()[0].tolist()) for r in rows}) > 5  # placed at random


def test_batch_augment_normalises_and_is_a_function_of_the_seed():
    mean, std = DATASETS["cifar10"].mean, DATASETS["cifar10"].std
    aug = BatchAugment(mean, std, CPU, crop_pad=4, hflip=True, auto_augment=True, cutout=8)
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    plain = aug(x)  # validation: normalisation only
    expected = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(plain, expected, atol=1e-5)
    assert torch.equal(aug(x, 7), aug(x, 7)) and not torch.equal(aug(x, 7), aug(x, 8))
    aa = grouped_autoaugment(x, 3, group=1)
    assert aa.shape == x.shape and aa.dtype == torch.uint8 and torch.equal(aa, grouped_autoaugment(x, 3, group=1))


def test_mixup_fn_only_when_asked():
    assert mixup_fn(make_args(), 10) is None
    m = mixup_fn(make_args(mixup=0.8, cutmix=1.0, label_smoothing=0.1), 10)
    x, y = m(torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))
    assert y.shape == (4, 10) and torch.allclose(y.sum(1), torch.ones(4))
