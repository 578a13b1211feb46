"""AutoLR (explore-exploit LR tuning): the fit recovers a known optimum, explore never lowers the LR, probes leave
every state untouched, rollback is bit-exact, state_dict resumes exactly, bad settings are refused, train.py runs it."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from torch import nn

from conftest import TINY, read_jsonl, read_steps, run_inprocess

import autowu
from autowu.autolr import AutoLR

N = 10
CURVATURE = torch.linspace(0.5, 5.0, N)  # the bowl's Hessian diag(A): 1/lambda_max = 0.2


class Bowl(nn.Module):
    """L(theta) = mean over the batch's rows c of 0.5 (theta - c)^T A (theta - c): a quadratic with known answers."""

    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.full((N,), 2.0))


def bowl_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    r = model.theta - inputs
    return 0.5 * (r * r * CURVATURE).sum(1).mean()


def bowl_data(noise: float = 0.1, n_batches: int = 400, batch: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(noise * torch.randn(batch, N, generator=g), torch.zeros(batch)) for _ in range(n_batches)]


def run_bowl(make_opt, *, steps: int, window: int = 10, data=None, on_check=None, **kw) -> AutoLR:
    """SGD-style loop on the bowl, one mini-batch per step; ``on_check(sched, theta_before_step)`` after each
    check step."""
    data = data if data is not None else bowl_data()
    model = Bowl()
    opt = make_opt(model.parameters())
    kw = {"explore_epochs": 0, "superbatch": 50, "eps_threshold": 10.0, "max_change": 1e9, **kw}
    sched = AutoLR(opt, window * 2, 100, model=model, loss_fn=bowl_loss,
                   batches=lambda: iter(data), recompute_window=window, **kw)
    for step in range(steps):
        x, y = data[step % len(data)]
        opt.zero_grad()
        loss = bowl_loss(model, x, y)
        loss.backward()
        before = model.theta.detach().clone()
        opt.step()
        sched.step(loss)
        if on_check is not None and (step + 1) % window == 0:
            on_check(sched, before)
    return sched


def exact_eps(theta_prev: torch.Tensor, theta: torch.Tensor, lr: float, center: torch.Tensor) -> float:
    """argmin over eps of the bowl loss (centre ``center``) at theta - eps d, d = (theta_prev - theta) / lr."""
    d = (theta_prev - theta) / lr
    return float((d * CURVATURE * (theta - center)).sum() / (d * CURVATURE * d).sum())


OPTIMIZERS = {  # LRs where the bowl's optimum is within a few LRs of the step (float32 losses, quadratic fit)
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "momentum": lambda p: torch.optim.SGD(p, lr=0.3, momentum=0.9),
    "adam": lambda p: torch.optim.Adam(p, lr=0.3),
    "adamp": lambda p: __import__("adamp").AdamP(p, lr=0.3),
    "lamb": lambda p: __import__("torch_optimizer").Lamb(p, lr=0.3),
}


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_eps_min_recovered_on_noisy_bowl(opt_name):
    """Along the optimizer's own step, the fitted minimiser is the bowl's: exactly for the superbatch's centre, and
    close to the noiseless bowl's (the superbatch averages the mini-batch noise out)."""
    data = bowl_data(noise=0.1)
    superbatch_center = torch.cat([x for x, _ in data[:50]]).mean(0)
    seen = []

    def on_check(sched, before):
        e = sched.history[-1]
        if "eps_min_raw" in e:
            seen.append((e, exact_eps(before, sched.model.theta.detach(), e["lr_before"], superbatch_center),
                         exact_eps(before, sched.model.theta.detach(), e["lr_before"], torch.zeros(N))))

    run_bowl(OPTIMIZERS[opt_name], steps=10, data=data, explore_epochs=100, on_check=on_check)
    (entry, exact, noiseless), = seen
    assert entry["k2"] > 0
    assert entry["eps_min_raw"] == pytest.approx(exact, rel=1e-3)
    assert entry["eps_min_raw"] == pytest.approx(noiseless, rel=0.1)
    assert entry["eps"] == pytest.approx([entry["lr_before"] * s for s in (-0.5, -0.25, 0, 0.25, 0.5)])


def test_eps_threshold_clips_the_step():
    """Eq. 3: |eps_min| <= (r L)^(1/3) with the superbatch loss L."""
    sched = run_bowl(OPTIMIZERS["sgd"], steps=10, explore_epochs=100, eps_threshold=1e-5)
    e = sched.history[-1]
    bound = (1e-5 * e["loss_now"]) ** (1 / 3)
    assert e["eps_max"] == pytest.approx(bound)
    assert abs(e["eps_min_raw"]) > bound and e["eps_min"] == pytest.approx(bound)
    assert sched.get_last_lr()[0] == pytest.approx(0.1 + bound)


@pytest.mark.parametrize("loss", [0.7771034002304077, 2.3025851249694824])
def test_a_fit_to_loss_samples_that_do_not_differ_keeps_the_lr(loss):
    """Once the step no longer changes the loss, the samples are equal (or a rounding apart): their least-squares
    slope over a tiny eps is noise that once sent the LR to threshold, 10x down per check, to 1e-46 at batch 16K."""
    sched = run_bowl(OPTIMIZERS["sgd"], steps=1)
    eps = [2.73e-13 * x for x in (-0.5, -0.25, 0.0, 0.25, 0.5)]
    ulp = float(np.spacing(np.float32(loss)))
    for losses in ([loss] * 5, [loss, loss + ulp, loss, loss - ulp, loss]):
        entry = {}
        assert sched._fit(eps, losses, loss, entry) == 0.0 and "LR kept" in entry["note"]
    # a slope the samples resolve is still followed (to the threshold: the quadratic has no minimum here)
    entry = {}
    assert sched._fit(eps, [loss * (1 + 1e-5 * x) for x in (-2, -1, 0, 1, 2)], loss, entry) < 0


def overshooting_sgd(p):
    return torch.optim.SGD(p, lr=0.35)  # between 1/lambda_max and 2/lambda_max: the fit asks for a lower LR


def test_explore_phase_never_lowers_the_lr():
    explore = run_bowl(overshooting_sgd, steps=100, explore_epochs=100)
    assert all(e["phase"] == "explore" for e in explore.history)
    assert any(e["eps_min_raw"] is not None and e["eps_min_raw"] < 0 for e in explore.history)
    assert all(e["lr_after"] >= e["lr_before"] for e in explore.history)
    # the same run without the explore phase lowers it once the LR saturates
    exploit = run_bowl(overshooting_sgd, steps=100, saturation_threshold=1.0)
    assert any(e["action"] == "decrease" for e in exploit.history)


class SmallNet(nn.Module):
    """Conv + BatchNorm + Dropout: state a probe could disturb (running statistics, dropout RNG)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x)))).flatten(1))


def net_loss(model, x, y):
    return nn.functional.cross_entropy(model(x), y)


@pytest.mark.parametrize("probe_mode", ["train", "eval"])
def test_probes_leave_model_optimizer_buffers_and_rng_untouched(probe_mode):
    torch.manual_seed(0)
    model = SmallNet()
    model.fc.eval()  # a submodule the user put in eval mode keeps its flag
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = [(torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))) for _ in range(6)]

    def batches():  # like a shuffling DataLoader: draws from the global RNG
        return iter([data[i] for i in torch.randperm(len(data)).tolist()])

    sched = AutoLR(opt, 4, 4, model=model, loss_fn=net_loss, batches=batches, explore_epochs=1,
                   recompute_window=2, superbatch=5, probe_mode=probe_mode)
    for step in range(8):
        x, y = data[step % 6]
        opt.zero_grad()
        net_loss(model, x, y).backward()
        opt.step()
        state = {k: v.clone() for k, v in model.state_dict().items()}
        opt_state = {k: {n: t.clone() for n, t in s.items()} for k, s in opt.state_dict()["state"].items()}
        rng = torch.get_rng_state()
        modes = [m.training for m in model.modules()]
        passes = sched.extra_forward_passes
        sched.step()
        if (step + 1) % 2 == 0:
            assert sched.extra_forward_passes > passes  # a check ran on this step
        for k, v in model.state_dict().items():
            assert torch.equal(v, state[k]), k
        for k, s in opt.state_dict()["state"].items():
            assert all(torch.equal(t, opt_state[k][n]) for n, t in s.items())
        assert torch.equal(torch.get_rng_state(), rng)
        assert [m.training for m in model.modules()] == modes
    assert [e["phase"] for e in sched.history] == ["explore"] + ["exploit"] * 3


def test_rollback_restores_bit_identical_state():
    """A change whose window drops the loss more slowly than the window before it is undone: parameters and
    optimizer state are those of the moment of the change, bit for bit, and the LR is the one before it."""
    at_check = {}

    def on_check(sched, before):
        at_check[sched.last_epoch] = ({k: v.clone() for k, v in sched.model.state_dict().items()},
                                      {k: {n: t.clone() for n, t in s.items()}
                                       for k, s in sched.optimizer.state_dict()["state"].items()})

    sched = run_bowl(lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5), steps=200, on_check=on_check)
    rollbacks = [e for e in sched.history if e["rolled_back"]]
    assert rollbacks, "the bowl's geometric slow-down makes some change look bad"
    e = rollbacks[0]
    change = next(h for h in sched.history if h["step"] == e["rollback_to_step"])
    assert change["action"] in ("increase", "decrease") and e["drop_rate"] < e["rate_before_change"]
    assert e["lr_after"] == change["lr_before"]
    # replay to the rollback step and compare with the state saved at the change
    replay = {}

    def stop_at_rollback(s, before):
        if s.last_epoch == e["step"]:
            replay["model"] = {k: v.clone() for k, v in s.model.state_dict().items()}
            replay["opt"] = s.optimizer.state_dict()["state"]

    run_bowl(lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5), steps=e["step"], on_check=stop_at_rollback)
    saved_model, saved_opt = at_check[e["rollback_to_step"]]
    assert all(torch.equal(replay["model"][k], v) for k, v in saved_model.items())
    assert all(torch.equal(replay["opt"][k][n], t) for k, s in saved_opt.items() for n, t in s.items())


def test_state_dict_round_trip_resumes_exactly():
    """Stop mid-run with a change awaiting its rollback check, save everything through torch.save (plain data:
    loads with weights_only=True), rebuild, load, continue: same LRs, decisions and weights as the uninterrupted run."""
    data = bowl_data()
    make = lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5)  # noqa: E731
    kw = dict(explore_epochs=0, superbatch=50, eps_threshold=10.0, max_change=1e9, recompute_window=10)

    def build():
        model = Bowl()
        opt = make(model.parameters())
        return model, opt, AutoLR(opt, 20, 10, model=model, loss_fn=bowl_loss, batches=lambda: iter(data), **kw)

    def train(model, opt, sched, steps, lrs):
        for step in steps:
            x, y = data[step]
            opt.zero_grad()
            loss = bowl_loss(model, x, y)
            loss.backward()
            opt.step()
            sched.step(loss)
            lrs.append(sched.get_last_lr()[0])

    full = build()
    full_lrs: list[float] = []
    train(*full, range(200), full_lrs)
    split_at = next(e["step"] for e in full[2].history if e["action"] in ("increase", "decrease")) + 3

    first = build()
    lrs: list[float] = []
    train(*first, range(split_at), lrs)
    assert first[2].pending is not None
    buf = io.BytesIO()
    torch.save({"model": first[0].state_dict(), "opt": first[1].state_dict(), "sched": first[2].state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    second = build()
    second[0].load_state_dict(ckpt["model"])
    second[1].load_state_dict(ckpt["opt"])
    second[2].load_state_dict(ckpt["sched"])
    train(*second, range(split_at, 200), lrs)
    assert lrs == full_lrs
    assert second[2].history == full[2].history
    assert torch.equal(second[0].theta, full[0].theta)
    assert second[2].extra_forward_passes == full[2].extra_forward_passes


def test_forward_passes_counted():
    """Explore checks cost (1 + n_eps) forwards per superbatch mini-batch (window start + the eps grid with 0)."""
    sched = run_bowl(OPTIMIZERS["sgd"], steps=30, explore_epochs=100, superbatch=20, forwards_per_step=2)
    assert len(sched.history) == 3
    assert sched.extra_forward_passes == 3 * 20 * (1 + 5)
    assert sched.overhead == pytest.approx(sched.extra_forward_passes / (30 * 2))
    assert sched.compute_overhead == pytest.approx(sched.overhead / 3)


def test_skipped_optimizer_step_postpones_the_check():
    """An optimizer step skipped at a check (AMP overflow) moves the check to the next step that really steps."""
    data = bowl_data()
    model = Bowl()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = AutoLR(opt, 20, 2, model=model, loss_fn=bowl_loss, batches=lambda: iter(data), recompute_window=10,
                   superbatch=5)
    for step in range(12):
        x, y = data[step]
        opt.zero_grad()
        bowl_loss(model, x, y).backward()
        if step != 9:
            opt.step()
        sched.step()
    assert [e["step"] for e in sched.history] == [11]


def test_param_groups_keep_their_ratio():
    model = Bowl()
    extra = nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([{"params": model.parameters()}, {"params": [extra], "lr": 0.01}], lr=0.1)
    data = bowl_data()
    sched = AutoLR(opt, 10, 3, model=model, loss_fn=bowl_loss, batches=lambda: iter(data), explore_epochs=3,
                   recompute_window=5, superbatch=5)
    for step in range(10):
        x, y = data[step]
        opt.zero_grad()
        bowl_loss(model, x, y).backward()
        opt.step()
        sched.step()
    lr0, lr1 = sched.get_last_lr()
    assert lr0 > 0.1  # explore raised the LR on this bowl
    assert lr1 == pytest.approx(lr0 / 10) and opt.param_groups[1]["lr"] == pytest.approx(lr0 / 10)


@pytest.mark.parametrize("bad, match", [
    ({"n_eps": 2}, "n_eps"), ({"superbatch": 0}, "superbatch"), ({"explore_epochs": 11}, "explore_epochs"),
    ({"recompute_window": 0}, "recompute_window"), ({"eps_threshold": 0}, "eps_threshold"),
    ({"saturation_threshold": 0.5}, "saturation_threshold"), ({"eps_span": 1.5}, "eps_span"),
    ({"max_change": 1}, "max_change"), ({"probe_mode": "test"}, "probe_mode"), ({"loss_fn": None}, "loss_fn"),
    ({"batches": 3}, "batches"), ({"model": "net"}, "model"),
])
def test_invalid_arguments_are_refused(bad, match):
    model = Bowl()
    kw = {"model": model, "loss_fn": bowl_loss, "batches": lambda: iter([]), **bad}
    with pytest.raises(ValueError, match=match):
        AutoLR(torch.optim.SGD(model.parameters(), lr=0.1), 10, 10, **kw)


def test_empty_batches_is_a_clear_error():
    model = Bowl()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = AutoLR(opt, 2, 2, model=model, loss_fn=bowl_loss, batches=lambda: iter([]), recompute_window=1)
    bowl_loss(model, torch.zeros(1, N), torch.zeros(1)).backward()
    opt.step()
    with pytest.raises(ValueError, match="batches"):
        sched.step()


def test_create_scheduler_builds_autolr():
    model = Bowl()
    sched = autowu.create_scheduler("autolr", torch.optim.SGD(model.parameters(), lr=0.1), steps_per_epoch=10,
                                    total_epochs=5, model=model, loss_fn=bowl_loss, batches=lambda: iter([]))
    assert isinstance(sched, AutoLR) and sched.explore_steps == 10 and sched.recompute_window == 5
    assert sched.get_last_lr() == [0.1]


def test_train_py_runs_autolr(tmp_path):
    """``--sched autolr`` end to end: decisions logged to events.jsonl, the LR moves only at checks."""
    run = tmp_path / "run"
    kwargs = json.dumps({"explore_epochs": 1, "recompute_window": 2, "superbatch": 3, "saturation_threshold": 1})
    assert run_inprocess([*TINY, "--sched", "autolr", "--opt", "sgd", "--output", str(run),
                          "--sched-kwargs", kwargs]) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["status"] == "finished"
    events = [e for e in read_jsonl(run / "events.jsonl") if e.get("type") == "autolr"]
    assert [e["step"] for e in events] == [2, 4, 6, 8, 10]
    assert [e["phase"] for e in events] == ["explore"] + ["exploit"] * 4
    lrs = [r["lr"] for r in read_steps(run)]
    changes = {t for t in range(1, len(lrs)) if lrs[t] != lrs[t - 1]}
    assert changes <= {e["step"] for e in events}


@pytest.mark.parametrize("fail_after", [0, 3])
def test_a_probe_whose_loss_raises_leaves_the_weights_as_they_were(fail_after):
    """Issue 22: the probe sets theta - eps d before each forward; an exception inside loss_fn must not leave the
    model at a probed point."""
    model = Bowl()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = {"n": 0}

    def flaky_loss(m, x, y):
        calls["n"] += 1
        if calls["n"] > fail_after:
            raise RuntimeError("out of memory in the probe")
        return bowl_loss(m, x, y)

    data = bowl_data(n_batches=4)
    sched = AutoLR(opt, 2, 2, model=model, loss_fn=flaky_loss, batches=lambda: iter(data), recompute_window=1,
                   explore_epochs=0, superbatch=4)
    bowl_loss(model, *data[0]).backward()
    opt.step()
    before = model.theta.detach().clone()
    with pytest.raises(RuntimeError, match="out of memory in the probe"):
        sched.step()
    assert torch.equal(model.theta.detach(), before)
