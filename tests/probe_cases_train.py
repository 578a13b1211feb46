"""Probe cases: train.py's configs, data files, run directories, resumes and ranks."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fault_probe import ROOT, TINY, Outcome, Proc, case, expect_ok, expect_refusal, tree


@case("config", "a YAML config whose top level is a list")
def config_top_level_list(p):
    cfg = p.write("c.yaml", "- lr: 0.1\n")
    out = p.path("run")
    proc = p.train("-c", str(cfg), "--output", str(out))
    return expect_refusal(p, proc, "c.yaml", unchanged=[out], before={str(out): tree(out)})


# -- helpers -----------------------------------------------------------------------------------------------------------
def _refused(p, argv, names, *, keep=(), code=2, tiny=True):
    """train.py ARGV should refuse naming ``names`` and change nothing under ``keep`` (and p.tmp's run dir)."""
    keep = [Path(k) for k in keep] or [p.path("run")]
    before = {str(k): tree(k) for k in keep}
    proc = p.train(*argv, tiny=tiny)
    return expect_refusal(p, proc, names, unchanged=keep, before=before, code=code)


def _json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _lines(path: Path) -> list[str]:
    return [line for line in Path(path).read_text().splitlines() if line.strip()]


def _idx(path: Path, arr: np.ndarray, dtype_code: int = 0x08) -> Path:
    """An idx file (MNIST's format) holding ``arr``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">HBB", 0, dtype_code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    path.write_bytes(header + np.ascontiguousarray(arr).astype(np.uint8).tobytes())
    return path


def _fashion(p, name: str = "fm", n_train: int = 64, n_val: int = 32, *, train_images=None, train_labels=None,
             skip: tuple = ()) -> Path:
    """A small Fashion-MNIST folder (the four idx files) in p.tmp; any file may be replaced or left out."""
    d = p.path(name)
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)) if train_images is None else train_images,
        "train-labels-idx1-ubyte": np.arange(n_train) % 10 if train_labels is None else train_labels,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_val, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_val) % 10,
    }
    d.mkdir(parents=True, exist_ok=True)
    for fname, arr in files.items():
        if fname not in skip:
            _idx(d / fname, np.asarray(arr))
    return d


FM = ["--dataset", "fashion_mnist", "--epochs", "1"]  # on top of TINY (28x28, 1 channel, 10 classes)
REAL = ["--model", "fmnist_cnn", "--workers", "0", "--device", "cpu", "--batch-size", "16", "--micro-batch", "16",
        "--epochs", "1", "--log-interval", "1", "--sched", "baseline", "--warmup-epochs", "0"]
# (a run on real-format data, not TINY's synthetic shape)


def _cifar(p, *, data=None, labels=None, n: int = 16) -> Path:
    """A small cifar-10-batches-py folder; ``data``/``labels`` replace those of the test batch."""
    d = p.path("cifar", "cifar-10-batches-py")
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        with open(d / f"data_batch_{i}", "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
                         "labels": [int(x) for x in np.arange(n) % 10], "batch_label": "training batch"}, f)
    with open(d / "test_batch", "wb") as f:
        pickle.dump({"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8) if data is None else data,
                     "labels": [int(x) for x in np.arange(n) % 10] if labels is None else labels}, f)
    return p.path("cifar")


def _image_folder(p, classes=("a", "b"), per_class: int = 4, *, val_classes=None, bad: bool = False) -> Path:
    """An ImageFolder layout (train/<class>/*.jpg, val/<class>/*.jpg) of small JPEGs (or of garbage with ``bad``)."""
    from PIL import Image
    root = p.path("imgs")
    rng = np.random.default_rng(0)
    for split, names in (("train", classes), ("val", classes if val_classes is None else val_classes)):
        for c in names:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                if bad:
                    (d / f"{i}.jpg").write_bytes(b"this is not a JPEG at all " * 4)
                else:
                    Image.fromarray(rng.integers(0, 256, (40, 40, 3)).astype(np.uint8)).save(d / f"{i}.jpg")
    return root


IMG = [*REAL, "--dataset", "imagenet", "--img-size", "28", "--batch-size", "4", "--micro-batch", "4"]


def _run_with_epoch_checkpoints(p, name: str = "a", *extra: str) -> Path:
    """A finished 2-epoch tiny run that kept epoch_000.pt (the checkpoint after its first epoch)."""
    return p.run_dir(name, "--checkpoint-interval", "1", *extra)


# -- config: the YAML file ---------------------------------------------------------------------------------------------
@case("config", "-c names a directory")
def config_is_a_directory(p):
    d = p.path("configs")
    d.mkdir()
    return _refused(p, ["-c", str(d), "--output", str(p.path("run"))], ["configs", "directory"])


@case("config", "a config file that is not UTF-8 (Latin-1 bytes)")
def config_not_utf8(p):
    cfg = p.write("c.yaml", "lr: 0.1\nmodel: fmnist_cnn  # caf\xe9\n".encode("latin-1"))
    return _refused(p, ["-c", str(cfg), "--output", str(p.path("run"))], "c.yaml")


@case("config", "a key given twice in one YAML file (the second would silently win)")
def config_duplicate_key(p):
    cfg = p.write("c.yaml", "lr: 0.1\nmodel: fmnist_cnn\nlr: 0.5\n")
    return _refused(p, ["-c", str(cfg), "--output", str(p.path("run"))], ["lr", "c.yaml"])


@case("config", "one setting under its dash and its underscore name with different values")
def config_dash_and_underscore_twice(p):
    cfg = p.write("c.yaml", "lr-base: 0.001\nlr_base: 0.01\n")
    return _refused(p, ["-c", str(cfg), "--output", str(p.path("run"))], ["lr-base", "lr_base"])


@case("config", "lr: 1e-3 in YAML (PyYAML reads an exponent without a dot as a string)")
def config_exponent_without_dot(p):
    cfg = p.write("c.yaml", "lr: 1e-3\nsched: baseline\nwarmup-epochs: 1\n")
    out = p.path("run")
    proc = p.train("-c", str(cfg), "--output", str(out), "--epochs", "1")

    def check():
        assert proc.code == 0, proc.text[-500:]
        saved = __import__("yaml").safe_load((out / "args.yaml").read_text())
        assert saved["lr"] == 0.001, saved["lr"]
    return expect_ok(p, check, proc)


@case("config", "a YAML tag that would construct a Python object (code in a config file)")
def config_python_tag(p):
    cfg = p.write("c.yaml", "lr: !!python/object/apply:os.system ['touch PWNED']\n")
    return _refused(p, ["-c", str(cfg), "--output", str(p.path("run"))], "c.yaml")


@case("config", "a nested mapping where a flag takes a string (model: {name: ...})")
def config_nested_mapping(p):
    cfg = p.write("c.yaml", "model: {name: resnet18, pretrained: true}\n")
    return _refused(p, ["-c", str(cfg), "--output", str(p.path("run"))], ["model", "c.yaml"])


@case("config", "a config that includes another (config: base.yaml), as some frameworks allow")
def config_includes_config(p):
    p.write("base.yaml", "lr: 0.1\n")
    cfg = p.write("c.yaml", "config: base.yaml\nepochs: 1\n")
    return _refused(p, ["-c", str(cfg), "--output", str(p.path("run"))], ["config", "c.yaml"])


@case("config", "sched-kwargs in YAML written as the command line's quoted string")
def config_sched_kwargs_string_in_yaml(p):
    cfg = p.write("c.yaml", "sched-kwargs: \"{fit_steps: 10}\"\n")
    return _refused(p, ["-c", str(cfg), "--output", str(p.path("run"))], ["sched-kwargs", "c.yaml"])


@case("config", "opt-betas in YAML with a NaN")
def config_betas_nan(p):
    cfg = p.write("c.yaml", "opt-betas: [.nan, 0.999]\n")
    return _refused(p, ["-c", str(cfg), "--output", str(p.path("run"))], "--opt-betas")


# -- config: the command line -----------------------------------------------------------------------------------------
@case("config", "--sched-kwargs given a YAML list")
def config_sched_kwargs_list(p):
    return _refused(p, ["--sched-kwargs", "[1, 2]", "--output", str(p.path("run"))], "--sched-kwargs")


@case("config", "--sched-kwargs with unbalanced braces")
def config_sched_kwargs_bad_yaml(p):
    return _refused(p, ["--sched-kwargs", "{eta_min: 1e-4", "--output", str(p.path("run"))], "--sched-kwargs")


@case("config", "--sched-kwargs in timm's key=value form")
def config_sched_kwargs_key_value(p):
    return _refused(p, ["--sched-kwargs", "fit_steps=10", "--output", str(p.path("run"))], "--sched-kwargs")


@case("config", "--sched-kwargs with a key that is a number")
def config_sched_kwargs_int_key(p):
    return _refused(p, ["--sched-kwargs", "{1: 2}", "--output", str(p.path("run"))], ["--sched-kwargs", "1"])


@case("config", "--epochs ten (not a number)")
def config_epochs_word(p):
    return _refused(p, ["--epochs", "ten", "--output", str(p.path("run"))], ["--epochs", "ten"])


@case("config", "a misspelt flag (--epochz)")
def config_unknown_flag(p):
    return _refused(p, ["--epochz", "3", "--output", str(p.path("run"))], "--epochz")


@case("config", "--opt adam (not a choice)")
def config_bad_choice(p):
    return _refused(p, ["--opt", "adam", "--output", str(p.path("run"))], ["--opt", "adam"])


@case("config", "--dist-timeout inf")
def config_dist_timeout_inf(p):
    return _refused(p, ["--dist-timeout", "inf", "--output", str(p.path("run"))], "--dist-timeout")


@case("config", "--output '' (the empty string would mean the current directory)")
def config_output_empty(p):
    p.write("mine.txt", "the user's file")
    return _refused(p, ["--output", ""], ["--output", "empty"], keep=[p.tmp])


@case("config", "--output is a dangling symlink")
def config_output_dangling_symlink(p):
    link = p.path("run")
    link.symlink_to(p.path("gone", "x"))
    return _refused(p, ["--output", str(link)], ["--output", "run", "link"], keep=[p.tmp])


@case("config", "--micro-batch larger than the batch (a per-device maximum: the whole batch in one pass)")
def config_micro_larger_than_batch(p):
    out = p.path("run")
    proc = p.train("--batch-size", "32", "--micro-batch", "64", "--epochs", "1", "--output", str(out))

    def check():
        assert proc.code == 0, proc.text[-500:]
        split = _json(out / "env.json")["split"]
        assert split["micro_batch"] == 32 and split["accum_steps"] == 1, split
        assert _json(out / "results.json")["status"] == "finished"
    return expect_ok(p, check, proc)


@case("config", "--batch-size larger than the training set")
def config_batch_larger_than_set(p):
    return _refused(p, ["--batch-size", "256", "--output", str(p.path("run"))], ["--batch-size", "128"])


@case("config", "--train-subset larger than the training set")
def config_subset_larger_than_set(p):
    return _refused(p, ["--train-subset", "500", "--output", str(p.path("run"))], ["--train-subset", "128"])


@case("config", "--img-size 32 with fmnist_mlp (its first layer follows the image size)")
def config_mlp_at_32(p):
    out = p.path("run")
    proc = p.train("--model", "fmnist_mlp", "--img-size", "32", "--epochs", "1", "--output", str(out))

    def check():
        assert proc.code == 0, proc.text[-500:]
        assert _json(out / "results.json")["status"] == "finished"
    return expect_ok(p, check, proc)


@case("config", "--img-size 32 with fmnist_cnn (its layers follow the image size)")
def config_cnn_at_32(p):
    out = p.path("run")
    proc = p.train("--img-size", "32", "--epochs", "1", "--output", str(out))

    def check():
        assert proc.code == 0, proc.text[-500:]
        assert _json(out / "results.json")["status"] == "finished"
    return expect_ok(p, check, proc)


@case("config", "--img-size 3: smaller than fmnist_cnn's two 3x3 convolutions")
def config_img_size_tiny(p):
    return _refused(p, ["--img-size", "3", "--output", str(p.path("run"))], "--img-size")


# -- data ------------------------------------------------------------------------------------------------------------
@case("data", "Fashion-MNIST: the labels file replaced by an images file (swapped names)")
def data_labels_file_holds_images(p):
    rng = np.random.default_rng(1)
    d = _fashion(p, train_labels=rng.integers(0, 256, (64, 28, 28)))
    return _refused(p, [*FM, "--data-dir", str(d), "--output", str(p.path("run"))], "train-labels-idx1-ubyte")


@case("data", "Fashion-MNIST: a label 12 in a 10-class dataset")
def data_label_out_of_range(p):
    labels = np.arange(64) % 10
    labels[5] = 12
    d = _fashion(p, train_labels=labels)
    return _refused(p, [*FM, "--data-dir", str(d), "--output", str(p.path("run"))], ["train-labels-idx1-ubyte", "12"])


@case("data", "Fashion-MNIST: images of 32x32 instead of 28x28")
def data_images_wrong_size(p):
    rng = np.random.default_rng(1)
    d = _fashion(p, train_images=rng.integers(0, 256, (64, 32, 32)))
    return _refused(p, [*FM, "--data-dir", str(d), "--output", str(p.path("run"))], ["train-images-idx3-ubyte", "28"])


@case("data", "Fashion-MNIST: 64 images but 60 labels")
def data_count_mismatch(p):
    d = _fashion(p, train_labels=np.arange(60) % 10)
    return _refused(p, [*FM, "--data-dir", str(d), "--output", str(p.path("run"))], "train-images-idx3-ubyte")


@case("data", "Fashion-MNIST: an idx file of float32 (type byte 0x0D)")
def data_idx_float(p):
    d = _fashion(p)
    f = d / "t10k-images-idx3-ubyte"
    raw = bytearray(f.read_bytes())
    raw[2] = 0x0D
    f.write_bytes(bytes(raw))
    return _refused(p, [*FM, "--data-dir", str(d), "--output", str(p.path("run"))], "t10k-images-idx3-ubyte")


@case("data", "Fashion-MNIST: a training file with 0 images")
def data_zero_images(p):
    d = _fashion(p, train_images=np.zeros((0, 28, 28)), train_labels=np.zeros((0,)))
    return _refused(p, [*FM, "--data-dir", str(d), "--output", str(p.path("run"))], "train-images-idx3-ubyte")


@case("data", "Fashion-MNIST: a partial download (t10k-labels missing) in --data-dir")
def data_partial_download(p):
    d = _fashion(p, skip=("t10k-labels-idx1-ubyte",))
    return _refused(p, [*FM, "--data-dir", str(d), "--output", str(p.path("run"))], "t10k-labels-idx1-ubyte")


@case("data", "--data-dir is a file")
def data_dir_is_a_file(p):
    f = p.write("data.tar", "not a folder")
    return _refused(p, [*FM, "--data-dir", str(f), "--output", str(p.path("run"))], ["--data-dir", "data.tar"])


@case("data", "CIFAR: rows of 3000 values instead of 3072")
def data_cifar_row_size(p):
    root = _cifar(p, data=np.zeros((16, 3000), np.uint8))
    return _refused(p, [*REAL, "--dataset", "cifar10", "--data-dir", str(root), "--output", str(p.path("run"))],
                    "test_batch", tiny=False)


@case("data", "CIFAR: 16 images but 8 labels in a batch")
def data_cifar_label_count(p):
    root = _cifar(p, labels=[1] * 8)
    return _refused(p, [*REAL, "--dataset", "cifar10", "--data-dir", str(root), "--output", str(p.path("run"))],
                    "test_batch", tiny=False)


@case("data", "CIFAR-10: a label 10 (classes are 0-9)")
def data_cifar_label_range(p):
    root = _cifar(p, labels=[10] + [1] * 15)
    return _refused(p, [*REAL, "--dataset", "cifar10", "--data-dir", str(root), "--output", str(p.path("run"))],
                    "test_batch", tiny=False)


@case("data", "CIFAR: pixels stored as floats in [0, 1] (would be cast to 0)")
def data_cifar_float_pixels(p):
    root = _cifar(p, data=np.random.default_rng(0).random((16, 3072)))
    return _refused(p, [*REAL, "--dataset", "cifar10", "--data-dir", str(root), "--output", str(p.path("run"))],
                    "test_batch", tiny=False)


@case("data", "ImageFolder: a class folder holding no image (only a README)")
def data_class_without_images(p):
    root = _image_folder(p)
    (root / "train" / "n0003").mkdir()
    (root / "train" / "n0003" / "README.txt").write_text("images come later")
    (root / "val" / "n0003").mkdir()
    (root / "val" / "n0003" / "0.txt").write_text("x")
    return _refused(p, [*IMG, "--data-dir", str(root), "--output", str(p.path("run"))], ["train", "n0003"],
                    tiny=False)


@case("data", "ImageFolder: only one class (a classifier of one class learns nothing)")
def data_single_class(p):
    root = _image_folder(p, classes=("only",))
    return _refused(p, [*IMG, "--data-dir", str(root), "--output", str(p.path("run"))], ["train", "class"],
                    tiny=False)


@case("data", "ImageFolder: not one readable image (every .jpg is text)")
def data_no_readable_image(p):
    root = _image_folder(p, bad=True)
    return _refused(p, [*IMG, "--data-dir", str(root), "--output", str(p.path("run"))], "train", tiny=False)


@case("data", "ImageFolder: train/ but no val/")
def data_no_val_folder(p):
    root = _image_folder(p)
    shutil.rmtree(root / "val")
    return _refused(p, [*IMG, "--data-dir", str(root), "--output", str(p.path("run"))], "val", tiny=False)


@case("data", "ImageFolder of 32x32 images trained at --img-size 32 with fmnist_cnn")
def data_image_folder_runs(p):
    root = _image_folder(p)
    out = p.path("run")
    proc = p.train(*IMG, "--img-size", "32", "--data-dir", str(root), "--output", str(out), tiny=False)

    def check():
        assert proc.code == 0, proc.text[-800:]
        assert _json(out / "results.json")["status"] == "finished"
    return expect_ok(p, check, proc)


# -- rundir ----------------------------------------------------------------------------------------------------------
@case("rundir", "a finished run whose checkpoints were deleted (to save space), run again")
def rundir_finished_without_checkpoints(p):
    out = p.run_dir()
    for name in ("last.pt", "prev.pt"):
        (out / name).unlink(missing_ok=True)
    return _refused(p, ["--output", str(out)], ["results.json", "--resume none"], keep=[out])


@case("rundir", "last.pt is a directory")
def rundir_last_pt_directory(p):
    out = p.path("run")
    (out / "last.pt").mkdir(parents=True)
    return _refused(p, ["--output", str(out)], "last.pt", keep=[out])


@case("rundir", "prev.pt is a directory (the second save would fail after training)")
def rundir_prev_pt_directory(p):
    out = p.path("run")
    (out / "prev.pt").mkdir(parents=True)
    return _refused(p, ["--output", str(out)], "prev.pt", keep=[out])


@case("rundir", "rollback is a file and --autowu-rollback asks for snapshots there")
def rundir_rollback_is_a_file(p):
    out = p.path("run")
    p.write("run/rollback", "my notes")
    return _refused(p, ["--autowu-rollback", "--output", str(out)], "rollback", keep=[out])


@case("rundir", ".lock is a directory")
def rundir_lock_is_a_directory(p):
    out = p.path("run")
    (out / ".lock").mkdir(parents=True)
    return _refused(p, ["--output", str(out)], [".lock", "directory"], keep=[out])


@case("rundir", "a last.pt that is a bare model state_dict (a pretrained-weights file put there)")
def rundir_foreign_last_pt(p):
    import torch
    from framework.models import FashionCNN
    out = p.path("run")
    out.mkdir()
    torch.save(FashionCNN().state_dict(), out / "last.pt")
    return _refused(p, ["--output", str(out)], "last.pt", keep=[out])


@case("rundir", "the user's own files in --output survive a run")
def rundir_user_files_kept(p):
    out = p.path("run")
    p.write("run/notes.txt", "do not touch")
    p.write("run/sub/data.csv", "1,2,3\n")
    proc = p.train("--epochs", "1", "--output", str(out))

    def check():
        assert proc.code == 0, proc.text[-500:]
        assert (out / "notes.txt").read_text() == "do not touch"
        assert (out / "sub" / "data.csv").read_text() == "1,2,3\n"
    return expect_ok(p, check, proc)


@case("rundir", "--output is a symlink to a directory")
def rundir_symlinked_output(p):
    real = p.path("real")
    real.mkdir()
    link = p.path("link")
    link.symlink_to(real)
    proc = p.train("--epochs", "1", "--output", str(link))

    def check():
        assert proc.code == 0, proc.text[-500:]
        assert link.is_symlink() and _json(real / "results.json")["status"] == "finished"
    return expect_ok(p, check, proc)


@case("rundir", "--resume names a run directory instead of a checkpoint file")
def rundir_resume_is_a_directory(p):
    a = p.run_dir("a")
    out = p.path("run")
    return _refused(p, ["--resume", str(a), "--output", str(out)], [str(a), "directory"], keep=[a, out])


@case("rundir", "--resume names a file that does not exist")
def rundir_resume_missing(p):
    out = p.path("run")
    return _refused(p, ["--resume", str(p.path("nope.pt")), "--output", str(out)], "nope.pt", keep=[out])


@case("rundir", "--resume a checkpoint of another model")
def rundir_resume_other_model(p):
    a = p.run_dir("a")
    out = p.path("run")
    return _refused(p, ["--resume", str(a / "last.pt"), "--model", "fmnist_mlp", "--output", str(out)], "model",
                    keep=[a, out])


@case("rundir", "--resume another run's epoch_000.pt into a new --output (a fork): the source run untouched")
def rundir_fork(p):
    a = _run_with_epoch_checkpoints(p)
    before = tree(a)
    out = p.path("b")
    proc = p.train("--resume", str(a / "epoch_000.pt"), "--output", str(out))

    def check():
        assert proc.code == 0, proc.text[-500:]
        assert tree(a) == before, "the source run changed"
        res = _json(out / "results.json")
        assert res["status"] == "finished" and res["steps"] == 8 and res["epochs"] == 2, res
    return expect_ok(p, check, proc)


# -- resume ----------------------------------------------------------------------------------------------------------
@case("resume", "a finished run run again with the same command changes none of its logs or results")
def resume_finished_again(p):
    out = p.run_dir()
    keep = {n: (out / n).read_bytes() for n in ("steps.csv", "epochs.jsonl", "events.jsonl", "last.pt")}
    results = _json(out / "results.json")
    proc = p.train("--output", str(out))

    def check():
        assert proc.code == 0, proc.text[-500:]
        changed = [n for n, b in keep.items() if (out / n).read_bytes() != b]
        assert not changed, f"changed: {changed}"
        again = _json(out / "results.json")
        diff = [k for k in results if again.get(k) != results[k]]
        assert not diff, f"results.json changed: {diff}"
    return expect_ok(p, check, proc)


@case("resume", "back to epoch_000.pt in the same directory: the logs are cut back and continue")
def resume_roll_back_in_place(p):
    out = _run_with_epoch_checkpoints(p, "run")
    proc = p.train("--resume", str(out / "epoch_000.pt"), "--output", str(out))

    def check():
        assert proc.code == 0, proc.text[-500:]
        from framework.io import read_step_rows
        steps = [r["step"] for r in read_step_rows(str(out))]
        assert steps == list(range(8)), steps
        epochs = [json.loads(line)["epoch"] for line in _lines(out / "epochs.jsonl")]
        assert epochs == [0, 1], epochs
    return expect_ok(p, check, proc)


@case("resume", "a checkpoint of an older version (no position, split, steps_per_epoch, stats, record, RNG, threads)")
def resume_older_checkpoint(p):
    import torch
    a = _run_with_epoch_checkpoints(p)
    ckpt = torch.load(a / "epoch_000.pt", weights_only=True)
    for key in ("position", "split", "steps_per_epoch", "stats", "record", "rng_per_rank", "cpu_threads"):
        ckpt.pop(key, None)
    old = p.path("old.pt")
    torch.save(ckpt, old)
    out = p.path("b")
    proc = p.train("--resume", str(old), "--output", str(out))

    def check():
        assert proc.code == 0, proc.text[-500:]
        res = _json(out / "results.json")
        assert res["status"] == "finished" and res["steps"] == 8 and res["epochs"] == 2, res
    return expect_ok(p, check, proc)


@case("resume", "a run of --sched baseline resumed with --sched autowu-cos")
def resume_other_schedule(p):
    out = p.run_dir("run", "--sched", "baseline", "--warmup-epochs", "1")
    (out / "results.json").unlink()
    return _refused(p, ["--sched", "autowu-cos", "--warmup-epochs", "1", "--output", str(out)], "sched", keep=[out])


@case("resume", "resumed with another --batch-size")
def resume_other_batch(p):
    out = p.run_dir()
    (out / "results.json").unlink()
    return _refused(p, ["--batch-size", "64", "--output", str(out)], "batch-size", keep=[out])


@case("resume", "resumed with a --data-dir whose training set has another size (other steps per epoch)")
def resume_other_data_size(p):
    d1 = _fashion(p, "fm1", n_train=64)
    d2 = _fashion(p, "fm2", n_train=96)
    out = p.path("run")
    first = p.train(*FM, "--epochs", "2", "--checkpoint-interval", "1", "--data-dir", str(d1), "--output", str(out))
    if first.code != 0:
        return Outcome("traceback", f"setup run failed: {first.text[-300:]}")
    ckpt = out / "epoch_000.pt"
    b = p.path("b")
    return _refused(p, [*FM, "--epochs", "2", "--resume", str(ckpt), "--data-dir", str(d2), "--output", str(b)],
                    ["steps per epoch", "--data-dir"], keep=[out, b])


@case("resume", "a checkpoint made by 2 processes resumed by 1 at an epoch end")
def resume_two_to_one_process(p):
    import torch
    a = _run_with_epoch_checkpoints(p)
    ckpt = torch.load(a / "epoch_000.pt", weights_only=True)
    ckpt["split"] = {"batch_size": 32, "micro_batch": 16, "world_size": 2, "accum_steps": 1}
    ckpt["rng_per_rank"] = ckpt["rng_per_rank"] * 2
    two = p.path("two.pt")
    torch.save(ckpt, two)
    out = p.path("b")
    proc = p.train("--resume", str(two), "--output", str(out))

    def check():
        assert proc.code == 0, proc.text[-500:]
        assert "2 -> 1 processes" in (out / "train.log").read_text()
        res = _json(out / "results.json")
        assert res["status"] == "finished" and res["steps"] == 8, res
    return expect_ok(p, check, proc)


# -- ranks -----------------------------------------------------------------------------------------------------------
def _launch(p, per_rank: list[tuple[list[str], Path]], timeout: float = 90) -> list[Proc]:
    """train.py as ranks 0..n-1 of one gloo job on this machine (torchrun's variables), each with its own argv and
    working directory; every process is ended when the case ends."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
               WORLD_SIZE=str(len(per_rank)))
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(ROOT), env.get("PYTHONPATH")) if x)
    procs = []
    try:
        for rank, (argv, cwd) in enumerate(per_rank):
            cwd.mkdir(parents=True, exist_ok=True)
            procs.append(subprocess.Popen([sys.executable, str(ROOT / "train.py"), *argv], cwd=cwd,
                                          env=dict(env, RANK=str(rank), LOCAL_RANK=str(rank)),
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        out = []
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                o, e = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
                out.append(Proc(proc.returncode, o, e))
            except subprocess.TimeoutExpired:
                out.append(Proc(None, "", ""))
        return out
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def _all_refused(p, procs: list[Proc], names, *, keep=(), before=None, code: int = 2) -> Outcome:
    """Every rank's outcome; the first that is not a clear error, else rank 0's."""
    outcomes = [expect_refusal(p, proc, names, unchanged=keep, before=before, code=code) for proc in procs]
    bad = [(r, o) for r, o in enumerate(outcomes) if o.outcome != "clear error"]
    if bad:
        r, o = bad[0]
        return Outcome(o.outcome, f"rank {r}: {o.detail}")
    return outcomes[0]


@case("ranks", "the checkpoint is on rank 0's node only (node-local --output): rank 1 would start afresh", timeout=150)
def ranks_checkpoint_on_one_node(p):
    node0, node1 = p.path("node0"), p.path("node1")
    run0 = _run_with_epoch_checkpoints(p, "node0/run")
    shutil.copy(run0 / "epoch_000.pt", run0 / "last.pt")  # an unfinished run: 1 of 2 epochs done
    for name in ("prev.pt", "results.json"):
        (run0 / name).unlink()
    before = {str(run0): tree(run0)}
    argv = [*TINY, "--output", "run"]  # relative: each node's own disk
    procs = _launch(p, [(argv, node0), (argv, node1)])
    return _all_refused(p, procs, ["last.pt", "rank 1"], keep=[run0], before=before)


@case("ranks", "rank 1 refuses its --data-dir before the rendezvous: rank 0 must not wait out a long timeout",
      timeout=150)
def ranks_one_rank_fails_before_joining(p):
    d = _fashion(p)
    argv = [*TINY, *FM, "--dist-timeout", "5", "--output", str(p.path("run"))]
    procs = _launch(p, [([*argv, "--data-dir", str(d)], p.tmp), ([*argv, "--data-dir", str(p.path("nope"))], p.tmp)])
    rank1 = expect_refusal(p, procs[1], "--data-dir")
    if rank1.outcome != "clear error":
        return Outcome(rank1.outcome, f"rank 1: {rank1.detail}")
    rank0 = expect_refusal(p, procs[0], "--dist-timeout", code=1)
    return Outcome(rank0.outcome, f"rank 0: {rank0.detail}")


@case("ranks", "ranks started with different --micro-batch", timeout=150)
def ranks_different_micro_batch(p):
    out = p.path("run")
    procs = _launch(p, [([*TINY, "--micro-batch", "16", "--output", str(out)], p.tmp),
                        ([*TINY, "--micro-batch", "8", "--output", str(out)], p.tmp)])
    return _all_refused(p, procs, "--micro-batch", keep=[out], before={str(out): tree(out)})
