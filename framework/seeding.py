"""Every seed and random stream of a run, in one place: what the weights, the data order, the augmentation and
dropout draw from, derived from ``--seed`` and the run's position only (never from the worker count or where a run
resumed), and the generator states a checkpoint saves and restores."""
from __future__ import annotations

import random
from contextlib import contextmanager

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int, start_batch: int) -> int:
    """The global generators' seed for an epoch's dropout and library-drawn randomness on ``rank``, from the batch it
    starts at (a fresh epoch: 0)."""
    return seed + 1_000_003 * (epoch + 1) + 7919 * rank + start_batch


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (NumPy's SeedSequence hash)."""
    return int(np.random.SeedSequence([int(p) % 2**63 for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


@contextmanager
def seeded_rngs(seed: int, restore: bool = True):
    """Run a block with Python's, NumPy's and torch's CPU generators seeded from ``seed``: library transforms
    (torchvision, timm) and timm's Mixup draw from those global generators. ``restore``: put the caller's states back
    afterwards (needed in the training process; DataLoader workers own their generators and skip the cost)."""
    saved = (random.getstate(), np.random.get_state(), torch.get_rng_state()) if restore else None
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)  # CPU only: torch.manual_seed also seeds every device (slow)
    try:
        yield
    finally:
        if saved is not None:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


def rng_state() -> dict:
    """Python, NumPy, torch CPU and (when a GPU is in use) CUDA generator states, as tensors and plain types."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {"bit_generator": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):  # the tuple of np.random.get_state() in checkpoints before weights_only
        numpy_state = (numpy_state["bit_generator"], numpy_state["keys"].numpy().astype(np.uint32),
                       numpy_state["pos"], numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
