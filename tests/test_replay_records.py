"""Regression guard for the scheduler (issue 23): every committed 8K and 16K AutoWU record of the paper-regime tables
is replayed through today's scheduler (losses from its steps.csv, settings from its args.yaml, built by the same
factory train.py uses) and must take the recorded decisions: the same outcome at every GP test, the same switch
step and the same eta_t* (the LR it decays from). These runs' steps.csv hold every step (600 / 1,400 rows), so the
replay feeds exactly the losses the run fed."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from conftest import ROOT

import train
from framework.config import parse_args
from framework.optim import create_schedule

RECORDS = sorted(p.parent for pattern in ("autowu-*_b8192_s*", "autowu-*_b16384_s*")
                 for p in (ROOT / "results" / "runs").glob(f"paper_regime*/**/{pattern}/results.json"))
TRAIN_IMAGES = 60_000  # Fashion-MNIST; steps per epoch = 60000 // batch (the last partial batch is dropped)


def replay(record: Path):
    args = parse_args(train.get_args_parser(), ["-c", str(record / "args.yaml")])
    steps_per_epoch = TRAIN_IMAGES // args.batch_size
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=args.lr)
    sched = create_schedule(args, optimizer, torch.nn.Linear(1, 1), steps_per_epoch)
    with open(record / "steps.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(len(rows))), "steps.csv is decimated: cannot replay"
    lrs = []
    for row in rows:
        lrs.append(optimizer.param_groups[0]["lr"])  # the LR this step trains with
        optimizer.step()
        sched.step(float(row["loss"]))
    return sched, lrs, [float(r["lr"]) for r in rows]


def test_the_guard_sees_every_8k_and_16k_record():
    assert len(RECORDS) == 12, [str(r) for r in RECORDS]  # 2 schedules x 2 batch sizes x 3 seeds


@pytest.mark.parametrize("record", RECORDS, ids=lambda p: p.name)
def test_a_recorded_run_replays_to_the_same_decisions(record):
    result = json.loads((record / "results.json").read_text())
    events = [json.loads(line) for line in (record / "events.jsonl").read_text().splitlines() if line.strip()]
    sched, lrs, recorded_lrs = replay(record)
    assert lrs == pytest.approx(recorded_lrs, rel=1e-12, abs=0)  # the whole LR trajectory, step by step
    recorded_tests = [(e["step"], e["passed"]) for e in events if e["type"] == "test"]
    assert [(h["step"], h["passed"]) for h in sched.history if h["type"] == "test"] == recorded_tests
    assert sched.switch["step"] == result["switch"]["step"] and sched.switch["reason"] == result["switch"]["reason"]
    assert sched.switch["lr"] == pytest.approx(result["switch"]["lr"], rel=1e-9)  # eta_t*
    assert sched.switch["t_star"] == pytest.approx(result["switch"]["t_star"], rel=1e-9)
