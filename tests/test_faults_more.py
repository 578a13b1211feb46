"""More faults of the hostile-user probe, each ending in a clear outcome (the rules of tests/test_faults.py):

1. damaged run files (a truncated or non-JSON results.json, a cut last line of epochs.jsonl / events.jsonl / steps.csv)
   in collect.py, plot.py and scripts/run_summary.py: the file named in one warning line and the run counted as
   failed, a cut last JSON line skipped with its file and line number, or one ``error:`` line and exit 2;
2. a log file of the run directory that is a directory: one ``error:`` line naming it, exit 2, nothing written; a log
   deleted while the run goes on: a warning naming it, and the logger says the logs are incomplete;
3. a resume under another process count says what it keeps (the samples of every step) and what it does not;
4. ranks started with different settings, 5. or with different data: every rank stops with one line naming the first
   differing setting and its value on rank 0 and on the other rank.
"""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import ROOT, TINY, free_port, read_jsonl, run_inprocess, subprocess_env

from experiments import collect, plot, sweep
from framework.batch import BatchSplit, split_batch
from framework.io import read_steps
from framework.logger import RunLogger
from framework.runspec import Position, check_resume

sys.path.insert(0, str(ROOT / "scripts"))  # run_summary: a per-run command, not part of the package
import run_summary  # noqa: E402


def _tree(path: Path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def refused(capsys, argv: list[str], run: Path) -> str:
    """train.py in-process: exit 2, one ``error`` line, no traceback, nothing in ``run`` created or changed."""
    before = _tree(run)
    code = run_inprocess(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert _tree(run) == before, "a refused run changed the run directory"
    return lines[0]


def warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if "warning" in line]


# -- 1. damaged run files in collect / plot / run_summary -------------------------------------------------------------
def fake_run(out: Path, top1: float, *, switch_step: int | None = None, steps_per_epoch: int = 10,
             epochs: int = 4, finished: bool = True) -> None:
    """A run in train.py's formats: baseline (LR up to 0.01, then down) or AutoWU (``switch_step``)."""
    out.mkdir(parents=True)
    total = steps_per_epoch * epochs
    switch = None if switch_step is None else {"type": "switch", "epoch": switch_step // steps_per_epoch,
                                                "step": switch_step, "t_star": switch_step - 2, "lr": 0.005,
                                                "reason": "gp-test"}
    with open(out / "steps.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "epoch", "lr", "loss"])
        for s in range(total):
            lr = 0.01 * min(1.0, (s + 1) / steps_per_epoch) * (1 if s < steps_per_epoch else 1 - s / total + 0.01)
            w.writerow([s, s // steps_per_epoch, repr(lr), repr(2.3 * math.exp(-3 * (s + 1) / total))])
    (out / "epochs.jsonl").write_text("".join(json.dumps({"epoch": e, "step": (e + 1) * steps_per_epoch,
                                                          "top1": top1 - (epochs - e - 1)}) + "\n"
                                              for e in range(epochs)))
    events = [{"type": "test", "epoch": 0, "step": 5, "passed": False}] + ([switch] if switch else [])
    (out / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    if finished:
        (out / "results.json").write_text(json.dumps({
            "status": "finished", "final_top1": top1, "best_top1": top1, "switch": switch, "wall_time_s": 30.0,
            "epochs": epochs, "steps": total, "hardware": "cpu: test",
            "config": {"sched": "autowu-cos" if switch else "baseline"}}))


@pytest.fixture()
def table(tmp_path):
    path = tmp_path / "tbl.yaml"
    path.write_text(textwrap.dedent("""
        title: A test table
        base: configs/fashion_mnist_resnet.yaml
        seeds: [0, 1]
        columns: [256]
        rows:
          baseline: {sched: baseline}
          autowu-cos: {sched: autowu-cos}
        """))
    return sweep.load_table(str(path))


def cut_last_line(path: Path, keep: int = 7) -> int:
    """Cut the last line of ``path`` after ``keep`` characters (no newline): what a kill during an append leaves.
    Returns that line's number (1-based)."""
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][:keep])
    return len(lines)


def drawn(fig, column: int = 0) -> list[str]:
    return [line.get_label() for line in fig.axes[column].get_lines() if not line.get_label().startswith("_")]


@pytest.mark.parametrize("content", ['{"status": "fini', "", "[1, 2]", "not json at all"])
def test_plot_names_a_damaged_results_json_once_and_leaves_the_run_out(table, tmp_path, capsys, content):
    runs = tmp_path / "runs"
    fake_run(runs / "tbl" / "baseline_b256_s0", 90.0)
    fake_run(runs / "tbl" / "autowu-cos_b256_s0", 92.0, switch_step=15)
    bad = runs / "tbl" / "autowu-cos_b256_s0" / "results.json"
    bad.write_text(content)
    out = tmp_path / "figures"
    assert plot.main([table.path, "--runs-dir", str(runs), "--out-dir", str(out), "--val"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    named = [line for line in warnings(err) if str(bad) in line]
    assert len(named) == 1 and "counted as a failed run" in named[0], err  # one line, even over two figures
    fig = plot.draw_block(table, table.blocks[0], sweep.expand(table, str(runs)), ["baseline", "autowu-cos"])
    assert drawn(fig) == ["baseline"]  # the failed run is not drawn; the sound one is
    assert (out / "tbl.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name", ["events.jsonl", "epochs.jsonl"])
def test_plot_skips_a_cut_last_json_line_naming_the_file_and_line(table, tmp_path, capsys, name):
    """A run killed while appending (no results.json yet: its switch comes from events.jsonl) is still drawn."""
    runs = tmp_path / "runs"
    run = runs / "tbl" / "autowu-cos_b256_s0"
    fake_run(run, 92.0, switch_step=15, finished=False)
    line = cut_last_line(run / name)
    fig = plot.draw_block(table, table.blocks[0], sweep.expand(table, str(runs)), ["baseline", "autowu-cos"],
                          val=True)
    err = capsys.readouterr().err
    assert drawn(fig) == ["autowu-cos"]
    named = [w for w in warnings(err) if str(run / name) in w]
    assert len(named) == 1 and f"line {line} is cut short" in named[0] and "skipped" in named[0], err
    if name == "epochs.jsonl":  # the last epoch's point is gone, the others are drawn
        val = [ln for ln in fig.axes[2].get_lines() if ln.get_label() == "autowu-cos"][0]
        assert list(val.get_xdata()) == [1, 2, 3]


def test_plot_counts_a_run_with_a_damaged_json_line_before_the_last_as_failed(table, tmp_path, capsys):
    runs = tmp_path / "runs"
    fake_run(runs / "tbl" / "baseline_b256_s0", 90.0)
    fake_run(runs / "tbl" / "autowu-cos_b256_s0", 92.0, switch_step=15)
    events = runs / "tbl" / "autowu-cos_b256_s0" / "events.jsonl"
    events.write_text('{"type": "test", "ep\n' + events.read_text())
    fig = plot.draw_block(table, table.blocks[0], sweep.expand(table, str(runs)), ["baseline", "autowu-cos"])
    err = capsys.readouterr().err
    assert drawn(fig) == ["baseline"]
    named = [w for w in warnings(err) if str(events) in w]
    assert len(named) == 1 and "line 1 is not valid JSON" in named[0] and "counted as a failed run" in named[0]


def test_a_cut_last_row_of_steps_csv_is_named_by_collect_and_plot(table, tmp_path, capsys):
    """collect.py: the baseline's decay start comes from steps.csv; a cut row names the file and leaves only that
    start out (results.json, and so the run's number, is sound). plot.py: the run is left out, named once."""
    runs = tmp_path / "runs"
    fake_run(runs / "tbl" / "baseline_b256_s0", 90.0)
    fake_run(runs / "tbl" / "baseline_b256_s1", 92.0)
    steps = runs / "tbl" / "baseline_b256_s1" / "steps.csv"
    cut_last_line(steps, keep=4)  # "39,3" : too few columns
    text = collect.collect(table, str(runs))
    err = capsys.readouterr().err
    assert "| baseline | 91.00 (1.41) |" in text  # both runs count
    assert "2 of 4 runs finished" in text and "n=1" in text.split("Decay-start")[1]
    named = [w for w in warnings(err) if str(steps) in w]
    assert len(named) == 1 and "decay start is left out" in named[0] and "Traceback" not in err, err
    fig = plot.draw_block(table, table.blocks[0], sweep.expand(table, str(runs)), ["baseline"])
    err = capsys.readouterr().err
    assert drawn(fig) == ["baseline"]  # seed 0 alone
    named = [w for w in warnings(err) if str(steps) in w]
    assert len(named) == 1 and "counted as a failed run" in named[0], err


def summary(capsys, run: Path) -> tuple[int, str]:
    code = run_summary.main([str(run)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("damage, reason", [
    (lambda run: (run / "results.json").write_text('{"status": "finished", "epo'), "not valid JSON"),
    (lambda run: (run / "results.json").write_text(""), "empty file"),
    (lambda run: (run / "results.json").write_text("[]"), "expected a JSON object"),
    (lambda run: (run / "results.json").write_text('{"status": "finished"}'), "lacks epochs, steps, wall_time_s"),
    (lambda run: (run / "results.json").write_text('{"status": "finished", "epochs": "4", "steps": 40, '
                                                   '"wall_time_s": null}'), "is not a number"),
    (lambda run: cut_last_line(run / "steps.csv", keep=6), "steps.csv: cannot be read"),
    (lambda run: (run / "steps.csv").write_text("garbage\n1,2\n"), "steps.csv: cannot be read"),
], ids=["truncated", "empty", "list", "keys", "types", "steps-cut", "steps-garbage"])
def test_run_summary_on_a_damaged_run_is_one_error_line(tmp_path, capsys, damage, reason):
    run = tmp_path / "run"
    fake_run(run, 90.0, switch_step=15)
    assert summary(capsys, run)[0] == 0 and (run / "lr_loss.png").exists()  # sound: summarised
    (run / "lr_loss.png").unlink()
    damage(run)
    before = _tree(run)
    code, err = summary(capsys, run)
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert reason in lines[0] and str(run) in lines[0]
    assert _tree(run) == before  # no figure written


# -- 2. the run directory's log files ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["steps.csv", "epochs.jsonl", "events.jsonl", "train.log"])
def test_a_log_file_that_is_a_directory_is_refused_before_a_fresh_run(tmp_path, capsys, name):
    run = tmp_path / "run"
    (run / name).mkdir(parents=True)
    (run / name / "keep").write_text("someone's file")
    line = refused(capsys, [*TINY, "--epochs", "1", "--output", str(run)], run)
    assert f"{run / name} is a directory" in line and "move or remove" in line


@pytest.mark.parametrize("name", ["epochs.jsonl", "train.log"])
def test_a_log_file_that_is_a_directory_is_refused_before_a_resume(tmp_path, capsys, name):
    run = tmp_path / "run"
    assert run_inprocess([*TINY, "--epochs", "1", "--output", str(run)]) == 0
    (run / name).unlink()
    (run / name).mkdir()
    capsys.readouterr()
    line = refused(capsys, [*TINY, "--epochs", "1", "--output", str(run)], run)  # last.pt etc. untouched
    assert f"{run / name} is a directory" in line


def test_a_log_deleted_while_the_logger_writes_is_named_and_the_logs_are_incomplete(tmp_path):
    logger = RunLogger(str(tmp_path), True, tensorboard=False)
    logger.log_steps([(0, 0, 0.1, 2.0), (1, 0, 0.1, 1.9)])
    logger.log_epoch({"epoch": 0, "step": 2})
    logger.log_event({"type": "test", "epoch": 0, "step": 1})
    assert logger.results() == {"logs_complete": True}
    (tmp_path / "steps.csv").unlink()
    (tmp_path / "epochs.jsonl").unlink()
    logger.log_steps([(2, 1, 0.1, 1.8)])
    logger.log_epoch({"epoch": 1, "step": 3})
    logger.log_steps([(3, 1, 0.1, 1.7)])  # one warning per loss, not per write
    assert logger.logs_complete is False and logger.results() == {"logs_complete": False}
    logger.close()
    log = (tmp_path / "train.log").read_text()
    for name in ("steps.csv", "epochs.jsonl"):
        named = [line for line in log.splitlines() if f"{tmp_path / name} was deleted" in line]
        assert len(named) == 1 and "incomplete" in named[0], log
    assert "events.jsonl" not in log
    assert read_steps(str(tmp_path))["step"] == [2, 3]  # started anew, with its header: readable
    assert read_jsonl(tmp_path / "epochs.jsonl") == [{"epoch": 1, "step": 3}]


def test_a_log_cut_or_deleted_after_its_last_write_is_noticed_by_results(tmp_path):
    logger = RunLogger(str(tmp_path), True, tensorboard=False, console=False)
    logger.log_steps([(0, 0, 0.1, 2.0), (1, 0, 0.1, 1.9)])
    logger.log_event({"type": "test", "epoch": 0, "step": 1})
    (tmp_path / "steps.csv").write_text("step,epoch,lr,loss\n")  # same file, cut
    assert logger.results() == {"logs_complete": False}
    logger.close()


def test_a_steps_csv_deleted_during_a_run_is_named_in_its_log(tmp_path, monkeypatch):
    """train.py end to end: steps.csv deleted after the first epoch; the run goes on and says the log is incomplete.
    (results.json carries ``logs_complete`` once train.py's finish() adds ``**run.logger.results()``.)"""
    run = tmp_path / "run"
    original = RunLogger.log_epoch

    def log_epoch_then_delete(self, record):
        original(self, record)
        if record["epoch"] == 0:
            os.remove(self.path("steps.csv"))

    monkeypatch.setattr(RunLogger, "log_epoch", log_epoch_then_delete)
    assert run_inprocess([*TINY, "--epochs", "2", "--output", str(run)]) == 0
    log = (run / "train.log").read_text()
    assert f"{run / 'steps.csv'} was deleted" in log and "incomplete" in log
    assert read_steps(str(run))["step"] == [4, 5, 6, 7]  # epoch 1's steps, under a header
    assert json.loads((run / "results.json").read_text()).get("logs_complete", False) is False


# -- 3. a resume under another process count ----------------------------------------------------------------------
def test_the_note_of_a_resume_under_another_world_size_says_what_is_kept_and_what_is_not():
    ckpt = {"config": {"batch_size": 32}, "position": {"epoch": 1, "step": 6, "sample": 64},
            "split": BatchSplit(32, 16, 1, 2).to_dict()}
    pos, note = check_resume(ckpt, {"batch_size": 32}, BatchSplit(32, 16, 2, 1), 4, "x/last.pt")
    assert pos == Position(1, 6, 64)
    assert "continuing exactly" not in note and "not bit-identical" in note
    assert "the batch split changed: batch 32 = 16 x 1 processes x 2 accumulation then" in note
    assert "1 -> 2 processes" in note and "same 32 samples" in note and "none repeated or skipped" in note


@pytest.mark.parametrize("micro", [1, 2, 4, 8])
def test_what_the_note_claims_every_step_uses_the_same_samples_under_any_split(micro):
    """The sharding (framework/loaders.py) behind the note: under 1, 2 or 4 processes and any micro-batch, step s
    uses samples s*B .. (s+1)*B-1 of the epoch's permutation; only which process gets which sample changes."""
    from framework.loaders import shard_indices
    n, batch, epoch, seed = 100, 16, 3, 7
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
    per_rank = {}
    for world in (1, 2, 4):
        split = split_batch(batch, world, micro)  # the largest micro-batch <= micro that fits
        m, accum = split.micro_batch, split.accum_steps
        shards = [shard_indices(n, epoch=epoch, seed=seed, rank=r, world_size=world) for r in range(world)]
        for step in range(n // batch):
            used = torch.cat([s[b * m:(b + 1) * m] for s in shards
                              for b in range(step * accum, (step + 1) * accum)])
            assert sorted(used.tolist()) == sorted(perm[step * batch:(step + 1) * batch].tolist())
        per_rank[world] = shards[0][:batch // world].tolist()
    assert per_rank[1][:8] != per_rank[2][:8]  # rank 0's share of step 0 is not the same samples


# -- 4./5. ranks that disagree ----------------------------------------------------------------------------------------
WORKER = textwrap.dedent("""
    import json, sys
    from framework.config import ConfigError
    from framework.distributed import check_ranks_agree, cleanup, init_distributed
    info = init_distributed("cpu", None, 60)
    rank = info.rank
    base = {"dataset": "synthetic", "seed": 0, "train_subset": None, "batch_size": 32, "opt_betas": (0.9, 0.999),
            "train_size": 128, "steps_per_epoch": 4}
    per_rank = {"local_rank": rank, "data_dir": f"/scratch/node{rank}", "workers": 2 + rank, "pin_mem": rank == 0}
    cases = {
        "agree": {},
        "seed": {"seed": rank},
        "subset": {"train_subset": 96 if rank else None, "train_size": 96 if rank else 128,
                   "steps_per_epoch": 3 if rank else 4},
        "data": {"train_size": 120 if rank else 128},
        "missing": {"sched": "autowu-cos"} if rank else {},
    }
    for name, change in cases.items():
        try:
            check_ranks_agree({**base, **per_rank, **change}, info)
            print(json.dumps([name, "ok"]), flush=True)
        except ConfigError as e:
            print(json.dumps([name, f"error: {e}"]), flush=True)
    cleanup()
""")


def test_ranks_started_with_different_settings_or_data_stop_naming_the_first_difference():
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, "-c", WORKER], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env=subprocess_env(RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r),
                                                 MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
             for r in range(2)]
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0 and "Traceback" not in err, err
        outs.append(dict(json.loads(line) for line in out.splitlines()))
    assert outs[0] == outs[1]  # every rank stops, with the same line
    got = outs[0]
    assert got["agree"] == "ok"  # local rank, data dir, workers and pinned memory may differ per rank
    assert got["seed"].startswith("error: the ranks were started with different settings: --seed is 0 on rank 0 "
                                  "but 1 on rank 1")
    assert "--train-subset is unset on rank 0 but 96 on rank 1" in got["subset"]  # the setting, before its effect
    assert "the training set's size (images) is 128 on rank 0 but 120 on rank 1" in got["data"]
    assert "--data-dir" in got["data"]
    assert "--sched is missing on rank 0 but 'autowu-cos' on rank 1" in got["missing"]


def test_the_rank_check_hashes_the_resolved_config_without_per_rank_keys():
    import train
    from framework.config import parse_args
    from framework.distributed import DistInfo, check_ranks_agree, config_digest

    def digest(*extra):
        return config_digest(train.config_dict(parse_args(train.get_args_parser(), [*TINY, "--output", "x", *extra])))

    same = digest()
    assert digest("--local-rank", "3", "--workers", "4", "--data-dir", "/node/data", "--dist-timeout", "60") == same
    assert digest("--seed", "1") != same and digest("--lr", "0.2") != same and digest("--train-subset", "64") != same
    check_ranks_agree({"seed": 0}, DistInfo())  # one process: nothing to compare, no process group needed
