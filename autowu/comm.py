"""The collectives the schedules need, in one place (torch.distributed only; a no-op without a process group)."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
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


def broadcast_from_rank0(values: list[float], group: Optional[object] = None) -> list[float]:
    """``values`` as rank 0 of ``group`` has them (float64), on every rank; ``values`` itself without a group."""
    group = active_group(group)
    if group is None:
        return values
    vec = torch.tensor(values, dtype=torch.float64, device=comm_device(group))
    dist.broadcast(vec, src=_rank0(group), group=group)
    return vec.cpu().tolist()


def broadcast_object_from_rank0(obj: Any, group: Optional[object] = None) -> Any:
    """Rank 0's ``obj`` (a state dict of tensors) on every rank; ``obj`` itself without a group. Only between
    this job's own ranks, never from a file."""
    group = active_group(group)
    if group is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=_rank0(group), group=group)
    return box[0]


def is_rank0(group: Optional[object] = None) -> bool:
    group = active_group(group)
    return group is None or dist.get_rank(group) == 0


def _rank0(group: object) -> int:
    return dist.get_global_rank(group, 0) if group is not dist.group.WORLD else 0


def stack_losses(items: list) -> torch.Tensor:
    """Losses (0-d tensors and floats) as one vector on the device of the first tensor, in float64 so that a huge
    finite loss (1e300) stays finite (float32 on MPS, which has no float64)."""
    device = next((x.device for x in items if isinstance(x, torch.Tensor)), torch.device("cpu"))
    dtype = torch.float32 if device.type == "mps" else torch.float64
    return torch.stack([x.to(device=device, dtype=dtype) if isinstance(x, torch.Tensor)
                        else torch.tensor(x, dtype=dtype, device=device) for x in items])


class PendingLosses:
    """The losses of the steps since the last test, kept on their device (no host sync per step) and averaged
    across the ranks of ``group`` once per test interval (one all-reduce), or on demand before a mid-interval
    checkpoint (:meth:`reduce_now`). ``reduced``: how many leading losses are already averaged."""

    def __init__(self, group: Optional[object] = None):
        self.group = group
        self.items: list[Any] = []
        self.reduced = 0

    def __len__(self) -> int:
        return len(self.items)

    def append(self, loss: Any) -> None:
        self.items.append(loss)

    def clear(self) -> None:
        self.items, self.reduced = [], 0

    def take(self) -> np.ndarray:
        """Remove the losses and return them averaged across ranks, on the host once, non-finite ones as NaN."""
        done, rest = self._split()
        if done is None and rest is None:
            return np.empty(0)
        parts = [x.cpu() for x in (done, self._mean(rest)) if x is not None]
        out = torch.cat(parts).double().numpy()
        out[~np.isfinite(out)] = np.nan
        return out

    def reduce_now(self) -> None:
        """Average the losses held so far across ranks now (a collective: every rank calls it)."""
        if active_group(self.group) is None:
            return
        done, rest = self._split()
        parts = [x for x in (done, self._mean(rest)) if x is not None]
        if parts:
            self.items = list(torch.cat([x.to(parts[0].device) for x in parts]).unbind())
        self.reduced = len(self.items)

    def local(self) -> torch.Tensor:
        """This rank's losses on the host (a sync: for checkpoints only)."""
        return stack_losses(self.items).cpu() if self.items else torch.empty(0)

    def load(self, values: list[float], reduced: int) -> None:
        self.items, self.reduced = list(values), int(reduced)

    def _split(self) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        buf, n, k = (stack_losses(self.items) if self.items else None), len(self.items), self.reduced
        self.clear()
        if buf is None:
            return None, None
        return (buf[:k] if k else None), (buf[k:] if k < n else None)

    def _mean(self, buf: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        return None if buf is None else mean_over_ranks(buf, self.group)
