"""Figure 2-style panels from a table's logged metrics: LR schedule on top, training loss below (optionally the
validation top-1 in a third row), one column per batch size, one line per schedule, the AutoWU switch marked.

    python scripts/plot.py table1                       # results/figures/table1_<block>.png, one per block (Figure 2)
    python scripts/plot.py fashion_mnist --val          # results/figures/fashion_mnist.png with a top-1 row
    python scripts/plot.py table1 --block cifar10_resnet18 --rows baseline autowu-cos autowu-const-cos
    python scripts/plot.py paper_regime --runs-dir results/runs --val   # from the committed records
    python scripts/plot.py paper_regime_grid --runs-dir results/runs   # Figure 5: the grid, AutoWU marked on it
    python scripts/plot.py auto_lr --runs-dir results/runs   # every method's effective LR, paper_regime's beside

With batch sizes as columns, a second figure ``<name>_decay_lr.png`` puts the LR each schedule decays from against
the batch size, with the square-root rule through the smallest batch (the message of the paper's Figure 2).

Lines are the mean over seeds with the standard deviation shaded (as in the paper's Figure 2); the loss is averaged
over bins of consecutive steps so that long runs stay readable. The switch is a dashed vertical line at the epoch
AutoWU left its warmup (a dot at the LR it decayed from), from each run's results.json.

A run with a damaged file (a results.json that is not a JSON object, a steps.csv row or a JSON line before the last
that does not parse) is named in one warning line and left out, a failed run as in collect.py; a last line of
epochs.jsonl / events.jsonl cut by a killed run is skipped with a warning naming the file and the line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from typing import Optional

import numpy as np

from framework.io import read_steps as read_step_columns

from .tables import (ROOT, Block, ResultsError, Run, Table, TableError, check_filters, expand, figure_subject,
                     load_table, read_results)
from .tables import steps_per_epoch as run_steps_per_epoch

MAX_POINTS = 400
_WARNED: set[str] = set()  # warnings already printed by this process: each damaged file is named once


def warn(message: str) -> None:
    """``[plot] warning: message`` on stderr, once per message."""
    if message not in _WARNED:
        _WARNED.add(message)
        print(f"[plot] warning: {message}", file=sys.stderr)


def read_steps(run: Run) -> Optional[dict[str, np.ndarray]]:
    """steps.csv as arrays ``epoch`` (fractional: (step + 1) / steps per epoch), ``lr``, ``loss``; None if absent.
    Reads the run directory, or the committed record (results/runs/, steps.csv decimated) when only that exists;
    steps per epoch come from results.json when it has them."""
    path = os.path.join(os.path.dirname(run.results_path), "steps.csv")
    if not os.path.isfile(path):
        return None
    cols = read_step_columns(path)
    steps, epochs, lrs, losses = cols["step"], cols["epoch"], cols["lr"], cols["loss"]
    if not steps:
        return None
    try:
        result = run.results()
    except ResultsError:
        result = None
    steps_per_epoch = run_steps_per_epoch(result, epochs)
    return {"epoch": (np.asarray(steps) + 1) / steps_per_epoch, "lr": np.asarray(lrs), "loss": np.asarray(losses),
            "steps_per_epoch": steps_per_epoch}


def switch_epoch(switch: dict, steps: dict) -> float:
    """Position of the switch on the epoch axis: after ``switch['step']`` optimizer steps."""
    return float(switch["step"]) / steps["steps_per_epoch"]


def read_json(run: Run, name: str) -> list[dict]:
    """A run's JSON-lines file (epochs.jsonl, events.jsonl) or its results.json as a one-element list; [] if absent.
    :class:`ResultsError` naming the file (and line) when it is damaged (see :func:`read_jsonl`)."""
    path = os.path.join(os.path.dirname(run.results_path), name)
    if not os.path.isfile(path):
        return []
    if name.endswith(".jsonl"):
        return read_jsonl(path)
    result = read_results(path)
    return [result] if result is not None else []


def read_jsonl(path: str) -> list[dict]:
    """The objects of a JSON-lines file. A last line that does not parse is what a run killed while appending
    leaves: it is skipped with a warning naming the file and the line. A bad line before the last one, or a line
    that is not an object, is damage: :class:`ResultsError` naming the file and the line."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise ResultsError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            if i == last:
                warn(f"{path}: line {i + 1} is cut short (the run was stopped while writing it); skipped")
                continue
            raise ResultsError(f"{path}: line {i + 1} is not valid JSON ({e})") from None
        if not isinstance(obj, dict):
            raise ResultsError(f"{path}: line {i + 1} is not a JSON object ({type(obj).__name__})")
        out.append(obj)
    return out


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def bad_entry(name: str, entry: dict) -> Optional[str]:
    """What is wrong with one record the figures draw from (a switch without a numeric step and lr, an epoch's top1
    that is not a number), else None."""
    switch = entry.get("switch") if name == "results.json" else entry if entry.get("type") == "switch" else None
    if name != "epochs.jsonl" and switch is not None and (
            not isinstance(switch, dict) or not (_number(switch.get("step")) and _number(switch.get("lr")))):
        return f"a switch entry without a numeric step and lr ({json.dumps(switch)[:120]})"
    if name == "epochs.jsonl" and entry.get("top1") is not None and not (
            _number(entry.get("top1")) and _number(entry.get("epoch"))):
        return f"an epoch entry whose epoch or top1 is not a number ({json.dumps(entry)[:120]})"
    return None


def damage(run: Run) -> Optional[str]:
    """Why a run's files cannot be drawn (the damaged file named), else None."""
    for name in ("results.json", "events.jsonl", "epochs.jsonl"):
        path = os.path.join(os.path.dirname(run.results_path), name)
        try:
            entries = read_json(run, name)
        except ResultsError as e:
            return str(e)
        except OSError as e:
            return f"{path}: cannot be read ({e.strerror})"
        for entry in entries:
            why = bad_entry(name, entry)
            if why:
                return f"{path}: {why}"
    path = os.path.join(os.path.dirname(run.results_path), "steps.csv")
    if os.path.isfile(path):
        try:
            read_step_columns(path)
        except (ValueError, TypeError, KeyError, OSError) as e:  # a cut row, a missing column, text for a number
            return f"{path}: cannot be read as steps.csv ({type(e).__name__}: {e})"
    return None


def readable(runs: list[Run]) -> list[Run]:
    """The runs whose files can be drawn; a run with a damaged file is named once and counted as failed (left out
    of the figures, as collect.py leaves it out of the cells)."""
    out = []
    for run in runs:
        why = damage(run)
        if why is None:
            out.append(run)
        else:
            warn(f"{why}; counted as a failed run, left out of the figure")
    return out


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
    """Mean and sample std (ddof 1, as the tables; 0 for one seed) over seeds, on the shortest common length (seeds
    of one cell have the same steps)."""
    n = min(len(x) for x, _ in series)
    ys = np.stack([y[:n] for _, y in series])
    std = np.nanstd(ys, 0, ddof=1) if len(series) > 1 else np.zeros(n)
    return series[0][0][:n], np.nanmean(ys, 0), std


def draw_block(table: Table, block: Block, runs: list[Run], rows: list[str], val: bool = False):
    """One block's figure (matplotlib Figure), or None if no run of it has logged steps yet."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = readable(runs)
    nrows = 3 if val else 2
    logged = {c.key for c in block.columns for r in runs if r.column == c.key and r.row in rows
              and os.path.isfile(os.path.join(os.path.dirname(r.results_path), "steps.csv"))}
    columns = [c for c in block.columns if c.key in logged]  # columns with no run yet are left out
    if not columns:
        return None
    fig, axes = plt.subplots(nrows, len(columns), figsize=(max(3.6 * len(columns), 9.0), 2.6 * nrows),
                             squeeze=False, sharex="col")
    colors = {row: f"C{i}" for i, row in enumerate(rows)}
    # identical stretches (AutoWU's warmup is the same for every decay) stay visible as interleaved dashes of
    # colours that are in the legend, not as one blended colour
    widths = {row: max(0.9, 2.2 - 0.4 * i) for i, row in enumerate(rows)}
    styles = {row: ["-", (0, (5, 3)), (0, (1, 2)), (0, (6, 2, 1, 2))][i % 4] for i, row in enumerate(rows)}
    drew = False
    for j, col in enumerate(columns):
        ax_lr, ax_loss = axes[0, j], axes[1, j]
        first_losses: list[float] = []
        loss_values: list[float] = []
        for row in rows:
            cell = [r for r in runs if r.row == row and r.column == col.key]
            logs = [(r, read_steps(r)) for r in cell]
            logs = [(r, s) for r, s in logs if s is not None]
            if not logs:
                continue
            drew = True
            c = colors[row]
            x, m, s = seed_band([binned(st["epoch"], st["lr"], reduce="first") for _, st in logs])
            ax_lr.plot(x, m, color=c, label=row, lw=widths[row], ls=styles[row])
            ax_lr.fill_between(x, m - s, m + s, color=c, alpha=0.2, lw=0)
            x, m, s = seed_band([binned(st["epoch"], st["loss"]) for _, st in logs])
            ax_loss.plot(x, m, color=c, label=row, lw=widths[row], ls=styles[row])
            ax_loss.fill_between(x, m - s, m + s, color=c, alpha=0.2, lw=0)
            first_losses += [v for v in m[:1] if np.isfinite(v)]
            loss_values += [v for v in m if np.isfinite(v)]
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
        # a diverged run or one spike (a loss of 30 where training starts at 2.3) would flatten every other curve:
        # the axis stops at 1.5x the largest starting loss (cross-entropy starts near its largest sensible value)
        cap = 1.5 * max(first_losses, default=np.inf)
        if loss_values and max(loss_values) > cap:
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
    shown = ("learning rate, training loss and val top-1" if val else "learning rate and training loss") + " per epoch"
    title = wrapped([f"{figure_subject(table, block)}: {shown}",
                     "(dashed: AutoWU switch; dot: the LR it decays from; bands: ± sample std over seeds)"], fig)
    fig.suptitle(title, fontsize=9, y=0.995)
    title_in = 0.05 + 0.16 * (title.count("\n") + 1)  # the title's height in inches, the legend's (0.3) below it
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, 1 - title_in / fig.get_figheight()))
    fig.tight_layout()  # margins and spacing; then the top: title, legend and the panels' own titles (0.25 in)
    fig.subplots_adjust(top=1 - (title_in + 0.3 + 0.25) / fig.get_figheight())
    return fig


def draw_decay_start(table: Table, block: Block, runs: list[Run], rows: list[str]):
    """Figure 2's message as one panel: the LR each schedule decays from against the batch size (log-log; AutoWU: its
    η_t*, labelled with the switch epoch; the baseline: its hand-set peak), mean ± std over seeds, with the
    square-root rule drawn through each AutoWU row's smallest-batch point. None if no run decayed yet or the columns
    are not batch sizes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from .collect import decay_start, read_result  # one home for "the LR a run decayed from"

    runs = readable(runs)
    batch = {c.key: c.overrides.get("batch-size") for c in block.columns}
    if not all(isinstance(b, int) for b in batch.values()):
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    drew = False
    for i, row in enumerate(rows):
        xs, ms, ss, eps = [], [], [], []
        for c in block.columns:
            got = []
            for r in runs:
                if r.row == row and r.column == c.key:
                    result = read_result(r)
                    start = decay_start(r, result) if result else None
                    if start:
                        got.append(start)
            if got:
                xs.append(batch[c.key])
                ms.append(float(np.mean([g[0] for g in got])))
                ss.append(float(np.std([g[0] for g in got], ddof=1)) if len(got) > 1 else 0.0)  # sample std
                eps.append(float(np.mean([g[1] for g in got])))
        if not xs:
            continue
        drew = True
        autowu = row.startswith("autowu")
        # later rows smaller, on top: two rows with the same LRs (Schedule-Free keeps the baseline's) both show
        ax.errorbar(xs, ms, yerr=ss, color=f"C{i}", marker="o" if autowu else "s", ms=max(3.0, 9.0 - 0.7 * i),
                    capsize=3, lw=max(0.8, 2.6 - 0.25 * i),
                    label=row + (" (η_t*, label: switch epoch)" if autowu else " (peak LR)"))
        if autowu:
            for x, m, e in zip(xs, ms, eps):
                ax.annotate(f"ep {e:.0f}", (x, m), textcoords="offset points", xytext=(5, 5), fontsize=7,
                            color=f"C{i}")
            grid = np.geomspace(min(batch.values()), max(batch.values()), 50)
            ax.plot(grid, ms[0] * np.sqrt(grid / xs[0]), color=f"C{i}", ls=":", lw=1.0,
                    label=f"√B rule through {row}'s {xs[0]} point")
    if not drew:
        plt.close(fig)
        return None
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sorted(batch.values()), [c.header for c in sorted(block.columns, key=lambda c: batch[c.key])])
    ax.set_xlabel(block.column_header.lower())
    ax.set_ylabel("LR the decay starts from")
    ax.grid(alpha=0.3, lw=0.5, which="both")
    ax.legend(fontsize=7, frameon=False)
    ax.set_title(textwrap.fill(f"The LR each schedule decays from, against the batch size ({table.name}"
                               + (f", {block.label}" if block.name else "") + "): mean ± sample std over seeds", 90),
                 fontsize=7)
    fig.tight_layout()
    return fig


def draw_grid(table: Table, block: Block, runs: list[Run], marks: list[tuple[str, Run]]):
    """Figure 5's layout for a grid table whose columns set ``lr`` and rows ``warmup-epochs``: the metric per cell
    (mean over seeds, colour and text), and each ``(label, run)`` of ``marks`` (AutoWU runs of another table at
    the same batch) drawn at its (η_t*, switch epoch), placed between the grid's values (log LR, warmup epochs).
    None if the table is not such a grid or no cell has finished."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from .collect import decay_start, grid_axes, is_number, read_result

    axes = grid_axes(block)
    if axes is None:
        return None
    runs = readable(runs)
    marks = [(label, run) for label, run in marks if readable([run])]
    lrs, warm = axes
    values = np.full((len(warm), len(lrs)), np.nan)
    counts = np.zeros_like(values, dtype=int)
    for i, row in enumerate(block.rows):
        for j, c in enumerate(block.columns):
            got = [read_result(r) for r in runs if r.row == row and r.column == c.key]
            got = [float(x[table.metric]) for x in got if x and is_number(x.get(table.metric))]
            if got:
                values[i, j], counts[i, j] = float(np.mean(got)), len(got)
    if not counts.any():
        return None
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    im = ax.imshow(values, cmap="viridis", origin="lower", aspect="auto")
    for i in range(len(warm)):
        for j in range(len(lrs)):
            text = f"{values[i, j]:.2f}" if counts[i, j] else "–"
            ax.text(j, i - (0.3 if marks else 0.0), text, ha="center", va="center", fontsize=8,  # below the marks
                    color="w" if counts[i, j] and values[i, j] < np.nanmean(values) else "k")
    ax.set_xticks(range(len(lrs)), [f"{v:g}" for v in lrs])
    ax.set_yticks(range(len(warm)), [f"{v:g}" for v in warm])
    ax.set_xlabel("peak LR η_peak")
    ax.set_ylabel("warmup epochs n_warmup")
    fig.colorbar(im, ax=ax, label=f"{table.metric}")
    shapes = {}  # one marker per row of the marked table, smaller for later rows: runs that share their
    # (η_t*, switch epoch), e.g. AutoWU + cos and + const-cos of one seed, stay visible one inside the other
    for k, (label, run) in enumerate(marks):
        shape = shapes.setdefault(run.row, len(shapes))
        result = read_result(run)
        start = decay_start(run, result) if result else None
        if not start:
            continue
        x = float(np.interp(np.log(start[0]), np.log(lrs), range(len(lrs)), left=np.nan, right=np.nan))
        if not np.isfinite(x):  # outside the grid's LR range: extrapolate on the log scale
            step = np.log(lrs[1] / lrs[0])
            x = (np.log(start[0] / lrs[0]) / step) if start[0] < lrs[0] else len(lrs) - 1 + np.log(start[0] / lrs[-1]) / step
        y = float(np.interp(start[1], warm, range(len(warm))))
        top1 = result.get(table.metric)
        ax.plot([x], [y], marker="*PXD"[shape % 4], ms=14 if shape == 0 else 7, color=f"C{k + 1}", mec="k",
                label=f"{label}: η_t* {start[0]:.3g}, switch ep {start[1]:.0f}"
                      + (f", {top1:.2f}" if is_number(top1) else ""))
    if marks:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.15), frameon=False)
    ax.set_title(textwrap.fill(table.title, 90), fontsize=7)
    fig.tight_layout()
    return fig


def wrapped(lines: list[str], fig) -> str:
    """A title's lines broken to the figure's width (about 14 characters an inch at 9 pt), so none runs off it."""
    width = max(40, int(fig.get_figwidth() * 14))
    return "\n".join(part for line in lines for part in textwrap.wrap(line, width))


def save(fig, out: str) -> None:
    import matplotlib.pyplot as plt
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)


def plot_block(table: Table, block: Block, runs: list[Run], rows: list[str], out: str, val: bool = False) -> bool:
    """Draw one block's panels to the PNG ``out``; returns False (and writes nothing) if no run has logged steps."""
    fig = draw_block(table, block, runs, rows, val)
    if fig is None:
        return False
    save(fig, out)
    return True


def runs_beside(other: Table, block: Block, runs_dir: str, rows: list[str],
                other_rows: Optional[list[str]] = None) -> tuple[list[str], list[Run]]:
    """``other``'s rows ``other_rows`` (default: its figure rows), those not already in ``rows``, and their runs in
    ``block``'s columns (matched by column key, e.g. the batch size) of ``other``'s block of the same name, to be
    drawn with the block's own: the comparison figure of two tables."""
    keys = {c.key for c in block.columns}
    if other_rows is None:
        other_rows = [r for b in other.blocks for r in b.figure_rows]
    new_rows = list(dict.fromkeys(r for r in other_rows if r not in rows))
    same_block = [block.name] if block.name and any(b.name == block.name for b in other.blocks) else None
    runs = [r for r in expand(other, runs_dir, blocks=same_block) if r.row in new_rows and r.column in keys]
    return new_rows, runs


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("table", help="table name (configs/tables/NAME.yaml) or path")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--block", nargs="+", help="only these blocks")
    p.add_argument("--rows", nargs="+", help="schedules to draw (default: the table's figure rows)")
    p.add_argument("--val", action="store_true", help="add a row with the validation top-1 per epoch")
    p.add_argument("--out-dir", default=os.path.join(ROOT, "results", "figures"))
    p.add_argument("--mark", metavar="TABLE",
                   help="grid tables (columns set lr, rows warmup-epochs): mark the AutoWU runs of TABLE at the grid's "
                        "batch size at their (η_t*, switch epoch), as the paper's Figure 5 does (default: the "
                        "table's figure: {mark: TABLE})")
    p.add_argument("--beside", metavar="TABLE",
                   help="draw TABLE's figure rows (runs of the same columns, e.g. AutoWU and the baseline of "
                        "paper_regime) beside the table's own (default: the rows of the table's compare: {rows: "
                        "{table: TABLE, rows: [...]}})")
    args = p.parse_args(argv)
    try:
        table = load_table(args.table)
        check_filters(table, blocks=args.block)
        if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
            raise TableError(f"--out-dir {args.out_dir} is not a directory; give the folder the figures go to")
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
        beside, beside_rows = args.beside, None
        if not beside and (table.compare or {}).get("rows"):
            beside, beside_rows = table.compare["rows"]["table"], table.compare["rows"]["rows"]
        if beside:
            try:
                extra_rows, extra_runs = runs_beside(load_table(beside), block, args.runs_dir, rows, beside_rows)
            except TableError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            rows, runs = rows + extra_rows, runs + extra_runs
        name = f"{table.name}_{block.name}.png" if block.name else f"{table.name}.png"
        out = os.path.join(args.out_dir, name)
        marks: list[tuple[str, Run]] = []
        mark = args.mark or block.figure_mark
        if mark:
            try:
                other = load_table(mark)
            except TableError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            batch = {block.overrides.get("batch-size")}
            marks = [(f"{r.row} s{r.seed}", r) for r in expand(other, args.runs_dir) if r.row.startswith("autowu")
                     and r.overrides.get("batch-size") in batch]
        grid = draw_grid(table, block, runs, marks)
        if grid is not None:
            save(grid, out)
            print(f"[plot] wrote {out}")
            wrote += 1
            continue
        if plot_block(table, block, runs, rows, out, args.val):
            print(f"[plot] wrote {out}")
            wrote += 1
        else:
            print(f"[plot] {table.name} {block.name}: no run has logged steps yet under {args.runs_dir}; skipped")
            continue
        fig = draw_decay_start(table, block, runs, rows)
        if fig is not None:
            out = out[:-len(".png")] + "_decay_lr.png"
            save(fig, out)
            print(f"[plot] wrote {out}")
    return 0 if wrote else 1


if __name__ == "__main__":
    sys.exit(main())
