"""Every file in configs/: base YAMLs build and train two steps in smoke mode (synthetic data at the real resolution);
table definitions name existing bases, flags train.py accepts, and the paper numbers they are compared with."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
from experiments import sweep  # noqa: E402

BASES = sorted((ROOT / "configs").glob("*.yaml"))
TABLES = sorted((ROOT / "configs" / "tables").glob("*.yaml"))


def test_there_is_a_config_for_every_paper_task_and_table():
    assert {p.stem for p in BASES} >= {"cifar10_resnet18", "cifar100_wrn28_10", "imagenet_resnet50",
                                       "imagenet_efficientnet_b0", "imagenet_vit_s16", "fashion_mnist_resnet"}
    assert {p.stem for p in TABLES} >= {"table1", "table2", "table3", "table4", "fig5_baseline_grid",
                                        "c2_warmup_shape", "fashion_mnist"}


@pytest.mark.parametrize("path", BASES, ids=lambda p: p.stem)
def test_base_config_runs_two_smoke_steps(path, tmp_path):
    head = path.read_text().splitlines()[:12]
    assert head[0].startswith("# ") and any("batch" in line.lower() and "=" in line for line in head), \
        f"{path.name} must open with its launch command and batch arithmetic"
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "train.py", "--config", str(path.relative_to(ROOT)), "--smoke", "2",
                           "--output", str(out), "--device", "cpu"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with open(out / "steps.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(float(r["loss"]) > 0 for r in rows)
    resolved = (out / "args.yaml").read_text()
    import yaml
    cfg, args = yaml.safe_load(path.read_text()), yaml.safe_load(resolved)
    assert args["model"] == cfg["model"] and args["opt"] == cfg["opt"] and args["sched"] == cfg["sched"]


@pytest.mark.parametrize("path", TABLES, ids=lambda p: p.stem)
def test_table_definition_is_valid(path):
    table = sweep.load_table(str(path))
    runs = sweep.expand(table)
    assert runs and len({r.output for r in runs}) == len(runs)
    sweep.check_runs(runs, sweep.get_train_parser())  # every override is a train.py flag with a valid value
    keys = {(r.block, r.row, r.column) for r in runs}
    if table.paper:  # every number the paper reports lands in a cell of ours
        with open(ROOT / table.paper, newline="") as f:
            for rec in csv.DictReader(f):
                assert (rec["block"], rec["row"], rec["column"]) in keys, f"{table.paper}: {rec} has no cell"
                assert rec["source"]
                float(rec["top1"])


def test_paper_tables_use_the_papers_seeds_and_batch_sizes():
    t1 = sweep.load_table("table1")
    blocks = {b.name: b for b in t1.blocks}
    assert [c.key for c in blocks["cifar10_resnet18"].columns] == ["256", "1024", "8192", "16384"]
    assert blocks["cifar10_resnet18"].seeds == [0, 1, 2] and blocks["imagenet_resnet50"].seeds == [0]
    assert [c.key for c in blocks["imagenet_resnet50"].columns] == ["1024", "4096", "16384", "32768"]
    t2 = sweep.load_table("table2")
    assert all(r.overrides["opt"] == "lamb" and r.overrides["lr-base"] == 0.01 for r in sweep.expand(t2))
    fm = sweep.load_table("fashion_mnist")
    assert int(fm.blocks[0].columns[-1].key) >= 8192 and "autowu-rollback" in fm.blocks[0].rows
