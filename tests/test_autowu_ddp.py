"""DDP: two gloo processes feeding different local losses switch at the same step to the same LR."""
import json
import os
import subprocess
import sys


WORKER = r'''
import json, math, os, sys
import numpy as np, torch, torch.distributed as dist
sys.path.insert(0, sys.argv[3])
from autowu import AutoWU
rank, out = int(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo", init_method="file://" + out + ".rdzv", rank=rank, world_size=2)
s = AutoWU(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 50, 40, seed=0)
rng = np.random.default_rng(100 + rank)  # each rank sees different noise and an offset
lrs = []
for t in range(2000):
    lr = s.get_last_lr()[0]
    lrs.append(lr)
    loss = (math.log10(lr) + 2) ** 2 + 0.5 * rank + 0.4 * rng.standard_normal()
    s.step(torch.tensor(loss))
json.dump({"lrs": lrs, "history": s.history}, open(out + f".{rank}.json", "w"))
dist.destroy_process_group()
'''


def test_two_gloo_ranks_with_different_losses_agree(tmp_path):

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    base = str(tmp_path / "run")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(r), base, root], env=env) for r in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    a, b = (json.load(open(f"{base}.{r}.json")) for r in range(2))
    assert a["lrs"] == b["lrs"]
    assert a["history"] == b["history"]
    switch = [h for h in a["history"] if h["type"] == "switch"]
    assert switch and switch[0]["reason"] == "gp-test"
    assert 1e-2 / 1.5 < switch[0]["lr"] < 1e-2 * 1.5
