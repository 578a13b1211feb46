#!/usr/bin/env bash
# Set up .venv with the test tools (scripts/setup.sh --test) and run the whole test suite on the CPU.
#
#   bash scripts/test.sh                 # what CI runs (.ci/run)
#   bash scripts/test.sh -k lightning    # extra arguments go to pytest
#
# Fails when pytest fails or collects no test (pytest's exit code 5).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh --test

echo "[test] .venv/bin/python -m pytest -q --durations=10 tests $*"
status=0
.venv/bin/python -m pytest -q --durations=10 tests "$@" || status=$?
if [[ $status -eq 5 ]]; then
    echo "test.sh: error: pytest collected no tests (exit code 5); a test run must run tests" >&2
    exit 1
fi
exit $status
