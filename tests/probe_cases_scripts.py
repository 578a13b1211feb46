"""Probe cases: every script's inputs (sweep, collect, plot, run_summary, the benchmarks, prepare_data, gpu_check)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional

from fault_probe import ROOT, Outcome, case, expect_ok, expect_refusal, tree


@case("scripts", "collect.py with a table name that does not exist")
def collect_unknown_table(p):
    return expect_refusal(p, p.script("collect.py", "no_such_table"), "no_such_table")


# -- helpers (not cases) ---------------------------------------------------------------------------------------------
BASE = "configs/fashion_mnist_demo.yaml"
TABLE = (f"title: A probe table\nbase: {BASE}\nseeds: [0]\ncolumns: [256]\n"
         "rows:\n  baseline: {sched: baseline}\n  autowu-cos: {sched: autowu-cos}\n")


def _refused_writing_nothing(p, proc, names, *absent: Path) -> Outcome:
    """``expect_refusal``, and nothing created at ``absent`` (paths that did not exist before the command ran). A
    command that went on and wrote is classified by what it did (silent, traceback), not as a loss: nothing of the
    user's was there; a refusal that still wrote something is 'silent'."""
    o = expect_refusal(p, proc, names)
    made = [str(x) for x in absent if x.exists()]
    if o.outcome == "clear error" and made:
        return Outcome("silent", f"refused, but wrote {made}")
    return o


def _table(p, body: str = TABLE, name: str = "t") -> Path:
    return p.write(f"{name}.yaml", body)


def _fake_run(out: Path, top1: float = 90.0, *, switch_step: Optional[int] = None, spe: int = 10, epochs: int = 4,
              finished: bool = True, results: Optional[dict] = None) -> Path:
    """A run directory in train.py's formats (baseline, or AutoWU with ``switch_step``); ``results`` updates
    results.json's keys."""
    out.mkdir(parents=True)
    total = spe * epochs
    switch = None if switch_step is None else {"type": "switch", "epoch": switch_step // spe, "step": switch_step,
                                                "t_star": switch_step - 2, "lr": 0.005, "reason": "gp-test"}
    rows = ["step,epoch,lr,loss"]
    for s in range(total):
        lr = 0.01 * min(1.0, (s + 1) / spe) * (1 if s < spe else 1 - s / total + 0.01)
        rows.append(f"{s},{s // spe},{lr!r},{2.3 * math.exp(-3 * (s + 1) / total)!r}")
    (out / "steps.csv").write_text("\n".join(rows) + "\n")
    (out / "epochs.jsonl").write_text("".join(json.dumps({"epoch": e, "step": (e + 1) * spe,
                                                          "top1": top1 - (epochs - e - 1)}) + "\n"
                                              for e in range(epochs)))
    events = [{"type": "test", "epoch": 0, "step": 5, "passed": False}] + ([switch] if switch else [])
    (out / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (out / "env.json").write_text(json.dumps({"argv": ["train.py", "--output", str(out)], "world_size": 1}))
    (out / "args.yaml").write_text(f"output: {out}\nsched: {'autowu-cos' if switch else 'baseline'}\n")
    if finished:
        res = {"status": "finished", "final_top1": top1, "best_top1": top1, "switch": switch, "wall_time_s": 30.0,
               "epochs": epochs, "steps": total, "hardware": "cpu: probe",
               "config": {"sched": "autowu-cos" if switch else "baseline"}}
        res.update(results or {})
        (out / "results.json").write_text(json.dumps(res))
    return out


def _two_runs(p, table: str = "t") -> tuple[Path, Path, Path]:
    """A finished baseline and a finished AutoWU run of the probe table: (runs dir, baseline dir, autowu dir)."""
    runs = p.path("runs")
    base = _fake_run(runs / table / "baseline_b256_s0", 90.0)
    auto = _fake_run(runs / table / "autowu-cos_b256_s0", 92.0, switch_step=15)
    return runs, base, auto


def _stub(p, name: str = "fakepython") -> Path:
    """An executable that records its arguments (stands in for python/torchrun: nothing is launched)."""
    path = p.write(name, f"#!/bin/bash\necho \"$@\" > {p.path(name + '.argv')}\nexit 0\n")
    path.chmod(0o755)
    return path


def _slurm_env(p, **extra: str) -> dict:
    """The environment of an sbatch script run with bash outside SLURM: a stub interpreter, an empty cluster file."""
    env_file = p.path("cluster.env")
    if not env_file.exists():
        p.write("cluster.env", "")
    env = {k: "" for k in os.environ if k.startswith(("SLURM_", "AUTOWU_"))}  # this shell's own: blanked
    env.update({"AUTOWU_ROOT": str(ROOT), "AUTOWU_CLUSTER_ENV": str(env_file), "AUTOWU_PYTHON": str(_stub(p))})
    env.update(extra)
    return env


TINY_LOADER = ["--dataset", "synthetic", "--model", "fmnist_cnn", "--img-size", "28", "--in-chans", "1",
               "--num-classes", "10", "--synthetic-train-size", "128", "--synthetic-val-size", "64", "--workers", "0",
               "--batch-size", "32", "--micro-batch", "16", "--device", "cpu"]
CADENCE = ["--reps", "1", "--no-recorded", "--patience", "2", "--max-overshoot", "paper", "--workers", "1"]


def _cadence(p, *argv: str):
    return p.script("cadence_study.py", *CADENCE, "--out", str(p.path("c", "summary.json")),
                    "--figure", str(p.path("c", "fig.png")), *argv, timeout=60)


# -- sweep.py: table files -------------------------------------------------------------------------------------------
@case("scripts", "sweep.py: a table file whose YAML is a list, not a mapping")
def sweep_table_is_a_list(p):
    t = _table(p, "- baseline\n- autowu-cos\n")
    return expect_refusal(p, p.script("sweep.py", str(t), "--dry-run", "--runs-dir", str(p.path("runs"))),
                          ["t.yaml", "mapping"])


@case("scripts", "sweep.py: rows given as a list of names instead of a mapping")
def sweep_rows_as_list(p):
    t = _table(p, f"title: t\nbase: {BASE}\ncolumns: [256]\nrows: [baseline, autowu-cos]\n")
    return expect_refusal(p, p.script("sweep.py", str(t), "--dry-run", "--runs-dir", str(p.path("runs"))),
                          ["t.yaml", "rows"])


@case("scripts", "sweep.py: a batch size listed twice in columns (two runs, one directory)")
def sweep_duplicate_column(p):
    t = _table(p, f"title: t\nbase: {BASE}\ncolumns: [256, 256]\nrows: {{a: {{sched: baseline}}}}\n")
    return expect_refusal(p, p.script("sweep.py", str(t), "--dry-run", "--runs-dir", str(p.path("runs"))),
                          ["t.yaml", "column", "256"])


@case("scripts", "sweep.py: a seed listed twice (two runs, one directory)")
def sweep_duplicate_seed(p):
    t = _table(p, f"title: t\nbase: {BASE}\nseeds: [0, 0]\ncolumns: [256]\nrows: {{a: {{sched: baseline}}}}\n")
    return expect_refusal(p, p.script("sweep.py", str(t), "--dry-run", "--runs-dir", str(p.path("runs"))),
                          ["t.yaml", "seeds"])


@case("scripts", "collect.py: a table whose metric is not a key results.json has (a typo)")
def collect_unknown_metric(p):
    t = _table(p, TABLE + "metric: final_top\n")
    runs, _, _ = _two_runs(p)
    out = p.path("page.md")
    return _refused_writing_nothing(p, p.script("collect.py", str(t), "--runs-dir", str(runs), "--out", str(out)),
                                    ["final_top", "metric"], out)


@case("scripts", "collect.py: a table row with a flag train.py does not have")
def collect_unknown_flag(p):
    t = _table(p, f"title: t\nbase: {BASE}\ncolumns: [256]\nrows: {{a: {{learning-rate: 0.1}}}}\n")
    out = p.path("page.md")
    proc = p.script("collect.py", str(t), "--runs-dir", str(p.path("runs")), "--out", str(out))
    return _refused_writing_nothing(p, proc, "learning-rate", out)


@case("scripts", "collect.py: the table's paper CSV lacks the top1 column")
def collect_paper_csv_without_top1(p):
    csv_path = p.write("paper.csv", "source,block,row,column,top\npaper,,baseline,256,91.0\n")
    t = _table(p, TABLE + f"paper: {csv_path}\n")
    runs, _, _ = _two_runs(p)
    out = p.path("page.md")
    return _refused_writing_nothing(p, p.script("collect.py", str(t), "--runs-dir", str(runs), "--out", str(out)),
                                    ["paper.csv", "top1"], out)


# -- sweep.py: filters and extra flags ---------------------------------------------------------------------------------
@case("scripts", "sweep.py --block with a block the table does not have")
def sweep_unknown_block(p):
    t = _table(p, f"title: t\nbase: {BASE}\ncolumns: [256]\nrows: {{a: {{sched: baseline}}}}\n"
                  "blocks: {small: {}, large: {}}\n")
    return expect_refusal(p, p.script("sweep.py", str(t), "--dry-run", "--runs-dir", str(p.path("runs")),
                                      "--block", "medium"), "medium")


@case("scripts", "sweep.py --columns with a batch size the table does not have")
def sweep_unknown_column(p):
    t = _table(p)
    return expect_refusal(p, p.script("sweep.py", str(t), "--dry-run", "--runs-dir", str(p.path("runs")),
                                      "--columns", "512"), "512")


@case("scripts", "sweep.py --seeds with a seed the table does not run")
def sweep_unknown_seed(p):
    t = _table(p)
    return expect_refusal(p, p.script("sweep.py", str(t), "--dry-run", "--runs-dir", str(p.path("runs")),
                                      "--seeds", "7"), ["seed", "7"])


@case("scripts", "sweep.py --rows with one known and one misspelt row")
def sweep_unknown_row_among_known(p):
    t = _table(p)
    return expect_refusal(p, p.script("sweep.py", str(t), "--dry-run", "--runs-dir", str(p.path("runs")),
                                      "--rows", "baseline", "autowu-cso"), "autowu-cso")


@case("scripts", "sweep.py: a train.py flag after -- that does not exist")
def sweep_extra_unknown_flag(p):
    t = _table(p)
    return expect_refusal(p, p.script("sweep.py", str(t), "--dry-run", "--runs-dir", str(p.path("runs")), "--",
                                      "--data-dri", "/data"), "--data-dri")


@case("scripts", "sweep.py: --output after -- (every run would write into one directory)")
def sweep_extra_output(p):
    t = _table(p)
    return expect_refusal(p, p.script("sweep.py", str(t), "--dry-run", "--runs-dir", str(p.path("runs")), "--",
                                      "--output", str(p.path("one"))), "--output")


@case("scripts", "sweep.py --runs-dir that is a file")
def sweep_runs_dir_is_a_file(p):
    t = _table(p)
    f = p.write("runs", "not a directory\n")
    return expect_refusal(p, p.script("sweep.py", str(t), "--slurm", "--runs-dir", str(f),
                                      env={"AUTOWU_CLUSTER_ENV": str(p.write("c.env", ""))}),
                          str(f), unchanged=[f], before={str(f): tree(f)})


# -- sweep.py --slurm: cluster settings --------------------------------------------------------------------------------
def _slurm(p, env: dict, name: str):
    t = _table(p)
    runs = p.path("runs")
    env = {"AUTOWU_CLUSTER_ENV": str(p.write("c.env", "")), **env}
    proc = p.script("sweep.py", str(t), "--slurm", "--runs-dir", str(runs), env=env)
    return _refused_writing_nothing(p, proc, name, runs)


@case("scripts", "sweep.py --slurm with AUTOWU_MAX_PARALLEL=abc")
def sweep_slurm_max_parallel_text(p):
    return _slurm(p, {"AUTOWU_MAX_PARALLEL": "abc"}, "AUTOWU_MAX_PARALLEL")


@case("scripts", "sweep.py --slurm with AUTOWU_GPUS_PER_NODE=0")
def sweep_slurm_gpus_zero(p):
    return _slurm(p, {"AUTOWU_GPUS_PER_NODE": "0"}, "AUTOWU_GPUS_PER_NODE")


@case("scripts", "sweep.py --slurm with AUTOWU_CPUS_PER_TASK=many")
def sweep_slurm_cpus_text(p):
    return _slurm(p, {"AUTOWU_CPUS_PER_TASK": "many"}, "AUTOWU_CPUS_PER_TASK")


@case("scripts", "sweep.py --slurm with AUTOWU_TIME=tomorrow (not a SLURM time)")
def sweep_slurm_time_garbage(p):
    return _slurm(p, {"AUTOWU_TIME": "tomorrow"}, "AUTOWU_TIME")


@case("scripts", "sweep.py --slurm with AUTOWU_CLUSTER_ENV naming a file that does not exist")
def sweep_slurm_cluster_env_missing(p):
    return _slurm(p, {"AUTOWU_CLUSTER_ENV": str(p.path("nope.env"))}, "nope.env")


@case("scripts", "sweep.py --slurm with AUTOWU_CLUSTER_ENV naming a directory")
def sweep_slurm_cluster_env_directory(p):
    d = p.path("envdir")
    d.mkdir()
    return _slurm(p, {"AUTOWU_CLUSTER_ENV": str(d)}, "envdir")


@case("scripts", "sweep.py --slurm: a misspelt key in the cluster file (AUTOWU_PARTITON)")
def sweep_slurm_cluster_env_typo(p):
    return _slurm(p, {"AUTOWU_CLUSTER_ENV": str(p.write("typo.env", "AUTOWU_PARTITON=gpu\n"))}, "AUTOWU_PARTITON")


# -- sweep.py: run directories and --export ---------------------------------------------------------------------------
@case("scripts", "sweep.py --export DEST where DEST is a file")
def sweep_export_dest_is_a_file(p):
    t = _table(p)
    runs, _, _ = _two_runs(p)
    dest = p.write("records", "a file\n")
    return expect_refusal(p, p.script("sweep.py", str(t), "--runs-dir", str(runs), "--export", str(dest)),
                          str(dest), unchanged=[dest, runs], before={str(dest): tree(dest), str(runs): tree(runs)})


def _export_with_damage(p, name: str, damage) -> object:
    t = _table(p)
    runs, base, auto = _two_runs(p)
    damage(base / name)
    dest = p.path("records")
    before = tree(runs)
    proc = p.script("sweep.py", str(t), "--runs-dir", str(runs), "--export", str(dest))

    def check():
        assert tree(runs) == before, "the runs changed"
        assert str(base / name) in proc.err, f"the damaged file is not named: {proc.err[-500:]}"
        assert (dest / "t" / "autowu-cos_b256_s0" / "results.json").is_file(), "the sound run was not exported"
        assert not (dest / "t" / "baseline_b256_s0").exists(), "the damaged run was exported"
        left = [str(x) for x in dest.rglob("*.tmp")]
        assert not left, f"temporary directories left behind: {left}"
    return expect_ok(p, check, proc)


@case("rundir", "sweep.py --export of a run whose env.json is not JSON")
def sweep_export_damaged_env_json(p):
    return _export_with_damage(p, "env.json", lambda f: f.write_text('{"argv": ["train.py", "--outp'))


@case("rundir", "sweep.py --export of a run whose steps.csv ends in a cut row")
def sweep_export_cut_steps_csv(p):
    def cut(f):
        text = f.read_text()
        f.write_text(text[:text.rstrip("\n").rfind("\n") + 5])
    return _export_with_damage(p, "steps.csv", cut)


@case("rundir", "sweep.py --dry-run over a run whose results.json is not UTF-8 text")
def sweep_results_not_utf8(p):
    t = _table(p)
    runs, base, _ = _two_runs(p)
    bad = base / "results.json"
    bad.write_bytes(b"\xff\xfe{\x00\"\x00s")
    proc = p.script("sweep.py", str(t), "--dry-run", "--runs-dir", str(runs))

    def check():
        assert proc.code == 0, f"exit {proc.code}"
        named = [line for line in proc.err.splitlines() if str(bad) in line]
        assert named and "failed" in named[0], f"the file is not named as a failed run: {proc.err[-500:]}"
    return expect_ok(p, check, proc)


# -- collect.py --------------------------------------------------------------------------------------------------------
@case("scripts", "collect.py --out that is a directory")
def collect_out_is_a_directory(p):
    t = _table(p)
    runs, _, _ = _two_runs(p)
    out = p.path("page.md")
    out.mkdir()
    (out / "keep.txt").write_text("mine\n")
    return expect_refusal(p, p.script("collect.py", str(t), "--runs-dir", str(runs), "--out", str(out)),
                          str(out), unchanged=[p.tmp], before={str(p.tmp): tree(p.tmp)})


@case("scripts", "collect.py over an existing page that is not UTF-8 text")
def collect_existing_page_not_utf8(p):
    t = _table(p)
    runs, _, _ = _two_runs(p)
    out = p.write("page.md", b"# My page\n\xff\xfe hand-written notes in latin-1: caf\xe9\n")
    return expect_refusal(p, p.script("collect.py", str(t), "--runs-dir", str(runs), "--out", str(out)),
                          str(out), unchanged=[out], before={str(out): tree(out)})


def _collect_ok(p, damage: dict, *, what: str, expect_in_page: str = ""):
    """collect.py over two runs, the baseline's results.json updated with ``damage``: the page is written (exit 0),
    the damaged file named on stderr."""
    t = _table(p)
    runs = p.path("runs")
    base = _fake_run(runs / "t" / "baseline_b256_s0", 90.0, results=damage)
    _fake_run(runs / "t" / "autowu-cos_b256_s0", 92.0, switch_step=15)
    out = p.path("page.md")
    proc = p.script("collect.py", str(t), "--runs-dir", str(runs), "--out", str(out))

    def check():
        assert proc.code == 0, f"exit {proc.code}: {proc.err[-300:]}"
        assert out.is_file(), "no page written"
        assert str(base / "results.json") in proc.err, f"{what}: the file is not named: {proc.err[-400:]}"
        if expect_in_page:
            assert expect_in_page in out.read_text(), f"the page lacks {expect_in_page!r}"
    return expect_ok(p, check, proc)


@case("rundir", "collect.py: a baseline run whose switch entry lacks its lr")
def collect_switch_without_lr(p):
    return _collect_ok(p, {"switch": {"type": "switch", "step": 15, "epoch": 1}}, what="switch without lr")


@case("rundir", "collect.py: a run whose wall_time_s is text")
def collect_wall_time_text(p):
    return _collect_ok(p, {"wall_time_s": "about a minute"}, what="wall_time_s text")


@case("rundir", "collect.py: a run whose final_top1 is a 400-digit integer")
def collect_huge_integer_metric(p):
    t = _table(p)
    runs = p.path("runs")
    base = _fake_run(runs / "t" / "baseline_b256_s0", 90.0)
    (base / "results.json").write_text((base / "results.json").read_text().replace('"final_top1": 90.0',
                                                                                  '"final_top1": ' + "9" * 400))
    out = p.path("page.md")
    proc = p.script("collect.py", str(t), "--runs-dir", str(runs), "--out", str(out))

    def check():
        assert proc.code == 0 and out.is_file(), f"exit {proc.code}, page {out.is_file()}"
        assert str(base / "results.json") in proc.err, "the file is not named"
        assert "failed" in out.read_text(), "the run is not counted as failed"
    return expect_ok(p, check, proc)


# -- plot.py -----------------------------------------------------------------------------------------------------------
@case("scripts", "plot.py --out-dir that is a file")
def plot_out_dir_is_a_file(p):
    t = _table(p)
    runs, _, _ = _two_runs(p)
    f = p.write("figures", "a file\n")
    return expect_refusal(p, p.script("plot.py", str(t), "--runs-dir", str(runs), "--out-dir", str(f)),
                          str(f), unchanged=[f], before={str(f): tree(f)})


@case("scripts", "plot.py --block with a block the table does not have")
def plot_unknown_block(p):
    t = _table(p, f"title: t\nbase: {BASE}\ncolumns: [256]\nrows: {{a: {{sched: baseline}}}}\n"
                  "blocks: {small: {}, large: {}}\n")
    out = p.path("figs")
    return _refused_writing_nothing(p, p.script("plot.py", str(t), "--runs-dir", str(p.path("runs")), "--out-dir",
                                                str(out), "--block", "medium"), "medium", out)


def _plot_ok(p, damaged: Path, proc, out: Path):
    def check():
        assert proc.code == 0, f"exit {proc.code}: {proc.err[-300:]}"
        named = [line for line in proc.err.splitlines() if str(damaged) in line]
        assert len(named) == 1, f"the damaged file is not named once: {proc.err[-400:]}"
        assert (out / "t.png").is_file(), "no figure for the sound run"
    return expect_ok(p, check, proc)


@case("rundir", "plot.py --val: an epochs.jsonl whose top1 is text")
def plot_val_top1_text(p):
    t = _table(p)
    runs, base, _ = _two_runs(p)
    ep = base / "epochs.jsonl"
    ep.write_text(ep.read_text().replace('"top1": 87.0', '"top1": "n/a"'))
    out = p.path("figs")
    return _plot_ok(p, ep, p.script("plot.py", str(t), "--runs-dir", str(runs), "--out-dir", str(out), "--val"), out)


@case("rundir", "plot.py: an unfinished run whose events.jsonl switch entry lacks its step")
def plot_switch_without_step(p):
    t = _table(p)
    runs = p.path("runs")
    _fake_run(runs / "t" / "baseline_b256_s0", 90.0)
    auto = _fake_run(runs / "t" / "autowu-cos_b256_s0", 92.0, finished=False)
    ev = auto / "events.jsonl"
    ev.write_text(ev.read_text() + json.dumps({"type": "switch", "epoch": 1, "lr": 0.005, "reason": "gp-test"}) + "\n")
    out = p.path("figs")
    return _plot_ok(p, ev, p.script("plot.py", str(t), "--runs-dir", str(runs), "--out-dir", str(out)), out)


# -- run_summary.py ----------------------------------------------------------------------------------------------------
@case("scripts", "run_summary.py --png that is a directory")
def run_summary_png_is_a_directory(p):
    run = _fake_run(p.path("run"), 90.0, switch_step=15)
    png = p.path("fig.png")
    png.mkdir()
    return expect_refusal(p, p.script("run_summary.py", str(run), "--png", str(png)), str(png),
                          unchanged=[p.tmp], before={str(p.tmp): tree(p.tmp)})


@case("scripts", "run_summary.py --png with an image format matplotlib does not write")
def run_summary_png_bad_format(p):
    run = _fake_run(p.path("run"), 90.0, switch_step=15)
    png = p.path("curves.xyz")
    return expect_refusal(p, p.script("run_summary.py", str(run), "--png", str(png)), "xyz",
                          unchanged=[p.tmp], before={str(p.tmp): tree(p.tmp)})


@case("rundir", "run_summary.py: results.json's switch entry lacks its reason")
def run_summary_switch_without_reason(p):
    run = _fake_run(p.path("run"), 92.0, results={"switch": {"type": "switch", "epoch": 1, "step": 15,
                                                             "t_star": 13, "lr": 0.005}})
    return expect_refusal(p, p.script("run_summary.py", str(run)), str(run / "results.json"),
                          unchanged=[run], before={str(run): tree(run)})


@case("rundir", "run_summary.py: results.json's config is a list")
def run_summary_config_list(p):
    run = _fake_run(p.path("run"), 90.0, results={"config": ["baseline"]})
    return expect_refusal(p, p.script("run_summary.py", str(run)), [str(run / "results.json"), "config"],
                          unchanged=[run], before={str(run): tree(run)})


# -- prepare_data.py ---------------------------------------------------------------------------------------------------
@case("scripts", "prepare_data.py --data-dir that is a file")
def prepare_data_dir_is_a_file(p):
    f = p.write("data", "not a directory\n")
    return expect_refusal(p, p.script("prepare_data.py", "--dataset", "cifar10", "--data-dir", str(f)), str(f),
                          unchanged=[f], before={str(f): tree(f)})


@case("scripts", "prepare_data.py: CIFAR-10 batches present but not CIFAR pickles")
def prepare_data_damaged_cifar(p):
    d = p.path("data", "cifar-10-batches-py")
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        p.write(f"data/cifar-10-batches-py/{name}", b"this is not a pickle\n")
    return expect_refusal(p, p.script("prepare_data.py", "--dataset", "cifar10", "--data-dir", str(p.path("data"))),
                          "test_batch", unchanged=[d], before={str(d): tree(d)})


# -- the benchmarks ----------------------------------------------------------------------------------------------------
@case("scripts", "bench_loader.py --device cpu, as its own docstring runs it (train.py's --device)")
def bench_loader_device_flag(p):
    proc = p.script("bench_loader.py", *TINY_LOADER, "--windows", "1", "--window-batches", "1", "--warmup", "0")

    def check():
        assert proc.code == 0, f"exit {proc.code}: {proc.err.strip().splitlines()[-1:]}"
        assert "images/s" in proc.out and "device cpu" in proc.out, proc.out[-300:]
    return expect_ok(p, check, proc)


@case("scripts", "bench_loader.py --windows 0")
def bench_loader_windows_zero(p):
    return expect_refusal(p, p.script("bench_loader.py", *TINY_LOADER, "--windows", "0"), "--windows")


@case("scripts", "bench_loader.py --window-batches 0")
def bench_loader_window_batches_zero(p):
    return expect_refusal(p, p.script("bench_loader.py", *TINY_LOADER, "--window-batches", "0"), "--window-batches")


@case("scripts", "bench_loader.py --threads -1")
def bench_loader_threads_negative(p):
    return expect_refusal(p, p.script("bench_loader.py", *TINY_LOADER, "--threads", "-1"), "--threads")


@case("scripts", "bench_loader.py --imagenet-sample 8 --modes timm,bogus")
def bench_loader_unknown_mode(p):
    return expect_refusal(p, p.script("bench_loader.py", "--imagenet-sample", "8", "--modes", "timm,bogus",
                                      "--windows", "1", "--window-batches", "1", "--warmup", "0", "--batch-size", "4",
                                      "--workers", "0", "--device", "cpu", timeout=60), "bogus")


@case("scripts", "bench_checkpoint.py --repeats 0")
def bench_checkpoint_repeats_zero(p):
    return expect_refusal(p, p.script("bench_checkpoint.py", *TINY_LOADER, "--repeats", "0",
                                      "--dir", str(p.path("ck"))), "--repeats")


@case("scripts", "bench_checkpoint.py on a config whose AutoWU warmup ends before the rollback window fills")
def bench_checkpoint_short_warmup(p):
    # 10 epochs x rho_w 0.5 = 5 warmup epochs = patience 3 + 2: the cap switches before the figures are taken
    return expect_refusal(p, p.script("bench_checkpoint.py", *TINY_LOADER, "--epochs", "10", "--autowu-patience", "3",
                                      "--autowu-rho-w", "0.5", "--dir", str(p.path("ck"))), "--epochs")


@case("scripts", "bench_checkpoint.py --dir that is a file")
def bench_checkpoint_dir_is_a_file(p):
    f = p.write("ck", "a file\n")
    return expect_refusal(p, p.script("bench_checkpoint.py", *TINY_LOADER, "--dir", str(f)), str(f),
                          unchanged=[f], before={str(f): tree(f)})


@case("scripts", "bench_checkpoint.py -c with a config file that does not exist")
def bench_checkpoint_missing_config(p):
    return expect_refusal(p, p.script("bench_checkpoint.py", "-c", str(p.path("nope.yaml")), "--device", "cpu"),
                          "nope.yaml")


# -- gpu_check.py (its checks of the command line, on the CPU) ---------------------------------------------------------
def _gpu_out(p) -> tuple[Path, Path]:
    return p.path("r.md"), p.path("r.json")


def _gpu_check(p, *argv: str):
    return p.script("gpu_check.py", "--device", "cpu", "--dry-run", *argv, timeout=60)


@case("scripts", "gpu_check.py --budget nan")
def gpu_check_budget_nan(p):
    out = p.path("r.md")
    return _refused_writing_nothing(p, _gpu_check(p, "--budget", "nan", "--checks", "fp16", "--output", str(out)),
                                    "--budget", *_gpu_out(p))


@case("scripts", "gpu_check.py --output that is a directory")
def gpu_check_output_is_a_directory(p):
    out = p.path("report.md")
    out.mkdir()
    return _refused_writing_nothing(p, _gpu_check(p, "--budget", "0.001", "--output", str(out)), str(out),
                                    p.path("report.json"))


@case("scripts", "gpu_check.py: the earlier report's .json holds a list, not a report")
def gpu_check_earlier_json_list(p):
    p.write("r.json", "[1, 2, 3]\n")
    return expect_refusal(p, _gpu_check(p, "--budget", "0.001", "--output", str(p.path("r.md"))), "r.json",
                          unchanged=[p.tmp], before={str(p.tmp): tree(p.tmp)})


@case("scripts", "gpu_check.py --sweep-extra with an unknown {placeholder}")
def gpu_check_sweep_extra_placeholder(p):
    return _refused_writing_nothing(p, _gpu_check(p, "--budget", "0.001", "--sweep-extra", "--data-dir {data_root}",
                                                  "--output", str(p.path("r.md"))), "--sweep-extra", *_gpu_out(p))


@case("scripts", "gpu_check.py --checks sweep --table with a table that does not exist")
def gpu_check_unknown_table(p):
    proc = _gpu_check(p, "--budget", "0.001", "--checks", "sweep", "--table", "no_such_grid", "--output",
                      str(p.path("r.md")))
    return _refused_writing_nothing(p, proc, "no_such_grid", *_gpu_out(p))


# -- cadence_study.py --------------------------------------------------------------------------------------------------
@case("scripts", "cadence_study.py --patience 0")
def cadence_patience_zero(p):
    return _refused_writing_nothing(p, _cadence(p, "--patience", "0"), "--patience", p.path("c"))


@case("scripts", "cadence_study.py --confidence 1.5")
def cadence_confidence_above_one(p):
    return _refused_writing_nothing(p, _cadence(p, "--confidence", "1.5"), "--confidence", p.path("c"))


@case("scripts", "cadence_study.py --reps 0 --no-recorded (no curve at all)")
def cadence_no_curves(p):
    return _refused_writing_nothing(p, _cadence(p, "--reps", "0"), "--reps", p.path("c"))


@case("scripts", "cadence_study.py --cache with a file that is not JSON")
def cadence_cache_not_json(p):
    cache = p.write("cache.json", '[{"curve": "u_min0.6_slow_s0.03_r0", "test_e')
    return expect_refusal(p, _cadence(p, "--cache", str(cache)), "cache.json", unchanged=[p.tmp],
                          before={str(p.tmp): tree(p.tmp)})


@case("scripts", "cadence_study.py --out that is a directory")
def cadence_out_is_a_directory(p):
    out = p.path("c", "summary.json")
    out.mkdir(parents=True)
    return expect_refusal(p, _cadence(p, "--out", str(out)), str(out), unchanged=[p.tmp],
                          before={str(p.tmp): tree(p.tmp)})


@case("scripts", "cadence_study.py --import-recorded with a folder that holds no run")
def cadence_import_nothing(p):
    empty = p.path("no_runs")
    empty.mkdir()
    return _refused_writing_nothing(p, _cadence(p, "--import-recorded", str(empty)), str(empty), p.path("c"))


@case("rundir", "cadence_study.py --import-recorded: a run with steps.csv but no args.yaml")
def cadence_import_without_args(p):
    root = p.path("rec")
    run = _fake_run(root / "r1", 90.0, finished=False)
    (run / "args.yaml").unlink()
    warmups = ROOT / "results" / "cadence" / "warmups"
    before = tree(warmups)
    proc = _cadence(p, "--import-recorded", str(root))
    out = _refused_writing_nothing(p, proc, str(run / "args.yaml"), p.path("c"))
    if tree(warmups) != before:
        return Outcome("loss", f"{warmups} changed")
    return out


# -- shell scripts (run with bash only where they cannot launch a job: a stub interpreter, their argument checks) -----
@case("scripts", "launch_local.sh 0 (no processes)")
def launch_local_nproc_zero(p):
    stub = _stub(p)
    proc = p.script("bash", "scripts/launch_local.sh", "0", "--epochs", "1", env={"PYTHON": str(stub)})
    return expect_refusal(p, proc, "NPROC")


@case("scripts", "launch_local.sh four (NPROC not a number)")
def launch_local_nproc_text(p):
    stub = _stub(p)
    proc = p.script("bash", "scripts/launch_local.sh", "four", "--epochs", "1", env={"PYTHON": str(stub)})
    return expect_refusal(p, proc, "four")


def _sbatch(p, env: dict, *argv: str):
    return p.script("bash", "scripts/slurm/single_node.sbatch", *argv, env=_slurm_env(p, **env), timeout=30)


@case("scripts", "single_node.sbatch with AUTOWU_GPUS_PER_NODE=four")
def slurm_gpus_per_node_text(p):
    proc = _sbatch(p, {"AUTOWU_GPUS_PER_NODE": "four"}, "--output", str(p.path("run")))
    return expect_refusal(p, proc, "AUTOWU_GPUS_PER_NODE")


@case("scripts", "single_node.sbatch with AUTOWU_MASTER_PORT=99999")
def slurm_master_port_out_of_range(p):
    proc = _sbatch(p, {"AUTOWU_MASTER_PORT": "99999"}, "--output", str(p.path("run")))
    return expect_refusal(p, proc, "AUTOWU_MASTER_PORT")


@case("scripts", "single_node.sbatch with AUTOWU_SHUTDOWN_TIMEOUT=soon")
def slurm_shutdown_timeout_text(p):
    proc = _sbatch(p, {"AUTOWU_SHUTDOWN_TIMEOUT": "soon"}, "--output", str(p.path("run")))
    return expect_refusal(p, proc, "AUTOWU_SHUTDOWN_TIMEOUT")


@case("scripts", "single_node.sbatch with AUTOWU_CLUSTER_ENV naming a file that does not exist")
def slurm_cluster_env_missing(p):
    proc = _sbatch(p, {"AUTOWU_CLUSTER_ENV": str(p.path("nope.env"))}, "--output", str(p.path("run")))
    return expect_refusal(p, proc, "nope.env")


@case("scripts", "single_node.sbatch without --output")
def slurm_without_output(p):
    proc = _sbatch(p, {}, "--epochs", "1")
    return expect_refusal(p, proc, "--output")


@case("scripts", "single_node.sbatch: a cluster file with an unclosed quote")
def slurm_cluster_env_bad_quote(p):
    env_file = p.write("bad.env", 'AUTOWU_PARTITION=gpu\nAUTOWU_SETUP="source x\n')
    proc = _sbatch(p, {"AUTOWU_CLUSTER_ENV": str(env_file)}, "--output", str(p.path("run")))
    return expect_refusal(p, proc, "bad.env")


@case("scripts", "local_cluster.sh with an unknown command")
def local_cluster_unknown_command(p):
    proc = p.script("bash", "scripts/slurm/local_cluster.sh", "start", env={"AUTOWU_SLURM_DIR": str(p.path("s"))})
    return expect_refusal(p, proc, "start")


# -- sweep.py --reuse-from, and the screen / compare table keys ---------------------------------------------------------
@case("scripts", "sweep.py --reuse-from a table that does not exist")
def sweep_reuse_from_unknown_table(p):
    t = _table(p)
    records = ROOT / "results" / "runs" / "t"
    return _refused_writing_nothing(p, p.script("sweep.py", str(t), "--reuse-from", "no_such_screen", "--runs-dir",
                                                str(p.path("runs"))), "no_such_screen", p.path("runs"), records)


@case("scripts", "sweep.py --reuse-from together with --local (which would copy and run at once)")
def sweep_reuse_from_with_local(p):
    t = _table(p)
    return _refused_writing_nothing(p, p.script("sweep.py", str(t), "--reuse-from", str(t), "--local", "--runs-dir",
                                                str(p.path("runs"))), "--reuse-from", p.path("runs"))


@case("scripts", "a table whose screen rule names a column the table does not have")
def screen_names_unknown_column(p):
    t = _table(p, TABLE + "screen:\n  row: baseline\n  gap: {small: '256', large: 16K, at-least: 1.5}\n"
                          "  better: {than: 16K, cells: [16K-wu33], std-factor: 2}\n")
    return _refused_writing_nothing(p, p.script("sweep.py", str(t), "--dry-run", "--runs-dir", str(p.path("runs"))),
                                    ["screen", "16K"], p.path("runs"))


@case("scripts", "collect.py: a table whose compare rows are not rows of the other table")
def compare_unknown_rows(p):
    other = _table(p, name="other")
    t = _table(p, TABLE + f"compare:\n  rows: {{table: {other}, rows: [autowu-kos]}}\n")
    out = p.path("page.md")
    return _refused_writing_nothing(p, p.script("collect.py", str(t), "--runs-dir", str(p.path("runs")), "--out",
                                                str(out)), "autowu-kos", out)


@case("scripts", "plot.py: a table whose figure names another table with the old key beside (now compare's)")
def figure_beside_key(p):
    other = _table(p, name="other")
    t = _table(p, TABLE + f"figure: {{rows: [baseline], beside: {other}}}\n")
    out = p.path("figs")
    return _refused_writing_nothing(p, p.script("plot.py", str(t), "--runs-dir", str(p.path("runs")), "--out-dir",
                                                str(out)), ["beside", "compare"], out)


@case("scripts", "a table whose versus names a row that neither it nor compare has")
def versus_unknown_row(p):
    t = _table(p, TABLE + "versus: {row: basline, std-factor: 2}\n")
    return _refused_writing_nothing(p, p.script("sweep.py", str(t), "--dry-run", "--runs-dir", str(p.path("runs"))),
                                    ["versus", "basline"], p.path("runs"))
