"""AutoWU's test cadence (beyond the paper): ``test_every`` / ``max_overshoot``, the paper's default unchanged."""
import math
import warnings

import numpy as np
import pytest
import torch

import train
import functools

import autowu
from framework.optim import scheduler_kwargs

# the paper's reading (train.py's autowu-cos): the recorded switches below come from it
AutoWU = functools.partial(autowu.AutoWU, variant="paper")


def make_opt():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0)


def loss_at(lr, t):
    """U-shaped over log-LR (minimum at 1e-2), noise of a fixed stream per step."""
    return (math.log10(lr) + 2) ** 2 + 0.3 * np.random.default_rng(t).standard_normal()


def drive(sched, steps, start=0):
    lrs = []
    for t in range(start, steps):
        lr = sched.get_last_lr()[0]
        lrs.append(lr)
        sched.step(torch.tensor(loss_at(lr, t)))
    return lrs


def test_default_is_the_papers_epoch_cadence_and_unchanged():
    a = AutoWU(make_opt(), 10, 60)
    b = AutoWU(make_opt(), 10, 60, test_every=10)
    assert a.test_every == 10
    assert drive(a, 600) == drive(b, 600)
    assert a.history == b.history
    assert {h["step"] % 10 for h in a.history if h["type"] == "test"} == {0}
    # the switch recorded from the code before the cadence option existed (commit 95e95c2), same loss stream
    assert (a.switch["step"], a.switch["epoch"], a.switch["reason"]) == (230, 22, "gp-test")
    assert a.switch["t_star"] == pytest.approx(185.75150300601203, rel=1e-9)
    assert a.switch["lr"] == pytest.approx(0.012469768285044992, rel=1e-9)


def _test_steps(every, spe=10, epochs=10):
    s = AutoWU(make_opt(), spe, epochs, patience=10_000, test_every=every)  # W = 50; never switches by the test
    drive(s, s.warmup_steps + 5)
    return s, [h["step"] for h in s.history if h["type"] == "test"]


@pytest.mark.parametrize("every", [1, 3, 7, 25, 60])
def test_test_steps_are_the_multiples_of_test_every_within_the_warmup(every):
    s, tests = _test_steps(every)
    assert tests == list(range(every, s.warmup_steps + 1, every))
    assert s.switch["reason"] == "max-warmup" and s.switch["step"] == s.warmup_steps
    assert s.losses.shape == (s.warmup_steps,)  # every warmup loss reached the host, once


def test_max_overshoot_picks_the_largest_cadence_within_the_bound():
    for spe, epochs, patience, bound in [(16, 32, 3, 1.5), (64, 32, 3, 1.2), (16, 32, 2, 2.0), (16, 32, 3, 3.0)]:
        s = AutoWU(make_opt(), spe, epochs, patience=patience, max_overshoot=bound)
        k = s.test_every
        assert s.gamma ** (patience * k) <= bound * (1 + 1e-12)
        assert s.gamma ** (patience * (k + 1)) > bound
    # never coarser than the paper: 200 epochs of 100 steps allow k = 117 for 1.5, the epoch (100 steps) is kept
    assert AutoWU(make_opt(), 100, 200, max_overshoot=1.5).test_every == 100
    assert AutoWU(make_opt(), 16, 32, max_overshoot=3.0).test_every == 8  # the recommended setting at 1K
    # the paper-regime table (results/paper_regime.md: 200 epochs, 234 / 58 / 7 / 3 steps per epoch at 256 / 1K / 8K
    # / 16K): gamma^(3 epochs) = 1e5^(3/100) = 1.41 < 3, so the recommended setting is the paper's epoch cadence there
    for spe in (234, 58, 7, 3):
        assert AutoWU(make_opt(), spe, 200, max_overshoot=3.0).test_every == spe
    # 1K in the 32-epoch Fashion-MNIST table: gamma = 1e5^(1/256), 1.5 allows k = 3 (gamma^9 = 1.4986)
    s = AutoWU(make_opt(), 16, 32, max_overshoot=1.5)
    assert s.test_every == 3
    assert s.state_dict()["config"]["test_every"] == 3 and s.state_dict()["config"]["max_overshoot"] == 1.5


def test_unreachable_max_overshoot_tests_every_step_with_a_warning():
    with pytest.warns(UserWarning, match="every step"):
        s = AutoWU(make_opt(), 2, 32, max_overshoot=1.5)  # W = 32: gamma^3 = 2.94
    assert s.test_every == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AutoWU(make_opt(), 2, 32, max_overshoot=3.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(test_every=0), "test_every"), (dict(test_every=2.5), "test_every"),
    (dict(max_overshoot=1.0), "max_overshoot"), (dict(max_overshoot="2"), "max_overshoot"),
    (dict(test_every=2, max_overshoot=1.5), "only one"), (dict(max_overshoot=1.5, warmup="linear"), "linear"),
])
def test_bad_cadence_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AutoWU(make_opt(), 10, 20, **kwargs)


def test_finer_cadence_switches_earlier_with_less_overshoot():
    paper, fine = AutoWU(make_opt(), 10, 60), AutoWU(make_opt(), 10, 60, test_every=2)
    drive(paper, 600)
    drive(fine, 600)
    assert paper.switch["reason"] == fine.switch["reason"] == "gp-test"
    assert fine.switch["step"] < paper.switch["step"]
    overshoot = {s: s.warmup_lr(s.switch["step"]) / s.switch["lr"] for s in (paper, fine)}
    assert overshoot[fine] < overshoot[paper]
    assert abs(math.log10(fine.switch["lr"]) + 2) < 0.5  # still near the true minimum, 1e-2


@pytest.mark.parametrize("stop", [5, 96, 301])  # mid-block in the warmup, a test step, after the switch
def test_resume_continues_the_identical_trajectory(tmp_path, stop):
    ref = AutoWU(make_opt(), 10, 60, test_every=4)
    ref_lrs = drive(ref, 600)
    a = AutoWU(make_opt(), 10, 60, test_every=4)
    drive(a, stop)
    torch.save(a.state_dict(), tmp_path / "s.pt")
    b = AutoWU(make_opt(), 10, 60, test_every=4)
    b.load_state_dict(torch.load(tmp_path / "s.pt"))
    assert drive(b, 600, start=stop) == ref_lrs[stop:]
    assert b.history == ref.history
    with pytest.raises(ValueError, match="test_every"):
        AutoWU(make_opt(), 10, 60, test_every=5).load_state_dict(a.state_dict())


def test_train_flags_reach_the_scheduler():
    parser = train.get_args_parser()
    args = parser.parse_args(["--sched", "autowu-cos", "--autowu-max-overshoot", "1.5", "--lr", "0.1"])
    kw = scheduler_kwargs(args)
    assert (kw["max_overshoot"], kw["test_every"]) == (1.5, None)
    args = parser.parse_args(["--sched", "autowu-const-cos", "--autowu-test-every", "4", "--lr", "0.1"])
    kw = scheduler_kwargs(args)
    assert (kw["max_overshoot"], kw["test_every"]) == (None, 4)
    assert AutoWU(make_opt(), 10, 20, **kw).test_every == 4


def test_benchmark_amortises_the_test_over_test_every_steps():
    import importlib.util

    from conftest import ROOT
    spec = importlib.util.spec_from_file_location("bench_throughput", ROOT / "scripts" / "bench_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = bench.get_args_parser().parse_args(["--sched", "autowu-cos", "--epochs", "8", "--autowu-test-every", "3",
                                               "--lr", "0.1"])
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cost = bench.scheduler_cost(args, opt, model, steps_per_epoch=12, device=torch.device("cpu"))
    assert cost["test_every"] == 3 and cost["tests"] == 3 * 12 // 3  # 3 epochs of 12 steps, a test every 3
    assert cost["amortized_us"] == pytest.approx(cost["step_us"] + (1e3 * cost["test_step_ms"] - cost["step_us"]) / 3)
    assert 1e3 * cost["test_step_ms"] > cost["step_us"]  # the test steps carry the GP test


def test_cadence_study_reads_every_patience_off_one_pass_sequence(monkeypatch):
    """experiments/cadence.py runs each curve once with a patience that never completes; the switch it then
    reads off for patience p must be AutoWU's own with that patience."""
    from experiments import cadence as study
    x = np.arange(64) / 64
    loss = (x - 0.6) ** 2 * 8 + 0.05 * np.random.default_rng(0).standard_normal(64)
    curve = study.Curve("u", "u", "synthetic", loss, steps_per_epoch=8, warmup_steps=64, t_min=0.6 * 64)
    seq = study.pass_sequence(curve, test_every=2, confidence=0.95, seed=0)
    assert [step for step, _, _ in seq["tests"]] == list(range(2, 65, 2))[:len(seq["tests"])]
    switches = set()
    for patience in (1, 2, 3, 5):
        sched = study.build(curve, 2, patience, 0.95, 0)
        study.feed(curve, sched)
        direct = {k: sched.switch[k] for k in ("step", "t_star", "reason")}
        assert study.switch_for(seq, patience) == direct
        switches.add(direct["step"])
    assert len(switches) > 1  # the patience really changes where it switches


def test_imported_recording_keeps_its_settings_and_only_the_warmup(monkeypatch, tmp_path):
    """A recorded warmup enters the study with the run's full settings beside it (a resumed recording's env.json
    holds only the resume's command line) and only its warmup steps; a curve shorter than two epochs is skipped."""
    import json

    import yaml

    from experiments import cadence as study
    settings = {"batch-size": 128, "train-subset": 2048, "epochs": 9, "autowu-rho-w": 0.888899, "opt": "lamb",
                "model": "fmnist_cnn", "dataset": "fashion_mnist", "seed": 0, "output": "/home/me/runs/rec"}
    for name, steps in (("rec", 144), ("short", 20)):
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        (run / "args.yaml").write_text(yaml.safe_dump(settings))
        (run / "env.json").write_text(json.dumps({"argv": ["train.py", "--config", "args.yaml"]}))
        (run / "steps.csv").write_text("step,lr,loss\n" + "".join(f"{t},{1e-5 * 1.09 ** t},{2.3 - t / 100}\n"
                                                                   for t in range(steps)))
    (tmp_path / "runs" / "rec" / "results.json").write_text("{}")
    out = tmp_path / "warmups"
    study.import_recorded(str(tmp_path / "runs"), str(out))
    meta = json.loads((out / "rec.json").read_text())
    assert meta["finished"] and meta["steps_per_epoch"] == 16 and meta["warmup_steps"] == 128
    assert meta["recorded_steps"] == 128 and len((out / "rec.csv").read_text().splitlines()) == 129
    # the recording machine's folder is not kept: the settings name the output the recorded command names
    assert yaml.safe_load((out / "rec.args.yaml").read_text()) == settings | {"output": "runs/cadence_record/rec"}
    assert meta["command"].startswith("python train.py --config ") and meta["command"].split()[3].endswith(
        "rec.args.yaml") and meta["command"].split()[-2:] == ["--output", "runs/cadence_record/rec"]
    assert not (out / "short.csv").exists()
