"""Checkpoints that resume a run exactly: model, optimizer, scheduler (AutoWU's full state), grad scaler, position
(epoch, optimizer step, micro-batch index), RNG states, config. Written atomically (temp file + ``os.replace``) so
a kill during the write leaves the previous checkpoint intact.
"""
from __future__ import annotations

import os
import random
from typing import Any, Optional

import numpy as np
import torch
from torch import nn


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
                    scaler: Optional[torch.amp.GradScaler], epoch: int, step: int, batch_index: int,
                    config: dict, rng_per_rank: list, extra: Optional[dict] = None) -> None:
    """Write everything needed to continue from optimizer step ``step`` (the next micro-batch of epoch ``epoch`` is
    ``batch_index``) to ``path`` atomically. ``rng_per_rank``: :func:`rng_state` of every rank."""
    state = {
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch, "step": step, "batch_index": batch_index,
        "rng_per_rank": rng_per_rank, "config": config, **(extra or {}),
    }
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str) -> dict:
    """Read a checkpoint onto the CPU (tensors move to their device when loaded into the model/optimizer)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--resume {path!r}: no such checkpoint")
    return torch.load(path, map_location="cpu", weights_only=False)


# Settings a run may not change when it resumes: they fix the schedule's step grid and the model.
RESUME_MUST_MATCH = ("model", "dataset", "batch_size", "epochs", "sched", "opt", "seed")


def check_resumable(saved: dict, current: dict, path: str) -> None:
    """Refuse to resume a checkpoint made with a different model, data, batch, schedule or optimizer."""
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}" for k in RESUME_MUST_MATCH
             if k in saved and saved.get(k) != current.get(k)]
    if diffs:
        raise ValueError(f"cannot resume from {path}: the config changed ({'; '.join(diffs)}). Use a new --output "
                         "directory or --resume none to start afresh.")


def resume_path(resume: str, output: str) -> Optional[str]:
    """``auto``: ``output/last.pt`` when it exists; ``none``: never; otherwise the given path."""
    if resume == "none":
        return None
    if resume == "auto":
        last = os.path.join(output, "last.pt")
        return last if os.path.isfile(last) else None
    return resume
