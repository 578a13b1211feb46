"""Command line of experiments/sweep.py (its docstring has the usage): `python scripts/sweep.py --help`."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout: experiments/
from experiments.sweep import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
