"""Summarise one run directory of train.py: where AutoWU switched, at what LR, the final accuracy, and a PNG of the
LR and training-loss curves (``OUTPUT/lr_loss.png``). Used by scripts/main.sh after the demo run.

    python scripts/run_summary.py runs/demo

For many runs of a table (mean over seeds, one panel per batch size) use scripts/plot.py.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import matplotlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from experiments.tables import ResultsError, read_results  # noqa: E402
from framework.io import read_steps  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


class RunError(ValueError):
    """A run directory whose files cannot be summarised (damaged or not train.py's); the message names the file."""


SUMMARY_KEYS = ("status", "epochs", "steps", "wall_time_s")  # what the summary's first line reads from results.json
SWITCH_KEYS = ("step", "epoch", "lr", "t_star")  # the numbers of AutoWU's switch entry the summary and figure use


def read_run(run: str) -> tuple[dict, dict[str, list[float]]]:
    """results.json and the steps.csv columns (step, lr, loss) of a finished run. FileNotFoundError when one is
    missing; :class:`RunError` naming the file when one is damaged (truncated, not JSON, rows that do not parse)."""
    results_path, steps_path = os.path.join(run, "results.json"), os.path.join(run, "steps.csv")
    for path in (results_path, steps_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: is {run} the --output of a finished train.py run?")
    again = (f"run train.py again with --output {run} to resume and rewrite it, or restore the file from a copy "
             "(results/runs/ holds the records of exported runs)")
    try:
        results = read_results(results_path)
    except ResultsError as e:
        raise RunError(f"{e}; {again}") from None
    missing = [k for k in SUMMARY_KEYS if k not in results]
    if missing:
        raise RunError(f"{results_path}: lacks {', '.join(missing)} (not a results.json of train.py?); {again}")
    bad = [f"{k} = {results[k]!r}" for k in SUMMARY_KEYS[1:]
           if not isinstance(results[k], (int, float)) or isinstance(results[k], bool)]
    if bad:
        raise RunError(f"{results_path}: {', '.join(bad)} is not a number (not a results.json of train.py?); {again}")
    config = results.get("config")
    if config is not None and not isinstance(config, dict):
        raise RunError(f"{results_path}: config = {json.dumps(config)[:80]} is not a mapping of the run's settings "
                       f"(not a results.json of train.py?); {again}")
    switch = results.get("switch")
    if switch:
        number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
        bad = ([k for k in SWITCH_KEYS if not number(switch.get(k))] + ([] if isinstance(switch.get("reason"), str)
               else ["reason"])) if isinstance(switch, dict) else ["the whole entry"]
        if bad:
            raise RunError(f"{results_path}: the switch entry lacks a valid {', '.join(bad)} "
                           f"({json.dumps(switch)[:120]}); {again}")
    try:
        steps = read_steps(steps_path, ("step", "lr", "loss"))
    except (ValueError, TypeError, KeyError) as e:  # a cut last row, a missing column, text where a number goes
        raise RunError(f"{steps_path}: cannot be read as train.py's steps.csv (a row or the header is damaged: "
                       f"{type(e).__name__}: {e}); {again}") from None
    return results, steps


def decay_from(switch: dict) -> str:
    """What the LR AutoWU decays from is, by the switch's reason: only a ``gp-test`` switch found a loss minimum."""
    if switch.get("reason") == "max-warmup":
        return (f"decay from lr {switch['lr']:.4g}, the LR at the warmup cap (rho_w x total steps; no loss "
                "minimum was found before it)")
    if switch.get("reason") == "non-finite":
        return (f"decay from lr {switch['lr']:.4g}, the LR at step t* = {switch['t_star']:.0f} estimated from the "
                "finite losses (every loss of the last epoch was non-finite)")
    return (f"decay from lr {switch['lr']:.4g}, the LR of the estimated loss minimum at step "
            f"t* = {switch['t_star']:.0f}")


def summary_lines(results: dict) -> list[str]:
    cfg = results.get("config", {})
    lines = [f"run: {results['status']}, {results['epochs']} epochs, {results['steps']} optimizer steps in "
             f"{results['wall_time_s']:.0f} s on {results.get('hardware', '?')} "
             f"({cfg.get('model', '?')} on {cfg.get('dataset', '?')}, {cfg.get('sched', '?')})"]
    switch = results.get("switch")
    if switch:
        # epochs counted as everywhere on the pages: completed epochs, 1-based (events.jsonl keeps 0-based indices)
        lines.append(f"AutoWU switched at step {switch['step']} (in epoch {switch['epoch'] + 1} of {results['epochs']}, "
                     f"reason {switch['reason']}): {decay_from(switch)}")
    elif str(cfg.get("sched", "")).startswith("autowu"):
        lines.append("AutoWU did not switch")
    top1, top5 = results.get("final_top1"), results.get("final_top5")
    if isinstance(top1, (int, float)):
        top5_text = f"{top5:.2f}%" if isinstance(top5, (int, float)) else "-"
        lines.append(f"final top-1 accuracy {top1:.2f}% (top-5 {top5_text}) on the validation set")
    return lines


def plot(results: dict, steps: dict[str, list[float]], out: str) -> None:
    fig, (ax_lr, ax_loss) = plt.subplots(2, 1, sharex=True, figsize=(7, 5.5))
    ax_lr.plot(steps["step"], steps["lr"], color="C0")
    ax_lr.set_yscale("log")
    ax_lr.set_ylabel("learning rate")
    ax_loss.plot(steps["step"], steps["loss"], color="C1", lw=0.8)
    ax_loss.set_ylabel("training loss")
    ax_loss.set_xlabel("optimizer step")
    switch = results.get("switch")
    if switch:
        for ax in (ax_lr, ax_loss):
            ax.axvline(switch["step"], color="k", ls="--", lw=0.8)
            ax.axvline(switch["t_star"], color="0.5", ls=":", lw=0.8)
        ax_lr.plot([switch["step"]], [switch["lr"]], "ko", ms=4)
        what = {"max-warmup": "the warmup cap's LR, no minimum found",
                "non-finite": "LR at t* from the finite losses"}.get(switch.get("reason"), "LR at the loss minimum t*")
        ax_lr.set_title(f"AutoWU: switch at step {switch['step']} ({switch['reason']}), "
                        f"decay from lr {switch['lr']:.3g} ({what}; t* dotted)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def check_png(png: str, given: bool) -> None:
    """RunError when the figure cannot be written at ``png``: a directory, a folder that does not exist, a format
    matplotlib does not write (named after the file's extension)."""
    what = "--png " if given else ""
    if os.path.isdir(png):
        raise RunError(f"{what}{png} is a directory; give the image file to write (e.g. "
                       f"{os.path.join(png, 'lr_loss.png')})")
    folder = os.path.dirname(os.path.abspath(png))
    if not os.path.isdir(folder):
        raise RunError(f"{what}{png}: the folder {folder} does not exist")
    ext = os.path.splitext(png)[1].lstrip(".").lower()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    formats = FigureCanvasAgg.get_supported_filetypes()
    if ext and ext not in formats:
        raise RunError(f"{what}{png}: matplotlib cannot write .{ext} images; use one of .{', .'.join(sorted(formats))}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="a train.py --output directory")
    p.add_argument("--png", default=None, help="default: RUN/lr_loss.png")
    args = p.parse_args(argv)
    png = args.png or os.path.join(args.run, "lr_loss.png")
    try:
        results, steps = read_run(args.run)
        check_png(png, given=args.png is not None)
    except (FileNotFoundError, RunError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in summary_lines(results):
        print(line)
    try:
        plot(results, steps, png)
    except OSError as e:
        print(f"error: cannot write {png}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"LR and loss curves: {png}")
    print(f"TensorBoard logs:   {os.path.join(args.run, 'tb')}   (tensorboard --logdir {args.run})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
