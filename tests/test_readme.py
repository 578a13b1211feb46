"""The commands of README.md still work.

Every ```bash block of README.md is read line by line (backslash continuations joined, comments and blank lines
skipped). Each command must start with a known program, and each one that this repository provides is run cheaply:

- ``python train.py ARGS``: ``train.py ARGS --smoke 2 --output TMP`` (two steps on synthetic data at the config's
  resolution) when its config exists and it needs no GPU or dataset that is absent here; otherwise
  ``train.py ARGS --help`` and a parse of ARGS with the config (unknown flags, bad values and unknown config keys
  fail);
- ``python scripts/sweep.py ARGS``: the same with ``--dry-run`` in place of ``--local``/``--slurm``/``--export``;
  the table must expand to at least one run;
- ``python scripts/collect.py`` / ``plot.py`` (and any other ``scripts/*.py``): ``--help``, every flag of the line
  in the help text, and for collect/plot the table under ``configs/tables/``;
- ``bash scripts/*.sh``: the script exists and ``bash -n`` parses it.

Files a command names (``*.py``, ``*.sh``, ``*.yaml``, ``*.sbatch``) must exist. The relative links of README.md and
docs/GUIDE.md must point at files (and headings) that exist.
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import re
import runpy
import shlex
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import pytest
import yaml

from conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, ROOT / "docs" / "GUIDE.md"]

PROGRAMS = {"bash", "sh", "python", "python3", "python3.11", ".venv/bin/python", ".venv/bin/pip", "pip", "pip3",
            "torchrun", "sbatch", "tensorboard", "apt-get", "sudo", "scripts/launch_local.sh"}
PYTHONS = {"python", "python3", "python3.11", ".venv/bin/python"}
SEPARATORS = {"&&", "||", ";", "|", "&"}
FILE_SUFFIXES = (".py", ".sh", ".yaml", ".yml", ".sbatch")
TIMEOUT = 120


# ---------------------------------------------------------------------------------------------- reading README.md
def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash[ \t]*\n(.*?)^```", text, flags=re.S | re.M)


def command_lines(block: str) -> list[str]:
    """The block's commands: continuations joined; blank lines and comment lines skipped."""
    out, pending = [], ""
    for raw in block.splitlines():
        line = (pending + " " + raw.strip()) if pending else raw.strip()
        if line.endswith("\\"):
            pending = line[:-1].rstrip()
            continue
        pending = ""
        if line and not line.startswith("#"):
            out.append(line)
    if pending:
        out.append(pending)
    return out


def split_commands(line: str) -> list[list[str]]:
    """``a && b | c # note`` -> [[a...], [b...], [c...]], each without leading VAR=value assignments."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    lex.commenters = "#"
    segments, current = [], []
    for token in lex:
        if token in SEPARATORS:
            segments.append(current)
            current = []
        else:
            current.append(token)
    segments.append(current)
    out = []
    for seg in segments:
        while seg and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", seg[0]):
            seg = seg[1:]
        if seg:
            out.append(seg)
    return out


README_COMMANDS = [cmd for block in bash_blocks(README.read_text()) for line in command_lines(block)
                   for cmd in split_commands(line)]


def short(cmd: list[str]) -> str:
    text = " ".join(cmd)
    return text if len(text) <= 70 else text[:67] + "..."


# ---------------------------------------------------------------------------------------------- running
# The cheap checks (sweep dry-runs, --help texts, parsing train.py lines) run in one Python subprocess that executes
# each command's script in-process with the command's argv (runpy), so that torch is imported once; train.py smoke
# runs are subprocesses of their own.
def run(argv: list[str], timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)


def call(fn, *args) -> dict:
    """``fn(*args)`` with its output captured and its exit status as a command's: {"rc": int, "out": str}."""
    buf, rc = io.StringIO(), 0
    saved_argv, saved_path = sys.argv, list(sys.path)
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            result = fn(*args)
        rc = result if isinstance(result, int) else 0
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if isinstance(e.code, str):
            buf.write(e.code)
    except Exception:  # noqa: BLE001 - a failing command is a result, reported by the test
        rc = 1
        buf.write(traceback.format_exc())
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return {"rc": rc, "out": buf.getvalue()}


def run_script(script: str, argv: list[str]) -> None:
    """``python SCRIPT ARGV`` in this process."""
    sys.argv = [script, *argv]
    runpy.run_path(str(ROOT / script), run_name="__main__")


def train_help(argv: list[str]) -> None:
    """What ``python train.py ARGV --help`` does (train.py's __main__ parses with its config, then would train)."""
    import train
    from framework.config import ConfigError, parse_args
    try:
        parse_args(train.get_args_parser(), [*argv, "--help"])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    raise AssertionError("train.py --help did not exit")


def train_parse(argv: list[str]) -> None:
    """The flags and the config of ``python train.py ARGV`` parse (unknown flags, bad values, unknown keys fail)."""
    import train
    from framework.config import ConfigError, parse_args
    try:
        parse_args(train.get_args_parser(), argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def prepare(cmd: list[str]) -> dict:
    """The in-process part of one README command's check (run in the batch subprocess)."""
    program, args = cmd[0], cmd[1:]
    if program not in PYTHONS or not args:
        return {}
    target, rest = args[0], args[1:]
    if target == "train.py":
        missing = missing_needs(rest)
        if not missing:
            return {"smoke": True}
        return {"missing": missing, "help": call(train_help, rest), "parse": call(train_parse, rest)}
    if target == "scripts/sweep.py":
        dry = sweep_dry_run_args(rest)
        return {"dry": dry, "run": call(run_script, target, dry)}
    if target.startswith("scripts/") and target.endswith(".py"):
        return {"help": call(run_script, target, ["--help"])}
    return {}


@functools.lru_cache(maxsize=None)
def prepared() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "prepared.json"
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(out)],
                              input=json.dumps(README_COMMANDS), cwd=ROOT, env=subprocess_env(),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and out.is_file(), f"the README check's batch process failed:\n{proc.stderr[-3000:]}"
        return json.loads(out.read_text())


def ok(result: dict, what: str) -> str:
    assert result["rc"] == 0, f"README command no longer works: {what}\nexit {result['rc']}\n{result['out'][-3000:]}"
    return result["out"]


def flags_of(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("--") and a != "--"]


def before_double_dash(args: list[str]) -> list[str]:
    return args[:args.index("--")] if "--" in args else args


def table_exists(name: str) -> bool:
    return (ROOT / "configs" / "tables" / f"{name}.yaml").is_file() or (
        name.endswith((".yaml", ".yml")) and (ROOT / name).is_file())


def option_values(args: list[str]) -> dict[str, object]:
    """``--key value`` / ``--key=value`` / ``--flag`` of a train.py line, keys as in the YAML configs."""
    out: dict[str, object] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--") and "=" in a:
            key, value = a[2:].split("=", 1)
            out[key] = value
        elif a.startswith("--") or a == "-c":
            key = "config" if a == "-c" else a[2:]
            if i + 1 < len(args) and not args[i + 1].startswith("-"):
                out[key] = args[i + 1]
                i += 1
            else:
                out[key] = True
        i += 1
    return {k.replace("_", "-"): v for k, v in out.items()}


def missing_needs(args: list[str]) -> list[str]:
    """What the train.py line needs that this machine lacks (a GPU, the dataset's files)."""
    line = option_values(args)
    config = line.get("config")
    settings: dict = {}
    if isinstance(config, str) and (ROOT / config).is_file():
        settings = {str(k).replace("_", "-"): v for k, v in (yaml.safe_load((ROOT / config).read_text()) or {}).items()}
    settings.update(line)
    missing = []
    if str(settings.get("device", "auto")) == "cuda" or settings.get("gpu-data") in (True, "true", "True"):
        import torch
        if not torch.cuda.is_available():
            missing.append("a GPU")
    dataset = str(settings.get("dataset", "synthetic"))
    data_dir = ROOT / str(settings.get("data-dir", "data"))
    from framework import datasets
    present = {"synthetic": lambda: True,
               "fashion_mnist": lambda: datasets.find_fashion_mnist(str(data_dir)) is not None,
               "cifar10": lambda: datasets.find_cifar("cifar10", str(data_dir))[0] is not None,
               "cifar100": lambda: datasets.find_cifar("cifar100", str(data_dir))[0] is not None,
               "imagenet": lambda: not datasets.check_imagenet(str(data_dir))}
    if dataset not in present or not present[dataset]():
        missing.append(f"the {dataset} dataset under {data_dir}")
    return missing


def sweep_dry_run_args(args: list[str]) -> list[str]:
    """The sweep line with --dry-run in place of --local / --slurm [--submit] / --export [DEST]."""
    out, i = [], 0
    while i < len(args):
        a = args[i]
        if a == "--":
            out += args[i:]
            break
        if a in ("--local", "--slurm", "--submit", "--dry-run"):
            pass
        elif a == "--export" or a.startswith("--export="):
            nxt = args[i + 1] if i + 1 < len(args) else None
            if a == "--export" and nxt is not None and not nxt.startswith("-") and not table_exists(nxt):
                i += 1  # --export DEST
        else:
            out.append(a)
        i += 1
    dd = out.index("--") if "--" in out else len(out)
    return out[:dd] + ["--dry-run"] + out[dd:]


# ---------------------------------------------------------------------------------------------- the checks
def check_train(args: list[str], prep: dict, tmp_path: Path) -> None:
    what = "python train.py " + shlex.join(args)
    config = option_values(args).get("config")
    if isinstance(config, str):
        assert (ROOT / config).is_file(), f"{what}: the config file {config} does not exist"
    if prep.get("smoke"):
        out_dir = tmp_path / "smoke"
        proc = run([sys.executable, "train.py", *args, "--smoke", "2", "--output", str(out_dir)])
        ok({"rc": proc.returncode, "out": proc.stdout + proc.stderr}, what + " (with --smoke 2)")
        assert (out_dir / "results.json").is_file(), f"{what}: the smoke run wrote no results.json"
        return
    # Not runnable here: --help must work with these flags, and the flags and the config must parse.
    ok(prep["help"], what + " --help")
    ok(prep["parse"], f"{what} (parsing its flags and config; not run here: needs {' and '.join(prep['missing'])})")


def check_sweep(args: list[str], prep: dict) -> None:
    what = "python scripts/sweep.py " + shlex.join(prep["dry"])
    out = ok(prep["run"], what)
    m = re.search(r"\[sweep\] \S+: (\d+) runs", out)
    assert m and int(m.group(1)) > 0, f"{what}: the table did not expand into runs\n{out[-2000:]}"


def check_script_help(script: str, args: list[str], prep: dict) -> None:
    what = f"python {script} " + shlex.join(args)
    help_text = ok(prep["help"], f"python {script} --help")
    for flag in flags_of(before_double_dash(args)):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text), \
            f"{what}: {script} has no flag {flag} (see its --help)"
    if Path(script).name in ("collect.py", "plot.py"):
        names = [a for a in before_double_dash(args) if not a.startswith("-")]
        assert any(table_exists(n) for n in names), \
            f"{what}: no table of configs/tables/ named in the line ({names})"


def check_bash_script(path: str) -> None:
    assert (ROOT / path).is_file(), f"README runs {path}, which does not exist"
    proc = subprocess.run(["bash", "-n", str(ROOT / path)], capture_output=True, text=True)
    assert proc.returncode == 0, f"bash -n {path}: {proc.stderr}"


# ---------------------------------------------------------------------------------------------- tests
def test_readme_has_the_commands_this_test_checks():
    lines = [" ".join(c) for c in README_COMMANDS]
    assert "bash scripts/main.sh" in lines and "bash scripts/test.sh" in lines
    assert any(c[0] in PYTHONS and c[1:2] == ["train.py"] for c in README_COMMANDS)
    assert any(c[0] in PYTHONS and c[1:2] == ["scripts/sweep.py"] for c in README_COMMANDS)


@pytest.mark.parametrize("index", range(len(README_COMMANDS)), ids=[short(c) for c in README_COMMANDS])
def test_readme_command_works(index: int, tmp_path: Path):
    cmd = README_COMMANDS[index]
    program, args = cmd[0], cmd[1:]
    assert program in PROGRAMS, f"README command {' '.join(cmd)!r} starts with {program!r}, not a known program"
    for token in args:
        if token.endswith(FILE_SUFFIXES) and not token.startswith(("-", "/", "$")) and "*" not in token:
            assert (ROOT / token).exists(), f"README command {' '.join(cmd)!r} names {token}, which does not exist"
    if program in PYTHONS and args:
        target, rest = args[0], args[1:]
        if target == "train.py":
            check_train(rest, prepared()[index], tmp_path)
        elif target == "scripts/sweep.py":
            check_sweep(rest, prepared()[index])
        elif target.startswith("scripts/") and target.endswith(".py"):
            check_script_help(target, rest, prepared()[index])
    elif program in ("bash", "sh") and args and args[0].endswith(".sh"):
        check_bash_script(args[0])


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    return {slug(m) for m in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_relative_links_point_at_files_that_exist(doc: Path):
    text = re.sub(r"^```.*?^```", "", doc.read_text(), flags=re.S | re.M)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        assert file.exists(), f"{doc.name}: the link {target} points at nothing"
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file), f"{doc.name}: the link {target} names no heading of {file.name}"


if __name__ == "__main__":  # the batch subprocess of prepared(): README commands on stdin, results to argv[1]
    import os
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    results = [prepare(c) for c in json.loads(sys.stdin.read())]
    Path(sys.argv[1]).write_text(json.dumps(results))
