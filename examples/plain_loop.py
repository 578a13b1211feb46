"""AutoWU in a plain PyTorch training loop, with gradient accumulation.

    python examples/plain_loop.py                    # CPU, synthetic data, a few seconds
    python examples/plain_loop.py --accum 4          # each optimizer step = 4 micro-batches
    python examples/plain_loop.py --json out.json    # also write the per-step LR and loss

The lines to copy into your own loop are marked ``# <-- AutoWU``. The rules:
  * build the optimizer with any LR for group 0 (AutoWU sets it; other groups keep their ratio to group 0);
  * ``steps_per_epoch`` counts OPTIMIZER steps (batches / accumulation), since the GP test runs at each epoch end;
  * call ``scheduler.step(loss)`` once per optimizer step, after ``optimizer.step()``, with that step's loss
    (a 0-d tensor is fine: AutoWU keeps it on its device until the epoch ends, so the loop never waits for it).

The demo is a small classifier on a synthetic task; with the paper's defaults (warmup from 1e-5 towards 1.0 over half
of the run) the loss falls, then blows up as the LR grows too large, and AutoWU switches to the cosine decay a few
epochs after the minimum, from the LR where it estimates the minimum was (Eq. 5 of Kim et al., 2021).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # run from a plain checkout too
from autowu import AutoWU  # noqa: E402


def get_args_parser(description: str = __doc__.split("\n")[0], ranks: bool = False) -> argparse.ArgumentParser:
    """This example's flags; ``ranks``: as examples/ddp_loop.py reads them (global batch, micro-batches per rank)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--steps-per-epoch", type=int, default=12, help="optimizer steps per epoch")
    p.add_argument("--batch-size", type=int, default=64,
                   help="GLOBAL batch: examples per optimizer step" if ranks else
                   "examples per optimizer step (all micro-batches)")
    p.add_argument("--accum", type=int, default=1,
                   help=f"micro-batches{' per rank' if ranks else ''} per optimizer step")
    p.add_argument("--rho-w", type=float, default=0.6,
                   help="AutoWU's longest warmup, as a fraction of the run (0.6: the loss minimum of this toy "
                        "problem comes late)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="rank r writes its per-step LR/loss and switch to JSON.rankR"
                   if ranks else "write the per-step LR/loss and the switch here")
    return p


def make_data(n: int, dim: int = 32, classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A learnable synthetic task: labels from a fixed random teacher network, inputs Gaussian."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    teacher = torch.randn(dim, classes, generator=g)
    y = (torch.tanh(x) @ teacher).argmax(dim=1)
    return x, y


def build_model(dim: int = 32, classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, 128), nn.LayerNorm(128), nn.GELU(), nn.Linear(128, classes))


def param_groups(model: nn.Module, weight_decay: float = 0.05) -> list[dict]:
    """Weight decay on matrices only (biases and norms excluded), the usual two groups."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train(args: argparse.Namespace) -> dict:
    if args.batch_size % args.accum:
        raise SystemExit(f"--batch-size {args.batch_size} must be a multiple of --accum {args.accum}")
    torch.manual_seed(args.seed)
    device = torch.device("cpu")
    x, y = make_data(args.steps_per_epoch * args.batch_size, seed=args.seed)
    model = build_model().to(device)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.AdamW(param_groups(model), lr=1.0)  # group 0's LR is overwritten by AutoWU
    scheduler = AutoWU(optimizer,                               # <-- AutoWU
                       args.steps_per_epoch,                    # optimizer steps per epoch (not micro-batches)
                       args.epochs,
                       immediate_cooldown=True, cooldown_type="cosine", device=device,
                       rho_w=args.rho_w, seed=args.seed)

    lrs, losses = [], []
    for epoch in range(args.epochs):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed + epoch))
        for step in range(args.steps_per_epoch):
            batch = order[step * args.batch_size:(step + 1) * args.batch_size]
            step_loss = torch.zeros((), device=device)
            for micro in batch.chunk(args.accum):             # gradient accumulation
                xb, yb = x[micro].to(device), y[micro].to(device)
                loss = loss_fn(model(xb), yb) / args.accum    # equal micro-batches: the sum is the batch mean
                loss.backward()
                step_loss += loss.detach()
            lrs.append(optimizer.param_groups[0]["lr"])       # the LR this step used
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step(step_loss)                         # <-- AutoWU: once per optimizer step
            losses.append(step_loss)
        print(f"epoch {epoch:2d}  {scheduler.phase:6s}  lr {lrs[-1]:.3g}  loss {losses[-1].item():.4f}")

    switch = scheduler.switch                                 # <-- AutoWU: where it switched, and why
    if switch is not None:
        print(f"AutoWU switched at step {switch['step']} (epoch {switch['epoch']}, reason {switch['reason']}): "
              f"decay from lr {switch['lr']:.4g} (t* = {switch['t_star']:.1f})")
    else:
        print("AutoWU did not switch (the run ended in the warmup)")
    with torch.no_grad():
        accuracy = (model(x).argmax(dim=1) == y).float().mean().item()
    print(f"training accuracy {accuracy:.3f}")
    return {"lr": lrs, "loss": [v.item() for v in losses], "group_lrs": scheduler.get_last_lr(),
            "switch": switch, "optimizer_steps": len(lrs), "scheduler_steps": scheduler.last_epoch,
            "accuracy": accuracy}


def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser().parse_args(argv)
    result = train(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f)
    return result


if __name__ == "__main__":
    main()
