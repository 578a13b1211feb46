"""AutoWU's optional rollback (beyond the paper, Appendix D's weakness): snapshots of the model and optimizer at
each test, and at the switch a return to the one nearest ``t*``, so the weights leave the region the overshooting
warmup LR took them to. Training time is not rewound: the step count and data order go on.
"""
from __future__ import annotations

import copy
import os
from collections import deque
from typing import Any, Optional

import torch
from torch import nn
from torch.optim import Optimizer

from .comm import active_group, broadcast_object_from_rank0, is_rank0


class Snapshots:
    """The last ``keep`` snapshots (``{"step", "model", "optimizer"}`` in host memory, or ``{"step", "file"}``
    once :meth:`keep_in` names a directory). Rank 0 of ``group`` holds them; the others keep the steps only and
    receive the chosen snapshot by broadcast (the ranks hold identical states under DDP)."""

    def __init__(self, model: Optional[nn.Module], optimizer: Optimizer, keep: int, group: Optional[object] = None):
        self.model, self.optimizer, self.group = model, optimizer, group
        self.entries: deque = deque(maxlen=keep)
        self.directory: Optional[str] = None

    def __iter__(self):
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def keep_in(self, directory: str) -> None:
        """Write each snapshot once, to ``directory/step_NNNNNNNNN.pt`` (rank 0 only), instead of holding it in
        host memory: a state_dict then names the files rather than holding ``keep`` copies of the model and
        optimizer. The files of the window (and one older, for the checkpoint before the last) are kept; the rest
        are deleted. A relative file name in a loaded state is looked up here."""
        self.directory = directory

    def _holds(self) -> bool:
        return is_rank0(self.group)

    def take(self, t: int) -> None:
        entry: dict = {"step": t}
        if self._holds():
            if self.directory is None:
                entry.update(model=_to_cpu(self.model.state_dict()), optimizer=_to_cpu(self.optimizer.state_dict()))
            else:
                entry["file"] = f"step_{t:09d}.pt"
                os.makedirs(self.directory, exist_ok=True)
                path = os.path.join(self.directory, entry["file"])
                tmp = f"{path}.tmp.{os.getpid()}"
                try:
                    torch.save({"step": t, "model": self.model.state_dict(),
                                "optimizer": self.optimizer.state_dict()}, tmp)
                    os.replace(tmp, path)
                except BaseException:
                    if os.path.exists(tmp):
                        os.remove(tmp)
                    raise
        self.entries.append(entry)
        self._prune()

    def restore_nearest(self, t_star: float) -> Optional[int]:
        """Load the snapshot nearest ``t_star`` into the model and optimizer on every rank; its step, or None when
        there is none (or its file is gone). The window is emptied either way."""
        if not self.entries:
            return None
        snap = min(self.entries, key=lambda s: abs(s["step"] - t_star))  # every rank has the same steps
        state = self._load(snap) if self._holds() else None
        if active_group(self.group) is not None:
            state = broadcast_object_from_rank0(state, self.group)
        self.entries.clear()
        self._prune(keep_older=0)
        if state is None:
            return None
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        return int(snap["step"])

    def _load(self, snap: dict) -> Optional[dict]:
        if "model" in snap:
            return {"model": snap["model"], "optimizer": copy.deepcopy(snap["optimizer"])}
        if "file" not in snap:
            return None
        path = os.path.join(self.directory or "", snap["file"])
        if not os.path.isfile(path):
            return None
        return torch.load(path, map_location="cpu", weights_only=True)

    def _prune(self, keep_older: int = 1) -> None:
        """Delete snapshot files older than the window, but ``keep_older`` of them (the previous checkpoint's)."""
        if self.directory is None or not self._holds() or not os.path.isdir(self.directory):
            return
        window = {e.get("file") for e in self.entries}
        first = min((e["step"] for e in self.entries), default=None)
        older = sorted(f for f in os.listdir(self.directory) if f.startswith("step_") and f.endswith(".pt")
                       and f not in window and (first is None or int(f[5:-3]) < first))
        for name in older[:len(older) - keep_older] if first is not None else older:
            os.remove(os.path.join(self.directory, name))


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return copy.deepcopy(obj)
