"""The hostile-user probe (issue 22, part 2): cases beyond tests/test_faults*.py, each classified by what it did.

Every case is one thing a user, a client library or a damaged file does to the project; it states the one right
outcome (a refusal naming the problem, or a behaviour) and the probe classifies what actually happened:

    clear error   one error line (exit 2) or one exception naming the problem; nothing written or changed
    correct       the right behaviour, checked
    unclear error an error, but not one line naming the problem (another exit code, a message that names nothing)
    traceback     a raw traceback or an exception from deep inside where a line is due
    silent        the run or call went on as if nothing were wrong
    loss          a file the user had was changed or removed by a refused or failed command (a path that did not
                  exist before and was written by a refusal counts as an unclear error, by a run as silent)
    security      code from a file ran
    hang          no answer within the case's time limit

``python tests/fault_probe.py`` runs every case and prints the totals per class and per area (``--json F`` writes
each case's outcome); ``tests/test_fault_probe.py`` asserts that every case is a clear error or correct. To measure
another checkout (the "before" column), copy ``tests/fault_probe.py`` and ``tests/probe_cases_*.py`` into its
``tests/`` and run it there.

A case is a function decorated with ``@case(area, what)``; it gets a :class:`Probe` (a fresh temporary directory and
the runners) and returns the :class:`Outcome` of one of the ``expect_*`` helpers.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)

OUTCOMES = ("clear error", "correct", "unclear error", "traceback", "silent", "loss", "security", "hang")
GOOD = ("clear error", "correct")
AREAS = ("library", "config", "data", "rundir", "resume", "ranks", "scripts")
CASE_MODULES = ("probe_cases_library", "probe_cases_train", "probe_cases_scripts")

# A tiny run: fmnist_cnn on 28x28 synthetic data (the same as conftest.TINY; repeated so a checkout without this
# version of conftest can run the probe).
TINY = ["--dataset", "synthetic", "--model", "fmnist_cnn", "--img-size", "28", "--in-chans", "1",
        "--num-classes", "10", "--synthetic-train-size", "128", "--synthetic-val-size", "64", "--workers", "0",
        "--batch-size", "32", "--micro-batch", "16", "--epochs", "2", "--log-interval", "2", "--device", "cpu"]


@dataclass
class Outcome:
    outcome: str
    detail: str = ""

    def __post_init__(self):
        assert self.outcome in OUTCOMES, self.outcome


@dataclass
class Proc:
    """What a command did: its exit code and output (``exc``: the exception that escaped an in-process call)."""
    code: Optional[int]
    out: str = ""
    err: str = ""
    exc: Optional[BaseException] = None

    @property
    def text(self) -> str:
        return self.out + self.err

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.lower().startswith("error")]


@dataclass
class Case:
    name: str
    area: str
    what: str
    fn: Callable[["Probe"], Outcome]
    timeout: float = 120.0


CASES: list[Case] = []


def case(area: str, what: str, *, timeout: float = 120.0):
    assert area in AREAS, area

    def register(fn):
        CASES.append(Case(f"{fn.__module__.removeprefix('probe_cases_')}.{fn.__name__}", area, what, fn, timeout))
        return fn
    return register


def tree(path: Path) -> dict:
    """Every file under ``path`` (or ``path`` itself) with its bytes: to tell whether a command changed anything."""
    path = Path(path)
    if not path.exists():
        return {}
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


class Probe:
    """One case's world: a fresh temporary directory ``tmp`` and the ways to run the project."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.marker = tmp / "PWNED"  # a payload that runs creates it

    # -- runners ----------------------------------------------------------------------------------------------------
    def train(self, *argv: str, tiny: bool = True) -> Proc:
        """``python train.py [TINY] ARGV`` in this process (TINY first, so ARGV overrides it)."""
        import train
        argv = [*(TINY if tiny else []), *argv]
        if hasattr(train, "cli"):
            return self.call(lambda: train.cli(argv))
        from framework.config import ConfigError, parse_args  # a checkout from before train.cli (the "before" column)

        def old_cli():
            try:
                parsed = parse_args(train.get_args_parser(), argv)
            except ConfigError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            return train.main(parsed)
        return self.call(old_cli)

    def script(self, name: str, *argv: str, timeout: float = 300, env: Optional[dict] = None,
               stdin: Optional[str] = None) -> Proc:
        """``python scripts/NAME ARGV`` in a subprocess, in the repository root."""
        cmd = [sys.executable, str(ROOT / "scripts" / name), *argv] if name.endswith(".py") else [name, *argv]
        environ = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **(env or {}))
        environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), environ.get("PYTHONPATH")) if p)
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            environ.pop(key, None) if key not in (env or {}) else None
        try:
            r = subprocess.run(cmd, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=timeout,
                               input=stdin)
        except subprocess.TimeoutExpired as e:
            return Proc(None, str(e.stdout or ""), str(e.stderr or ""))
        return Proc(r.returncode, r.stdout, r.stderr)

    def call(self, fn: Callable[[], object]) -> Proc:
        """Run ``fn()`` here, catching its output, its ``SystemExit`` code and any exception that escapes."""
        out, err = io.StringIO(), io.StringIO()
        code, exc = None, None
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                r = fn()
                code = r if isinstance(r, int) else 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if isinstance(e.code, str):
                    err.write(e.code + "\n")
            except Exception as e:  # noqa: BLE001 - classified below
                exc = e
                err.write("Traceback (most recent call last):\n" + traceback.format_exc())
        return Proc(code, out.getvalue(), err.getvalue(), exc)

    def path(self, *parts: str) -> Path:
        return self.tmp.joinpath(*parts)

    def write(self, rel: str, text: str | bytes) -> Path:
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        return p

    def run_dir(self, name: str = "run", *argv: str) -> Path:
        """A finished tiny run (for cases that damage or reuse one)."""
        out = self.path(name)
        proc = self.train("--output", str(out), *argv)
        if proc.code != 0:
            raise RuntimeError(f"the setup run failed ({proc.code}): {proc.text[-2000:]}")
        return out


# -- classification --------------------------------------------------------------------------------------------------
def _raw(proc: Proc) -> bool:
    return "Traceback (most recent call last)" in proc.text or proc.exc is not None


def expect_refusal(probe: Probe, proc: Proc, names: str | Iterable[str], *, unchanged: Iterable[Path] = (),
                   before: Optional[dict] = None, code: int = 2) -> Outcome:
    """A command should refuse: exit ``code``, one error line naming every one of ``names`` (case-insensitive),
    nothing under ``unchanged`` changed (``before``: their trees taken before the command), no payload run."""
    names = [names] if isinstance(names, str) else list(names)
    if probe.marker.exists():
        return Outcome("security", "the payload ran")
    made = []  # paths that did not exist before and were written: nothing of the user's lost, but not "nothing written"
    if before is not None:
        after = {str(p): tree(p) for p in unchanged}
        changed = [p for p in after if after[p] != before.get(p) and before.get(p)]
        if changed:
            return Outcome("loss", f"changed: {changed}")
        made = [p for p in after if after[p] and not before.get(p)]
    if _raw(proc):
        return Outcome("traceback", _last_line(proc))
    if proc.code is None:
        return Outcome("hang", "no answer in time")
    if proc.code == 0:
        return Outcome("silent", f"exit 0: {_last_line(proc)}")
    lines = proc.error_lines
    text = " ".join(lines).lower()
    if proc.code == code and len(lines) == 1 and all(n.lower() in text for n in names):
        if made:
            return Outcome("unclear error", f"refused, but wrote {made}: {lines[0]}")
        return Outcome("clear error", lines[0])
    return Outcome("unclear error", f"exit {proc.code}, {len(lines)} error line(s): {' | '.join(lines)[:300] or _last_line(proc)}")


def expect_raise(probe: Probe, fn: Callable[[], object], names: str | Iterable[str],
                 types: tuple = (ValueError, TypeError, KeyError, RuntimeError)) -> Outcome:
    """A library call should raise one of ``types`` whose message names every one of ``names``."""
    names = [names] if isinstance(names, str) else list(names)
    try:
        fn()
    except types as e:
        if probe.marker.exists():
            return Outcome("security", "the payload ran")
        msg = str(e)
        if all(n.lower() in msg.lower() for n in names):
            return Outcome("clear error", f"{type(e).__name__}: {msg[:200]}")
        return Outcome("unclear error", f"{type(e).__name__}: {msg[:200]}")
    except Exception as e:  # noqa: BLE001
        return Outcome("security" if probe.marker.exists() else "traceback", f"{type(e).__name__}: {str(e)[:200]}")
    if probe.marker.exists():
        return Outcome("security", "the payload ran")
    return Outcome("silent", "no error")


def expect_ok(probe: Probe, check: Callable[[], object], proc: Optional[Proc] = None) -> Outcome:
    """The right behaviour: ``check()`` raises AssertionError (with the reason) where it is not."""
    if probe.marker.exists():
        return Outcome("security", "the payload ran")
    if proc is not None:
        if _raw(proc):
            return Outcome("traceback", _last_line(proc))
        if proc.code is None:
            return Outcome("hang", "no answer in time")
    try:
        check()
    except AssertionError as e:
        return Outcome("silent", str(e)[:300] or "check failed")
    except Exception as e:  # noqa: BLE001
        return Outcome("traceback", f"{type(e).__name__}: {str(e)[:200]}")
    return Outcome("correct")


def _last_line(proc: Proc) -> str:
    lines = [line for line in proc.text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


# -- running -----------------------------------------------------------------------------------------------------------
class _Timeout(Exception):
    pass


def portable(text: str) -> str:
    """A detail line without this machine's directories: the case's temporary directory and the checkout."""
    text = re.sub(r"/tmp/probe-[^/\s'\"\],]*", "<tmp>", text)
    return text.replace(str(ROOT), "<repo>")


def run_case(c: Case) -> Outcome:
    """One case in a fresh temporary directory and working directory, with a time limit (SIGALRM)."""
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="probe-") as d:
        probe = Probe(Path(d))

        def alarm(*_):
            raise _Timeout()
        old = signal.signal(signal.SIGALRM, alarm)
        signal.alarm(int(c.timeout))
        try:
            os.chdir(d)
            return c.fn(probe)
        except _Timeout:
            return Outcome("hang", f"over {c.timeout:g} s")
        except Exception as e:  # noqa: BLE001 - the case itself failed: a raw error of the project or of the case
            return Outcome("traceback", f"{type(e).__name__}: {str(e)[:300]}")
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
            os.chdir(cwd)


def load_cases() -> list[Case]:
    for m in CASE_MODULES:
        importlib.import_module(m)
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), "two probe cases with one name"
    return CASES


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", default="", help="only cases whose name contains this")
    ap.add_argument("--json", help="write each case's outcome to this file")
    ap.add_argument("-v", action="store_true", help="print every case, not only the bad ones")
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    results = {}
    for c in load_cases():
        if a.k not in c.name:
            continue
        o = run_case(c)
        results[c.name] = {"area": c.area, "what": c.what, "outcome": o.outcome, "detail": portable(o.detail)}
        if a.v or o.outcome not in GOOD:
            print(f"{o.outcome:>13}  {c.name}: {c.what}\n{'':>15}{o.detail}", flush=True)
    totals = Counter(r["outcome"] for r in results.values())
    print(f"\n{len(results)} cases: " + ", ".join(f"{totals[o]} {o}" for o in OUTCOMES))
    areas = sorted({r["area"] for r in results.values()}, key=AREAS.index)
    print("\n| area | cases | " + " | ".join(OUTCOMES) + " |\n|---|---|" + "---|" * len(OUTCOMES))
    for area in areas:
        rs = [r for r in results.values() if r["area"] == area]
        n = Counter(r["outcome"] for r in rs)
        print(f"| {area} | {len(rs)} | " + " | ".join(str(n[o]) for o in OUTCOMES) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0 if all(r["outcome"] in GOOD for r in results.values()) else 1


if __name__ == "__main__":  # the cases register with the module ``fault_probe``, not with ``__main__``
    sys.exit(importlib.import_module("fault_probe").main())
