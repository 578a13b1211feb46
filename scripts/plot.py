"""Figure 2-style panels from a table's logged metrics: LR schedule on top, training loss below (optionally the
validation top-1 in a third row), one column per batch size, one line per schedule, the AutoWU switch marked.

    python scripts/plot.py table1                       # results/figures/table1_<block>.png, one per block (Figure 2)
    python scripts/plot.py fashion_mnist --val          # results/figures/fashion_mnist.png with a top-1 row
    python scripts/plot.py table1 --block cifar10_resnet18 --rows baseline autowu-cos autowu-const-cos

Lines are the mean over seeds with the standard deviation shaded (as in the paper's Figure 2); the loss is averaged
over bins of consecutive steps so that long runs stay readable. The switch is a dashed vertical line at the epoch
AutoWU left its warmup (a dot at the LR it decayed from), from each run's results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from typing import Optional

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sweep import ROOT, Block, Run, Table, TableError, expand, load_table  # noqa: E402
if ROOT not in sys.path:  # framework/ (the one steps.csv reader)
    sys.path.insert(0, ROOT)
from framework.io import read_steps as read_step_columns  # noqa: E402

MAX_POINTS = 400


def read_steps(run: Run) -> Optional[dict[str, np.ndarray]]:
    """steps.csv as arrays ``epoch`` (fractional: (step + 1) / steps per epoch), ``lr``, ``loss``; None if absent."""
    path = os.path.join(ROOT, run.output, "steps.csv")
    if not os.path.isfile(path):
        return None
    cols = read_step_columns(path)
    steps, epochs, lrs, losses = cols["step"], cols["epoch"], cols["lr"], cols["loss"]
    if not steps:
        return None
    steps_per_epoch = max(Counter(epochs).values())
    return {"epoch": (np.asarray(steps) + 1) / steps_per_epoch, "lr": np.asarray(lrs), "loss": np.asarray(losses),
            "steps_per_epoch": steps_per_epoch}


def switch_epoch(switch: dict, steps: dict) -> float:
    """Position of the switch on the epoch axis: after ``switch['step']`` optimizer steps."""
    return float(switch["step"]) / steps["steps_per_epoch"]


def read_json(run: Run, name: str) -> list[dict]:
    """A run's JSON-lines file (epochs.jsonl, events.jsonl) or its results.json as a one-element list."""
    path = os.path.join(ROOT, run.output, name)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        if name.endswith(".jsonl"):
            return [json.loads(line) for line in f if line.strip()]
        return [json.load(f)]


def binned(x: np.ndarray, y: np.ndarray, points: int = MAX_POINTS, reduce: str = "mean") -> tuple[np.ndarray, ...]:
    """Reduce a long series to at most ``points`` values: bin means (loss) or every k-th value (lr)."""
    k = max(1, int(np.ceil(len(x) / points)))
    if k == 1:
        return x, y
    n = len(x) // k * k
    if reduce == "first":
        return x[:n:k], y[:n:k]
    with np.errstate(invalid="ignore"):
        return x[:n].reshape(-1, k).mean(1), np.nanmean(np.where(np.isfinite(y[:n]), y[:n], np.nan).reshape(-1, k), 1)


def seed_band(series: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std over seeds, on the shortest common length (seeds of one cell have the same steps)."""
    n = min(len(x) for x, _ in series)
    ys = np.stack([y[:n] for _, y in series])
    return series[0][0][:n], np.nanmean(ys, 0), np.nanstd(ys, 0)


def draw_block(table: Table, block: Block, runs: list[Run], rows: list[str], val: bool = False):
    """One block's figure (matplotlib Figure), or None if no run of it has logged steps yet."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nrows = 3 if val else 2
    logged = {c.key for c in block.columns for r in runs
              if r.column == c.key and r.row in rows and os.path.isfile(os.path.join(ROOT, r.output, "steps.csv"))}
    columns = [c for c in block.columns if c.key in logged]  # columns with no run yet are left out
    if not columns:
        return None
    fig, axes = plt.subplots(nrows, len(columns), figsize=(max(3.6 * len(columns), 9.0), 2.6 * nrows),
                             squeeze=False, sharex="col")
    colors = {row: f"C{i}" for i, row in enumerate(rows)}
    widths = {row: max(0.8, 2.4 - 0.5 * i) for i, row in enumerate(rows)}  # identical curves stay visible
    drew = False
    for j, col in enumerate(columns):
        ax_lr, ax_loss = axes[0, j], axes[1, j]
        first_losses = []
        for row in rows:
            cell = [r for r in runs if r.row == row and r.column == col.key]
            logs = [(r, read_steps(r)) for r in cell]
            logs = [(r, s) for r, s in logs if s is not None]
            if not logs:
                continue
            drew = True
            c = colors[row]
            x, m, s = seed_band([binned(st["epoch"], st["lr"], reduce="first") for _, st in logs])
            ax_lr.plot(x, m, color=c, label=row, lw=widths[row])
            ax_lr.fill_between(x, m - s, m + s, color=c, alpha=0.2, lw=0)
            x, m, s = seed_band([binned(st["epoch"], st["loss"]) for _, st in logs])
            ax_loss.plot(x, m, color=c, label=row, lw=widths[row])
            ax_loss.fill_between(x, m - s, m + s, color=c, alpha=0.2, lw=0)
            first_losses += [v for v in m[:1] if np.isfinite(v)]
            for r, _ in logs:
                result = read_json(r, "results.json")
                switch = result[0].get("switch") if result else None
                if switch is None:  # an unfinished run: its switch is in events.jsonl
                    switch = next((e for e in read_json(r, "events.jsonl") if e.get("type") == "switch"), None)
                if switch:
                    ep = switch_epoch(switch, logs[0][1])
                    for ax in axes[:, j]:
                        ax.axvline(ep, color=c, ls="--", lw=0.8, alpha=0.7)
                    ax_lr.plot([ep], [switch["lr"]], "o", color=c, ms=4)
            if val:
                curves = []
                for r, _ in logs:
                    recs = [e for e in read_json(r, "epochs.jsonl") if e.get("top1") is not None]
                    if recs:
                        curves.append((np.array([e["epoch"] + 1 for e in recs], float),
                                       np.array([e["top1"] for e in recs], float)))
                if curves:
                    x, m, s = seed_band(curves)
                    axes[2, j].plot(x, m, color=c, label=row, lw=1.0, marker=".", ms=3)
                    axes[2, j].fill_between(x, m - s, m + s, color=c, alpha=0.2, lw=0)
        cap = 3 * max(first_losses, default=np.inf)  # a diverged run would flatten every other curve
        if ax_loss.get_ylim()[1] > cap:
            ax_loss.set_ylim(0, cap)  # training losses (cross-entropy) are non-negative
            ax_loss.text(0.98, 0.95, "diverging losses clipped", transform=ax_loss.transAxes, ha="right",
                         va="top", fontsize=7, color="0.4")
        ax_lr.set_yscale("log")
        ax_lr.set_title(f"{block.column_header} {col.header}", fontsize=10)
        axes[-1, j].set_xlabel("epoch")
        for ax in axes[:, j]:
            ax.grid(alpha=0.3, lw=0.5)
    if not drew:
        plt.close(fig)
        return None
    axes[0, 0].set_ylabel("learning rate")
    axes[1, 0].set_ylabel("training loss")
    if val:
        axes[2, 0].set_ylabel("val top-1 (%)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    for ax in axes[0]:
        h, l = ax.get_legend_handles_labels()
        if len(h) > len(handles):
            handles, labels = h, l
    title = table.title + (f" — {block.label}" if block.name else "")
    fig.suptitle(title + "\n(dashed: AutoWU switch; dot: the LR it decays from)", fontsize=9, y=0.995)
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, 0.93))
    fig.tight_layout(rect=(0, 0, 1, 0.88))
    return fig


def plot_block(table: Table, block: Block, runs: list[Run], rows: list[str], out: str, val: bool = False) -> bool:
    """Draw one block's panels to the PNG ``out``; returns False (and writes nothing) if no run has logged steps."""
    import matplotlib.pyplot as plt
    fig = draw_block(table, block, runs, rows, val)
    if fig is None:
        return False
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return True


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("table", help="table name (configs/tables/NAME.yaml) or path")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--block", nargs="+", help="only these blocks")
    p.add_argument("--rows", nargs="+", help="schedules to draw (default: the table's figure rows)")
    p.add_argument("--val", action="store_true", help="add a row with the validation top-1 per epoch")
    p.add_argument("--out-dir", default=os.path.join(ROOT, "results", "figures"))
    args = p.parse_args(argv)
    try:
        table = load_table(args.table)
    except TableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    wrote = 0
    for block in table.blocks:
        if args.block and block.name not in args.block:
            continue
        rows = args.rows or block.figure_rows
        unknown = [r for r in rows if r not in block.rows]
        if unknown:
            print(f"error: rows {unknown} are not in {table.name} {block.name}: {list(block.rows)}", file=sys.stderr)
            return 2
        runs = expand(table, args.runs_dir, blocks=[block.name])
        name = f"{table.name}_{block.name}.png" if block.name else f"{table.name}.png"
        out = os.path.join(args.out_dir, name)
        if plot_block(table, block, runs, rows, out, args.val):
            print(f"[plot] wrote {out}")
            wrote += 1
        else:
            print(f"[plot] {table.name} {block.name}: no run has logged steps yet under {args.runs_dir}; skipped")
    return 0 if wrote else 1


if __name__ == "__main__":
    sys.exit(main())
