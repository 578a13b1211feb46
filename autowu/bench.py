"""Time one AutoWU minimum test: ``python -m autowu.bench [--steps 20000] [--repeats 30]``.

A realistic warmup curve (a noisy valley in log-LR, CIFAR-like length) goes through the full test of Algorithm 1:
fit on <= 100 losses (100 Adam steps), 5 posteriors on <= 500 losses each, 500 grid points. Prints the median.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from .gp import GPState, MinimumTest


def main(argv: list[str] | None = None) -> list[float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20000, help="warmup losses observed so far")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--compare-gpytorch", action="store_true",
                        help="also time the same test done the official way (GPyTorch, dense 500x500 posteriors)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    x = np.arange(args.steps) / args.steps
    losses = 2.3 - 1.8 * x + 6.0 * np.maximum(x - 0.7, 0) ** 2 + 0.15 * rng.standard_normal(args.steps)
    test, state = MinimumTest(), GPState()
    test(losses, rng, state)  # warm-up (imports, allocator)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        result, state = test(losses, rng, state)
        times.append((time.perf_counter() - t0) * 1e3)
    print(f"AutoWU minimum test ({args.steps} losses, n_test=5, 500-point grid): median {statistics.median(times):.2f} ms, "
          f"min {min(times):.2f} ms, max {max(times):.2f} ms over {args.repeats} runs; passed={result.passed}")
    if args.compare_gpytorch:
        ref = [_gpytorch_test(losses, rng) for _ in range(max(3, args.repeats // 10))]
        print(f"same test through GPyTorch as the official code does it: median {statistics.median(ref):.1f} ms "
              f"({statistics.median(ref) / statistics.median(times):.0f}x slower)")
    return times


def _gpytorch_test(losses: np.ndarray, rng: np.random.Generator) -> float:
    """The official procedure (GPyTorch ExactGP, Adam 100 steps, 5 dense predictive covariances), timed in ms."""
    import gpytorch
    import torch

    class _GP(gpytorch.models.ExactGP):
        def __init__(self, lik):
            super().__init__(None, None, lik)
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())

        def forward(self, v):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(v), self.covar_module(v))

    t0 = time.perf_counter()
    n = losses.shape[0]
    lik = gpytorch.likelihoods.GaussianLikelihood()
    model = _GP(lik)
    model.initialize(**{"covar_module.base_kernel.lengthscale": 0.2, "likelihood.noise": 1e-3,
                        "mean_module.constant": float(losses.mean())})
    opt = torch.optim.Adam([p for k, p in model.named_parameters() if "lengthscale" not in k], lr=0.01)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(lik, model)

    def condition(k):
        idx = np.sort(rng.choice(n, size=min(n, k), replace=False))
        model.set_train_data(torch.tensor(idx / n, dtype=torch.float32),
                             torch.tensor(losses[idx], dtype=torch.float32), strict=False)

    condition(100)
    model.train()
    x, y = model.train_inputs[0], model.train_targets
    for _ in range(100):
        opt.zero_grad()
        (-mll(model(x), y)).backward()
        opt.step()
    model.eval()
    grid = torch.linspace(0, 1, 500)
    for _ in range(5):
        condition(500)
        with torch.no_grad():
            pred = model(grid)
            mean, cov = pred.mean, pred.covariance_matrix
            diff_var = cov.diagonal() + cov[-1, -1] - 2 * cov[:, -1]
            torch.special.ndtr(-(mean - mean[-1]) / (diff_var + 1e-4).sqrt()).max()
    return (time.perf_counter() - t0) * 1e3


if __name__ == "__main__":
    main()
