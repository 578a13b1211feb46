"""The fast ImageNet input (framework/jpeg.py) against timm's (issue 27): the same crop-box distribution (scale,
aspect ratio, flip rate), the same normalisation, crops fixed by the seed, a corrupt or truncated JPEG skipped with a
warning and counted (never a traceback mid-epoch), and the batched-decode path (nvJPEG on a GPU) giving the CPU
path's crops when it runs on the CPU."""
from __future__ import annotations

import argparse
import math
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from framework import jpeg
from framework.data import build_data

CPU = torch.device("cpu")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return Path(jpeg.sample_jpeg_folder(str(tmp_path_factory.mktemp("jpegs")), classes=2, per_class=8))


def args_for(root: Path, **kw) -> argparse.Namespace:
    d = dict(dataset="imagenet", data_dir=str(root), img_size=64, in_chans=None, num_classes=None, train_subset=None,
             val_subset=None, workers=0, pin_mem=False, gpu_data=False, auto_augment=False, cutout=0, crop_pad=0,
             hflip=True, reprob=0.0, mixup=0.0, cutmix=0.0, label_smoothing=0.0, batch_size=4, micro_batch=4,
             val_batch_size=4, seed=0, imagenet_input="fast")
    d.update(kw)
    return argparse.Namespace(**d)


def test_crop_boxes_follow_timms_distribution():
    """Area fraction in [0.08, 1], log aspect ratio uniform in [log 3/4, log 4/3]: the same as timm's
    RandomResizedCropAndInterpolation.get_params on a 375x500 image, compared by quantiles over 20k draws."""
    from PIL import Image
    from timm.data.transforms import RandomResizedCropAndInterpolation
    h, w, n = 375, 500, 20_000
    ours = [jpeg.rrc_box(h, w, random.Random(i)) for i in range(n)]
    img = Image.new("RGB", (w, h))
    random.seed(0)
    theirs = [RandomResizedCropAndInterpolation.get_params(img, jpeg.SCALE, jpeg.RATIO) for _ in range(n)]
    for boxes in (ours, theirs):
        assert all(0 <= t and 0 <= l and t + bh <= h and l + bw <= w for t, l, bh, bw in boxes)
    area = lambda bs: np.array([bh * bw / (h * w) for _, _, bh, bw in bs])  # noqa: E731
    ratio = lambda bs: np.array([math.log(bw / bh) for _, _, bh, bw in bs])  # noqa: E731
    q = [0.05, 0.25, 0.5, 0.75, 0.95]
    assert np.quantile(area(ours), q) == pytest.approx(np.quantile(area(theirs), q), abs=0.02)
    assert np.quantile(ratio(ours), q) == pytest.approx(np.quantile(ratio(theirs), q), abs=0.02)
    assert area(ours).min() >= 0.075 and area(ours).max() <= 1.0
    assert abs(ratio(ours)).max() <= math.log(4 / 3) + 0.02


def test_flip_rate_and_seeded_crops(folder):
    a = jpeg.FastImageFolder(str(folder / "train"), 64, train=True, seed=3)
    b = jpeg.FastImageFolder(str(folder / "train"), 64, train=True, seed=3)
    c = jpeg.FastImageFolder(str(folder / "train"), 64, train=True, seed=4)
    for key in [(0, 0), (5, 0), (5, 1)]:
        assert torch.equal(a[key][0], b[key][0])  # a seed fixes the crop (and the flip)
    assert not torch.equal(a[(5, 0)][0], a[(5, 1)][0]) and not torch.equal(a[(5, 0)][0], c[(5, 0)][0])
    x = torch.stack([a[(i % len(a), e)][0] for e in range(6) for i in range(len(a))])
    assert x.dtype == torch.uint8 and x.shape[1:] == (3, 64, 64)


def test_flip_probability_is_one_half():
    hits = 0
    for i in range(4000):
        rng = random.Random(jpeg.derive_seed(0, 0, i, 7))
        jpeg.rrc_box(375, 500, rng)
        hits += rng.random() < 0.5
    assert abs(hits / 4000 - 0.5) < 0.03


def test_normalisation_matches_timms(folder):
    """The same uint8 crop normalised on the device equals timm's ToTensor + Normalize."""
    from torchvision import transforms
    crop = jpeg.FastImageFolder(str(folder / "val"), 64, train=False)[0][0]
    ref = transforms.Normalize(MEAN, STD)(crop.float() / 255)
    assert torch.allclose(jpeg.normalize(crop[None], MEAN, STD)[0], ref, atol=1e-5)


def test_validation_crop_is_timms_eval_transform(folder):
    """Resize the shorter side to size/crop_pct, centre crop: against timm's eval transform on the same file
    (different decoders, resamplers and a pixel of rounding in the box: close, not equal). At 224 measured 0.065-0.096
    std units apart per image, 0.079 on average (about 5 of 255 levels)."""
    from PIL import Image
    from timm.data import create_transform
    ds = jpeg.FastImageFolder(str(folder / "val"), 224, train=False)
    tf = create_transform(224, is_training=False, interpolation="bilinear", crop_pct=224 / 256, mean=MEAN, std=STD)
    diffs = []
    for i in range(len(ds)):
        ours = jpeg.normalize(ds[i][0][None], MEAN, STD)[0]
        theirs = tf(Image.open(ds.samples[i][0]).convert("RGB"))
        assert tuple(ours.shape) == tuple(theirs.shape) == (3, 224, 224)
        diffs.append(float((ours - theirs).abs().mean()))
    assert max(diffs) < 0.12 and sum(diffs) / len(diffs) < 0.09


def test_build_data_fast_and_timm_give_batches_of_one_shape(folder):
    fast = build_data(args_for(folder), rank=0, world_size=1, device=CPU)
    timm_ = build_data(args_for(folder, imagenet_input="timm"), rank=0, world_size=1, device=CPU)
    for data in (fast, timm_):
        data.train.set_epoch(0)
        x, y = next(iter(data.train))
        assert x.shape == (4, 3, 64, 64) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert -3 < x.mean() < 3
        xv, yv = next(iter(data.val))
        assert xv.shape == (4, 3, 64, 64) and xv.dtype == torch.float32
    assert fast.train_size == timm_.train_size == 16


def _damaged_copy(folder: Path, root: Path) -> list[Path]:
    import shutil
    shutil.copytree(folder, root)
    files = sorted((root / "train").rglob("*.JPEG"))
    files[0].write_bytes(files[0].read_bytes()[:300])                      # truncated
    files[1].write_bytes(b"\xff\xd8\xff" + bytes(range(256)) * 4)           # a JPEG marker, then garbage
    files[2].write_bytes(b"not an image at all")
    return files


@pytest.mark.parametrize("mode", ["fast", "timm"])
def test_a_corrupt_or_truncated_jpeg_is_skipped_with_a_warning_and_counted(folder, tmp_path, capsys, mode):
    files = _damaged_copy(folder, tmp_path / "bad")
    data = build_data(args_for(tmp_path / "bad", batch_size=16, micro_batch=16, imagenet_input=mode), rank=0,
                      world_size=1, device=CPU)
    data.train.set_epoch(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(data.train)  # the whole epoch: no exception
    assert len(batches) == 1 and batches[0][0].shape == (16, 3, 64, 64)
    assert data.unreadable() >= 2  # the truncated one may still decode (libjpeg pads it); the others cannot
    err = capsys.readouterr().err
    assert str(files[2]) in err and "skipped an unreadable image" in err


@pytest.mark.parametrize("mode", ["fast", "timm"])
def test_train_py_on_a_folder_with_damaged_jpegs_finishes_and_reports_the_skips(folder, tmp_path, mode):
    from conftest import run_cmd, train_cmd
    _damaged_copy(folder, tmp_path / "bad")
    out = tmp_path / "run"
    r = run_cmd(train_cmd("--dataset", "imagenet", "--data-dir", str(tmp_path / "bad"), "--imagenet-input", mode,
                          "--model", "fmnist_cnn", "--in-chans", "3", "--img-size", "28", "--batch-size", "8",
                          "--epochs", "1", "--workers", "1", "--device", "cpu", "--output", str(out)))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    import json
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "finished" and results["unreadable_image_reads"] >= 2
    assert "reads of unreadable images were replaced" in (out / "train.log").read_text()


def test_batched_decode_path_gives_the_cpu_crops(folder):
    """--imagenet-input gpu: the worker sends file bytes + box + flip; decode_batch_on_device decodes the batch at
    once (nvJPEG on a GPU) and crops there. On the CPU it must give the CPU path's images (decoders may differ by a
    few levels: libjpeg-turbo's fast DCT and scaled decode in the CPU path)."""
    cpu = jpeg.FastImageFolder(str(folder / "train"), 64, train=True, seed=1)
    gpu = jpeg.FastImageFolder(str(folder / "train"), 64, train=True, seed=1, gpu_decode=True)
    items = [gpu[(i, 0)] for i in range(6)]
    datas, boxes, labels = jpeg.collate_gpu_decode(items)
    out = jpeg.decode_batch_on_device(datas, boxes, 64, CPU)
    ref = torch.stack([cpu[(i, 0)][0] for i in range(6)])
    assert out.shape == ref.shape and out.dtype == torch.uint8
    assert (out.float() - ref.float()).abs().mean() < 6  # same boxes and flips; decoders differ slightly
    assert labels.tolist() == [cpu[(i, 0)][1] for i in range(6)]
    data = build_data(args_for(folder, imagenet_input="gpu"), rank=0, world_size=1, device=CPU)
    data.train.set_epoch(0)
    x, y = next(iter(data.train))
    assert x.shape == (4, 3, 64, 64) and x.dtype == torch.float32


def _first_batch(data, epoch: int = 0) -> torch.Tensor:
    data.train.set_epoch(epoch)
    return next(iter(data.train))[0]


def test_randaugment_and_random_erasing_run_on_the_device_in_the_fast_path(folder):
    """--auto-augment (the DeiT recipe's RandAugment) and --reprob no longer send ImageNet to timm's per-sample
    pipeline: the fast path applies them to the batch on the device. They change the batch, a seed fixes them, and
    random erasing replaces whole rectangles with N(0, 1) noise after normalisation (timm's 'pixel' mode)."""
    plain = _first_batch(build_data(args_for(folder), rank=0, world_size=1, device=CPU))
    ra = build_data(args_for(folder, auto_augment=True), rank=0, world_size=1, device=CPU)
    x = _first_batch(ra)
    assert x.shape == plain.shape and not torch.equal(x, plain)  # the same crops, then RandAugment
    assert torch.equal(x, _first_batch(build_data(args_for(folder, auto_augment=True), rank=0, world_size=1,
                                                  device=CPU)))
    assert not torch.equal(x, _first_batch(ra, epoch=1))
    erased = _first_batch(build_data(args_for(folder, reprob=1.0, batch_size=8, micro_batch=8), rank=0,
                                     world_size=1, device=CPU))
    base = _first_batch(build_data(args_for(folder, batch_size=8, micro_batch=8), rank=0, world_size=1, device=CPU))
    changed = (erased != base).any(1)  # (N, H, W): where some channel differs
    assert changed.flatten(1).any(1).all()  # probability 1: every image has its rectangle
    for img in changed:
        rows, cols = img.any(1).nonzero().flatten(), img.any(0).nonzero().flatten()
        box = img[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.float().mean() > 0.95  # one filled rectangle
        area = box.numel() / img.numel()
        assert 0.02 - 1e-3 <= area <= 1 / 3 + 0.05


def test_grouped_randaugment_draws_per_group_and_parses_timms_spec():
    from framework.gpu_data import grouped_randaugment, parse_rand_augment
    assert parse_rand_augment("rand-m9-mstd0.5-inc1") == {"magnitude": 9.0, "magnitude_std": 0.5}
    assert parse_rand_augment("rand-m7-n3") == {"magnitude": 7.0, "num_ops": 3}
    for bad in ("auto-m9", "rand-q9", "rand-mx", "rand-m9-inc0"):
        with pytest.raises(ValueError, match="RandAugment spec"):
            parse_rand_augment(bad)
    x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    state = torch.get_rng_state()
    a = grouped_randaugment(x, 3, 8, magnitude=9, magnitude_std=0.5)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's stream untouched
    assert torch.equal(a, grouped_randaugment(x, 3, 8, magnitude=9, magnitude_std=0.5))
    assert a.dtype == torch.uint8 and a.shape == x.shape
    changed = [(g != h).any().item() for g, h in zip(a.split(8), x.split(8))]
    assert sum(changed) >= 2  # groups get their own draws; Identity twice in a group leaves it as it was
    assert torch.equal(grouped_randaugment(x, 3, 8, magnitude=0, magnitude_std=0.0, num_ops=0), x)


def test_timms_randaugment_under_a_pillow_that_refuses_zero_bits_is_refused_before_the_run(folder, monkeypatch):
    """Pillow 13 raises on posterize(bits=0), which timm's RandAugment (rand-m9-mstd0.5-inc1) draws at the top
    magnitude: the timm path would die mid-epoch. It is refused when the data is built, naming the way out."""
    from PIL import ImageOps

    def strict(image, bits):
        if not 1 <= bits <= 8:
            raise ValueError("bits must be between or equal to 1 and 8")
        return image
    monkeypatch.setattr(ImageOps, "posterize", strict)
    with pytest.raises(ValueError, match="pillow<13.*--imagenet-input fast"):
        build_data(args_for(folder, imagenet_input="timm", auto_augment=True), rank=0, world_size=1, device=CPU)
    build_data(args_for(folder, imagenet_input="fast", auto_augment=True), rank=0, world_size=1, device=CPU)


def test_timms_deit_pipeline_runs_a_whole_epoch_with_the_pinned_pillow(folder):
    data = build_data(args_for(folder, imagenet_input="timm", auto_augment=True, reprob=0.25, batch_size=16,
                               micro_batch=16), rank=0, world_size=1, device=CPU)
    for epoch in range(4):  # 64 RandAugment draws of 2 ops each, magnitude noise included
        data.train.set_epoch(epoch)
        assert all(x.shape == (16, 3, 64, 64) for x, _ in data.train)
