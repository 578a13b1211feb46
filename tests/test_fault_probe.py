"""Every case of the hostile-user probe (tests/fault_probe.py, issue 22) ends in a clear error or the right behaviour."""
from __future__ import annotations

import pytest

from fault_probe import GOOD, load_cases, run_case

CASES = load_cases()


def test_the_probe_has_its_hundred_cases():
    assert len(CASES) >= 100


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_probe_case(c):
    o = run_case(c)
    assert o.outcome in GOOD, f"{c.what}: {o.outcome}: {o.detail}"
