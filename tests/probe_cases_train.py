"""Probe cases: train.py's configs, data files, run directories, resumes and ranks."""
from __future__ import annotations

from fault_probe import case, expect_refusal, tree


@case("config", "a YAML config whose top level is a list")
def config_top_level_list(p):
    cfg = p.write("c.yaml", "- lr: 0.1\n")
    out = p.path("run")
    proc = p.train("-c", str(cfg), "--output", str(out))
    return expect_refusal(p, proc, "c.yaml", unchanged=[out], before={str(out): tree(out)})
