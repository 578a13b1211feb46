"""scripts/sweep.py (table expansion, command lines, skipping finished runs, SLURM array jobs) and the SLURM batch
scripts' logic (torchrun command line, requeue on USR1), the latter with fake srun/scontrol/python on PATH."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
from experiments import sweep  # noqa: E402

BASE = "configs/fashion_mnist_resnet.yaml"


def write_table(tmp_path: Path, text: str, name: str = "tbl") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture(scope="module")
def parser():
    return sweep.get_train_parser()


def test_table1_expands_to_the_papers_grid():
    runs = sweep.expand(sweep.load_table("table1"))
    by_block = {}
    for r in runs:
        by_block.setdefault(r.block, []).append(r)
    # 3 schedules x 4 batch sizes x 3 seeds (CIFAR), x 1 seed (ImageNet)
    assert {b: len(rs) for b, rs in by_block.items()} == {"cifar10_resnet18": 36, "cifar100_wrn28_10": 36,
                                                          "imagenet_resnet50": 12}
    assert len({r.output for r in runs}) == len(runs)
    r = next(r for r in runs if r.block == "imagenet_resnet50" and r.row == "autowu-cos" and r.column == "16384")
    assert r.output == os.path.join("runs", "table1", "imagenet_resnet50", "autowu-cos_b16384_s0")
    assert r.overrides == {"batch-size": 16384, "sched": "autowu-cos"}
    assert r.config == "configs/imagenet_resnet50.yaml"


def test_overrides_merge_base_column_row_cell(tmp_path, parser):
    path = write_table(tmp_path, f"""
        title: t
        base: {BASE}
        seeds: [1, 2]
        overrides: {{epochs: 3, sched: baseline, warmup-epochs: 1}}
        columns: [256, 2048]
        rows:
          a: {{}}
          b: {{sched: autowu-cos, autowu-rollback: true}}
        cells:
          b/2048: {{autowu-patience: 5, opt-betas: [0.8, 0.99], sched-kwargs: {{n_test: 3}}}}
        """)
    runs = sweep.expand(sweep.load_table(str(path)), runs_dir="out")
    assert [(r.row, r.column, r.seed) for r in runs] == [
        ("a", "256", 1), ("a", "256", 2), ("a", "2048", 1), ("a", "2048", 2),
        ("b", "256", 1), ("b", "256", 2), ("b", "2048", 1), ("b", "2048", 2)]
    cell = runs[-1]
    assert cell.output == os.path.join("out", "tbl", "b_b2048_s2")
    assert cell.overrides == {"epochs": 3, "sched": "autowu-cos", "warmup-epochs": 1, "batch-size": 2048,
                              "autowu-rollback": True, "autowu-patience": 5, "opt-betas": [0.8, 0.99],
                              "sched-kwargs": {"n_test": 3}}
    argv = sweep.train_argv(cell, parser)
    assert argv[:6] == ["--config", BASE, "--output", cell.output, "--seed", "2"]
    assert "--autowu-rollback" in argv and argv[argv.index("--opt-betas") + 1:][:2] == ["0.8", "0.99"]
    # the command line is what train.py parses back to the same values
    from framework.config import parse_args
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        args = parse_args(parser, argv)
    finally:
        os.chdir(cwd)
    assert (args.batch_size, args.sched, args.autowu_patience, args.autowu_rollback) == (2048, "autowu-cos", 5, True)
    assert args.opt_betas == [0.8, 0.99] and args.sched_kwargs == {"n_test": 3} and args.seed == 2
    # a false boolean becomes --no-FLAG
    assert sweep.flag_tokens(parser, "hflip", False) == ["--no-hflip"]



def test_a_blocks_overrides_add_to_the_tables(tmp_path):
    """The table's overrides hold for every block; a block's own overrides add to them (and win on a shared flag)."""
    path = write_table(tmp_path, f"""
        title: t
        base: {BASE}
        overrides: {{epochs: 3, batch-size: 512, sched: baseline}}
        columns: {{x: {{lr: 0.1}}}}
        rows: {{a: {{}}}}
        blocks:
          one: {{overrides: {{model: fmnist_cnn, epochs: 4}}}}
          two: {{}}
        """)
    runs = {r.block: r for r in sweep.expand(sweep.load_table(str(path)), runs_dir="out")}
    assert runs["one"].overrides == {"epochs": 4, "batch-size": 512, "sched": "baseline", "model": "fmnist_cnn",
                                     "lr": 0.1}
    assert runs["two"].overrides == {"epochs": 3, "batch-size": 512, "sched": "baseline", "lr": 0.1}

@pytest.mark.parametrize("body, message", [
    ("title: t\nbase: configs/nope.yaml\ncolumns: [256]\nrows: {a: {}}\n", "does not exist"),
    (f"title: t\nbase: {BASE}\ncolumns: [256]\nrows: {{a: {{}}}}\ncolour: red\n", "unknown key(s) ['colour']"),
    (f"title: t\nbase: {BASE}\ncolumns: [256]\nrows: {{a: {{}}}}\ncells: {{c/256: {{}}}}\n", "cell 'c/256'"),
    (f"title: t\nbase: {BASE}\ncolumns: []\nrows: {{a: {{}}}}\n", "columns must be"),
    (f"title: t\nbase: {BASE}\ncolumns: [256]\nrows: {{a: {{}}}}\nseeds: 3\n", "seeds must be"),
    (f"title: t\nbase: {BASE}\ncolumns: [256]\nrows: {{a: {{}}}}\nfigure: {{mark: nope}}\n", "figure mark 'nope'"),
    (f"title: t\nbase: {BASE}\ncolumns: [256]\nrows: {{a: {{}}}}\nfigure: {{colour: red}}\n", "figure takes rows"),
    # rows a/r and b/r would both be exported as records/r_b256_s0 (issue 22)
    (f"title: t\nbase: {BASE}\ncolumns: [256]\nrows: {{a/r: {{}}, b/r: {{}}}}\n", "row name 'a/r' cannot name"),
    (f"title: t\nbase: {BASE}\ncolumns: {{x y: {{}}}}\nrows: {{a: {{}}}}\n", "column name 'x y' cannot name"),
    (f"title: t\nbase: {BASE}\ncolumns: [256]\nrows: {{a: {{}}}}\nblocks: {{../up: {{}}}}\n", "block name '../up'"),
])
def test_bad_table_is_refused_with_the_reason(tmp_path, body, message):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(sweep.TableError) as e:
        sweep.load_table(str(path))
    assert message in str(e.value) and "bad.yaml" in str(e.value)


def test_unknown_flag_is_refused(tmp_path, parser):
    path = write_table(tmp_path, f"title: t\nbase: {BASE}\ncolumns: [256]\nrows: {{a: {{learning-rate: 1}}}}\n")
    runs = sweep.expand(sweep.load_table(str(path)))
    with pytest.raises(sweep.TableError, match="unknown train.py flag 'learning-rate'"):
        sweep.check_runs(runs, parser)


def test_slurm_array_lists_only_pending_runs_and_cluster_settings(tmp_path, monkeypatch, capsys):
    table = write_table(tmp_path, f"title: t\nbase: {BASE}\nseeds: [0, 1]\ncolumns: [256, 1024]\n"
                                  "rows: {a: {sched: baseline}}\n")
    runs_dir = tmp_path / "runs"
    done = runs_dir / "tbl" / "a_b1024_s1"
    done.mkdir(parents=True)
    (done / "results.json").write_text("{}")
    env_file = tmp_path / "cluster.env"
    env_file.write_text("AUTOWU_PARTITION=big\nAUTOWU_GPUS_PER_NODE=8  # per node\nexport AUTOWU_TIME=2:00:00\n"
                        "AUTOWU_MAX_PARALLEL=2\n")
    monkeypatch.setenv("AUTOWU_CLUSTER_ENV", str(env_file))
    monkeypatch.setenv("AUTOWU_PARTITION", "small")  # the environment wins over the file
    assert sweep.main([str(table), "--slurm", "--nodes", "2", "--runs-dir", str(runs_dir)]) == 0
    out = capsys.readouterr().out
    assert "4 runs, 1 done, 3 pending" in out
    script = next((runs_dir / "tbl" / "slurm").glob("*.sbatch")).read_text()
    assert "#SBATCH --array=0-2%2" in script and "#SBATCH --nodes=2" in script
    assert "#SBATCH --partition=small" in script and "#SBATCH --gres=gpu:8" in script
    assert "#SBATCH --time=2:00:00" in script and "#SBATCH --signal=B:USR1@90" in script
    assert "a_b1024_s1" not in script and script.count(" --output ") == 3
    assert "scripts/slurm/multi_node.sbatch" in script


@pytest.mark.parametrize("settings, gres, cpus", [
    ({"AUTOWU_GPUS_PER_NODE": "4"}, "--gres=gpu:4", "--cpus-per-task=8"),
    ({"AUTOWU_GPUS_PER_NODE": "2", "AUTOWU_GRES": "none", "AUTOWU_CPUS_PER_TASK": "3"}, None, "--cpus-per-task=3"),
    ({"AUTOWU_GPUS_PER_NODE": "2", "AUTOWU_GRES": "gpu:a100:2"}, "--gres=gpu:a100:2", "--cpus-per-task=8"),
    ({}, None, "--cpus-per-task=8"),
])
def test_slurm_array_asks_for_gpus_only_when_the_cluster_has_them_and_always_for_cpus(tmp_path, parser, settings,
                                                                                       gres, cpus):
    table = write_table(tmp_path, f"title: t\nbase: {BASE}\ncolumns: [256]\nrows: {{a: {{sched: baseline}}}}\n")
    runs = sweep.expand(sweep.load_table(str(table)), runs_dir=str(tmp_path / "runs"))
    header = [line.split(" ", 1)[1] for line in sweep.slurm_script(runs, parser, 1, [], settings, "t", str(tmp_path))
              .splitlines() if line.startswith("#SBATCH ")]
    assert [h for h in header if h.startswith("--gres")] == ([gres] if gres else [])
    assert [h for h in header if h.startswith("--cpus-per-task")] == [cpus]


# ---------------------------------------------------------------------------------------------------------------
# the batch scripts, with fake SLURM commands and a fake trainer

FAKE_TRAINER = """#!/bin/bash
# stands for `python -m torch.distributed.run ... train.py ARGS`: records its argv, then waits; on SIGTERM it
# "saves and exits 0" like train.py
echo "$@" > "$FAKE_LOG/trainer_argv"
echo $$ > "$FAKE_LOG/trainer_pid"
trap 'echo term > "$FAKE_LOG/trainer_got"; exit 0' TERM
touch "$FAKE_LOG/trainer_started"
if [[ -n ${FAKE_FINISH:-} ]]; then exit 0; fi
for i in $(seq 3000); do sleep 0.1; done  # a hang guard only: the test sends USR1 once it has started
exit 3
"""


@pytest.fixture()
def fake_slurm(tmp_path):
    bin_dir, log = tmp_path / "bin", tmp_path / "log"
    bin_dir.mkdir()
    log.mkdir()
    (bin_dir / "faketrain").write_text(FAKE_TRAINER)
    (bin_dir / "scontrol").write_text('#!/bin/bash\nif [[ "$1 $2" == "show hostnames" ]]; then printf "gpu-a17\\ngpu-a18\\n"; '
                                      'elif [[ "$1 $2" == "show node" ]]; then echo "NodeName=$3 Arch=x86_64 CoresPerSocket=8"; '
                                      'echo "   NodeAddr=10.1.0.17 NodeHostName=$3 Version=22.05.8"; '
                                      'else echo "$@" >> "$FAKE_LOG/scontrol"; fi\n')
    # scancel --signal=TERM JOBID: SIGTERM to the job's steps, i.e. to the trainer
    (bin_dir / "scancel").write_text('#!/bin/bash\necho "$@" >> "$FAKE_LOG/scancel"\n'
                                     'kill -TERM "$(cat "$FAKE_LOG/trainer_pid")"\n')
    (bin_dir / "squeue").write_text('#!/bin/bash\necho "${FAKE_TIME_LIMIT:-1-00:00:00}"\n')
    # srun: drop its own options, run the command (one node's worth)
    (bin_dir / "srun").write_text('#!/bin/bash\necho "$@" > "$FAKE_LOG/srun_argv"\n'
                                  'while [[ $1 == --* ]]; do shift; done\nexec "$@"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOWU_", "SLURM_"))}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", FAKE_LOG=str(log), AUTOWU_ROOT=str(ROOT),
               AUTOWU_CLUSTER_ENV=str(tmp_path / "cluster.env"), AUTOWU_PYTHON=str(bin_dir / "faketrain"),
               SLURM_JOB_ID="4242", SLURM_NNODES="2", SLURM_JOB_NODELIST="gpu-a[17-18]")
    (tmp_path / "cluster.env").write_text("AUTOWU_GPUS_PER_NODE=4\nAUTOWU_DATA_ROOT=/datasets\n")
    return env, log, tmp_path


def start(script: str, env: dict, out: Path) -> subprocess.Popen:
    return subprocess.Popen(["bash", f"scripts/slurm/{script}", "--config", BASE, "--output", str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    """Wait for ``path`` to appear while ``proc`` runs (an event, not a deadline a loaded machine can miss); fail
    with the process's output if it ends first."""
    while not path.exists():
        if proc.poll() is not None:
            assert path.exists(), f"{path} never appeared; the script ended with {proc.returncode}:\n" + \
                proc.stdout.read()
        time.sleep(0.05)


def test_multi_node_builds_the_torchrun_rendezvous_and_requeues_on_usr1(fake_slurm):
    env, log, tmp = fake_slurm
    env["SLURM_CPUS_PER_TASK"] = "6"
    proc = start("multi_node.sbatch", env, tmp / "run")
    wait_for(log / "trainer_started", proc)
    argv = (log / "trainer_argv").read_text().split()
    assert argv[:2] == ["-m", "torch.distributed.run"]
    joined = " ".join(argv)
    # the rendezvous is on the first node's NodeAddr (its name need not resolve)
    assert "--nnodes 2 --nproc_per_node 4 --rdzv_id 4242 --rdzv_backend c10d --rdzv_endpoint 10.1.0.17:29500" in joined
    # data root from the cluster file first, so the run's own --data-dir would win; then the run's flags
    assert joined.endswith(f"train.py --data-dir /datasets --config {BASE} --output {tmp / 'run'}")
    proc.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@90 does before the time limit
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert (log / "trainer_got").read_text().strip() == "term"  # the trainer was asked to save and stop
    assert (log / "scancel").read_text().split() == ["--signal=TERM", "4242"]  # through the steps, not srun
    assert (log / "scontrol").read_text().split() == ["requeue", "4242"]
    assert "--cpus-per-task=6" in (log / "srun_argv").read_text()  # srun (22.05) does not inherit sbatch -c


def test_single_node_finishing_run_is_not_requeued_and_env_beats_file(fake_slurm):
    env, log, tmp = fake_slurm
    env.update(FAKE_FINISH="1", AUTOWU_GPUS_PER_NODE="2")
    proc = start("single_node.sbatch", env, tmp / "run")
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert "--standalone --nnodes 1 --nproc_per_node 2 train.py" in (log / "trainer_argv").read_text()
    assert not (log / "scontrol").exists()


@pytest.mark.parametrize("limit, warned", [("5:00", True), ("9:59", True), ("10:00", False), ("1-00:00:00", False),
                                            ("UNLIMITED", False)])
def test_a_time_limit_under_ten_minutes_is_warned_about(fake_slurm, limit, warned):
    env, log, tmp = fake_slurm
    env.update(FAKE_FINISH="1", FAKE_TIME_LIMIT=limit)
    out, _ = start("single_node.sbatch", env, tmp / "run").communicate(timeout=20)
    assert (f"--time {limit} is under 10 minutes" in out) == warned, out


def test_a_failing_run_fails_the_job(fake_slurm):
    env, log, tmp = fake_slurm
    (Path(env["AUTOWU_PYTHON"])).write_text("#!/bin/bash\nexit 7\n")
    proc = start("single_node.sbatch", env, tmp / "run")
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 7, out
    assert not (log / "scontrol").exists()


def test_array_task_runs_its_own_run(fake_slurm, tmp_path, parser):
    env, log, tmp = fake_slurm
    table = write_table(tmp_path, f"title: t\nbase: {BASE}\ncolumns: [256, 1024]\nrows: {{a: {{sched: baseline}}}}\n")
    runs = sweep.expand(sweep.load_table(str(table)), runs_dir=str(tmp_path / "runs"))
    script = tmp_path / "array.sbatch"
    script.write_text(sweep.slurm_script(runs, parser, 1, ["--workers", "8"], {}, "t", str(tmp_path)))
    env.update(SLURM_ARRAY_TASK_ID="1", FAKE_FINISH="1")
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stdout + done.stderr
    argv = (log / "trainer_argv").read_text()
    assert shlex.join(sweep.train_argv(runs[1], parser, ["--workers", "8"])) in argv


def test_local_sweep_runs_pending_runs_and_skips_finished_ones(tmp_path, capsys):
    table = write_table(tmp_path, f"""
        title: t
        base: {BASE}
        overrides: {{dataset: synthetic, model: fmnist_cnn, img-size: 28, in-chans: 1, num-classes: 10,
                     synthetic-train-size: 64, synthetic-val-size: 32, epochs: 1, micro-batch: 16, device: cpu}}
        columns: [16, 32]
        rows: {{baseline: {{sched: baseline, warmup-epochs: 0.5}}}}
        """)
    runs_dir = tmp_path / "runs"
    assert sweep.main([str(table), "--local", "--runs-dir", str(runs_dir)]) == 0
    first, second = runs_dir / "tbl" / "baseline_b16_s0", runs_dir / "tbl" / "baseline_b32_s0"
    assert json.loads((first / "results.json").read_text())["status"] == "finished"
    assert (second / "results.json").exists()
    stamp = (first / "results.json").stat().st_mtime_ns
    (second / "results.json").unlink()  # as if the second run had been cut off
    capsys.readouterr()
    assert sweep.main([str(table), "--local", "--runs-dir", str(runs_dir)]) == 0
    out = capsys.readouterr().out
    assert "2 runs, 1 done, 1 pending" in out and "(1/1) tbl/baseline_b32_s0" in out
    assert (first / "results.json").stat().st_mtime_ns == stamp and (second / "results.json").exists()


def test_a_run_finished_with_other_settings_is_stale(tmp_path, monkeypatch, capsys):
    """The table changed after a run finished (epochs 8 -> 3): the sweep does not count it as done; it stops with
    an error naming the setting, and --rerun-stale sets the old run aside. A throughput flag (micro-batch) or a
    results.json without a config does not make a run stale."""
    table = write_table(tmp_path, f"title: t\nbase: {BASE}\noverrides: {{epochs: 3, micro-batch: 256}}\n"
                                  "columns: [256, 1024, 4096]\nrows: {a: {sched: baseline}}\n")
    runs_dir = tmp_path / "runs"
    for column, epochs, micro in ((256, 8, 256), (1024, 3, 1024), (4096, None, None)):
        run = runs_dir / "tbl" / f"a_b{column}_s0"
        run.mkdir(parents=True)
        config = {} if epochs is None else {"epochs": epochs, "micro_batch": micro, "batch_size": column,
                                            "sched": "baseline", "seed": 0}
        (run / "results.json").write_text(json.dumps({"config": config}))
    assert sweep.main([str(table), "--dry-run", "--runs-dir", str(runs_dir)]) == 0
    out = capsys.readouterr().out
    assert "3 runs, 2 done, 1 pending (1 of them stale" in out
    assert "stale   tbl/a_b256_s0" in out and "done    tbl/a_b1024_s0" in out and "done    tbl/a_b4096_s0" in out

    monkeypatch.setattr(sweep, "run_local", lambda *a: pytest.fail("a sweep with a stale run must not start"))
    assert sweep.main([str(table), "--local", "--runs-dir", str(runs_dir)]) == 2
    err = capsys.readouterr().err
    assert "tbl/a_b256_s0 finished with other settings" in err and "epochs: 8 -> 3" in err
    assert "--rerun-stale" in err and (runs_dir / "tbl" / "a_b256_s0" / "results.json").exists()

    ran = []
    monkeypatch.setattr(sweep, "run_local", lambda runs, *a: ran.extend(r.name for r in runs) or 0)
    assert sweep.main([str(table), "--local", "--rerun-stale", "--runs-dir", str(runs_dir)]) == 0
    assert ran == ["tbl/a_b256_s0"]
    assert not (runs_dir / "tbl" / "a_b256_s0").exists()
    assert len(list((runs_dir / "tbl").glob("a_b256_s0.stale-*"))) == 1


def test_reuse_from_gives_a_pending_run_the_record_of_an_equal_run_of_another_table(tmp_path, monkeypatch, capsys):
    """--reuse-from: a run whose every setting equals a finished run of another table (an explicit lr equal to the
    one the sqrt rule gave there; the same seed) takes its record, named in reused_from.json and on the page; a run
    with another schedule or another seed does not."""
    from experiments import collect
    over = ("{dataset: synthetic, model: fmnist_cnn, img-size: 28, in-chans: 1, num-classes: 10, "
            "synthetic-train-size: 64, synthetic-val-size: 32, epochs: 1, micro-batch: 16, device: cpu}")
    screen = write_table(tmp_path, f"""
        title: screen
        base: {BASE}
        overrides: {over}
        columns: {{"16": {{batch-size: 16}}}}
        rows: {{baseline: {{sched: baseline, warmup-epochs: 0.5}}}}
        """, name="scr")
    runs_dir = tmp_path / "runs"
    assert sweep.main([str(screen), "--local", "--runs-dir", str(runs_dir)]) == 0
    source = runs_dir / "scr" / "baseline_16_s0"
    lr = json.loads((source / "results.json").read_text())["config"]["lr"]  # resolved by train.py (sqrt rule)
    assert lr == pytest.approx(1e-3 * (16 / 256) ** 0.5)
    table = write_table(tmp_path, f"""
        title: table
        base: {BASE}
        overrides: {over}
        seeds: [0, 1]
        columns: [16]
        rows: {{baseline: {{sched: baseline, warmup-epochs: 0.5, lr: {lr!r}}}, auto: {{sched: autowu-cos}}}}
        """, name="tab")
    records = tmp_path / "records"
    monkeypatch.setattr(sweep.tables, "RECORDS_DIR", str(records))
    capsys.readouterr()
    assert sweep.main([str(table), "--reuse-from", str(screen), "--dry-run", "--runs-dir", str(runs_dir)]) == 0
    out = capsys.readouterr().out  # a dry run lists, copies nothing
    assert "would reuse 1 record(s)" in out and "3 run(s) would still be pending" in out and not records.exists()
    assert sweep.main([str(table), "--reuse-from", str(screen), "--runs-dir", str(runs_dir)]) == 0
    out = capsys.readouterr().out
    assert "reused 1 record(s)" in out and "tab/baseline_b16_s0 <- scr/baseline_16_s0" in out
    record = records / "tab" / "baseline_b16_s0"
    assert json.loads((record / "reused_from.json").read_text())["run"] == "scr/baseline_16_s0"
    assert json.loads((record / "results.json").read_text())["final_top1"] == \
        json.loads((source / "results.json").read_text())["final_top1"]
    assert sweep.main([str(table), "--dry-run", "--runs-dir", str(runs_dir)]) == 0
    out = capsys.readouterr().out
    assert "4 runs, 1 done, 3 pending" in out and "done    tab/baseline_b16_s0" in out
    assert "pending tab/baseline_b16_s1" in out and "pending tab/auto_b16_s0" in out
    text = collect.collect(sweep.load_table(str(table)), str(runs_dir))
    assert "Reused: 1 run(s)" in text and "tab/baseline_b16_s0 ← scr/baseline_16_s0" in text
    assert sweep.main([str(table), "--reuse-from", str(table), "--runs-dir", str(runs_dir)]) == 2
    assert "cannot reuse its own runs" in capsys.readouterr().err
