"""scripts/bench_throughput.py on a tiny config: well-formed figures (never timed assertions), and the training loop's
host reads: our engine reads the device once per log interval, never per step; timm's loop reads once per batch."""
from __future__ import annotations

import importlib.util
import math
import re
import statistics

import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location("bench_throughput", ROOT / "scripts" / "bench_throughput.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

# fmnist_cnn on 28x28 synthetic data; global batch 8 in micro-batches of 4 (2 accumulation steps)
TINY = ["--dataset", "synthetic", "--model", "fmnist_cnn", "--img-size", "28", "--in-chans", "1", "--num-classes",
        "10", "--batch-size", "8", "--micro-batch", "4", "--device", "cpu", "--sched", "autowu-cos", "--epochs", "4",
        "--synthetic-train-size", "64"]
NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


def test_benchmark_prints_steps_images_ratio_and_scheduler_share(capsys):
    result = bench.main(TINY + ["--steps", "2", "--windows", "2", "--warmup-steps", "3", "--log-interval", "5"])
    out = capsys.readouterr().out
    lines = {}
    for side in ("ours", "timm"):
        m = re.search(rf"^{side}\s+{NUMBER} steps/s\s+{NUMBER} images/s\s+{NUMBER} ms/step", out, re.M)
        assert m, f"no figures line for {side} in:\n{out}"
        lines[side] = [float(v) for v in m.groups()]
        steps_per_s, images_per_s, ms = lines[side]
        assert steps_per_s > 0 and math.isfinite(steps_per_s)
        # the printed figures are the unrounded results at their printed precision (3, 1 and 2 decimals)
        exact = result[side]
        assert steps_per_s == pytest.approx(exact["steps_per_s"], abs=5e-4 + 1e-9)
        assert images_per_s == pytest.approx(8 * exact["steps_per_s"], abs=5e-2 + 1e-9)  # steps x global batch
        assert ms == pytest.approx(1e3 / exact["steps_per_s"], abs=5e-3 + 1e-6)
        assert len(exact["windows_steps_per_s"]) == 2
    m = re.search(rf"ratio ours/timm: {NUMBER} \(medians\); {NUMBER} \(median of the rounds' ratios\); "
                  rf"{NUMBER} \(best windows\)", out)
    assert m, out
    assert float(m.group(1)) == pytest.approx(result["ours"]["steps_per_s"] / result["timm"]["steps_per_s"],
                                              abs=5e-4 + 1e-9)
    rounds = [o / t for o, t in zip(result["ours"]["windows_steps_per_s"], result["timm"]["windows_steps_per_s"])]
    assert float(m.group(2)) == pytest.approx(statistics.median(rounds), abs=5e-4 + 1e-9)
    best = {side: max(result[side]["windows_steps_per_s"]) for side in ("ours", "timm")}
    assert float(m.group(3)) == pytest.approx(best["ours"] / best["timm"], abs=5e-4 + 1e-9)
    share = re.search(rf"AutoWU: step\(loss\) {NUMBER} us; gather \+ GP test {NUMBER} ms every 8 steps \((\d+) "
                      rf"tests over (\d+) epochs of (\d+) steps\); amortized {NUMBER} us/step = {NUMBER}% of our", out)
    assert share, out
    assert int(share.group(3)) >= 1  # the GP test really ran at an epoch end
    assert int(share.group(5)) == 64 // 8  # default epoch: synthetic training set / global batch
    assert float(share.group(7)) == pytest.approx(result["scheduler"]["share_percent"], rel=1e-2, abs=1e-4)
    cost = result["scheduler"]  # per step: step(loss), plus the epoch-end extra spread over the epoch's steps
    assert cost["amortized_us"] == pytest.approx(cost["step_us"] + (1e3 * cost["test_step_ms"] - cost["step_us"]) / 8)
    assert cost["share_percent"] == pytest.approx(100 * cost["amortized_us"] * 1e-3 / result["ours"]["step_ms"])
    assert "host reads" in out and result["host_reads"]["ours"]["steps"] == 2
    ops = re.search(r"ATen ops per optimizer step \(~kernel launches on a GPU\): ours loop (\d+), inside "
                    r"optimizer.step (\d+); timm loop (\d+), inside optimizer.step (\d+)", out)
    assert ops, out
    assert all(int(v) > 0 for v in ops.groups())  # forward, backward and the AdamP update all issue operators


def test_no_timm_times_only_our_loop(capsys):
    result = bench.main(TINY + ["--steps", "1", "--windows", "1", "--warmup-steps", "1", "--no-timm"])
    out = capsys.readouterr().out
    assert "timm" not in result and "ratio" not in result and "ratio ours/timm" not in out
    assert re.search(rf"^ours\s+{NUMBER} steps/s", out, re.M)


def test_bad_benchmark_settings_are_clear_errors():
    with pytest.raises(bench.ConfigError, match="--windows"):
        bench.main(TINY + ["--windows", "0"])
    with pytest.raises(bench.ConfigError, match="no even micro-batch <= 3 divides the 9 images"):
        bench.main(TINY + ["--batch-size", "9", "--micro-batch", "3", "--mixup", "0.8"])
    with pytest.raises(bench.ConfigError, match="fp16 needs a GPU"):
        bench.main(TINY + ["--amp", "fp16"])


def test_cpu_clock_reports_steps_per_cpu_second(capsys):
    result = bench.main(TINY + ["--steps", "1", "--windows", "1", "--warmup-steps", "1", "--no-timm", "--clock", "cpu"])
    out = capsys.readouterr().out
    assert "clock: CPU seconds of this process" in out
    assert result["ours"]["steps_per_s"] > 0


@pytest.mark.parametrize("opt", ["sgd", "adamp"])
def test_engine_reads_the_device_once_per_log_interval_not_per_step(opt):
    """Through the real train_one_epoch (with AutoWU getting device tensors, 2 micro-batches per step): host reads
    outside optimizer.step equal the log flushes, whatever the number of steps."""
    args, info, built = bench.prepare(TINY + ["--opt", opt, "--log-interval", "4", "--steps-per-epoch", "1000"])
    ours = bench.Ours(args, info, **built)
    ours.run(1)  # lazy initialisation
    for steps, flushes in ((4, 1), (12, 3), (6, 2)):  # 6 steps: one flush at step 4, one at the end of the call
        with bench.count_host_reads(ours.optimizer) as counts:
            ours.run(steps)
        assert counts["loop"] == flushes, f"{steps} steps: {counts}"


def test_the_counter_sees_timms_per_batch_loss_item():
    """The counter is not blind: timm's single-process loop calls loss.item() after every micro-batch."""
    args, info, built = bench.prepare(TINY + ["--opt", "sgd"])
    ref = bench.Timm(args, info, **built)
    ref.run(1)
    with bench.count_host_reads(ref.optimizer) as counts:
        ref.run(3)
    assert counts["loop"] == 3 * built["accum"] == 6


@pytest.mark.parametrize("channels_last", [False, True])
def test_sync_free_adamp_matches_the_package_without_host_reads(channels_last):
    """On a GPU our AdamP decides its projection on the device (torch.where) instead of the adamp package's
    ``if cosine.max() < ...``, one host read per weight per step. Forced on here (CPU): the weights after several
    steps are bitwise those of the package's branchy code, and optimizer.step reads nothing back."""
    import copy

    import torch
    from torch import nn

    from framework.optim import _adamp_class

    torch.manual_seed(0)
    base = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 8, 3, bias=False),
                         nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    if channels_last:
        base = base.to(memory_format=torch.channels_last)
    x, y = torch.randn(16, 3, 12, 12), torch.randint(0, 10, (16,))
    params, reads = {}, {}
    for sync_free in (False, True):
        model = copy.deepcopy(base)
        opt = _adamp_class()(model.parameters(), lr=1e-2, weight_decay=0.1, delta=0.1, wd_ratio=0.1)
        opt.sync_free = sync_free
        with bench.count_host_reads(opt) as counts:
            for _ in range(6):
                nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
                opt.zero_grad()
        params[sync_free] = [p.detach().clone() for p in model.parameters()]
        reads[sync_free] = counts["optimizer"]
    assert all(torch.equal(a, b) for a, b in zip(params[False], params[True]))
    assert reads[False] >= 6 * 3 and reads[True] == 0  # the package: >= 1 read per multi-dim weight per step


@pytest.mark.parametrize("nesterov", [False, True])
def test_our_adamp_is_bitwise_the_adamp_package(nesterov):
    """framework.optim's AdamP (multi-tensor Adam part, reshape views) against adamp.AdamP itself: the same weights
    to the bit after steps with weight decay, a frozen parameter without gradient, and a parameter that joins late
    (so the parameters' step counts differ)."""
    import copy

    import torch
    from adamp import AdamP
    from torch import nn

    from framework.optim import _adamp_class

    torch.manual_seed(1)
    base = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 10 * 10, 5),
                         nn.Linear(5, 5))
    x, y = torch.randn(16, 3, 12, 12), torch.randint(0, 5, (16,))
    weights = []
    for cls in (AdamP, _adamp_class()):
        model = copy.deepcopy(base)
        groups = [{"params": list(model[:4].parameters()) + list(model[4].parameters())},
                  {"params": list(model[5].parameters()), "weight_decay": 0.0}]
        opt = cls(groups, lr=1e-2, weight_decay=0.1, delta=0.1, wd_ratio=0.1, nesterov=nesterov)
        for step in range(7):
            model[5].requires_grad_(step >= 3)  # no gradient for the last layer in the first 3 steps
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        weights.append([p.detach().clone() for p in model.parameters()])
        assert {opt.state[p]["step"] for p in model[5].parameters()} == {4}
    assert all(torch.equal(a, b) for a, b in zip(*weights))
