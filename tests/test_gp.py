"""The fast GP minimum test against a dense float64 computation and against GPyTorch."""
import numpy as np
import pytest
import torch

from autowu.gp import GPState, MinimumTest, RBFFeatures, fit, negative_mll, posterior_min_test


def dense_reference(x, y, grid, state):
    """Textbook GP posterior (Rasmussen & Williams Alg. 2.1) with the full kernel matrices."""
    s, n, theta = state.outputscale, state.noise, state.mean
    k = lambda a, b: s * np.exp(-np.subtract.outer(a, b) ** 2 / (2 * 0.2**2))
    L = np.linalg.cholesky(k(x, x) + n * np.eye(len(x)))
    alpha = np.linalg.solve(L.T, np.linalg.solve(L, y - theta))
    ks = k(x, grid)
    mean = theta + ks.T @ alpha
    v = np.linalg.solve(L, ks)
    cov = k(grid, grid) - v.T @ v
    var_diff = np.diag(cov) + cov[-1, -1] - 2 * cov[:, -1]
    z = -(mean - mean[-1]) / np.sqrt(np.maximum(var_diff, 0) + 1e-4)
    return torch.special.ndtr(torch.from_numpy(z[:-1])).numpy().max(), mean.argmin()  # x < 1, as official


@pytest.mark.parametrize("lengthscale", [0.1, 0.2, 0.5])
def test_features_reproduce_the_kernel(lengthscale):
    f = RBFFeatures(lengthscale)
    x, g = np.random.default_rng(0).random(300), np.linspace(0, 1, 500)
    exact = np.exp(-np.subtract.outer(x, g) ** 2 / (2 * lengthscale**2))
    assert np.abs(f(x) @ f(g).T - exact).max() < 1e-12


@pytest.mark.parametrize("shape", ["valley", "decreasing", "flat"])
def test_posterior_matches_dense_computation(shape):
    rng = np.random.default_rng(1)
    x = np.sort(rng.random(400))
    base = {"valley": 3 * (x - 0.6) ** 2, "decreasing": 1 - x, "flat": 0 * x}[shape]
    y = base + 0.05 * rng.standard_normal(400)
    state = GPState(mean=float(y.mean()), raw_outputscale=-1.0, raw_noise=-6.0)
    feats = RBFFeatures(0.2)
    grid = np.linspace(0, 1, 500)
    p_min, argmin = posterior_min_test(feats(x)[None], y[None], feats(grid), state)
    p_ref, argmin_ref = dense_reference(x, y, grid, state)
    assert p_min[0] == pytest.approx(p_ref, abs=1e-6)
    assert abs(int(argmin[0]) - int(argmin_ref)) <= 1


def test_mll_and_fit_match_gpytorch():
    import gpytorch  # the reference implementation the paper used

    rng = np.random.default_rng(0)
    x = np.sort(rng.random(100))
    y = 2.0 - 1.5 * x + 5 * np.maximum(x - 0.7, 0) ** 2 + 0.1 * rng.standard_normal(100)

    class GP(gpytorch.models.ExactGP):
        def __init__(self, tx, ty, lik):
            super().__init__(tx, ty, lik)
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())

        def forward(self, v):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(v), self.covar_module(v))

    tx, ty = torch.tensor(x), torch.tensor(y)
    lik = gpytorch.likelihoods.GaussianLikelihood().double()
    model = GP(tx, ty, lik).double()
    model.initialize(**{"covar_module.base_kernel.lengthscale": 0.2, "likelihood.noise": 1e-3,
                        "mean_module.constant": float(y.mean())})
    params = [p for n, p in model.named_parameters() if "lengthscale" not in n]
    opt = torch.optim.Adam(params, lr=0.01)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(lik, model)
    model.train()
    feats = RBFFeatures(0.2)(x)
    first = -mll(model(tx), ty).item()
    ours, _ = negative_mll(feats, y, float(y.mean()), model.covar_module.outputscale.item(), lik.noise.item())
    assert ours == pytest.approx(first, rel=1e-7)  # GPyTorch adds a tiny Cholesky jitter
    for _ in range(100):
        opt.zero_grad()
        (-mll(model(tx), ty)).backward()
        opt.step()
    state = fit(feats, y, GPState(mean=float(y.mean())))
    assert state.mean == pytest.approx(model.mean_module.constant.item(), rel=1e-6)
    assert state.outputscale == pytest.approx(model.covar_module.outputscale.item(), rel=1e-6)
    assert state.noise == pytest.approx(lik.noise.item(), rel=1e-6)


def test_minimum_test_detects_a_past_minimum_and_not_a_decreasing_curve():
    rng = np.random.default_rng(3)
    x = np.arange(2000) / 2000
    test = MinimumTest()
    valley, _ = test(3 * (x - 0.5) ** 2 + 0.1 * rng.standard_normal(2000), np.random.default_rng(0), GPState())
    falling, _ = test(1 - x + 0.1 * rng.standard_normal(2000), np.random.default_rng(0), GPState())
    assert valley.passed and valley.votes == 5 and all(0.45 < a < 0.55 for a in valley.argmin_x)
    assert not falling.passed and max(falling.p_min) < 0.95


def test_subsets_are_independent_and_bounded():
    test = MinimumTest(n_test=5, test_subset=500)
    losses = np.random.default_rng(0).random(3000)
    rng = np.random.default_rng(5)
    result, _ = test(losses, rng, GPState())
    assert len(set(np.round(result.p_min, 12))) > 1  # five different subsets, five different posteriors
