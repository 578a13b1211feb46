"""The automatic LR methods a large-batch user would try instead of AutoWU (issue 25), from their real packages, as
first-class ``--opt`` choices of train.py: Schedule-Free AdamW (train/eval modes around evaluation and checkpoints,
BatchNorm statistics recomputed for its averaged weights), Prodigy and D-Adaptation Adam (lr=1, the effective LR
d*lr logged per step). Each resumes exactly from its checkpoint."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import TINY, run_inprocess

from framework.optim import effective_lr, set_optimizer_mode, uses_optimizer_modes

METHODS = {
    "schedulefree_adamw": ["--opt", "schedulefree_adamw", "--sched", "constant", "--lr", "0.01"],
    "prodigy": ["--opt", "prodigy", "--sched", "baseline"],
    "dadapt_adam": ["--opt", "dadapt_adam", "--sched", "baseline"],
}


def run(out: Path, method: str, *extra: str) -> int:
    return run_inprocess([*TINY, *METHODS[method], "--warmup-epochs", "1", "--model", "fmnist_resnet",
                          "--output", str(out), *extra])


def steps(out: Path) -> list[dict]:
    with open(out / "steps.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_trains_and_resumes_exactly(tmp_path, method):
    a = tmp_path / "a"
    assert run(a, method) == 0
    result = json.loads((a / "results.json").read_text())
    assert result["status"] == "finished" and result["config"]["opt"] == method
    # resume from the checkpoint of epoch 2 of 3 (prev.pt): the same steps, losses, LRs and final weights
    b = tmp_path / "b"
    shutil.copytree(a, b)
    shutil.copy(b / "prev.pt", b / "last.pt")
    (b / "results.json").unlink()
    assert run(b, method) == 0
    sa, sb = steps(a), steps(b)
    assert [(r["step"], r["lr"], r["loss"]) for r in sa] == [(r["step"], r["lr"], r["loss"]) for r in sb]
    wa = torch.load(a / "last.pt", map_location="cpu", weights_only=True)
    wb = torch.load(b / "last.pt", map_location="cpu", weights_only=True)
    assert all(torch.equal(wa["model"][k], wb["model"][k]) for k in wa["model"])
    assert json.loads((b / "results.json").read_text())["final_top1"] == result["final_top1"]


@pytest.mark.parametrize("method", ["prodigy", "dadapt_adam"])
def test_the_logged_lr_is_d_times_lr(tmp_path, method):
    """lr=1 for the optimizer; the step size it uses is d * lr, which starts at d0 = 1e-6 and grows."""
    out = tmp_path / "r"
    assert run(out, method) == 0
    ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    group = ckpt["optimizer"]["param_groups"][0]
    assert group["lr"] == pytest.approx(0.0) and group["d"] > 1e-6  # the cosine ended at 0; d was learned
    lrs = [float(r["lr"]) for r in steps(out)]
    assert lrs[0] == 0.0 and 0 < lrs[1] < 1e-5  # warmup step 1: lr 1/4 of 1, d = d0
    assert max(lrs) > 10 * lrs[1]  # d grew


def test_schedulefree_modes_and_its_warmup(tmp_path):
    out = tmp_path / "sf"
    assert run(out, "schedulefree_adamw") == 0
    lrs = [float(r["lr"]) for r in steps(out)]
    per_epoch = len(lrs) // 3
    # its own warmup over --warmup-epochs: step k uses 0.01 * (k + 1) / warmup_steps (the LR the step really uses)
    assert lrs[:per_epoch] == pytest.approx([0.01 * (k + 1) / per_epoch for k in range(per_epoch)])
    assert lrs[-1] == pytest.approx(0.01)  # then constant: the schedule is the optimizer's (--sched constant)
    ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["optimizer"]["param_groups"][0]["train_mode"] is False  # saved in eval mode: the model holds x


def test_optimizer_modes_are_a_no_op_elsewhere():
    p = torch.nn.Parameter(torch.ones(2))
    adam = torch.optim.Adam([p])
    assert not uses_optimizer_modes(adam)
    set_optimizer_mode(adam, train=True)  # nothing happens, nothing raises
    assert effective_lr(adam.param_groups[0]) == pytest.approx(1e-3)


def test_range_test_sets_the_peak_lr_counts_its_steps_and_is_not_rerun_on_resume(tmp_path):
    """--sched range-test-cos: torch-lr-finder's range test (its steepest-descent suggestion) before the first step,
    then the baseline at that LR; its steps in results.json; a resumed run takes the LR from the checkpoint."""
    out = tmp_path / "rt"
    args = [*TINY, "--sched", "range-test-cos", "--warmup-epochs", "1", "--model", "fmnist_resnet", "--output", str(out)]
    assert run_inprocess(args) == 0
    result = json.loads((out / "results.json").read_text())
    found = result["range_test"]
    assert found["type"] == "range-test" and 1e-7 < found["lr"] < 10 and found["steps"] > 15
    assert found["forward_passes"] == found["steps"] * 2  # micro-batch 16 of batch 32: 2 forwards per step
    lrs = [float(r["lr"]) for r in steps(out)]
    assert max(lrs) == pytest.approx(found["lr"], rel=1e-6)  # the baseline's peak is the suggestion
    b = tmp_path / "b"
    shutil.copytree(out, b)
    shutil.copy(b / "prev.pt", b / "last.pt")
    (b / "results.json").unlink()
    assert run_inprocess([*args[:-1], str(b)]) == 0
    assert json.loads((b / "results.json").read_text())["range_test"]["lr"] == found["lr"]
    assert [r["lr"] for r in steps(b)] == [r["lr"] for r in steps(out)]
    assert "LR range test" not in (b / "train.log").read_text().split("resumed from")[-1]  # not run again
