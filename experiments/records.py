"""Compact records of finished runs (``results/runs/<table>/...``, committed): what a later session needs to
continue a sweep and rebuild its pages from the repository alone."""
from __future__ import annotations

import csv
import math
import os
import shutil
import sys
from typing import Optional


from .tables import ROOT, ResultsError, Run, read_results

RECORD_FILES = ("args.yaml", "env.json", "results.json", "epochs.jsonl", "events.jsonl")
RECORD_STEP_ROWS = 2000                         # steps.csv of a record: at most about this many rows



def compact_steps(src: str, dst: str, result: Optional[dict], max_rows: int = RECORD_STEP_ROWS) -> int:
    """Write steps.csv decimated to about ``max_rows`` rows: each row is the first step of a bin of ``k``
    consecutive steps with that step's LR, and the mean of the bin's finite losses (column ``n``: steps averaged).
    The steps the pages read exactly are kept as their own rows: the first and last step, the first step at the
    largest LR, and the steps either side of AutoWU's switch. Returns the number of rows written."""
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        shutil.copyfile(src, dst)
        return 0
    k = max(1, math.ceil(len(rows) / max_rows))
    lrs = [float(r["lr"]) for r in rows]
    keep = {0, len(rows) - 1, lrs.index(max(lrs))}
    switch = (result or {}).get("switch")
    if isinstance(switch, dict) and isinstance(switch.get("step"), int):
        index = {int(r["step"]): i for i, r in enumerate(rows)}
        keep |= {index[s] for s in (switch["step"] - 1, switch["step"]) if s in index}
    out = []
    for start in range(0, len(rows), k):
        group = rows[start:start + k]
        losses = [float(r["loss"]) for r in group if math.isfinite(float(r["loss"]))]
        out.append((start, group[0], sum(losses) / len(losses) if losses else float("nan"), len(group)))
    out += [(i, rows[i], float(rows[i]["loss"]), 1) for i in keep if i % k]
    out.sort(key=lambda t: t[0])
    with open(dst, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "epoch", "lr", "loss", "n"])
        for _, r, loss, n in out:
            w.writerow([r["step"], r["epoch"], r["lr"], loss, n])
    return len(out)


def export_record(run: Run, dest_root: str) -> Optional[str]:
    """Copy a finished run's compact record (RECORD_FILES + decimated steps.csv) to ``dest_root/<table>/[<block>/]
    <run>``; returns that directory, or None when the run is not finished or its record is already there and
    identical."""
    src = os.path.join(ROOT, run.output)
    result = read_results(os.path.join(src, "results.json"))  # ResultsError for a damaged one: never exported
    if result is None:
        return None
    dst = os.path.join(dest_root, run.table, run.block, os.path.basename(run.output))
    if os.path.abspath(dst) == os.path.abspath(src):
        return None
    old = os.path.join(dst, "results.json")
    if os.path.isfile(old):
        with open(old) as a, open(os.path.join(src, "results.json")) as b:
            if a.read() == b.read():
                return None
    tmp = dst + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name in RECORD_FILES:
        if os.path.isfile(os.path.join(src, name)):
            shutil.copyfile(os.path.join(src, name), os.path.join(tmp, name))
    if os.path.isfile(os.path.join(src, "steps.csv")):
        compact_steps(os.path.join(src, "steps.csv"), os.path.join(tmp, "steps.csv"), result)
    shutil.rmtree(dst, ignore_errors=True)
    os.rename(tmp, dst)
    return dst


def export_records(runs: list[Run], dest_root: str) -> int:
    """Export every finished run of ``runs``; prints what was copied and the records' total size."""
    copied, skipped = [], []
    for run in runs:
        try:
            dst = export_record(run, dest_root)
        except ResultsError as e:
            skipped.append(str(e))
            continue
        if dst:
            copied.append(dst)
    for msg in skipped:
        print(f"[sweep] not exported (a failed run; --local runs it again): {msg}", file=sys.stderr)
    size = sum(os.path.getsize(os.path.join(d, f)) for d in copied for f in os.listdir(d))
    print(f"[sweep] exported {len(copied)} record(s) to {dest_root} ({size / 1e6:.2f} MB)")
    for d in copied:
        print(f"[sweep]   {os.path.relpath(d, ROOT) if d.startswith(ROOT) else d}")
    return 0


