"""Command line of experiments/cadence.py (its docstring has the usage): `python scripts/cadence_study.py --help`."""
import os
import sys

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core per worker, before torch loads
    os.environ.setdefault(_var, "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout: experiments/
from experiments.cadence import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
