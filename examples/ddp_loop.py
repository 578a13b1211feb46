"""AutoWU in a DistributedDataParallel loop with gradient accumulation (CPU/gloo or GPU/nccl).

    torchrun --nproc_per_node 2 examples/ddp_loop.py                 # 2 CPU processes, synthetic data
    torchrun --nproc_per_node 2 examples/ddp_loop.py --accum 2       # global batch = 2 ranks x 2 micro-batches
    torchrun --nproc_per_node 8 examples/ddp_loop.py --device cuda   # one GPU per process

Nothing in AutoWU is DDP-specific for the user: every rank builds the same scheduler and calls
``scheduler.step(loss)`` with its own loss of the optimizer step. AutoWU keeps the losses on the device during the
epoch, averages them across ranks once per epoch (one all-reduce), runs the GP test and takes rank 0's outcome
(one broadcast), so every rank switches at the same step to the same LR. What the loop must get right:
  * ``--batch-size`` is the GLOBAL batch of one optimizer step = micro-batch x ranks x accumulation steps;
  * skip the gradient all-reduce on the accumulation micro-steps (``model.no_sync()``), sync on the last one;
  * call ``scheduler.step(loss)`` once per optimizer step, not per micro-batch.
The toy data, model and parameter groups are those of examples/plain_loop.py.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from autowu import AutoWU  # noqa: E402
from plain_loop import build_model, make_data, param_groups  # noqa: E402
from plain_loop import get_args_parser as plain_get_args_parser  # noqa: E402  (examples/ is the script's directory)


def get_args_parser() -> argparse.ArgumentParser:
    p = plain_get_args_parser(__doc__.split("\n")[0], ranks=True)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    return p


def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser().parse_args(argv)
    if "RANK" not in os.environ:
        raise SystemExit("launch with torchrun, e.g.: torchrun --nproc_per_node 2 examples/ddp_loop.py")
    if args.device == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        result = train(args, rank, world, device)
        dist.barrier()  # no rank tears gloo down while another still talks to it
        return result
    finally:
        # the DDP model (its reducer holds gloo work) must go before the process group, and both before the
        # interpreter shuts down: destroyed at shutdown, their C++ threads abort the process
        gc.collect()
        dist.destroy_process_group()


def train(args: argparse.Namespace, rank: int, world: int, device: torch.device) -> dict:
    per_rank, rem = divmod(args.batch_size, world * args.accum)
    if rem or per_rank < 1:
        raise SystemExit(f"--batch-size {args.batch_size} must be a multiple of ranks x accum = {world * args.accum}")
    torch.manual_seed(args.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    x, y = make_data(args.steps_per_epoch * args.batch_size, seed=args.seed)
    model = DistributedDataParallel(build_model().to(device), device_ids=[device.index] if device.index is not None
                                    else None)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.AdamW(param_groups(model.module), lr=1.0)
    scheduler = AutoWU(optimizer, args.steps_per_epoch, args.epochs,  # <-- AutoWU: the same on every rank
                       immediate_cooldown=True, cooldown_type="cosine", device=device,
                       rho_w=args.rho_w, seed=args.seed)

    lrs, losses = [], []
    for epoch in range(args.epochs):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed + epoch))
        for step in range(args.steps_per_epoch):
            batch = order[step * args.batch_size:(step + 1) * args.batch_size]
            mine = batch[rank::world]                             # this rank's share of the global batch
            micro_batches = mine.chunk(args.accum)
            step_loss = torch.zeros((), device=device)
            for i, micro in enumerate(micro_batches):
                last = i == len(micro_batches) - 1
                with contextlib.nullcontext() if last else model.no_sync():  # all-reduce grads on the last only
                    loss = loss_fn(model(x[micro].to(device)), y[micro].to(device)) / args.accum
                    loss.backward()
                step_loss += loss.detach()
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step(step_loss)                             # <-- AutoWU: once per optimizer step
            losses.append(step_loss)
        if rank == 0:
            print(f"epoch {epoch:2d}  {scheduler.phase:6s}  lr {lrs[-1]:.3g}  loss (rank 0) {losses[-1].item():.4f}")

    switch = scheduler.switch
    if rank == 0:
        if switch is not None:
            print(f"AutoWU switched at step {switch['step']} (epoch {switch['epoch']}, reason {switch['reason']}) on "
                  f"all {world} ranks: decay from lr {switch['lr']:.4g}")
        else:
            print("AutoWU did not switch (the run ended in the warmup)")
    checksum = float(sum(p.detach().double().sum() for p in model.module.parameters()))
    result = {"rank": rank, "world_size": world, "lr": lrs, "loss": [v.item() for v in losses], "switch": switch,
              "optimizer_steps": len(lrs), "scheduler_steps": scheduler.last_epoch, "param_checksum": checksum}
    if args.json:
        with open(f"{args.json}.rank{rank}", "w") as f:
            json.dump(result, f)
    return result


if __name__ == "__main__":
    main()
