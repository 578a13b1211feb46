"""The results pipeline never destroys results (issue 12) and keeps its records small and complete (issue 15):
collect.py refuses to replace a page with a less complete one, keeps the hand-written part, names a damaged
results.json and counts it (and a non-numeric metric) as a failed run; sweep.py runs such a run again, writes a failed
attempt's error into the run's own train.log, runs several at once (--jobs), orders them seed-major (--order seed),
and exports compact records that later sweeps count as done and collect/plot read."""
from __future__ import annotations

import csv
import json
import math
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
from experiments import collect, plot, sweep  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))  # run_summary: a per-run command, not part of the package
import run_summary  # noqa: E402

BASE = "configs/fashion_mnist_resnet.yaml"


def write_run(out: Path, top1, *, steps_per_epoch: int = 50, epochs: int = 40, switch_step: int | None = None,
              spike: float | None = None, status: str = "finished") -> dict:
    """A finished run in train.py's formats; baseline: linear warmup over 2 epochs to 0.01 then cosine; AutoWU
    (``switch_step``): exponential warmup, then decay from the LR at t* = switch_step - 20."""
    out.mkdir(parents=True)
    total = steps_per_epoch * epochs
    warm = total // 2
    switch = None
    if switch_step is not None:
        t_star = switch_step - 20
        switch = {"type": "switch", "epoch": switch_step // steps_per_epoch - 1, "step": switch_step,
                  "t_star": t_star, "lr": 1e-5 * 1e5 ** (t_star / warm), "reason": "gp-test"}
    with open(out / "steps.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "epoch", "lr", "loss"])
        for s in range(total):
            if switch:
                lr = 1e-5 * 1e5 ** (s / warm) if s < switch_step else switch["lr"] * 0.5 * (
                    1 + math.cos(math.pi * (s - switch_step) / (total - switch_step)))
            else:
                lr = 0.01 * min(1.0, (s + 1) / (2 * steps_per_epoch)) if s < 2 * steps_per_epoch else 0.01 * 0.5 * (
                    1 + math.cos(math.pi * (s - 2 * steps_per_epoch) / (total - 2 * steps_per_epoch)))
            loss = 2.3 * math.exp(-3 * s / total) + 0.1
            if spike is not None and s == total // 3:
                loss = spike
            w.writerow([s, s // steps_per_epoch, lr, loss])
    (out / "epochs.jsonl").write_text("".join(json.dumps({"epoch": e, "top1": top1 if isinstance(top1, float)
                                                          else 50.0}) + "\n" for e in range(epochs)))
    (out / "events.jsonl").write_text(json.dumps(switch) + "\n" if switch else "")
    (out / "args.yaml").write_text(f"epochs: {epochs}\noutput: {out}\n")  # train.py writes the absolute path
    (out / "env.json").write_text(json.dumps({"git_commit": "abc"}))
    (out / "last.pt").write_bytes(b"\0" * 1000)
    # the settings collect reads the overshoot off, as the tables here ask them
    config = {"epochs": epochs, "autowu_eta_min": 1e-5, "autowu_eta_max": 1.0, "autowu_rho_w": 0.5,
              "autowu_warmup": "exp"}
    result = {"status": status, "final_top1": top1, "switch": switch, "wall_time_s": 60.0, "epochs": epochs,
              "steps": total, "hardware": "1x cpu (test)", "config": config}
    (out / "results.json").write_text(json.dumps(result))
    return result


@pytest.fixture()
def table(tmp_path):
    path = tmp_path / "tbl.yaml"
    path.write_text(textwrap.dedent(f"""
        title: A test table
        base: {BASE}
        seeds: [0, 1]
        overrides: {{epochs: 40}}
        columns: [256, 1024, 4096]
        rows:
          baseline: {{sched: baseline}}
          autowu-cos: {{sched: autowu-cos}}
        """))
    return sweep.load_table(str(path))


# -- collect: never a less complete page, damaged files named, non-numbers are failures -------------------------------
def test_collect_refuses_a_less_complete_page_and_keeps_the_hand_written_part(table, tmp_path, capsys):
    runs = tmp_path / "runs"
    write_run(runs / "tbl" / "baseline_b256_s0", 90.0)
    write_run(runs / "tbl" / "baseline_b256_s1", 91.0)
    page = tmp_path / "page.md"
    assert collect.main([table.path, "--runs-dir", str(runs), "--out", str(page)]) == 0
    page.write_text(page.read_text() + "\n## What it shows (hand-written; kept)\n\nThe reading.\n")
    before = page.read_text()
    assert "2 of 12 runs finished" in before

    # a fresh clone: no runs at all -> refused, exit 2, the page untouched
    capsys.readouterr()
    assert collect.main([table.path, "--runs-dir", str(tmp_path / "empty"), "--out", str(page)]) == 2
    err = capsys.readouterr().err
    assert "2 of 12" in err and "0 of 12" in err and "--force" in err
    # this table has no committed records: the way forward is its sweep, not --runs-dir results/runs (issue 22)
    assert "no committed records" in err and "python scripts/sweep.py tbl --local" in err
    assert page.read_text() == before

    # more runs: rewritten, and the hand-written part is still there, once
    write_run(runs / "tbl" / "autowu-cos_b256_s0", 92.0, switch_step=900)
    assert collect.main([table.path, "--runs-dir", str(runs), "--out", str(page)]) == 0
    text = page.read_text()
    assert "3 of 12 runs finished" in text and text.count("## What it shows (hand-written; kept)") == 1
    assert text.rstrip().endswith("The reading.")

    # --force replaces even with fewer runs (the hand-written part survives that too)
    assert collect.main([table.path, "--runs-dir", str(tmp_path / "empty"), "--out", str(page), "--force"]) == 0
    assert "0 of 12 runs finished" in page.read_text() and "The reading." in page.read_text()


@pytest.mark.parametrize("content, reason", [("", "empty file"), ('{"status": "fini', "not valid JSON"),
                                             ("[]", "expected a JSON object, got list")])
def test_a_damaged_results_json_is_named_and_counted_as_failed(table, tmp_path, capsys, content, reason):
    runs = tmp_path / "runs"
    write_run(runs / "tbl" / "baseline_b256_s0", 90.0)
    bad = runs / "tbl" / "baseline_b256_s1" / "results.json"
    write_run(bad.parent, 91.0)
    bad.write_text(content)
    text = collect.collect(table, str(runs))
    err = capsys.readouterr().err
    assert str(bad) in err and reason in err and "failed run" in err
    assert "| baseline | 90.00 n=1/2 (1 failed) |" in text and "1 of 12 runs finished" in text


def test_a_non_numeric_metric_is_a_failed_run_not_a_crash(table, tmp_path, capsys):
    runs = tmp_path / "runs"
    write_run(runs / "tbl" / "baseline_b256_s0", "88.2")
    write_run(runs / "tbl" / "baseline_b256_s1", True)
    write_run(runs / "tbl" / "baseline_b1024_s0", 85.0)
    text = collect.collect(table, str(runs))
    assert "| baseline | failed (2/2) | 85.00 n=1/2 |" in text
    assert "final_top1 = '88.2' is not a number" in capsys.readouterr().err


def test_decay_start_and_overshoot_columns(table, tmp_path):
    runs = tmp_path / "runs"
    write_run(runs / "tbl" / "autowu-cos_b256_s0", 90.0, switch_step=900)   # 20 steps past t*: 1e5^(20/1000)
    write_run(runs / "tbl" / "autowu-cos_b1024_s0", None, status="diverged")  # never switched
    write_run(runs / "tbl" / "baseline_b256_s0", 90.0)
    text = collect.collect(table, str(runs))
    assert f"| autowu-cos | {1e-5 * 1e5 ** (880 / 1000):.3g} @ ep 18.0 | diverged before a switch (1/1) | – |" in text
    assert "| baseline | 0.01 @ ep 2.0 | – | – |" in text
    assert f"| autowu-cos | {1e5 ** 0.02:.3g}x (warmup {1e5 ** (50 / 1000):.3g}x/epoch) | – | – |" in text


def test_paper_beside_shows_differences_to_the_baseline(tmp_path):
    paper = tmp_path / "p.csv"
    paper.write_text("source,block,row,column,top1,top1_std\nT,c10,baseline,256,96.0,\nT,c10,autowu-cos,256,95.5,\n")
    path = tmp_path / "tbl.yaml"
    path.write_text(f"title: t\nbase: {BASE}\ncolumns: [256]\nrows: {{baseline: {{}}, autowu-cos: {{}}}}\n"
                    f"overrides: {{epochs: 40}}\npaper-beside: {{csv: {paper}, block: c10, label: CIFAR}}\n")
    table = sweep.load_table(str(path))
    write_run(tmp_path / "runs" / "tbl" / "baseline_b256_s0", 90.0)
    write_run(tmp_path / "runs" / "tbl" / "autowu-cos_b256_s0", 91.0, switch_step=900)
    text = collect.collect(table, str(tmp_path / "runs"))
    assert "| baseline | 90.00 · paper 96.00 |" in text and "| autowu-cos | +1.00 · paper -0.50 |" in text
    path.write_text(path.read_text().replace(str(paper), "nope.csv"))
    with pytest.raises(sweep.TableError, match="paper-beside"):
        sweep.load_table(str(path))


# -- sweep: failed runs are rerun, their error lands in their own log; --jobs, --order, --export ------------------------
def test_sweep_lists_an_unreadable_results_json_as_failed_and_runs_it_again(table, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    write_run(runs / "tbl" / "baseline_b256_s0", 90.0)
    bad = runs / "tbl" / "baseline_b256_s1" / "results.json"
    write_run(bad.parent, 90.0)
    bad.write_text('{"trunc')
    assert sweep.main([table.path, "--dry-run", "--runs-dir", str(runs)]) == 0
    captured = capsys.readouterr()
    assert "12 runs, 1 done, 11 pending" in captured.out and "failed  tbl/baseline_b256_s1" in captured.out
    assert f"{bad}: not valid JSON" in captured.err
    ran = []
    monkeypatch.setattr(sweep, "run_local", lambda runs, *a: ran.extend(r.name for r in runs) or 0)
    assert sweep.main([table.path, "--local", "--runs-dir", str(runs), "--rows", "baseline", "--columns", "256"]) == 0
    assert ran == ["tbl/baseline_b256_s1"]


def test_a_failed_run_writes_its_error_into_its_own_train_log(tmp_path, capsys):
    table = tmp_path / "tbl.yaml"   # synthetic data without its shape: train.py exits 2 after parsing
    table.write_text(f"title: t\nbase: {BASE}\noverrides: {{dataset: synthetic, device: cpu, epochs: 1, "
                     "micro-batch: 16}\n"
                     "columns: [16]\nrows: {a: {sched: baseline}}\n")
    out = tmp_path / "runs" / "tbl" / "a_b16_s0"
    out.mkdir(parents=True)
    (out / "train.log").write_text("12:00:00 finished: final top1 90.0 (an earlier attempt)\n")
    assert sweep.main([str(table), "--local", "--runs-dir", str(tmp_path / "runs")]) == 1
    log = (out / "train.log").read_text()
    assert log.startswith("12:00:00 finished") and "[sweep] this attempt failed" in log and "exit code 2" in log
    assert "--num-classes" in log.split("[sweep] this attempt failed")[1]  # train.py's own message, in this log
    assert "a_b16_s0 failed" in capsys.readouterr().out


def test_jobs_run_at_once_with_prefixed_output(tmp_path, capsys):
    table = tmp_path / "tbl.yaml"
    table.write_text(textwrap.dedent(f"""
        title: t
        base: {BASE}
        overrides: {{dataset: synthetic, model: fmnist_mlp, img-size: 28, in-chans: 1, num-classes: 10,
                     synthetic-train-size: 64, synthetic-val-size: 32, epochs: 1, device: cpu, micro-batch: 16}}
        columns: [16, 32]
        rows: {{baseline: {{sched: baseline, warmup-epochs: 0.5}}}}
        """))
    runs = tmp_path / "runs"
    assert sweep.main([str(table), "--local", "--jobs", "2", "--threads", "2", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    for name in ("baseline_b16_s0", "baseline_b32_s0"):
        assert json.loads((runs / "tbl" / name / "results.json").read_text())["status"] == "finished"
        assert f"[tbl/{name}] " in out
    assert sweep.main([str(table), "--local", "--jobs", "0"]) == 2


def test_order_seed_covers_every_cell_once_first_from_the_outside_in(table):
    names = [r.name.split("/")[1] for r in sweep.order_runs(sweep.expand(table, "r"), "seed")]
    assert names[:6] == ["baseline_b4096_s0", "autowu-cos_b4096_s0", "baseline_b256_s0", "autowu-cos_b256_s0",
                         "baseline_b1024_s0", "autowu-cos_b1024_s0"]
    assert all(n.endswith("_s1") for n in names[6:])
    assert sweep.order_runs(sweep.expand(table, "r"), "table") == sweep.expand(table, "r")


def test_export_writes_compact_records_that_count_as_done_and_rebuild_the_page(table, tmp_path, monkeypatch, capsys):
    runs, records = tmp_path / "runs", tmp_path / "records"
    full = write_run(runs / "tbl" / "baseline_b256_s0", 90.0, steps_per_epoch=1170, epochs=40)   # 46,800 steps
    write_run(runs / "tbl" / "autowu-cos_b256_s0", 91.0, steps_per_epoch=1170, epochs=40, switch_step=20_011)
    page_from_runs = collect.collect(table, str(runs))
    assert sweep.main([table.path, "--runs-dir", str(runs), "--export", str(records)]) == 0
    assert "exported 2 record(s)" in capsys.readouterr().out
    rec = records / "tbl" / "baseline_b256_s0"
    assert sorted(p.name for p in rec.iterdir()) == ["args.yaml", "env.json", "epochs.jsonl", "events.jsonl",
                                                     "results.json", "steps.csv"]   # no last.pt, no tb/
    assert json.loads((rec / "results.json").read_text()) == full
    assert "output: runs/tbl/baseline_b256_s0\n" in (rec / "args.yaml").read_text()  # no directory of this machine
    rows = list(csv.DictReader(open(rec / "steps.csv")))
    assert 1900 <= len(rows) <= 2010 and rows[0]["step"] == "0" and rows[-1]["step"] == str(46_800 - 1)
    assert sum(int(r["n"]) for r in rows if int(r["n"]) > 1) > 46_000   # the other rows: a bin's mean loss
    peak = max(rows, key=lambda r: float(r["lr"]))
    assert peak["step"] == str(2 * 1170 - 1) and float(peak["lr"]) == pytest.approx(0.01)   # kept exactly
    auto = list(csv.DictReader(open(records / "tbl" / "autowu-cos_b256_s0" / "steps.csv")))
    source = list(csv.DictReader(open(runs / "tbl" / "autowu-cos_b256_s0" / "steps.csv")))
    whole = [(r["step"], float(r["loss"]), r["n"]) for r in auto[:20_012]]  # every step up to the switch, exact:
    assert whole == [(r["step"], float(r["loss"]), "1") for r in source[:20_012]]  # its decisions can be replayed
    assert len(auto) <= 20_012 + 2010 and int(auto[20_012]["n"]) > 1            # after it: bins again
    # exporting again copies nothing; the records alone rebuild the same tables
    assert sweep.main([table.path, "--runs-dir", str(runs), "--export", str(records)]) == 0
    assert "exported 0 record(s)" in capsys.readouterr().out
    page = collect.collect(table, str(records))
    strip = lambda t: [line for line in t.splitlines() if not line.startswith("Made by")]  # noqa: E731
    assert strip(page) == strip(page_from_runs)
    steps = plot.read_steps(sweep.expand(table, str(records))[0])
    assert steps["steps_per_epoch"] == 1170 and len(steps["lr"]) == len(rows)
    # a later sweep on another machine: the committed records count as done
    monkeypatch.setattr(sweep.tables, "RECORDS_DIR", str(records))  # where Run.record looks
    assert sweep.main([table.path, "--dry-run", "--runs-dir", str(tmp_path / "elsewhere")]) == 0
    assert "12 runs, 2 done, 10 pending" in capsys.readouterr().out


def test_the_page_names_runs_under_way_or_carried_with_their_epoch(table, tmp_path):
    """A run with a checkpoint and no results.json, in its run directory (under way, or cut) or carried in its
    record's partial/ folder, is named on the page with the epochs it has done; a finished run is not."""
    runs = tmp_path / "runs"
    write_run(runs / "tbl" / "baseline_b256_s0", 90.0)                    # finished (it has a last.pt too)
    for where in (runs / "tbl" / "baseline_b256_s1", runs / "tbl" / "autowu-cos_b4096_s0" / "partial"):
        where.mkdir(parents=True)
        (where / "last.pt").write_bytes(b"\0" * 10)
        (where / "epochs.jsonl").write_text("".join(json.dumps({"epoch": e}) + "\n" for e in range(3)))
        (where / "args.yaml").write_text("epochs: 40\noutput: x\n")
    (runs / "tbl" / "baseline_b1024_s0").mkdir()                           # nothing to resume: not named
    page = collect.collect(table, str(runs))
    line = next(x for x in page.splitlines() if x.startswith("Under way or cut"))
    assert "tbl/baseline_b256_s1 (epoch 3 of 40)" in line and "tbl/autowu-cos_b4096_s0 (epoch 3 of 40)" in line
    assert "baseline_b256_s0" not in line and "baseline_b1024_s0" not in line
    assert "1 of 12 runs finished" in page


# -- figures and summaries say what happened -----------------------------------------------------------------------
def test_run_summary_does_not_call_a_capped_warmup_a_loss_minimum():
    capped = run_summary.decay_from({"reason": "max-warmup", "lr": 1.0, "t_star": 500, "step": 500})
    found = run_summary.decay_from({"reason": "gp-test", "lr": 0.01, "t_star": 300, "step": 360})
    assert "warmup cap" in capped and "minimum" in capped and "estimated loss minimum" not in capped
    assert "estimated loss minimum at step t* = 300" in found


def test_plot_keeps_curves_readable_despite_a_spike_and_shared_warmups(table, tmp_path):
    runs = tmp_path / "runs"
    write_run(runs / "tbl" / "baseline_b256_s0", 90.0, spike=30.0)
    write_run(runs / "tbl" / "autowu-cos_b256_s0", 91.0, switch_step=900)
    fig = plot.draw_block(table, table.blocks[0], sweep.expand(table, str(runs)), ["baseline", "autowu-cos"])
    ax_lr, ax_loss = np.array(fig.axes).reshape(2, 1)[:, 0]
    assert ax_loss.get_ylim()[1] <= 1.5 * 2.4 + 1e-9   # the 30 is clipped, the other curves keep the axis
    styles = {l.get_label(): l.get_linestyle() for l in ax_lr.get_lines() if not l.get_label().startswith("_")}
    assert styles["baseline"] != styles["autowu-cos"]


def test_decay_start_figure_draws_the_sqrt_rule_through_the_smallest_batch(table, tmp_path):
    runs = tmp_path / "runs"
    write_run(runs / "tbl" / "autowu-cos_b256_s0", 90.0, switch_step=900)
    write_run(runs / "tbl" / "autowu-cos_b4096_s0", 90.0, switch_step=950)
    write_run(runs / "tbl" / "baseline_b256_s0", 90.0)
    fig = plot.draw_decay_start(table, table.blocks[0], sweep.expand(table, str(runs)), ["baseline", "autowu-cos"])
    ax = fig.axes[0]
    rule = next(l for l in ax.get_lines() if l.get_label().startswith("√B rule"))
    lr256 = 1e-5 * 1e5 ** (880 / 1000)
    assert rule.get_ydata()[0] == pytest.approx(lr256) and rule.get_ydata()[-1] == pytest.approx(lr256 * 4)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert plot.draw_decay_start(table, table.blocks[0], sweep.expand(table, str(tmp_path / "none")), ["baseline"]) \
        is None


def test_grid_heatmap_marks_autowu_between_the_grid_values(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"title: g\nbase: {BASE}\noverrides: {{batch-size: 4096}}\ncolumn-header: peak LR\n"
                    "columns: {lr0.002: {lr: 0.002}, lr0.004: {lr: 0.004}, lr0.008: {lr: 0.008}}\n"
                    "rows: {wu8: {warmup-epochs: 8}, wu33: {warmup-epochs: 33}}\nfigure: {mark: paper_regime}\n")
    table = sweep.load_table(str(grid))
    # a grid: columns set lr, rows warmup-epochs; its figure marks paper_regime's AutoWU runs (plot.py's default)
    assert collect.grid_axes(table.blocks[0]) == ([0.002, 0.004, 0.008], [8, 33])
    assert table.blocks[0].figure_mark == "paper_regime"
    assert collect.grid_axes(sweep.load_table("paper_regime").blocks[0]) is None
    runs = tmp_path / "runs"
    write_run(runs / "grid" / "wu8_lr0.004_s0", 88.0)
    write_run(runs / "grid" / "wu33_lr0.008_s0", 89.5)
    auto = runs / "tbl" / "autowu-cos_b4096_s0"
    write_run(auto, 89.0, switch_step=900)   # eta_t* = 1e-5 * 1e5^0.88 = 0.0251, switch after 900 / 50 = 18 epochs
    mark = sweep.Run("tbl", "", "autowu-cos", "4096", 0, BASE, {"batch-size": 4096}, str(auto))
    twin = sweep.Run("tbl", "", "autowu-const-cos", "4096", 0, BASE, {"batch-size": 4096}, str(auto))  # same point
    fig = plot.draw_grid(table, table.blocks[0], sweep.expand(table, str(runs)),
                         [("autowu-cos s0", mark), ("autowu-const-cos s0", twin)])
    ax = fig.axes[0]
    # another row gets another, smaller marker: a run at the same point stays visible inside the first
    star, plus = (next(l for l in ax.get_lines() if l.get_marker() == m) for m in ("*", "P"))
    assert plus.get_markersize() < star.get_markersize() and plus.get_xydata().tolist() == star.get_xydata().tolist()
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["88.00", "89.50", "–", "–", "–", "–"]
    eta = 1e-5 * 1e5 ** 0.88
    assert star.get_xdata()[0] == pytest.approx(2 + math.log(eta / 0.008) / math.log(2))   # beyond 0.008, log scale
    assert star.get_ydata()[0] == pytest.approx((18 - 8) / 25)                            # between 8 and 33 epochs
    assert "switch ep 18" in star.get_label() and "89.00" in star.get_label()
