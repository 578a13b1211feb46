#!/usr/bin/env bash
# One machine, NPROC processes (one per GPU), one run:
#   scripts/launch_local.sh 4 --config configs/cifar10_resnet18.yaml --batch-size 1024 --output runs/c10_b1024
# --batch-size is the global batch: 1024 = 256/gpu x 4 gpus; larger batches accumulate (see the config's header).
set -euo pipefail
if [[ $# -lt 1 || ! $1 =~ ^[1-9][0-9]*$ ]]; then
    echo "error: NPROC must be a whole number >= 1 (processes, one per GPU), got '${1:-}'; usage:" \
        "scripts/launch_local.sh NPROC [train.py flags...]" >&2
    exit 2
fi
nproc=$1; shift
cd "$(dirname "$0")/.."
# torchrun sets OMP_NUM_THREADS=1 per process unless given; leave a user's choice alone.
exec "${PYTHON:-python}" -m torch.distributed.run --standalone --nnodes 1 --nproc_per_node "$nproc" train.py "$@"
