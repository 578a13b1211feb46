"""AutoLR's probe: the mean loss over one superbatch at several parameter settings along the step direction
(Section 2.2: every setting on the *same* mini-batches), forward passes only. It leaves the parameters, buffers,
module modes and the global RNGs exactly as they were, also when the loss function raises."""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

import torch
from torch import Tensor, nn

from .comm import mean_over_ranks

START = "start"  # the setting "parameters at the start of the window" in a probe pass


class Probe:
    """``probe(settings, window_start, cur, d, n_checks)`` -> (mean loss per setting, mini-batches used).
    ``extra_forward_passes`` counts its forwards."""

    def __init__(self, model: nn.Module, params: list[Tensor], loss_fn: Callable, batches: Callable[[], Iterator],
                 superbatch: int, probe_mode: str, seed: int, process_group: Any = None):
        self.model, self.params, self.loss_fn, self.batches = model, params, loss_fn, batches
        self.superbatch, self.probe_mode, self.seed, self.process_group = superbatch, probe_mode, seed, process_group
        self.extra_forward_passes = 0

    def __call__(self, settings: list[Any], window_start: list[Tensor], cur: list[Tensor], d: list[Tensor],
                 n_checks: int) -> tuple[list[float], int]:
        """Mean loss over the superbatch for each setting (``START``: the window start; a float ``eps``:
        ``theta_t - eps d``), every setting on each mini-batch before the next is drawn. Leaves parameters,
        buffers, module modes and the global RNGs as they were."""
        sums: Optional[Tensor] = None
        used = 0
        with self._context(n_checks) as seed_batch, torch.no_grad():
            try:
                for inputs, targets in self._superbatch():
                    row = []
                    for s in settings:
                        src = window_start if s is START else cur
                        for p, c in zip(self.params, src):
                            p.copy_(c)
                        if s is not START and s != 0.0:
                            for p, di in zip(self.params, d):
                                p.add_(di, alpha=-s)
                        seed_batch(used)  # same dropout masks for every setting on this mini-batch
                        row.append(self.loss_fn(self.model, inputs, targets).detach().double().reshape(()))
                    row_t = torch.stack(row)
                    sums = row_t if sums is None else sums + row_t
                    used += 1
            finally:  # also when loss_fn or batches() raises: the model keeps the weights it had
                for p, c in zip(self.params, cur):
                    p.copy_(c)
        if used == 0:
            raise ValueError("AutoLR: batches() yielded no mini-batch; it must return an iterator over training "
                             "mini-batches (inputs, targets) on the model's device")
        self.extra_forward_passes += used * len(settings)
        means = mean_over_ranks(sums / used, self.process_group)
        return [float(v) if math.isfinite(v) else math.nan for v in means.double().cpu().tolist()], used

    def _superbatch(self) -> Iterator[tuple[Tensor, Tensor]]:
        it = iter(self.batches())
        for _ in range(self.superbatch):
            try:
                yield next(it)
            except StopIteration:
                return

    @contextmanager
    def _context(self, n_checks: int):
        """Save module modes, buffers and the RNGs (CPU and the model's GPUs); yield ``seed_batch(i)`` that seeds
        the probe's dropout for mini-batch ``i``; restore everything afterwards."""
        modes = [(m, m.training) for m in self.model.modules()]
        buffers = [(b, b.detach().clone()) for b in self.model.buffers()]
        gpus = sorted({p.device.index or 0 for p in self.params if p.device.type == "cuda"})
        base = self.seed * 1_000_003 + n_checks * 10_007

        def seed_batch(i: int) -> None:
            torch.default_generator.manual_seed(base + i)
            for g in gpus:
                torch.cuda.default_generators[g].manual_seed(base + i)

        if self.probe_mode == "eval":
            self.model.eval()
        try:
            with torch.random.fork_rng(devices=gpus):
                yield seed_batch
        finally:
            with torch.no_grad():
                for b, saved in buffers:
                    b.copy_(saved)
            for m, training in modes:
                m.training = training
