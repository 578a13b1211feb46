"""scripts/gpu_check.py on the CPU: its argument handling, the runner (one broken or hung check does not hide the
others, a rerun keeps the other checks' results), the report, and one tiny dry run of every check, so the script is
known to start when a GPU is lent (issue 16)."""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import json
import re
import sys
import time

import pytest
import torch

from conftest import ROOT

spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = gpu_check  # its dataclasses look the module up there
spec.loader.exec_module(gpu_check)


# -- arguments ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--device", "cpu"], "--device cpu runs only with --dry-run"),
    (["--device", "cpu", "--dry-run", "--checks", "9"], "unknown check '9'"),
    (["--device", "cpu", "--dry-run", "--checks", ","], "--checks is empty"),
    (["--device", "cpu", "--dry-run", "--budget", "0"], "--budget must be > 0"),
    (["--device", "cpu", "--dry-run", "--jobs", "0"], "--jobs must be >= 1"),
])
def test_bad_arguments_are_one_line_and_exit_2(argv, message, capsys, tmp_path):
    out = tmp_path / "r.md"
    assert gpu_check.main(argv + ["--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not out.exists()  # nothing written


def test_cuda_without_a_gpu_says_what_to_do(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 2
    assert "no CUDA device is visible here" in capsys.readouterr().err


def test_checks_by_number_or_name_in_order():
    assert [c.number for c in gpu_check.parse_checks("compile,1,syncs,1")] == [1, 3, 5]
    opts = gpu_check.parse(["--device", "cpu", "--dry-run"])
    assert [c.name for c in opts.selected] == ["throughput", "fp16", "syncs", "gpu-data", "compile", "jpeg",
                                                   "sweep"]
    assert opts.compile_backend == "eager"  # inductor on a GPU; a dry run only traces


# -- the runner and the report, with stand-in checks -------------------------------------------------------------
def _ok(ctx):
    print("measuring")
    return {"summary": "42 images/s", "figures": {"images_per_s": 42.0}, "criteria": {"fast": True},
            "commands": ["python x.py --fast"]}


def _broken(ctx):
    raise ValueError("this check is broken")


def _hangs(ctx):
    time.sleep(30)


def _stand_ins(monkeypatch, runs, cap_s=0.1):
    checks = [dataclasses.replace(c, run=runs.get(c.number, _ok), cap_s=cap_s) for c in gpu_check.CHECKS]
    monkeypatch.setattr(gpu_check, "CHECKS", checks)


def test_a_broken_or_hung_check_does_not_hide_the_others(monkeypatch, tmp_path, capsys):
    _stand_ins(monkeypatch, {2: _broken, 3: _hangs})
    out = tmp_path / "gpu_cpu.md"
    t0 = time.perf_counter()
    rc = gpu_check.main(["--device", "cpu", "--dry-run", "--checks", "1,2,3,4", "--output", str(out)])
    assert time.perf_counter() - t0 < 20  # the hung check was stopped at its cap
    assert rc == 1
    printed = capsys.readouterr().out
    for number, name, status in [(1, "throughput", "RAN"), (2, "fp16", "ERROR"), (3, "syncs", "TIMEOUT"),
                                 (4, "gpu-data", "RAN")]:
        assert re.search(rf"^\[gpu-check\] {number} {name}\s+{status}\s", printed, re.M), printed
    report = json.loads(out.with_suffix(".json").read_text())
    checks = report["checks"]
    assert checks["fp16"]["status"] == "error" and "ValueError: this check is broken" in checks["fp16"]["summary"]
    assert "_broken" in checks["fp16"]["traceback"]
    assert checks["syncs"]["status"] == "timeout"
    assert checks["gpu-data"]["figures"] == {"images_per_s": 42.0}
    md = out.read_text()
    assert "| 2 | fp16 with GradScaler and AutoWU | error | ValueError: this check is broken |" in md
    assert f"torch {torch.__version__}" in md and report["environment"]["torch"] == torch.__version__
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", md)
    assert "    python x.py --fast" in md and "- met: fast" in md and "measuring" in md


def test_a_rerun_keeps_the_other_checks_unless_fresh(monkeypatch, tmp_path):
    out = tmp_path / "gpu_cpu.md"
    _stand_ins(monkeypatch, {})
    assert gpu_check.main(["--device", "cpu", "--dry-run", "--checks", "1,2", "--output", str(out)]) == 0
    first = json.loads(out.with_suffix(".json").read_text())["checks"]
    _stand_ins(monkeypatch, {2: _broken})
    assert gpu_check.main(["--device", "cpu", "--dry-run", "--checks", "2", "--output", str(out)]) == 1
    checks = json.loads(out.with_suffix(".json").read_text())["checks"]
    assert checks["throughput"] == first["throughput"] and checks["fp16"]["status"] == "error"
    assert gpu_check.main(["--device", "cpu", "--dry-run", "--checks", "2", "--output", str(out), "--fresh"]) == 1
    assert list(json.loads(out.with_suffix(".json").read_text())["checks"]) == ["fp16"]


def test_the_budget_stops_starting_checks(monkeypatch, tmp_path, capsys):
    _stand_ins(monkeypatch, {1: lambda ctx: (time.sleep(1.5), _ok(ctx))[1]}, cap_s=10)
    out = tmp_path / "gpu_cpu.md"
    assert gpu_check.main(["--device", "cpu", "--dry-run", "--checks", "1,2", "--budget", "6",
                           "--output", str(out)]) == 0
    checks = json.loads(out.with_suffix(".json").read_text())["checks"]
    assert checks["throughput"]["status"] == "ran"
    assert checks["fp16"]["status"] == "skipped" and "budget spent" in checks["fp16"]["summary"]


# -- check 3 finds a host read inside the training step ------------------------------------------------------------
def test_sync_check_counts_a_host_read_inside_the_step(monkeypatch, tmp_path):
    """The CPU has nothing to synchronise, so the check's other evidence must work: a loss function that reads the
    loss back (``.item()``, a sync on a GPU) in every step is found, once per checked step."""
    import framework.wiring
    real = framework.wiring.build_loss

    def reading_loss(label_smoothing=0.0):
        fn = real(label_smoothing)

        def loss_fn(logits, target):
            loss = fn(logits, target)
            loss.item()
            return loss
        return loss_fn

    monkeypatch.setattr(framework.wiring, "build_loss", reading_loss)  # what train.py and the benchmark wire
    opts = gpu_check.parse(["--device", "cpu", "--dry-run"])
    ctx = gpu_check.Ctx(opts=opts, device=torch.device("cpu"), tmp=tmp_path, deadline=time.monotonic() + 600)
    result = gpu_check.check_syncs(ctx)
    figures = result["figures"]
    assert figures["loop_host_reads_in_step"] == figures["loop_steps"] == 8
    assert result["criteria"]["no host read inside a training step"] is False
    assert result["criteria"]["no host read in AutoWU.step(loss) between epoch ends"] is True


# -- every check, tiny, on the CPU ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "gpu_cpu_dry-run.md"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = gpu_check.main(["--device", "cpu", "--dry-run", "--table", "fashion_mnist", "--output", str(out),
                             "--budget", "3600"])  # a busy CI machine must not skip a check
    return rc, out, json.loads(out.with_suffix(".json").read_text()), printed.getvalue()


def test_dry_run_runs_every_check(dry_run):
    rc, out, report, _ = dry_run
    checks = report["checks"]
    assert {name: c["status"] for name, c in checks.items()} == {name: "ran" for name in gpu_check.CHECK_NAMES}, \
        {name: (c["status"], c["summary"], c.get("traceback")) for name, c in checks.items()}
    assert rc == 0 and report["dry_run"] is True
    md = out.read_text()
    for c in gpu_check.CHECKS:
        assert f"| {c.number} | {c.title} | ran |" in md
        assert f"## {c.number}. {c.title}" in md


def test_dry_run_figures(dry_run):
    checks = dry_run[2]["checks"]
    f1 = checks["throughput"]["figures"]  # ours vs timm, alternating windows, through bench_throughput
    assert f1["ours_images_per_s"] > 0 and f1["timm_images_per_s"] > 0
    assert f1["ratio"] == pytest.approx(f1["ours_images_per_s"] / f1["timm_images_per_s"], rel=1e-6)
    assert f1["ops_per_step"]["ours"]["optimizer"] > 0
    assert "bench_throughput.py -c configs/imagenet_resnet50.yaml" in checks["throughput"]["commands"][0]

    f2 = checks["fp16"]["figures"]  # train.py ran; every optimizer step ran (bf16 on the CPU: no scaler)
    assert f2["status"] == "finished" and f2["steps"] == 12 and f2["optimizer_steps_run"] == 12
    assert f2["skipped_by_scaler"] == 0 and f2["nonfinite_weights"] == 0

    f3 = checks["syncs"]["figures"]  # host reads counted by wrapping the Tensor read-back methods
    assert f3["loop_steps"] == 8 and f3["loop_host_reads_in_step"] == 0
    assert f3["loop_host_reads_at_flush_or_epoch_end"] >= f3["engine_log_flushes"] == 4  # the engine's flushes
    assert f3["autowu_steps"] == 60 and f3["autowu_host_reads_in_step"] == 0
    assert f3["autowu_host_reads_at_epoch_end"] >= 3 and len(f3["gp_test_ms_per_epoch"]) == 3
    assert f3["gp_tests"] == 3 and all(ms > 0 for ms in f3["gp_test_ms_per_epoch"])

    f4 = checks["gpu-data"]["figures"]
    assert f4["status"] == "finished" and len(f4["epoch_times_s"]) == 2 and f4["epoch_time_s"] > 0

    f5 = checks["compile"]["figures"]
    assert f5["backend"] == "eager" and f5["first_step_compiled_s"] > 0 and f5["ratio"] > 0
    assert len(f5["windows_s"]["eager"]) == len(f5["windows_s"]["compiled"]) == 2

    fj = checks["jpeg"]["figures"]  # the three ImageNet inputs timed on generated JPEGs (nvJPEG's path on the CPU)
    assert set(fj["images_per_s"]) == {"timm", "fast", "gpu"} and all(v > 0 for v in fj["images_per_s"].values())
    f6 = checks["sweep"]["figures"]  # one cell of the table, two steps, through sweep.py and train.py
    assert f6["table"] == "fashion_mnist" and len(f6["finished_here"]) == 1 and f6["failed"] == []
    assert f6["runs_archive_bytes"] > 0
    assert f6["records_archive"] is not None  # sweep.py --export: the compact records are packed too


def test_dry_run_prints_one_line_per_check(dry_run):
    printed = dry_run[3]
    for c in gpu_check.CHECKS:  # as each check ends, and again at the end
        assert len(re.findall(rf"^\[gpu-check\] {c.number} {c.name}\s+RAN\s+\S.* \(\d+ s\)$", printed, re.M)) == 2


def test_check_7_runs_several_tables_in_order(tmp_path):
    """--table A,B: each table's missing cells in turn (a dry run: one cell of each, two steps); the report keeps
    each table's figures."""
    out = tmp_path / "report.md"
    rc = gpu_check.main(["--device", "cpu", "--dry-run", "--checks", "7", "--table", "fashion_mnist,autolr_fashion_mnist",
                         "--output", str(out)])
    assert rc == 0
    report = json.loads(out.with_suffix(".json").read_text())
    figures = report["checks"]["sweep"]["figures"]
    assert list(figures) == ["fashion_mnist", "autolr_fashion_mnist"]
    assert all(len(f["finished_here"]) == 1 and f["failed"] == [] for f in figures.values())


def test_check_7_refuses_an_unknown_table_in_the_list(tmp_path, capsys):
    rc = gpu_check.main(["--device", "cpu", "--dry-run", "--checks", "7", "--table", "fashion_mnist,no_such_table",
                         "--output", str(tmp_path / "r.md")])
    assert rc == 2 and "--table no_such_table" in capsys.readouterr().err


def test_check_7_runs_only_the_named_block(tmp_path):
    """--table TABLE:BLOCK: that block's missing cells alone (a dry run: its first, two steps). A table of its own,
    so that committed records (which count as done) never empty the block."""
    table = tmp_path / "two_blocks.yaml"
    table.write_text("title: two blocks\nbase: configs/fashion_mnist_demo.yaml\nseeds: [0, 1]\ncolumns: [256, 1024]\n"
                     "rows: {baseline: {sched: baseline}}\nblocks: {small: {}, large: {}}\n")
    out = tmp_path / "report.md"
    rc = gpu_check.main(["--device", "cpu", "--dry-run", "--checks", "7", "--table", f"{table}:large",
                         "--output", str(out)])
    assert rc == 0
    figures = json.loads(out.with_suffix(".json").read_text())["checks"]["sweep"]["figures"]
    assert figures["table"] == "two_blocks" and figures["runs"] == 4  # one block: 2 columns x 2 seeds, not 8
    assert [n.split("/")[1] for n in figures["finished_here"]] == ["large"]


def test_check_7s_default_is_the_chosen_proxys_tables_then_autolr_table14_and_skips_committed_runs(tmp_path):
    from experiments import sweep
    items = [gpu_check.table_and_block(item) for item in gpu_check.SWEEP_TABLES.split(",")]
    assert items == [("proxy_regime", "resnet_s2"), ("proxy_regime_grid", "resnet_s2"),
                     ("auto_lr_proxy", "resnet_s2"), ("autolr_table14", None)]
    for table, block in items:  # each loads and has the block: a GPU session does not end on a renamed table
        sweep.check_filters(sweep.load_table(table), blocks=[block] if block else None)
    # a run whose record is committed (results/runs) counts as done with an empty runs folder: it is not run again
    runs = sweep.expand(sweep.load_table("proxy_regime"), str(tmp_path / "runs"), blocks=["resnet_s2"])
    recorded = [r for r in runs if (ROOT / r.record / "results.json").is_file()]
    assert len(recorded) >= 18 and all(r.done for r in recorded)  # 16K and 8K: 3 rows x 3 seeds each


def test_check_7_refuses_an_unknown_block(tmp_path, capsys):
    rc = gpu_check.main(["--device", "cpu", "--dry-run", "--checks", "7", "--table", "proxy_screen:resnet_s3",
                         "--output", str(tmp_path / "r.md")])
    err = capsys.readouterr().err
    assert rc == 2 and "--table proxy_screen:resnet_s3: --block resnet_s3: not in proxy_screen" in err


# -- scripts/gpu_wheels.sh: what the lent GPU machine lacks travels with the call -----------------------------------

def shell_array(text: str, name: str) -> list[str]:
    match = re.search(rf"^{name}=\(([^)]*)\)", text, re.M)
    assert match, f"gpu_wheels.sh has no {name}=(...)"
    return match.group(1).split()


def test_every_package_the_project_imports_is_on_the_gpu_image_or_carried():
    import ast
    script = (ROOT / "scripts" / "gpu_wheels.sh").read_text()
    have = {n.lower() for n in shell_array(script, "gpu_image") + shell_array(script, "packages")
            + shell_array(script, "binary")}
    dist = {"PIL": "pillow", "yaml": "pyyaml"}  # import names that are not their distribution's name
    own = {"framework", "autowu", "experiments", "train", "conftest"}
    imported = set()
    for folder in ("", "framework", "autowu", "experiments", "scripts"):
        for path in (ROOT / folder).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
                imported |= {n.split(".")[0] for n in names}
    third_party = {m for m in imported - own if m not in sys.stdlib_module_names}
    assert {"torch", "schedulefree", "simplejpeg"} <= third_party  # the scan sees the project's imports
    missing = {m for m in third_party if dist.get(m, m).replace("_", "-").lower() not in have}
    assert not missing, f"imported but neither on the GPU image nor carried by gpu_wheels.sh: {sorted(missing)}"


def test_gpu_wheels_finds_the_dataset_with_the_projects_own_function(tmp_path):
    """The script's embedded Python (which Fashion-MNIST folder to copy) runs against today's code."""
    import subprocess
    script = (ROOT / "scripts" / "gpu_wheels.sh").read_text()
    snippet = re.search(r"<<'EOF'\n(.*?)\nEOF", script, re.S).group(1)
    (tmp_path / "data" / "fashion-mnist").mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (tmp_path / "data" / "fashion-mnist" / f"{name}.gz").write_bytes(b"")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", snippet.replace('sys.path.insert(0, ".")', "")], cwd=tmp_path,
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("fashion-mnist")
