"""Collect a table's runs into ``results/<table>.md`` in the paper's layout.

    python scripts/collect.py table1                 # reads runs/table1/**/results.json, writes results/table1.md
    python scripts/collect.py fashion_mnist --runs-dir runs --out results/fashion_mnist.md

    python scripts/collect.py paper_regime --runs-dir results/runs   # from the committed records alone

Rows are schedules, columns batch sizes (or the table's columns); a cell is the mean (std) of the table's metric over
the seeds that finished, with ``n=k/N`` when some are missing, the paper's number (results/paper/*.csv) and the
difference ours - paper beside it, and ``missing`` for a cell with no finished run. A second table gives the LR each
run decayed from and when (AutoWU: its switch entry; baseline: the peak of its logged LR), the quantity of the
paper's Figure 2 and Figure 7; a third, for AutoWU's exponential warmup, how far the LR had grown past eta_t* when it
switched. With ``paper-beside`` (a table key) the paper's cells of another setting are shown for the shape of the
comparison (each row's difference to the baseline), never for the values.

Nothing is lost: a results.json that cannot be read, or whose metric is not a number, is a *failed* run (the file is
named on stderr; the cell says ``failed``; a steps.csv that cannot be read is named and only that run's decay start
is left out); the page is not replaced by one with fewer finished runs unless
``--force``; everything from a ``## ...hand-written...`` heading on is kept from the existing page; figures that
scripts/plot.py made for the table are linked.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import statistics
import sys
from collections import defaultdict
from functools import lru_cache
from typing import Any, Optional

from framework.engine import batchnorm_recompute_forwards
from framework.io import read_steps
from framework.optim import MODE_OPTIMIZERS, STEP_SIZE_ESTIMATORS

from .records import PARTIAL, REUSED_FROM
from .tables import (ROOT, Block, ResultsError, Run, Table, TableError, check_runs, compared_label, expand,
                     figure_subject, get_train_parser, load_table, steps_per_epoch)

HAND_WRITTEN = re.compile(r"^## .*hand-written", re.MULTILINE)
FINISHED = re.compile(r"(\d+) of (\d+) runs finished")


def read_paper(path: Optional[str]) -> dict[tuple[str, str, str], tuple[float, Optional[float], str]]:
    """The paper's numbers: ``{(block, row, column): (top1, top1_std or None, source)}``."""
    if not path:
        return {}
    out = {}
    full = os.path.join(ROOT, path)
    columns = ("source", "block", "row", "column", "top1")
    try:
        with open(full, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise TableError(f"{full}: the paper's numbers lack the column(s) {', '.join(missing)}; a paper CSV "
                                 "has the header source,block,row,column,top1[,top1_std]")
            for n, rec in enumerate(reader, 2):
                std = rec.get("top1_std") or ""
                try:
                    out[(rec["block"], rec["row"], rec["column"])] = (float(rec["top1"]), float(std) if std else None,
                                                                       rec["source"])
                except (TypeError, ValueError):
                    raise TableError(f"{full}:{n}: top1 {rec['top1']!r} or top1_std {std!r} is not a number") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TableError(f"{full}: the paper's numbers cannot be read ({e})") from None
    return out


def read_result(run: Run) -> Optional[dict]:
    """A run's results.json; None when absent or unreadable (then the file and the reason go to stderr: the run
    counts as failed)."""
    try:
        return run.results()
    except ResultsError as e:
        print(f"[collect] warning: {e}; counted as a failed run", file=sys.stderr)
        return None


def is_number(value: Any) -> bool:
    """A usable metric value: an int or float (not a bool, not a string), finite (an integer beyond a float's range
    is not)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def is_autowu(result: dict) -> bool:
    config = result.get("config")
    return isinstance(config, dict) and str(config.get("sched", "")).startswith("autowu")


def run_steps(run: Run) -> dict[str, list]:
    """The run's steps.csv columns, read once per collect for the several summaries that use them (the file's
    size and modification time are part of the key, so a file that changed is read again). Raises what
    ``read_steps`` raises."""
    path = os.path.join(os.path.dirname(run.results_path), "steps.csv")
    st = os.stat(path)
    return _read_steps_once(path, st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=8)
def _read_steps_once(path: str, mtime_ns: int, size: int) -> dict[str, list]:
    return read_steps(path)


def decay_start(run: Run, result: dict) -> Optional[tuple[float, float]]:
    """``(lr, epoch)`` the run decayed from: AutoWU's switch, else (a baseline) the largest LR in steps.csv (first
    reached). None for an AutoWU run without a switch or a run that diverged before its switch: it never decayed."""
    switch = result.get("switch")
    if isinstance(switch, dict):
        if not (is_number(switch.get("lr")) and is_number(switch.get("step"))):
            print(f"[collect] warning: {run.results_path}: the switch entry has no numeric lr and step "
                  f"({json.dumps(switch)[:120]}); the run's decay start is left out", file=sys.stderr)
            return None
        if is_number(result.get("steps")) and is_number(result.get("epochs")) and result["steps"]:
            # the switch comes after switch["step"] steps
            return float(switch["lr"]), float(switch["step"]) * result["epochs"] / result["steps"]
        return None
    if is_autowu(result) or result.get("status") == "diverged":
        return None
    path = os.path.join(os.path.dirname(run.results_path), "steps.csv")
    if not os.path.isfile(path):
        return None
    best = None
    try:
        cols = run_steps(run)
    except (ValueError, TypeError, KeyError, OSError) as e:  # a cut row, a missing column, text for a number
        print(f"[collect] warning: {path}: cannot be read as steps.csv ({type(e).__name__}: {e}); the run's "
              "decay start is left out", file=sys.stderr)
        return None
    epochs = cols["epoch"]
    for step, lr in zip(cols["step"], cols["lr"]):
        if best is None or lr > best[0]:
            best = (lr, step)
    if best is None:
        return None
    return best[0], (best[1] + 1) / steps_per_epoch(result, epochs)


def estimated_step_size(run: Run, result: dict) -> Optional[tuple[float, float]]:
    """``(d, epoch)`` of a run of Prodigy or D-Adaptation under the baseline schedule: the step size d the optimizer
    estimated by the end of training (the logged LR, d * lr, divided by the schedule's factor lr at that step, at the
    last logged step where the factor is at least 0.05), and the epoch (steps done / steps per epoch) when d first
    reached 99% of it (both optimizers only grow d). None for any other run or a run without a readable steps.csv."""
    config = result.get("config") if isinstance(result.get("config"), dict) else {}
    if config.get("opt") not in STEP_SIZE_ESTIMATORS or config.get("sched") != "baseline" \
            or not (is_number(result.get("epochs")) and is_number(config.get("warmup_epochs"))):
        return None
    try:
        cols = run_steps(run)
    except (ValueError, TypeError, KeyError, OSError):
        return None  # decay_start has warned about this file
    import torch  # the schedule itself, not a copy of its formula
    from autowu.schedules import WarmupCosine
    spe = steps_per_epoch(result, cols["epoch"])
    factor = WarmupCosine(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), spe, int(result["epochs"]),
                          warmup_epochs=float(config["warmup_epochs"])).lr_at
    ds = [(step, lr / f) for step, lr, f in ((s, lr, factor(s)) for s, lr in zip(cols["step"], cols["lr"]))
          if f >= 0.05]
    if not ds:
        return None
    final = ds[-1][1]
    reached = next(step for step, d in ds if d >= 0.99 * final)
    return final, (reached + 1) / spe


def overshoot(result: dict) -> Optional[tuple[float, float]]:
    """``(LR at the switch / eta_t*, LR growth per epoch)`` of an exponential AutoWU warmup that switched by the GP
    test: ``(eta_max / eta_min) ** ((switch step - t*) / W)``, ``W = floor(rho_w * T)`` warmup steps (Eq. 1)."""
    switch, config = result.get("switch"), result.get("config")
    if not (isinstance(switch, dict) and isinstance(config, dict) and switch.get("reason") == "gp-test"
            and config.get("autowu_warmup", "exp") == "exp" and result.get("steps") and result.get("epochs")):
        return None
    try:
        spe = steps_per_epoch(result, [])
        warmup = math.floor(float(config["autowu_rho_w"]) * spe * int(config["epochs"]))
        ratio = float(config["autowu_eta_max"]) / float(config["autowu_eta_min"])
        return (ratio ** ((float(switch["step"]) - float(switch["t_star"])) / warmup), ratio ** (spe / warmup))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def fmt_mean_std(values: list[float], digits: int = 2) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ({statistics.stdev(values):.{digits}f})"


def read_runs(table: Table, runs_dir: str, blocks: Optional[list[str]] = None, rows: Optional[list[str]] = None
              ) -> tuple[list[Run], dict[str, Optional[dict]], dict[str, list[str]]]:
    """The table's runs (of ``blocks`` and ``rows``, default all), each run's results.json by its output directory
    (None: not finished, or stale), and the stale ones: finished, but made with other settings than the table now
    asks ({run name: the differing settings}), never in a cell."""
    runs = expand(table, runs_dir, blocks=blocks, rows=rows)
    check_runs(runs, get_train_parser())  # what each run's command line fixes, for Run.stale
    results = {r.output: read_result(r) for r in runs}
    stale = {r.name: r.stale() for r in runs if results[r.output] is not None}
    stale = {name: diff for name, diff in stale.items() if diff}
    for r in runs:
        if r.name in stale:
            results[r.output] = None
    return runs, results, stale


def unfinished(runs: list[Run], results: dict) -> list[str]:
    """``name (epoch k of E)`` for each run without a result that has a checkpoint, in its run directory (a run
    under way or cut) or carried in its record's ``partial/`` (:func:`experiments.records.export_partial`); ``k``:
    the epochs its epochs.jsonl holds, ``E`` from its args.yaml."""
    out = []
    for r in runs:
        if results[r.output] is not None:
            continue
        for d in (os.path.join(ROOT, r.output), os.path.join(ROOT, r.output, PARTIAL)):
            if not os.path.isfile(os.path.join(d, "last.pt")):
                continue
            try:
                with open(os.path.join(d, "epochs.jsonl")) as f:
                    k = sum(1 for line in f if line.strip())
                with open(os.path.join(d, "args.yaml")) as f:
                    total = re.search(r"^epochs: *(\S+)", f.read(), re.M)
            except OSError:
                k, total = 0, None
            out.append(f"{r.name} (epoch {k} of {total.group(1) if total else '?'})")
            break
    return out


def collect(table: Table, runs_dir: str = "runs") -> str:
    """The markdown text of ``results/<table>.md`` for the runs found under ``runs_dir``."""
    paper = read_paper(table.paper)
    runs, results, stale = read_runs(table, runs_dir)
    done = [r for r in runs if results[r.output] is not None]
    lines = [f"# {table.title}", ""]
    lines.append(f"Made by `python scripts/collect.py {table.name}` from `{runs_dir}/{table.name}/`: "
                 f"{len(done)} of {len(runs)} runs finished. Metric: `{table.metric}` of results.json.")
    mid_run = unfinished(runs, results)
    if mid_run:
        lines.append(f"Under way or cut, with a checkpoint that the next sweep resumes (in the run directory or carried "
                     f"in its record's `{PARTIAL}/`): " + ", ".join(mid_run) + ".")
    if stale:
        lines.append(f"Left out: {len(stale)} finished run(s) made with other settings than this table now asks "
                     "(`scripts/sweep.py` calls them stale and reruns them with `--rerun-stale`): " +
                     "; ".join(f"{name} ({', '.join(diff)})" for name, diff in sorted(stale.items())) + ".")
    reused = []
    for r in done:
        path = os.path.join(ROOT, r.record, REUSED_FROM)
        if r.results_path.startswith(os.path.join(ROOT, r.record)) and os.path.isfile(path):
            try:
                with open(path) as f:
                    reused.append(f"{r.name} ← {json.load(f)['run']}")
            except (OSError, ValueError, KeyError, TypeError):
                reused.append(f"{r.name} ← (unreadable {REUSED_FROM})")
    if reused:
        lines.append(f"Reused: {len(reused)} run(s) are the records of another table's runs made with the same "
                     "settings (`scripts/sweep.py --reuse-from`): " + "; ".join(reused) + ".")
    if table.paper:
        lines.append(f"Each cell: ours, mean (std) over seeds · the paper's number ({table.paper}) · "
                     "Δ = ours − paper. **Bold**: best of our rows in the column.")
    else:
        lines.append("Each cell: mean (std) over seeds. **Bold**: best row in the column.")
    compared, compared_results, notes = compare_rows(table, runs_dir)
    results.update(compared_results)
    if compared:
        lines.append("Rows marked (TABLE) are that table's runs, reused here; the oracle row is the best cell of the "
                     "grid it names." + (" " + " ".join(notes) if notes else ""))
    lines.append("")
    for block in table.blocks:
        block_runs = [r for r in runs if r.block == block.name]
        if block.name:
            lines += [f"## {block.label}", ""]
        cols = block.columns
        lines.append("| Schedule | " + " | ".join(f"{block.column_header} {c.header}" for c in cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        means: dict[tuple[str, str], float] = {}
        cells: dict[tuple[str, str], list[Run]] = defaultdict(list)
        for r in block_runs:
            cells[(r.row, r.column)].append(r)
        row_names = list(block.rows)
        for label, by_column in compared.get(block.name, []):
            row_names.append(label)
            for col, rs in by_column.items():
                cells[(label, col)] = rs
        for (row, col), rs in cells.items():
            vals = cell_values(table, rs, results)
            if vals:
                means[(row, col)] = statistics.mean(vals)
        for row in row_names:
            out = [row]
            for c in cols:
                rs = cells[(row, c.key)]
                res = [results[r.output] for r in rs if results[r.output] is not None]
                vals = [float(x.get(table.metric)) for x in res if is_number(x.get(table.metric))]
                diverged = sum(1 for x in res if x.get("status") == "diverged")
                # failed: a results.json that cannot be read, or a run that did not diverge yet has no number
                failed = sum(1 for r in rs if r.problem) + sum(
                    1 for x in res if x.get("status") != "diverged" and not is_number(x.get(table.metric)))
                for r in rs:
                    x = results[r.output]
                    if x is not None and x.get(table.metric) is not None and not is_number(x.get(table.metric)):
                        print(f"[collect] warning: {r.results_path}: {table.metric} = {repr(x.get(table.metric))[:40]}"
                              " is not a number; counted as a failed run", file=sys.stderr)
                ref = paper.get((block.name, row, c.key))
                if not rs:  # a compared row without this column (the oracle's other columns)
                    text = "–"
                elif not vals:
                    text = "; ".join(t for t in (f"diverged ({diverged}/{len(rs)})" if diverged else "",
                                                 f"failed ({failed}/{len(rs)})" if failed else "") if t) or "missing"
                else:
                    text = fmt_mean_std(vals)
                    in_column = [v for (_, cl), v in means.items() if cl == c.key]
                    if len(in_column) > 1 and means[(row, c.key)] == max(in_column):
                        text = f"**{text}**"
                    if len(vals) < len(rs):
                        text += f" n={len(vals)}/{len(rs)}"
                    if diverged:
                        text += f" ({diverged} diverged)"
                    if failed:
                        text += f" ({failed} failed)"
                if ref is not None:
                    text += f" · paper {ref[0]:.2f}"
                    if vals:
                        text += f" · Δ {statistics.mean(vals) - ref[0]:+.2f}"
                out.append(text)
            lines.append("| " + " | ".join(out) + " |")
        lines.append("")
        lines += screen_lines(table, block, cells, results)
        header = ["| Schedule | " + " | ".join(f"{block.column_header} {c.header}" for c in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        lines += versus_lines(table, block, row_names, cells, results, header)
        starts, overs = [], []
        for row in row_names:
            out, over = [row], [row]
            for c in cols:
                res = [results[r.output] for r in cells[(row, c.key)] if results[r.output]]
                got = [g for g in (decay_start(r, results[r.output]) for r in cells[(row, c.key)]
                                   if results[r.output]) if g is not None]
                never = [x for x in res if not isinstance(x.get("switch"), dict) and
                         (is_autowu(x) or x.get("status") == "diverged")]
                reasons = sorted({x["switch"].get("reason") for x in res if isinstance(x.get("switch"), dict)
                                  and x["switch"].get("reason") != "gp-test"})
                if got:
                    lr = statistics.mean(g[0] for g in got)
                    ep = statistics.mean(g[1] for g in got)
                    text = f"{lr:.3g} @ ep {ep:.1f}" + (f" n={len(got)}" if len(got) < len(res) else "")
                    if reasons:
                        text += f" ({', '.join(reasons)})"
                else:
                    text = "–"
                if never:
                    diverged = sum(1 for x in never if x.get("status") == "diverged")
                    note = (f"diverged before a switch ({diverged}/{len(res)})" if diverged else "") or \
                           f"no switch ({len(never)}/{len(res)})"
                    text = note if text == "–" else f"{text}; {note}"
                out.append(text)
                factors = [f for f in (overshoot(x) for x in res) if f is not None]
                over.append(f"{statistics.mean(f[0] for f in factors):.3g}x (warmup {factors[0][1]:.3g}x/epoch)"
                            + (f" n={len(factors)}" if len(factors) < len(res) else "") if factors else "–")
            starts.append("| " + " | ".join(out) + " |")
            overs.append("| " + " | ".join(over) + " |")
        if any(cell.strip() != "–" for line in starts for cell in line.strip("| ").split(" | ")[1:]):
            lines.append("Decay-start LR @ epoch (AutoWU: LR η_t* set at the switch and the epoch of the switch, "
                         "with the switch's reason when it was not the GP test; baseline: peak LR and the epoch it "
                         "is reached), mean over seeds:")
            lines += [""] + header + starts + [""]
        if any("x (warmup" in s for s in overs):
            lines.append("Overshoot at the switch: the warmup LR when AutoWU switched / η_t* (the LR it decays "
                         "from), (η_max/η_min)^((switch step − t*)/W), mean over the seeds that switched by the GP "
                         "test; in brackets the warmup's LR growth per epoch:")
            lines += [""] + header + [o for o in overs if "x (warmup" in o] + [""]
        lines += step_size_lines(block, list(block.rows), cells, results, header)
        lines += cost_lines(block, list(block.rows), cells, results, header)  # not compare's: other sessions
        beside = paper_beside(table, block, means)
        if beside:
            lines += beside
    hardware = sorted({json.dumps(results[r.output].get("hardware"), sort_keys=True) for r in done
                       if results[r.output].get("hardware") is not None})
    wall = 0.0
    for r in done:
        w = results[r.output].get("wall_time_s")
        if is_number(w):
            wall += float(w)
        elif w is not None:
            print(f"[collect] warning: {r.results_path}: wall_time_s = {repr(w)[:40]} is not a number; left out of "
                  "the compute total", file=sys.stderr)
    if done:
        lines.append(f"Compute: {len(done)} runs, {wall / 60:.1f} min of training wall time in total, on "
                     + "; ".join(h.strip('"') for h in hardware) + ".")
        lines.append("")
    if table.caption:
        lines += [table.caption, ""]
    lines += figure_links(table)
    return "\n".join(lines)


def compare_rows(table: Table, runs_dir: str) -> tuple[dict[str, list[tuple[str, dict[str, list[Run]]]]],
                                                       dict[str, Optional[dict]], list[str]]:
    """The table's ``compare`` rows: for each block, ``[(label, {column key: [Run]})]`` from the other tables' block of
    the same name (their finished runs in ``runs_dir``), with the results they read and notes on runs left out."""
    spec = table.compare or {}
    out: dict[str, list[tuple[str, dict[str, list[Run]]]]] = defaultdict(list)
    results: dict[str, Optional[dict]] = {}
    notes: list[str] = []

    def read(other: Table, block: str, rows: Optional[list[str]] = None) -> list[Run]:
        runs, read_results, stale = read_runs(other, runs_dir, blocks=[block] if block else None, rows=rows)
        notes.extend(f"Left out: {name} (made with other settings than {other.name} now asks)." for name in stale)
        results.update(read_results)
        return runs

    def has_block(other: Table, name: str) -> bool:
        return any(b.name == name for b in other.blocks)

    if "rows" in spec:
        other = load_table(spec["rows"]["table"])
        unknown = [r for r in spec["rows"]["rows"] if not any(r in b.rows for b in other.blocks)]
        if unknown:
            raise TableError(f"{table.path}: compare's rows {', '.join(unknown)} are not rows of {other.name}")
        for block in table.blocks:
            if not has_block(other, block.name):
                continue
            runs = read(other, block.name, spec["rows"]["rows"])
            for row in spec["rows"]["rows"]:
                out[block.name].append((compared_label(row, other.name), {
                    c.key: [r for r in runs if r.row == row and r.column == c.key] for c in block.columns}))
    if "oracle" in spec:
        grid, column = load_table(spec["oracle"]["table"]), spec["oracle"]["column"]
        for block in table.blocks:
            if not has_block(grid, block.name):
                continue
            runs = read(grid, block.name)
            cells: dict[tuple[str, str], list[Run]] = defaultdict(list)
            for r in runs:
                if results[r.output] is not None and is_number(results[r.output].get(table.metric)):
                    cells[(r.row, r.column)].append(r)
            finished = sum(len(v) for v in cells.values())
            if not cells:
                out[block.name].append((f"oracle: best cell of {grid.name} (no run finished yet)", {column: []}))
                continue
            best = max(cells, key=lambda k: statistics.mean(float(results[r.output][table.metric]) for r in cells[k]))
            gblock = next(b for b in grid.blocks if b.name == block.name)
            header = next(c.header for c in gblock.columns if c.key == best[1])
            label = (f"oracle: best cell of {grid.name} ({best[0]}, {header}"
                     + (f"; {finished} of {len(runs)} grid runs finished" if finished < len(runs) else "") + ")")
            out[block.name].append((label, {column: cells[best]}))
    return dict(out), results, notes


def run_cost(res: dict) -> tuple[Optional[float], Optional[float], Optional[float]]:
    """(training wall time in minutes, the method's extra forward passes over the training forwards, the LR its
    test found) of one results.json; None where the run does not say. The extra forwards are the LR range test's
    steps (before training), AutoLR's probe forwards, and Schedule-Free's BatchNorm recomputes before each
    validation (train.py's rule; every model of these tables has BatchNorm); the training forwards are the optimizer
    steps times the micro-batches per step."""
    wall = float(res["wall_time_s"]) / 60 if is_number(res.get("wall_time_s")) else None
    split = res.get("split") if isinstance(res.get("split"), dict) else {}
    forwards = (res.get("steps") or 0) * (split.get("accum_steps") or 1) if is_number(res.get("steps")) else 0
    extra = found = None
    test = res.get("range_test")
    if isinstance(test, dict) and is_number(test.get("forward_passes")) and forwards:
        extra = float(test["forward_passes"]) / forwards
        found = float(test["lr"]) if is_number(test.get("lr")) else None
    autolr = res.get("autolr")
    if isinstance(autolr, dict) and is_number(autolr.get("overhead")):
        extra = float(autolr["overhead"])
    config = res.get("config") if isinstance(res.get("config"), dict) else {}
    epochs = res.get("epochs")
    if config.get("opt") in MODE_OPTIMIZERS and forwards and is_number(epochs) and epochs > 0 \
            and is_number(config.get("val_interval")):  # BatchNorm recomputed before each validation
        spent = batchnorm_recompute_forwards(int(epochs), int(config["val_interval"]), forwards // int(epochs))
        extra = (extra or 0.0) + spent / forwards
    return wall, extra, found


def step_size_lines(block: Block, row_names: list[str], cells: dict[tuple[str, str], list[Run]],
                    results: dict[str, Optional[dict]], header: list[str]) -> list[str]:
    """The table of the step size d that Prodigy and D-Adaptation estimated (estimated_step_size), per row and
    column: mean over seeds (range), and the mean epoch by which d reached 99% of its final value; [] when no row
    of the block estimates one."""
    table_rows = []
    for row in row_names:
        out = [row]
        for c in block.columns:
            got = [g for g in (estimated_step_size(r, results[r.output]) for r in cells[(row, c.key)]
                               if results[r.output]) if g is not None]
            ds = [g[0] for g in got]
            out.append(f"{statistics.mean(ds):.3g}" + (f" ({min(ds):.3g}-{max(ds):.3g})" if len(ds) > 1 else "")
                       + f" by ep {statistics.mean(g[1] for g in got):.1f}" if got else "–")
        if any(cell != "–" for cell in out[1:]):
            table_rows.append(out)
    if not table_rows:
        return []
    return (["The step size the learning-rate-free optimizers estimated: d at the end of training (their logged LR, "
             "d·lr, divided by the schedule's factor lr; the LR the update would take at the schedule's peak, to "
             "set against the baseline's peak LR above), mean over seeds (range), and the epoch by which d reached "
             "99% of it (d only grows):", ""] + header + ["| " + " | ".join(out) + " |" for out in table_rows] + [""])


def cost_lines(block: Block, row_names: list[str], cells: dict[tuple[str, str], list[Run]],
               results: dict[str, Optional[dict]], header: list[str]) -> list[str]:
    """The cost table of a block with a method that spends forwards of its own (an LR range test, AutoLR's probes,
    Schedule-Free's BatchNorm recomputes):
    per row and column, the mean wall time of a run, the extra forwards, and the LR the range test found."""
    table_rows, any_extra = [], False
    for row in row_names:
        out = [row]
        for c in block.columns:
            got = [run_cost(results[r.output]) for r in cells[(row, c.key)] if results[r.output]]
            walls = [g[0] for g in got if g[0] is not None]
            extras = [g[1] for g in got if g[1] is not None]
            any_extra = any_extra or bool(extras)
            found = [g[2] for g in got if g[2] is not None]
            parts = [f"{statistics.mean(walls):.1f} min"] if walls else []
            if extras:
                share = float(f"{100 * statistics.mean(extras):.2g}")  # two significant digits, written out
                parts.append(f"+{share:,.0f}% forwards" if share >= 100 else f"+{share:g}% forwards")
            if found:
                parts.append(f"LR found {statistics.mean(found):.3g}"
                             + (f" ({min(found):.3g}-{max(found):.3g})" if len(found) > 1 else ""))
            out.append("; ".join(parts) or "–")
        table_rows.append(out)
    if not any_extra:
        return []
    return (["Cost per run, mean over seeds: training wall time (each run's hardware and load: see the records), the "
             "forward passes a method spends besides training as a fraction of the training forwards (the LR range "
             "test's steps, each a forward and a backward like a training step; AutoLR's probes and Schedule-Free's "
             "BatchNorm recomputes before each validation, at most 50 micro-batches, forward only), and the LR the "
             "range test found (range over seeds). The table's own rows only: the rows of another table ran in "
             "other sessions, on other code and load, so their wall times do not compare (AutoWU and the baseline "
             "spend no forwards besides training):", ""]
            + header + ["| " + " | ".join(out) + " |" for out in table_rows] + [""])


def cell_values(table: Table, runs: list[Run], results: dict[str, Optional[dict]]) -> list[float]:
    """The metric of each finished run of a cell (runs without a number left out)."""
    got = [results[r.output].get(table.metric) for r in runs if results[r.output] is not None]
    return [float(v) for v in got if is_number(v)]


def versus_lines(table: Table, block: Block, row_names: list[str], cells: dict[tuple[str, str], list[Run]],
                 results: dict[str, Optional[dict]], header: list[str]) -> list[str]:
    """The table's ``versus`` key for one block, from its finished runs: each row minus ``row`` in every column with a
    verdict (better / worse where the difference exceeds std-factor x the larger sample std of the two cells, else
    within noise; pending while a run of either cell is missing; no verdict between two single runs), the share of
    ``row``'s small -> large gap each row recovers at the large column, and each row against the oracle (compare's
    best grid cell) at its column, against std-factor x the row's std."""
    spec = table.versus
    if not spec:
        return []
    base, k = spec["row"], spec["std-factor"]

    def vals(row: str, col: str) -> list[float]:
        return cell_values(table, cells[(row, col)], results)

    def std(v: list[float]) -> Optional[float]:
        return statistics.stdev(v) if len(v) > 1 else None

    out = [f"Against `{base}` (computed by collect.py from the runs above): each row minus `{base}` in its column, "
           f"**better** / **worse** where the difference exceeds {k:g} × the larger seed std of the two cells (the "
           "noise, in brackets; a cell of one run, such as a grid's, counts the other's std alone), else within "
           "noise; pending while a run of either cell is missing:", ""] + header
    compared = False
    for row in row_names:
        if row == base:
            continue
        line = [row]
        for c in block.columns:
            a, b = vals(row, c.key), vals(base, c.key)
            if not a or not b:
                line.append("–")
                continue
            compared = True
            d = statistics.mean(a) - statistics.mean(b)
            stds = [x for x in (std(a), std(b)) if x is not None]
            if len(a) < len(cells[(row, c.key)]) or len(b) < len(cells[(base, c.key)]):
                verdict = f"pending (n={len(a)}/{len(cells[(row, c.key)])}, {len(b)}/{len(cells[(base, c.key)])})"
            elif not stds:
                verdict = "one run each: no verdict"
            else:
                need = k * max(stds)
                verdict = (f"**better** ({need:.2f})" if d > need else f"**worse** ({need:.2f})" if d < -need
                           else f"within noise ({need:.2f})")
            line.append(f"{d:+.2f} {verdict}")
        out.append("| " + " | ".join(line) + " |")
    out = out + [""] if compared else []  # no pair of cells yet: no table
    gap = spec.get("gap")
    if gap:
        small, large = vals(base, gap["small"]), vals(base, gap["large"])
        if small and large and statistics.mean(small) > statistics.mean(large):
            g = statistics.mean(small) - statistics.mean(large)
            parts = []
            for row in row_names:
                v = vals(row, gap["large"])
                if row != base and v:
                    parts.append(f"{row} {100 * (statistics.mean(v) - statistics.mean(large)) / g:+.0f}%"
                                 + (f" (n={len(v)})" if len(v) < len(block.seeds) else ""))
            if parts:
                out += [f"Share of `{base}`'s {g:.2f}-point gap from `{gap['small']}` to `{gap['large']}` that each "
                        f"row recovers at `{gap['large']}` ((row − {base}) / gap, means; negative: it widens the gap): "
                        + "; ".join(parts) + ".",
                        ""]
    for oracle in (r for r in row_names if r.startswith("oracle:")):
        for c in block.columns:
            best = vals(oracle, c.key)
            if not best:
                continue
            parts = []
            for row in row_names:
                v = vals(row, c.key)
                if row == oracle or row.startswith("oracle:") or not v:
                    continue
                d = statistics.mean(best) - statistics.mean(v)
                s = std(v)
                missing = len(v) < len(cells[(row, c.key)])
                parts.append(f"{row} {d:+.2f}" + (f" ({'within' if d <= k * s else 'outside'} {k:g} × its std = "
                                                  f"{k * s:.2f})" if s is not None else " (one run)")
                             + (f" pending (n={len(v)}/{len(cells[(row, c.key)])})" if missing else ""))
            if parts:
                out += [f"The oracle ({oracle[len('oracle: '):]}) minus each row at `{c.key}`: " + "; ".join(parts)
                        + ".", ""]
    return out


def screen_lines(table: Table, block: Block, cells: dict[tuple[str, str], list[Run]],
                 results: dict[str, Optional[dict]]) -> list[str]:
    """The table's ``screen`` pass rule for one block, computed from its finished runs: (a) the large-batch gap
    mean(small) - mean(large) >= at-least; (b) the best of ``cells`` beats ``than`` by more than std-factor x the
    larger sample std of the two. A part is decided only when its cells have all the block's seeds (the early-drop
    rule excepted: with one seed each and no cell above ``than``, (b) fails at n=1); until then it says pending."""
    spec = table.screen
    if not spec:
        return []
    row, n_all = spec["row"], len(block.seeds)

    def vals(col: str) -> list[float]:
        return cell_values(table, cells[(row, col)], results)

    def cell(col: str) -> str:
        v = vals(col)
        return f"`{col}` {fmt_mean_std(v)}" + (f" (n={len(v)}/{n_all})" if len(v) < n_all else "")

    gap, better = spec["gap"], spec["better"]
    small, large = vals(gap["small"]), vals(gap["large"])
    if small and large:
        d = statistics.mean(small) - statistics.mean(large)
        full = len(small) == len(large) == n_all
        ok_a = (d >= gap["at-least"]) if full else None
        a = (f"{cell(gap['small'])} − {cell(gap['large'])} = {d:+.2f} (needs ≥ {gap['at-least']:g}): "
             + ("**pass**" if ok_a else "**fail**" if full else "pending"))
    else:
        ok_a, a = None, f"pending (no finished run in `{gap['small'] if not small else gap['large']}` yet)"
    base = vals(better["than"])
    tried = {c: vals(c) for c in better["cells"] if vals(c)}
    ok_b: Optional[bool] = None
    if base and tried:
        best = max(tried, key=lambda c: statistics.mean(tried[c]))
        d = statistics.mean(tried[best]) - statistics.mean(base)
        b = f"best {cell(best)} − {cell(better['than'])} = {d:+.2f}"
        if len(base) == len(tried[best]) == n_all and n_all > 1 and len(tried) == len(better["cells"]) and \
                all(len(v) == n_all for v in tried.values()):
            need = better["std-factor"] * max(statistics.stdev(tried[best]), statistics.stdev(base))
            ok_b = d > need
            b += f" (needs > {better['std-factor']:g} × the larger seed std = {need:.2f}): " + \
                 ("**pass**" if ok_b else "**fail**")
        elif len(base) == 1 and len(tried) == len(better["cells"]) and all(len(v) == 1 for v in tried.values()) \
                and d <= 0:
            ok_b = False
            b += f": **fail** at n=1 (no cell above `{better['than']}`: the early-drop rule)"
        else:
            b += ": pending (seeds missing)"
    else:
        b = "pending (no finished run yet)"
    verdict = ("**PASS**" if ok_a and ok_b else "**FAIL**" if ok_a is False or ok_b is False else "pending")
    return [f"Pass rule (computed by collect.py from the runs above, `{row}` row): {verdict}", "",
            f"- (a) large-batch gap: {a}",
            f"- (b) a longer warmup helps: {b}", ""]


def paper_beside(table: Table, block: Any, means: dict[tuple[str, str], float]) -> list[str]:
    """The ``paper-beside`` cells (another setting of the paper) as each row's difference to the baseline row, next
    to ours: the shape of the comparison, not its values."""
    spec = table.paper_beside
    if not spec:
        return []
    ref = read_paper(spec["csv"])
    pblock, base = spec.get("block", ""), spec.get("baseline", "baseline")
    cols = block.columns
    out = [f"Shape beside the paper ({spec.get('label', pblock)}, {spec['csv']}): each row minus the {base} row of "
           "its column, ours · the paper's, in points (the values themselves are not comparable: another dataset "
           "and network):", "",
           "| Schedule | " + " | ".join(f"{block.column_header} {c.header}" for c in cols) + " |",
           "|---|" + "---|" * len(cols)]
    for row in block.rows:
        cells = []
        for c in cols:
            ours = (f"{means[(row, c.key)] - means[(base, c.key)]:+.2f}" if (row, c.key) in means
                    and (base, c.key) in means else "–")
            p, pb = ref.get((pblock, row, c.key)), ref.get((pblock, base, c.key))
            theirs = f"{p[0] - pb[0]:+.2f}" if p and pb else "–"
            if row == base:
                ours = f"{means[(row, c.key)]:.2f}" if (row, c.key) in means else "–"
                theirs = f"{p[0]:.2f}" if p else "–"
            cells.append(f"{ours} · paper {theirs}")
        out.append(f"| {row} | " + " | ".join(cells) + " |")
    return out + ["", f"(The {base} row shows the top-1 itself: ours · the paper's.)", ""]


def grid_axes(block: Block) -> Optional[tuple[list, list]]:
    """``(peak LRs of the columns, warmup epochs of the rows)`` of a Figure 5 style grid block (every column sets
    ``lr``, every row ``warmup-epochs``); None for any other block."""
    lrs = [c.overrides.get("lr") for c in block.columns]
    warm = [o.get("warmup-epochs") for o in block.rows.values()]
    return (lrs, warm) if all(is_number(v) for v in lrs + warm) else None


def figure_links(table: Table) -> list[str]:
    """Markdown links to the figures scripts/plot.py wrote for this table (results/figures/<table>[_<block>].png)."""
    links = []
    for block in table.blocks:
        name = f"{table.name}_{block.name}.png" if block.name else f"{table.name}.png"
        if os.path.isfile(os.path.join(ROOT, "results", "figures", name)):
            if grid_axes(block) is None:
                what = f"LR, training loss (and top-1) per {block.column_header.lower()}"
            else:
                what = f"{table.metric} per (peak LR, warmup epochs)"
                if block.figure_mark:
                    what += f", {block.figure_mark}'s AutoWU runs at their (η_t*, switch epoch)"
            links.append(f"![{figure_subject(table, block)}: {what}; `python scripts/plot.py {table.name}`]"
                         f"(figures/{name})")
    return links + [""] if links else []


def write_page(table: Table, text: str, out: str, force: bool = False) -> Optional[str]:
    """Write ``text`` to ``out``, keeping the existing page's hand-written part (from its first
    ``## ...hand-written...`` heading on). Returns an error message instead of writing when the existing page says
    more runs finished than ``text`` does (unless ``force``)."""
    old = ""
    if os.path.isdir(out):
        return f"--out {out} is a directory; give the markdown file to write"
    if os.path.isfile(out):
        try:
            with open(out) as f:
                old = f.read()
        except (OSError, UnicodeDecodeError) as e:
            if not force:
                return (f"{out} cannot be read as the page to update ({e}): its hand-written part would be lost; "
                        "move it away, give another --out, or pass --force to replace it")
    have = FINISHED.search(old)
    new = FINISHED.search(text)
    if have and new and not force and int(new.group(1)) < int(have.group(1)):
        records = os.path.join(ROOT, "results", "runs", table.name)
        how = ("a fresh clone has no runs/: rebuild from the committed records with --runs-dir results/runs"
               if os.path.isdir(records) else
               f"this table has no committed records (results/runs/{table.name}/ does not exist): rerun its sweep "
               f"(python scripts/sweep.py {table.name} --local) to rebuild them")
        return (f"{out} reports {have.group(1)} of {have.group(2)} runs finished, the runs found now give "
                f"{new.group(1)} of {new.group(2)}: not overwritten ({how}, or pass --force to replace it)")
    hand = HAND_WRITTEN.search(old)
    if hand:
        text = text.rstrip("\n") + "\n\n" + old[hand.start():]
    tmp = f"{out}.tmp.{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, out)
    except OSError as e:
        if os.path.isfile(tmp):
            os.remove(tmp)
        return f"cannot write {out}: {e.strerror or e}; check --out"
    return None


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("table", help="table name (configs/tables/NAME.yaml) or path")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--out", help="markdown file to write (default: results/<table>.md)")
    p.add_argument("--force", action="store_true",
                   help="replace the page even if it reports more finished runs than are found now")
    args = p.parse_args(argv)
    try:
        table = load_table(args.table)
        out = args.out or os.path.join(ROOT, "results", f"{table.name}.md")
        if os.path.isdir(out):
            raise TableError(f"--out {out} is a directory; give the markdown file to write")
        text = collect(table, args.runs_dir)  # the table's flags (train.py's parser) and paper numbers checked here
    except TableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    error = write_page(table, text, out, args.force)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(text)
    print(f"[collect] wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
