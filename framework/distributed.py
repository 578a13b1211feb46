"""Process-group set-up for every launcher the paper's users have: torchrun, ``torch.distributed.launch``, SLURM ``srun``.

One function, :func:`init_distributed`, reads (in this order) torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; the
legacy launcher's ``--local-rank`` argument or ``LOCAL_RANK``; SLURM's ``SLURM_PROCID``/``SLURM_LOCALID``/
``SLURM_NTASKS`` (with ``MASTER_ADDR`` taken from the job's node list and ``MASTER_PORT`` from the job id when they are
not set). NCCL on GPU, gloo on CPU; a plain ``python train.py`` is one process without a process group. No CUDA call is
made unless a GPU is present and chosen.
"""
from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from autowu.comm import mean_over_ranks


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


def init_distributed(device: str = "auto", local_rank_arg: Optional[int] = None) -> DistInfo:
    """Start the process group (when launched with several processes) and choose this process's device.

    ``device``: ``auto`` (a GPU if one is visible, else CPU), ``cpu`` or ``cuda``.
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
                      world_size=world_size, timeout=datetime.timedelta(minutes=30))
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


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
