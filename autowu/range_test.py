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

from .schedules import WarmupCosine, _check_int, _check_loadable, _check_positive, _is_step

MIN_ITER = 20  # the suggestion skips the first 10 and the last 5 points of the curve (plot(skip_start, skip_end))


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
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be the nn.Module being trained, got {type(model).__name__}")
        for name, fn in (("loss_fn", loss_fn), ("batches", batches)):
            if not callable(fn):
                raise ValueError(f"{name} must be callable, got {type(fn).__name__}: loss_fn(model, inputs, targets) "
                                 "-> loss, batches() -> an iterator of (inputs, targets)")
        _check_positive("start_lr", start_lr)
        _check_positive("end_lr", end_lr)
        if not start_lr < end_lr:
            raise ValueError(f"start_lr={start_lr} must be below end_lr={end_lr}: the range test sweeps the LR up")
        _check_int("num_iter", num_iter, MIN_ITER)
        _check_int("forwards_per_step", forwards_per_step, 1)
        self.model, self.loss_fn, self.batches = model, loss_fn, batches
        self.start_lr, self.end_lr, self.num_iter = float(start_lr), float(end_lr), int(num_iter)
        self.forwards_per_step = int(forwards_per_step)
        self.found: dict = {}

    def prepare(self) -> dict:
        """Run the range test; set the peak LR to its suggestion. Returns what was found."""
        if next(iter(self.batches()), None) is None:
            raise ValueError("the LR range test got no mini-batch: batches() yielded nothing; pass batches() that "
                             "returns an iterator of (inputs, targets)")
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
            shown = finder.plot(skip_start=10, skip_end=5, suggest_lr=True, ax=ax)  # steepest descent
            plt.close(fig)
        steps = len(finder.history["lr"])
        if not isinstance(shown, tuple):  # too few points for a suggestion (the loss diverged early)
            raise RuntimeError(f"the LR range test made no suggestion: it stopped after {steps} of {self.num_iter} "
                               "steps (the loss diverged); lower end_lr or raise num_iter")
        lr = shown[1]
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

    def step(self, loss=None, metric=None, *, metrics=None, epoch=None) -> None:  # type: ignore[override]
        if not self.found:
            raise RuntimeError("RangeTestCosine.step() before prepare(): the LR range test has not run, so the peak LR "
                               "would be the optimizer's. Call scheduler.prepare() before training (or load_state_dict "
                               "of a run that did)")
        super().step(loss, metric, metrics=metrics, epoch=epoch)

    def load_state_dict(self, state_dict: dict) -> None:
        """A state saved before :meth:`prepare` (``found`` empty) loads as such: the range test is still to run."""
        def found_ok(found):
            lr = found.get("lr") if isinstance(found, dict) else None
            if isinstance(found, dict) and (not found or (isinstance(lr, (int, float)) and 0 < lr < float("inf"))):
                return None
            return "the range test's outcome: a dict with a positive 'lr' ({} before prepare())"
        _check_loadable(state_dict, self._config(), {"step": _is_step(self.total_steps), "found": found_ok})
        found = state_dict["found"]
        super().load_state_dict(state_dict)
        self.found = dict(found)
        self.history = [self.found] if found else []
        if found:
            self.peak_lr = float(found["lr"])
        self._apply_lr(self.lr_at(self.last_epoch))
