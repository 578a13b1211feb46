"""The "AutoWU in your own loop" examples run and behave as documented: a plain loop with gradient accumulation, a
2-process DDP loop (torchrun, gloo), PyTorch Lightning (recipe, checkpoint, resume) and timm's optimizer groups."""
from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import timm
import torch
from timm.optim import create_optimizer_v2

from autowu import AutoWU

from conftest import ROOT, run_cmd

EXAMPLES = ROOT / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))


def warmup_part(lrs: list[float], switch: dict) -> list[float]:
    return lrs[:switch["step"]]


def assert_autowu_shape(lrs: list[float], switch: dict, total_steps: int) -> None:
    """Exponential growth until the switch, then a decay that starts at the switch LR and ends near 0."""
    assert switch is not None and switch["reason"] == "gp-test", switch
    warm = warmup_part(lrs, switch)
    ratios = [b / a for a, b in zip(warm, warm[1:])]
    assert min(ratios) > 1.0 and max(ratios) / min(ratios) < 1 + 1e-6  # Eq. 1: a constant factor gamma per step
    decay = lrs[switch["step"]:]
    assert len(lrs) == total_steps
    assert decay[0] == pytest.approx(switch["lr"], rel=1e-3)  # (the official cosine takes its first step there)
    assert switch["lr"] < warm[-1]  # Eq. 5: the decay starts from the LR of the estimated minimum, in the past
    assert all(b <= a for a, b in zip(decay, decay[1:])) and decay[-1] < 1e-3 * decay[0]


# -- plain loop --------------------------------------------------------------------------------------------------

def test_plain_loop_script_switches_and_decays(tmp_path):
    out = tmp_path / "plain.json"
    proc = run_cmd([sys.executable, str(EXAMPLES / "plain_loop.py"), "--json", str(out)], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "AutoWU switched at step" in proc.stdout
    res = json.loads(out.read_text())
    assert res["optimizer_steps"] == res["scheduler_steps"] == 16 * 12
    assert_autowu_shape(res["lr"], res["switch"], 16 * 12)
    assert sum(res["loss"][-12:]) < 0.5 * sum(res["loss"][:12])  # it learned
    assert res["accuracy"] > 0.8


def test_plain_loop_accumulation_steps_the_scheduler_once_per_optimizer_step():
    plain_loop = importlib.import_module("plain_loop")
    one = plain_loop.main(["--epochs", "16", "--steps-per-epoch", "12"])
    four = plain_loop.main(["--epochs", "16", "--steps-per-epoch", "12", "--accum", "4"])
    # 4 micro-batches per optimizer step: still 192 scheduler steps, and the same batch loss -> the same decisions
    assert four["scheduler_steps"] == four["optimizer_steps"] == 192
    assert four["switch"]["step"] == one["switch"]["step"]
    assert four["lr"] == pytest.approx(one["lr"], rel=1e-5)
    # the two parameter groups (decay / no decay) share the schedule
    assert four["group_lrs"][0] == pytest.approx(four["group_lrs"][1])


# -- DDP ---------------------------------------------------------------------------------------------------------

def test_ddp_loop_two_ranks_with_accumulation_agree(tmp_path):
    out = tmp_path / "ddp.json"
    proc = run_cmd([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    str(EXAMPLES / "ddp_loop.py"), "--accum", "2", "--json", str(out)], timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    r0, r1 = (json.loads(Path(f"{out}.rank{r}").read_text()) for r in (0, 1))
    assert r0["world_size"] == 2
    assert r0["loss"] != r1["loss"]  # each rank saw its own half of every batch ...
    assert r0["lr"] == r1["lr"] and r0["switch"] == r1["switch"]  # ... yet both follow one schedule
    assert r0["param_checksum"] == r1["param_checksum"]  # and DDP kept the weights identical
    assert r0["optimizer_steps"] == r0["scheduler_steps"] == 16 * 12  # not once per micro-batch
    assert_autowu_shape(r0["lr"], r0["switch"], 16 * 12)
    # AutoWU averages the ranks' losses: the decision is the one a single process makes on the whole batch
    single = importlib.import_module("plain_loop").main([])
    assert r0["switch"]["step"] == single["switch"]["step"]
    assert r0["switch"]["lr"] == pytest.approx(single["switch"]["lr"], rel=1e-4)


# -- PyTorch Lightning -------------------------------------------------------------------------------------------

class StopAfter(pl.Callback):
    """Ends fit() after ``epochs`` epochs, as a preempted job would."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


@pytest.fixture(scope="module")
def lightning():
    return importlib.import_module("lightning_example")


@pytest.fixture(scope="module")
def lightning_full(lightning, tmp_path_factory):
    """One uninterrupted run of the example (24 epochs x 12 steps)."""
    out = tmp_path_factory.mktemp("lightning_full")
    mid = pl.callbacks.ModelCheckpoint(dirpath=out / "mid", every_n_train_steps=MID_STEP, save_top_k=-1)
    trainer, report = lightning.run(lightning.get_args_parser().parse_args(["--output", str(out)]), callbacks=(mid,))
    return trainer, report


MID_STEP = 9 * 12 + 5  # a checkpoint 5 batches into epoch 9 (of 24 x 12), in AutoWU's warmup


def test_lightning_recipe_steps_autowu_from_lr_scheduler_step(lightning, lightning_full):
    trainer, _ = lightning_full
    config = trainer.lr_scheduler_configs[0]
    assert isinstance(config.scheduler, torch.optim.lr_scheduler.LRScheduler)
    assert config.interval == "step" and not config.reduce_on_plateau
    assert "lr_scheduler_step" in vars(lightning.LitClassifier)  # the hook feeds the optimizer step's loss


def test_lightning_warmup_grows_then_switches(lightning_full):
    trainer, report = lightning_full
    sched = trainer.lr_scheduler_configs[0].scheduler
    lrs = [report.lr[k] for k in sorted(report.lr)]
    assert sorted(report.lr) == list(range(24 * 12))
    assert sched.last_epoch == trainer.global_step == 24 * 12  # one scheduler step per optimizer step
    assert_autowu_shape(lrs, sched.switch, 24 * 12)
    # the monitored metric reached AutoWU: it recorded one finite loss per warmup step
    assert len(sched.losses) == sched.switch["step"] and all(math.isfinite(v) for v in sched.losses)


def test_lightning_checkpoint_holds_the_scheduler_and_resume_continues_the_trajectory(lightning, lightning_full,
                                                                                       tmp_path):
    _, full = lightning_full
    args = lightning.get_args_parser().parse_args(["--output", str(tmp_path)])
    _, first = lightning.run(args, callbacks=(StopAfter(9),))  # preempted after 9 of 24 epochs, in the warmup
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    state = ckpt["lr_schedulers"][0]
    assert ckpt["global_step"] == state["step"] == 9 * 12
    assert state["phase"] == "warmup" and len(state["losses"]) == 9 * 12
    assert [h["epoch"] for h in state["history"] if h["type"] == "test"] == list(range(9))

    resume_args = lightning.get_args_parser().parse_args(["--output", str(tmp_path), "--resume", "last"])
    trainer, second = lightning.run(resume_args)
    assert min(second.lr) == 9 * 12  # it went on from the checkpoint, not from step 0
    assert {**first.lr, **second.lr} == full.lr  # the same LR at every step, the switch included
    assert trainer.lr_scheduler_configs[0].scheduler.switch == \
        lightning_full[0].lr_scheduler_configs[0].scheduler.switch


def test_lightning_resume_from_a_mid_epoch_checkpoint_continues_the_same_trajectory(lightning, lightning_full,
                                                                                     tmp_path):
    """The example's loader is resumable (state_dict/load_state_dict): Lightning stores where the epoch was, the
    resumed fit skips the batches it trained and sees the uninterrupted run's batches after, so AutoWU's losses,
    GP tests, switch and every LR are the same."""
    trainer_full, full = lightning_full
    mid_dir = next(c.dirpath for c in trainer_full.checkpoint_callbacks if c._every_n_train_steps == MID_STEP)
    ckpt = next(Path(mid_dir).glob(f"*step={MID_STEP}*.ckpt"))
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 9, "served": 5}]
    args = lightning.get_args_parser().parse_args(["--output", str(tmp_path), "--resume", str(ckpt)])
    trainer, second = lightning.run(args)
    assert min(second.lr) == MID_STEP and max(second.lr) == 24 * 12 - 1
    assert {k: full.lr[k] for k in second.lr} == second.lr  # every LR after the resume, the switch included
    assert trainer.lr_scheduler_configs[0].scheduler.switch == trainer_full.lr_scheduler_configs[0].scheduler.switch


def test_lightning_mid_epoch_checkpoints_hold_the_scheduler_at_the_optimizers_step(lightning, tmp_path):
    """every_n_train_steps checkpoints are written in on_train_batch_end; the recipe has stepped AutoWU by then."""
    module = lightning.LitClassifier(steps_per_epoch=12, total_epochs=2)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[pl.callbacks.ModelCheckpoint(
                             dirpath=tmp_path, every_n_train_steps=5, save_top_k=-1)])
    args = lightning.get_args_parser().parse_args(["--output", str(tmp_path)])
    trainer.fit(module, lightning.make_loader(args))
    cks = [torch.load(f, map_location="cpu", weights_only=True) for f in sorted(tmp_path.glob("*.ckpt"))]
    steps = {ck["global_step"]: ck["lr_schedulers"][0]["step"] for ck in cks}
    assert sorted(steps) == [5, 10, 15, 20] and all(sched == opt for opt, sched in steps.items())


def test_lightning_accumulation_feeds_autowu_the_mean_loss_of_each_optimizer_step(lightning, tmp_path):
    micro = []

    class Recording(lightning.LitClassifier):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            micro.append(float(loss))
            return loss

    args = lightning.get_args_parser().parse_args(["--output", str(tmp_path), "--epochs", "6", "--accum", "3"])
    trainer, _ = lightning.run(args, module_cls=Recording)
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert sched.steps_per_epoch == 4  # 12 batches / 3
    assert sched.last_epoch == trainer.global_step == 6 * 4
    recorded = list(sched.losses)  # the losses AutoWU got in its completed warmup epochs
    means = [sum(micro[3 * i:3 * i + 3]) / 3 for i in range(len(recorded))]
    lasts = [micro[3 * i + 2] for i in range(len(recorded))]
    assert len(recorded) >= 4
    assert recorded == pytest.approx(means, rel=1e-6)
    assert recorded != pytest.approx(lasts, rel=1e-3)  # not the last micro-batch's loss (what the monitor holds)


# -- timm --------------------------------------------------------------------------------------------------------

def test_timm_optimizer_groups_keep_their_ratios():
    """The timm recipe: create_optimizer_v2's groups (no weight decay on biases/norms, layer-wise LR decay)."""
    torch.manual_seed(0)
    model = timm.create_model("test_vit", num_classes=10)
    optimizer = create_optimizer_v2(model, "adamw", lr=1.0, weight_decay=0.05, layer_decay=0.75)
    # timm keeps the layer-wise factor in each group's "lr_scale" (and one LR for all); AutoWU multiplies by it, as
    # timm's own schedulers do
    assert len({g["lr"] for g in optimizer.param_groups}) == 1
    wanted = [g["lr_scale"] / optimizer.param_groups[0]["lr_scale"] for g in optimizer.param_groups]
    decays = [g["weight_decay"] for g in optimizer.param_groups]
    assert len(set(round(r, 9) for r in wanted)) > 3 and set(decays) == {0.0, 0.05}

    scheduler = AutoWU(optimizer, steps_per_epoch=3, total_epochs=4, rho_w=0.5)
    x, y = torch.randn(8, 3, *model.default_cfg["input_size"][1:]), torch.randint(0, 10, (8,))
    seen = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step(loss)
        lrs = scheduler.get_last_lr()
        assert [lr / lrs[0] for lr in lrs] == pytest.approx(wanted, rel=1e-9)
        assert lrs[0] == pytest.approx(scheduler.lr_at(scheduler.num_steps) * optimizer.param_groups[0]["lr_scale"])
        assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(lrs, rel=1e-12)
        seen.append(lrs[0])
    assert all(b > a for a, b in zip(seen, seen[1:]))  # warming up
    assert [g["weight_decay"] for g in optimizer.param_groups] == decays


def test_lightning_without_the_hook_says_to_override_lr_scheduler_step(lightning, tmp_path):
    """Lightning's own lr_scheduler_step calls scheduler.step() without the loss: the error names the fix."""
    class NoHook(lightning.LitClassifier):
        lr_scheduler_step = pl.LightningModule.lr_scheduler_step

    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    args = lightning.get_args_parser().parse_args(["--output", str(tmp_path)])
    with pytest.raises(ValueError, match=r"override LightningModule\.lr_scheduler_step"):
        trainer.fit(NoHook(steps_per_epoch=12, total_epochs=1), lightning.make_loader(args))
