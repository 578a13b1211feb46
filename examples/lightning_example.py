"""AutoWU with PyTorch Lightning: a per-step, loss-driven scheduler, checkpointed and resumed by Lightning.

    python examples/lightning_example.py --output runs/lightning                # CPU, synthetic data, ~10 s
    python examples/lightning_example.py --output runs/lightning --resume last  # continue from last.ckpt

The recipe is ``LitClassifier`` below:

    def training_step(self, batch, batch_idx):
        loss = ...
        self._micro_losses.append(loss.detach())      # every micro-batch of the optimizer step
        return loss

    def lr_scheduler_step(self, scheduler, metric):   # Lightning calls it after each optimizer step
        scheduler.step(torch.stack(self._micro_losses).mean())
        self._micro_losses.clear()

    def configure_optimizers(self):
        scheduler = AutoWU(optimizer, steps_per_epoch, total_epochs, ...)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

Why: AutoWU needs, once per optimizer step, the loss of that step. With ``accumulate_grad_batches=k`` an optimizer
step is k micro-batches and its loss is their mean; Lightning's own way to hand a scheduler a value
(``reduce_on_plateau: True`` with ``monitor``) passes the metric logged last, the last micro-batch's loss. The
override also runs before ``on_train_batch_end``, so checkpoints written there (``ModelCheckpoint(
every_n_train_steps=...)``) hold the scheduler at the optimizer's step. ``interval: "step"``: AutoWU changes the LR
after every optimizer step; ``steps_per_epoch`` counts optimizer steps (``ceil(batches / k)``: Lightning also steps
on an epoch's last, incomplete accumulation).
AutoWU is a ``torch.optim.lr_scheduler.LRScheduler`` with ``state_dict``/``load_state_dict``, so Lightning stores
its state in every checkpoint (``checkpoint["lr_schedulers"]``): a resumed run continues the same LR trajectory, and
a warmup decision already taken is not taken again. From a mid-epoch checkpoint too, because the loader below is
resumable (``ResumableLoader``: Lightning restarts the epoch of a plain DataLoader, and AutoWU would see other losses). Give the scheduler the same ``total_epochs`` on resume (AutoWU
refuses a state made for another schedule).
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from autowu import AutoWU  # noqa: E402
from plain_loop import build_model, make_data, param_groups  # noqa: E402  (examples/ is the script's directory)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", default="runs/lightning", help="CSV logs and checkpoints go here")
    p.add_argument("--epochs", type=int, default=24)
    p.add_argument("--batches-per-epoch", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=64, help="examples per micro-batch")
    p.add_argument("--accum", type=int, default=1, help="Lightning's accumulate_grad_batches")
    p.add_argument("--rho-w", type=float, default=0.5, help="AutoWU's longest warmup, as a fraction of the run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", default=None, help="'last' (OUTPUT/checkpoints/last.ckpt) or a .ckpt path")
    p.add_argument("--progress-bar", action="store_true")
    return p


class LitClassifier(pl.LightningModule):
    def __init__(self, steps_per_epoch: int, total_epochs: int, rho_w: float = 0.5, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.model = build_model()
        self._micro_losses: list[torch.Tensor] = []  # the losses of the current optimizer step's micro-batches

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.model(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        self._micro_losses.append(loss.detach())  # no host sync: AutoWU reads losses at epoch ends only
        return loss

    def lr_scheduler_step(self, scheduler, metric):
        """After each optimizer step: AutoWU gets the mean loss of that step's micro-batches."""
        scheduler.step(torch.stack(self._micro_losses).mean())
        self._micro_losses.clear()

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(param_groups(self.model), lr=1.0)  # group 0's LR is set by AutoWU
        scheduler = AutoWU(optimizer, self.hparams.steps_per_epoch, self.hparams.total_epochs,
                           immediate_cooldown=True, cooldown_type="cosine",
                           rho_w=self.hparams.rho_w, seed=self.hparams.seed)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class AutoWUReport(pl.Callback):
    """Records the LR of every optimizer step and prints AutoWU's phase each epoch and its switch."""

    def __init__(self) -> None:
        self.lr: dict[int, float] = {}  # global step (0-based optimizer step) -> LR that step used

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.lr[trainer.global_step] = optimizer.param_groups[0]["lr"]

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        sched = trainer.lr_scheduler_configs[0].scheduler
        loss = trainer.callback_metrics.get("train_loss")
        print(f"epoch {trainer.current_epoch:2d}  {sched.phase:6s}  lr {sched.get_last_lr()[0]:.3g}  "
              f"loss {float(loss) if loss is not None else float('nan'):.4f}")

    def on_train_end(self, trainer, pl_module) -> None:
        switch = trainer.lr_scheduler_configs[0].scheduler.switch
        if switch is not None:
            print(f"AutoWU switched at step {switch['step']} (epoch {switch['epoch']}, reason {switch['reason']}): "
                  f"decay from lr {switch['lr']:.4g}")


class EpochShuffle(torch.utils.data.Sampler):
    """A new order each epoch, a function of (seed, epoch) only (like DistributedSampler; Lightning calls
    ``set_epoch`` at each epoch's start, also on a resumed fit); ``start`` skips the first indices of the order."""

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed, self.epoch, self.start = n, seed, 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n - self.start

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        return iter(order[self.start:].tolist())


class ResumableLoader:
    """A DataLoader that Lightning can resume mid-epoch: it has ``state_dict``/``load_state_dict`` (Lightning's
    "stateful" loader protocol; its state goes into every checkpoint's loop state), and each epoch's order is a
    function of (seed, epoch), so a resumed fit skips the batches that epoch already trained and then sees the same
    batches as an uninterrupted one. Without it Lightning restarts a mid-epoch checkpoint's epoch from its first
    batch (and warns): AutoWU continues its step count, but the losses it sees are not the uninterrupted run's, nor
    is its LR trajectory. torchdata's ``StatefulDataLoader`` is the general version of this class."""

    def __init__(self, dataset, batch_size: int, seed: int = 0):
        self.batch_size = batch_size
        self.sampler = EpochShuffle(len(dataset), seed)
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler)
        self.served = 0  # batches of the current epoch handed out
        self._resume_at = 0

    def __len__(self) -> int:
        return math.ceil(self.sampler.n / self.batch_size)

    def __iter__(self):
        self.served, self._resume_at = self._resume_at, 0
        self.sampler.start = self.served * self.batch_size
        for batch in self.loader:
            self.served += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self.sampler.epoch, "served": self.served}

    def load_state_dict(self, state: dict) -> None:
        """Called by Lightning before the resumed epoch's first ``iter``."""
        self._resume_at = state["served"]


def make_loader(args: argparse.Namespace) -> ResumableLoader:
    x, y = make_data(args.batches_per_epoch * args.batch_size, seed=args.seed)
    return ResumableLoader(TensorDataset(x, y), args.batch_size, seed=args.seed)


def run(args: argparse.Namespace, callbacks: tuple = (), module_cls: type = LitClassifier
        ) -> tuple[pl.Trainer, AutoWUReport]:
    """Train (or resume) ``module_cls`` and return the trainer and the LR record."""
    pl.seed_everything(args.seed, verbose=False)
    loader = make_loader(args)
    steps_per_epoch = math.ceil(len(loader) / args.accum)  # optimizer steps (Lightning steps on the last batch too)
    module = module_cls(steps_per_epoch, args.epochs, rho_w=args.rho_w, seed=args.seed)
    report = AutoWUReport()
    ckpt_dir = os.path.join(args.output, "checkpoints")
    trainer = pl.Trainer(
        max_epochs=args.epochs, accelerator="cpu", devices=1, accumulate_grad_batches=args.accum,
        logger=CSVLogger(args.output, name="logs"), log_every_n_steps=1,  # logs/version_N/metrics.csv
        callbacks=[LearningRateMonitor(logging_interval="step"),
                   ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0), report, *callbacks],
        enable_progress_bar=args.progress_bar, enable_model_summary=False, deterministic=True)
    ckpt = os.path.join(ckpt_dir, "last.ckpt") if args.resume == "last" else args.resume
    trainer.fit(module, loader, ckpt_path=ckpt)
    return trainer, report


def main(argv: list[str] | None = None) -> pl.Trainer:
    args = get_args_parser().parse_args(argv)
    trainer, _ = run(args)
    print(f"logs: {trainer.logger.log_dir}/metrics.csv (train_loss, lr-AdamW per step); "
          f"checkpoint: {args.output}/checkpoints/last.ckpt")
    return trainer


if __name__ == "__main__":
    main()
