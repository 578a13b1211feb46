#!/usr/bin/env python
"""Fetch or check a dataset where train.py will look for it (see data/README.md).

    python scripts/prepare_data.py --dataset fashion_mnist            # Debian package, else torchvision download
    python scripts/prepare_data.py --dataset cifar10 --data-dir data  # torchvision download (needs internet)
    python scripts/prepare_data.py --dataset imagenet --data-dir /datasets/imagenet   # layout check only

Exit status 0 when the dataset is ready (it is then loaded once through framework/data.py to prove it), 1 otherwise,
with a message that says what was tried and what to do.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from framework import datasets as fdata  # noqa: E402


def say(msg: str) -> None:
    print(msg, flush=True)


def fashion_mnist(data_dir: str) -> bool:
    found = fdata.find_fashion_mnist(data_dir)
    if found:
        say(f"Fashion-MNIST: found the idx files in {found}")
        return True
    tried = []
    if shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        say("Fashion-MNIST: installing the Debian package dataset-fashion-mnist (apt-get) ...")
        ok = subprocess.run(["apt-get", "install", "-y", "dataset-fashion-mnist"]).returncode == 0
        if not ok:
            ok = (subprocess.run(["apt-get", "update"]).returncode == 0 and
                  subprocess.run(["apt-get", "install", "-y", "dataset-fashion-mnist"]).returncode == 0)
        if ok and fdata.find_fashion_mnist(data_dir):
            say(f"Fashion-MNIST: installed from the Debian package into {fdata.DEBIAN_FASHION_MNIST}")
            return True
        tried.append("apt-get install dataset-fashion-mnist failed")
    else:
        tried.append("the Debian package needs root and apt-get (sudo apt-get install dataset-fashion-mnist)")
    say(f"Fashion-MNIST: downloading with torchvision into {data_dir}/FashionMNIST/raw ...")
    try:
        from torchvision.datasets import FashionMNIST
        FashionMNIST(data_dir, train=True, download=True)
        FashionMNIST(data_dir, train=False, download=True)
    except Exception as e:  # torchvision raises URLError/RuntimeError/OSError depending on what failed
        tried.append(f"torchvision download failed ({type(e).__name__}: {e})")
    if fdata.find_fashion_mnist(data_dir):
        say(f"Fashion-MNIST: downloaded by torchvision into {data_dir}/FashionMNIST/raw")
        return True
    say("Fashion-MNIST: not available. Tried: " + "; ".join(tried) + ". Copy the four *-ubyte.gz files from "
        f"https://github.com/zalandoresearch/fashion-mnist into {data_dir}/fashion-mnist/ instead.")
    return False


def cifar(name: str, data_dir: str) -> bool:
    found, _ = fdata.find_cifar(name, data_dir)
    if found:
        say(f"{name}: found {found}")
        return True
    say(f"{name}: downloading with torchvision into {data_dir} ...")
    try:
        from torchvision.datasets import CIFAR10, CIFAR100
        (CIFAR10 if name == "cifar10" else CIFAR100)(data_dir, train=True, download=True)
    except Exception as e:  # no internet: URLError; a bad archive: RuntimeError
        say(f"{name}: the torchvision download failed ({type(e).__name__}: {e}). Without internet access, copy "
            f"{name.replace('cifar', 'cifar-')}-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) into "
            f"{data_dir}/ and rerun (torchvision then checks and unpacks it), or unpack it there yourself "
            f"(giving {fdata.CIFAR_LAYOUT[name][0]}/)")
        return False
    found, _ = fdata.find_cifar(name, data_dir)
    say(f"{name}: downloaded into {found}")
    return found is not None


def imagenet(data_dir: str) -> bool:
    problems = fdata.check_imagenet(data_dir)
    root = fdata.imagenet_root(data_dir)
    if problems:
        say(f"ImageNet at {root}: not usable:\n  - " + "\n  - ".join(problems) +
            "\nExpected ROOT/train/<wnid>/*.JPEG and ROOT/val/<wnid>/*.JPEG (1000 class folders each). ImageNet "
            "cannot be downloaded automatically: get ILSVRC2012 from https://image-net.org, extract the train "
            "tars into class folders and sort val/ into class folders (valprep.sh of the PyTorch ImageNet example).")
        return False
    n_classes = len([e for e in os.scandir(root / "train") if e.is_dir()])
    note = "" if n_classes == 1000 else f" (not the 1000 of ImageNet-1k: pass --num-classes {n_classes})"
    say(f"ImageNet at {root}: train/ and val/ with {n_classes} classes each{note}")
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, choices=["cifar10", "cifar100", "fashion_mnist", "imagenet"])
    p.add_argument("--data-dir", default="data", help="train.py's --data-dir (default: data)")
    a = p.parse_args(argv)
    if os.path.exists(a.data_dir) and not os.path.isdir(a.data_dir):
        print(f"error: --data-dir {a.data_dir} is a file, not a folder; give the folder train.py's --data-dir will "
              "name", file=sys.stderr)
        return 2
    if a.dataset != "imagenet":
        try:
            os.makedirs(a.data_dir, exist_ok=True)
        except OSError as e:
            print(f"error: --data-dir {a.data_dir} cannot be made: {e.strerror or e}", file=sys.stderr)
            return 2
    ready = {"fashion_mnist": fashion_mnist, "imagenet": imagenet}.get(a.dataset, lambda d: cifar(a.dataset, d))(
        a.data_dir)
    if not ready:
        return 1
    if a.dataset != "imagenet":  # prove train.py can read it
        try:
            split = fdata.load_fashion_mnist(a.data_dir, "val") if a.dataset == "fashion_mnist" else \
                fdata.load_cifar(a.dataset, a.data_dir, "val")
        except (ValueError, OSError) as e:  # a damaged file: the reader names it
            print(f"error: {a.dataset} is there but cannot be read: {e}", file=sys.stderr)
            return 2
        say(f"{a.dataset}: read {len(split[1])} validation images of shape {tuple(split[0].shape[1:])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
