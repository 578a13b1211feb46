#!/usr/bin/env bash
# Set up (or reuse) the project's virtual environment in .venv/ of this checkout.
#
#   bash scripts/setup.sh            # what train.py needs (requirements.txt)
#   bash scripts/setup.sh --test     # plus the test tools (requirements-test.txt: pytest, hypothesis, Lightning)
#
# Steps: create .venv with Python 3.11 (PYTHON=/path/to/python overrides); install torch + torchvision at the
# versions of constraints.txt, unless .venv already has a torch (yours, e.g. a CUDA 12 build: it is kept); install
# the requirements with the tested versions of constraints.txt; `pip install -e .` (the autowu package); install
# Debian's dataset-fashion-mnist when running as root with apt-get (otherwise say how to get the data).
# The first run takes a few minutes (torch is large); later runs check a stamp and return in seconds.
#
# GPU nodes whose driver needs an older CUDA (e.g. V100: CUDA 12.x), install torch for your CUDA first:
#   python3.11 -m venv .venv
#   .venv/bin/pip install torch torchvision --index-url https://download.pytorch.org/whl/cu126
#   bash scripts/setup.sh            # keeps that torch; pins everything else to constraints.txt
# or let this script do it at the tested torch version: TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
#
# Environment: PYTHON (interpreter for the venv), VENV (default: .venv in the checkout), TORCH_INDEX_URL,
# AUTOWU_NO_APT=1 (never call apt-get).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"
MODE=main
REQUIREMENTS=requirements.txt
for arg in "$@"; do
    case "$arg" in
        --test) MODE=test; REQUIREMENTS=requirements-test.txt ;;
        -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup.sh: unknown argument '$arg' (use --test or nothing)" >&2; exit 2 ;;
    esac
done

START=$SECONDS
say() { printf '[setup %3ds] %s\n' "$((SECONDS - START))" "$*"; }
die() { printf 'setup.sh: error: %s\n' "$*" >&2; exit 1; }

# --- 1. the virtual environment -------------------------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
    if [[ -z "${PYTHON:-}" ]]; then
        PYTHON="$(command -v python3.11 || command -v python3 || true)"
        [[ -n "$PYTHON" ]] || die "no python3.11 or python3 on PATH; install Python 3.11 or set PYTHON=/path/to/python"
    fi
    version="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
        || die "PYTHON=$PYTHON does not run"
    case "$version" in
        3.11) ;;
        3.9|3.10|3.12|3.13) say "note: Python $version; the tested versions in constraints.txt are for Python 3.11" ;;
        *) die "Python $version at $PYTHON is not supported (need 3.9-3.13, tested on 3.11); set PYTHON=..." ;;
    esac
    say "creating $VENV with $PYTHON (Python $version)"
    "$PYTHON" -m venv "$VENV" \
        || die "'$PYTHON -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv (or python$version-venv)"
fi
PY="$VENV/bin/python"
LOG="$VENV/setup.log"
pip_install() {  # pip's output goes to the log; on failure its end is shown
    echo "+ pip install $*" >>"$LOG"
    if ! "$PY" -m pip install --disable-pip-version-check --progress-bar off "$@" >>"$LOG" 2>&1; then
        tail -n 30 "$LOG" >&2
        die "pip install $* failed (full log: $LOG)"
    fi
}

# --- 2. Python packages (skipped when the stamp says nothing changed) -----------------------------------------
stamp_of() {  # what the installed packages depend on: the requirement files, this script, the interpreter
    cat requirements.txt requirements-test.txt constraints.txt pyproject.toml "${BASH_SOURCE[0]}" \
        | { cat; "$PY" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1
}
STAMP="$(stamp_of)"
stamp_ok() {  # a test set-up also covers the main one
    local m
    for m in "$@"; do [[ -f "$VENV/.setup-$m" && "$(cat "$VENV/.setup-$m")" == "$STAMP" ]] && return 0; done
    return 1
}
if [[ "$MODE" == test ]]; then covering=(test); else covering=(main test); fi
if stamp_ok "${covering[@]}"; then
    say "packages up to date ($VENV, $MODE set-up)"
else
    say "installing packages into $VENV (a few minutes the first time; log: $LOG)"
    : >"$LOG"
    tested_torch="$(sed -n 's/^torch==//p' constraints.txt)"
    have_torch="$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)"
    if [[ -z "$have_torch" && -n "${TORCH_INDEX_URL:-}" ]]; then
        tested_vision="$(sed -n 's/^torchvision==//p' constraints.txt)"
        say "torch $tested_torch + torchvision $tested_vision from $TORCH_INDEX_URL"
        pip_install "torch==$tested_torch" "torchvision==$tested_vision" --index-url "$TORCH_INDEX_URL"
    elif [[ -z "$have_torch" || ( -f "$VENV/.torch-by-setup" && "${have_torch%%+*}" != "$tested_torch" ) ]]; then
        say "torch $tested_torch + torchvision from PyPI (several GB with its CUDA libraries)"
        pip_install -c constraints.txt --upgrade torch torchvision
        touch "$VENV/.torch-by-setup"
    fi
    have_torch="$("$PY" -c 'import torch; print(torch.__version__)' 2>>"$LOG")" || die "torch does not import (see $LOG)"
    if [[ -f "$VENV/.torch-by-setup" ]]; then
        constraints=constraints.txt
        say "torch $have_torch"
    else
        # Your own torch build (installed before this script ran, or from TORCH_INDEX_URL): keep it and its
        # torchvision; pin everything else to the tested versions.
        constraints="$VENV/constraints-local.txt"
        grep -vE '^(torch|torchvision|triton|nvidia-[a-z0-9_-]+|cuda-[a-z-]+)==' constraints.txt >"$constraints"
        # pin the distributions' versions (a wheel from PyPI reports torch.__version__ "2.14.1+cu130" while its
        # metadata says "2.14.1"; pip matches the metadata)
        dist_version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || true; }
        echo "torch==$(dist_version torch)" >>"$constraints"
        vision="$(dist_version torchvision)"
        [[ -n "$vision" ]] && echo "torchvision==$vision" >>"$constraints"
        say "keeping your torch $have_torch${vision:+ + torchvision $vision} (tested with $tested_torch)"
    fi
    say "requirements ($REQUIREMENTS, versions of constraints.txt)"
    pip_install -r "$REQUIREMENTS" -c "$constraints"
    say "autowu package (pip install -e .)"
    pip_install -e . --no-deps
    if ! "$PY" -c 'import autowu, torch, torchvision' 2>>"$LOG"; then
        tail -n 3 "$LOG" >&2
        [[ "$constraints" == constraints.txt ]] || die "the installed packages do not import (log: $LOG). With your" \
            "own torch, install the torchvision built for it from the same index first (see the top of this script)"
        die "the installed packages do not import (log: $LOG)"
    fi
    rm -f "$VENV"/.setup-*
    echo "$STAMP" >"$VENV/.setup-$MODE"
fi

# --- 3. Fashion-MNIST from Debian (the main job's data; tests use synthetic data) -----------------------------
FMNIST=/usr/share/datasets/fashion-mnist
if [[ -d "$FMNIST" ]]; then
    say "Fashion-MNIST: $FMNIST"
elif [[ "${AUTOWU_NO_APT:-0}" != 1 && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    say "Fashion-MNIST: apt-get install dataset-fashion-mnist"
    if { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            dataset-fashion-mnist; } >>"$LOG" 2>&1; then
        say "Fashion-MNIST: $FMNIST"
    else
        say "Fashion-MNIST: apt-get failed (see $LOG); the data script will fall back to torchvision's download"
    fi
else
    say "Fashion-MNIST: not in $FMNIST; install it with 'sudo apt-get install dataset-fashion-mnist'" \
        "(Debian/Ubuntu), or the data script downloads it with torchvision"
fi
say "done: $("$PY" -c 'import torch; print("torch", torch.__version__, "| CUDA available:", torch.cuda.is_available())')"
