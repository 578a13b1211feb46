"""Regression guard for the scheduler (issue 23): every committed 8K and 16K AutoWU record of both proxies'
tables (paper_regime: the MLP; proxy_regime: the ResNet) is replayed through today's scheduler (losses from its
steps.csv, settings from its args.yaml, built by the same factory train.py uses) and must take the recorded decisions:
the same outcome at every GP test, the same switch step and the same eta_t* (the LR it decays from). These runs'
steps.csv hold every step (600 / 1,400 rows), so the replay feeds exactly the losses the run fed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import ROOT

import train
from framework.config import parse_args
from framework.io import read_steps
from framework.optim import create_schedule

RECORDS = sorted(p.parent for pattern in ("autowu-*_b8192_s*", "autowu-*_b16384_s*")
                 for table in ("paper_regime", "proxy_regime")
                 for p in (ROOT / "results" / "runs" / table).glob(f"**/{pattern}/results.json"))
TRAIN_IMAGES = 60_000  # Fashion-MNIST; steps per epoch = 60000 // batch (the last partial batch is dropped)


def replay(record: Path):
    args = parse_args(train.get_args_parser(), ["-c", str(record / "args.yaml")])
    steps_per_epoch = TRAIN_IMAGES // args.batch_size
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=args.lr)
    sched = create_schedule(args, optimizer, torch.nn.Linear(1, 1), steps_per_epoch)
    cols = read_steps(str(record), ("step", "lr", "loss"))
    assert cols["step"] == list(range(len(cols["step"]))), "steps.csv is decimated: cannot replay"
    lrs = []
    for loss in cols["loss"]:
        lrs.append(optimizer.param_groups[0]["lr"])  # the LR this step trains with
        optimizer.step()
        sched.step(loss)
    return sched, lrs, cols["lr"]


def test_the_guard_sees_every_8k_and_16k_record():
    # both proxies (the MLP's paper_regime, the ResNet's proxy_regime): 2 schedules x 2 batch sizes x 3 seeds each
    assert len(RECORDS) == 24, [str(r) for r in RECORDS]


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


# -- experiments/replay.py: a record replayed through another implementation (scripts/replay_official.py) ----------

from autowu import AutoWU  # noqa: E402
from experiments import replay as other  # noqa: E402

PROXY_16K = ROOT / "results" / "runs" / "proxy_regime" / "resnet_s2" / "autowu-cos_b16384_s0"


def copy_record(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in ("args.yaml", "results.json", "steps.csv", "events.jsonl"):
        (dst / f).write_bytes((src / f).read_bytes())
    return dst


def test_our_class_through_the_official_constructor_takes_the_recorded_decisions():
    """The replay builds the scheduler with the official constructor's arguments (our class takes them too, as the
    official variant); on a committed 16K record it must give every recorded test outcome and the switch step."""
    record = other.read_record(str(PROXY_16K))
    assert other.official_kwargs(record) == {"min_lr": 1e-5, "max_lr": 1.0, "max_warmup_fraction": 0.5,
                                             "warmup_type": "exp", "cooldown_fraction": 0.2,
                                             "immediate_cooldown": True}
    row = other.compare(record, other.replay(record, AutoWU))
    assert row["same"] and row["first_difference"] is None
    assert row["tests"] == row["recorded_tests"] == 70 and row["switch_step"] == row["recorded_switch_step"] == 210
    # eta_t*: the official LR at a GP switch is computed otherwise than Eq. 5 (docs/GUIDE.md, the differences
    # table: the mean of the posteriors' LRs from the epoch's last LR); the record is the paper variant's
    assert row["eta_ratio"] == pytest.approx(1.0, rel=0.05) and row["eta_ratio"] != 1.0


def test_a_differing_test_outcome_is_reported_at_its_step(tmp_path):
    run = copy_record(PROXY_16K, tmp_path / "run")
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines() if line.strip()]
    flipped = next(e for e in events if e["type"] == "test" and e["step"] == 150)
    flipped["passed"] = not flipped["passed"]
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    record = other.read_record(str(run))
    row = other.compare(record, other.replay(record, AutoWU))
    assert not row["same"] and row["first_difference"].startswith("step 150: ")
    assert "0 of 1 runs take the recorded decision" in other.table([row])


def test_the_command_line_replays_through_a_given_autowu_py(tmp_path, capsys):
    """--official names a file with an AutoWU class (here one that re-exports ours, standing in for the clone of
    kakaobrain/autowu, which the tests cannot fetch): the table says the run agrees, and the exit code is 0."""
    (tmp_path / "autowu.py").write_text("from autowu.scheduler import AutoWU\n")
    out = tmp_path / "rows.jsonl"
    assert other.main(["--official", str(tmp_path), str(PROXY_16K), "--json", str(out)]) == 0
    assert "1 of 1 runs take the recorded decision at every GP test" in capsys.readouterr().out
    assert json.loads(out.read_text())["switch_step"] == 210


@pytest.mark.parametrize("case", ["no_autowu_py", "not_autowu", "baseline_run", "decimated", "test_every",
                                  "damaged_events"])
def test_what_cannot_be_replayed_is_one_line_and_exit_2(tmp_path, capsys, case):
    official = tmp_path / "official"
    official.mkdir()
    (official / "autowu.py").write_text("from autowu.scheduler import AutoWU\n")
    run = copy_record(PROXY_16K, tmp_path / "run")
    expected = {"no_autowu_py": "no autowu.py there", "not_autowu": "has no AutoWU class",
                "baseline_run": "only finished AutoWU runs", "decimated": "every step up to the switch",
                "test_every": "test_every=2", "damaged_events": "events.jsonl cannot be read"}[case]
    if case == "no_autowu_py":
        (official / "autowu.py").unlink()
    elif case == "not_autowu":
        (official / "autowu.py").write_text("AutoWU = 3\n")
    elif case == "baseline_run":
        result = json.loads((run / "results.json").read_text())
        del result["switch"]
        (run / "results.json").write_text(json.dumps(result))
    elif case == "decimated":
        lines = (run / "steps.csv").read_text().splitlines(keepends=True)
        (run / "steps.csv").write_text("".join(lines[:50] + lines[52:]))
    elif case == "damaged_events":
        (run / "events.jsonl").write_text('{"type": "test", "step": 3}\n["not an event"]\n')
    else:
        (run / "args.yaml").write_text((run / "args.yaml").read_text().replace("autowu-test-every: null",
                                                                              "autowu-test-every: 2"))
    assert other.main(["--official", str(official), str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err


def test_an_unwritable_json_path_is_one_line_after_the_table(tmp_path, capsys):
    (tmp_path / "autowu.py").write_text("from autowu.scheduler import AutoWU\n")
    assert other.main(["--official", str(tmp_path), str(PROXY_16K), "--json", str(tmp_path)]) == 2  # a directory
    captured = capsys.readouterr()
    assert "1 of 1 runs take the recorded decision" in captured.out
    err = [line for line in captured.err.strip().splitlines() if not line.startswith("[replay] ")]  # progress
    assert len(err) == 1 and "--json" in err[0] and "cannot be written" in err[0], err
