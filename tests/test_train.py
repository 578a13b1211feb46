"""End-to-end tiny runs of train.py (CPU, synthetic data): every schedule with every optimizer, smoke mode,
divergence, AMP; assertions on what a run writes (results.json, steps.csv LR curve, events, checkpoint)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import TINY, decisions, read_jsonl, read_steps, run_inprocess

import autowu

SCHEDULES = ["baseline", "const-cosine", "constant", "autowu-cos", "autowu-const-cos"]
LR_BASE = {"adamp": 1e-3, "lamb": 1e-2, "sgd": 0.1}  # Section 3 / Appendix B (SGD: our comparison value)
RESULT_FIELDS = {"status", "config", "final_top1", "final_top5", "best_top1", "best_top5", "best_epoch", "switch",
                 "wall_time_s", "epochs", "steps", "images_per_s", "hardware"}
STEPS_PER_EPOCH, EPOCHS = 128 // 32, 3  # TINY: 128 images, global batch 32
TOTAL = STEPS_PER_EPOCH * EPOCHS


def check_lr_curve(sched: str, lrs: list[float], peak: float, run) -> None:
    if sched == "baseline":  # --warmup-epochs 1: linear from 0 over 4 steps, then cosine to 0 at step 12
        W = STEPS_PER_EPOCH
        assert lrs[:W] == pytest.approx([peak * t / W for t in range(W)])
        assert lrs[W:] == pytest.approx([peak * 0.5 * (1 + math.cos(math.pi * (t - W) / (TOTAL - W)))
                                         for t in range(W, TOTAL)])
    elif sched == "constant":  # the peak at every step (Schedule-Free's: its warmup is inside the optimizer)
        assert lrs == pytest.approx([peak] * TOTAL)
    elif sched == "const-cosine":  # constant, then cosine from step 10 to 0 at step 12 (last round(0.2 * 12) steps)
        assert lrs[:TOTAL - 1] == pytest.approx([peak] * (TOTAL - 1))
        assert lrs[TOTAL - 1] == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi / 2)))
    else:  # AutoWU: Eq. 1 from eta_min, ratio gamma per step, until the switch; never increasing afterwards
        switch = [e for e in decisions(run) if e["type"] == "switch"]
        assert len(switch) == 1, "a 3-epoch run with rho_w 0.5 must switch by step 6 at the latest"
        t_switch = switch[0]["step"]
        gamma = (1.0 / 1e-5) ** (1.0 / math.floor(0.5 * TOTAL))
        assert lrs[0] == pytest.approx(1e-5)
        assert [b / a for a, b in zip(lrs[:t_switch - 1], lrs[1:t_switch])] == pytest.approx([gamma] * (t_switch - 1))
        assert lrs[t_switch] == pytest.approx(switch[0]["lr"])  # decay starts at eta_{t*}
        assert all(b <= a for a, b in zip(lrs[t_switch:], lrs[t_switch + 1:]))


@pytest.mark.parametrize("opt", ["adamp", "lamb", "sgd"])
@pytest.mark.parametrize("sched", SCHEDULES)
def test_every_schedule_with_every_optimizer(tmp_path, sched, opt):
    run = tmp_path / "run"
    assert run_inprocess([*TINY, "--sched", sched, "--opt", opt, "--warmup-epochs", "1", "--output", str(run)]) == 0
    res = json.loads((run / "results.json").read_text())
    assert RESULT_FIELDS <= set(res)
    assert res["status"] == "finished" and res["epochs"] == EPOCHS and res["steps"] == TOTAL
    assert res["config"]["sched"] == sched and res["config"]["opt"] == opt
    assert 0 <= res["final_top1"] <= res["final_top5"] <= 100 and res["best_top1"] >= res["final_top1"]
    steps = read_steps(run)
    assert [r["step"] for r in steps] == list(range(TOTAL))
    assert [r["epoch"] for r in steps] == [t // STEPS_PER_EPOCH for t in range(TOTAL)]
    peak = LR_BASE[opt] * math.sqrt(32 / 256)
    check_lr_curve(sched, [r["lr"] for r in steps], peak, run)
    if sched.startswith("autowu"):
        assert res["switch"] == [e for e in decisions(run) if e["type"] == "switch"][0]
    else:
        assert res["switch"] is None
    epochs = read_jsonl(run / "epochs.jsonl")
    assert [e["epoch"] for e in epochs] == list(range(EPOCHS)) and all(e["top1"] is not None for e in epochs)
    ckpt = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == EPOCHS and ckpt["step"] == TOTAL and ckpt["position"]["sample"] == 0
    assert (run / "tb").is_dir() and (run / "args.yaml").exists() and (run / "env.json").exists()


def test_step_loss_is_the_mean_over_micro_batches(tmp_path):
    """Accumulation must not change what a step is: the same global batch in 1 or 4 micro-batches gives the same
    number of optimizer steps, the same LRs, and a step loss that is the micro-batch mean (not their sum)."""
    a, b = tmp_path / "a", tmp_path / "b"
    common = [*TINY, "--epochs", "1", "--sched", "const-cosine", "--lr", "1e-3"]
    assert run_inprocess([*common, "--micro-batch", "32", "--output", str(a)]) == 0
    assert run_inprocess([*common, "--micro-batch", "8", "--output", str(b)]) == 0
    sa, sb = read_steps(a), read_steps(b)
    assert len(sa) == len(sb) == STEPS_PER_EPOCH
    assert [r["lr"] for r in sa] == [r["lr"] for r in sb]
    # step 0 sees the same weights and images; BatchNorm normalises per micro-batch, hence the tolerance
    assert sb[0]["loss"] == pytest.approx(sa[0]["loss"], rel=0.05)


def test_smoke_mode_uses_config_resolution_and_writes_little(tmp_path):
    cfg = tmp_path / "fmnist.yaml"  # the data directory does not exist: smoke needs none
    cfg.write_text("dataset: fashion_mnist\ndata-dir: /nonexistent\nmodel: fmnist_cnn\nbatch-size: 8192\n"
                   "micro-batch: 256\nepochs: 200\nopt: adamp\nsched: autowu-cos\namp: bf16\n")
    run = tmp_path / "smoke"
    assert run_inprocess(["-c", str(cfg), "--smoke", "2", "--output", str(run)]) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["status"] == "finished" and res["steps"] == 2
    assert res["config"]["dataset"] == "synthetic" and (res["config"]["img_size"], res["config"]["in_chans"]) == (28, 1)
    assert res["config"]["lr"] == pytest.approx(1e-3 * math.sqrt(8192 / 256))  # the config's real batch
    assert not list(run.glob("*.pt"))
    assert [r["lr"] for r in read_steps(run)][0] == pytest.approx(1e-5)


def test_divergence_stops_with_clear_record(tmp_path, capsys):
    run = tmp_path / "run"
    code = run_inprocess([*TINY, "--opt", "sgd", "--sched", "const-cosine", "--lr", "1e30", "--max-nonfinite", "2",
                          "--log-interval", "1", "--epochs", "2", "--output", str(run)])
    assert code == 0
    res = json.loads((run / "results.json").read_text())
    assert res["status"] == "diverged" and res["steps"] < 2 * STEPS_PER_EPOCH
    events = read_jsonl(run / "events.jsonl")
    assert any(e["type"] == "nonfinite" for e in events)
    assert events[-1]["type"] == "diverged" and events[-1]["consecutive"] >= 2
    assert not all(math.isfinite(r["loss"]) for r in read_steps(run))
    assert "diverged" in capsys.readouterr().out + (run / "train.log").read_text()
    if (run / "last.pt").exists():  # a checkpoint is only ever written with finite weights
        ckpt = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
        assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_bf16_channels_last_and_no_decay_groups(tmp_path):
    """AdamP on channels_last RGB conv weights (non-contiguous) under bf16 autocast, biases/norms without decay."""
    run = tmp_path / "run"
    assert run_inprocess([*TINY, "--in-chans", "3", "--amp", "bf16", "--channels-last", "--wd-exclude-bias-norm", "--epochs", "1",
                          "--sched", "autowu-cos", "--output", str(run)]) == 0
    ckpt = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    groups = ckpt["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert all(math.isfinite(r["loss"]) for r in read_steps(run))
    from framework.engine import cpu_bf16_native  # the record says what computed its bf16 convolutions
    env = json.loads((run / "env.json").read_text())
    assert env["bf16_kernels"] == ("native" if cpu_bf16_native() else "emulated")
    hardware = json.loads((run / "results.json").read_text())["hardware"]  # the pages' compute line
    assert hardware.endswith(", bf16 emulated") != cpu_bf16_native()


@pytest.mark.parametrize("opt", ["sgd", "adamp"])
def test_autolr_decisions_set_the_logged_lr(tmp_path, opt):
    """AutoLR (checks every 2 steps on 2-micro-batch superbatches): each decision in events.jsonl is the LR the next
    step used, as steps.csv shows; between decisions the LR stays put."""
    run = tmp_path / "run"
    assert run_inprocess([*TINY, "--opt", opt, "--sched", "autolr", "--output", str(run), "--sched-kwargs",
                          "{explore_epochs: 1, superbatch: 2, recompute_window: 2}"]) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["status"] == "finished" and res["steps"] == TOTAL
    events = [e for e in read_jsonl(run / "events.jsonl") if e["type"] == "autolr"]
    assert [e["step"] for e in events] == list(range(2, TOTAL, 2))  # no check after the last step
    lrs = [r["lr"] for r in read_steps(run)]
    assert lrs[0] == pytest.approx(LR_BASE[opt] * math.sqrt(32 / 256))  # the seed LR
    for e in events:
        if e["step"] < TOTAL:
            assert lrs[e["step"]] == pytest.approx(e["lr_after"]) == lrs[e["step"] + 1]
    assert any(e["lr_after"] != e["lr_before"] for e in events)
    cost = res["autolr"]  # its extra forwards: per check, the evaluations x the superbatch's micro-batches
    assert cost["extra_forward_passes"] == sum(e["extra_forward_passes"] for e in events) > 0
    assert cost["overhead"] == pytest.approx(cost["extra_forward_passes"] / (TOTAL * 2))  # 2 micro-batches per step


def test_schedules_tested_here_are_all_the_library_offers():
    """A schedule added to autowu must be added to these end-to-end runs too (AutoLR's and the range test's are in
    test_every_optimizer_runs_autolr above and tests/test_auto_methods.py)."""
    assert set(autowu.SCHEDULES) - {"autolr", "range-test-cos"} == set(SCHEDULES)
    assert {"autolr", "range-test-cos"} <= set(autowu.SCHEDULES)
