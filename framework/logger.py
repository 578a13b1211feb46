"""Everything a run writes to its run directory (rank 0 only): ``steps.csv``, ``epochs.jsonl``, ``events.jsonl``,
TensorBoard under ``tb/``, ``train.log`` and JSON records (``env.json``, ``results.json``).

Per-step values reach the logger in chunks (the engine reads its device buffers at log intervals), so logging never
synchronises with the device per step. On resume, rows written after the checkpoint by the interrupted run are
dropped, so the files read as if the run had never stopped; a fresh run (no checkpoint resumed) removes an
earlier run's logs and results from the directory (its checkpoints are overwritten at the first epoch end).

:func:`check_run_dir` refuses a run directory where one of these files is a directory (ConfigError, before anything
is written). A log the run appends to that disappears, is replaced or shrinks while the run goes on (someone deleted
``steps.csv``) is noticed at the next write: a warning names it, the file is started anew (``steps.csv`` with its
header), and :attr:`RunLogger.logs_complete` turns false (``results()``: the key for results.json).
"""
from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import sys
from typing import Any, Iterable, Optional

from .config import ConfigError
from .io import STEP_COLUMNS, atomic_write, jsonable, write_json

LOGS = ("steps.csv", "epochs.jsonl", "events.jsonl")  # appended during the run
RUN_FILES = ("args.yaml", "env.json", "results.json", "train.log") + LOGS  # files a run writes in its directory
CHECKPOINT_FILES = ("last.pt", "prev.pt", ".lock")  # the checkpoints and the run's lock (framework/rundir.py)


def check_run_dir(output: str, rollback: bool = False) -> None:
    """Raise ConfigError (train.py: exit 2, one line) when a file the run writes in ``output`` is a directory (or
    ``tb`` is not one; with ``rollback``, AutoWU's snapshot folder ``rollback``): the run would fail at its first
    write, or after its first epoch. Nothing is changed."""
    for name in RUN_FILES + CHECKPOINT_FILES:
        path = os.path.join(output, name)
        if os.path.isdir(path):
            raise ConfigError(f"{path} is a directory, but the run writes its {name} there: move or remove that "
                              "directory, or choose another --output")
    folders = [("tb", "TensorBoard logs")] + ([("rollback", "rollback snapshots (--autowu-rollback)")] if rollback
                                              else [])
    for name, what in folders:
        path = os.path.join(output, name)
        if os.path.lexists(path) and not os.path.isdir(path):
            raise ConfigError(f"{path} is not a directory, but the run writes its {what} there: move or remove "
                              "it, or choose another --output")


class RunLogger:
    """Writes the run directory's logs; every method is a no-op when ``enabled`` is false (ranks other than 0)."""

    def __init__(self, output: str, enabled: bool, resume: Optional[dict] = None, tensorboard: bool = True,
                 console: bool = True):
        self.output, self.enabled = output, enabled
        self.console = logging.getLogger("train")
        self.console.propagate = False
        self.console.handlers.clear()
        self.console.setLevel(logging.INFO if enabled and console else logging.WARNING)
        if not (enabled and console):
            self.console.addHandler(logging.StreamHandler(sys.stderr))
        self.tb = None
        self.logs_complete = True  # false once a log was deleted, replaced or cut while the run appended to it
        self._written: dict[str, tuple[int, int]] = {}  # log -> (inode, size) after this logger's last write
        if not enabled:
            return
        check_run_dir(output)
        os.makedirs(output, exist_ok=True)
        if console:
            fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
            for handler in (logging.StreamHandler(sys.stdout), logging.FileHandler(self.path("train.log"))):
                handler.setFormatter(fmt)
                self.console.addHandler(handler)
        if resume is not None:
            self._truncate(resume["step"], resume["epoch"])
        else:  # a fresh run in a used directory (--resume none): the old run's logs and results go
            for name in ("steps.csv", "events.jsonl", "epochs.jsonl", "results.json"):
                if os.path.exists(self.path(name)):
                    os.remove(self.path(name))
            shutil.rmtree(self.path("tb"), ignore_errors=True)
        if not os.path.exists(self.path("steps.csv")):
            with open(self.path("steps.csv"), "w", newline="") as f:
                csv.writer(f).writerow(STEP_COLUMNS)
        for name in LOGS:
            if os.path.exists(self.path(name)):
                st = os.stat(self.path(name))
                self._written[name] = (st.st_ino, st.st_size)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(self.path("tb"), purge_step=resume["step"] if resume else None)

    def path(self, name: str) -> str:
        return os.path.join(self.output, name)

    # -- what the loop calls -------------------------------------------------------------------------------------
    def info(self, msg: str) -> None:
        self.console.info(msg)

    def warning(self, msg: str) -> None:
        self.console.warning(msg)

    def log_steps(self, rows: Iterable[tuple]) -> None:
        """Append ``(step, epoch, lr, loss[, schedule_lr])`` rows to ``steps.csv`` and TensorBoard. ``lr`` is the
        LR the step used (param group 0), ``loss`` the step's loss averaged over micro-batches and ranks,
        ``schedule_lr`` the LR the schedule computed for the step before per-group ratios (``last_schedule_lr``).
        TensorBoard's ``train/lr`` is the schedule's LR; ``train/lr_group0`` is added when group 0's differs
        (layer-decay groups make group 0 the lowest layer's LR)."""
        if not self.enabled:
            return
        rows = list(rows)

        def write(f) -> None:
            writer = csv.writer(f)
            for step, epoch, lr, loss, *_ in rows:
                writer.writerow((step, epoch, repr(float(lr)), repr(float(loss))))
        self._append("steps.csv", write)
        if self.tb is not None:
            for step, _, lr, loss, *rest in rows:
                headline = rest[0] if rest else lr
                self.tb.add_scalar("train/lr", headline, step)
                if headline != lr:
                    self.tb.add_scalar("train/lr_group0", lr, step)
                self.tb.add_scalar("train/loss", loss, step)

    def log_epoch(self, record: dict) -> None:
        """One line of ``epochs.jsonl`` and the ``val/*`` / ``train/*`` epoch scalars."""
        if not self.enabled:
            return
        self._append_jsonl("epochs.jsonl", record)
        if self.tb is not None:
            for key in ("val_loss", "top1", "top5"):
                if record.get(key) is not None:
                    self.tb.add_scalar(f"val/{key.replace('val_', '')}", record[key], record["step"])
            for key in ("train_loss", "epoch_time", "images_per_s"):
                if record.get(key) is not None:
                    self.tb.add_scalar(f"train/{key}", record[key], record["step"])
            self.tb.flush()

    def log_event(self, event: dict, scalars: Optional[dict] = None) -> None:
        """One line of ``events.jsonl`` (scheduler decisions, ``nonfinite``, ``diverged``, ``preempted``) and the
        TensorBoard ``scalars`` that describe it (at its ``step``; the schedule's registry entry says which)."""
        if not self.enabled:
            return
        self._append_jsonl("events.jsonl", event)
        if self.tb is not None:
            for tag, value in (scalars or {}).items():
                self.tb.add_scalar(tag, value, event["step"])

    def results(self) -> dict:
        """The logger's keys of results.json: ``logs_complete`` (false when a log lost rows during the run; the logs
        are checked once more here, so a log deleted after its last write counts too)."""
        if self.enabled:
            for name in list(self._written):
                self._check_intact(name)
        return {"logs_complete": self.logs_complete}

    def write_json(self, name: str, obj: Any) -> None:
        if self.enabled:
            write_json(self.path(name), obj)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        for handler in list(self.console.handlers):
            handler.close()
            self.console.removeHandler(handler)

    # -- helpers -------------------------------------------------------------------------------------------------
    def _append_jsonl(self, name: str, obj: dict) -> None:
        self._append(name, lambda f: f.write(json.dumps(obj, default=jsonable) + "\n"))

    def _append(self, name: str, write) -> None:
        """Append to log ``name`` with ``write(f)``, after checking that it is the file this logger wrote last; a
        file started anew gets its header (steps.csv)."""
        path = self.path(name)
        self._check_intact(name)
        header = name == "steps.csv" and not os.path.exists(path)
        with open(path, "a", newline="" if name == "steps.csv" else None) as f:
            if header:
                csv.writer(f).writerow(STEP_COLUMNS)
            write(f)
            f.flush()
            st = os.fstat(f.fileno())
        self._written[name] = (st.st_ino, st.st_size)

    def _check_intact(self, name: str) -> None:
        """Warn (and mark the logs incomplete) when log ``name`` is gone, another file, or shorter than this
        logger left it."""
        known = self._written.get(name)
        if known is None:
            return
        path = self.path(name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            what = "was deleted"
        else:
            if st.st_ino != known[0]:
                what = "was replaced by another file"
            elif st.st_size < known[1]:
                what = f"was cut from {known[1]} to {st.st_size} bytes"
            else:
                return
        del self._written[name]
        self.logs_complete = False
        self.warning(f"warning: {path} {what} while the run was writing it: the rows written before are lost and the "
                     f"log is incomplete (results.json: logs_complete false); the run goes on, appending to "
                     f"{'a new ' + name if what == 'was deleted' else name}")

    def _truncate(self, step: int, epoch: int) -> None:
        """Drop what the interrupted run wrote after its checkpoint (step ``step``, epoch ``epoch`` not finished)."""
        steps = self.path("steps.csv")
        if os.path.exists(steps):
            with open(steps, newline="") as f:
                rows = [r for r in csv.reader(f)]
            keep = [r for r in rows[1:] if len(r) == len(STEP_COLUMNS) and _int(r[0]) is not None
                    and _int(r[0]) < step]
            atomic_write(steps, lambda f: csv.writer(f).writerows([list(STEP_COLUMNS)] + keep))
        self._filter_jsonl("events.jsonl", lambda e: e.get("step", 0) <= step)
        self._filter_jsonl("epochs.jsonl", lambda e: e.get("epoch", 0) < epoch)

    def _filter_jsonl(self, name: str, keep) -> None:
        path = self.path(name)
        if not os.path.exists(path):
            return
        kept = []
        with open(path) as f:
            for line in f:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:  # a line cut by the kill
                    continue
                if keep(obj):
                    kept.append(obj)
        atomic_write(path, lambda f: f.writelines(json.dumps(obj) + "\n" for obj in kept))


def _int(text: str) -> Optional[int]:
    try:
        return int(text)
    except ValueError:
        return None
