"""How callers reach AutoWU, in one place: PyTorch's and Lightning's ``step(loss)`` / ``step(metrics=loss)``, timm's
``step_update(num_updates, metric)`` with its epoch-end ``step(epoch, metric)`` and resume calls, and the refusals
for what cannot work (SequentialLR / ChainedScheduler, a loss that is not a loss). :class:`LoopCalls` turns each of
them into one call of ``self._record(loss)`` (the step's loss) or into nothing; it holds no schedule logic.
"""
from __future__ import annotations

import inspect
import numbers
from typing import Any, Optional

import numpy as np
import torch


class LoopCalls:
    """Mixin of :class:`autowu.AutoWU`: the loop-facing calls. Needs ``last_epoch``, ``steps_per_epoch``,
    ``_timm`` (timm's step_update seen), ``_warn_if_before_optimizer_step`` and ``_record(loss)``."""

    t_in_epochs = False  # timm's scheduler attribute (its train.py reads it): AutoWU steps per optimizer update

    def step(self, loss: Any = None, metric: Any = None, *, metrics: Any = None,  # type: ignore[override]
             epoch: Optional[int] = None) -> None:
        """Record the loss of the optimizer step just taken and set the LR of the next one.

        ``loss``: a float or a 0-d floating tensor on any device (not read on the host until the epoch ends).
        ``metrics=`` is Lightning's and ReduceLROnPlateau's name for it. ``step(epoch, metric)`` with an integer
        epoch is timm's epoch-end call: a no-op once :meth:`step_update` feeds the losses.
        """
        if epoch is not None:
            raise ValueError("step(epoch=...) is not supported: AutoWU counts optimizer steps itself")
        if loss is not None and metrics is not None:
            raise ValueError(f"AutoWU.step({loss!r:.40}, metrics={metrics!r:.40}): two losses; pass the step's loss "
                             "once, as scheduler.step(loss) or scheduler.step(metrics=loss)")
        if loss is None:
            loss = metrics
        if loss is None or isinstance(loss, numbers.Integral):
            _refuse_wrappers()  # SequentialLR / ChainedScheduler call step() or step(0)
        if self._is_timm_epoch_call(loss, metric) or self._is_timm_resume_sync(loss, metric):
            return
        if metric is not None:
            raise ValueError(f"AutoWU.step(loss, metric={metric!r}): pass the step's loss only, scheduler.step(loss)")
        if loss is None:
            raise ValueError("AutoWU.step() needs the loss of the optimizer step just taken: call "
                             "scheduler.step(loss). In PyTorch Lightning, override LightningModule.lr_scheduler_step"
                             "(self, scheduler, metric) to call scheduler.step(<the step's loss>) (README, 'Lightning, "
                             "timm and DDP'); Lightning's own call passes no loss")
        loss = _detach_loss(loss)
        self._warn_if_before_optimizer_step()
        self._record(loss)

    def step_update(self, num_updates: int, metric: Any = None) -> None:
        """timm's per-update call: ``scheduler.step_update(num_updates=num_updates, metric=loss)`` after each
        optimizer update, with the loss of that update (not timm's running ``losses_m.avg``). Without a metric it is
        timm's resume call ``step_update(start_epoch * updates_per_epoch)``: a no-op when the count is the one a
        loaded ``state_dict`` restored."""
        if metric is None and num_updates == self.last_epoch and not isinstance(num_updates, bool):
            return
        if metric is None:
            raise ValueError("AutoWU.step_update(num_updates, metric) needs metric=<the loss of this optimizer "
                             "update> (in timm's train.py: metric=loss, not losses_m.avg)")
        if isinstance(num_updates, bool) or not isinstance(num_updates, int):
            raise ValueError(f"step_update(num_updates={num_updates!r}) needs timm's integer update count")
        if num_updates != self.last_epoch + 1:
            raise ValueError(f"step_update(num_updates={num_updates}) but AutoWU has counted {self.last_epoch} "
                             "updates: call it once after every optimizer update (after a resume, load the "
                             "scheduler's state_dict first; timm's checkpoints do not hold it)")
        self._timm = True
        self.step(metric)

    def _is_timm_resume_sync(self, loss: Any, metric: Any) -> bool:
        """timm's ``lr_scheduler.step(start_epoch)`` after a resume: an integer epoch with no metric whose start is
        exactly the restored step count (the loaded state_dict already set the LR)."""
        return (metric is None and isinstance(loss, numbers.Integral) and not isinstance(loss, bool) and loss > 0
                and self.last_epoch > 0 and loss * self.steps_per_epoch == self.last_epoch)

    def _is_timm_epoch_call(self, loss: Any, metric: Any) -> bool:
        if not (isinstance(loss, numbers.Integral) and not isinstance(loss, bool)):
            return False
        if not (self._timm or metric is not None):
            return False
        if self.last_epoch % self.steps_per_epoch or loss != self.last_epoch // self.steps_per_epoch:
            raise ValueError(f"step({loss}) looks like timm's epoch-end call, but AutoWU has counted "
                             f"{self.last_epoch / self.steps_per_epoch:g} epochs of {self.steps_per_epoch} updates: "
                             "steps_per_epoch must be timm's updates_per_epoch, and step_update(num_updates, "
                             "metric=loss) must run after every update")
        return True


TIMM_HINT = ("timm users: call scheduler.step_update(num_updates, metric=loss) after every optimizer update; "
             "step(epoch, metric) at epoch ends is then ignored")


def _detach_loss(loss: Any) -> Any:
    """The step's loss, checked (without reading a tensor on the host): a float or a 0-d floating tensor."""
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise ValueError(f"AutoWU.step(loss) needs a scalar loss, got a tensor of shape {tuple(loss.shape)}; "
                             "pass the mean loss of the optimizer step")
        if not loss.is_floating_point():
            raise ValueError(f"AutoWU.step(loss) needs a floating-point loss, got a {loss.dtype} tensor; "
                             + (TIMM_HINT if not loss.is_complex() else "pass the real-valued loss"))
        if loss.layout != torch.strided:
            raise ValueError(f"AutoWU.step(loss) got a {loss.layout} (sparse) tensor; pass the dense scalar loss, e.g. "
                             "loss.to_dense()")
        if loss.device.type == "meta":
            raise ValueError("AutoWU.step(loss) got a tensor on the 'meta' device, which holds no value; pass the "
                             "loss computed on a real device")
        return loss.detach().reshape(())
    if isinstance(loss, (bool, numbers.Integral)):
        raise ValueError(f"AutoWU.step({loss!r}): an {type(loss).__name__} is not a loss; pass the float loss of "
                         f"the optimizer step ({TIMM_HINT})")
    if isinstance(loss, numbers.Real):
        return float(loss)
    if isinstance(loss, np.ndarray) and loss.size == 1 and np.issubdtype(loss.dtype, np.floating):
        return float(loss.reshape(()))  # a 0-d (or one-element) NumPy array, e.g. np.mean of the batch losses
    kind = "a complex number" if isinstance(loss, numbers.Complex) else type(loss).__name__
    raise ValueError(f"AutoWU.step(loss) needs a float or a 0-d floating tensor, got {kind} ({loss!r:.40}); "
                     "pass the loss of the optimizer step, e.g. scheduler.step(loss)")


def _refuse_wrappers() -> None:
    """``step()`` without a loss from inside SequentialLR / ChainedScheduler: say what to do instead."""
    frame = inspect.currentframe()
    try:
        for _ in range(6):
            frame = frame.f_back if frame is not None else None
            owner = frame.f_locals.get("self") if frame is not None else None
            if isinstance(owner, (torch.optim.lr_scheduler.SequentialLR, torch.optim.lr_scheduler.ChainedScheduler)):
                raise TypeError(f"AutoWU cannot run inside {type(owner).__name__}: it needs the loss at every step, "
                                "which that wrapper does not pass, and it decides its own phases. Use AutoWU alone "
                                "(its decay options: immediate_cooldown, cooldown_fraction, cooldown_type, "
                                "decay_phase_stat), or step each scheduler yourself: scheduler.step(loss), then the "
                                "other's step()")
    finally:
        del frame


