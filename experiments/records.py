"""Compact records of finished runs (``results/runs/<table>/...``, committed): what a later session needs to
continue a sweep and rebuild its pages from the repository alone."""
from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import sys
from typing import Optional


from .tables import ROOT, ResultsError, Run, config_differences, read_results

RECORD_FILES = ("args.yaml", "env.json", "results.json", "epochs.jsonl", "events.jsonl")
# An unfinished run's state, carried in its record's ``partial/`` folder so that a sweep on another machine resumes
# it (a run longer than a session would otherwise start over on every new machine): the checkpoint and the whole
# logs (train.py's resume cuts them back to the checkpoint's step).
PARTIAL = "partial"
PARTIAL_FILES = ("last.pt", "args.yaml", "env.json", "steps.csv", "epochs.jsonl", "events.jsonl")
RECORD_STEP_ROWS = 2000                         # steps.csv of a record: at most about this many rows


class RecordError(ValueError):
    """A finished run's file that cannot go into its record (damaged JSON, a steps.csv row that does not parse): the
    message names the file; that run is not exported."""



def compact_steps(src: str, dst: str, result: Optional[dict], max_rows: int = RECORD_STEP_ROWS) -> int:
    """Write steps.csv with every step up to and including AutoWU's switch as its own row (so each of its decisions
    can be replayed from the record: tests/test_replay_records.py), and the steps after it decimated to about
    ``max_rows`` rows: each row is the first step of a bin of ``k`` consecutive steps with that step's LR and the
    mean of the bin's finite losses (column ``n``: steps averaged). The first and last step and the first step at the
    largest LR are kept as their own rows too. Returns the number of rows written."""
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        shutil.copyfile(src, dst)
        return 0
    switch = (result or {}).get("switch")
    head = 0  # rows [0, head) are kept whole: the warmup up to the switch and the step after it
    if isinstance(switch, dict) and isinstance(switch.get("step"), int):
        index = {int(r["step"]): i for i, r in enumerate(rows)}
        head = max((index[s] + 1 for s in (switch["step"] - 1, switch["step"]) if s in index), default=0)
    k = max(1, math.ceil((len(rows) - head) / max_rows))
    lrs = [float(r["lr"]) for r in rows]
    keep = {len(rows) - 1, lrs.index(max(lrs))}
    out = [(i, rows[i], float(rows[i]["loss"]), 1) for i in range(head)]
    for start in range(head, len(rows), k):
        group = rows[start:start + k]
        losses = [float(r["loss"]) for r in group if math.isfinite(float(r["loss"]))]
        out.append((start, group[0], sum(losses) / len(losses) if losses else float("nan"), len(group)))
    out += [(i, rows[i], float(rows[i]["loss"]), 1) for i in keep if i >= head and (i - head) % k]
    out.sort(key=lambda t: t[0])
    with open(dst, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "epoch", "lr", "loss", "n"])
        for _, r, loss, n in out:
            w.writerow([r["step"], r["epoch"], r["lr"], loss, n])
    return len(out)


def portable(name: str, text: str, output: str) -> str:
    """A record file with the run's output directory given as ``output`` (repository-relative, the layout a rerun
    from a clone uses) in place of the directory of the machine that ran it: ``args.yaml``'s ``output:``,
    ``results.json``'s ``config.output``, the value after ``--output`` in ``env.json``'s ``argv``. Other files and
    other keys are returned as they are."""
    if name == "args.yaml":
        return re.sub(r"^output: .*$", f"output: {output}", text, count=1, flags=re.M)
    if name not in ("results.json", "env.json"):
        return text
    obj = json.loads(text)
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    if name == "results.json" and isinstance(obj.get("config"), dict) and "output" in obj["config"]:
        obj["config"]["output"] = output
    argv = obj.get("argv") if name == "env.json" else None
    if isinstance(argv, list):
        obj["argv"] = [output if i and argv[i - 1] == "--output" else a for i, a in enumerate(argv)]
    return json.dumps(obj, indent=2) + "\n"


def export_record(run: Run, dest_root: str) -> Optional[str]:
    """Copy a finished run's compact record (RECORD_FILES, paths made portable, + compact steps.csv) to
    ``dest_root/<table>/[<block>/]<run>``; returns that directory, or None when the run is not finished or its
    record is already there and identical."""
    src = os.path.join(ROOT, run.output)
    result = read_results(os.path.join(src, "results.json"))  # ResultsError for a damaged one: never exported
    if result is None:
        return None
    dst = os.path.join(dest_root, run.table, run.block, os.path.basename(run.output))
    if os.path.abspath(dst) == os.path.abspath(src):
        return None
    output = os.path.join("runs", run.table, run.block, os.path.basename(run.output))
    files = {}
    for name in RECORD_FILES:
        path = os.path.join(src, name)
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    files[name] = portable(name, f.read(), output)
            except ValueError as e:  # not JSON, not an object, not UTF-8
                raise RecordError(f"{path}: cannot go into the record ({e}); repair or restore the file, then export "
                                  "again") from None
    old = os.path.join(dst, "results.json")
    if os.path.isfile(old):
        with open(old) as a:
            if a.read() == files["results.json"]:
                return None

    def fill(tmp: str) -> None:
        for name, text in files.items():
            with open(os.path.join(tmp, name), "w") as f:
                f.write(text)
        steps = os.path.join(src, "steps.csv")
        if os.path.isfile(steps):
            try:
                compact_steps(steps, os.path.join(tmp, "steps.csv"), result)
            except (ValueError, TypeError, KeyError) as e:  # a cut row, a missing column, text for a number
                raise RecordError(f"{steps}: cannot be read as steps.csv ({type(e).__name__}: {e}); repair or "
                                  "restore the file, then export again") from None
    return write_folder(dst, fill)


def write_folder(dst: str, fill) -> str:
    """Replace the folder ``dst`` by one that ``fill(tmp)`` writes next to it: no half-written folder is left when
    ``fill`` raises (the old ``dst`` stays then). Returns ``dst``."""
    tmp = dst + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(dst, ignore_errors=True)
    os.rename(tmp, dst)
    return dst


def _same_file(a: str, b: str) -> bool:
    if not (os.path.isfile(a) and os.path.isfile(b)) or os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def export_partial(run: Run, dest_root: str) -> Optional[str]:
    """Copy an unfinished run's checkpoint and logs (PARTIAL_FILES, paths made portable) to the ``partial/`` folder
    of its record, ``dest_root/<table>/[<block>/]<run>/partial``; returns that folder, or None when the run is
    finished, has no checkpoint, or its carried checkpoint is already this one. A later :func:`export_record` of the
    finished run replaces the whole record, ``partial/`` included."""
    src = os.path.join(ROOT, run.output)
    ckpt = os.path.join(src, "last.pt")
    if os.path.isfile(os.path.join(src, "results.json")) or not os.path.isfile(ckpt):
        return None
    dst = os.path.join(dest_root, run.table, run.block, os.path.basename(run.output), PARTIAL)
    if os.path.abspath(dst) == os.path.abspath(src) or _same_file(ckpt, os.path.join(dst, "last.pt")):
        return None
    output = os.path.join("runs", run.table, run.block, os.path.basename(run.output))

    def fill(tmp: str) -> None:
        shutil.copyfile(ckpt, os.path.join(tmp, "last.pt"))  # first: the logs copied after it reach at least its step
        for name in PARTIAL_FILES[1:]:
            path = os.path.join(src, name)
            if not os.path.isfile(path):
                continue
            if name in ("args.yaml", "env.json"):
                try:
                    with open(path) as f:
                        text = portable(name, f.read(), output)
                except ValueError as e:
                    raise RecordError(f"{path}: cannot be carried ({e}); repair or restore the file") from None
                with open(os.path.join(tmp, name), "w") as f:
                    f.write(text)
            else:
                shutil.copyfile(path, os.path.join(tmp, name))
    return write_folder(dst, fill)


def restore_partial(run: Run) -> Optional[str]:
    """Before a run starts: when its run directory has neither a checkpoint nor results.json and its committed
    record carries ``partial/`` (:func:`export_partial`), copy that into the run directory, so train.py resumes
    where the other machine stopped. Returns the folder copied from, else None."""
    out = os.path.join(ROOT, run.output)
    carried = os.path.join(ROOT, run.record, PARTIAL)
    if (not os.path.isfile(os.path.join(carried, "last.pt")) or os.path.exists(os.path.join(out, "last.pt"))
            or os.path.exists(os.path.join(out, "results.json"))):
        return None
    os.makedirs(out, exist_ok=True)
    for name in PARTIAL_FILES:
        path = os.path.join(carried, name)
        if os.path.isfile(path):
            shutil.copyfile(path, os.path.join(out, name))
    return carried


def export_records(runs: list[Run], dest_root: str) -> int:
    """Export every finished run of ``runs`` and carry every unfinished one that has a checkpoint
    (:func:`export_partial`); prints what was copied and its total size."""
    copied, skipped, damaged = [], [], []
    for run in runs:
        try:
            dst = export_record(run, dest_root) or export_partial(run, dest_root)
        except ResultsError as e:
            skipped.append(str(e))
            continue
        except RecordError as e:
            damaged.append(str(e))
            continue
        except OSError as e:
            print(f"error: cannot write the records under {dest_root}: {e}", file=sys.stderr)
            return 2
        if dst:
            copied.append(dst)
    for msg in skipped:
        print(f"[sweep] not exported (a failed run; --local runs it again): {msg}", file=sys.stderr)
    for msg in damaged:
        print(f"[sweep] warning: not exported: {msg}", file=sys.stderr)
    size = sum(os.path.getsize(os.path.join(d, f)) for d in copied for f in os.listdir(d)
               if os.path.isfile(os.path.join(d, f)))
    carried = [d for d in copied if os.path.basename(d) == PARTIAL]
    print(f"[sweep] exported {len(copied) - len(carried)} record(s) and carried {len(carried)} unfinished run(s) "
          f"(checkpoint and logs, resumed by a sweep on any machine) to {dest_root} ({size / 1e6:.2f} MB)")
    for d in copied:
        print(f"[sweep]   {os.path.relpath(d, ROOT) if d.startswith(ROOT) else d}")
    return 0


REUSED_FROM = "reused_from.json"  # in a record copied from another table's run: {"table", "run", "record"}


def reuse_records(runs: list[Run], others: list[Run], dest_root: str, dry_run: bool = False) -> int:
    """Give each pending run of ``runs`` the record of a finished run of ``others`` (another table's runs) made with
    the same settings: every setting the run's command line fixes (``Run.expected``, the seed included;
    ``check_runs`` fills it) and the source's version of train.py had equals what the source ran with (its
    results.json ``config``: resolved values, so a table's explicit ``lr: 0.008`` matches a run whose sqrt rule gave
    0.008; ``config_differences``, as ``Run.stale``), and every setting the source's command line fixed is fixed by
    the run's too. The source's compact record is copied, unchanged, to
    ``dest_root/<table>/[<block>/]<run>`` with ``reused_from.json`` naming it, so the run counts as done and its page
    names where it came from. Prints what was reused (``dry_run``: what would be, copying nothing)."""
    sources: list[tuple[Run, dict]] = []
    for o in others:
        try:
            ran = (o.results() or {}).get("config") if o.done and not o.stale() else None
        except ResultsError:
            ran = None
        if isinstance(ran, dict):
            sources.append((o, ran))

    def match(run: Run) -> Optional[Run]:
        for o, ran in sources:
            if not config_differences(run.expected, ran) and all(k in run.expected for k in o.expected):
                return o
        return None

    reused = []
    for run in runs:
        o = None if run.done else match(run)
        if o is None:
            continue
        if dry_run:
            reused.append((run.name, o.name))
            continue
        dst = os.path.join(dest_root, run.table, run.block, os.path.basename(run.output))
        record = os.path.join(ROOT, o.record)
        tmp = dst + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            if os.path.isfile(os.path.join(ROOT, o.output, "results.json")):  # a run directory: its record first
                made = export_record(o, tmp + ".src")
                shutil.copytree(made or record, tmp)
            else:                                                             # a committed record: as it is
                shutil.copytree(record, tmp)
            with open(os.path.join(tmp, REUSED_FROM), "w") as f:
                json.dump({"table": o.table, "run": o.name, "record": o.record}, f, indent=2)
                f.write("\n")
        except (OSError, RecordError, ResultsError) as e:
            print(f"error: cannot reuse {o.name} for {run.name}: {e}", file=sys.stderr)
            shutil.rmtree(tmp, ignore_errors=True)
            return 2
        finally:
            shutil.rmtree(tmp + ".src", ignore_errors=True)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.rename(tmp, dst)
        reused.append((run.name, o.name))
    pending = sum(1 for r in runs if not r.done) - (len(reused) if dry_run else 0)
    print(f"[sweep] {'would reuse' if dry_run else 'reused'} {len(reused)} record(s) with every setting equal; "
          f"{pending} run(s) {'would still be' if dry_run else 'still'} pending")
    for name, src in reused:
        print(f"[sweep]   {name} <- {src}")
    return 0
