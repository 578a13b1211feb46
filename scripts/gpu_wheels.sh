#!/usr/bin/env bash
# Bring what the lent GPU machine lacks into this checkout, for scripts/gpu_check.py (issue 16).
#
#   bash scripts/gpu_wheels.sh            # here, with PyPI reachable: fills .whl/ and data/fashion-mnist/
#
# The GPU machine (kind nvidia-h200: Python 3.12 at python3 with torch, torchvision, timm, numpy, pyyaml,
# tensorboard, matplotlib, tqdm; no network) lacks adamp and torch-optimizer (and torch-optimizer's pytorch-ranger),
# and the automatic LR methods of check 7's auto_lr_proxy (schedulefree, prodigyopt, dadaptation, torch-lr-finder).
# This script builds pure-Python wheels (py3-none-any) of those, and of timm, at the versions of constraints.txt into
# .whl/, with simplejpeg's CPython 3.12 manylinux wheel for the JPEG check (ignored by git; adamp is published only
# as a source archive, so its wheel is built here), and copies the Fashion-MNIST idx files (check 7's tables) into
# data/fashion-mnist/ (ignored too). About 33 MB in all, under the 64 MiB a device call may carry.
#
# Then the device tool's `run`, with carry [".whl", "data/fashion-mnist"] and timeout_s 420:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 || exit; python3 scripts/gpu_check.py --budget 330 --data-dir data 2>&1 | tee $OUT/gpu_check.log; cp results/gpu_*.md results/gpu_*.json runs/gpu_check/*.tar.gz $OUT/ 2>/dev/null; true
#
# Copy the returned results/gpu_<device>.md/.json into results/ and commit them; rerun only what failed with
# `--checks N,M` (the report keeps the other checks' results).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"  # the header comment
    exit 0
fi
if [ $# -gt 0 ]; then
    echo "error: gpu_wheels.sh takes no arguments (got: $*); see --help" >&2
    exit 2
fi

# What the GPU machine's image has of what this project imports (device README, KINDS.md, read 2026-11-17); a test
# (tests/test_gpu_check.py) checks that every package the project imports is here or carried below.
gpu_image=(torch torchvision numpy pyyaml pillow matplotlib gpytorch linear-operator tqdm packaging tensorboard)
packages=(adamp torch-optimizer pytorch-ranger timm schedulefree prodigyopt dadaptation torch-lr-finder)  # pure Python
binary=(simplejpeg)  # compiled: downloaded as the GPU machine's CPython 3.12 x86-64 manylinux wheel
pinned() {  # the constraints.txt line (name==version) of each package named, in order
    local name pin
    for name in "$@"; do
        pin=$(grep -i -E "^${name}==" constraints.txt || true)
        if [ -z "$pin" ]; then
            echo "error: constraints.txt pins no version of $name; add one (the GPU machine needs an exact wheel)" >&2
            return 2
        fi
        echo "$pin"
    done
}
package_pins=$(pinned "${packages[@]}") || exit 2
binary_pins=$(pinned "${binary[@]}") || exit 2
mapfile -t package_pins <<< "$package_pins"
mapfile -t binary_pins <<< "$binary_pins"

mkdir -p .whl
for name in "${packages[@]}" "${binary[@]}"; do  # one version of each: two stop the install on the GPU machine
    rm -f .whl/"${name//-/_}"-*.whl
done
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir .whl "${package_pins[@]}"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --dest .whl "${binary_pins[@]}"
for whl in .whl/*.whl; do
    case "$whl" in
        *-py3-none-any.whl|*-py2.py3-none-any.whl|*-cp312-cp312-*manylinux*x86_64*.whl) ;;
        *) echo "error: $whl is neither pure Python nor a CPython 3.12 x86-64 wheel; the GPU machine cannot" \
                "install it (remove it from .whl/)" >&2
           exit 1 ;;
    esac
done

src=$("$PYTHON" - <<'EOF'
import sys
sys.path.insert(0, ".")
from framework.datasets import find_fashion_mnist
d = find_fashion_mnist("data")
print(d or "")
EOF
)
if [ -z "$src" ]; then
    echo "error: Fashion-MNIST not found (data/ or /usr/share/datasets/fashion-mnist); get it with" \
         "\`python scripts/prepare_data.py --dataset fashion_mnist\` (check 7 needs it)" >&2
    exit 1
fi
mkdir -p data/fashion-mnist
if [ "$(cd "$src" && pwd -P)" != "$(cd data/fashion-mnist && pwd -P)" ]; then
    for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
        if [ -f "$src/$f.gz" ]; then
            cp "$src/$f.gz" data/fashion-mnist/
        else
            gzip -c "$src/$f" > "data/fashion-mnist/$f.gz"
        fi
    done
fi
echo "wheels in .whl/:"
ls -1 .whl/*.whl
echo "Fashion-MNIST in data/fashion-mnist/ (from $src)"
du -sh .whl data/fashion-mnist
