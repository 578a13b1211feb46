"""The SLURM scripts on a real SLURM cluster: two nodes on this host (scripts/slurm/local_cluster.sh, brought up by
the ``cluster`` fixture and torn down after; it needs root, and the Debian package registry when slurm-wlm/munge are
not installed). Deselect with ``-m "not slurm"`` on a machine without them.

Both sbatch scripts run a tiny synthetic run to completion (the references); then, for both scripts, the same run
is stopped once in epoch 0 and once in epoch 1, covering each way SLURM stops a job: ``scancel --signal=USR1
--batch`` (what preemption with a signal does), ``scancel --signal=USR1 --full`` (USR1 to every process), ``scontrol
requeue`` (SIGTERM to every process) and the time limit (the scripts' own ``--signal=B:USR1@90``). Each stop must save
mid-epoch and requeue, each start resume from there, and the run end with a steps.csv byte-identical to the
reference's, leaving no process behind. To land mid-epoch however slowly SLURM answers on a busy machine, the
training is paused (SIGSTOP) at step 20 of the epoch until the stop has reached the job, then let go. The requeue
delay SLURM puts on a requeued job (Reason=BeginTime) is cut to two seconds with ``scontrol update starttime=now+2``
(a start right after the requeue can fail on the node: see ``_drive``). The six
jobs share the cluster (two 16-CPU nodes; the scripts ask for 8 per node) and are driven together. Last: a
``sweep.py --slurm --submit`` array job on the cluster.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

from conftest import ROOT, read_jsonl, subprocess_env

pytestmark = pytest.mark.slurm

CLUSTER_SH = ROOT / "scripts" / "slurm" / "local_cluster.sh"
STEPS_PER_EPOCH = 64
EPOCHS = 2
# batch 16 = micro-batch 8 x 2 (accumulation on one process, two processes on two nodes)
RUN = ["--dataset", "synthetic", "--model", "fmnist_cnn", "--img-size", "28", "--in-chans", "1",
       "--num-classes", "10", "--synthetic-train-size", str(16 * STEPS_PER_EPOCH), "--synthetic-val-size", "256",
       "--val-batch-size", "8", "--workers", "0", "--batch-size", "16", "--micro-batch", "8", "--epochs", str(EPOCHS),
       "--log-interval", "1", "--device", "cpu", "--sched", "autowu-cos", "--autowu-patience", "1", "--seed", "3"]
STOP_AT_ROW = 20  # signal the job once this many steps of epoch 0 are in steps.csv: mid-epoch
ENDED = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
SCRIPTS = ("single_node", "multi_node")
# each stopped job is stopped twice, in epoch 0 and in epoch 1, a different way each time
JOB_STOPS = (("usr1_batch", "time_limit"), ("usr1_full", "requeue"))
STOPS = tuple(stop for stops in JOB_STOPS for stop in stops)


class Cluster:
    def __init__(self, state_dir: Path, work: Path) -> None:
        self.conf = state_dir / "slurm.conf"
        empty = work / "cluster.env"
        empty.write_text("")  # no cluster.env of the developer's: the settings below only
        self.env = {k: v for k, v in subprocess_env().items() if not k.startswith(("SLURM_", "SBATCH_", "AUTOWU_"))}
        self.env.update(SLURM_CONF=str(self.conf), AUTOWU_PYTHON=sys.executable, AUTOWU_CLUSTER_ENV=str(empty),
                        PYTHONPATH=str(ROOT))

    def cmd(self, *argv: str, **env: str) -> str:
        done = subprocess.run(argv, cwd=ROOT, env=dict(self.env, **env), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{' '.join(argv)}: {done.stdout}{done.stderr}"
        return done.stdout

    def sbatch(self, script: str, run: Path, *options: str, **env: str) -> str:
        nodes = ["--nodes=2"] if script == "multi_node" else []
        return self.cmd("sbatch", "--parsable", f"--output={run}.out", *nodes, *options,
                        f"scripts/slurm/{script}.sbatch", *RUN, "--output", str(run), **env).strip()

    def job(self, job_id: str) -> dict:
        """``scontrol show job``'s fields (the first record: an array job's first task)."""
        out = self.cmd("scontrol", "-o", "show", "job", job_id)
        return dict(re.findall(r"(\w+)=(\S*)", out.splitlines()[0]))

    def states(self, job_ids: list[str]) -> dict:
        """{job id: (state, reason, run time)} in one squeue call (ended jobs stay listed for MinJobAge, 300 s)."""
        out = self.cmd("squeue", "-h", "--states=all", "-j", ",".join(job_ids), "-o", "%i|%T|%r|%M")
        return {i: (state, reason, used) for i, state, reason, used in (line.split("|") for line in out.splitlines())}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state_dir = Path(f"/tmp/autowu-slurm-test-{os.getpid()}")
    env = dict(os.environ, AUTOWU_SLURM_DIR=str(state_dir), AUTOWU_SLURM_PORT="16917", AUTOWU_SLURM_CPUS="16")
    t0 = time.monotonic()
    up = subprocess.run(["bash", str(CLUSTER_SH), "up"], env=env, capture_output=True, text=True, timeout=900)
    assert up.returncode == 0, f"local_cluster.sh up failed (needs root and apt):\n{up.stdout}{up.stderr}"
    print(f"[slurm] cluster up in {time.monotonic() - t0:.0f}s")
    work = tmp_path_factory.mktemp("slurm")
    try:
        yield Cluster(state_dir, work)
    finally:
        for log in (state_dir / "log").glob("*.log"):  # kept for a look after a failure
            shutil.copy(log, work)
        down = subprocess.run(["bash", str(CLUSTER_SH), "down"], env=env, capture_output=True, text=True,
                              timeout=900)
        assert down.returncode == 0, down.stdout + down.stderr
        assert not state_dir.exists()


def rows(run: Path) -> int:
    path = run / "steps.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def processes_of(run: Path) -> list[str]:
    """Command lines of live processes that name the run directory (a training process left behind)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(run).encode() in argv:
            found.append(f"{proc.name}: {b' '.join(argv).decode(errors='replace')}")
    return found


def training_processes(run: Path) -> list[int]:
    """PIDs of train.py processes (torchrun's workers) of the run."""
    return [int(line.split(":")[0]) for line in processes_of(run)
            if " train.py " in line and "torch.distributed.run" not in line and "ignore-usr1" not in line]


def run_seconds(text: str) -> int:
    """SLURM's [D-]HH:MM:SS in seconds."""
    days, _, hms = text.rpartition("-")
    seconds = 0
    for part in hms.split(":"):
        seconds = seconds * 60 + int(part)
    return seconds + 86400 * int(days or 0)


@dataclass
class Job:
    script: str
    stops: tuple  # how to stop it in epoch 0, 1, ...; () for the uninterrupted reference
    run: Path
    id: str = ""
    state: str = ""
    stopped: int = 0  # stops done
    stopping: bool = False  # stopped, not yet requeued and released
    paused: list = field(default_factory=list)  # the training processes, SIGSTOPped until the stop reaches them
    marker: tuple = ()  # a USR1 stop: (USR1 lines in the log before it, when it was sent)
    pending_since: Optional[float] = None
    strays: list = field(default_factory=list)
    releases: int = 0
    info: dict = field(default_factory=dict)  # scontrol show job, at the end
    slurm_logs: list = field(default_factory=list)  # slurmctld's and the slurmds' logs

    def log(self) -> str:
        out = Path(f"{self.run}.out")
        return out.read_text() if out.exists() else ""


# what the job's log shows once a USR1 has reached the batch shell (`scontrol requeue` needs no wait: SLURM sends the
# job SIGCONT and SIGTERM itself)
USR1_SEEN = "USR1: time limit or preemption"


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def watch(job: Job, done: threading.Event) -> None:
    """Pause the job's training (SIGSTOP) as soon as steps.csv has its next stop's row count: a stop then lands at
    that step however slowly SLURM's commands answer on a busy machine."""
    while not done.is_set():
        k = job.stopped
        if (k < len(job.stops) and not job.paused and not job.stopping
                and rows(job.run) >= STOP_AT_ROW + k * STEPS_PER_EPOCH):  # mid-epoch 0, then mid-epoch 1
            pids = training_processes(job.run)
            signal_all(pids, signal.SIGSTOP)
            job.paused = pids
        done.wait(0.05)


def drive(cluster: Cluster, jobs: list[Job], timeout: float = 1200) -> None:
    """Submit every job, stop each one mid-epoch its way, release requeued jobs, until all have ended."""
    for n, job in enumerate(jobs):
        options = ["--time=10"] if "time_limit" in job.stops else []
        job.id = cluster.sbatch(job.script, job.run, *options, AUTOWU_MASTER_PORT=str(29600 + n))
    done = threading.Event()
    watchers = [threading.Thread(target=watch, args=(j, done), daemon=True) for j in jobs if j.stops]
    for w in watchers:
        w.start()
    try:
        _drive(cluster, jobs, timeout)
    finally:
        done.set()
        for job in jobs:
            signal_all(job.paused, signal.SIGCONT)


def _drive(cluster: Cluster, jobs: list[Job], timeout: float) -> None:
    t_end = time.monotonic() + timeout
    while True:
        live = [j for j in jobs if j.state != "COMPLETED" and j.state not in ENDED]
        if not live:
            return
        assert time.monotonic() < t_end, "jobs still running: " + "; ".join(
            f"{j.script}/{j.stops} {j.id} {j.state}:\n{j.log()[-3000:]}" for j in live)
        states = cluster.states([j.id for j in live])
        for job in live:
            job.state, reason, used = states[job.id]
            if job.paused and not job.stopping:  # paused mid-epoch by watch(): stop it now
                stop = job.stops[job.stopped]
                job.marker = (job.log().count(USR1_SEEN), time.monotonic())
                if stop == "time_limit":
                    # The time limit's USR1 comes when the end is under 90 s away, at slurmctld's next limit check
                    # (every 30 s): cut the limit to 60-120 s from now, and USR1 comes within a minute, before
                    # the end, and finds the run where it was paused.
                    minutes = run_seconds(used) // 60 + 2
                    cluster.cmd("scontrol", "update", f"jobid={job.id}", f"timelimit={minutes}")
                elif stop == "usr1_batch":
                    cluster.cmd("scancel", "--signal=USR1", "--batch", job.id)
                elif stop == "usr1_full":
                    cluster.cmd("scancel", "--signal=USR1", "--full", job.id)
                else:
                    cluster.cmd("scontrol", "requeue", job.id)
                    job.marker = ()
                job.stopped, job.stopping = job.stopped + 1, True
            if job.paused and job.stopping:
                reached = not job.marker or job.log().count(USR1_SEEN) > job.marker[0]
                if reached or time.monotonic() - job.marker[1] > 120:
                    signal_all(job.paused, signal.SIGCONT)  # the stop has reached the job: let training save
                    job.paused = []
            if job.stopping and job.state == "PENDING" and reason == "BeginTime":  # requeued: SLURM holds it ~2 min
                # first: nothing of the stopped job may still run (a worker its torchrun left behind)
                job.pending_since = job.pending_since or time.monotonic()
                left = processes_of(job.run)
                if left and time.monotonic() - job.pending_since < 30:
                    continue
                job.strays += left
                # the rest of the run gets time enough (a time-limit job would otherwise be cut again). Not
                # starttime=now: a start right after the requeue can land on the node while it still revokes the
                # old instance's job credential, and fails there ("Killing non-startable batch JobId=N: Job
                # credential revoked", the job ends FAILED); SLURM's own ~2 min hold is what prevents it. In a
                # stress loop (USR1, requeue, release; 40 jobs) 18 of 40 starts failed at once, 0 of 40 two s later.
                cluster.cmd("scontrol", "update", f"jobid={job.id}", "starttime=now+2", "timelimit=30")
                job.releases += 1
                job.pending_since, job.stopping = None, False
        time.sleep(0.2)


@pytest.fixture(scope="module")
def jobs(cluster, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("jobs")
    todo = [Job(s, (), work / f"{s}_ref") for s in SCRIPTS]
    todo += [Job(s, stops, work / f"{s}_{'_'.join(stops)}") for s in SCRIPTS for stops in JOB_STOPS]
    t0 = time.monotonic()
    drive(cluster, todo)
    print(f"[slurm] {len(todo)} jobs done in {time.monotonic() - t0:.0f}s")
    for j in todo:
        j.info = cluster.job(j.id)
        j.slurm_logs = sorted((cluster.conf.parent / "log").glob("slurm*.log"))
    return {(j.script, j.stops): j for j in todo}


def assert_completed(job: Job) -> dict:
    assert job.state == "COMPLETED", job.log() + "".join(f"\n[{p.name}] {line}" for p in job.slurm_logs for line in
                                                        p.read_text().splitlines() if f"JobId={job.id} " in line)
    results = json.loads((job.run / "results.json").read_text())
    assert results["status"] == "finished" and results["steps"] == EPOCHS * STEPS_PER_EPOCH, results
    return results


@pytest.mark.parametrize("script", SCRIPTS)
def test_job_runs_to_completion(jobs, script):
    job = jobs[(script, ())]
    results = assert_completed(job)
    assert rows(job.run) == EPOCHS * STEPS_PER_EPOCH and job.releases == 0
    log = (job.run / "train.log").read_text()
    if script == "multi_node":  # one process on each of the two nodes, rendezvous at n1's NodeAddr
        assert "8 x 2 processes x 1 accumulation" in log, log
        assert results["hardware"].startswith("2x cpu")
        assert "--nnodes 2" in job.log() and "--rdzv_endpoint 127.0.0.1:" in job.log()
    else:
        assert "8 x 1 processes x 2 accumulation" in log, log
        assert results["hardware"].startswith("1x cpu")
    # the scripts ask for 8 CPUs per node (sbatch alone gives one)
    assert job.info["NumCPUs"] == str(8 * (2 if script == "multi_node" else 1)), job.info


@pytest.mark.parametrize("stop", STOPS)
@pytest.mark.parametrize("script", SCRIPTS)
def test_stopped_job_saves_mid_epoch_requeues_and_ends_identical(jobs, script, stop):
    stops = next(stops for stops in JOB_STOPS if stop in stops)
    job, ref, k = jobs[(script, stops)], jobs[(script, ())], stops.index(stop)
    assert_completed(job)
    assert job.releases == len(stops), f"requeued {job.releases} times, stopped {len(stops)} times:\n{job.log()}"
    # the batch shell's trap ran once per USR1 (ours, or SLURM's at the time limit) and requeued the job
    usr1 = sum(s in ("usr1_batch", "usr1_full", "time_limit") for s in stops)
    assert job.log().count(USR1_SEEN) == usr1, job.log()
    assert job.log().count("; requeueing job") == usr1, job.log()
    # every stop saved mid-epoch (epoch k) and exited; the resumed job went on from that micro-batch
    saved = [e for e in read_jsonl(job.run / "events.jsonl") if e.get("type") == "preempted"]
    log = (job.run / "train.log").read_text()
    resumed = [int(m) for m in re.findall(r"resumed from \S+: epoch \d+, step \d+, sample (\d+)", log)]
    assert len(saved) == len(resumed) == len(stops), log
    assert saved[k]["epoch"] == k and saved[k]["sample"] == resumed[k], (saved, resumed)
    assert STOP_AT_ROW + k * STEPS_PER_EPOCH <= saved[k]["step"] < (k + 1) * STEPS_PER_EPOCH, saved
    assert job.strays == [], f"processes left running after the job was requeued: {job.strays}"
    assert (job.run / "steps.csv").read_bytes() == (ref.run / "steps.csv").read_bytes()


def test_sweep_array_job_on_the_cluster(cluster, tmp_path):
    table = tmp_path / "tbl.yaml"
    table.write_text(
        "title: t\nbase: configs/fashion_mnist_resnet.yaml\n"
        "overrides: {dataset: synthetic, model: fmnist_cnn, img-size: 28, in-chans: 1, num-classes: 10,\n"
        "            synthetic-train-size: 64, synthetic-val-size: 32, epochs: 1, micro-batch: 16, device: cpu}\n"
        "columns: [16, 32]\nrows: {baseline: {sched: baseline, warmup-epochs: 0.5}}\n")
    runs_dir = tmp_path / "runs"
    # GPUS_PER_NODE is the process count; this cluster has no GPUs, so no --gres (sbatch would refuse it)
    out = cluster.cmd(sys.executable, "scripts/sweep.py", str(table), "--slurm", "--submit", "--runs-dir",
                      str(runs_dir), AUTOWU_GPUS_PER_NODE="1", AUTOWU_GRES="none", AUTOWU_CPUS_PER_TASK="8")
    job_id = re.search(r"Submitted batch job (\d+)", out).group(1)
    t_end = time.monotonic() + 600
    while cluster.cmd("squeue", "-h", "-j", job_id).strip():
        assert time.monotonic() < t_end, cluster.cmd("squeue", "-j", job_id)
        time.sleep(0.2)
    for column in ("16", "32"):
        run = runs_dir / "tbl" / f"baseline_b{column}_s0"
        results = json.loads((run / "results.json").read_text())
        assert results["status"] == "finished" and results["config"]["batch_size"] == int(column)
    logs = list((runs_dir / "tbl" / "slurm").glob("*.out"))
    assert len(logs) == 2 and all("training exited with 0" in p.read_text() for p in logs)
    # the sweep now sees both runs done
    again = cluster.cmd(sys.executable, "scripts/sweep.py", str(table), "--dry-run", "--runs-dir", str(runs_dir))
    assert "2 runs, 2 done, 0 pending" in again
