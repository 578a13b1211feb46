"""Fault injection (CPU, no network): every fault and bad input of issue 12 ends in a clear outcome.

A *clear* outcome is: exit code 2 and one ``error:`` line that names the flag or file (user errors: nothing created or
changed), or the run recovers and says so in its log (a stale lock, a damaged last.pt with a sound prev.pt), or a
fault of the environment (disk full, a frozen rank) ends the run with one ``error:`` line and the previous
checkpoint intact. Never a traceback, a silent success, a hang or lost results.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY, free_port, read_jsonl, run_inprocess, subprocess_env, train_cmd

from autowu import AutoWU
from framework import checkpoint as ckpt_mod
from framework.checkpoint import load_checkpoint, load_resumable, previous_path, verify_checkpoint
from framework.engine import StopFlag
from framework.seeding import set_rng_state
from framework.rundir import RunLock


def refused(capsys, argv: list[str], run: Path, *, exists_before: bool = False) -> str:
    """Run train.py in-process; assert exit 2, one error line, no traceback, and ``run`` not created; return it."""
    snapshot = _tree(run) if exists_before else None
    code = run_inprocess(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    if exists_before:
        assert _tree(run) == snapshot, "a refused run changed the run directory"
    else:
        assert not run.exists(), "a refused run created its run directory"
    return lines[0]


def _tree(path: Path) -> dict:
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# -- bad flags: one line, exit 2, nothing written (findings 4, 5) ----------------------------------------------------
BAD_FLAGS = [
    (["--clip-grad", "-1"], "--clip-grad must be > 0"),
    (["--workers", "-1"], "--workers must be >= 0"),
    (["--max-nonfinite", "-1"], "--max-nonfinite must be >= 0"),
    (["--smoke", "-3"], "--smoke must be >= 0"),
    (["--label-smoothing", "2"], "--label-smoothing must be in [0, 1)"),
    (["--seed", "-1"], "--seed must be in [0, 4294967295]"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--lr", "nan"], "--lr must be > 0"),
    (["--lr", "-0.1"], "--lr must be > 0"),
    (["--weight-decay", "-1"], "--weight-decay must be >= 0"),
    (["--opt-betas", "0.9", "1.5"], "--opt-betas must be two numbers in [0, 1)"),
    (["--reprob", "2"], "--reprob must be in [0, 1]"),
    (["--drop-path", "1"], "--drop-path must be in [0, 1)"),
    (["--micro-batch", "0"], "--micro-batch must be >= 1"),
    (["--dist-timeout", "0"], "--dist-timeout must be >= 1"),
    (["--model", "resnet9000"], "did you mean resnet"),
    (["--model", "fmnist_cn"], "did you mean fmnist_cnn"),
    (["--amp", "fp16"], "--amp fp16 needs a GPU"),
    (["--sched-kwargs", "{bogus: 1}"], "has no setting 'bogus'"),
    (["--sched-kwargs", "{eta_mn: 1e-4}"], "did you mean eta_min"),
    (["--sched", "autolr", "--sched-kwargs", "{explore: 1}"], "did you mean explore_epochs"),
    (["--sched-kwargs", "{model: 1}"], "train.py sets it itself"),
    (["--autowu-eta-min", "0"], "eta_min"),
    (["--drop-path", "0.1"], "--model fmnist_cnn cannot be built with these settings"),
]


@pytest.mark.parametrize("extra,message", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flag_is_one_line_and_writes_nothing(tmp_path, capsys, extra, message):
    run = tmp_path / "run"
    line = refused(capsys, [*TINY, *extra, "--output", str(run)], run)
    assert message in line


def test_device_cuda_without_a_gpu(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = tmp_path / "run"
    assert "--device cuda but PyTorch sees no GPU" in refused(capsys, [*TINY, "--device", "cuda", "--output",
                                                                        str(run)], run)


SMOKE_CONFLICTS = [
    (["--resume", "/somewhere/last.pt"], "--smoke never resumes"),
    (["--img-size", "64"], "--img-size 64 would be ignored"),
    (["--num-classes", "7"], "--num-classes 7 would be ignored"),
]


@pytest.mark.parametrize("extra,message", SMOKE_CONFLICTS, ids=[a[0] for a, _ in SMOKE_CONFLICTS])
def test_smoke_refuses_what_it_would_ignore(tmp_path, capsys, extra, message):
    run = tmp_path / "run"
    line = refused(capsys, ["--dataset", "cifar10", "--model", "fmnist_cnn", "--smoke", "2", *extra,
                            "--output", str(run)], run)
    assert message in line


def test_output_that_is_a_file_or_under_one(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("keep me")
    assert "is a file, not a directory" in refused(capsys, [*TINY, "--output", str(a_file)], a_file,
                                                   exists_before=True)
    assert "is a file, not a directory" in refused(capsys, [*TINY, "--output", str(a_file / "run")], a_file,
                                                   exists_before=True)
    assert a_file.read_text() == "keep me"


def test_output_that_cannot_be_written(capsys):
    run = Path("/proc/sys/autowu-run")  # read-only even for root (CI runs as root: chmod is no test there)
    line = refused(capsys, [*TINY, "--output", str(run)], run)
    assert "--output /proc/sys/autowu-run" in line


def test_data_dir_that_does_not_exist_is_no_silent_fallback(tmp_path, capsys):
    run = tmp_path / "run"
    line = refused(capsys, ["--dataset", "fashion_mnist", "--data-dir", str(tmp_path / "nope"), "--workers", "0",
                            "--device", "cpu", "--output", str(run)], run)
    assert f"--data-dir {tmp_path / 'nope'} does not exist" in line


def test_data_dir_without_the_data_names_where_it_is(tmp_path, capsys):
    """An existing --data-dir without Fashion-MNIST: the system's copy is not taken silently in its place."""
    from framework.datasets import find_fashion_mnist
    empty, run = tmp_path / "empty", tmp_path / "run"
    empty.mkdir()
    line = refused(capsys, ["--dataset", "fashion_mnist", "--data-dir", str(empty), "--workers", "0", "--device",
                            "cpu", "--output", str(run)], run)
    system = find_fashion_mnist(str(empty))
    assert (f"pass --data-dir {system}" in line) if system else ("Fashion-MNIST not found" in line)


def test_the_log_says_which_files_were_read(tmp_path):
    run = tmp_path / "run"
    assert run_inprocess([*TINY, "--epochs", "1", "--output", str(run)]) == 0
    assert "data: synthetic images (seed 0)" in (run / "train.log").read_text()


# -- the run-directory lock (finding 1) -----------------------------------------------------------------------------
def test_second_run_into_a_running_directory_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    first = subprocess.Popen(train_cmd(*TINY, "--epochs", "100", "--log-interval", "1", "--output", str(run)),
                             cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        for line in first.stdout:  # the first run is training (it holds the lock)
            if "epoch 0 [" in line:
                break
        assert first.poll() is None
        before = {n: (run / n).read_bytes() for n in ("args.yaml", "env.json")}
        line = refused(capsys, [*TINY, "--output", str(run)], run / "args.yaml", exists_before=True)
        assert f"in use by PID {first.pid} on host {socket.gethostname()}" in line
        assert {n: (run / n).read_bytes() for n in before} == before
    finally:
        first.send_signal(signal.SIGTERM)  # it saves and exits 0
        out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out
    assert not (run / ".lock").exists()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_lock_and_orphaned_temp_file_are_cleaned_up_with_a_message(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "started": "x"}))
    (run / "last.pt.tmp.999999").write_bytes(b"half a checkpoint")
    assert run_inprocess([*TINY, "--epochs", "1", "--output", str(run)]) == 0
    log = (run / "train.log").read_text()
    assert "took over the stale lock" in log and "which no longer runs" in log
    assert "removed" in log and "last.pt.tmp.999999" in log
    assert not (run / "last.pt.tmp.999999").exists() and not (run / ".lock").exists()


def test_lock_of_another_host_is_honoured(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text(json.dumps({"pid": 1234, "host": "gpu-node-7", "started": "x"}))
    line = refused(capsys, [*TINY, "--output", str(run)], run, exists_before=True)
    assert "in use by PID 1234 on host gpu-node-7" in line and "delete" in line


def test_lock_is_taken_by_one_of_two_racing_takers(tmp_path):
    a, b = RunLock(str(tmp_path)), RunLock(str(tmp_path))
    a.acquire()
    with pytest.raises(ValueError, match="in use by PID"):
        b.acquire()
    a.release()
    b.acquire()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    b.release()
    assert not (tmp_path / ".lock").exists()


# -- checkpoints (findings 5, 6, 11) ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A 2-epoch tiny run: last.pt (epoch 2) and prev.pt (epoch 1)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert run_inprocess([*TINY, "--epochs", "2", "--output", str(run)]) == 0
    return run


def copy_run(src: Path, dst: Path, keep_prev: bool = True) -> Path:
    shutil.copytree(src, dst)
    if not keep_prev:
        (dst / "prev.pt").unlink()
    return dst


def flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "random bytes": lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)),
    "empty": lambda p: p.write_bytes(b""),
    "flipped byte": flip_middle,
    "not a dict": lambda p: torch.save([1, 2, 3], p),
    "no scheduler": lambda p: torch.save({k: v for k, v in torch.load(p, weights_only=True).items()
                                          if k != "scheduler"}, p),
}
DAMAGE_MESSAGE = {"truncated": "damaged", "random bytes": "damaged", "empty": "is empty", "flipped byte": "CRC-32",
                  "not a dict": "holds a list", "no scheduler": "lacks its 'scheduler' entry"}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_checkpoint_without_fallback_is_refused_and_the_logs_kept(finished_run, tmp_path, capsys, damage):
    run = copy_run(finished_run, tmp_path / "run", keep_prev=False)
    DAMAGE[damage](run / "last.pt")
    line = refused(capsys, [*TINY, "--epochs", "3", "--output", str(run)], run, exists_before=True)
    assert str(run / "last.pt") in line and DAMAGE_MESSAGE[damage] in line
    assert "--resume none" in line


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "missing"])
def test_damaged_last_falls_back_to_prev_with_a_warning_naming_both(finished_run, tmp_path, damage):
    run = copy_run(finished_run, tmp_path / "run")
    if damage == "missing":  # a kill between the two renames of a save
        (run / "last.pt").unlink()
    else:
        DAMAGE[damage](run / "last.pt")
    assert run_inprocess([*TINY, "--epochs", "2", "--output", str(run)]) == 0
    log = (run / "train.log").read_text()
    assert f"resuming from the previous checkpoint {run / 'prev.pt'} (epoch 1, step 4)" in log
    if damage != "missing":
        assert f"checkpoint {run / 'last.pt'} is damaged" in log
    res = json.loads((run / "results.json").read_text())
    assert res["status"] == "finished" and res["steps"] == 8
    assert [e["epoch"] for e in read_jsonl(run / "epochs.jsonl")] == [0, 1]
    verify_checkpoint(str(run / "last.pt"))


def test_a_flipped_byte_is_detected_not_loaded(finished_run, tmp_path):
    path = tmp_path / "last.pt"
    shutil.copy(finished_run / "last.pt", path)
    flip_middle(path)
    with pytest.raises(ValueError, match="fails its CRC-32 check"):
        load_checkpoint(str(path))


def test_checkpoint_loads_with_weights_only(finished_run):
    ckpt = torch.load(finished_run / "last.pt", map_location="cpu", weights_only=True)
    assert set(ckpt_mod.CHECKPOINT_KEYS) <= set(ckpt) and ckpt["epoch"] == 2
    assert isinstance(ckpt["rng_per_rank"][0]["numpy"]["keys"], torch.Tensor)


def test_old_checkpoint_with_numpy_rng_state_still_resumes(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run", keep_prev=False)
    old = torch.load(finished_run / "prev.pt", weights_only=True)  # epoch 1 of 2
    np.random.seed(7)
    for state in old["rng_per_rank"]:
        state["numpy"] = np.random.get_state()  # the format before weights_only: a tuple holding an ndarray
    torch.save(old, run / "last.pt")
    with pytest.raises(Exception, match="weights_only"):
        torch.load(run / "last.pt", weights_only=True)
    loaded = load_checkpoint(str(run / "last.pt"))
    np.random.seed(0)
    set_rng_state(loaded["rng_per_rank"][0])
    np.random.seed(7)
    assert np.random.rand() == pytest.approx((set_rng_state(loaded["rng_per_rank"][0]), np.random.rand())[1])
    assert run_inprocess([*TINY, "--epochs", "2", "--output", str(run)]) == 0
    assert json.loads((run / "results.json").read_text())["steps"] == 8


def test_disk_full_while_saving_is_one_line_and_keeps_the_previous_checkpoint(finished_run, tmp_path, capsys,
                                                                              monkeypatch):
    run = copy_run(finished_run, tmp_path / "run")
    shutil.copy(run / "prev.pt", run / "last.pt")  # at the end of epoch 0 of 2: the next save is at epoch 1's end
    before = {n: (run / n).read_bytes() for n in ("last.pt", "prev.pt")}
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        if hasattr(f, "write"):  # the checkpoint's temp file: half of it, then ENOSPC
            f.write(b"x" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_disk)
    code = run_inprocess([*TINY, "--epochs", "2", "--output", str(run)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and "No space left on device (ENOSPC)" in lines[0], err
    assert f"the previous checkpoint {run / 'last.pt'} is intact" in lines[0]
    assert {n: (run / n).read_bytes() for n in before} == before
    assert not list(run.glob("*.tmp.*")) and not (run / ".lock").exists()


def test_disk_full_while_logging_is_one_line(tmp_path, capsys, monkeypatch):
    from framework.logger import RunLogger

    def full_disk(self, rows):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "steps.csv"))

    monkeypatch.setattr(RunLogger, "log_steps", full_disk)
    code = run_inprocess([*TINY, "--epochs", "1", "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert code == 1 and "Traceback" not in err and len(lines) == 1, err
    assert "No space left on device (ENOSPC" in lines[0] and "steps.csv" in lines[0]
    assert not (tmp_path / "run" / ".lock").exists()


def test_load_resumable_reports_both_files_when_neither_is_usable(tmp_path):
    last, prev = tmp_path / "last.pt", tmp_path / "prev.pt"
    last.write_bytes(b"")
    prev.write_bytes(b"junk")
    assert previous_path(str(last)) == str(prev)
    with pytest.raises(ValueError, match="is empty.*previous checkpoint is unusable too.*--resume none"):
        load_resumable(str(last))


# -- signals (finding 7) ---------------------------------------------------------------------------------------------
def test_sigint_saves_mid_epoch_and_exits_130(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(*TINY, "--epochs", "100", "--log-interval", "1", "--output", str(run)),
                            cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    for line in proc.stdout:
        if "epoch 0 [2/4" in line:  # mid-epoch
            break
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "saving at the next optimizer step" in out
    ckpt = load_checkpoint(str(run / "last.pt"))
    assert ckpt["step"] >= 2 and (ckpt["position"]["sample"] > 0 or ckpt["epoch"] > 0)  # mid-epoch: samples in
    assert read_jsonl(run / "events.jsonl")[-1]["type"] == "preempted"
    assert not (run / ".lock").exists()


def test_second_sigint_exits_at_once():
    flag = StopFlag()
    flag.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # the handler runs between bytecodes
        assert flag.raised and flag.signal == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    finally:
        flag.uninstall()


# -- status truth (finding 8) ----------------------------------------------------------------------------------------
def test_nan_weights_never_end_as_finished(tmp_path):
    run = tmp_path / "run"
    assert run_inprocess([*TINY, "--opt", "sgd", "--sched", "const-cosine", "--lr", "1e30", "--max-nonfinite", "0",
                          "--epochs", "2", "--output", str(run)]) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["status"] == "diverged"
    assert "the weights are not finite" in (run / "train.log").read_text()


# -- a frozen rank (finding 9) ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["frozen", "dead"])
def test_frozen_or_dead_rank_ends_the_job_and_the_log_names_it(tmp_path, fault):
    run, port = tmp_path / "run", str(free_port())
    argv = [*TINY, "--micro-batch", "8", "--epochs", "200", "--log-interval", "1", "--dist-timeout", "5",
            "--output", str(run)]
    procs = [subprocess.Popen(train_cmd(*argv), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=subprocess_env(SLURM_PROCID=str(r), SLURM_LOCALID=str(r), SLURM_NTASKS="2",
                                                 SLURM_JOB_NODELIST="localhost", SLURM_JOB_ID="1", MASTER_PORT=port))
             for r in (0, 1)]
    try:
        for line in procs[0].stdout:
            if "epoch 0 [" in line:  # both ranks are in the loop
                break
        os.kill(procs[1].pid, signal.SIGSTOP if fault == "frozen" else signal.SIGKILL)
        out, _ = procs[0].communicate(timeout=300)  # a hang guard only: it ends after --dist-timeout
    finally:
        if procs[1].poll() is None:
            procs[1].kill()
            os.kill(procs[1].pid, signal.SIGCONT)
        procs[1].communicate()
    assert procs[0].returncode == 1, out
    if fault == "frozen":  # the warning comes before the collective timeout; a dead rank breaks it at once
        assert "rank 1 has not answered for" in out
    assert "error (rank 0): rank 1 (silent for" in out and "stopped answering" in out
    assert "Traceback" not in out


def test_default_dist_timeout_is_at_most_ten_minutes():
    import train
    assert 0 < train.get_args_parser().get_default("dist_timeout") <= 600


# -- rollback snapshots once per job, not in every checkpoint (finding 12) -------------------------------------------
def _u_loss(lr: float, rng) -> float:
    return (np.log10(lr) + 2) ** 2 + 0.3 * rng.standard_normal()


def test_rollback_snapshots_go_to_files_and_restore_bit_identically(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1.0)
    s = AutoWU(opt, 50, 40, rollback=True, model=model)
    s.keep_snapshots_in(str(tmp_path / "rollback"))
    rng, saved = np.random.default_rng(0), {}
    for _ in range(2000):
        opt.zero_grad()
        model(torch.randn(4, 3)).sum().backward()
        opt.step()
        s.step(torch.tensor(_u_loss(s.get_last_lr()[0], rng)))
        if s.phase == "warmup" and s.last_epoch % 50 == 0:
            saved[s.last_epoch] = {k: v.clone() for k, v in model.state_dict().items()}
            state = s.state_dict()
            assert all(set(e) == {"step", "file"} for e in state["snapshots"])  # names, no tensors
            files = sorted(p.name for p in (tmp_path / "rollback").glob("step_*.pt"))
            assert len(files) <= s.patience + 3  # the window and one older
        if s.switch is not None:
            break
    sw = s.switch
    assert sw["reason"] == "gp-test" and sw["rollback_step"] in saved
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[sw["rollback_step"]][k])
    assert not list((tmp_path / "rollback").glob("step_*.pt"))  # deleted after the switch


ROLLBACK_WORKER = r'''
import gc, json, os, sys
import numpy as np, torch, torch.distributed as dist
sys.path.insert(0, sys.argv[3])
from autowu import AutoWU
rank, out = int(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo", init_method="file://" + out + ".rdzv", rank=rank, world_size=2)
torch.manual_seed(rank)  # different weights on each rank: the restored ones must be rank 0's snapshot
model = torch.nn.Linear(3, 1)
opt = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
s = AutoWU(opt, 50, 40, rollback=True, model=model, seed=0)
rng = np.random.default_rng(0)
held, saved = 0, {}
for t in range(2000):
    opt.zero_grad()
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    s.step(torch.tensor((np.log10(s.get_last_lr()[0]) + 2) ** 2 + 0.3 * rng.standard_normal()))
    if s.phase == "warmup" and s.last_epoch % 50 == 0:
        held = max(held, sum(1 for e in s.snapshots if "model" in e))
        saved[s.last_epoch] = [v.tolist() for v in model.state_dict().values()]
    if s.switch is not None:
        break
json.dump({"held": held, "switch": s.switch, "weights": [v.tolist() for v in model.state_dict().values()],
           "saved": saved}, open(out + f".{rank}.json", "w"))
dist.barrier()  # no rank tears gloo down while the other still talks to it (else: SIGABRT at exit)
del s
gc.collect()
dist.destroy_process_group()
'''


def test_rollback_under_ddp_keeps_one_copy_and_restores_rank_0s_snapshot_everywhere(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(ROLLBACK_WORKER)
    base = str(tmp_path / "run")
    procs = [subprocess.Popen([sys.executable, str(script), str(r), base, str(ROOT)],
                              env={**os.environ, "OMP_NUM_THREADS": "1"}) for r in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    a, b = (json.load(open(f"{base}.{r}.json")) for r in range(2))
    assert a["held"] > 0 and b["held"] == 0  # rank 1 holds no snapshot
    assert a["switch"] == b["switch"] and a["switch"]["rollback_step"] is not None
    assert a["weights"] == b["weights"] == a["saved"][str(a["switch"]["rollback_step"])]


def test_train_writes_rollback_snapshots_once_not_into_last_pt(tmp_path):
    run = tmp_path / "run"
    assert run_inprocess([*TINY, "--autowu-rollback", "--autowu-patience", "5", "--autowu-rho-w", "0.9",
                          "--output", str(run)]) == 0
    state = torch.load(run / "prev.pt", weights_only=True)["scheduler"]  # epoch 2 of 3: still warming up
    assert state["phase"] == "warmup" and [e["step"] for e in state["snapshots"]] == [4, 8]
    assert all(set(e) == {"step", "file"} for e in state["snapshots"])  # file names, not model copies
    assert all((run / "rollback" / e["file"]).is_file() for e in state["snapshots"])


def test_bench_checkpoint_prints_the_figures_with_snapshots_in_files(capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_checkpoint", ROOT / "scripts" / "bench_checkpoint.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["-c", "configs/fashion_mnist_demo.yaml", "--autowu-rollback", "--device", "cpu",
                       "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    assert "(5 snapshots)" in out and "save time n=2:" in out
    assert "snapshot tensors held in this process: 0.0 MB" in out


# -- issue 22: nothing lost, nothing silently mixed ------------------------------------------------------------------
def _finished_tiny(run: Path) -> None:
    assert run_inprocess([*TINY, "--sched", "baseline", "--warmup-epochs", "1", "--output", str(run)]) == 0
    assert (run / "last.pt").exists() and (run / "prev.pt").exists()


def test_resume_none_into_a_finished_run_removes_its_checkpoints_before_training(tmp_path, monkeypatch, capsys):
    """A fresh run cut before its first checkpoint must not leave the old run's last.pt for a plain rerun to resume
    (which would report the old run as finished)."""
    import train
    run = tmp_path / "run"
    _finished_tiny(run)

    def killed(*a, **k):
        raise KeyboardInterrupt  # the fresh run is cut in its first epoch
    monkeypatch.setattr(train, "train_one_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        run_inprocess([*TINY, "--sched", "baseline", "--warmup-epochs", "1", "--resume", "none", "--output", str(run)])
    assert not (run / "last.pt").exists() and not (run / "prev.pt").exists() and not (run / "results.json").exists()
    assert "removed the earlier run's last.pt, prev.pt" in (run / "train.log").read_text()
    monkeypatch.undo()
    capsys.readouterr()
    assert run_inprocess([*TINY, "--sched", "baseline", "--warmup-epochs", "1", "--output", str(run)]) == 0
    assert "resum" not in capsys.readouterr().out.lower()  # started afresh, not resumed from the old run


def test_smoke_refuses_a_directory_that_holds_a_run(tmp_path, capsys):
    run = tmp_path / "run"
    _finished_tiny(run)
    line = refused(capsys, [*TINY, "--smoke", "2", "--output", str(run)], run, exists_before=True)
    assert "--smoke would write into --output" in line and "holds a run" in line and "results.json" in line


def _fashion_copy(tmp_path: Path) -> Path:
    from framework.datasets import find_fashion_mnist
    src, d = find_fashion_mnist("/nonexistent"), tmp_path / "fm"
    d.mkdir()
    for f in src.iterdir():
        shutil.copy(f, d / f.name)
    return d


@pytest.mark.parametrize("damage, why", [
    (lambda b: b[: len(b) // 2], "cannot be read"),                         # a cut download
    (lambda b: b[:10] + bytes(x ^ 0xFF for x in b[10:200]) + b[200:], "cannot be read"),  # flipped bytes
    (lambda b: __import__("gzip").compress(b"\x00\x00"), "is not an idx file"),     # a valid .gz of 2 bytes
    (lambda b: __import__("gzip").compress(b"\x00\x00\x08\x03\x00"), "is not an idx file"),  # a cut header
])
def test_a_damaged_fashion_mnist_file_is_one_line(tmp_path, capsys, damage, why):
    d = _fashion_copy(tmp_path)
    target = next(d.glob("t10k-images*"))
    target.write_bytes(damage(target.read_bytes()))
    run = tmp_path / "run"
    line = refused(capsys, ["--dataset", "fashion_mnist", "--data-dir", str(d), "--model", "fmnist_mlp",
                            "--batch-size", "256", "--epochs", "1", "--output", str(run)], run)
    assert target.name in line and why in line


@pytest.mark.parametrize("target", ["args.yaml", "env.json"])
def test_disk_full_writing_args_or_env_is_one_line_and_keeps_the_checkpoints(finished_run, tmp_path, capsys,
                                                                              monkeypatch, target):
    """Issue 22: a full disk while train.py writes args.yaml or env.json (before training) was a raw traceback."""
    import framework.io
    run = copy_run(finished_run, tmp_path / "run")
    (run / "results.json").unlink()  # unfinished: the command resumes
    before = {n: (run / n).read_bytes() for n in ("last.pt", "prev.pt")}
    real = framework.io.atomic_write

    def full(path, *a, **k):
        if str(path).endswith(target):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, *a, **k)
    import framework.config
    monkeypatch.setattr(framework.io, "atomic_write", full)      # env.json (write_json)
    monkeypatch.setattr(framework.config, "atomic_write", full)  # args.yaml (write_config)
    code = run_inprocess([*TINY, "--epochs", "2", "--output", str(run)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and "No space left on device (ENOSPC" in lines[0] and target in lines[0]
    assert {n: (run / n).read_bytes() for n in ("last.pt", "prev.pt")} == before
