"""The run spec: the one place that decides whether a checkpoint may continue under the settings given now.

Every setting that changes the computation must equal the checkpoint's: the model and its options, the data and its
subsets, augmentation, the global batch, epochs, the optimizer and all its hyperparameters, the schedule and all its
arguments, the loss options, the seed, the precision. Only the settings in :data:`RESUME_MAY_CHANGE` may differ.
:func:`check_resume` runs before the run writes anything (``args.yaml``, logs, checkpoints) and raises a
ConfigError (train.py: exit code 2) naming every changed setting as ``old → new`` and the two ways forward.

The split of the global batch (micro-batch, processes, accumulation) may change: a checkpoint's position is counted
in optimizer steps and samples (:class:`Position`), and step ``s`` of an epoch is the same samples ``s*B .. (s+1)*B-1``
of the epoch's shuffle under any split (framework/loaders.py deals them round-robin), so the run continues at the
same step and sample. It does not continue bit-identically: which process and micro-batch gets each sample changes,
and with it the per-micro-batch random draws, BatchNorm statistics and gradient rounding (:func:`split_change_note`
says so). A position that does not fall on a whole step of the current split is refused.

The number of CPU threads may change too, but on the CPU it changes the rounding: the kernels split their sums by
thread, so the same step with 1 and with 2 threads differs in the loss by ~1e-6 (measured: the paper-regime MLP in
bf16 on this project's Xeon, from the first step on), and AutoWU's test, fed those losses, can decide steps apart.
:func:`thread_change` says so when it happens.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

from .batch import BatchSplit
from .config import ConfigError

# Settings that may differ on resume: where things are read and written, how often the run logs, validates and
# keeps checkpoints, and how the global batch is split (checked separately, see the module docstring).
RESUME_MAY_CHANGE = frozenset({"output", "resume", "data_dir", "workers", "pin_mem", "log_interval", "val_interval",
                               "checkpoint_interval", "max_nonfinite", "val_batch_size", "micro_batch"})


@dataclass
class Position:
    """Where a run stands (saved in every checkpoint): the epoch under way, optimizer steps taken in all, and the
    samples of this epoch already used by those steps (all processes together)."""
    epoch: int = 0
    step: int = 0
    sample: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def checkpoint_position(ckpt: dict) -> Position:
    """The position a checkpoint holds (also from checkpoints written before positions were counted in samples,
    which held ``epoch``, ``step`` and a micro-batch index: their samples follow from the steps)."""
    if "position" in ckpt:
        return Position(**ckpt["position"])
    cfg = ckpt.get("config", {})
    spe = ckpt.get("steps_per_epoch")
    if spe is None:  # old checkpoints: a mid-epoch one is at step epoch*spe + k; we need spe from the schedule
        spe = ckpt.get("scheduler", {}).get("config", {}).get("steps_per_epoch")
    epoch, step = int(ckpt["epoch"]), int(ckpt["step"])
    sample = (step - epoch * int(spe)) * int(cfg["batch_size"]) if spe and ckpt.get("batch_index") else 0
    return Position(epoch, step, sample)


def changed_settings(saved: dict, current: dict) -> list[str]:
    """``key old → new`` for every setting outside :data:`RESUME_MAY_CHANGE` that differs (keys one side lacks,
    from older or newer versions, are not compared)."""
    out = []
    for key in sorted(set(saved) & set(current) - RESUME_MAY_CHANGE):
        if _norm(saved[key]) != _norm(current[key]):
            out.append(f"{key.replace('_', '-')}: {_text(saved[key])} → {_text(current[key])}")
    return out


def check_resume(ckpt: dict, current: dict, split: BatchSplit, steps_per_epoch: int, path: str) -> tuple[Position, Optional[str]]:
    """Decide whether checkpoint ``ckpt`` (read from ``path``) may continue with config ``current`` under ``split``.
    Returns its position and, when the batch split changed, a line saying so; raises ConfigError otherwise."""
    ways = ("Resume with the settings the checkpoint was made with, or start afresh: a new --output directory, "
            "or --resume none (this directory's logs and results are replaced)")
    changes = changed_settings(ckpt.get("config", {}), current)
    if changes:
        raise ConfigError(f"cannot resume from {path}: {len(changes)} setting(s) changed since the checkpoint: "
                          f"{'; '.join(changes)}. {ways}")
    pos = checkpoint_position(ckpt)
    batch = split.batch_size
    saved_steps = ckpt.get("steps_per_epoch")
    if saved_steps is not None and int(saved_steps) != steps_per_epoch:
        raise ConfigError(f"cannot resume from {path}: the training set gives {steps_per_epoch} steps per epoch of "
                          f"{batch} images now, but {saved_steps} when the checkpoint was made: the data changed "
                          "(another --data-dir, or its files replaced), so the schedule and the position cannot "
                          f"continue. Point --data-dir at the data the run started with. {ways}")
    if pos.step - pos.epoch * steps_per_epoch != pos.sample // batch or pos.sample % batch:
        raise ConfigError(f"cannot resume from {path}: its position (epoch {pos.epoch}, step {pos.step}, sample "
                          f"{pos.sample}) is not a whole optimizer step of {steps_per_epoch} steps of {batch} images "
                          f"per epoch, so it cannot continue exactly. {ways}")
    saved = ckpt.get("split")
    note = None
    if saved is not None and saved != split.to_dict():
        old = BatchSplit(**saved)
        note = split_change_note(old, split, pos)
    return pos, note


def split_change_note(old: BatchSplit, new: BatchSplit, pos: Position) -> str:
    """What a resume under another batch split keeps and what it does not. Kept: the position, and the samples of
    every step (framework/loaders.py deals the epoch's permutation round-robin, so step ``s`` uses samples
    ``s*B .. (s+1)*B-1`` under any split). Not kept: which process and micro-batch each sample goes to, hence the
    random draws made per process and micro-batch (dropout, mixup/cutmix, the batched pipeline's augmentation) and
    BatchNorm's per-micro-batch statistics, and the summation order of the gradients."""
    where = []
    if old.world_size != new.world_size:
        where.append(f"{old.world_size} -> {new.world_size} processes")
    if old.micro_batch != new.micro_batch:
        where.append(f"micro-batches of {old.micro_batch} -> {new.micro_batch}")
    return (f"the batch split changed: {old.describe()} then, {new.describe()} now; continuing at step {pos.step} "
            f"(sample {pos.sample} of epoch {pos.epoch}). Every step still trains on the same {new.batch_size} "
            f"samples of the epoch's shuffle (step s: samples s*{new.batch_size} .. (s+1)*{new.batch_size}-1), none "
            f"repeated or skipped, but they are dealt out differently ({', '.join(where) or 'another accumulation'}): "
            "the random draws made per process and micro-batch (dropout, mixup/cutmix, the batched pipeline's "
            "augmentation), BatchNorm's per-micro-batch statistics and the rounding of the gradient sums change, so "
            "the continuation is not bit-identical to an uninterrupted run (statistically it is the same training)")


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _text(value: Any) -> str:
    return "unset" if value is None else str(_norm(value))


def thread_change(ckpt: dict, threads: int, device_type: str) -> Optional[str]:
    """A warning when a CPU run resumes with another number of torch threads than the checkpoint was saved with
    (``cpu_threads``; older checkpoints lack it): the continuation is then not bit-identical to an uninterrupted run.
    On a GPU the CPU threads do not touch the model's arithmetic."""
    saved = ckpt.get("cpu_threads")
    if device_type != "cpu" or saved is None or saved == threads:
        return None
    return (f"resuming with {threads} CPU thread(s), the checkpoint was saved with {saved}: the continuation differs "
            f"from an uninterrupted run by float rounding (the kernels split their sums by thread; ~1e-6 in the loss "
            f"at first, and AutoWU may switch a few steps apart). For a bit-identical continuation set "
            f"OMP_NUM_THREADS={saved}")
