"""Shared helpers for the train.py tests: tiny runs on synthetic data and readers for the run-directory files."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# A tiny run: fmnist_cnn on 28x28 synthetic data, 128 training images, global batch 32 in micro-batches of 16.
TINY = ["--dataset", "synthetic", "--model", "fmnist_cnn", "--img-size", "28", "--in-chans", "1",
        "--num-classes", "10", "--synthetic-train-size", "128", "--synthetic-val-size", "64", "--workers", "0",
        "--batch-size", "32", "--micro-batch", "16", "--epochs", "3", "--log-interval", "2", "--device", "cpu"]


def run_inprocess(argv: list[str]) -> int:
    """``python train.py ARGV`` in this process (imports once: fast for the many tiny runs)."""
    import train
    from framework.config import parse_args
    return train.main(parse_args(train.get_args_parser(), argv))


def train_cmd(*argv: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *argv]


def subprocess_env(**extra: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_NTASKS", "SLURM_PROCID"):
        if key not in extra:
            env.pop(key, None)
    return env


def run_cmd(cmd: list[str], timeout: float = 180, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=subprocess_env(**env), capture_output=True, text=True, timeout=timeout)


def read_steps(run: Path) -> list[dict]:
    from framework.io import read_step_rows
    return read_step_rows(str(run))


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def decisions(run: Path) -> list[dict]:
    """The scheduler's decisions (AutoWU tests and switch) in events.jsonl."""
    return [e for e in read_jsonl(run / "events.jsonl") if e.get("type") in ("test", "switch")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tiny() -> list[str]:
    return list(TINY)
