#!/usr/bin/env python
"""Choose AutoWU's GP-test cadence by measurement (beyond the paper; results/cadence.md).

    python scripts/cadence_study.py                       # all curves -> results/cadence/summary.json + the figure
    python scripts/cadence_study.py --reps 2 --patience 3  # a quick look
    python scripts/cadence_study.py --import-recorded /work/runs/cadence/record   # copy recorded warmups first

The real ``autowu.AutoWU`` (its GP test, cadence and patience rule) is fed loss curves step by step. A grid setting is
``patience x max_overshoot`` (the cadence ``test_every`` is the largest ``k`` with ``gamma^(patience*k) <=
max_overshoot``; ``paper`` = one test per epoch). Each curve is run once per cadence with a patience that never
completes, which records every test's pass/fail and t*; AutoWU with patience ``p`` switches at the first run of ``p``
passes in that sequence (nothing before the switch depends on ``p``; one direct run per study checks it). Curves:

* **still decreasing** (the minimum is not reached within the curve): synthetic long noisy curves (a slow quadratic
  approach to a minimum beyond the end, and an exponential plateau), and the recorded Fashion-MNIST warmups cut where
  the LR is 3x below the LR of their minimum. Any switch is a false switch.
* **U-shaped**: synthetic (minimum at 60 % / 75 % of the warmup, slow / fast rise after it) and the recorded warmups
  in full. Reported: switches before the minimum (false), the overshoot at the switch (the LR when the switch happens
  over the LR at the true minimum: ``gamma^(switch step - true argmin)``, the damage Appendix D describes) and the
  error of the LR the decay starts from (``eta_t* / LR at the true minimum``).

Recorded warmups (``results/cadence/warmups/*.csv``: step, lr, loss) come from short real ``train.py`` runs: a full
exponential warmup that never switches (commands in results/cadence.md). Their true minimum is the argmin of the loss
smoothed by a centred moving average over one epoch (at least 3 steps). Synthetic curves use the same ``gamma`` as the
32-epoch table at batch 1K (256 warmup steps, 16 steps per epoch).
"""
from __future__ import annotations

import os
import argparse
import csv
import glob
import json
import math
import multiprocessing
import re
import sys
import time
import warnings
import zlib
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from autowu import AutoWU

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WARMUPS_DIR = os.path.join(ROOT, "results", "cadence", "warmups")
EPOCHS, RHO_W = 32, 0.5  # the 32-epoch table: W = 16 epochs of warmup
PAPER = "paper"


@dataclass
class Curve:
    name: str
    kind: str                # "decreasing" or "u"
    source: str              # "synthetic" or "recorded"
    losses: np.ndarray       # L_0 .. L_{n-1} of the warmup (NaN where non-finite)
    steps_per_epoch: int
    warmup_steps: int        # W: the LR is eta_min * gamma^t with gamma = 1e5^(1/W)
    t_min: Optional[float]   # the true argmin (U-shaped curves)


# -- curves ---------------------------------------------------------------------------------------------------------
def synthetic_curves(reps: int, warmup_steps: int = 256, steps_per_epoch: int = 16) -> list[Curve]:
    """Losses over x = t / W (log-LR is linear in x): start 2.3, minimum 0.5, Gaussian noise sigma per step."""
    x = np.arange(warmup_steps) / warmup_steps
    top, bottom = 2.3, 0.5
    out = []
    for sigma in (0.03, 0.1):
        shapes = {}
        for x_star in (0.6, 0.75):  # U: convex descent to the minimum, then a rise of `top - bottom` over `width`
            for rise, width in (("slow", 0.25), ("fast", 0.05)):
                down = bottom + (top - bottom) * np.clip((x_star - x) / x_star, 0, None) ** 2
                up = (top - bottom) * (np.clip(x - x_star, 0, None) / width) ** 2
                shapes[f"u_min{x_star:g}_{rise}"] = ("u", down + up, x_star * warmup_steps)
        # still decreasing: a quadratic approach to a minimum at x = 1.25, and an exponential plateau
        quad = bottom + (top - bottom) * ((1.25 - x) / 1.25) ** 2
        shapes["dec_quad"] = ("decreasing", quad, None)
        shapes["dec_plateau"] = ("decreasing", bottom + (top - bottom) * np.exp(-x / 0.15), None)
        # a transient loss spike that recovers (half an epoch / one and a half epochs wide, a third of the depth
        # high), and noise correlated over steps (AR(1), phi 0.95): what many tests in a row can mistake for a rise
        for width in (8, 24):
            t = np.arange(warmup_steps) - 0.55 * warmup_steps
            bump = 0.6 * np.where(np.abs(t) < width / 2, 0.5 + 0.5 * np.cos(2 * np.pi * t / width), 0.0)
            shapes[f"dec_spike{width}"] = ("decreasing", quad + bump, None)
        shapes["dec_ar"] = ("decreasing", quad, "ar")
        for name, (kind, mean, t_min) in shapes.items():
            for rep in range(reps):
                rng = np.random.default_rng([rep, int(sigma * 1000), zlib.crc32(name.encode())])
                noise = rng.standard_normal(warmup_steps)
                if t_min == "ar":
                    t_min, noise = None, _ar1(noise, 0.95)
                out.append(Curve(f"{name}_s{sigma:g}_r{rep}", kind, "synthetic", mean + sigma * noise,
                                 steps_per_epoch, warmup_steps, t_min))
    return out


def _ar1(white: np.ndarray, phi: float) -> np.ndarray:
    """AR(1) noise with unit marginal variance from white noise."""
    out = np.empty_like(white)
    out[0] = white[0]
    for i in range(1, white.size):
        out[i] = phi * out[i - 1] + math.sqrt(1 - phi * phi) * white[i]
    return out


def read_warmup(path: str) -> tuple[np.ndarray, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    lr = np.array([float(r["lr"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    loss[~np.isfinite(loss)] = np.nan
    return lr, loss


def recorded_curves(directory: str = WARMUPS_DIR) -> list[Curve]:
    """Each finished recorded warmup in full (U-shaped) and cut where the LR is 3x below its minimum's (still
    decreasing); a recording still in progress only as a still-decreasing prefix (cut the same way if its minimum
    is already behind it)."""
    out = []
    for path in sorted(glob.glob(os.path.join(directory, "*.csv"))):
        name = os.path.splitext(os.path.basename(path))[0]
        lr, loss = read_warmup(path)
        with open(path.replace(".csv", ".json")) as f:
            meta = json.load(f)
        spe, warmup = int(meta["steps_per_epoch"]), int(meta["warmup_steps"])
        gamma = 1e5 ** (1.0 / warmup)
        t_min = float(true_argmin(loss, spe))
        if meta.get("finished", True):
            out.append(Curve(name, "u", "recorded", loss, spe, warmup, t_min))
        elif t_min >= loss.size - spe:  # no minimum behind it yet: all of it is still decreasing
            out.append(Curve(f"{name}_prefix{loss.size}", "decreasing", "recorded", loss, spe, warmup, None))
            continue
        cut = int(t_min - math.log(3.0) / math.log(gamma))
        if cut >= 8:
            out.append(Curve(f"{name}_cut{cut}", "decreasing", "recorded", loss[:cut], spe, warmup, None))
    return out


def true_argmin(loss: np.ndarray, steps_per_epoch: int) -> int:
    """Argmin of the loss smoothed by a centred moving average over one epoch (>= 3 steps; NaN = +inf)."""
    w = max(3, steps_per_epoch)
    y = np.where(np.isfinite(loss), loss, np.inf)
    smooth = np.array([np.mean(y[max(0, i - w // 2):i + w // 2 + 1]) for i in range(y.size)])
    return int(np.argmin(smooth))


# -- simulated warmups ---------------------------------------------------------------------------------------------
NEVER = 10**9  # patience that never completes: the pass/fail sequence, from which every patience is read off


def build(curve: Curve, test_every: int, patience: int, confidence: float, seed: int) -> AutoWU:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    epochs = 2 * curve.warmup_steps // curve.steps_per_epoch
    sched = AutoWU(opt, curve.steps_per_epoch, epochs, rho_w=RHO_W, patience=patience, confidence=confidence,
                   seed=seed, test_every=test_every)
    assert sched.warmup_steps == curve.warmup_steps, (curve.name, sched.warmup_steps)
    return sched


def feed(curve: Curve, sched: AutoWU) -> None:
    """The curve's losses, step by step, until AutoWU leaves its warmup (a U curve that ended early: NaN after)."""
    n = curve.warmup_steps if curve.kind == "u" else curve.losses.size
    for t in range(n):
        sched.step(float(curve.losses[t]) if t < curve.losses.size else math.nan)
        if sched.phase != "warmup":
            return


def cadence(curve: Curve, patience: int, overshoot) -> int:
    """``test_every`` for a grid setting, as AutoWU computes it (``paper``: one test per epoch)."""
    if overshoot == PAPER:
        return curve.steps_per_epoch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_overshoot below gamma^patience: every step
        return build_probe(curve, patience, float(overshoot)).test_every


def build_probe(curve: Curve, patience: int, overshoot: float) -> AutoWU:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return AutoWU(opt, curve.steps_per_epoch, 2 * curve.warmup_steps // curve.steps_per_epoch, rho_w=RHO_W,
                  patience=patience, max_overshoot=overshoot)


def pass_sequence(curve: Curve, test_every: int, confidence: float, seed: int) -> dict:
    """AutoWU with a patience that never completes: every test's step, pass/fail and t*, and the forced switch."""
    sched = build(curve, test_every, NEVER, confidence, seed)
    t0 = time.perf_counter()
    feed(curve, sched)
    tests = [(h["step"], bool(h["passed"]), h["t_star"]) for h in sched.history if h["type"] == "test"]
    forced = sched.switch and {"step": sched.switch["step"], "t_star": sched.switch["t_star"],
                               "reason": sched.switch["reason"]}
    return {"curve": curve.name, "test_every": test_every, "confidence": confidence, "seed": seed, "tests": tests,
            "forced": forced, "gamma": sched.gamma, "seconds": time.perf_counter() - t0}


def _pass_sequence(job):
    return pass_sequence(*job)


def switch_for(seq: dict, patience: int) -> Optional[dict]:
    """Where AutoWU with ``patience`` switches on this pass sequence: the p-th consecutive pass, else the forced
    switch (max-warmup, non-finite) the sequence ended with, else None (no switch within the curve)."""
    run = 0
    for step, passed, t_star in seq["tests"]:
        run = run + 1 if passed else 0
        if run >= patience:
            return {"step": step, "t_star": t_star, "reason": "gp-test"}
    return seq["forced"] or None


def outcome(curve: Curve, seq: dict, patience: int, overshoot) -> dict:
    sw = switch_for(seq, patience)
    tests = sum(1 for step, _, _ in seq["tests"] if sw is None or step <= sw["step"])
    out = {"curve": curve.name, "kind": curve.kind, "source": curve.source, "patience": patience,
           "overshoot": overshoot, "confidence": seq["confidence"], "seed": seq["seed"],
           "test_every": seq["test_every"], "tests": tests, "switch": sw}
    if sw is not None and curve.t_min is not None:
        log_gamma = math.log(seq["gamma"])
        out["overshoot_at_switch"] = math.exp(log_gamma * (sw["step"] - curve.t_min))
        out["lr_error"] = math.exp(log_gamma * (sw["t_star"] - curve.t_min))
    return out


def check_equivalence(curve: Curve, seq: dict, patience: int) -> None:
    """Reading a patience off the pass sequence is exactly what AutoWU with that patience does (one direct run)."""
    sched = build(curve, seq["test_every"], patience, seq["confidence"], seq["seed"])
    feed(curve, sched)
    direct = sched.switch and {k: sched.switch[k] for k in ("step", "t_star", "reason")}
    assert direct == switch_for(seq, patience), (curve.name, direct, switch_for(seq, patience))


# -- aggregation, choice, figure --------------------------------------------------------------------------------------
def summarize(records: list[dict]) -> list[dict]:
    """Per (patience, overshoot, confidence, source): false-switch rate, overshoot at the switch, LR error, tests."""
    groups: dict = {}
    for r in records:
        groups.setdefault((r["patience"], str(r["overshoot"]), r["confidence"], r["source"]), []).append(r)
    rows = []
    for (p, m, c, source), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], _order(kv[0][1]), kv[0][2:])):
        dec = [r for r in rs if r["kind"] == "decreasing"]
        u = [r for r in rs if r["kind"] == "u"]
        false_dec = [r["switch"] is not None and r["switch"]["reason"] == "gp-test" for r in dec]
        early = [r["switch"] is not None and r["overshoot_at_switch"] < 1.0 for r in u]
        detected = [r for r in u if r["switch"] is not None and r["switch"]["reason"] == "gp-test"
                    and r["overshoot_at_switch"] >= 1.0]
        over = np.array([r["overshoot_at_switch"] for r in u if r["switch"] is not None])
        err = np.array([abs(math.log10(r["lr_error"])) for r in u if r["switch"] is not None])
        rows.append({
            "patience": p, "max_overshoot": m, "confidence": c, "source": source,
            "test_every": sorted({r["test_every"] for r in rs}),
            "n_decreasing": len(dec), "false_switch_decreasing": float(np.mean(false_dec)) if dec else None,
            "n_u": len(u), "early_switch_u": float(np.mean(early)) if u else None,
            "false_switch": float(np.mean(false_dec + early)) if dec or u else None,
            "detected_by_test_u": len(detected) / len(u) if u else None,
            "overshoot_median": float(np.median(over)) if over.size else None,
            "overshoot_p90": float(np.quantile(over, 0.9)) if over.size else None,
            "lr_error_log10_median": float(np.median(err)) if err.size else None,
            "tests_per_run": float(np.mean([r["tests"] for r in rs])),
        })
    return rows


def _key(q: dict) -> tuple:
    return q["curve"], q["test_every"], q["confidence"], q["seed"]


def _order(m: str) -> float:
    return math.inf if m == PAPER else float(m)


def choose(rows: list[dict], tolerance: float = 0.02) -> Optional[dict]:
    """Lowest median overshoot (pooled over sources) among settings whose false-switch rate, on synthetic and on
    recorded curves each, is at most the paper's setting's (patience 3, one test per epoch) + ``tolerance``."""
    by = {}
    for r in rows:
        by.setdefault((r["patience"], r["max_overshoot"], r["confidence"]), {})[r["source"]] = r
    ref = by.get((3, PAPER, 0.95))
    if ref is None:
        return None
    ok = []
    for key, srcs in by.items():
        if all(s in srcs and srcs[s]["false_switch"] is not None and ref[s]["false_switch"] is not None
               and srcs[s]["false_switch"] <= ref[s]["false_switch"] + tolerance for s in ref):
            over = [srcs[s]["overshoot_median"] for s in srcs if srcs[s]["overshoot_median"] is not None]
            ok.append((float(np.exp(np.mean(np.log(over)))), key))
    if not ok:
        return None
    score, (p, m, c) = min(ok)
    return {"patience": p, "max_overshoot": m, "confidence": c, "overshoot_geomean": score,
            "rule": f"lowest median overshoot with false switches <= the paper's + {tolerance:g}"}


def markdown(rows: list[dict]) -> str:
    """The summary as a markdown table, one row per setting (results/cadence.md embeds it)."""
    by: dict = {}
    for r in rows:
        by.setdefault((r["patience"], r["max_overshoot"], r["confidence"]), {})[r["source"]] = r
    sources = sorted({r["source"] for r in rows}, reverse=True)  # synthetic first
    head = ["patience", "max_overshoot", "confidence"]
    for src in sources:
        head += [f"test_every ({src})", f"false switches ({src})"]
    head += ["U curves switched by the test", "overshoot at switch: median (p90)", "abs log10 LR error (median)"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (p, m, c), srcs in sorted(by.items(), key=lambda kv: (kv[0][0], _order(kv[0][1]), kv[0][2])):
        cells = [str(p), m, f"{c:g}"]
        for src in sources:
            r = srcs.get(src)
            fs = "-" if r is None or r["false_switch"] is None else \
                f"{round(r['false_switch'] * (r['n_decreasing'] + r['n_u']))}/{r['n_decreasing'] + r['n_u']}"
            cells += ["-" if r is None else ", ".join(map(str, r["test_every"])), fs]
        u = [r for r in srcs.values() if r["overshoot_median"] is not None]
        u = u[0] if u else None
        cells += ["-" if u is None else f"{100 * u['detected_by_test_u']:.0f} % of {u['n_u']} ({u['source']})",
                  "-" if u is None else f"{u['overshoot_median']:.2f} ({u['overshoot_p90']:.2f})",
                  "-" if u is None else f"{u['lr_error_log10_median']:.2f}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def plot(rows: list[dict], path: str, choice: Optional[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    ms = sorted({r["max_overshoot"] for r in rows}, key=_order)
    xs = {m: i for i, m in enumerate(ms)}
    colors = {2: "tab:orange", 3: "tab:blue", 4: "tab:purple", 5: "tab:green", 8: "tab:red"}
    panels = (("false_switch", "false switches (share of runs)", False),
              ("overshoot_median", "LR at switch / LR at true min (median)", True),
              ("lr_error_log10_median", "|log10(eta_t* / LR at true min)| (median)", False))
    for ax, (key, label, logy) in zip(axes, panels):
        for (p, c, source) in sorted({(r["patience"], r["confidence"], r["source"]) for r in rows}):
            sel = sorted((r for r in rows if (r["patience"], r["confidence"], r["source"]) == (p, c, source)
                          and r[key] is not None), key=lambda r: _order(r["max_overshoot"]))
            if not sel:
                continue
            ax.plot([xs[r["max_overshoot"]] for r in sel], [r[key] for r in sel],
                    marker="o" if source == "synthetic" else "s", ls="-" if source == "synthetic" else "--",
                    color=colors.get(p, "k"), alpha=1.0 if c == 0.95 else 0.5,
                    label=f"p={p}{'' if c == 0.95 else f' c={c}'} {source}")
        if choice is not None and key == "overshoot_median":
            ax.axvline(xs[choice["max_overshoot"]], color="gray", lw=0.8, ls=":")
        ax.set_xticks(range(len(ms)), [m if m == PAPER else f"{float(m):g}" for m in ms])
        ax.set_xlabel("max_overshoot (paper: one test per epoch)")
        ax.set_ylabel(label)
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    title = ("AutoWU test cadence (test_every = largest k with gamma^(patience k) <= max_overshoot): false switches vs "
             "overshoot\nsynthetic curves: solid; recorded Fashion-MNIST warmups: dashed")
    if choice:
        title += f"\nrecommended: patience {choice['patience']}, max_overshoot {choice['max_overshoot']}"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)


# -- recorded warmups: import from run directories -------------------------------------------------------------------
RECORD_ARGS = ("train_subset", "batch_size", "autowu_rho_w", "epochs", "opt", "model", "dataset", "seed")


def recorded_args(run_root: str) -> dict[str, dict]:
    """``{steps.csv path: the run's args.yaml}`` of every ``RUN_ROOT/*/steps.csv``, all read before anything is
    copied. ValueError naming the folder or the file when there is no run, or an args.yaml is missing, damaged or
    lacks a setting the import needs."""
    import yaml
    if not os.path.isdir(run_root):
        raise ValueError(f"--import-recorded {run_root}: not a folder of run directories")
    found = {}
    for run in sorted(glob.glob(os.path.join(run_root, "*", "steps.csv"))):
        path = os.path.join(os.path.dirname(run), "args.yaml")
        try:
            with open(path) as f:
                args = yaml.safe_load(f)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            why = e.strerror if isinstance(e, OSError) else f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
            raise ValueError(f"{path}: cannot be read ({why}); every recorded run needs the args.yaml train.py "
                             "wrote") from None
        args = {str(k).replace("-", "_"): v for k, v in args.items()} if isinstance(args, dict) else {}
        missing = [k for k in RECORD_ARGS if args.get(k) is None]
        if missing:
            raise ValueError(f"{path}: lacks {', '.join(missing)} (not a recording run's args.yaml of train.py?)")
        found[run] = args
    if not found:
        raise ValueError(f"--import-recorded {run_root}: no RUN/steps.csv in it (give the folder that holds the "
                         "recording runs' directories)")
    return found


def import_recorded(run_root: str, out_dir: str = WARMUPS_DIR) -> None:
    """Copy the warmup part of each run's steps.csv (step, lr, loss) with its batch/optimizer/schedule facts."""
    runs = recorded_args(run_root)  # every run checked before a file is copied
    os.makedirs(out_dir, exist_ok=True)
    for run, args in runs.items():
        rundir = os.path.dirname(run)
        name = os.path.basename(rundir)
        with open(run, newline="") as f:
            rows = list(csv.DictReader(f))
        spe = args["train_subset"] // args["batch_size"]  # drop_last batches of a fixed training subset
        warmup = int(math.floor(args["autowu_rho_w"] * spe * args["epochs"]))
        rows = [r for r in rows if int(r["step"]) < warmup]
        if len(rows) < 2 * spe:
            print(f"{name}: {len(rows)} steps logged, fewer than two epochs: skipped")
            continue
        with open(os.path.join(out_dir, f"{name}.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(("step", "lr", "loss"))
            for r in rows:
                w.writerow((r["step"], f"{float(r['lr']):.6g}", f"{float(r['loss']):.5g}"))
        # the run's full settings beside the curve: its command stays reproducible even when the recording was
        # resumed (env.json then holds the resume's command line, not the settings)
        # with the output the command below names, not the recording machine's folder
        output = f"runs/cadence_record/{name}"
        with open(os.path.join(rundir, "args.yaml")) as f:
            text = f.read()
        text = re.sub(r"(?m)^output: .*$", lambda _: f"output: {output}", text)
        with open(os.path.join(out_dir, f"{name}.args.yaml"), "w") as f:
            f.write(text)
        rel = os.path.relpath(os.path.join(out_dir, f"{name}.args.yaml"), ROOT)
        meta = {"finished": os.path.isfile(os.path.join(rundir, "results.json")), "batch_size": args["batch_size"],
                "opt": args["opt"], "model": args["model"], "dataset": args["dataset"],
                "train_subset": args["train_subset"], "seed": args["seed"], "steps_per_epoch": spe,
                "warmup_steps": warmup, "recorded_steps": len(rows),
                "command": f"python train.py --config {rel} --output {output}"}
        with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
            json.dump(meta, f, indent=1)
        print(f"{name}: {len(rows)} of {warmup} warmup steps, {spe} steps/epoch, finished: {meta['finished']}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=5, help="noise draws per synthetic curve shape and noise level")
    p.add_argument("--seeds", type=int, default=3, help="AutoWU seeds (its subsampling) per recorded curve")
    p.add_argument("--patience", type=int, nargs="+", default=[2, 3, 4, 5])
    p.add_argument("--max-overshoot", nargs="+", default=["1.5", "2", "3", "5", PAPER])
    p.add_argument("--confidence", type=float, nargs="+", default=[0.95])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--no-recorded", action="store_true")
    p.add_argument("--import-recorded", metavar="RUN_ROOT", help="first copy RUN_ROOT/*/steps.csv into the fixtures")
    p.add_argument("--cache", metavar="JSON", help="pass sequences: reuse those in this file, simulate only the "
                   "missing ones (new curves, cadences), write them all back")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "cadence", "summary.json"))
    p.add_argument("--figure", default=os.path.join(ROOT, "results", "figures", "cadence_tradeoff.png"))
    args = p.parse_args()
    for m in args.max_overshoot:
        if m != PAPER and not (_is_float(m) and float(m) > 1):
            print(f"error: --max-overshoot {m!r}: give numbers > 1 or '{PAPER}'", file=sys.stderr)
            return 2
    problem = check_args(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    done = {}
    if args.cache and os.path.isfile(args.cache):
        try:
            with open(args.cache) as f:
                done = {_key(q): q for q in json.load(f)}
        except (ValueError, KeyError, TypeError) as e:  # not JSON, not a list of pass sequences
            print(f"error: --cache {args.cache}: not a cache this study wrote ({type(e).__name__}: {str(e)[:100]}); "
                  "move it away or give another --cache", file=sys.stderr)
            return 2
    if args.import_recorded:
        try:
            import_recorded(args.import_recorded)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    curves = synthetic_curves(args.reps) + ([] if args.no_recorded else recorded_curves())
    if not curves:
        print(f"error: no loss curve to study: --reps {args.reps} synthetic draws"
              + (" and --no-recorded" if args.no_recorded else f" and no recorded warmup in {WARMUPS_DIR}")
              + "; give --reps >= 1", file=sys.stderr)
        return 2
    by_name = {c.name: c for c in curves}
    needed = {}  # (curve, test_every, confidence, seed) -> the grid settings it serves
    for curve in curves:
        seeds = range(args.seeds) if curve.source == "recorded" else [0]
        for pat in args.patience:
            for m in args.max_overshoot:
                k = cadence(curve, pat, m)
                for c in args.confidence:
                    for sd in seeds:
                        needed.setdefault((curve.name, k, c, sd), []).append((pat, m))
    todo = [(by_name[n], k, c, sd) for (n, k, c, sd) in needed if (n, k, c, sd) not in done]
    print(f"{len(curves)} curves ({sum(c.source == 'recorded' for c in curves)} recorded), {len(needed)} pass "
          f"sequences ({len(needed) - len(todo)} reused), {sum(map(len, needed.values()))} settings x curves")
    t0 = time.perf_counter()
    if args.workers > 1:
        with multiprocessing.Pool(args.workers) as pool:
            new = pool.map(_pass_sequence, todo, chunksize=1)
    else:
        new = [_pass_sequence(j) for j in todo]
    seqs = {**{k: q for k, q in done.items() if k in needed}, **{_key(q): q for q in new}}
    first = next(iter(needed))
    check_equivalence(by_name[first[0]], seqs[first], 3)
    records = [outcome(by_name[n], seqs[(n, k, c, sd)], pat, m)
               for (n, k, c, sd), settings in needed.items() for pat, m in settings]
    rows = summarize(records)
    choice = choose(rows)
    secs = sum(q["seconds"] for q in seqs.values()) / max(1, sum(len(q["tests"]) for q in seqs.values()))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"command": "python scripts/cadence_study.py " + " ".join(sys.argv[1:]), "summary": rows,
                   "choice": choice, "curves": [{"name": c.name, "kind": c.kind, "source": c.source,
                                                 "steps": int(c.losses.size), "t_min": c.t_min} for c in curves],
                   "seconds_per_test_incl_steps": secs, "wall_s": time.perf_counter() - t0}, f, indent=1)
    if args.cache:
        with open(args.cache, "w") as f:
            json.dump(list(seqs.values()), f)
    plot(rows, args.figure, choice)
    print(f"{'p':>2} {'max_ov':>6} {'c':>5} {'source':>9} {'k':>10} {'false':>6} {'early':>6} {'detect':>6} "
          f"{'over_med':>8} {'over_p90':>8} {'lrerr':>6} {'tests':>6}")
    for r in rows:
        print(f"{r['patience']:>2} {r['max_overshoot']:>6} {r['confidence']:>5} {r['source']:>9} "
              f"{','.join(map(str, r['test_every'])):>10} {_f(r['false_switch'])} {_f(r['early_switch_u'])} "
              f"{_f(r['detected_by_test_u'])} {_f(r['overshoot_median'], 8)} {_f(r['overshoot_p90'], 8)} "
              f"{_f(r['lr_error_log10_median'])} {r['tests_per_run']:6.1f}")
    print(markdown(rows))
    print(f"choice: {choice}")
    print(f"wrote {args.out} and {args.figure} in {time.perf_counter() - t0:.0f} s")
    return 0


def check_args(args: argparse.Namespace) -> Optional[str]:
    """What is wrong with the study's settings (one line naming the option), or None; before anything runs."""
    for name, least in (("reps", 0), ("seeds", 1), ("workers", 1)):
        if getattr(args, name) < least:
            return f"--{name} must be >= {least}, got {getattr(args, name)}"
    bad = [p for p in args.patience if p < 1]
    if bad:
        return f"--patience must be >= 1 (passing tests in a row before the switch), got {bad[0]}"
    bad = [c for c in args.confidence if not 0 < c < 1]
    if bad:
        return f"--confidence must be in (0, 1), got {bad[0]:g}"
    for flag, path in (("--out", args.out), ("--figure", args.figure), ("--cache", args.cache)):
        if path and os.path.isdir(path):
            return f"{flag} {path} is a directory; give a file name"
    return None


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _f(x: Optional[float], width: int = 6) -> str:
    return f"{'-':>{width}}" if x is None else f"{x:{width}.3f}"


if __name__ == "__main__":
    sys.exit(main())
