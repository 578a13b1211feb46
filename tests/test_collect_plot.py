"""scripts/collect.py and scripts/plot.py on fake run directories written in the documented formats
(docs/DESIGN.md: results.json, steps.csv, events.jsonl, epochs.jsonl)."""
from __future__ import annotations

import csv
import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
from experiments import collect, plot, sweep  # noqa: E402


def fake_run(out: Path, top1: float, *, switch_epoch: float | None = None, status: str = "finished",
             steps_per_epoch: int = 10, epochs: int = 4, peak: float = 0.01, config: dict | None = None,
             extra: dict | None = None) -> None:
    """A finished run: LR rises to ``peak`` (AutoWU: until the switch, then decays from ``peak / 2``)."""
    out.mkdir(parents=True)
    total = steps_per_epoch * epochs
    switch = None
    if switch_epoch is not None:
        switch = {"type": "switch", "epoch": switch_epoch, "step": int(switch_epoch * steps_per_epoch),
                  "t_star": 3, "lr": peak / 2, "reason": "gp-test"}
    with open(out / "steps.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "epoch", "lr", "loss"])
        for s in range(total):
            t = (s + 1) / total
            if switch is None:
                lr = peak * min(1.0, (s + 1) / steps_per_epoch) * (1 if s < steps_per_epoch else 1 - t + 0.01)
            else:
                lr = 1e-5 * 2.0 ** s if s < switch["step"] else peak / 2 * (1 - t + 0.01)
            w.writerow([s, s // steps_per_epoch, lr, 2.3 * math.exp(-3 * t)])
    with open(out / "epochs.jsonl", "w") as f:
        for e in range(epochs):
            f.write(json.dumps({"epoch": e, "step": (e + 1) * steps_per_epoch, "top1": top1 - (epochs - e - 1)}) + "\n")
    if switch:
        (out / "events.jsonl").write_text(json.dumps(switch) + "\n")
    (out / "results.json").write_text(json.dumps({
        "status": status, "final_top1": top1, "best_top1": top1, "switch": switch, "wall_time_s": 30.0,
        "epochs": epochs, "steps": total, "hardware": "cpu: test", **({"config": config} if config else {}),
        **(extra or {})}))


@pytest.fixture()
def table(tmp_path):
    paper = tmp_path / "paper.csv"
    paper.write_text("source,block,row,column,top1,top1_std\nTable X,,baseline,256,90.00,0.1\n"
                     "Table X,,autowu-cos,256,92.50,\nTable X,,autowu-cos,1024,80.00,\n")
    path = tmp_path / "tbl.yaml"
    path.write_text(textwrap.dedent(f"""
        title: A test table
        caption: Reduced grid.
        paper: {paper}
        base: configs/fashion_mnist_resnet.yaml
        seeds: [0, 1]
        columns: [256, 1024]
        rows:
          baseline: {{sched: baseline}}
          autowu-cos: {{sched: autowu-cos}}
        """))
    return sweep.load_table(str(path))


def test_collect_layout_mean_std_paper_difference_and_missing(table, tmp_path):
    runs = tmp_path / "runs" / "tbl"
    fake_run(runs / "baseline_b256_s0", 90.0)
    fake_run(runs / "baseline_b256_s1", 92.0)
    fake_run(runs / "autowu-cos_b256_s0", 93.0, switch_epoch=1.5)
    fake_run(runs / "autowu-cos_b256_s1", 94.0, switch_epoch=2.5)
    fake_run(runs / "autowu-cos_b1024_s0", 85.0, switch_epoch=2.0)  # seed 1 missing
    text = collect.collect(table, str(tmp_path / "runs"))
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| Schedule"))
    assert header == "| Schedule | Batch size 256 | Batch size 1K |"
    base = next(line for line in lines if line.startswith("| baseline | 91"))
    # mean (sample std) over the two seeds, the paper's number, ours - paper; a cell with no run says so
    assert base == "| baseline | 91.00 (1.41) · paper 90.00 · Δ +1.00 | missing |"
    auto = next(line for line in lines if line.startswith("| autowu-cos | **"))
    assert auto == "| autowu-cos | **93.50 (0.71)** · paper 92.50 · Δ +1.00 | 85.00 n=1/2 · paper 80.00 · Δ +5.00 |"
    assert "5 of 8 runs finished" in text
    # the decay-start table: AutoWU's switch LR and epoch (mean over seeds); the baseline's peak LR and when
    starts = [line for line in lines if line.startswith("| autowu-cos | 0.005 @")]
    assert starts == ["| autowu-cos | 0.005 @ ep 2.0 | 0.005 @ ep 2.0 |"]
    assert any(line.startswith("| baseline | 0.01 @ ep 1.0 | – |") for line in lines)
    assert "Compute: 5 runs, 2.5 min" in text and "cpu: test" in text and "Reduced grid." in text


def test_collect_reports_diverged_runs(table, tmp_path):
    runs = tmp_path / "runs" / "tbl"
    fake_run(runs / "baseline_b1024_s0", 10.0, status="diverged")
    out = runs / "baseline_b1024_s1"
    fake_run(out, 0.0, status="diverged")
    res = json.loads((out / "results.json").read_text())
    res["final_top1"] = None
    (out / "results.json").write_text(json.dumps(res))
    text = collect.collect(table, str(tmp_path / "runs"))
    assert "| baseline | missing · paper 90.00 | 10.00 n=1/2 (2 diverged) |" in text


def test_collect_cli_writes_markdown(table, tmp_path):
    fake_run(tmp_path / "runs" / "tbl" / "baseline_b256_s0", 90.0)
    out = tmp_path / "t.md"
    assert collect.main([table.path, "--runs-dir", str(tmp_path / "runs"), "--out", str(out)]) == 0
    assert out.read_text().startswith("# A test table")


def test_plot_draws_lr_loss_panels_and_marks_the_switch(table, tmp_path):
    runs = tmp_path / "runs" / "tbl"
    fake_run(runs / "baseline_b256_s0", 90.0)
    fake_run(runs / "autowu-cos_b256_s0", 93.0, switch_epoch=1.5)
    fake_run(runs / "autowu-cos_b1024_s0", 85.0, switch_epoch=2.0)
    block = table.blocks[0]
    fig = plot.draw_block(table, block, sweep.expand(table, str(tmp_path / "runs")), ["baseline", "autowu-cos"],
                          val=True)
    axes = np.array(fig.axes).reshape(3, 2)
    assert axes[0, 0].get_yscale() == "log" and axes[0, 0].get_title() == "Batch size 256"
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["learning rate", "training loss", "val top-1 (%)"]
    # both schedules in the 256 column; only AutoWU in the 1K column (no baseline run there)
    assert [l.get_label() for l in axes[1, 0].get_lines() if not l.get_label().startswith("_")] == \
        ["baseline", "autowu-cos"]
    # the switch: a vertical line at its epoch in every panel of the column, and a dot at the LR it decays from
    for j, ep in ((0, 1.5), (1, 2.0)):
        for ax in axes[:, j]:
            assert any(list(l.get_xdata()) == [ep, ep] for l in ax.get_lines())
    dots = [l for l in axes[0, 1].get_lines() if l.get_marker() == "o"]
    assert len(dots) == 1 and list(dots[0].get_ydata()) == [0.005]
    # the loss curve starts near the logged first loss and ends near the last one
    loss = next(l for l in axes[1, 0].get_lines() if l.get_label() == "baseline").get_ydata()
    assert loss[0] == pytest.approx(2.3 * math.exp(-3 / 40), rel=1e-6) and loss[-1] < loss[0] / 10
    out = tmp_path / "fig.png"
    assert plot.plot_block(table, block, sweep.expand(table, str(tmp_path / "runs")), ["baseline"], str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_curve_figure_names_what_it_draws_not_what_the_tables_cells_hold(table, tmp_path):
    fake_run(tmp_path / "runs" / "tbl" / "baseline_b256_s0", 90.0)
    table.title = "Automatic methods at 16K: top-1 test accuracy (%)"
    runs = sweep.expand(table, str(tmp_path / "runs"))
    for val, shown in ((False, "learning rate and training loss per epoch"),
                       (True, "learning rate, training loss and val top-1 per epoch")):
        title = plot.draw_block(table, table.blocks[0], runs, ["baseline"], val=val)._suptitle.get_text()
        assert title.splitlines()[0] == f"Automatic methods at 16K: {shown}"


def test_a_long_title_wraps_inside_the_figure_above_the_legend_and_the_panels(table, tmp_path):
    fake_run(tmp_path / "runs" / "tbl" / "baseline_b256_s0", 90.0)
    table.title = "Automatic LR methods at batch 16K on a convolutional proxy with a long name " * 3
    fig = plot.draw_block(table, table.blocks[0], sweep.expand(table, str(tmp_path / "runs")), ["baseline"])
    renderer = fig.canvas.get_renderer()
    title, legend = fig._suptitle.get_window_extent(renderer), fig.legends[0].get_window_extent(renderer)
    assert len(fig._suptitle.get_text().splitlines()) >= 4  # broken to the width, not one line running off it
    assert fig.bbox.x0 <= title.x0 and title.x1 <= fig.bbox.x1 and title.y1 <= fig.bbox.y1
    assert legend.y1 <= title.y0  # the legend below the title, the panels (with their own titles) below both
    assert max(ax.get_tightbbox(renderer).y1 for ax in fig.axes) <= legend.y0


def test_plot_without_logged_runs_writes_nothing(table, tmp_path):
    out = tmp_path / "fig.png"
    assert not plot.plot_block(table, table.blocks[0], sweep.expand(table, str(tmp_path / "runs")), ["baseline"],
                               str(out))
    assert not out.exists()


def test_binned_long_series_keeps_shape():
    x = np.arange(10_000, dtype=float)
    bx, by = plot.binned(x, x * 2)
    assert len(bx) <= plot.MAX_POINTS and by == pytest.approx(bx * 2)
    fx, fy = plot.binned(x, x, reduce="first")
    assert fx[0] == 0 and set(np.diff(fx)) == {fx[1] - fx[0]}


def test_a_run_made_with_other_settings_is_left_out_and_named(table, tmp_path):
    """Issue 22: collect put stale runs (another config than the table asks) into the cells, unmarked."""
    runs = tmp_path / "runs" / "tbl"
    fake_run(runs / "baseline_b256_s0", 90.0, config={"sched": "baseline", "batch_size": 256})
    fake_run(runs / "baseline_b256_s1", 50.0, config={"sched": "baseline", "batch_size": 256, "epochs": 3})
    text = collect.collect(table, str(tmp_path / "runs"))
    assert "1 of 8 runs finished" in text
    assert "Left out: 1 finished run(s) made with other settings" in text
    assert "tbl/baseline_b256_s1 (epochs: 3 -> " in text
    row = next(line for line in text.splitlines() if line.startswith("| baseline |"))
    assert row.startswith("| baseline | 90.00") and "n=1/2" in row  # seed 0 alone, not the mean with 50.0


def test_plot_draws_the_compare_rows_beside_the_tables_own(table, tmp_path, capsys):
    """compare: {rows: ...} is also the figure's (plot.py; --beside TABLE overrides it): the comparison figure of
    issue 25, every automatic method's effective LR with AutoWU's and the baseline's of another table, matched by
    column (the batch size)."""
    other = tmp_path / "methods.yaml"
    other.write_text(textwrap.dedent(f"""
        title: Methods
        base: configs/fashion_mnist_resnet.yaml
        seeds: [0]
        columns: [256, 4096]
        rows:
          prodigy: {{opt: prodigy}}
        figure: {{rows: [prodigy]}}
        compare: {{rows: {{table: {table.path}, rows: [autowu-cos]}}}}
        """))
    methods = sweep.load_table(str(other))
    fake_run(tmp_path / "runs" / "methods" / "prodigy_b256_s0", 91.0, peak=0.003)
    fake_run(tmp_path / "runs" / "tbl" / "autowu-cos_b256_s0", 93.0, switch_epoch=1.5)
    fake_run(tmp_path / "runs" / "tbl" / "baseline_b256_s0", 92.0)  # not a compare row: not drawn by default
    fake_run(tmp_path / "runs" / "tbl" / "baseline_b1024_s0", 90.0)  # a column the methods table lacks: left out
    rows, runs = plot.runs_beside(table, methods.blocks[0], str(tmp_path / "runs"), ["prodigy"], ["autowu-cos"])
    assert rows == ["autowu-cos"] and {(r.row, r.column) for r in runs} == {("autowu-cos", "256")}
    rows, runs = plot.runs_beside(table, methods.blocks[0], str(tmp_path / "runs"), ["prodigy"])  # --beside TABLE
    assert rows == ["baseline", "autowu-cos"] and {r.column for r in runs} <= {"256", "4096"}
    drawn = []
    real_draw = plot.draw_block
    plot.draw_block = lambda t, b, rs, rows, val=False: drawn.append(rows) or real_draw(t, b, rs, rows, val)
    try:
        assert plot.main([str(other), "--runs-dir", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "fig")]) == 0
    finally:
        plot.draw_block = real_draw
    assert drawn == [["prodigy", "autowu-cos"]]
    fig = plot.draw_block(methods, methods.blocks[0], sweep.expand(methods, str(tmp_path / "runs")) + runs,
                          ["prodigy", *rows])
    labels = [l.get_label() for l in fig.axes[0].get_lines() if not l.get_label().startswith("_")]
    assert labels == ["prodigy", "baseline", "autowu-cos"]
    assert (tmp_path / "fig" / "methods.png").read_bytes()[:4] == b"\x89PNG"
    bad = tmp_path / "bad.yaml"
    bad.write_text(other.read_text().replace("figure: {rows: [prodigy]}", "figure: {rows: [prodigy], beside: tbl}"))
    with pytest.raises(sweep.TableError, match=r"figure takes rows and mark; unknown \['beside'\] .*compare"):
        sweep.load_table(str(bad))


def methods_table(tmp_path, name: str, rows: dict[str, str]):
    """A one-column (256), two-seed table of the baseline and ``rows`` (row name -> YAML flow mapping)."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"title: {name}\nbase: configs/fashion_mnist_resnet.yaml\nseeds: [0, 1]\ncolumns: [256]\nrows:\n"
                    "  baseline: {sched: baseline}\n" + "".join(f"  {r}: {v}\n" for r, v in rows.items()))
    return sweep.load_table(str(path))


def test_cost_table_counts_the_forwards_a_method_spends_besides_training(tmp_path):
    """A block with an LR range test or AutoLR gets a cost table: wall time, the extra forwards over the training
    forwards (steps x micro-batches per step), the LR the range test found; a table without such a run gets none."""
    t = methods_table(tmp_path, "meth", {"range-test": "{sched: range-test-cos}", "autolr": "{sched: autolr}",
                                         "schedulefree": "{opt: schedulefree_adamw, sched: constant}"})
    runs = tmp_path / "runs" / "meth"
    fake_run(runs / "baseline_b256_s0", 90.0)
    assert "Cost per run" not in collect.collect(t, str(tmp_path / "runs"))
    split = {"batch_size": 256, "micro_batch": 128, "world_size": 1, "accum_steps": 2}  # 80 training forwards
    for seed, lr in ((0, 0.002), (1, 0.004)):
        fake_run(runs / f"range-test_b256_s{seed}", 91.0, extra={"split": split, "range_test": {
            "type": "range-test", "lr": lr, "steps": 4, "forward_passes": 8, "seconds": 1.0}})
    fake_run(runs / "autolr_b256_s0", 89.0, extra={"autolr": {"extra_forward_passes": 12, "overhead": 0.3,
                                                               "compute_overhead": 0.1}})
    # Schedule-Free: BatchNorm recomputed before each validation (epochs 1 and 3 of 4 with val_interval 2), at most
    # one epoch (20 micro-batches): 2 x 20 of 80 training forwards
    fake_run(runs / "schedulefree_b256_s0", 90.0, config={"opt": "schedulefree_adamw", "sched": "constant",
                                                          "val_interval": 2}, extra={"split": split})
    text = collect.collect(t, str(tmp_path / "runs"))
    assert "Cost per run" in text
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ") and "min" in line}
    assert rows["| range-test"].endswith("| 0.5 min; +10% forwards; LR found 0.003 (0.002-0.004) |")
    assert rows["| autolr"].endswith("| 0.5 min; +30% forwards |")
    assert rows["| baseline"].endswith("| 0.5 min |")
    assert rows["| schedulefree"].endswith("| 0.5 min; +50% forwards |")


def test_step_size_table_divides_the_schedule_out_of_prodigys_and_dadapts_logged_lr(tmp_path):
    """d from the logged d·lr over the baseline schedule's factor (warmup 1 of 4 epochs, 10 steps each, cosine), its
    final value and the epoch by which it reached 99% of it; rows of other optimizers get no such table."""
    from autowu.schedules import warmup_cosine_lr
    t = methods_table(tmp_path, "free", {"prodigy": "{opt: prodigy, sched: baseline, warmup-epochs: 1}"})
    runs = tmp_path / "runs" / "free"
    fake_run(runs / "baseline_b256_s0", 90.0)
    assert "step size the learning-rate-free" not in collect.collect(t, str(tmp_path / "runs"))
    for seed, final in ((0, 0.002), (1, 0.004)):
        out = runs / f"prodigy_b256_s{seed}"
        fake_run(out, 90.0, config={"opt": "prodigy", "sched": "baseline", "warmup_epochs": 1})
        with open(out / "steps.csv", "w") as f:  # d grows from 1e-6 to its final value at step 24 (epoch 3)
            f.write("step,epoch,lr,loss\n")
            for step in range(40):
                d = final if step >= 24 else 1e-6 + (final - 1e-6) * step / 30
                f.write(f"{step},{step // 10},{d * warmup_cosine_lr(step, 40, 10, 1.0)},1.0\n")
        run = next(r for r in sweep.expand(t, str(tmp_path / "runs")) if r.output.endswith(out.name))
        d, epoch = collect.estimated_step_size(run, json.loads((out / "results.json").read_text()))
        assert d == pytest.approx(final) and epoch == 2.5  # reached at step 24: (24 + 1) / 10 epochs
    text = collect.collect(t, str(tmp_path / "runs"))
    rows = [line for line in text.split("step size the learning-rate-free")[1].splitlines() if line.startswith("| ")]
    assert rows == ["| Schedule | Batch size 256 |", "| prodigy | 0.003 (0.002-0.004) by ep 2.5 |"]


def test_versus_gives_each_rows_difference_verdict_gap_share_and_oracle(tmp_path):
    """versus: {row, std-factor, gap}: each row minus the baseline with the verdict of twice the larger seed std
    (pending while a seed is missing), the share of the baseline's 256 -> 4096 gap recovered, and the oracle (a grid's
    best cell, compare's) minus each row against twice the row's std."""
    grid = tmp_path / "grid.yaml"
    grid.write_text(textwrap.dedent("""
        title: Grid
        base: configs/fashion_mnist_resnet.yaml
        seeds: [0]
        columns: {lr0.01: {lr: 0.01}, lr0.02: {lr: 0.02}}
        rows: {wu5: {warmup-epochs: 5}}
        overrides: {batch-size: 4096}
        """))
    path = tmp_path / "vs.yaml"
    path.write_text(textwrap.dedent(f"""
        title: Versus
        base: configs/fashion_mnist_resnet.yaml
        seeds: [0, 1]
        columns: [256, 4096]
        rows: {{baseline: {{sched: baseline}}, autowu-cos: {{sched: autowu-cos}}, other: {{sched: constant}}}}
        versus: {{row: baseline, std-factor: 2, gap: {{small: "256", large: 4K}}}}
        compare: {{oracle: {{table: {grid}, column: 4096}}}}
        """))
    t = sweep.load_table(str(path))
    assert t.versus == {"row": "baseline", "std-factor": 2.0, "gap": {"small": "256", "large": "4096"}}
    runs = tmp_path / "runs"
    for name, top1 in (("baseline_b256_s0", 93.0), ("baseline_b256_s1", 93.2), ("baseline_b4096_s0", 91.0),
                       ("baseline_b4096_s1", 91.2), ("autowu-cos_b4096_s0", 91.9), ("autowu-cos_b4096_s1", 92.1),
                       ("other_b4096_s0", 91.0), ("other_b4096_s1", 91.4), ("autowu-cos_b256_s0", 93.5)):
        fake_run(runs / "vs" / name, top1)
    fake_run(runs / "grid" / "wu5_lr0.01_s0", 92.2)
    fake_run(runs / "grid" / "wu5_lr0.02_s0", 92.0)
    text = collect.collect(t, str(runs))
    part = text[text.index("Against `baseline`"):text.index("Share of")]
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in part.splitlines() if line.startswith("| ")}
    # 2 x the larger std: 2 x 0.1414 = 0.28 (baseline), 2 x 0.2828 = 0.57 (other)
    assert rows["autowu-cos"] == ["+0.40 pending (n=1/2, 2/2)", "+0.90 **better** (0.28) |"]
    assert rows["other"] == ["–", "+0.10 within noise (0.57) |"]
    assert "autowu-cos +45%" in text and "other +5%" in text  # of the 2.00-point gap
    assert "2.00-point gap from `256` to `4096`" in text
    oracle = next(line for line in text.splitlines() if line.startswith("The oracle"))
    assert "(wu5, lr0.01" in oracle and "baseline +1.10 (outside 2 × its std = 0.28)" in oracle
    assert "autowu-cos +0.20 (within 2 × its std = 0.28)" in oracle
    bad = tmp_path / "bad.yaml"
    bad.write_text(path.read_text().replace("row: baseline, std-factor", "row: base, std-factor"))
    with pytest.raises(sweep.TableError, match="versus names row 'base'"):
        sweep.load_table(str(bad))


def screen_table(tmp_path, screen: str = "") -> "sweep.Table":
    path = tmp_path / "scr.yaml"
    path.write_text(textwrap.dedent("""
        title: A screen
        base: configs/fashion_mnist_resnet.yaml
        seeds: [0, 1]
        columns:
          "256": {batch-size: 256}
          16K: {batch-size: 16384}
          16K-wu33: {batch-size: 16384, warmup-epochs: 33}
          16K-wu67: {batch-size: 16384, warmup-epochs: 67}
        rows:
          baseline: {sched: baseline}
        """) + (screen or textwrap.dedent("""
        screen:
          row: baseline
          gap: {small: "256", large: 16K, at-least: 1.5}
          better: {than: 16K, cells: [16K-wu33, 16K-wu67], std-factor: 2}
        """)))
    return sweep.load_table(str(path))


def screen_runs(tmp_path, cells: dict[str, list[float]]) -> str:
    for col, vals in cells.items():
        for seed, v in enumerate(vals):
            fake_run(tmp_path / "runs" / "scr" / f"baseline_{col}_s{seed}", v)
    return collect.collect(screen_table(tmp_path), str(tmp_path / "runs"))


def rule_lines(text: str) -> list[str]:
    lines = text.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("Pass rule"))
    return [lines[i], lines[i + 2], lines[i + 3]]


def test_screen_rule_passes_when_both_parts_hold(tmp_path):
    head, a, b = rule_lines(screen_runs(tmp_path, {"256": [92.0, 92.2], "16K": [90.0, 90.2],
                                                   "16K-wu33": [91.0, 91.2], "16K-wu67": [90.5, 90.3]}))
    assert head.endswith("**PASS**")
    assert a == "- (a) large-batch gap: `256` 92.10 (0.14) − `16K` 90.10 (0.14) = +2.00 (needs ≥ 1.5): **pass**"
    # best cell by mean; threshold 2 x max(std(best), std(16K)) = 2 x 0.141
    assert b == ("- (b) a longer warmup helps: best `16K-wu33` 91.10 (0.14) − `16K` 90.10 (0.14) = +1.00 "
                 "(needs > 2 × the larger seed std = 0.28): **pass**")


def test_screen_rule_fails_on_the_gap_or_on_seed_noise(tmp_path):
    head, a, b = rule_lines(screen_runs(tmp_path, {"256": [91.0, 91.2], "16K": [90.0, 90.6],
                                                   "16K-wu33": [90.8, 90.4], "16K-wu67": [90.0, 90.0]}))
    assert head.endswith("**FAIL**")
    assert a.endswith("= +0.80 (needs ≥ 1.5): **fail**")
    # +0.30 does not beat 2 x std(16K) = 2 x 0.424
    assert b.endswith("= +0.30 (needs > 2 × the larger seed std = 0.85): **fail**")


def test_screen_rule_is_pending_until_every_seed_is_in_and_drops_early_at_n1(tmp_path):
    head, a, b = rule_lines(screen_runs(tmp_path, {"16K": [90.0], "16K-wu33": [90.5], "16K-wu67": [89.0]}))
    assert head.endswith("pending") and a.endswith("pending (no finished run in `256` yet)")
    assert b.endswith("= +0.50: pending (seeds missing)")
    (tmp_path / "runs").rename(tmp_path / "old")
    head, a, b = rule_lines(screen_runs(tmp_path, {"16K": [90.0], "16K-wu33": [89.9], "16K-wu67": [89.0]}))
    assert head.endswith("**FAIL**") and "**fail** at n=1 (no cell above `16K`: the early-drop rule)" in b


def test_screen_rule_naming_a_column_the_table_lacks_fails_at_load(tmp_path):
    bad = textwrap.dedent("""
        screen:
          row: baseline
          gap: {small: "256", large: 16K, at-least: 1.5}
          better: {than: 16K, cells: [16K-wu34], std-factor: 2}
        """)
    with pytest.raises(sweep.TableError, match=r"screen names column\(s\) '16K-wu34'.*its columns: 256, 16K"):
        screen_table(tmp_path, bad)
    with pytest.raises(sweep.TableError, match="screen must be"):
        screen_table(tmp_path, "screen: {row: baseline}\n")


def test_compare_rows_and_the_oracle_come_from_the_other_tables_runs(table, tmp_path):
    """``compare``: another table's rows in this table's columns (reused records) and the best grid cell in one
    column; a run of the other table made with other settings is left out and named."""
    grid = tmp_path / "grd.yaml"
    grid.write_text(textwrap.dedent("""
        title: A grid
        base: configs/fashion_mnist_resnet.yaml
        seeds: [0]
        overrides: {batch-size: 1024}
        columns:
          lr0.01: {lr: 0.01}
          lr0.02: {lr: 0.02}
        rows:
          wu5: {warmup-epochs: 5}
        """))
    path = tmp_path / "new.yaml"
    path.write_text(textwrap.dedent(f"""
        title: New methods
        base: configs/fashion_mnist_resnet.yaml
        seeds: [0, 1]
        columns: [256, 1024]
        rows:
          fancy: {{sched: constant}}
        compare:
          rows: {{table: {table.path}, rows: [baseline]}}
          oracle: {{table: {grid}, column: 1K}}
        """))
    new = sweep.load_table(str(path))
    runs = tmp_path / "runs"
    fake_run(runs / "new" / "fancy_b1024_s0", 88.0)
    fake_run(runs / "tbl" / "baseline_b256_s0", 90.0)
    fake_run(runs / "tbl" / "baseline_b256_s1", 91.0)
    fake_run(runs / "tbl" / "baseline_b1024_s0", 50.0, config={"sched": "baseline", "batch_size": 1024, "epochs": 3})
    fake_run(runs / "grd" / "wu5_lr0.01_s0", 89.0)
    fake_run(runs / "grd" / "wu5_lr0.02_s0", 89.5)
    text = collect.collect(new, str(runs))
    rows: dict[str, str] = {}
    for line in text.splitlines():  # the first table (top-1); the decay-start table repeats the row names
        if line.startswith("| "):
            rows.setdefault(line.split(" | ")[0][2:], line)
    assert "1 of 4 runs finished" in text  # the page counts its own runs only
    assert rows["fancy"] == "| fancy | missing | 88.00 n=1/2 |"
    # the other table's cells: its mean (std) over its seeds; its stale run is not in the cell, and is named
    assert rows["baseline (tbl)"] == "| baseline (tbl) | 90.50 (0.71) | missing |"  # alone in its column: no bold
    assert "Left out: tbl/baseline_b1024_s0 (made with other settings than tbl now asks)." in text
    # the oracle: the grid's best cell, in its column only, and bold there (89.5 > 88.0)
    assert rows["oracle: best cell of grd (wu5, lr0.02)"] == \
        "| oracle: best cell of grd (wu5, lr0.02) | – | **89.50** |"


def test_compare_refuses_what_it_cannot_show(table, tmp_path):
    path = tmp_path / "new.yaml"
    body = textwrap.dedent("""
        title: New methods
        base: configs/fashion_mnist_resnet.yaml
        seeds: [0]
        columns: [256]
        rows:
          fancy: {sched: constant}
        """)
    path.write_text(body + "compare: {oracle: {table: no_such_grid, column: 256}}\n")
    with pytest.raises(sweep.TableError, match="no table 'no_such_grid'"):
        sweep.load_table(str(path))
    path.write_text(body + f"compare: {{oracle: {{table: {table.path}, column: 16K}}}}\n")
    with pytest.raises(sweep.TableError, match="oracle column '16K' is not a column"):
        sweep.load_table(str(path))
    path.write_text(body + f"compare: {{rows: {{table: {table.path}, rows: [autowu-kos]}}}}\n")
    with pytest.raises(sweep.TableError, match="compare's rows autowu-kos are not rows of tbl"):
        collect.collect(sweep.load_table(str(path)), str(tmp_path / "runs"))
    path.write_text(body + "compare: {rows: [baseline]}\n")
    with pytest.raises(sweep.TableError, match="compare must be"):
        sweep.load_table(str(path))
