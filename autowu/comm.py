"""The collectives the schedules need, in one place (torch.distributed only; a no-op without a process group)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist


def active_group(group: Optional[object] = None) -> Optional[object]:
    """``group`` if given; else the default group when one with several processes is initialised; else None."""
    if group is not None:
        return group
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.group.WORLD
    return None


def comm_device(group: object, like: Optional[torch.Tensor] = None) -> torch.device:
    """Where a tensor must be for a collective on ``group``: the current GPU under NCCL; else ``like``'s device
    (the CPU for a CUDA tensor under gloo)."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return like.device if like is not None and like.device.type != "cuda" else torch.device("cpu")


def mean_over_ranks(tensor: torch.Tensor, group: Optional[object] = None) -> torch.Tensor:
    """The element-wise mean of ``tensor`` over the ranks of ``group`` (see :func:`active_group`), as a new tensor
    on the collective's device; ``tensor`` itself when there is no group."""
    group = active_group(group)
    if group is None:
        return tensor
    out = tensor.to(comm_device(group, tensor), copy=True)
    dist.all_reduce(out, group=group)
    return out / dist.get_world_size(group)
