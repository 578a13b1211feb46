"""Probe cases: every script's inputs (sweep, collect, plot, run_summary, the benchmarks, prepare_data, gpu_check)."""
from __future__ import annotations

from fault_probe import case, expect_refusal


@case("scripts", "collect.py with a table name that does not exist")
def collect_unknown_table(p):
    return expect_refusal(p, p.script("collect.py", "no_such_table"), "no_such_table")
