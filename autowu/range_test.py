"""An LR range test before training, then the baseline schedule at the LR it suggests: what a user of
torch-lr-finder (or Lightning's ``lr_find``) does instead of AutoWU. The test is the real package's
(``torch_lr_finder.LRFinder.range_test``: an exponential sweep of ``num_iter`` steps from ``start_lr`` to ``end_lr``,
losses smoothed, stopped when the loss diverges) with its own suggestion rule (the steepest descent of the loss
curve, ``plot(suggest_lr=True)``). It runs on a copy of the optimizer (the package refuses an optimizer a scheduler
is attached to) and restores the model and optimizer afterwards; its steps are counted (``range_test`` in
``history`` and results.json). torch-lr-finder is imported only when this schedule is used.
"""
from __future__ import annotations

import contextlib
import io
import time
from typing import Callable, Iterator

import torch
from torch import nn
from torch.optim import Optimizer

from .schedules import WarmupCosine


class _Forward(nn.Module):
    """The model as LRFinder sees it: ``forward`` passes the inputs through, and the criterion runs
    ``loss_fn(model, inputs, targets)`` (the run's loss under its autocast). Its state_dict is the model's."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _Batches:
    """A re-iterable over ``batches()`` (what LRFinder's TrainDataLoaderIter needs)."""

    def __init__(self, batches: Callable[[], Iterator]):
        self.batches = batches

    def __iter__(self) -> Iterator:
        return iter(self.batches())


class RangeTestCosine(WarmupCosine):
    """The baseline (linear warmup over ``warmup_epochs``, cosine to 0) at the LR of a range test run by
    :meth:`prepare` before the first step (train.py calls it when it does not resume: a resumed run takes the LR from
    its checkpoint)."""

    def __init__(self, optimizer: Optimizer, steps_per_epoch: int, total_epochs: int, *, model: nn.Module,
                 loss_fn: Callable, batches: Callable[[], Iterator], warmup_epochs: float = 5,
                 start_lr: float = 1e-7, end_lr: float = 10.0, num_iter: int = 100, forwards_per_step: int = 1):
        super().__init__(optimizer, steps_per_epoch, total_epochs, warmup_epochs=warmup_epochs)
        self.model, self.loss_fn, self.batches = model, loss_fn, batches
        self.start_lr, self.end_lr, self.num_iter = float(start_lr), float(end_lr), int(num_iter)
        self.forwards_per_step = int(forwards_per_step)
        self.found: dict = {}

    def prepare(self) -> dict:
        """Run the range test; set the peak LR to its suggestion. Returns what was found."""
        from torch_lr_finder import LRFinder, TrainDataLoaderIter
        start = time.perf_counter()
        groups = [{k: v for k, v in g.items() if k != "initial_lr"} for g in self.optimizer.param_groups]
        trial = type(self.optimizer)(groups)  # same class and hyperparameters, no scheduler attached
        device = next(self.model.parameters()).device
        finder = LRFinder(_Forward(self.model), trial, lambda x, y: self.loss_fn(self.model, x, y), device=device)
        quiet = io.StringIO()
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):  # its progress bar and prints
            finder.range_test(TrainDataLoaderIter(_Batches(self.batches)), start_lr=self.start_lr,
                              end_lr=self.end_lr, num_iter=self.num_iter, step_mode="exp",
                              accumulation_steps=self.forwards_per_step)
            finder.reset()  # the model and the trial optimizer back to their states before the test
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            fig, ax = plt.subplots()
            _, lr = finder.plot(skip_start=10, skip_end=5, suggest_lr=True, ax=ax)  # steepest descent
            plt.close(fig)
        steps = len(finder.history["lr"])
        self.found = {"type": "range-test", "lr": float(lr), "steps": steps,
                      "forward_passes": steps * self.forwards_per_step,
                      "seconds": time.perf_counter() - start, "lrs": list(finder.history["lr"]),
                      "losses": [float(v) for v in finder.history["loss"]]}
        self.history.append(self.found)
        self.peak_lr = float(lr)
        self._apply_lr(self.lr_at(self.last_epoch))
        return self.found

    def _config(self) -> dict:  # the peak LR is the test's outcome, not a setting
        return {**super()._config(), "peak_lr": None, "start_lr": self.start_lr, "end_lr": self.end_lr,
                "num_iter": self.num_iter}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "found": dict(self.found)}

    def load_state_dict(self, state_dict: dict) -> None:
        found = state_dict.get("found")
        if not (isinstance(found, dict) and isinstance(found.get("lr"), float) and found["lr"] > 0):
            raise ValueError("cannot load RangeTestCosine state: 'found' (the range test's outcome) is missing or has "
                             "no positive 'lr'; pass the dict returned by state_dict()")
        self.found, self.peak_lr = dict(found), found["lr"]
        self.history = [self.found]
        super().load_state_dict(state_dict)
