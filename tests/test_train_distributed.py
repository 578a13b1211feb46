"""Multi-process runs on CPU with gloo: torchrun (one node, two processes), the legacy
``torch.distributed.launch``, SLURM-style ``srun`` variables, and a two-"node" torchrun on localhost. Every rank must
finish and log the same LR at every step and the same AutoWU decisions (AUTOWU_LOG_ALL_RANKS=1 makes rank N write
its own steps.csv/events.jsonl under OUTPUT/rankN/)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, TINY, decisions, free_port, read_jsonl, read_steps, subprocess_env

from framework.distributed import first_host, world_info_from_env

# 2 processes x micro-batch 8 x 2 accumulation = global batch 32; 4 steps per epoch as in the single-process runs
DIST_ARGS = [*TINY, "--micro-batch", "8", "--sched", "autowu-cos", "--autowu-patience", "1"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def assert_ranks_agree(run: Path, ranks=(1,)) -> None:
    res = json.loads((run / "results.json").read_text())
    assert res["status"] == "finished" and res["steps"] == 12 and res["hardware"].startswith("2x cpu")
    assert json.loads((run / "env.json").read_text())["world_size"] == 2
    main = read_steps(run)
    assert [r["step"] for r in main] == list(range(12))
    for rank in ranks:
        other = run / f"rank{rank}"
        assert read_steps(other) == main  # same LR (and rank-averaged loss) at every step
        assert decisions(other) == decisions(run) and decisions(run)


def run_all(procs: list[subprocess.Popen], timeout: float = 300) -> None:
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        outs.append(out)
    assert all(p.returncode == 0 for p in procs), "\n\n".join(outs)


def popen(cmd: list[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(AUTOWU_LOG_ALL_RANKS="1", **env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("launcher", ["torchrun", "torch.distributed.launch", "slurm"])
def test_two_processes_one_node(tmp_path, launcher):
    run, port = tmp_path / "run", str(free_port())
    train = [str(ROOT / "train.py"), *DIST_ARGS, "--output", str(run)]
    if launcher == "torchrun":
        procs = [popen([*TORCHRUN, "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                        "--master_port", port, *train])]
    elif launcher == "torch.distributed.launch":  # passes --local-rank=N to the script
        procs = [popen([sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node", "2",
                        "--master_addr", "127.0.0.1", "--master_port", port, *train])]
    else:  # what `srun --ntasks 2 python train.py ...` gives each task; MASTER_ADDR comes from the node list
        procs = [popen([sys.executable, *train], SLURM_PROCID=str(r), SLURM_LOCALID=str(r), SLURM_NTASKS="2",
                       SLURM_JOB_NODELIST="localhost", SLURM_JOB_ID="1", MASTER_PORT=port) for r in (0, 1)]
    run_all(procs)
    assert_ranks_agree(run)


def test_two_nodes_on_localhost(tmp_path):
    run, port = tmp_path / "run", str(free_port())
    procs = [popen([*TORCHRUN, "--nnodes", "2", "--node_rank", str(node), "--nproc_per_node", "1",
                    "--master_addr", "127.0.0.1", "--master_port", port,
                    str(ROOT / "train.py"), *DIST_ARGS, "--output", str(run)]) for node in (0, 1)]
    run_all(procs)
    assert_ranks_agree(run)


def test_indivisible_batch_is_reported_with_the_process_count(tmp_path):
    """--micro-batch is a per-device maximum (40 = 5 x 2 processes x 4 works with --micro-batch 8), but a global
    batch of 33 cannot be shared by 2 processes: the message says why before anything starts."""
    run, port = tmp_path / "run", str(free_port())
    proc = popen([*TORCHRUN, "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                  "--master_port", port, str(ROOT / "train.py"), *DIST_ARGS, "--batch-size", "33",
                  "--output", str(run)])
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert "--batch-size 33 is not divisible by the 2 processes" in out
    assert not run.exists()


def test_demo_config_runs_unchanged_on_two_processes(tmp_path):
    """`torchrun --nproc_per_node 2 train.py -c configs/fashion_mnist_demo.yaml`: the config's --micro-batch 256 is a
    per-device maximum, so batch 256 runs as 128 x 2 processes (synthetic stand-in data of Fashion-MNIST's shape and
    a short budget keep the test quick; the batch arithmetic is the config's)."""
    run, port = tmp_path / "run", str(free_port())
    proc = popen([*TORCHRUN, "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                  "--master_port", port, str(ROOT / "train.py"), "-c", str(ROOT / "configs/fashion_mnist_demo.yaml"),
                  "--dataset", "synthetic", "--img-size", "28", "--in-chans", "1", "--num-classes", "10",
                  "--train-subset", "512", "--synthetic-train-size", "512", "--synthetic-val-size", "64",
                  "--model", "fmnist_cnn", "--epochs", "2", "--device", "cpu", "--output", str(run)])
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "batch 256 = 128 x 2 processes x 1 accumulation" in out
    res = json.loads((run / "results.json").read_text())
    assert res["status"] == "finished" and res["steps"] == 4 and res["config"]["micro_batch"] == 256
    assert res["split"] == {"batch_size": 256, "micro_batch": 128, "world_size": 2, "accum_steps": 1}
    assert json.loads((run / "env.json").read_text())["split"] == res["split"]


@pytest.mark.parametrize("nodelist,host", [("gpu[003-005,9]", "gpu003"), ("a100-1,a100-2", "a100-1"),
                                           ("node7", "node7"), ("n[12,15]", "n12")])
def test_first_host_of_slurm_nodelist(nodelist, host):
    assert first_host(nodelist) == host


def test_launcher_variables_are_read_in_order(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS",
                "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"):
        monkeypatch.setenv(key, "")  # recorded, so whatever the code sets is undone after the test
        monkeypatch.delenv(key)
    assert world_info_from_env() == (0, 0, 1, "none")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[10-13]")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert world_info_from_env() == (5, 1, 8, "slurm")
    assert os.environ["MASTER_ADDR"] == "gpu10" and os.environ["MASTER_PORT"] == str(20000 + 4242)
    # srun torchrun ...: torchrun's variables win over SLURM's
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    assert world_info_from_env() == (3, 3, 4, "torchrun")


def test_sigterm_to_torchrun_saves_once_and_resumes_identically(tmp_path):
    """SLURM preemption under torchrun: torchrun forwards SIGTERM to both workers, which agree on one step, save
    last.pt and exit; relaunching continues exactly like an uninterrupted 2-process run."""
    args = [*DIST_ARGS, "--synthetic-train-size", "1024", "--epochs", "2", "--log-interval", "1"]

    def torchrun(run: Path) -> subprocess.Popen:
        return popen([*TORCHRUN, "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                      "--master_port", str(free_port()), str(ROOT / "train.py"), *args, "--output", str(run)])

    reference, run = tmp_path / "reference", tmp_path / "run"
    run_all([torchrun(reference)])
    proc = torchrun(run)
    end = time.monotonic() + 240
    while not ((run / "steps.csv").exists() and len((run / "steps.csv").read_text().splitlines()) > 10):
        assert proc.poll() is None and time.monotonic() < end, "the run ended before it could be preempted"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=240)  # torchrun itself exits non-zero after forwarding the signal
    events = read_jsonl(run / "events.jsonl")
    assert [e["type"] for e in events].count("preempted") == 1 and events[-1]["type"] == "preempted"
    assert read_jsonl(run / "rank1" / "events.jsonl")[-1] == events[-1]  # both ranks stopped at the same step
    run_all([torchrun(run)])
    assert read_steps(run) == read_steps(reference) and decisions(run) == decisions(reference)
    wa, wb = (torch.load(r / "last.pt", map_location="cpu", weights_only=True)["model"] for r in (run, reference))
    assert all(torch.equal(wa[k], wb[k]) for k in wb)
