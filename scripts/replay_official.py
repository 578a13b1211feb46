"""Command line of experiments/replay.py (its docstring has the usage): `python scripts/replay_official.py --help`."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout: experiments/
from experiments.replay import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
