"""Replay a finished AutoWU run through another implementation of the scheduler, above all the official one.

The run's training losses (its ``steps.csv``, which keeps every step up to the switch: ``records.compact_steps``)
are fed one by one to a scheduler built with the run's settings, as train.py fed them; its decisions (the outcome of
each GP test, the switch step, eta_t*) are set against the run's own (``events.jsonl``, ``results.json``). A
reviewer's check that our decisions are the official code's::

    git clone https://github.com/kakaobrain/autowu /tmp/autowu      # its autowu.py needs gpytorch
    python scripts/replay_official.py --official /tmp/autowu results/runs/proxy_regime/resnet_s2/autowu-*_b16384_s*

What may differ, and why: the official code fits and tests the GP in float32 through GPyTorch, ours in float64
in closed form (``autowu/gp.py``), and where a warmup holds more than ``fit_subset`` (100) losses both fit on a
random subset, drawn by torch's generator there and NumPy's here. So a test whose P_min is near the 0.95 threshold
may go the other way, and eta_t* (the LR at the argmin of the posterior mean, which is flat near its minimum) may
differ by a few percent; the switch step, where every test agrees, is the same. train.py's runs use the paper's
reading (``variant='paper'``), which differs from the official code where the warmup reaches its cap at an epoch end
(the official code stops there untested; the paper's reading tests there) and in the formula of the LR at a switch
(docs/GUIDE.md, the differences table): a run that switched at its cap may show a difference there by design.

Only runs whose settings the official class has can be replayed: the official code fixes 5 posteriors, confidence
0.95, patience 3 and one test per epoch (our defaults), and has no rollback.
"""
from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import math
import os
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from autowu import schedule_entry
from autowu.scheduler import ALIASES, AutoWU
from framework.config import ConfigError, parse_args
from framework.io import read_steps
from framework.optim import scheduler_kwargs

from .tables import ResultsError, get_train_parser, read_results

OFFICIAL_FIXED = ("n_test", "confidence", "patience", "fit_subset", "test_subset", "grid_size", "lengthscale",
                  "fit_steps", "fit_lr", "test_every", "max_overshoot", "rollback")  # at our defaults, the official's
NOT_REPLAYED = ("seed", "variant")  # the subsample draws (see above); our reading of the paper, which the record keeps


class ReplayError(ValueError):
    """A run that cannot be replayed (not an AutoWU run, a setting the other class lacks, a damaged or decimated
    file): the message names the run and the reason."""


@dataclass
class Decisions:
    tests: list = field(default_factory=list)  # [(step, passed)] in order
    switch_step: Optional[int] = None
    eta: Optional[float] = None  # the LR the decay starts from


@dataclass
class Record:
    run: str
    steps_per_epoch: int
    epochs: int
    kwargs: dict  # our AutoWU's constructor arguments for the run
    losses: list
    recorded: Decisions


def read_record(run: str) -> Record:
    """An AutoWU run directory of train.py (or its committed record): settings, losses up to the switch, decisions."""
    name = run.rstrip("/")
    paths = {f: os.path.join(run, f) for f in ("args.yaml", "results.json", "steps.csv", "events.jsonl")}
    missing = [f for f, p in paths.items() if not os.path.isfile(p)]
    if missing:
        raise ReplayError(f"{name}: no {', '.join(missing)}; give the directory of a finished train.py run")
    try:
        args = parse_args(get_train_parser(), ["-c", paths["args.yaml"]])
        result = read_results(paths["results.json"])
    except (ConfigError, ResultsError, SystemExit) as e:
        raise ReplayError(f"{name}: {e}") from None
    if not str(args.sched).startswith("autowu") or not isinstance((result or {}).get("switch"), dict):
        raise ReplayError(f"{name}: --sched {args.sched} with no AutoWU switch in results.json; only finished AutoWU "
                          "runs can be replayed")
    if not result.get("steps") or not result.get("epochs") or result["steps"] % result["epochs"]:
        raise ReplayError(f"{name}: results.json's steps {result.get('steps')} and epochs {result.get('epochs')} do "
                          "not give whole steps per epoch")
    kwargs = {**schedule_entry(args.sched).fixed, **scheduler_kwargs(args)}
    switch = result["switch"]
    if not isinstance(switch.get("step"), int) or isinstance(switch.get("step"), bool):
        raise ReplayError(f"{name}: results.json's switch has no step ({json.dumps(switch)[:80]})")
    try:
        cols = read_steps(paths["steps.csv"], ("step", "loss"))
        steps, losses = cols["step"], cols["loss"]
        with open(paths["events.jsonl"]) as f:
            events = [json.loads(line) for line in f if line.strip()]
        tests = [(int(e["step"]), bool(e["passed"])) for e in events if e.get("type") == "test"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ReplayError(f"{name}: steps.csv or events.jsonl cannot be read ({type(e).__name__}: {e})") from None
    upto = switch["step"] + 1
    if steps[:upto] != list(range(min(upto, len(steps)))) or len(steps) < upto:
        raise ReplayError(f"{name}: steps.csv does not hold every step up to the switch (step {switch['step']}): the "
                          "losses the scheduler saw cannot be fed again")
    recorded = Decisions(tests, switch["step"], switch.get("lr"))
    return Record(name, result["steps"] // result["epochs"], int(result["epochs"]), kwargs, losses[:upto], recorded)


def official_kwargs(record: Record) -> dict:
    """The official constructor's arguments for the run; ReplayError for a setting it does not have."""
    defaults = inspect.signature(AutoWU).parameters
    odd = [f"{k}={record.kwargs[k]!r}" for k in OFFICIAL_FIXED
           if k in record.kwargs and record.kwargs[k] != defaults[k].default]
    if odd:
        raise ReplayError(f"{record.run}: {', '.join(odd)}: the official class fixes these at "
                          f"{', '.join(f'{k}={defaults[k].default!r}' for k in OFFICIAL_FIXED)}; it cannot replay "
                          "this run")
    out = {}
    for key, value in record.kwargs.items():
        if key in OFFICIAL_FIXED or key in NOT_REPLAYED:
            continue
        if key == "decay":
            out["immediate_cooldown"] = value == "cosine"
        else:
            out[ALIASES.get(key, key)] = value
    return out


def replay(record: Record, cls: Callable[..., Any]) -> Decisions:
    """Feed the record's losses to ``cls(optimizer, steps_per_epoch, total_epochs, **official kwargs)`` (the
    official constructor, which ours also takes) until it leaves its warmup. The tests are read from the official
    class's ``maybe_switch`` (wrapped: its outcome is the newest entry of ``_prev_test_results``) or, for ours,
    from ``history``."""
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    sched = cls(optimizer, record.steps_per_epoch, record.epochs, **official_kwargs(record))
    out = Decisions()
    if hasattr(sched, "maybe_switch"):
        inner = sched.maybe_switch

        def maybe_switch():
            switched = inner()
            out.tests.append((sched.last_step, bool(sched._prev_test_results[-1])))
            if switched:  # the official code set the decay's LR before its next phase's scheduler took over
                out.switch_step, out.eta = sched.last_step, optimizer.param_groups[0]["lr"]
            return switched
        sched.maybe_switch = maybe_switch
    for loss in record.losses:
        optimizer.step()  # (no gradient: nothing moves) before the scheduler's step, as in training
        sched.step(torch.tensor(loss, dtype=torch.float32))
        if sched.phase != "warmup":
            break
    if hasattr(sched, "history"):
        out.tests = [(h["step"], bool(h["passed"])) for h in sched.history if h["type"] == "test"]
        if sched.switch:
            out.switch_step, out.eta = sched.switch["step"], sched.switch["lr"]
    if out.switch_step is None and sched.phase != "warmup":
        out.switch_step = sched.last_step  # left the warmup without a passed test (the cap or the cooldown)
    return out


def compare(record: Record, other: Decisions) -> dict:
    rec = record.recorded
    first = next((f"step {a[0]}: {a[1]} vs recorded {b[1]}" for a, b in zip(other.tests, rec.tests) if a != b), None)
    if first is None and len(other.tests) != len(rec.tests):
        first = f"{len(other.tests)} tests vs {len(rec.tests)} recorded"
    ratio = other.eta / rec.eta if other.eta and rec.eta else None
    return {"run": record.run, "tests": len(other.tests), "recorded_tests": len(rec.tests),
            "same_outcomes": sum(a == b for a, b in zip(other.tests, rec.tests)),
            "first_difference": first, "switch_step": other.switch_step, "recorded_switch_step": rec.switch_step,
            "eta": other.eta, "recorded_eta": rec.eta, "eta_ratio": ratio,
            "same": first is None and other.switch_step == rec.switch_step}


def load_official(path: str) -> Callable[..., Any]:
    """The ``AutoWU`` class of the official ``autowu.py`` (a file, or a clone holding it), imported under another
    module name. GPyTorch moved ``NotPSDError`` from ``gpytorch.utils.cholesky`` to ``linear_operator`` (1.9): when
    the old module is gone, it is provided with the new class, the one change the official file needs today."""
    file = os.path.join(path, "autowu.py") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise ReplayError(f"--official {path}: no autowu.py there; give a clone of github.com/kakaobrain/autowu or "
                          "its autowu.py")
    try:
        import gpytorch  # noqa: F401  (the official file's dependency)
    except ImportError:
        raise ReplayError("the official autowu.py needs gpytorch: pip install gpytorch") from None
    try:
        importlib.import_module("gpytorch.utils.cholesky")
    except ImportError:
        from linear_operator.utils.errors import NotPSDError
        shim = types.ModuleType("gpytorch.utils.cholesky")
        shim.NotPSDError = NotPSDError
        sys.modules["gpytorch.utils.cholesky"] = shim
    spec = importlib.util.spec_from_file_location("official_autowu", file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the file is the user's: any failure to import it is reported, not raised through
        raise ReplayError(f"--official {file}: cannot be imported ({type(e).__name__}: {e})") from None
    if not isinstance(getattr(module, "AutoWU", None), type):
        raise ReplayError(f"--official {file}: has no AutoWU class; is it the official autowu.py?")
    return module.AutoWU


def table(rows: list[dict]) -> str:
    lines = ["| run | GP tests with the recorded outcome | first difference | switch step (recorded) | "
             "eta_t* (recorded) | ratio |", "|---|---|---|---|---|---|"]
    for r in rows:
        eta = f"{r['eta']:.4g} ({r['recorded_eta']:.4g})" if r["eta"] and r["recorded_eta"] else "–"
        ratio = f"{r['eta_ratio']:.3f}" if r["eta_ratio"] else "–"
        lines.append(f"| {r['run']} | {r['same_outcomes']} of {r['recorded_tests']} | {r['first_difference'] or '–'} | "
                     f"{r['switch_step']} ({r['recorded_switch_step']}) | {eta} | "
                     f"{ratio} |")
    ratios = [r["eta_ratio"] for r in rows if r["eta_ratio"]]
    same = sum(r["same"] for r in rows)
    switched = sum(r["switch_step"] == r["recorded_switch_step"] for r in rows)
    summary = (f"{same} of {len(rows)} runs take the recorded decision at every GP test and switch at the same step; "
               f"{switched} of {len(rows)} switch at the recorded step")
    if ratios:
        summary += (f"; eta_t* over the recorded: {min(ratios):.3f} to {max(ratios):.3f} "
                    f"(largest difference {max(abs(math.log(x)) for x in ratios) * 100:.1f}% in log terms)")
    return "\n".join(lines) + "\n\n" + summary + ".\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="replay_official.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, help="a clone of github.com/kakaobrain/autowu, or its autowu.py")
    parser.add_argument("runs", nargs="+", help="run directories of AutoWU runs (or their records under results/runs)")
    parser.add_argument("--json", default=None, help="also write one JSON line per run here")
    args = parser.parse_args(argv)
    try:
        cls = load_official(args.official)
        records = [read_record(run) for run in args.runs]
        for record in records:
            official_kwargs(record)  # every run's settings checked before the first (slow) replay
    except ReplayError as e:
        print(f"replay_official.py: {e}", file=sys.stderr)
        return 2
    rows = []
    for record in records:
        rows.append(compare(record, replay(record, cls)))
        print(f"[replay] {record.run}: {'same' if rows[-1]['same'] else 'differs'}", file=sys.stderr, flush=True)
    print(table(rows))
    if args.json:
        try:
            with open(args.json, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
        except OSError as e:
            print(f"replay_official.py: --json {args.json}: cannot be written ({e.strerror or e}); the table above "
                  "has the results", file=sys.stderr)
            return 2
    return 0 if all(r["same"] for r in rows) else 1
