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
from framework.io import read_steps  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_run(run: str) -> tuple[dict, dict[str, list[float]]]:
    """results.json and the steps.csv columns (step, lr, loss) of a finished run."""
    results_path, steps_path = os.path.join(run, "results.json"), os.path.join(run, "steps.csv")
    for path in (results_path, steps_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: is {run} the --output of a finished train.py run?")
    with open(results_path) as f:
        results = json.load(f)
    return results, read_steps(steps_path, ("step", "lr", "loss"))


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
    if top1 is not None:
        lines.append(f"final top-1 accuracy {top1:.2f}% (top-5 {top5:.2f}%) on the validation set")
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="a train.py --output directory")
    p.add_argument("--png", default=None, help="default: RUN/lr_loss.png")
    args = p.parse_args(argv)
    try:
        results, steps = read_run(args.run)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in summary_lines(results):
        print(line)
    png = args.png or os.path.join(args.run, "lr_loss.png")
    plot(results, steps, png)
    print(f"LR and loss curves: {png}")
    print(f"TensorBoard logs:   {os.path.join(args.run, 'tb')}   (tensorboard --logdir {args.run})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
