"""One home per concept: the run spec (a resume is refused before anything is written), the schedule registry, the
batch split, the shared file helpers, train.py's --help."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from conftest import TINY, read_steps, run_inprocess

import autowu
from autowu.factory import REGISTRY, ScheduleEntry
from autowu.schedules import StepScheduler, WarmupCosine
from framework.batch import BatchError, BatchSplit, split_batch
from framework.config import ConfigError
from framework.io import atomic_write, read_step_rows, read_steps as io_read_steps
from framework.logger import RunLogger
from framework.runspec import Position, check_resume


def tree_hashes(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("spec") / "run"
    assert run_inprocess([*TINY, "--epochs", "2", "--label-smoothing", "0.1", "--output", str(run)]) == 0
    return run


@pytest.mark.parametrize("change, shown", [
    (["--weight-decay", "0.5"], "weight-decay: 0.1 → 0.5"),
    (["--label-smoothing", "0.0"], "label-smoothing: 0.1 → 0.0"),
    (["--autowu-eta-max", "0.5"], "autowu-eta-max: 1.0 → 0.5"),
    (["--train-subset", "96"], "train-subset: unset → 96"),
])
def test_refused_resume_exits_2_before_any_file_changes(finished_run, capsys, change, shown):
    before = tree_hashes(finished_run)
    code = run_inprocess([*TINY, "--epochs", "3", "--label-smoothing", "0.1", *change, "--output", str(finished_run)])
    err = capsys.readouterr().err
    assert code == 2
    assert shown in err and "epochs: 2 → 3" in err  # every changed key, old → new
    assert "--output" in err and "--resume none" in err  # the two ways forward
    assert err.count("\n") == 1  # one line
    assert tree_hashes(finished_run) == before


def test_settings_allowed_to_change_resume(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_inprocess([*TINY, "--epochs", "1", "--output", str(run)]) == 0
    (run / "results.json").unlink()  # a finished run with its results is left alone (nothing to do): resume one without
    assert run_inprocess([*TINY, "--epochs", "1", "--log-interval", "1", "--workers", "0", "--val-interval", "2",
                          "--micro-batch", "32", "--output", str(run)]) == 0
    assert "resumed from" in capsys.readouterr().out


def test_a_position_that_is_not_a_whole_step_is_refused():
    split = BatchSplit(32, 16, 1, 2)
    ckpt = {"config": {"batch_size": 32}, "position": {"epoch": 1, "step": 6, "sample": 48}}
    with pytest.raises(ConfigError, match="not a whole optimizer step"):
        check_resume(ckpt, {"batch_size": 32}, split, 4, "x/last.pt")
    ckpt["position"]["sample"] = 64
    assert check_resume(ckpt, {"batch_size": 32}, split, 4, "x/last.pt") == (Position(1, 6, 64), None)
    ckpt["split"] = BatchSplit(32, 8, 2, 2).to_dict()
    pos, note = check_resume(ckpt, {"batch_size": 32}, split, 4, "x/last.pt")
    assert pos == Position(1, 6, 64) and "8 x 2 processes x 2" in note and "16 x 1 processes x 2" in note


# -- the batch split ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch, world, cap, even, split", [
    (256, 1, 256, False, (256, 1)), (256, 2, 256, False, (128, 1)), (256, 8, 256, False, (32, 1)),
    (256, 64, 256, False, (4, 1)), (256, 3 * 0 + 2, 48, False, (32, 4)), (40, 2, 8, False, (5, 4)),
    (40, 2, 8, True, (4, 5)), (36, 1, None, False, (36, 1)), (16384, 64, 128, False, (128, 2)),
])
def test_split_picks_the_largest_micro_batch_that_divides_the_share(batch, world, cap, even, split):
    s = split_batch(batch, world, cap, even=even)
    assert (s.micro_batch, s.accum_steps) == split and s.micro_batch * s.world_size * s.accum_steps == batch


def test_split_errors():
    with pytest.raises(BatchError, match="not divisible by the 3 processes"):
        split_batch(256, 3)
    with pytest.raises(BatchError, match="even --micro-batch"):
        split_batch(9, 1, 3, even=True)
    with pytest.raises(BatchError, match="--micro-batch must be >= 1"):
        split_batch(8, 1, 0)


# -- the schedule registry -----------------------------------------------------------------------------------------
def test_registry_settings_are_flags_and_class_arguments():
    import train
    dests = {a.dest for a in train.get_args_parser()._actions}
    assert set(autowu.SCHEDULES) == set(REGISTRY)
    for name, entry in REGISTRY.items():
        assert set(entry.settings) <= dests, name
        assert set(entry.settings.values()) | set(entry.fixed) <= entry.arguments(), name


def test_sched_kwargs_that_disagree_with_a_flag_is_an_error(tmp_path, capsys):
    run = tmp_path / "run"
    code = run_inprocess([*TINY, "--autowu-eta-max", "0.5", "--sched-kwargs", "{eta_max: 0.01}", "--output", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and "--autowu-eta-max 0.5 and --sched-kwargs eta_max=0.01" in err and not run.exists()
    assert run_inprocess([*TINY, "--sched-kwargs", "{eta_maxx: 0.01}", "--output", str(run)]) == 2
    assert "has no setting 'eta_maxx'; did you mean eta_max" in capsys.readouterr().err and not run.exists()
    # the same value twice is no conflict
    assert run_inprocess([*TINY, "--epochs", "1", "--autowu-eta-max", "0.5", "--sched-kwargs", "{eta_max: 0.5}",
                          "--output", str(run)]) == 0


class Plateau(StepScheduler):
    """A new schedule for the test: constant ``peak_lr``; records one decision, at step 2."""

    def __init__(self, optimizer, steps_per_epoch, total_epochs, peak_lr=1.0, when=2):
        super().__init__(optimizer, steps_per_epoch, total_epochs)
        self.peak_lr, self.when = peak_lr, when
        self._apply_lr(self.lr_at(0))

    def lr_at(self, step):
        return self.peak_lr

    def step(self, loss=None, **kw):
        super().step(loss, **kw)
        if self.last_epoch == self.when:
            self.history.append({"type": "plateau", "epoch": self.epoch, "step": self.last_epoch})


def test_a_new_schedule_is_a_class_and_one_entry(tmp_path, capsys, monkeypatch):
    entry = ScheduleEntry("plateau", lambda: Plateau, settings={"lr": "peak_lr"},
                          describe=lambda e: f"plateau decided at step {e['step']}",
                          scalars=lambda e: {"plateau/step": e["step"]},
                          results=lambda s: {"plateau": {"when": s.when}})
    monkeypatch.setitem(REGISTRY, "plateau", entry)
    run = tmp_path / "run"
    assert run_inprocess([*TINY, "--sched", "plateau", "--lr", "0.003", "--output", str(run)]) == 0
    assert "plateau decided at step 2" in capsys.readouterr().out
    assert {r["lr"] for r in read_steps(run)} == {0.003}
    res = json.loads((run / "results.json").read_text())
    assert res["plateau"] == {"when": 2} and res["switch"] is None


# -- last_schedule_lr and what the logger shows ------------------------------------------------------------------
def test_last_schedule_lr_is_before_group_ratios_and_lr_scale():
    w = [torch.zeros(2, requires_grad=True) for _ in range(2)]
    opt = torch.optim.SGD([{"params": [w[0]], "lr": 1.0, "lr_scale": 0.1}, {"params": [w[1]], "lr": 1.0}], lr=1.0)
    sched = WarmupCosine(opt, steps_per_epoch=10, total_epochs=2, peak_lr=0.4, warmup_epochs=1)
    for _ in range(5):
        sched.step()
    assert sched.last_schedule_lr == pytest.approx(0.2)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.02) and opt.param_groups[1]["lr"] == pytest.approx(0.2)
    wu = autowu.AutoWU(torch.optim.SGD([{"params": [w[0]], "lr_scale": 0.5}], lr=1.0), steps_per_epoch=10,
                       total_epochs=4)
    assert wu.last_schedule_lr == pytest.approx(1e-5) and wu.get_last_lr()[0] == pytest.approx(5e-6)


class FakeWriter:
    def __init__(self):
        self.calls = []

    def add_scalar(self, tag, value, step):
        self.calls.append((tag, value, step))


def test_logger_headline_lr_and_group0_only_when_they_differ(tmp_path):
    logger = RunLogger(str(tmp_path), True, tensorboard=False, console=False)
    logger.tb = FakeWriter()
    logger.log_steps([(0, 0, 0.5, 2.0, 0.5), (1, 0, 0.05, 1.5, 0.5)])
    assert logger.tb.calls == [("train/lr", 0.5, 0), ("train/loss", 2.0, 0), ("train/lr", 0.5, 1),
                               ("train/lr_group0", 0.05, 1), ("train/loss", 1.5, 1)]
    logger.tb = None
    logger.close()
    assert read_step_rows(str(tmp_path)) == [{"step": 0, "epoch": 0, "lr": 0.5, "loss": 2.0},
                                             {"step": 1, "epoch": 0, "lr": 0.05, "loss": 1.5}]


# -- file helpers ----------------------------------------------------------------------------------------------------
def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "f.json"
    atomic_write(str(path), lambda f: f.write("old"))

    def broken(f):
        f.write("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(str(path), broken)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_read_steps_columns(tmp_path):
    (tmp_path / "steps.csv").write_text("step,epoch,lr,loss\n0,0,0.1,nan\n1,0,0.2,1.5\n")
    cols = io_read_steps(str(tmp_path))
    assert cols["step"] == [0, 1] and cols["lr"] == [0.1, 0.2] and math.isnan(cols["loss"][0])
    assert io_read_steps(str(tmp_path / "steps.csv"), ("lr",)) == {"lr": [0.1, 0.2]}


# -- --help --------------------------------------------------------------------------------------------------------
def test_help_shows_defaults_paper_sections_and_the_first_commands():
    import train
    text = " ".join(train.get_args_parser().format_help().split())
    for flag in ("--autowu-eta-min", "--autowu-eta-max", "--autowu-rho-w", "--autowu-warmup", "--autowu-n-test",
                 "--autowu-confidence", "--autowu-patience", "--autowu-rollback", "--val-interval"):
        assert flag in text
    assert "(paper Sec. 2.1.1: 0.5) (default: 0.5)" in text and "(paper Sec. 2.1.2: 3) (default: 3)" in text
    assert "validate every N epochs, and after the last (default: 1)" in text
    assert "configs/fashion_mnist_demo.yaml" in text and "scripts/test.sh" in text and "torchrun" in text


def test_a_step_uses_the_same_samples_under_any_split():
    """Why a resume may change the split: step s of an epoch is samples s*B .. (s+1)*B-1 of the epoch's shuffle,
    whatever the micro-batch and process count (so the position is counted in steps and samples)."""
    from framework.loaders import TrainLoader, shard_indices
    n, batch, steps = 200, 24, 200 // 24
    perm = shard_indices(n, epoch=3, seed=5, rank=0, world_size=1)
    for world, micro in ((1, 24), (1, 8), (2, 12), (2, 3), (4, 2), (3, 4)):
        split = split_batch(batch, world, micro)
        per_rank = []
        for r in range(world):
            loader = TrainLoader(n, micro_batch=split.micro_batch, num_batches=steps * split.accum_steps, rank=r,
                                 world_size=world, seed=5)
            loader.set_epoch(3)
            per_rank.append(dict(loader.batch_indices()))
        for s in range(steps):
            got = torch.cat([per_rank[r][b] for r in range(world)
                             for b in range(s * split.accum_steps, (s + 1) * split.accum_steps)])
            assert sorted(got.tolist()) == sorted(perm[s * batch:(s + 1) * batch].tolist()), (world, micro, s)
