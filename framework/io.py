"""Files of a run directory: the one atomic writer every module uses, and the one ``steps.csv`` reader.

``atomic_write`` writes to a temporary file next to the target, flushes and fsyncs it, then ``os.replace``-s it over
the target, so a reader (or a kill during the write) sees the old file or the new one, never a torn one.
"""
from __future__ import annotations

import csv
import json
import os
from typing import Any, Callable, IO, Optional

STEP_COLUMNS = ("step", "epoch", "lr", "loss")  # steps.csv: one row per optimizer step


def atomic_write(path: str, write: Callable[[IO], Any], binary: bool = False,
                 keep_previous: Optional[str] = None) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then put it in place of ``path`` atomically (the
    directory is fsynced too). ``keep_previous``: the file ``path`` held is first moved there (checkpoints keep
    ``prev.pt``). On any error the temporary file is removed and ``path`` is as it was."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and os.path.exists(path):
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(os.path.dirname(path) or ".")


def _fsync_dir(directory: str) -> None:
    """Make a rename durable (best effort: some file systems refuse a directory fsync)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: str, obj: Any) -> None:
    """``obj`` as indented JSON (tensors and NumPy values as numbers/lists), written atomically."""
    def write(f: IO) -> None:
        json.dump(obj, f, indent=2, default=jsonable)
        f.write("\n")
    atomic_write(path, write)


def jsonable(obj: Any) -> Any:
    """``json.dump``'s ``default``: tensors / arrays as lists, 0-d values as numbers, anything else as text."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def read_steps(path: str, columns: Optional[tuple[str, ...]] = None) -> dict[str, list]:
    """``steps.csv`` (a file, or a run directory holding one) as columns: ``step`` and ``epoch`` ints, ``lr`` and
    ``loss`` floats (``nan``/``inf`` as written). ``columns`` keeps only those. Raises FileNotFoundError if absent."""
    if os.path.isdir(path):
        path = os.path.join(path, "steps.csv")
    names = columns or STEP_COLUMNS
    out: dict[str, list] = {name: [] for name in names}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for name in names:
                out[name].append(int(row[name]) if name in ("step", "epoch") else float(row[name]))
    return out


def read_step_rows(path: str) -> list[dict]:
    """``steps.csv`` as one dict per row (``{"step", "epoch", "lr", "loss"}``)."""
    cols = read_steps(path)
    return [dict(zip(STEP_COLUMNS, values)) for values in zip(*(cols[c] for c in STEP_COLUMNS))]
