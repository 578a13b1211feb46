"""Checkpoints that resume a run exactly: model, optimizer, scheduler (AutoWU's full state), grad scaler, position
(epoch, optimizer step, samples of the epoch), batch split, RNG states, config, the loop's counters. Written atomically
(framework/io.py) so a kill during the write leaves the previous checkpoint intact. Whether a checkpoint may continue
under the settings given now is decided by framework/runspec.py.
"""
from __future__ import annotations

import os
import random
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from .io import atomic_write


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def rng_state() -> dict:
    """Python, NumPy, torch CPU and (when a GPU is in use) CUDA generator states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_checkpoint(path: str, *, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    scaler: Optional[torch.amp.GradScaler], position: dict, split: dict, steps_per_epoch: int,
                    config: dict, rng_per_rank: list, extra: Optional[dict] = None) -> None:
    """Write everything needed to continue from ``position`` (framework.runspec.Position as a dict: epoch, optimizer
    step, samples of the epoch used) to ``path`` atomically. ``split``: the BatchSplit it was made under;
    ``rng_per_rank``: :func:`rng_state` of every rank; ``extra``: the loop's counters and the run's results so far."""
    state = {
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "position": dict(position), "split": dict(split), "steps_per_epoch": steps_per_epoch,
        "epoch": position["epoch"], "step": position["step"],  # also at the top level, for readers of old files
        "rng_per_rank": rng_per_rank, "config": config, **(extra or {}),
    }
    atomic_write(path, lambda f: torch.save(state, f), binary=True)


def load_checkpoint(path: str) -> dict:
    """Read a checkpoint onto the CPU (tensors move to their device when loaded into the model/optimizer)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--resume {path!r}: no such checkpoint")
    return torch.load(path, map_location="cpu", weights_only=False)


def resume_path(resume: str, output: str) -> Optional[str]:
    """``auto``: ``output/last.pt`` when it exists; ``none``: never; otherwise the given path."""
    if resume == "none":
        return None
    if resume == "auto":
        last = os.path.join(output, "last.pt")
        return last if os.path.isfile(last) else None
    return resume
