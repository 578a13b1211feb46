"""Exact resume: a run killed (SIGKILL) mid-epoch or preempted (SIGTERM, as SLURM does) and started again with
the same command continues the identical trajectory: same LR at every step, same losses, same AutoWU decisions,
bit-identical final weights (CPU)."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, decisions, read_jsonl, read_steps, subprocess_env, train_cmd

from framework.batch import BatchSplit

STEPS_PER_EPOCH = 1024 // 16
EPOCHS = 2
ARGS = ["--dataset", "synthetic", "--model", "fmnist_cnn", "--img-size", "28", "--in-chans", "1",
        "--num-classes", "10", "--synthetic-train-size", "1024", "--synthetic-val-size", "64", "--workers", "0",
        "--batch-size", "16", "--micro-batch", "8", "--epochs", str(EPOCHS), "--log-interval", "1", "--device", "cpu",
        "--sched", "autowu-cos", "--autowu-patience", "1", "--seed", "3"]


def launch(run: Path) -> subprocess.Popen:
    return subprocess.Popen(train_cmd(*ARGS, "--output", str(run)), cwd=ROOT, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def rows_written(run: Path) -> int:
    path = run / "steps.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def wait_for(condition, proc: subprocess.Popen, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < end, "timed out waiting for the run"
        time.sleep(0.01)


def final_weights(run: Path) -> dict:
    return torch.load(run / "last.pt", map_location="cpu", weights_only=True)["model"]


def assert_same_run(resumed: Path, reference: Path) -> None:
    a, b = read_steps(resumed), read_steps(reference)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(EPOCHS * STEPS_PER_EPOCH))
    assert [r["lr"] for r in a] == [r["lr"] for r in b]
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert decisions(resumed) == decisions(reference) and decisions(reference)
    wa, wb = final_weights(resumed), final_weights(reference)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ra, rb = (json.loads((r / "results.json").read_text()) for r in (resumed, reference))
    assert (ra["final_top1"], ra["switch"], ra["steps"]) == (rb["final_top1"], rb["switch"], rb["steps"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("reference") / "run"
    finish(launch(run))
    return run


def test_sigkill_mid_epoch_then_resume_is_identical(tmp_path, reference):
    run = tmp_path / "run"
    proc = launch(run)
    # kill once epoch 0's checkpoint exists and epoch 1 is under way
    wait_for(lambda: (run / "last.pt").exists() and rows_written(run) >= STEPS_PER_EPOCH + 5, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] < rows_written(run), "the kill must come after steps the checkpoint does not hold"
    out = finish(launch(run))  # same command: resumes automatically from OUTPUT/last.pt
    assert f"resumed from {run / 'last.pt'}" in out
    assert_same_run(run, reference)


def test_sigterm_saves_mid_epoch_and_resumes_identically(tmp_path, reference):
    run = tmp_path / "run"
    proc = launch(run)
    wait_for(lambda: rows_written(run) >= 10, proc)
    proc.send_signal(signal.SIGTERM)
    out = finish(proc)
    events = read_jsonl(run / "events.jsonl")
    assert events[-1]["type"] == "preempted" and events[-1]["signal"] == signal.SIGTERM
    ckpt = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == events[-1]["step"] and ckpt["step"] < EPOCHS * STEPS_PER_EPOCH
    done_in_epoch = (ckpt["step"] - 1) % STEPS_PER_EPOCH + 1  # optimizer steps of the interrupted epoch
    assert ckpt["position"]["sample"] == 16 * done_in_epoch  # samples the epoch's steps used (batch 16)
    assert BatchSplit(**ckpt["split"]).micro_batches(ckpt["position"]["sample"]) == 2 * done_in_epoch  # 2 per step
    assert not (run / "results.json").exists() and "saved" in out
    finish(launch(run))
    assert_same_run(run, reference)


def test_sigterm_during_validation_saves_within_a_batch_and_validates_after_the_resume(tmp_path, reference):
    run = tmp_path / "run"
    args = [*ARGS, "--synthetic-val-size", "4096", "--val-batch-size", "8", "--output", str(run)]  # 512 val batches

    def start() -> subprocess.Popen:
        return subprocess.Popen(train_cmd(*args), cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    proc = start()
    wait_for(lambda: rows_written(run) >= STEPS_PER_EPOCH, proc)  # epoch 0 trained: its validation is next
    proc.send_signal(signal.SIGTERM)
    finish(proc)
    saved = [e for e in read_jsonl(run / "events.jsonl") if e["type"] == "preempted"]
    # saved at the end of epoch 0's training, before its validation finished (not after a step of epoch 1)
    assert [(e["step"], e["batch_index"]) for e in saved] == [(STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH)]
    assert read_jsonl(run / "epochs.jsonl") == []
    out = finish(start())
    assert f"step {STEPS_PER_EPOCH}, sample {16 * STEPS_PER_EPOCH}" in out  # resumed at the end of epoch 0
    epochs = read_jsonl(run / "epochs.jsonl")
    assert [e["epoch"] for e in epochs] == [0, 1] and all(e["val_loss"] is not None for e in epochs)
    # epoch 0's row is the one it trained before the stop, not an empty resumed epoch (issue 22: lr null, 0 img/s)
    ref0 = read_jsonl(reference / "epochs.jsonl")[0]
    assert (epochs[0]["lr"], epochs[0]["train_loss"]) == (ref0["lr"], ref0["train_loss"]) and epochs[0]["lr"]
    assert epochs[0]["images_per_s"] > 0 and epochs[0]["epoch_time"] > 0
    results = json.loads((run / "results.json").read_text())
    assert results["images_per_s"] == pytest.approx(sum(e["images_per_s"] for e in epochs) / 2)
    a, b = read_steps(run), read_steps(reference)
    assert [(r["step"], r["lr"], r["loss"]) for r in a] == [(r["step"], r["lr"], r["loss"]) for r in b]
    wa, wb = final_weights(run), final_weights(reference)
    assert all(torch.equal(wa[k], wb[k]) for k in wb)


def test_resume_refuses_a_changed_config_and_none_starts_afresh(tmp_path, capsys):
    from conftest import TINY, run_inprocess
    run = tmp_path / "run"
    assert run_inprocess([*TINY, "--epochs", "1", "--output", str(run)]) == 0
    before = (run / "last.pt").read_bytes()
    assert run_inprocess([*TINY, "--epochs", "1", "--batch-size", "64", "--output", str(run)]) == 2
    assert "batch-size: 32 → 64" in capsys.readouterr().err
    assert (run / "last.pt").read_bytes() == before  # nothing touched
    assert run_inprocess([*TINY, "--epochs", "2", "--resume", "none", "--output", str(run)]) == 0
    assert [r["step"] for r in read_steps(run)] == list(range(8))  # a fresh 2-epoch run, old rows dropped


def test_mid_epoch_resume_under_another_micro_batch_split_continues_exactly(tmp_path, reference):
    """Preempted at a step inside an epoch with micro-batches of 8 (2 per step), resumed with micro-batches of 16
    (1 per step): every step is logged once (none repeated, none skipped), the steps before the checkpoint are the
    uninterrupted run's, and the next step uses the same LR on the same samples (tests/test_runspec.py checks the
    samples; the losses differ a little from here on because fmnist_cnn's dropout masks are drawn per micro-batch)."""
    run = tmp_path / "run"
    proc = launch(run)
    wait_for(lambda: rows_written(run) >= 10, proc)
    proc.send_signal(signal.SIGTERM)
    finish(proc)
    k = torch.load(run / "last.pt", map_location="cpu", weights_only=True)["step"]
    assert k % STEPS_PER_EPOCH, "the checkpoint must be inside an epoch"
    resumed = subprocess.Popen(train_cmd(*ARGS, "--micro-batch", "16", "--output", str(run)), cwd=ROOT,
                               env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = finish(resumed)
    assert "the batch split changed: batch 16 = 8 x 1 processes x 2 accumulation then" in out
    a, b = read_steps(run), read_steps(reference)
    assert [r["step"] for r in a] == list(range(EPOCHS * STEPS_PER_EPOCH))
    assert a[:k] == b[:k]
    assert a[k]["lr"] == b[k]["lr"] and a[k]["loss"] == pytest.approx(b[k]["loss"], rel=0.05)
    assert json.loads((run / "results.json").read_text())["split"] == {"batch_size": 16, "micro_batch": 16,
                                                                       "world_size": 1, "accum_steps": 1}


def test_resume_with_another_cpu_thread_count_warns_that_it_is_not_bit_identical(tmp_path):
    """A checkpoint and env.json record the torch thread count; a CPU run resumed under another count says that its
    continuation differs by rounding (it does: the kernels split their sums by thread) and how to avoid it."""
    from conftest import TINY, run_inprocess
    run, threads = tmp_path / "run", torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert run_inprocess([*TINY, "--epochs", "1", "--output", str(run)]) == 0
        assert torch.load(run / "last.pt", map_location="cpu", weights_only=True)["cpu_threads"] == 1
        assert json.loads((run / "env.json").read_text())["cpu_threads"] == 1
        (run / "results.json").unlink()  # a run whose results are there has nothing to do: resume one without
        assert run_inprocess([*TINY, "--epochs", "1", "--output", str(run)]) == 0  # same count: no warning
        assert "CPU thread" not in (run / "train.log").read_text()
        torch.set_num_threads(2)
        (run / "results.json").unlink()
        assert run_inprocess([*TINY, "--epochs", "1", "--output", str(run)]) == 0
    finally:
        torch.set_num_threads(threads)
    log = (run / "train.log").read_text()
    assert "resuming with 2 CPU thread(s), the checkpoint was saved with 1" in log and "OMP_NUM_THREADS=1" in log


def test_a_cut_run_carried_in_its_record_resumes_on_another_machine(tmp_path, monkeypatch, capsys):
    """A sweep's run cut by SIGTERM; ``--export`` carries its checkpoint and logs into its record's ``partial/``;
    a sweep elsewhere (no run directory, only the repository's records) lists it as carried, copies it back and the
    run ends where the uncut run ends (same steps, LRs, losses, decisions, bit-identical weights); the finished
    run's export replaces ``partial/`` with the compact record, and env.json keeps the cut part's machine."""
    from experiments import sweep, tables
    table = tmp_path / "tbl.yaml"
    table.write_text("title: t\nbase: configs/fashion_mnist_resnet.yaml\nseeds: [3]\ncolumns: [16]\n"
                     "rows: {a: {sched: autowu-cos}}\n"
                     "overrides: {dataset: synthetic, model: fmnist_cnn, img-size: 28, in-chans: 1, num-classes: 10, "
                     "synthetic-train-size: 1024, synthetic-val-size: 64, micro-batch: 8, epochs: 2, "
                     "log-interval: 1, device: cpu, autowu-patience: 1, label-smoothing: 0.0, crop-pad: 0, "
                     "hflip: false}\n")
    records = tmp_path / "records"
    monkeypatch.setattr(tables, "RECORDS_DIR", str(records))  # where Run.record looks
    uncut, cut, elsewhere = (tmp_path / d for d in ("uncut", "cut", "elsewhere"))
    assert sweep.main([str(table), "--local", "--threads", "1", "--runs-dir", str(uncut)]) == 0
    reference = uncut / "tbl" / "a_b16_s3"

    run = sweep.expand(tables.load_table(str(table)), str(cut))[0]  # the cut part: 1 thread, as the sweeps
    argv = sweep.train_argv(run, tables.get_train_parser(), [])
    out = cut / "tbl" / "a_b16_s3"
    proc = subprocess.Popen(train_cmd(*argv), cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: rows_written(out) >= STEPS_PER_EPOCH + 10, proc)
    proc.send_signal(signal.SIGTERM)
    finish(proc)
    assert not (out / "results.json").exists() and (out / "last.pt").exists()
    capsys.readouterr()
    assert sweep.main([str(table), "--runs-dir", str(cut), "--export", str(records)]) == 0
    assert "exported 0 record(s) and carried 1 unfinished run(s)" in capsys.readouterr().out
    carried = records / "tbl" / "a_b16_s3" / "partial"
    assert sorted(p.name for p in carried.iterdir()) == ["args.yaml", "env.json", "epochs.jsonl", "events.jsonl",
                                                         "last.pt", "steps.csv"]
    assert "output: runs/tbl/a_b16_s3\n" in (carried / "args.yaml").read_text()  # no directory of this machine
    assert sweep.main([str(table), "--runs-dir", str(cut), "--export", str(records)]) == 0
    assert "carried 0 unfinished" in capsys.readouterr().out  # the same checkpoint is not copied again

    assert sweep.main([str(table), "--dry-run", "--runs-dir", str(elsewhere)]) == 0
    assert "carried tbl/a_b16_s3" in capsys.readouterr().out
    assert sweep.main([str(table), "--local", "--threads", "1", "--runs-dir", str(elsewhere)]) == 0
    printed = capsys.readouterr().out
    assert "continues from the checkpoint carried in" in printed and "resumed from" in printed
    resumed = elsewhere / "tbl" / "a_b16_s3"
    assert_same_run(resumed, reference)
    env = json.loads((resumed / "env.json").read_text())
    assert [e["host"] for e in env["earlier"]] == [env["host"]] and env["earlier"][0]["cpu"] == env["cpu"]

    assert sweep.main([str(table), "--runs-dir", str(elsewhere), "--export", str(records)]) == 0
    assert "exported 1 record(s) and carried 0" in capsys.readouterr().out
    assert not carried.exists() and (records / "tbl" / "a_b16_s3" / "results.json").exists()
