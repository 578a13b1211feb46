"""AutoWU: exponential warmup until a GP test finds the loss minimum, then a predefined decay (Algorithm 1)."""
from __future__ import annotations

import copy
import math
import os
from collections import deque
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.optim import Optimizer

from .gp import GPState, MinimumTest
from .schedules import StepScheduler, _check_config, _check_fraction, _check_int, _check_positive, decay_lr

DECAYS = ("cosine", "const-cosine")
WARMUPS = ("exp", "linear")


class AutoWU(StepScheduler):
    """Automated warmup (Kim et al., 2021): a drop-in for the official ``AutoWU`` with exact resume.

    Warmup (Eq. 1): ``eta_0 = eta_min``, ``eta_t = gamma * eta_{t-1}``, ``gamma = (eta_max/eta_min)^(1/W)``,
    ``W = floor(rho_w * T)`` with ``T = steps_per_epoch * total_epochs`` optimizer steps. At the end of every epoch of
    the warmup the GP minimum test of :mod:`autowu.gp` runs on the losses recorded so far; after ``patience``
    consecutive passes the decay starts at ``eta_{t*} = gamma^{t*} eta_0`` (Eq. 5). If the warmup reaches ``W`` steps
    without a switch, the decay starts from the LR reached. Decay: ``cosine`` (from ``eta_{t*}`` to 0 at step ``T``)
    or ``const-cosine`` (constant, then cosine to 0 over the last ``cooldown_fraction`` of the ``T`` steps).

    Usage, as in the official README::

        scheduler = AutoWU(optimizer, len(train_loader), total_epochs, immediate_cooldown=True,
                           cooldown_type='cosine', device=device)
        ...  # after each optimizer step:
        scheduler.step(loss)          # or scheduler.step(metrics=loss)

    Args:
        optimizer: the optimizer; group ``g`` gets ``eta * lr_g / lr_0`` (ratios to group 0's initial LR are kept).
        steps_per_epoch: optimizer steps per epoch (the test runs at each epoch end).
        total_epochs: the epoch budget; ``T = steps_per_epoch * total_epochs``.
        immediate_cooldown: official name: ``True`` = cosine decay from the switch, ``False`` = constant-then-cosine.
        cooldown_type: official name; only ``'cosine'`` (the paper's shape) is offered.
        cooldown_fraction: fraction of the ``T`` steps spent in the final cosine of ``const-cosine`` (paper: 0.2).
        device: accepted for compatibility with the official API. The GP always runs on the CPU in float64
            (about 5 ms per test); the losses stay on their own device until the epoch ends.
        decay: clearer alternative to ``immediate_cooldown``: ``'cosine'`` or ``'const-cosine'``.
        eta_min, eta_max, rho_w: Eq. 1 (paper: 1e-5, 1.0, 0.5).
        warmup: ``'exp'`` (Eq. 1) or ``'linear'`` (Eq. 6, the Appendix C.2 ablation).
        n_test, confidence, patience: the test's ``n_test``, ``c`` and ``p`` (paper: 5, 0.95, 3).
        fit_subset, test_subset, grid_size: at most 100 losses for the fit, 500 per posterior, 500 grid points.
        lengthscale, fit_steps, fit_lr: 0.2; Adam for 100 steps with LR 0.01 (Section 2.1.2).
        seed: seeds the subsampling; the generator's state is part of ``state_dict``.
        rollback: beyond the paper (Appendix D's weakness): when switching, restore ``model`` and ``optimizer`` to
            the epoch-end snapshot nearest ``t*``. The last ``patience + 2`` epoch-end snapshots are kept in host
            memory (and in ``state_dict``, so resume stays exact). Training time is not rewound: the step count and
            data order go on; only the weights and optimizer state return to before the LR grew too far.
        model: the model to snapshot (required when ``rollback=True``).
        process_group: for DDP; by default the global group when ``torch.distributed`` is initialised. Each rank's
            epoch losses are averaged across ranks once per epoch, and rank 0's decision is broadcast, so every rank
            switches at the same step to the same LR.
    """

    def __init__(self, optimizer: Optimizer, steps_per_epoch: int, total_epochs: int,
                 immediate_cooldown: bool = True, cooldown_type: str = "cosine", cooldown_fraction: float = 0.2,
                 device: Any = None, *, decay: Optional[str] = None, eta_min: float = 1e-5, eta_max: float = 1.0,
                 rho_w: float = 0.5, warmup: str = "exp", n_test: int = 5, confidence: float = 0.95,
                 patience: int = 3, fit_subset: int = 100, test_subset: int = 500, grid_size: int = 500,
                 lengthscale: float = 0.2, fit_steps: int = 100, fit_lr: float = 0.01, seed: int = 0,
                 rollback: bool = False, model: Optional[nn.Module] = None, process_group: Any = None):
        super().__init__(optimizer, steps_per_epoch, total_epochs)
        if cooldown_type != "cosine":
            raise ValueError(f"cooldown_type={cooldown_type!r}: only 'cosine' is supported (the official "
                             "'half_cosine' halves the LR at the switch, which the paper does not do)")
        implied = "cosine" if immediate_cooldown else "const-cosine"
        if decay is None:
            decay = implied
        elif decay not in DECAYS:
            raise ValueError(f"decay={decay!r} must be one of {DECAYS}")
        elif decay != implied and not immediate_cooldown:
            raise ValueError(f"decay={decay!r} contradicts immediate_cooldown=False; give only one of them")
        _check_fraction("cooldown_fraction", cooldown_fraction, allow_zero=True)
        _check_positive("eta_min", eta_min)
        _check_positive("eta_max", eta_max)
        if eta_max <= eta_min:
            raise ValueError(f"eta_max={eta_max} must be greater than eta_min={eta_min}")
        _check_fraction("rho_w", rho_w)
        if warmup not in WARMUPS:
            raise ValueError(f"warmup={warmup!r} must be one of {WARMUPS}")
        for name, value in (("n_test", n_test), ("patience", patience), ("fit_subset", fit_subset),
                            ("test_subset", test_subset), ("grid_size", grid_size), ("fit_steps", fit_steps)):
            _check_int(name, value, 1 if name != "grid_size" else 2)
        _check_fraction("confidence", confidence)
        _check_positive("lengthscale", lengthscale)
        _check_positive("fit_lr", fit_lr)
        if rollback and model is None:
            raise ValueError("rollback=True needs model=<the nn.Module being trained> to snapshot and restore")
        self.warmup_steps = int(math.floor(rho_w * self.total_steps))
        if self.warmup_steps < 1:
            raise ValueError(f"rho_w * total steps = {rho_w} * {self.total_steps} < 1: no warmup step; increase "
                             "rho_w or the number of epochs")
        self.decay, self.warmup, self.cooldown_fraction = decay, warmup, float(cooldown_fraction)
        self.eta_min, self.eta_max, self.rho_w = float(eta_min), float(eta_max), float(rho_w)
        self.gamma = (self.eta_max / self.eta_min) ** (1.0 / self.warmup_steps)
        self.patience, self.seed = int(patience), int(seed)
        self.rollback, self.model, self.process_group = bool(rollback), model, process_group
        self.min_test = MinimumTest(n_test=n_test, confidence=confidence, fit_subset=fit_subset,
                                    test_subset=test_subset, grid_size=grid_size, lengthscale=lengthscale,
                                    fit_steps=fit_steps, fit_lr=fit_lr)
        self._test_kwargs = dict(n_test=n_test, confidence=confidence, fit_subset=fit_subset,
                                 test_subset=test_subset, grid_size=grid_size, lengthscale=lengthscale,
                                 fit_steps=fit_steps, fit_lr=fit_lr)
        # State (all of it goes into state_dict).
        self.phase = "warmup"
        self.losses = np.empty(0, dtype=np.float64)  # L_0 .. L_{t-1} of completed warmup epochs (NaN = non-finite)
        self._epoch_losses: list[Any] = []  # this epoch's losses, kept on their device until the epoch ends
        self._reduced = 0  # how many leading _epoch_losses are already averaged across ranks (reduce_pending_losses)
        self.consecutive = 0
        self.history: list[dict] = []
        self.switch: Optional[dict] = None
        self.decay_start_step = 0
        self.decay_start_lr = 0.0
        self.gp_state = GPState()
        self.rng = np.random.default_rng(self.seed)
        self.snapshots: deque = deque(maxlen=self.patience + 2)
        self._apply_lr(self.lr_at(0))

    # -- the schedule --------------------------------------------------------------------------------------------
    @property
    def cooldown_steps(self) -> Optional[int]:
        return None if self.decay == "cosine" else int(round(self.cooldown_fraction * self.total_steps))

    def warmup_lr(self, t: float) -> float:
        """Eq. 1 (exp) or Eq. 6 (linear) at (possibly fractional) step ``t``."""
        t = min(max(float(t), 0.0), float(self.warmup_steps))
        if self.warmup == "linear":
            return self.eta_min + (self.eta_max - self.eta_min) * t / self.warmup_steps
        return self.eta_min * self.gamma**t

    def lr_at(self, step: int) -> float:
        if self.phase == "warmup":
            return self.warmup_lr(step)
        return decay_lr(step, self.decay_start_step, self.total_steps, self.decay_start_lr, self.cooldown_steps)

    # -- the loop's call -----------------------------------------------------------------------------------------
    def step(self, loss: Any = None, *, metrics: Any = None, epoch: Optional[int] = None) -> None:  # type: ignore[override]
        """Record the loss of the optimizer step just taken and set the LR of the next one.

        ``loss``: a float or a 0-d tensor on any device (it is not read on the host until the epoch ends).
        """
        if epoch is not None:
            raise ValueError("step(epoch=...) is not supported: AutoWU counts optimizer steps itself")
        if loss is None:
            loss = metrics
        if self.phase == "warmup":
            self._epoch_losses.append(_detach_loss(loss))
        self.last_epoch += 1
        self._step_count += 1
        t = self.last_epoch  # number of steps taken = index of the next step
        if self.phase == "warmup":
            epoch_end = t % self.steps_per_epoch == 0
            if epoch_end or t >= self.warmup_steps:
                self._end_of_warmup_epoch(t, epoch_end)
        self._apply_lr(self.lr_at(self.last_epoch))

    def _end_of_warmup_epoch(self, t: int, run_test: bool) -> None:
        epoch_losses = self._gather_epoch_losses()
        self.losses = np.concatenate([self.losses, epoch_losses])
        epoch = (t - 1) // self.steps_per_epoch
        if self.rollback and run_test:
            self._snapshot(t)
        if run_test and epoch_losses.size and not np.isfinite(epoch_losses).any():
            t_star = self._t_star_from_history(t)
            self._start_decay(t, epoch, t_star, "non-finite")
            return
        if run_test:
            self._run_test(t, epoch)
        if self.phase == "warmup" and t >= self.warmup_steps:
            self._start_decay(t, epoch, float(t), "max-warmup")

    def _run_test(self, t: int, epoch: int) -> None:
        finite = int(np.isfinite(self.losses).sum())
        entry: dict = {"type": "test", "epoch": epoch, "step": t}
        if finite < 3:
            entry.update(p_min=[], votes=0, passed=False, t_star=None, note="fewer than 3 finite losses")
            passed, t_star = False, None
        else:
            decision = self._decide(lambda: self.min_test(self.losses, self.rng, self.gp_state))
            passed, t_star = decision["passed"], decision["t_star"]
            entry.update({k: v for k, v in decision.items() if k != "gp_state"})
        self.consecutive = self.consecutive + 1 if passed else 0
        entry["consecutive"] = self.consecutive
        self.history.append(entry)
        if self.consecutive >= self.patience:
            self._start_decay(t, epoch, t_star, "gp-test")

    def _decide(self, run) -> dict:
        """Run the test (every rank runs it: same losses, same generator) and adopt rank 0's outcome."""
        n = self.min_test.n_test
        try:
            with np.errstate(all="ignore"):
                result, gp_state = run()
            p_min, argmin_x = result.p_min, result.argmin_x
            ok = all(math.isfinite(v) for v in p_min + argmin_x + [gp_state.mean, gp_state.noise])
        except (np.linalg.LinAlgError, ValueError, FloatingPointError, OverflowError):
            ok, gp_state, p_min, argmin_x = False, self.gp_state, [math.nan] * n, [math.nan] * n
        vec = [float(ok), *p_min, *argmin_x, gp_state.mean, gp_state.raw_outputscale, gp_state.raw_noise,
               *gp_state.adam_m, *gp_state.adam_v, float(gp_state.adam_t)]
        vec = self._broadcast(vec)
        ok = bool(vec[0])
        p_min, argmin_x = vec[1:1 + n], vec[1 + n:1 + 2 * n]
        rest = vec[1 + 2 * n:]
        if not ok:  # numerical failure (e.g. astronomically large losses): the test does not pass
            return {"p_min": [], "votes": 0, "passed": False, "t_star": None, "note": "GP computation failed"}
        self.gp_state = GPState(rest[0], rest[1], rest[2], list(rest[3:6]), list(rest[6:9]), int(rest[9]))
        votes = int(sum(p > self.min_test.confidence for p in p_min))
        t = self.losses.shape[0]
        t_star = t * float(np.mean(argmin_x))  # Eq. 5
        return {"p_min": [float(p) for p in p_min], "votes": votes, "passed": votes > n / 2, "t_star": t_star,
                "lr_t_star": float(self.warmup_lr(t_star))}

    def _t_star_from_history(self, t: int) -> float:
        """t* for a switch forced by an all-non-finite epoch: Eq. 5 on the finite history (0 if there is none)."""
        finite = np.flatnonzero(np.isfinite(self.losses))
        if finite.size < 3:
            return float(finite[int(np.argmin(self.losses[finite]))]) if finite.size else 0.0
        decision = self._decide(lambda: self.min_test(self.losses, self.rng, self.gp_state))
        last_finite = float(finite[-1])  # the GP may place its argmin in the non-finite tail: stay in the history
        return last_finite if decision["t_star"] is None else min(decision["t_star"], last_finite)

    def _start_decay(self, t: int, epoch: int, t_star: float, reason: str) -> None:
        self.phase = "decay"
        self.decay_start_step = t
        self.decay_start_lr = float(self.warmup_lr(t_star))
        t_star = float(t_star)
        self.switch = {"type": "switch", "epoch": epoch, "step": t, "t_star": t_star, "lr": self.decay_start_lr,
                       "reason": reason}
        if reason == "non-finite":
            self.switch["note"] = "every loss of the epoch was non-finite: the LR is past the minimum"
        if self.rollback and reason != "max-warmup":
            self.switch["rollback_step"] = self._restore_nearest(t_star)
        self.history.append(self.switch)
        self._epoch_losses, self._reduced = [], 0

    # -- per-epoch data movement and collectives -----------------------------------------------------------------
    def _group(self):
        if self.process_group is not None:
            return self.process_group
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return dist.group.WORLD
        return None

    def _comm_device(self, like: Optional[torch.Tensor]) -> torch.device:
        if dist.get_backend(self._group()) == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return like.device if like is not None and like.device.type != "cuda" else torch.device("cpu")

    def _gather_epoch_losses(self) -> np.ndarray:
        """Stack the epoch's losses on their device, average across ranks, move to the host once."""
        done, rest = self._take_pending()
        if done is None and rest is None:
            return np.empty(0)
        parts = [x.cpu() for x in (done, self._all_reduce_mean(rest)) if x is not None]
        out = torch.cat(parts).double().numpy()
        out[~np.isfinite(out)] = np.nan
        return out

    def reduce_pending_losses(self) -> None:
        """Average the unfinished epoch's losses across ranks now (a collective: call it on every rank, before
        rank 0 saves a checkpoint in the middle of an epoch; ``train.py`` does). Without it, a mid-epoch
        ``state_dict`` holds the calling rank's own losses of that epoch, and after a resume the epoch's test would
        see rank 0's losses for those steps in place of the average over ranks. A no-op outside DDP."""
        if self._group() is None or self.phase != "warmup":
            return
        done, rest = self._take_pending()
        parts = [x for x in (done, self._all_reduce_mean(rest)) if x is not None]
        if parts:
            self._epoch_losses = list(torch.cat([x.to(parts[0].device) for x in parts]).unbind())
        self._reduced = len(self._epoch_losses)

    def _take_pending(self) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Remove the epoch's losses; return them as float32 vectors on their device: the prefix already averaged
        across ranks, and the rest (None where empty)."""
        buf, n, k = self._stack_pending(), len(self._epoch_losses), self._reduced
        self._epoch_losses, self._reduced = [], 0
        if buf is None:
            return None, None
        return (buf[:k] if k else None), (buf[k:] if k < n else None)

    def _stack_pending(self) -> Optional[torch.Tensor]:
        """The epoch's losses as one float32 vector on the device of the first tensor among them (None if none)."""
        items = self._epoch_losses
        if not items:
            return None
        device = next((x.device for x in items if isinstance(x, torch.Tensor)), torch.device("cpu"))
        return torch.stack([x.to(device=device, dtype=torch.float32) if isinstance(x, torch.Tensor)
                            else torch.tensor(x, dtype=torch.float32, device=device) for x in items])

    def _all_reduce_mean(self, buf: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        group = self._group()
        if buf is None or group is None:
            return buf
        buf = buf.to(self._comm_device(buf))
        dist.all_reduce(buf, group=group)
        return buf / dist.get_world_size(group)

    def _broadcast(self, values: list[float]) -> list[float]:
        group = self._group()
        if group is None:
            return values
        vec = torch.tensor(values, dtype=torch.float64, device=self._comm_device(None))
        dist.broadcast(vec, src=dist.get_global_rank(group, 0) if group is not dist.group.WORLD else 0, group=group)
        return vec.cpu().tolist()

    # -- rollback ------------------------------------------------------------------------------------------------
    def keep_snapshots_in(self, directory: str) -> None:
        """Write each rollback snapshot once, to ``directory/step_NNNNNNNNN.pt`` (rank 0 only), instead of holding
        it in host memory: ``state_dict()`` then names the files rather than holding ``patience + 2`` copies of the
        model and optimizer, so checkpoints stay the size they are without rollback. The files of the window (and
        one older, for the checkpoint before the last) are kept; the rest are deleted. Call it before
        ``load_state_dict``; a relative file name in the state is looked up here."""
        self._snapshot_dir = directory

    def _holds_snapshots(self) -> bool:
        """Rank 0 of the group keeps the snapshots (the ranks hold identical states under DDP); the others keep the
        steps only and receive the chosen snapshot by broadcast."""
        group = self._group()
        return group is None or dist.get_rank(group) == 0

    def _snapshot(self, t: int) -> None:
        entry: dict = {"step": t}
        if self._holds_snapshots():
            directory = getattr(self, "_snapshot_dir", None)
            if directory is None:
                entry.update(model=_to_cpu(self.model.state_dict()), optimizer=_to_cpu(self.optimizer.state_dict()))
            else:
                entry["file"] = f"step_{t:09d}.pt"
                os.makedirs(directory, exist_ok=True)
                path = os.path.join(directory, entry["file"])
                tmp = f"{path}.tmp.{os.getpid()}"
                try:
                    torch.save({"step": t, "model": self.model.state_dict(),
                                "optimizer": self.optimizer.state_dict()}, tmp)
                    os.replace(tmp, path)
                except BaseException:
                    if os.path.exists(tmp):
                        os.remove(tmp)
                    raise
        self.snapshots.append(entry)
        self._prune_snapshot_files()

    def _prune_snapshot_files(self, keep_older: int = 1) -> None:
        """Delete snapshot files older than the window, but ``keep_older`` of them (the previous checkpoint's)."""
        directory = getattr(self, "_snapshot_dir", None)
        if directory is None or not self._holds_snapshots() or not os.path.isdir(directory):
            return
        window = {e.get("file") for e in self.snapshots}
        first = min((e["step"] for e in self.snapshots), default=None)
        older = sorted(f for f in os.listdir(directory) if f.startswith("step_") and f.endswith(".pt")
                       and f not in window and (first is None or int(f[5:-3]) < first))
        for name in older[:len(older) - keep_older] if first is not None else older:
            os.remove(os.path.join(directory, name))

    def _load_snapshot(self, snap: dict) -> Optional[dict]:
        """The model and optimizer states of ``snap`` on this rank (rank 0), or None if its file is gone."""
        if "model" in snap:
            return {"model": snap["model"], "optimizer": copy.deepcopy(snap["optimizer"])}
        if "file" not in snap:
            return None
        path = os.path.join(getattr(self, "_snapshot_dir", None) or "", snap["file"])
        if not os.path.isfile(path):
            return None
        return torch.load(path, map_location="cpu", weights_only=True)

    def _restore_nearest(self, t_star: float) -> Optional[int]:
        if not self.snapshots:
            return None
        snap = min(self.snapshots, key=lambda s: abs(s["step"] - t_star))  # every rank has the same steps
        state = self._load_snapshot(snap) if self._holds_snapshots() else None
        group = self._group()
        if group is not None:  # rank 0's snapshot to every rank
            box = [state]
            src = dist.get_global_rank(group, 0) if group is not dist.group.WORLD else 0
            dist.broadcast_object_list(box, src=src, group=group)
            state = box[0]
        self.snapshots.clear()
        self._prune_snapshot_files(keep_older=0)
        if state is None:  # the snapshot's file was deleted: no rollback (the switch entry says so)
            return None
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        return int(snap["step"])

    # -- checkpointing -------------------------------------------------------------------------------------------
    def _config(self) -> dict:
        return {**super()._config(), "decay": self.decay, "warmup": self.warmup, "eta_min": self.eta_min,
                "eta_max": self.eta_max, "rho_w": self.rho_w, "cooldown_fraction": self.cooldown_fraction,
                "patience": self.patience, "rollback": self.rollback, **self._test_kwargs}

    def state_dict(self) -> dict:
        """Everything needed to continue the identical trajectory: phase, step, recorded losses, the epoch's
        pending losses, test history, GP parameters with their Adam state, the generator, rollback snapshots."""
        pending = self._gather_local_pending()
        return {"config": self._config(), "step": self.last_epoch, "phase": self.phase,
                "losses": torch.from_numpy(self.losses.copy()), "pending": pending, "pending_reduced": self._reduced,
                "consecutive": self.consecutive, "history": copy.deepcopy(self.history),
                "decay_start_step": self.decay_start_step, "decay_start_lr": self.decay_start_lr,
                "gp_state": self.gp_state.to_dict(), "rng": copy.deepcopy(self.rng.bit_generator.state),
                "snapshots": list(self.snapshots)}

    def load_state_dict(self, state_dict: dict) -> None:
        _check_config(self._config(), state_dict.get("config", {}))
        self.last_epoch = int(state_dict["step"])
        self._step_count = self.last_epoch + 1
        self.phase = state_dict["phase"]
        self.losses = state_dict["losses"].double().numpy().copy()
        self._epoch_losses = [float(x) for x in state_dict["pending"].tolist()]
        self._reduced = int(state_dict.get("pending_reduced", 0))
        self.consecutive = int(state_dict["consecutive"])
        self.history = copy.deepcopy(state_dict["history"])
        self.switch = next((h for h in reversed(self.history) if h["type"] == "switch"), None)
        self.decay_start_step = int(state_dict["decay_start_step"])
        self.decay_start_lr = float(state_dict["decay_start_lr"])
        self.gp_state = GPState.from_dict(state_dict["gp_state"])
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = copy.deepcopy(state_dict["rng"])
        self.snapshots = deque(state_dict["snapshots"], maxlen=self.patience + 2)
        self._apply_lr(self.lr_at(self.last_epoch))

    def _gather_local_pending(self) -> torch.Tensor:
        """This rank's losses of the unfinished epoch, on the host (a sync, but only when checkpointing)."""
        buf = self._stack_pending()
        return buf.cpu() if buf is not None else torch.empty(0)


def _detach_loss(loss: Any) -> Any:
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise ValueError(f"AutoWU.step(loss) needs a scalar loss, got a tensor of shape {tuple(loss.shape)}; "
                             "pass the mean loss of the optimizer step")
        return loss.detach().reshape(())
    if loss is None:
        raise ValueError("AutoWU.step() needs the loss of the optimizer step just taken: call scheduler.step(loss)")
    try:
        return float(loss)
    except (TypeError, ValueError):
        raise ValueError(f"AutoWU.step(loss) needs a float or a 0-d tensor, got {type(loss).__name__}") from None


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return copy.deepcopy(obj)

