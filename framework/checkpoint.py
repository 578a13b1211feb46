"""Checkpoints that resume a run exactly: model, optimizer, scheduler (AutoWU's full state), grad scaler, position
(epoch, optimizer step, samples of the epoch), batch split, RNG states, config, the loop's counters. Written atomically
(framework/io.py) so a kill during the write leaves the previous checkpoint intact. Whether a checkpoint may continue
under the settings given now is decided by framework/runspec.py.

Integrity: every record of the checkpoint's zip archive carries a CRC-32 that :func:`verify_checkpoint` checks before
anything is unpickled, so a truncated, overwritten or bit-flipped file is refused with a message instead of loading
wrong numbers. The checkpoint it replaces is kept as ``prev.pt`` (:func:`previous_path`); :func:`load_resumable`
falls back to it, with a warning naming both, when ``last.pt`` is damaged. Everything is stored as tensors and plain
Python types and read with ``torch.load(path, weights_only=True)`` only: a file whose pickle names anything else (an
object with a ``__reduce__``, say) is refused before any of it runs. Older checkpoints with a NumPy RNG state load
through an allowlist of exactly the NumPy array types they hold. A failed write (disk full, quota, I/O error) raises :class:`CheckpointError` and leaves the previous
checkpoint as it was.
"""
from __future__ import annotations

import errno
import os
import pickle
import shutil
import zipfile
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


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or written; the message names the file and what to do."""


# The NumPy types of the RNG state in checkpoints written before it was stored as tensors (a tuple with a uint32
# array): admitted by name so old checkpoints still load with weights_only=True. An array is rebuilt from its dtype
# and bytes; any object inside it would need a global of its own, which is refused.
LEGACY_NUMPY_GLOBALS = [np._core.multiarray._reconstruct, (np._core.multiarray._reconstruct,
                        "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype, np.dtypes.UInt32DType]

# what a checkpoint of train.py holds (a file without one of these cannot resume a run)
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "epoch", "step", "config")  # in every train.py checkpoint, old and new


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
        "rng_per_rank": rng_per_rank, "config": config,
        "cpu_threads": torch.get_num_threads(),  # on the CPU the rounding depends on it (runspec.thread_change)
        **(extra or {}),
    }
    write_checkpoint_file(path, state)


def previous_path(path: str) -> str:
    """Where the checkpoint that ``path`` replaces is kept: ``prev.pt`` beside ``last.pt``, else ``PATH.prev``."""
    head, name = os.path.split(path)
    return os.path.join(head, "prev.pt") if name == "last.pt" else f"{path}.prev"


def write_checkpoint_file(path: str, state: dict) -> None:
    """``torch.save(state)`` to ``path`` atomically, keeping the file it replaces as :func:`previous_path`.

    The write goes to ``PATH.tmp.PID`` (fsynced) first; only then does the old file become the previous one and the
    new one take its place. An ``OSError`` (ENOSPC, EDQUOT, EIO, ...) removes the temp file and raises
    :class:`CheckpointError`; the existing checkpoint is untouched."""
    crc = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(True)  # the CRC-32s are what verify_checkpoint checks
    try:
        atomic_write(path, lambda f: torch.save(state, f), binary=True, keep_previous=previous_path(path))
    except OSError as e:
        what = errno.errorcode.get(e.errno, "") if e.errno else ""
        kept = (f"the previous checkpoint {path} is intact" if os.path.exists(path) else "no checkpoint was written")
        raise CheckpointError(f"could not write checkpoint {path}: {e.strerror or e}{f' ({what})' if what else ''}; "
                              f"{kept}. Free space or fix the directory, then run the same command to resume") from e
    finally:
        torch.serialization.set_crc32_options(crc)


def verify_checkpoint(path: str) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is a complete zip archive whose every record matches its
    CRC-32 (torch.save's format); reads the whole file once, without unpickling anything."""
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {e.strerror or e}") from e
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {path} is damaged: not a complete torch.save archive ({e}); "
                              "truncated, overwritten or not a checkpoint") from e
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} is damaged: record {bad!r} fails its CRC-32 check")


def load_checkpoint(path: str) -> dict:
    """Read a verified checkpoint onto the CPU (tensors move to their device when loaded into the model/optimizer);
    raise :class:`CheckpointError` if it is damaged, not a dict or lacks an entry of :data:`CHECKPOINT_KEYS`."""
    if os.path.isdir(path):
        inside = os.path.join(path, "last.pt")
        raise CheckpointError(f"--resume {path!r} is a directory, not a checkpoint file; " + (
            f"give the checkpoint in it: --resume {inside}" if os.path.isfile(inside) else
            "give a checkpoint file (train.py writes OUTPUT/last.pt), or move the directory away"))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--resume {path!r}: no such checkpoint")
    verify_checkpoint(path)
    try:
        with torch.serialization.safe_globals(LEGACY_NUMPY_GLOBALS):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # an object weights_only refuses: nothing of it ran
        try:
            names = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(path)) or str(e).splitlines()[0]
        except Exception:  # noqa: BLE001  naming them is a courtesy; the refusal stands either way
            names = "see torch.load's message"
        raise CheckpointError(f"checkpoint {path} holds objects that are not tensors or plain data ({names}); "
                              "it was not written by train.py or was altered, and is refused unread (nothing in it "
                              "was run). Resume from another file with --resume PATH, or start afresh with "
                              "--resume none") from None
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"checkpoint {path} cannot be read: {type(e).__name__}: {e}") from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(ckpt).__name__}, not a train.py checkpoint (a dict)")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks its {', '.join(repr(k) for k in missing)} "
                              f"entr{'y' if len(missing) == 1 else 'ies'}: it was not written by train.py")
    return ckpt


def load_resumable(path: Optional[str]) -> tuple[Optional[dict], Optional[str], list[str]]:
    """``(checkpoint, the file it came from, warnings)`` for ``path`` (None: nothing to resume).

    A missing or damaged ``path`` whose :func:`previous_path` is sound falls back to that file, with a warning
    naming both; when neither is usable the :class:`CheckpointError` says what to do."""
    if path is None:
        return None, None, []
    prev = previous_path(path)
    try:
        return load_checkpoint(path), path, []
    except (CheckpointError, FileNotFoundError) as e:
        if not os.path.isfile(prev):
            if isinstance(e, FileNotFoundError):
                raise
            raise CheckpointError(f"{e}. No previous checkpoint ({prev}) to fall back to: resume from another file "
                                  "with --resume PATH, or start afresh with --resume none") from e
        try:
            ckpt = load_checkpoint(prev)
        except CheckpointError as e2:
            raise CheckpointError(f"{e}; the previous checkpoint is unusable too ({e2}). Start afresh with "
                                  "--resume none or give one with --resume PATH") from e2
        problem = str(e) if isinstance(e, CheckpointError) else f"{path} does not exist"
        return ckpt, prev, [f"{problem}; resuming from the previous checkpoint {prev} (epoch {ckpt['epoch']}, "
                            f"step {ckpt['step']}) instead"]


def discard_checkpoints(output: str) -> list[str]:
    """Remove the checkpoints of an earlier run in ``output`` (``last.pt``, ``prev.pt``, AutoWU's ``rollback/``):
    a run started afresh there (``--resume none``) replaces that run, and a later plain rerun must resume the new
    run, not the old one. Returns what was removed."""
    last = os.path.join(output, "last.pt")
    gone = [p for p in (last, previous_path(last)) if os.path.isfile(p)]
    for p in gone:
        os.remove(p)
    rollback = os.path.join(output, "rollback")
    if os.path.isdir(rollback):
        shutil.rmtree(rollback)
        gone.append(rollback)
    return gone


def run_files(output: str) -> list[str]:
    """The files of a train.py run that ``output`` holds (empty for a new or empty directory)."""
    names = ("args.yaml", "results.json", "last.pt", "prev.pt", "steps.csv", "epochs.jsonl")
    return [n for n in names if os.path.isfile(os.path.join(output, n))]


def resume_path(resume: str, output: str) -> Optional[str]:
    """``auto``: ``output/last.pt`` when it exists; ``none``: never; otherwise the given path."""
    if resume == "none":
        return None
    if resume == "auto":  # last.pt, or its predecessor if a kill came between the two renames of a save
        last = os.path.join(output, "last.pt")
        return last if os.path.isfile(last) or os.path.isfile(previous_path(last)) else None
    if os.path.isdir(resume):
        from .config import ConfigError
        hint = os.path.join(resume, "last.pt")
        raise ConfigError(f"--resume {resume} is a directory, not a checkpoint file; give the checkpoint itself"
                          f"{f', e.g. --resume {hint}' if os.path.isfile(hint) else ''}")
    return resume
