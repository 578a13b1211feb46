"""AutoWU scheduler: Algorithm 1, the official API, resume, param groups, bad input, rollback."""
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autowu import AutoWU, create_scheduler


def make_opt(lrs=(1.0,)):
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in lrs]
    return torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)], lr=lrs[0])


def u_shaped(lr, noise, rng, lr_star=1e-2):
    """A loss curve over log-LR with its minimum at ``lr_star``."""
    return (math.log10(lr) - math.log10(lr_star)) ** 2 + noise * rng.standard_normal()


def run(sched, loss_of_lr, steps):
    lrs = []
    for _ in range(steps):
        lr = sched.get_last_lr()[0]
        lrs.append(lr)
        sched.step(torch.tensor(loss_of_lr(lr)))
    return lrs


def test_exponential_warmup_is_eq1_exactly():
    s = AutoWU(make_opt(), steps_per_epoch=10, total_epochs=20, variant="paper")  # T = 200, W = 100
    assert s.warmup_steps == 100
    gamma = (1.0 / 1e-5) ** (1 / 100)
    lrs = run(s, lambda lr: 10.0 - math.log(lr), 100)  # keeps decreasing: no switch
    for t, lr in enumerate(lrs):
        assert lr == pytest.approx(1e-5 * gamma**t, rel=1e-12)
    assert s.switch["reason"] == "max-warmup" and s.switch["step"] == 100
    assert s.get_last_lr()[0] == pytest.approx(1.0)  # decay starts from the LR reached, eta_max


def test_linear_warmup_is_eq6():
    s = AutoWU(make_opt(), 10, 20, warmup="linear", eta_max=0.1, variant="paper")
    lrs = run(s, lambda lr: 10.0 - lr, 50)
    for t, lr in enumerate(lrs):
        assert lr == pytest.approx(1e-5 + (0.1 - 1e-5) * t / 100, rel=1e-12)


def test_cosine_reaches_zero_at_T_and_const_cosine_is_flat_until_0p8T():
    rng = np.random.default_rng(0)
    for decay in ("cosine", "const-cosine"):
        s = AutoWU(make_opt(), 50, 40, decay=decay, variant="paper")
        lrs = run(s, lambda lr: u_shaped(lr, 0.3, rng), 2000)
        sw = s.switch
        assert sw is not None and sw["reason"] == "gp-test"
        after = lrs[sw["step"]:]
        assert after[0] == pytest.approx(sw["lr"])
        assert s.get_last_lr()[0] == pytest.approx(0.0, abs=1e-15)  # step T
        if decay == "const-cosine":
            assert all(lr == sw["lr"] for lr in lrs[sw["step"]:1600])  # flat until 0.8 T
            assert lrs[1601] < sw["lr"]
        else:
            assert all(a > b for a, b in zip(after, after[1:]))


def test_decreasing_noisy_curve_never_switches_before_max_warmup():
    rng = np.random.default_rng(1)
    s = AutoWU(make_opt(), 20, 30)  # W = 300
    run(s, lambda lr: 2.0 / (1 + 50 * lr) + 0.2 * rng.standard_normal(), 300)
    assert s.switch is not None and s.switch["reason"] == "max-warmup" and s.switch["step"] == 300
    assert all(not h["passed"] or h["consecutive"] < 3 for h in s.history if h["type"] == "test")


def test_u_shaped_curve_switches_soon_after_minimum_is_clear_near_true_lr():
    rng = np.random.default_rng(0)
    spe, noise = 50, 0.3
    s = AutoWU(make_opt(), spe, 40)
    run(s, lambda lr: u_shaped(lr, noise, rng), 1000)
    sw = s.switch
    assert sw["reason"] == "gp-test"
    # the noiseless curve has risen by 3 noise std above its minimum at this step:
    t_min = next(t for t in range(1000) if s.warmup_lr(t) >= 1e-2)
    t_clear = next(t for t in range(t_min, 1000) if u_shaped(s.warmup_lr(t), 0, rng) > 3 * noise)
    assert t_min < sw["step"]  # not before the minimum
    assert sw["epoch"] <= t_clear // spe + s.patience + 1
    assert 1e-2 / 1.5 <= sw["lr"] <= 1e-2 * 1.5
    # the history explains the decision: p consecutive passing tests with their P_min values
    tests = [h for h in s.history if h["type"] == "test"]
    assert [h["passed"] for h in tests[-3:]] == [True] * 3
    assert all(len(h["p_min"]) == 5 and h["votes"] >= 3 for h in tests[-3:])


def test_one_epoch_spike_does_not_switch():
    rng = np.random.default_rng(2)
    spe = 20
    s = AutoWU(make_opt(), spe, 30)  # W = 300 steps, 15 warmup epochs
    step = {"t": 0}

    def loss(lr):
        t = step["t"]
        step["t"] += 1
        spike = 1.0 if 8 * spe <= t < 9 * spe else 0.0
        return 1.0 - 0.1 * math.log10(lr) + spike + 0.05 * rng.standard_normal()  # linear in x = s/t

    run(s, loss, 300)
    assert s.switch["reason"] == "max-warmup"


@pytest.mark.parametrize("stop", [37, 130, 455])  # mid-warmup mid-epoch, mid-warmup epoch end, mid-decay
def test_state_dict_round_trip_continues_identical_trajectory(tmp_path, stop):
    def loss_fn(lr, t):
        r = np.random.default_rng(t)
        return u_shaped(max(lr, 1e-12), 0.3, r)  # the official cosine reaches 0 at step T - 1

    def fresh():
        return AutoWU(make_opt((1.0, 0.1)), 10, 60, rollback=False)

    ref = fresh()
    ref_lrs = []
    for t in range(600):
        ref_lrs.append(ref.get_last_lr())
        ref.step(torch.tensor(loss_fn(ref.get_last_lr()[0], t)))
    a = fresh()
    for t in range(stop):
        a.step(torch.tensor(loss_fn(a.get_last_lr()[0], t)))
    torch.save(a.state_dict(), tmp_path / "s.pt")
    b = fresh()
    b.load_state_dict(torch.load(tmp_path / "s.pt"))  # default weights_only=True must work
    lrs = []
    for t in range(stop, 600):
        lrs.append(b.get_last_lr())
        b.step(torch.tensor(loss_fn(b.get_last_lr()[0], t)))
    assert lrs == ref_lrs[stop:]
    assert b.history == ref.history and b.switch == ref.switch


def test_load_state_dict_rejects_different_settings():
    a = AutoWU(make_opt(), 10, 20)
    b = AutoWU(make_opt(), 10, 30)
    with pytest.raises(ValueError, match="total_epochs"):
        b.load_state_dict(a.state_dict())


def test_param_groups_keep_ratio_to_first_group():
    s = AutoWU(make_opt((0.5, 0.05, 0.0)), 10, 20)
    for _ in range(25):
        lr0, lr1, lr2 = s.get_last_lr()
        assert lr1 == pytest.approx(lr0 * 0.1) and lr2 == 0.0
        assert [g["lr"] for g in s.optimizer.param_groups] == [lr0, lr1, lr2]
        s.step(1.0)


def test_step_accepts_metrics_keyword_and_is_an_lr_scheduler():
    s = AutoWU(make_opt(), 10, 20)
    s.step(metrics=torch.tensor(1.0))
    s.step(1.0)
    assert s.num_steps == 2
    assert isinstance(s, torch.optim.lr_scheduler.LRScheduler)


def test_no_host_sync_per_step(monkeypatch):
    reads = []
    for name in ("item", "cpu", "tolist", "numpy", "__float__"):
        orig = getattr(torch.Tensor, name)

        def spy(self, *a, _orig=orig, _name=name, **k):
            reads.append(_name)
            return _orig(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, spy)
    s = AutoWU(make_opt(), 10, 20)
    for t in range(9):
        s.step(torch.tensor(1.0 - 0.01 * t))
    assert reads == []  # nothing read on the host before the epoch ends
    s.step(torch.tensor(0.9))
    assert reads  # the epoch end moves the losses once


@pytest.mark.parametrize("kwargs, name", [
    (dict(rho_w=0.0), "rho_w"), (dict(rho_w=1.5), "rho_w"), (dict(eta_min=-1.0), "eta_min"),
    (dict(eta_max=1e-6), "eta_max"), (dict(patience=0), "patience"), (dict(confidence=1.0), "confidence"),
    (dict(n_test=0), "n_test"), (dict(warmup="cubic"), "warmup"), (dict(decay="step"), "decay"),
    (dict(cooldown_fraction=1.5), "cooldown_fraction"), (dict(cooldown_type="linear"), "cooldown_type"),
    (dict(rollback=True), "rollback"),
])
def test_invalid_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        AutoWU(make_opt(), 10, 20, **kwargs)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        AutoWU(make_opt(), 0, 20)
    with pytest.raises(ValueError, match="scalar"):
        AutoWU(make_opt(), 10, 20).step(torch.ones(3))


def test_all_nonfinite_epoch_switches_at_once_with_t_star_from_finite_history():
    s = AutoWU(make_opt(), 10, 40)
    for t in range(30):
        s.step(2.0 - 0.01 * t)
    for _ in range(10):
        s.step(float("nan"))
    assert s.switch["reason"] == "non-finite" and s.switch["step"] == 40
    assert 0 <= s.switch["t_star"] <= 30
    assert s.switch["lr"] == pytest.approx(s.warmup_lr(s.switch["t_star"]))
    assert math.isfinite(s.get_last_lr()[0])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                          st.sampled_from([1e300, -1e300, 1e-300, 0.0, 2.5])), min_size=60, max_size=60),
       st.sampled_from(["cosine", "const-cosine"]))
def test_property_never_raises_and_lr_stays_in_range(losses, decay):
    s = AutoWU(make_opt(), 5, 12, decay=decay)
    for loss in losses:
        s.step(torch.tensor(loss, dtype=torch.float64))
        lr = s.get_last_lr()[0]
        assert math.isfinite(lr) and 0.0 <= lr <= 1.0


def test_rollback_restores_the_snapshot_nearest_t_star_bit_identically():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1.0)
    s = AutoWU(opt, 50, 40, rollback=True, model=model)
    rng = np.random.default_rng(0)
    saved = {}
    for t in range(2000):
        lr = s.get_last_lr()[0]
        opt.zero_grad()
        model(torch.randn(4, 3)).sum().backward()
        opt.step()
        s.step(torch.tensor(u_shaped(lr, 0.3, rng)))
        if s.phase == "warmup" and s.num_steps % 50 == 0:
            saved[s.num_steps] = {k: v.clone() for k, v in model.state_dict().items()}
        if s.switch is not None and s.switch["step"] == s.num_steps:
            break
    sw = s.switch
    assert sw["reason"] == "gp-test" and sw["rollback_step"] in saved
    candidates = [k for k in saved if k > sw["step"] - 50 * (s.patience + 2)]
    assert sw["rollback_step"] == min(candidates, key=lambda k: abs(k - sw["t_star"]))
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[sw["rollback_step"]][k])
    assert opt.param_groups[0]["lr"] == pytest.approx(sw["lr"])


def test_create_scheduler_names():
    for name in ("autowu-cos", "autowu-const-cos"):
        s = create_scheduler(name, make_opt(), steps_per_epoch=10, total_epochs=20)
        assert s.decay == ("cosine" if name == "autowu-cos" else "const-cosine")
    with pytest.raises(ValueError, match="unknown schedule"):
        create_scheduler("onecycle", make_opt(), steps_per_epoch=10, total_epochs=20)
