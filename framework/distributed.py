"""Process-group set-up for every launcher the paper's users have: torchrun, ``torch.distributed.launch``, SLURM ``srun``.

One function, :func:`init_distributed`, reads (in this order) torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; the
legacy launcher's ``--local-rank`` argument or ``LOCAL_RANK``; SLURM's ``SLURM_PROCID``/``SLURM_LOCALID``/
``SLURM_NTASKS`` (with ``MASTER_ADDR`` taken from the job's node list and ``MASTER_PORT`` from the job id when they are
not set). NCCL on GPU, gloo on CPU; a plain ``python train.py`` is one process without a process group. No CUDA call is
made unless a GPU is present and chosen.
"""
from __future__ import annotations

import gc

import datetime
import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist

from autowu.comm import mean_over_ranks

from .config import ConfigError


@dataclass
class DistInfo:
    """Where this process sits: global rank, rank on its node, number of processes, device, launcher."""
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    launcher: str = "none"
    control_group: object = None  # a gloo group for host-side flags (None = the default group)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_info_from_env(local_rank_arg: Optional[int] = None) -> tuple[int, int, int, str]:
    """``(rank, local_rank, world_size, launcher)`` from the environment; ``(0, 0, 1, 'none')`` for a plain run."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:  # torchrun, or torch.distributed.launch (which also sets them)
        local = env.get("LOCAL_RANK", local_rank_arg if local_rank_arg is not None else 0)
        launcher = "torchrun" if "TORCHELASTIC_RUN_ID" in env else "torch.distributed.launch"
        return int(env["RANK"]), int(local), int(env["WORLD_SIZE"]), launcher
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:  # srun python train.py, one task per GPU
        _slurm_master_defaults()
        return int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", 0)), int(env["SLURM_NTASKS"]), "slurm"
    return 0, 0, 1, "none"


def _slurm_master_defaults() -> None:
    """MASTER_ADDR = first host of SLURM_JOB_NODELIST, MASTER_PORT = 20000 + job id mod 10000 (unless set)."""
    if "MASTER_ADDR" not in os.environ:
        nodelist = os.environ.get("SLURM_STEP_NODELIST") or os.environ.get("SLURM_JOB_NODELIST") or ""
        host = first_host(nodelist)
        if not host:
            raise RuntimeError("SLURM launch without MASTER_ADDR and without SLURM_JOB_NODELIST: export MASTER_ADDR "
                               "(e.g. $(scontrol show hostnames $SLURM_JOB_NODELIST | head -n1))")
        os.environ["MASTER_ADDR"] = host
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 10000)


def first_host(nodelist: str) -> str:
    """First host of a SLURM node list: ``gpu[003-005,9],cpu1`` -> ``gpu003``; ``a,b`` -> ``a``."""
    m = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist.strip())
    if not m:
        return ""
    prefix, ranges = m.group(1), m.group(3)
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def init_distributed(device: str = "auto", local_rank_arg: Optional[int] = None,
                     timeout_s: float = 600.0) -> DistInfo:
    """Start the process group (when launched with several processes) and choose this process's device.

    ``device``: ``auto`` (a GPU if one is visible, else CPU), ``cpu`` or ``cuda``. ``timeout_s``: how long a
    collective waits for the other ranks before it fails (``--dist-timeout``), so a dead or frozen rank ends the job.
    """
    rank, local_rank, world_size, launcher = world_info_from_env(local_rank_arg)
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device {device!r}: use auto, cpu or cuda")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("--device cuda but no GPU is visible to PyTorch; use --device cpu or auto")
    if use_cuda:
        dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    info = DistInfo(rank, local_rank, world_size, dev, launcher)
    if world_size > 1 and not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        kwargs = dict(backend="nccl" if use_cuda else "gloo", init_method="env://", rank=rank,
                      world_size=world_size, timeout=datetime.timedelta(seconds=timeout_s))
        if use_cuda:
            kwargs["device_id"] = dev
        dist.init_process_group(**kwargs)
        if use_cuda:  # host flags (preemption) travel over gloo so checking them never waits for the GPU
            info.control_group = dist.new_group(backend="gloo")
    return info


def all_reduce_mean(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean over ranks (a copy); the tensor itself when there is one process (:func:`autowu.comm.mean_over_ranks`)."""
    return mean_over_ranks(tensor) if info.distributed else tensor


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum over ranks (a copy); the tensor itself when there is one process."""
    if not info.distributed:
        return tensor
    out = tensor.clone()
    dist.all_reduce(out)
    return out


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank when ``flag`` is true on any rank: a one-number all-reduce on the host (gloo), so it
    costs a network round trip but never a device synchronisation."""
    if not info.distributed:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=info.control_group)
    return bool(t.item() > 0)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


# Settings that may differ between ranks: where each process reads its data (a node-local copy) and how it loads it,
# which launcher flag placed it, how long it waits. Everything else must be the same on every rank.
PER_RANK_KEYS = frozenset({"local_rank", "config", "dist_timeout", "data_dir", "workers", "pin_mem"})
DERIVED_KEYS = {"train_size": "the training set's size (images)",
                "steps_per_epoch": "steps per epoch"}  # what the ranks built from their settings and data


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)  # tuples as lists; anything else by its repr


def config_digest(config: dict) -> str:
    """A hash of ``config`` without :data:`PER_RANK_KEYS` (canonical JSON: sorted keys, tuples as lists)."""
    return hashlib.sha256(_canonical({k: v for k, v in config.items() if k not in PER_RANK_KEYS}).encode()).hexdigest()


def check_ranks_agree(config: dict, info: DistInfo) -> None:
    """Raise ConfigError on every rank when the ranks were started with different settings: ``config`` is this rank's
    resolved config plus what it built from it (``train_size``, ``steps_per_epoch``), :data:`PER_RANK_KEYS` aside.
    One small collective (every rank's hash, over the host group) when they agree; when they do not, a second one
    gathers the configs so that the message names the first differing key and its value on rank 0 and on the other
    rank. Every rank raises the same message (train.py: one ``error`` line, exit 2, before anything is written)."""
    if not info.distributed:
        return
    digests: list = [None] * info.world_size
    dist.all_gather_object(digests, config_digest(config), group=info.control_group)
    if len(set(digests)) == 1:
        return
    configs: list = [None] * info.world_size
    dist.all_gather_object(configs, {k: v for k, v in config.items() if k not in PER_RANK_KEYS},
                           group=info.control_group)
    other = next(r for r, d in enumerate(digests) if d != digests[0])
    first, theirs = configs[0], configs[other]
    key = next((k for k in [*first, *(k for k in theirs if k not in first)]
                if k not in first or k not in theirs or _canonical(first[k]) != _canonical(theirs[k])), "?")
    what = DERIVED_KEYS.get(key, f"--{key.replace('_', '-')}")
    value = lambda c: "missing" if key not in c else "unset" if c[key] is None else repr(c[key])  # noqa: E731
    hint = ("the ranks read different data (a --train-subset or a --data-dir that differs between ranks or nodes?)"
            if key in DERIVED_KEYS else "a config file or command line that differs between ranks or nodes?")
    ranks = [r for r, d in enumerate(digests) if d != digests[0]]
    raise ConfigError(f"the ranks were started with different settings: {what} is {value(first)} on rank 0 but "
                      f"{value(theirs)} on rank {other} (rank(s) {', '.join(map(str, ranks))} differ from rank 0; "
                      f"{hint}); start every rank with the same settings and data")


def agree_on_resume(error: Optional[BaseException], checkpoint: Optional[str], position: Optional[dict],
                    info: DistInfo) -> None:
    """Every rank decides alike whether and where the run continues, or every rank stops with one line.

    ``error``: this rank's refusal of its checkpoint (or None); ``checkpoint``/``position``: the file and position it
    continues from (None: a fresh start). One process: ``error`` is raised as it is. Several: one small collective;
    when a rank refused, every rank raises a ConfigError naming that rank and its message; when ranks continue from
    different positions (a node-local ``--output`` whose last.pt only one node sees), every rank raises one naming
    both, before anything is written."""
    if not info.distributed:
        if error is not None:
            raise error
        return
    mine = {"error": None if error is None else f"{error}", "file": checkpoint,
            "position": None if position is None else {k: position[k] for k in ("epoch", "step", "sample")}}
    everyone: list = [None] * info.world_size
    dist.all_gather_object(everyone, mine, group=info.control_group)
    failed = [r for r, v in enumerate(everyone) if v["error"] is not None]
    if failed:
        if error is not None:
            raise error if isinstance(error, ConfigError) else ConfigError(str(error))
        r = failed[0]
        raise ConfigError(f"rank {r} refused to start: {everyone[r]['error']}")
    first = everyone[0]
    other = next((r for r, v in enumerate(everyone) if v["position"] != first["position"]), None)
    if other is None:
        return

    def where(r: int) -> str:
        v = everyone[r]
        if v["position"] is None:
            return f"rank {r} finds no checkpoint and would start afresh"
        pos = v["position"]
        return f"rank {r} resumes from {v['file']} (epoch {pos['epoch']}, step {pos['step']})"
    raise ConfigError(f"the ranks do not continue from the same checkpoint: {where(0)}, but {where(other)}. Every "
                      "rank must see the same checkpoint: put --output on a file system all nodes share (or copy "
                      "last.pt to every node's --output), or start every rank afresh with --resume none")


class Heartbeat:
    """Which rank stopped answering: every rank bumps a counter in the process group's key-value store every
    ``interval`` seconds from a daemon thread; rank 0 watches every rank's counter, the other ranks watch rank 0's.
    A counter that has not moved for ``3 * interval`` seconds (this host's clock: no clock skew between hosts)
    marks its rank as silent: ``on_silent(rank, seconds)`` is called once per silence (the run logs it, before the
    collective timeout or NCCL's watchdog ends the job), and :meth:`silent` lists the silent ranks for the error
    message. A frozen (SIGSTOP) or dead process stops its thread too, so its counter stops."""

    def __init__(self, info: DistInfo, interval: float, on_silent: Optional[Callable[[int, float], None]] = None):
        from torch.distributed import distributed_c10d
        self.info, self.interval, self.on_silent = info, max(0.2, float(interval)), on_silent
        self.store = distributed_c10d._get_default_store()
        watched = range(info.world_size) if info.is_main else [0]  # rank 0 watches all; the others watch rank 0
        now = time.monotonic()
        self.seen: dict[int, tuple[int, float]] = {r: (-1, now) for r in watched if r != info.rank}
        self.reported: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="autowu-heartbeat", daemon=True)
        self._thread.start()

    @staticmethod
    def _key(rank: int) -> str:
        return f"autowu/heartbeat/{rank}"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:  # add() creates a missing key and never blocks, unlike get()
                self.store.add(self._key(self.info.rank), 1)
                values = [self.store.add(self._key(r), 0) for r in self.seen]
            except Exception:  # noqa: BLE001  the store's host is gone or frozen: its rank's counter stops below
                values = None
            now = time.monotonic()
            for (rank, (old, since)), value in zip(list(self.seen.items()), values or [None] * len(self.seen)):
                if value is not None and (value != old or value < 0):  # moved, or the rank has finished
                    self.seen[rank] = (value, now)
                    self.reported.discard(rank)
                elif now - since > 3 * self.interval and rank not in self.reported:
                    self.reported.add(rank)
                    if self.on_silent is not None:
                        self.on_silent(rank, now - since)
            self._stop.wait(self.interval)

    def silent(self) -> dict[int, float]:
        """``{rank: seconds since its counter last moved}`` for the ranks silent for over ``3 * interval`` s."""
        now = time.monotonic()
        return {r: now - since for r, (_, since) in sorted(self.seen.items()) if now - since > 3 * self.interval}

    def describe_failure(self, error: BaseException) -> str:
        """One line for a collective that failed: the silent ranks if any, else what the error says. A rank that
        died breaks the connection at once, before its counter looks stale: wait up to ``3.5 * interval`` for it."""
        deadline = time.monotonic() + 3.5 * self.interval
        silent = self.silent()
        while not silent and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(min(0.2, self.interval / 4))
            silent = self.silent()
        if silent:
            who = ", ".join(f"rank {r} (silent for {s:.0f} s)" for r, s in silent.items())
            return (f"{who} stopped answering; the collective on rank {self.info.rank} failed "
                    f"({type(error).__name__}). The job ends instead of waiting: check that rank's host and log")
        return (f"a collective on rank {self.info.rank} failed and every watched rank is still alive (a rank is "
                f"stuck or too slow, or lost its connection): {str(error).splitlines()[0] if str(error) else error!r}")

    def stop(self, finished: bool = True) -> None:
        """End the thread; ``finished``: mark this rank as done (not silent) in the store."""
        if self._stop.is_set():
            return
        self._stop.set()
        # Wait for the thread: a daemon thread still inside a store call when the interpreter exits is killed
        # mid-C++ and aborts the process ("terminate called without an active exception", exit -6).
        self._thread.join(timeout=self.interval + 5.0 if finished else 1.0)
        if not finished:  # after a failure the store may be frozen: do not wait on it
            return
        try:
            self.store.add(self._key(self.info.rank), -(1 << 40))
        except Exception:  # noqa: BLE001  the store may be gone at the end of a failed job
            pass


def cleanup() -> None:
    """Destroy the process group while the interpreter is fully alive, after the objects that hold gloo work (DDP's
    reducer, a model in a reference cycle) are collected: destroyed later, at interpreter shutdown, their C++
    threads take the GIL of a dying interpreter and the process aborts ("terminate called without an active
    exception")."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
