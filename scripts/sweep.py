"""Expand a table definition (configs/tables/*.yaml) into its runs and launch them.

    python scripts/sweep.py table1 --dry-run                     # list every run: name, config, overrides, seed
    python scripts/sweep.py fashion_mnist --local                # run the pending ones here, one after another
    python scripts/sweep.py table1 --block imagenet_resnet50 --slurm --nodes 4 [--submit]   # SLURM array job
    python scripts/sweep.py table1 --local -- --data-dir /data   # after `--`: extra train.py flags for every run
    python scripts/sweep.py paper_regime --local --jobs 2 --order seed --runs-dir /work/runs/pr   # 2 runs at once
    python scripts/sweep.py paper_regime --runs-dir /work/runs/pr --export   # finished runs -> results/runs/ records

A run's output directory is ``<runs-dir>/<table>/[<block>/]<row>_<column>_s<seed>``; a run whose ``results.json``
exists is finished and skipped, so re-running a sweep only launches what is missing (and resumes what was cut:
train.py resumes from ``<output>/last.pt``). A finished run whose recorded config differs from what the table and its
base config now ask is *stale*: the sweep lists it and refuses to start until ``--rerun-stale`` sets it
aside. Extra flags after ``--`` are not part of a run's identity: use them for paths and throughput
(``--data-dir``, ``--workers``, ``--micro-batch``), never for what changes the result.

A results.json that cannot be read (empty, truncated, not an object) marks a *failed* run: it is listed with the file
and the reason and run again. ``--export`` copies each finished run's compact record (a few hundred kB) to
``results/runs/<table>/...``; a run with a record there counts as done, so a sweep continues on another machine from
the repository alone, and ``scripts/collect.py``/``plot.py`` rebuild the pages with ``--runs-dir results/runs``.

Table definition format (one YAML per paper table or figure; keys below, all but ``title``/``base``/``rows``/``columns``
optional; ``blocks`` repeats the per-block keys for tables with several dataset blocks, like the paper's Table 1):

    title: "Table 1 (AdamP) ..."             # shown above the collected table
    caption: "..."                           # shown below it (reductions, notes)
    paper: results/paper/table1.csv          # the paper's numbers: source,block,row,column,top1,top1_std
    metric: final_top1                       # key of results.json reported in the cells
    base: configs/cifar10_resnet18.yaml      # base config (train.py --config)
    seeds: [0, 1, 2]
    column-header: Batch size
    columns: [256, 1024]                     # batch sizes, or a mapping {label: {flag: value, ...}}
    rows: {baseline: {sched: baseline}, autowu-cos: {sched: autowu-cos}}
    overrides: {epochs: 10}                  # flags for every run of the table (or block)
    cells: {"baseline/16384": {lr: 0.008}}   # flags for one cell (row/column)
    figure: {rows: [baseline, autowu-cos]}   # rows scripts/plot.py draws by default; a grid table (columns set lr,
                                             # rows warmup-epochs) takes {mark: TABLE}: TABLE's AutoWU runs are
                                             # marked on its figure (plot.py --mark's default)
    paper-beside: {csv: results/paper/table1.csv, block: cifar10_resnet18, label: "CIFAR-10"}  # shape, not values
    blocks: {cifar10_resnet18: {label: "CIFAR-10 (ResNet-18)", base: ..., ...}}

Flags are train.py's flag names without dashes (``batch-size``, ``autowu-rho-w``), as in the base YAMLs.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import csv
import datetime
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLES_DIR = os.path.join(ROOT, "configs", "tables")
BLOCK_KEYS = {"label", "base", "seeds", "columns", "column-header", "rows", "overrides", "cells", "figure"}
TABLE_KEYS = BLOCK_KEYS | {"title", "caption", "paper", "metric", "blocks", "paper-beside"}
RECORDS_DIR = os.path.join("results", "runs")   # compact records of finished runs, committed (see export_record)
RECORD_FILES = ("args.yaml", "env.json", "results.json", "epochs.jsonl", "events.jsonl")
RECORD_STEP_ROWS = 2000                         # steps.csv of a record: at most about this many rows
CLUSTER_KEYS = ("AUTOWU_PARTITION", "AUTOWU_ACCOUNT", "AUTOWU_GPUS_PER_NODE", "AUTOWU_CPUS_PER_TASK", "AUTOWU_TIME",
                "AUTOWU_DATA_ROOT", "AUTOWU_SETUP", "AUTOWU_MAX_PARALLEL", "AUTOWU_SBATCH_ARGS", "AUTOWU_GRES")


NAME_OK = re.compile(r"[A-Za-z0-9_.+-]+")     # row, column and block names: parts of a run directory's name


class TableError(ValueError):
    """A table definition that cannot be expanded: the message names the file, the key and what to do."""


class ResultsError(ValueError):
    """A results.json that exists but cannot be used (not JSON, not an object): the message names the file."""


def read_results(path: str) -> Optional[dict]:
    """The results.json at ``path`` as a dict; None when there is none. Raises :class:`ResultsError` naming the file
    when it is empty, truncated, not JSON or not an object (a run cut while writing it, or a damaged copy)."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ResultsError(f"{path}: cannot be read ({e.strerror})") from None
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise ResultsError(f"{path}: not valid JSON ({'empty file' if not text.strip() else e})") from None
    if not isinstance(obj, dict):
        raise ResultsError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def steps_per_epoch(result: Optional[dict], epochs_of_rows: list[int]) -> int:
    """Optimizer steps per epoch of a run: from results.json (``steps / epochs``) when it has both, else the
    largest count of steps.csv rows in one epoch (exact only for an undecimated steps.csv)."""
    if result and result.get("epochs") and result.get("steps"):
        return max(1, round(float(result["steps"]) / float(result["epochs"])))
    return max(collections.Counter(epochs_of_rows).values()) if epochs_of_rows else 1


@dataclass
class Column:
    key: str                 # as in the paper CSV's `column` field ("1024", "lr0.008")
    header: str              # as printed in the table ("1K", "lr0.008")
    dirname: str             # part of the run directory ("b1024", "lr0.008")
    overrides: dict


@dataclass
class Block:
    name: str                # "" for a table without blocks
    label: str
    base: str
    seeds: list[int]
    columns: list[Column]
    column_header: str
    rows: dict[str, dict]
    overrides: dict
    cells: dict[str, dict]
    figure_rows: list[str]
    figure_mark: Optional[str] = None  # a grid's figure marks this table's AutoWU runs (plot.py --mark)


@dataclass
class Table:
    name: str
    path: str
    title: str
    caption: str
    paper: Optional[str]
    metric: str
    blocks: list[Block]
    paper_beside: Optional[dict] = None   # {csv, block, label, baseline}: another setting's cells, for the shape


@dataclass
class Run:
    table: str
    block: str
    row: str
    column: str
    seed: int
    config: str
    overrides: dict = field(default_factory=dict)   # flag -> value, batch-size included
    output: str = ""
    expected: dict = field(default_factory=dict)    # resolved values results.json must record (check_runs)

    @property
    def name(self) -> str:
        return "/".join(p for p in (self.table, self.block, os.path.basename(self.output)) if p)

    @property
    def record(self) -> str:
        """Where this run's compact record lives in the repository: ``results/runs/<table>/[<block>/]<run>``."""
        return os.path.join(RECORDS_DIR, self.table, self.block, os.path.basename(self.output))

    @property
    def results_path(self) -> str:
        """The run directory's results.json, or the committed record's when only the record exists."""
        own = os.path.join(ROOT, self.output, "results.json")
        rec = os.path.join(ROOT, self.record, "results.json")
        return rec if not os.path.exists(own) and os.path.exists(rec) else own

    def results(self) -> Optional[dict]:
        """results.json as a dict; None if absent; :class:`ResultsError` (naming the file) if unreadable."""
        return read_results(self.results_path)

    @property
    def done(self) -> bool:
        """Finished: a readable results.json in the run directory or in the committed record. An unreadable one
        (empty, truncated) is a failed run: it is run again (train.py resumes from last.pt)."""
        try:
            return self.results() is not None
        except ResultsError:
            return False

    @property
    def problem(self) -> Optional[str]:
        """Why an existing results.json does not count (the file and the reason), else None."""
        try:
            self.results()
        except ResultsError as e:
            return str(e)
        return None

    def stale(self) -> list[str]:
        """The settings in which a finished run differs from what its command line now fixes (``flag: ran ->
        wanted``): the table or its base config changed since it ran. Empty for a pending run or one without a
        recorded config."""
        try:
            ran = (self.results() or {}).get("config") or {}
        except ResultsError:
            return []
        if not isinstance(ran, dict):
            return []
        norm = lambda v: json.loads(json.dumps(v))  # noqa: E731  (tuples vs lists)
        return [f"{k.replace('_', '-')}: {ran[k]!r} -> {v!r}" for k, v in self.expected.items()
                if k in ran and norm(ran[k]) != norm(v)]


# ---------------------------------------------------------------------------------------------------------------
# table definitions

def table_path(name_or_path: str) -> str:
    """``table1`` -> ``configs/tables/table1.yaml``; a path is returned as is."""
    if os.path.isfile(name_or_path):
        return name_or_path
    path = os.path.join(TABLES_DIR, name_or_path + ".yaml")
    if not os.path.isfile(path):
        known = sorted(f[:-5] for f in os.listdir(TABLES_DIR) if f.endswith(".yaml")) if os.path.isdir(TABLES_DIR) else []
        raise TableError(f"no table {name_or_path!r}: neither a file nor configs/tables/{name_or_path}.yaml; "
                         f"known tables: {', '.join(known)}")
    return path


def batch_header(b: int) -> str:
    """1024 -> '1K', 16384 -> '16K', 256 -> '256' (the paper's column headers)."""
    return f"{b // 1024}K" if b >= 1024 and b % 1024 == 0 else str(b)


def _mapping(value: Any, what: str, path: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TableError(f"{path}: {what} must be a mapping of train.py flags to values, got {value!r}")
    return {str(k).replace("_", "-"): v for k, v in value.items()}


def _columns(value: Any, path: str) -> list[Column]:
    if isinstance(value, list) and value and all(isinstance(b, int) and not isinstance(b, bool) and b > 0
                                                 for b in value):
        return [Column(str(b), batch_header(b), f"b{b}", {"batch-size": b}) for b in value]
    if isinstance(value, dict) and value:
        return [Column(str(k), str(k), str(k), _mapping(v, f"column {k!r}", path)) for k, v in value.items()]
    raise TableError(f"{path}: columns must be a non-empty list of batch sizes (e.g. [256, 1024]) or a mapping "
                     f"{{label: {{flag: value}}}}, got {value!r}")


def _block(name: str, spec: dict, defaults: dict, path: str) -> Block:
    merged = {**defaults, **spec}
    where = f"{path} (block {name!r})" if name else path
    unknown = set(spec) - BLOCK_KEYS
    if unknown:
        raise TableError(f"{where}: unknown key(s) {sorted(unknown)}; a block takes {sorted(BLOCK_KEYS)}")
    for key in ("base", "rows", "columns"):
        if key not in merged:
            raise TableError(f"{where}: missing {key!r}")
    base = merged["base"]
    if not os.path.isfile(os.path.join(ROOT, base)):
        raise TableError(f"{where}: base config {base!r} does not exist (paths are relative to the repository root)")
    seeds = merged.get("seeds", [0])
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise TableError(f"{where}: seeds must be a non-empty list of integers, got {seeds!r}")
    rows = merged["rows"]
    if not isinstance(rows, dict) or not rows:
        raise TableError(f"{where}: rows must be a non-empty mapping {{row name: {{flag: value}}}}")
    rows = {str(r): _mapping(o, f"row {r!r}", where) for r, o in rows.items()}
    columns = _columns(merged["columns"], where)
    for what, names in (("row", list(rows)), ("column", [c.key for c in columns]), ("block", [name] if name else [])):
        for n in names:
            if not NAME_OK.fullmatch(n):
                raise TableError(f"{where}: {what} name {n!r} cannot name a run directory (it must be letters, "
                                 "digits and _.+- only: a '/' would put two runs' records in one place)")
    cells = {}
    for key, o in (merged.get("cells") or {}).items():
        row, _, col = str(key).partition("/")
        if row not in rows or col not in [c.key for c in columns]:
            raise TableError(f"{where}: cell {key!r} must be 'row/column' with a row in {list(rows)} and a column "
                             f"in {[c.key for c in columns]}")
        cells[str(key)] = _mapping(o, f"cell {key!r}", where)
    figure = merged.get("figure") or {}
    if not isinstance(figure, dict):
        raise TableError(f"{where}: figure must be a mapping {{rows: [row, ...], mark: TABLE}}, got {figure!r}")
    unknown = set(figure) - {"rows", "mark"}
    if unknown:
        raise TableError(f"{where}: figure takes rows and mark; unknown {sorted(unknown)}")
    figure_rows = figure.get("rows", list(rows))
    for r in figure_rows:
        if r not in rows:
            raise TableError(f"{where}: figure row {r!r} is not one of the rows {list(rows)}")
    mark = figure.get("mark")
    if mark is not None:
        try:
            table_path(str(mark))  # a name or a path, as plot.py --mark takes it
        except TableError as e:
            raise TableError(f"{where}: figure mark {mark!r}: {e}") from None
    return Block(name=name, label=str(merged.get("label", name)), base=base, seeds=seeds, columns=columns,
                 column_header=str(merged.get("column-header", "Batch size")), rows=rows,
                 overrides=_mapping(merged.get("overrides"), "overrides", where), cells=cells,
                 figure_rows=list(figure_rows), figure_mark=None if mark is None else str(mark))


def load_table(name_or_path: str) -> Table:
    """Read and check a table definition (format in this module's docstring)."""
    path = table_path(name_or_path)
    with open(path) as f:
        try:
            spec = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise TableError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(spec, dict):
        raise TableError(f"{path}: a table definition is a mapping (see scripts/sweep.py's docstring)")
    spec = {str(k).replace("_", "-"): v for k, v in spec.items()}
    unknown = set(spec) - TABLE_KEYS
    if unknown:
        raise TableError(f"{path}: unknown key(s) {sorted(unknown)}; a table takes {sorted(TABLE_KEYS)}")
    if "title" not in spec:
        raise TableError(f"{path}: missing 'title'")
    paper = spec.get("paper")
    if paper is not None and not os.path.isfile(os.path.join(ROOT, paper)):
        raise TableError(f"{path}: paper numbers {paper!r} do not exist")
    defaults = {k: v for k, v in spec.items() if k in BLOCK_KEYS}
    blocks_spec = spec.get("blocks")
    if blocks_spec is None:
        blocks = [_block("", {}, defaults, path)]
    elif isinstance(blocks_spec, dict) and blocks_spec:
        blocks = [_block(str(n), {str(k).replace("_", "-"): v for k, v in (b or {}).items()}, defaults, path)
                  for n, b in blocks_spec.items()]
    else:
        raise TableError(f"{path}: blocks must be a non-empty mapping {{block name: {{...}}}}")
    beside = spec.get("paper-beside")
    if beside is not None:
        if not (isinstance(beside, dict) and isinstance(beside.get("csv"), str)
                and os.path.isfile(os.path.join(ROOT, beside["csv"]))):
            raise TableError(f"{path}: paper-beside must be a mapping with csv: an existing results/paper/*.csv "
                             f"(and optionally block, label, baseline), got {beside!r}")
        unknown = set(beside) - {"csv", "block", "label", "baseline"}
        if unknown:
            raise TableError(f"{path}: paper-beside takes csv, block, label, baseline; unknown {sorted(unknown)}")
    name = os.path.splitext(os.path.basename(path))[0]
    return Table(name=name, path=path, title=str(spec["title"]), caption=str(spec.get("caption", "")).strip(),
                 paper=paper, metric=str(spec.get("metric", "final_top1")), blocks=blocks, paper_beside=beside)


def expand(table: Table, runs_dir: str = "runs", blocks: Optional[list[str]] = None, rows: Optional[list[str]] = None,
           columns: Optional[list[str]] = None, seeds: Optional[list[int]] = None) -> list[Run]:
    """Every run of ``table`` (optionally filtered), in table order: block, row, column, seed.

    Overrides merge as base YAML < table/block ``overrides`` < column < row < cell, so a cell wins.
    """
    runs = []
    for block in table.blocks:
        if blocks and block.name not in blocks:
            continue
        for row, row_over in block.rows.items():
            if rows and row not in rows:
                continue
            for col in block.columns:
                if columns and col.key not in columns and col.header not in columns:
                    continue
                over = {**block.overrides, **col.overrides, **row_over, **block.cells.get(f"{row}/{col.key}", {})}
                for seed in block.seeds:
                    if seeds is not None and seed not in seeds:
                        continue
                    out = os.path.join(runs_dir, table.name, block.name, f"{row}_{col.dirname}_s{seed}")
                    runs.append(Run(table.name, block.name, row, col.key, seed, block.base, over,
                                    os.path.normpath(out)))
    return runs


# ---------------------------------------------------------------------------------------------------------------
# command lines

def get_train_parser() -> argparse.ArgumentParser:
    """train.py's own parser (the single source of flag names, types and boolean styles)."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import train  # noqa: E402  (repository root)
    return train.get_args_parser()


def flag_tokens(parser: argparse.ArgumentParser, key: str, value: Any) -> list[str]:
    """``('autowu-rollback', True)`` -> ``['--autowu-rollback']``, ``('opt-betas', [0.9, 0.999])`` ->
    ``['--opt-betas', '0.9', '0.999']``, following the flag's argparse action."""
    flag = "--" + key
    actions = {opt: a for a in parser._actions for opt in a.option_strings}
    action = actions.get(flag)
    if action is None:
        raise TableError(f"unknown train.py flag {key!r}; see `python train.py --help`")
    if isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise TableError(f"flag {key!r} takes true/false, got {value!r}")
        return [flag if value else "--no-" + key]
    if isinstance(action, argparse._StoreTrueAction):
        if value is not True:
            raise TableError(f"flag {key!r} can only be switched on (true) from the command line, got {value!r}")
        return [flag]
    if isinstance(value, dict):
        return [flag, yaml.safe_dump(value, default_flow_style=True).strip()]
    if isinstance(value, (list, tuple)):
        return [flag] + [str(v) for v in value]
    return [flag, str(value)]


def train_argv(run: Run, parser: argparse.ArgumentParser, extra: Optional[list[str]] = None) -> list[str]:
    """train.py's arguments for ``run``: ``--config BASE --output DIR --seed S --batch-size B ...``."""
    argv = ["--config", run.config, "--output", run.output, "--seed", str(run.seed)]
    for key, value in run.overrides.items():
        argv += flag_tokens(parser, key, value)
    return argv + list(extra or [])


# Flags that change how fast a run goes or where it reads and writes, never its result: a finished run that differs
# from the table only in these is not stale (they may also be given after `--`). The settings a resume may change
# (framework.runspec.RESUME_MAY_CHANGE), plus the device and the input pipeline's place, which a table leaves to the
# machine that runs it, and the flags that are not part of a run's config.
NOT_IDENTITY_EXTRA = {"gpu_data", "device", "config", "local_rank", "dist_timeout"}


def check_runs(runs: list[Run], parser: argparse.ArgumentParser) -> None:
    """Parse every run's command line with train.py's parser (flag names, types, choices); raise on the first bad one.
    Records in ``run.expected`` the values the run's command line fixes (for ``Run.stale``)."""
    from framework.config import ConfigError, parse_args  # noqa: E402  (get_train_parser put ROOT on sys.path)
    from framework.runspec import RESUME_MAY_CHANGE  # noqa: E402
    not_identity = RESUME_MAY_CHANGE | NOT_IDENTITY_EXTRA
    for run in runs:
        argv = train_argv(run, parser)
        cwd = os.getcwd()
        try:
            os.chdir(ROOT)
            ns = parse_args(parser, argv)
        except SystemExit:
            raise TableError(f"run {run.name}: train.py rejects {shlex.join(argv)} (message above)") from None
        except ConfigError as e:
            raise TableError(f"run {run.name}: {e}") from None
        finally:
            os.chdir(cwd)
        # every setting the base config and the table fix (train.py fills the unset ones, None here, itself)
        run.expected = {k: v for k, v in vars(ns).items() if k not in not_identity and v is not None}


# ---------------------------------------------------------------------------------------------------------------
# launchers

def run_local(runs: list[Run], parser: argparse.ArgumentParser, nproc: int, extra: list[str], jobs: int = 1,
              threads: Optional[int] = None) -> int:
    """Run ``runs`` on this machine, ``jobs`` at a time (in list order), each with ``threads // jobs`` CPU threads
    (``OMP_NUM_THREADS``; on a GPU the runs share the device); returns the number that failed. A run's output is
    passed through (prefixed with its name when ``jobs > 1``); when it fails, its exit code and last lines are
    appended to its own ``train.log``, so the log never shows only an earlier attempt's lines."""
    env_threads = os.environ.get("OMP_NUM_THREADS", "")
    total_threads = threads or (int(env_threads) if env_threads.isdigit() else 0) or os.cpu_count() or 1
    per_run = max(1, total_threads // max(jobs, 1))
    failed: list[str] = []
    lock = threading.Lock()

    def one(i: int, run: Run) -> None:
        argv = train_argv(run, parser, extra)
        if nproc > 1:
            cmd = ["bash", os.path.join("scripts", "launch_local.sh"), str(nproc)] + argv
        else:
            cmd = [sys.executable, "train.py"] + argv
        with lock:
            print(f"[sweep] ({i}/{len(runs)}) {run.name}\n[sweep] $ {shlex.join(cmd)}", flush=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(per_run), "MKL_NUM_THREADS": str(per_run),
               "PYTHONUNBUFFERED": "1"}  # lines as they come, not in 8 kB blocks through the pipe
        tail: collections.deque = collections.deque(maxlen=40)
        prefix = f"[{run.name}] " if jobs > 1 else ""
        try:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, errors="replace", bufsize=1)
        except OSError as e:
            rc, tail = -1, collections.deque([f"could not start {cmd[0]}: {e}"])
        else:
            assert proc.stdout is not None
            for line in proc.stdout:
                tail.append(line.rstrip("\n"))
                with lock:
                    sys.stdout.write(prefix + line)
                    sys.stdout.flush()
            rc = proc.wait()
        if rc != 0 or not run.done:
            why = "; ".join(w for w in (f"exit code {rc}" if rc else "exit code 0 but no results.json",
                                        run.problem) if w)
            log_failure(run, why, list(tail))
            with lock:
                print(f"[sweep] {run.name} failed ({why}); see {run.output}/train.log", flush=True)
                failed.append(run.name)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
        for fut in [pool.submit(one, i, run) for i, run in enumerate(runs, 1)]:
            fut.result()
    if failed:
        print(f"[sweep] {len(failed)} run(s) failed: {', '.join(failed)}")
    return len(failed)


def log_failure(run: Run, why: str, tail: list[str]) -> None:
    """Append a failed attempt's exit code and last output lines to the run's own train.log."""
    out = os.path.join(ROOT, run.output)
    try:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "train.log"), "a") as f:
            stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
            f.write(f"{stamp} [sweep] this attempt failed ({why}); its last output lines:\n")
            f.writelines(f"    {line}\n" for line in tail)
    except OSError as e:  # a run directory that cannot be written: the console message is all there is
        print(f"[sweep] cannot append to {out}/train.log: {e}", file=sys.stderr)


def order_runs(runs: list[Run], order: str) -> list[Run]:
    """``table``: table order (block, row, column, seed). ``seed``: the most informative runs first — seed-major
    (every cell's first seed before any cell's second seed, so a sweep cut short has covered the whole table once),
    and within a seed the columns from the outside in (largest, smallest, next largest, ...: the two ends of a batch
    sweep, where the large-batch gap shows, come first), rows in table order within a column."""
    if order == "table":
        return list(runs)
    seeds = sorted({r.seed for r in runs})
    columns = list(dict.fromkeys(r.column for r in runs))
    inward = []
    while columns:
        inward.append(columns.pop())
        if columns:
            inward.append(columns.pop(0))
    return sorted(runs, key=lambda r: (seeds.index(r.seed), inward.index(r.column)))  # stable: rows keep order


# ---------------------------------------------------------------------------------------------------------------
# compact records (results/runs/): what a later session needs to continue a sweep and rebuild its pages

def compact_steps(src: str, dst: str, result: Optional[dict], max_rows: int = RECORD_STEP_ROWS) -> int:
    """Write steps.csv decimated to about ``max_rows`` rows: each row is the first step of a bin of ``k``
    consecutive steps with that step's LR, and the mean of the bin's finite losses (column ``n``: steps averaged).
    The steps the pages read exactly are kept as their own rows: the first and last step, the first step at the
    largest LR, and the steps either side of AutoWU's switch. Returns the number of rows written."""
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        shutil.copyfile(src, dst)
        return 0
    k = max(1, math.ceil(len(rows) / max_rows))
    lrs = [float(r["lr"]) for r in rows]
    keep = {0, len(rows) - 1, lrs.index(max(lrs))}
    switch = (result or {}).get("switch")
    if isinstance(switch, dict) and isinstance(switch.get("step"), int):
        index = {int(r["step"]): i for i, r in enumerate(rows)}
        keep |= {index[s] for s in (switch["step"] - 1, switch["step"]) if s in index}
    out = []
    for start in range(0, len(rows), k):
        group = rows[start:start + k]
        losses = [float(r["loss"]) for r in group if math.isfinite(float(r["loss"]))]
        out.append((start, group[0], sum(losses) / len(losses) if losses else float("nan"), len(group)))
    out += [(i, rows[i], float(rows[i]["loss"]), 1) for i in keep if i % k]
    out.sort(key=lambda t: t[0])
    with open(dst, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "epoch", "lr", "loss", "n"])
        for _, r, loss, n in out:
            w.writerow([r["step"], r["epoch"], r["lr"], loss, n])
    return len(out)


def export_record(run: Run, dest_root: str) -> Optional[str]:
    """Copy a finished run's compact record (RECORD_FILES + decimated steps.csv) to ``dest_root/<table>/[<block>/]
    <run>``; returns that directory, or None when the run is not finished or its record is already there and
    identical."""
    src = os.path.join(ROOT, run.output)
    result = read_results(os.path.join(src, "results.json"))  # ResultsError for a damaged one: never exported
    if result is None:
        return None
    dst = os.path.join(dest_root, run.table, run.block, os.path.basename(run.output))
    if os.path.abspath(dst) == os.path.abspath(src):
        return None
    old = os.path.join(dst, "results.json")
    if os.path.isfile(old):
        with open(old) as a, open(os.path.join(src, "results.json")) as b:
            if a.read() == b.read():
                return None
    tmp = dst + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name in RECORD_FILES:
        if os.path.isfile(os.path.join(src, name)):
            shutil.copyfile(os.path.join(src, name), os.path.join(tmp, name))
    if os.path.isfile(os.path.join(src, "steps.csv")):
        compact_steps(os.path.join(src, "steps.csv"), os.path.join(tmp, "steps.csv"), result)
    shutil.rmtree(dst, ignore_errors=True)
    os.rename(tmp, dst)
    return dst


def export_records(runs: list[Run], dest_root: str) -> int:
    """Export every finished run of ``runs``; prints what was copied and the records' total size."""
    copied, skipped = [], []
    for run in runs:
        try:
            dst = export_record(run, dest_root)
        except ResultsError as e:
            skipped.append(str(e))
            continue
        if dst:
            copied.append(dst)
    for msg in skipped:
        print(f"[sweep] not exported (a failed run; --local runs it again): {msg}", file=sys.stderr)
    size = sum(os.path.getsize(os.path.join(d, f)) for d in copied for f in os.listdir(d))
    print(f"[sweep] exported {len(copied)} record(s) to {dest_root} ({size / 1e6:.2f} MB)")
    for d in copied:
        print(f"[sweep]   {os.path.relpath(d, ROOT) if d.startswith(ROOT) else d}")
    return 0


def cluster_settings(path: Optional[str] = None) -> dict[str, str]:
    """Cluster settings: the KEY=VALUE file ``$AUTOWU_CLUSTER_ENV`` (default scripts/slurm/cluster.env), then the
    environment, which wins (same precedence as scripts/slurm/common.sh)."""
    path = path or os.environ.get("AUTOWU_CLUSTER_ENV") or os.path.join(ROOT, "scripts", "slurm", "cluster.env")
    settings: dict[str, str] = {}
    if os.path.isfile(path):
        with open(path) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                key, sep, value = line.removeprefix("export ").partition("=")
                if not sep:
                    raise TableError(f"{path}:{n}: expected KEY=VALUE, got {line!r}")
                try:
                    words = shlex.split(value, comments=True)
                except ValueError as e:  # an unclosed quote
                    raise TableError(f"{path}:{n}: cannot read the value of {key.strip()} ({e}); quote it as bash "
                                     "would, e.g. KEY=\"a b\"") from None
                settings[key.strip()] = " ".join(words)
    settings.update({k: os.environ[k] for k in CLUSTER_KEYS if k in os.environ})
    return settings


SBATCH_SAFE = re.compile(r"[A-Za-z0-9_.,:=%/+@~-]*")


def sbatch_line(option: str, where: str) -> str:
    """``#SBATCH OPTION``, refusing characters that sbatch or the shell would read as more than one word (spaces,
    quotes, ``$``, ``;``, a newline that would start a shell command of the batch script): TableError naming
    ``where`` the value came from."""
    if not SBATCH_SAFE.fullmatch(option):
        bad = sorted({c for c in option if not SBATCH_SAFE.fullmatch(c)})
        raise TableError(f"{where}: {option!r} cannot go into an #SBATCH line (it holds {''.join(bad)!r}); use "
                         "letters, digits and _.,:=%/+@~- only")
    return f"#SBATCH {option}"


def slurm_script(runs: list[Run], parser: argparse.ArgumentParser, nodes: int, extra: list[str],
                 settings: dict[str, str], job_name: str, log_dir: str) -> str:
    """Text of an sbatch array job: task ``i`` runs ``runs[i]`` through scripts/slurm/{single,multi}_node.sbatch."""
    gpus = settings.get("AUTOWU_GPUS_PER_NODE", "")
    header = [(f"--job-name={job_name}", "the table name"), (f"--array=0-{len(runs) - 1}" + (
              f"%{settings['AUTOWU_MAX_PARALLEL']}" if settings.get("AUTOWU_MAX_PARALLEL") else ""),
              "AUTOWU_MAX_PARALLEL"), (f"--nodes={nodes}", "--nodes"), ("--ntasks-per-node=1", ""), ("--requeue", ""),
              ("--signal=B:USR1@90", ""), ("--open-mode=append", ""), (f"--output={log_dir}/%x_%A_%a.out", "--runs-dir")]
    for key, opt in (("AUTOWU_PARTITION", "partition"), ("AUTOWU_ACCOUNT", "account"), ("AUTOWU_TIME", "time")):
        if settings.get(key):
            header.append((f"--{opt}={settings[key]}", key))
    header.append((f"--cpus-per-task={settings.get('AUTOWU_CPUS_PER_TASK') or 8}", "AUTOWU_CPUS_PER_TASK"))
    gres = settings.get("AUTOWU_GRES") or (f"gpu:{gpus}" if gpus else "none")  # "none": a cluster without GPUs
    if gres != "none":
        header.append((f"--gres={gres}", "AUTOWU_GRES / AUTOWU_GPUS_PER_NODE"))
    try:
        header += [(a, "AUTOWU_SBATCH_ARGS") for a in shlex.split(settings.get("AUTOWU_SBATCH_ARGS", ""))]
    except ValueError as e:
        raise TableError(f"AUTOWU_SBATCH_ARGS: cannot split {settings['AUTOWU_SBATCH_ARGS']!r} ({e})") from None
    launcher = "multi_node.sbatch" if nodes > 1 else "single_node.sbatch"
    lines = ["#!/bin/bash", "# Written by scripts/sweep.py: one array task per run; re-running the sweep skips "
             "finished runs."]
    lines += [sbatch_line(h, where or "sweep.py") for h, where in header]
    lines += ["", f"cd {shlex.quote(ROOT)}", "RUNS=("]
    lines += [f"  {shlex.quote(shlex.join(train_argv(r, parser, extra)))}" for r in runs]
    lines += [")", "eval \"set -- ${RUNS[$SLURM_ARRAY_TASK_ID]}\"",
              "# exec keeps this shell's PID, so the launcher's USR1 trap gets SLURM's --signal=B:USR1",
              f"exec bash scripts/slurm/{launcher} \"$@\"", ""]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Anything after `--` is passed to every train.py command.")
    p.add_argument("table", help="table name (configs/tables/NAME.yaml) or path")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--dry-run", action="store_true", help="list the runs (pending and done) and exit")
    mode.add_argument("--local", action="store_true", help="run pending runs here, one after another")
    mode.add_argument("--slurm", action="store_true", help="write an sbatch array job for the pending runs")
    mode.add_argument("--export", nargs="?", const=os.path.join(ROOT, RECORDS_DIR), metavar="DEST",
                      help="copy every finished run's compact record (args.yaml, env.json, results.json, "
                           "epochs.jsonl, events.jsonl, decimated steps.csv) to DEST/<table>/ (default: "
                           "results/runs/ of this checkout, where it counts as done for later sweeps)")
    p.add_argument("--submit", action="store_true", help="with --slurm: call sbatch on the written file")
    p.add_argument("--runs-dir", default="runs", help="root of the run directories (default: runs)")
    p.add_argument("--block", nargs="+", help="only these blocks")
    p.add_argument("--rows", nargs="+", help="only these rows")
    p.add_argument("--columns", nargs="+", help="only these columns (e.g. 1024 or 1K)")
    p.add_argument("--seeds", nargs="+", type=int, help="only these seeds")
    p.add_argument("--nproc", type=int, default=1, help="--local: processes (GPUs) per run via scripts/launch_local.sh")
    p.add_argument("--jobs", type=int, default=1, help="--local: runs at once (CPU threads divided among them; "
                   "on a GPU they share the device)")
    p.add_argument("--threads", type=int, default=None,
                   help="--local: CPU threads in all (default: $OMP_NUM_THREADS, else the CPU count)")
    p.add_argument("--order", choices=["table", "seed"], default="table",
                   help="--local/--slurm: run order; seed = every cell's first seed before any second seed, "
                        "columns from the outside in (largest batch, smallest, ...)")
    p.add_argument("--nodes", type=int, default=1, help="--slurm: nodes per run (>1 uses multi_node.sbatch)")
    p.add_argument("--rerun-stale", action="store_true",
                   help="runs finished with settings the table no longer asks for: move them to OUTPUT.stale-TIME "
                        "and run them again (without this flag such runs stop --local/--slurm with an error)")
    args = p.parse_args(argv)
    for name in ("jobs", "threads", "nproc", "nodes"):
        value = getattr(args, name)
        if value is not None and value < 1:
            print(f"error: --{name} must be >= 1, got {value}", file=sys.stderr)
            return 2
    try:
        table = load_table(args.table)
        runs = expand(table, args.runs_dir, args.block, args.rows, args.columns, args.seeds)
        if not runs:
            raise TableError(f"no run of {table.name} matches the filters")
        parser = get_train_parser()
        check_runs(runs, parser)
    except TableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.export:
        return export_records(runs, args.export)
    stale = {r.name: r.stale() for r in runs if r.done}
    stale = {name: diff for name, diff in stale.items() if diff}
    pending = order_runs([r for r in runs if not r.done or r.name in stale], args.order)
    failed = {r.name: r.problem for r in runs if r.problem}
    for name, problem in failed.items():
        print(f"[sweep] {name}: failed, will run again: {problem}", file=sys.stderr)
    print(f"[sweep] {table.name}: {len(runs)} runs, {len(runs) - len(pending)} done, {len(pending)} pending"
          + (f" ({len(stale)} of them stale: finished with other settings)" if stale else ""))
    if args.dry_run:
        for r in order_runs(runs, args.order):
            state = ("stale  " if r.name in stale else "done   " if r.done else "failed " if r.name in failed
                     else "pending")
            over = " ".join(f"{k}={v}" for k, v in r.overrides.items())
            print(f"{state} {r.name:<48} seed={r.seed} config={r.config} {over}")
            print(f"        python train.py {shlex.join(train_argv(r, parser, extra))}")
        return 0
    if not pending:
        return 0
    if stale:
        if not args.rerun_stale:
            for name, diff in stale.items():
                print(f"error: {name} finished with other settings than the table asks ({'; '.join(diff)})",
                      file=sys.stderr)
            print("error: pass --rerun-stale to set those runs aside (OUTPUT.stale-TIME) and run them again, or "
                  "use another --runs-dir", file=sys.stderr)
            return 2
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        for r in pending:
            if r.name in stale:
                src = os.path.join(ROOT, r.output)
                os.rename(src, f"{src}.stale-{stamp}")
                print(f"[sweep] {r.name}: set aside as {r.output}.stale-{stamp}")
    if args.local:
        return 1 if run_local(pending, parser, args.nproc, extra, args.jobs, args.threads) else 0
    log_dir = os.path.join(ROOT, args.runs_dir, table.name, "slurm")
    try:  # every value checked before anything is written
        text = slurm_script(pending, parser, args.nodes, extra, cluster_settings(), f"autowu-{table.name}", log_dir)
    except TableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(log_dir, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(log_dir, f"{table.name}_{stamp}.sbatch")
    with open(path, "w") as f:
        f.write(text)
    print(f"[sweep] wrote {path} ({len(pending)} array tasks, {args.nodes} node(s) each)")
    if args.submit:
        return subprocess.call(["sbatch", path], cwd=ROOT)
    print(f"[sweep] submit with: sbatch {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
