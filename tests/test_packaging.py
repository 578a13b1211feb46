"""What the set-up promises: requirements that name what the code imports, tested versions pinned in
constraints.txt without forcing a CUDA build, a pyproject that installs `autowu`, CI that runs the README's test
command, and the demo's summary of a run directory."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib

import pytest

import autowu
from conftest import ROOT, TINY, run_cmd

NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(canonical(NAME.match(line).group(1)))
    return names


def pins(path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt line {line!r} is not an exact pin (name==version)"
            out[canonical(name)] = version
    return out


def test_every_requirement_has_a_tested_version_and_none_forces_a_cuda_build():
    runtime = requirement_names(ROOT / "requirements.txt")
    test_only = requirement_names(ROOT / "requirements-test.txt")
    pinned = pins(ROOT / "constraints.txt")
    assert {"torch", "torchvision", "timm", "pyyaml"} <= runtime
    assert {"pytest", "pytorch-lightning"} <= test_only and not ({"pytest", "pytorch-lightning"} & runtime)
    assert not (runtime | test_only) - set(pinned), "add the tested version to constraints.txt"
    for req in ("requirements.txt", "requirements-test.txt"):
        text = (ROOT / req).read_text()
        assert "+cu" not in text and "nvidia-" not in text and "--index-url" not in text, req


def test_pyproject_installs_the_autowu_package():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "autowu"
    assert meta["tool"]["setuptools"]["packages"] == ["autowu"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "autowu.__version__"}
    deps = {canonical(NAME.match(d).group(1)) for d in meta["project"]["dependencies"]}
    assert deps <= requirement_names(ROOT / "requirements.txt")  # the library needs no more than the framework
    # the package really is importable from an installed location or the checkout, with its version
    assert autowu.__version__ and hasattr(autowu, "AutoWU")


def test_ci_runs_the_readme_test_command():
    ci = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()
          if ln.strip() and not ln.lstrip().startswith("#")]
    assert "set -euo pipefail" in ci and ci[-1] == "bash scripts/test.sh"
    assert "bash scripts/test.sh" in (ROOT / "README.md").read_text(), \
        "the README must give the test command that .ci/run runs"


@pytest.mark.parametrize("script", ["setup.sh", "main.sh", "test.sh"])
def test_entry_scripts_are_valid_bash(script):
    proc = subprocess.run(["bash", "-n", str(ROOT / "scripts" / script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_run_summary_reports_the_switch_accuracy_and_writes_the_curves(tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "--epochs", "4", "--synthetic-train-size", "256", "--sched", "autowu-cos",
            "--autowu-rho-w", "0.25", "--output", str(run)]
    proc = run_cmd([sys.executable, str(ROOT / "train.py"), *args], timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((run / "results.json").read_text())
    assert results["switch"] is not None  # rho_w bounds the warmup, so this tiny run switches
    proc = run_cmd([sys.executable, str(ROOT / "scripts" / "run_summary.py"), str(run)], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"AutoWU switched at step {results['switch']['step']}" in proc.stdout
    assert f"final top-1 accuracy {results['final_top1']:.2f}%" in proc.stdout
    png = run / "lr_loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_run_summary_names_a_missing_run(tmp_path):
    proc = run_cmd([sys.executable, str(ROOT / "scripts" / "run_summary.py"), str(tmp_path)], timeout=60)
    assert proc.returncode == 2 and "results.json is missing" in proc.stderr
