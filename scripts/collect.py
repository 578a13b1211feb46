"""Collect a table's runs into ``results/<table>.md`` in the paper's layout.

    python scripts/collect.py table1                 # reads runs/table1/**/results.json, writes results/table1.md
    python scripts/collect.py fashion_mnist --runs-dir runs --out results/fashion_mnist.md

Rows are schedules, columns batch sizes (or the table's columns); a cell is the mean (std) of the table's metric over
the seeds that finished, with ``n=k/N`` when some are missing, the paper's number (results/paper/*.csv) and the
difference ours - paper beside it, and ``missing`` for a cell with no finished run. A second table gives the LR each
run decayed from and when (AutoWU: its switch entry; baseline: the peak of its logged LR), the quantity of the
paper's Figure 2 and Figure 7.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
from collections import defaultdict
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sweep import ROOT, Run, Table, TableError, expand, load_table  # noqa: E402
if ROOT not in sys.path:  # framework/ (the one steps.csv reader)
    sys.path.insert(0, ROOT)
from framework.io import read_steps  # noqa: E402


def read_paper(path: Optional[str]) -> dict[tuple[str, str, str], tuple[float, Optional[float], str]]:
    """The paper's numbers: ``{(block, row, column): (top1, top1_std or None, source)}``."""
    if not path:
        return {}
    out = {}
    with open(os.path.join(ROOT, path), newline="") as f:
        for rec in csv.DictReader(f):
            std = rec.get("top1_std") or ""
            out[(rec["block"], rec["row"], rec["column"])] = (float(rec["top1"]), float(std) if std else None,
                                                               rec["source"])
    return out


def read_result(run: Run) -> Optional[dict]:
    path = os.path.join(ROOT, run.output, "results.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def decay_start(run: Run, result: dict) -> Optional[tuple[float, float]]:
    """``(lr, epoch)`` the run decayed from: AutoWU's switch, else the largest LR in steps.csv (first reached)."""
    switch = result.get("switch")
    if switch and result.get("steps") and result.get("epochs"):  # the switch comes after switch["step"] steps
        return float(switch["lr"]), float(switch["step"]) * result["epochs"] / result["steps"]
    path = os.path.join(ROOT, run.output, "steps.csv")
    if not os.path.isfile(path):
        return None
    best, steps_per_epoch = None, defaultdict(int)
    cols = read_steps(path)
    for step, epoch, lr in zip(cols["step"], cols["epoch"], cols["lr"]):
        steps_per_epoch[epoch] += 1
        if best is None or lr > best[0]:
            best = (lr, step)
    if best is None:
        return None
    spe = max(steps_per_epoch.values())
    return best[0], (best[1] + 1) / spe


def fmt_mean_std(values: list[float], digits: int = 2) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ({statistics.stdev(values):.{digits}f})"


def collect(table: Table, runs_dir: str = "runs") -> str:
    """The markdown text of ``results/<table>.md`` for the runs found under ``runs_dir``."""
    paper = read_paper(table.paper)
    runs = expand(table, runs_dir)
    results = {r.output: read_result(r) for r in runs}
    done = [r for r in runs if results[r.output] is not None]
    lines = [f"# {table.title}", ""]
    lines.append(f"Made by `python scripts/collect.py {table.name}` from `{runs_dir}/{table.name}/`: "
                 f"{len(done)} of {len(runs)} runs finished. Metric: `{table.metric}` of results.json.")
    if table.paper:
        lines.append(f"Each cell: ours, mean (std) over seeds · the paper's number ({table.paper}) · "
                     "Δ = ours − paper. **Bold**: best of our rows in the column.")
    else:
        lines.append("Each cell: mean (std) over seeds. **Bold**: best row in the column.")
    lines.append("")
    for block in table.blocks:
        block_runs = [r for r in runs if r.block == block.name]
        if block.name:
            lines += [f"## {block.label}", ""]
        cols = block.columns
        lines.append(f"| Schedule | " + " | ".join(f"{block.column_header} {c.header}" for c in cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        means: dict[tuple[str, str], float] = {}
        cells: dict[tuple[str, str], list[Run]] = defaultdict(list)
        for r in block_runs:
            cells[(r.row, r.column)].append(r)
        for (row, col), rs in cells.items():
            vals = [results[r.output].get(table.metric) for r in rs if results[r.output] is not None]
            vals = [v for v in vals if v is not None and math.isfinite(v)]
            if vals:
                means[(row, col)] = statistics.mean(vals)
        for row in block.rows:
            out = [row]
            for c in cols:
                rs = cells[(row, c.key)]
                res = [results[r.output] for r in rs if results[r.output] is not None]
                vals = [x.get(table.metric) for x in res]
                vals = [v for v in vals if v is not None and math.isfinite(v)]
                diverged = sum(1 for x in res if x.get("status") == "diverged")
                ref = paper.get((block.name, row, c.key))
                if not vals:
                    text = "missing" if not diverged else f"diverged ({diverged}/{len(rs)})"
                else:
                    text = fmt_mean_std(vals)
                    in_column = [v for (_, cl), v in means.items() if cl == c.key]
                    if len(in_column) > 1 and means[(row, c.key)] == max(in_column):
                        text = f"**{text}**"
                    if len(vals) < len(rs):
                        text += f" n={len(vals)}/{len(rs)}"
                    if diverged:
                        text += f" ({diverged} diverged)"
                if ref is not None:
                    text += f" · paper {ref[0]:.2f}"
                    if vals:
                        text += f" · Δ {statistics.mean(vals) - ref[0]:+.2f}"
                out.append(text)
            lines.append("| " + " | ".join(out) + " |")
        lines.append("")
        starts = []
        for row in block.rows:
            out = [row]
            for c in cols:
                got = [decay_start(r, results[r.output]) for r in cells[(row, c.key)] if results[r.output]]
                got = [g for g in got if g is not None]
                if got:
                    lr = statistics.mean(g[0] for g in got)
                    ep = statistics.mean(g[1] for g in got)
                    out.append(f"{lr:.3g} @ ep {ep:.1f}")
                else:
                    out.append("–")
            starts.append("| " + " | ".join(out) + " |")
        if any("@" in s for s in starts):
            lines.append("Decay-start LR @ epoch (AutoWU: LR η_t* set at the switch and the epoch of the switch; "
                         "baseline: peak LR and the epoch it is reached), mean over seeds:")
            lines.append("")
            lines.append("| Schedule | " + " | ".join(f"{block.column_header} {c.header}" for c in cols) + " |")
            lines.append("|---|" + "---|" * len(cols))
            lines += starts
            lines.append("")
    hardware = sorted({json.dumps(results[r.output].get("hardware"), sort_keys=True) for r in done
                       if results[r.output].get("hardware") is not None})
    wall = sum(float(results[r.output].get("wall_time_s") or 0) for r in done)
    if done:
        lines.append(f"Compute: {len(done)} runs, {wall / 60:.1f} min of training wall time in total, on "
                     + "; ".join(h.strip('"') for h in hardware) + ".")
        lines.append("")
    if table.caption:
        lines += [table.caption, ""]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("table", help="table name (configs/tables/NAME.yaml) or path")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--out", help="markdown file to write (default: results/<table>.md)")
    args = p.parse_args(argv)
    try:
        table = load_table(args.table)
    except TableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = collect(table, args.runs_dir)
    out = args.out or os.path.join(ROOT, "results", f"{table.name}.md")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    print(text)
    print(f"[collect] wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
