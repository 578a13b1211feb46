"""Table definitions (configs/tables/*.yaml) expanded into runs: each run's directory, its train.py command line,
whether it is finished, failed or stale.

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
    overrides: {epochs: 10}                  # flags for every run of the table (a block's own add to them)
    cells: {"baseline/16384": {lr: 0.008}}   # flags for one cell (row/column)
    figure: {rows: [baseline, autowu-cos]}   # rows scripts/plot.py draws by default (and compare's rows beside
                                             # them); a grid table (columns set lr, rows warmup-epochs) takes
                                             # {mark: TABLE}: TABLE's AutoWU runs are marked on its figure
                                             # (plot.py --mark's default)
    paper-beside: {csv: results/paper/table1.csv, block: cifar10_resnet18, label: "CIFAR-10"}  # shape, not values
    screen: {row: baseline, gap: {small: "256", large: 16K, at-least: 1.5},   # a screen's pass rule, computed per
             better: {than: 16K, cells: [16K-wu33], std-factor: 2}}          # block by collect.py (proxy_screen)
    versus: {row: baseline, std-factor: 2, gap: {small: "256", large: 16K}}  # each row minus the baseline with a
                                             # verdict, and the share of the baseline's 256 -> 16K gap recovered
    compare: {rows: {table: paper_regime, rows: [baseline, autowu-cos]},   # another table's rows in this table's
              oracle: {table: paper_regime_grid, column: 16384}}           # columns (on the page and plot.py's
                                                                           # figure), and the best cell of a grid
                                                                           # in one column (collect.py; auto_lr)
    blocks: {cifar10_resnet18: {label: "CIFAR-10 (ResNet-18)", base: ..., ...}}

Flags are train.py's flag names without dashes (``batch-size``, ``autowu-rho-w``), as in the base YAMLs.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLES_DIR = os.path.join(ROOT, "configs", "tables")
BLOCK_KEYS = {"label", "base", "seeds", "columns", "column-header", "rows", "overrides", "cells", "figure"}
TABLE_KEYS = BLOCK_KEYS | {"title", "caption", "paper", "metric", "blocks", "paper-beside", "screen", "compare",
                          "versus"}
RECORDS_DIR = os.path.join("results", "runs")   # compact records of finished runs, committed (experiments/records.py)
NAME_OK = re.compile(r"[A-Za-z0-9_.+-]+")     # row, column and block names: parts of a run directory's name
METRICS = ("final_top1", "final_top5", "best_top1", "best_top5")  # the numbers of results.json a table may report


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
    except UnicodeDecodeError as e:
        raise ResultsError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}): not a results.json of "
                           "train.py") from None
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
    screen: Optional[dict] = None         # {row, gap: {small, large, at-least}, better: {than, cells, std-factor}}
    versus: Optional[dict] = None         # {row, std-factor, gap: {small, large}}: every row against ``row``
    compare: Optional[dict] = None        # {rows: {table, rows}, oracle: {table, column}}, each optional


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
        return config_differences(self.expected, ran)


def config_differences(expected: dict, ran: dict) -> list[str]:
    """``flag: ran -> wanted`` for each setting of ``expected`` that a run's recorded ``config`` (``ran``) holds with
    another value; a setting the run's version of train.py did not have yet is not a difference."""
    norm = lambda v: json.loads(json.dumps(v, default=str))  # noqa: E731  (tuples vs lists)
    return [f"{k.replace('_', '-')}: {ran[k]!r} -> {v!r}" for k, v in expected.items()
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
        twice = sorted({b for b in value if value.count(b) > 1})
        if twice:
            raise TableError(f"{path}: column {', '.join(map(str, twice))} is listed twice in columns: its runs would "
                             "share one run directory; list each batch size once")
        return [Column(str(b), batch_header(b), f"b{b}", {"batch-size": b}) for b in value]
    if isinstance(value, dict) and value:
        return [Column(str(k), str(k), str(k), _mapping(v, f"column {k!r}", path)) for k, v in value.items()]
    raise TableError(f"{path}: columns must be a non-empty list of batch sizes (e.g. [256, 1024]) or a mapping "
                     f"{{label: {{flag: value}}}}, got {value!r}")


def _block(name: str, spec: dict, defaults: dict, path: str) -> Block:
    merged = {**defaults, **spec}
    where = f"{path} (block {name!r})" if name else path
    if isinstance(defaults.get("overrides"), dict) and isinstance(spec.get("overrides"), dict):
        merged["overrides"] = {**defaults["overrides"], **spec["overrides"]}  # the table's flags, then the block's
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
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise TableError(f"{where}: seeds lists {', '.join(map(str, twice))} twice: its runs would share one run "
                         "directory; list each seed once")
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
        raise TableError(f"{where}: figure takes rows and mark; unknown {sorted(unknown)} (another table's rows "
                         "beside this one's: the table key compare: {rows: {table: TABLE, rows: [...]}})")
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
    screen = _screen(spec.get("screen"), blocks, path) if spec.get("screen") is not None else None
    compare = _compare(spec.get("compare"), blocks, path) if spec.get("compare") is not None else None
    versus = _versus(spec.get("versus"), blocks, path, compare) if spec.get("versus") is not None else None
    metric = str(spec.get("metric", "final_top1"))
    if metric not in METRICS:
        raise TableError(f"{path}: metric {metric!r} is not a number results.json records; use one of "
                         f"{', '.join(METRICS)}")
    name = table_name(path)
    return Table(name=name, path=path, title=str(spec["title"]), caption=str(spec.get("caption", "")).strip(),
                 paper=paper, metric=metric, blocks=blocks, paper_beside=beside, screen=screen,
                 compare=compare, versus=versus)


def table_name(name_or_path: str) -> str:
    """A table's name from its name or its YAML's path (configs/tables/NAME.yaml -> NAME)."""
    return os.path.splitext(os.path.basename(str(name_or_path)))[0]


def figure_subject(table: Table, block: Block) -> str:
    """What a figure of ``block`` is about: the table's title without what its cells hold (": top-1 test accuracy
    (%)", which a figure of curves or of a grid does not show), and the block's label where the table has several."""
    return table.title.removesuffix(": top-1 test accuracy (%)") + (f" — {block.label}" if block.name else "")


def compared_label(row: str, table: str) -> str:
    """How a page names a row of another table drawn into this one (``compare``): ``ROW (TABLE)``."""
    return f"{row} ({table})"


def column_keys(block: Block) -> dict[str, str]:
    """A block's column keys by key and by header (16384 and 16K), as table keys may name a column."""
    return {c.header: c.key for c in block.columns} | {c.key: c.key for c in block.columns}


def _compare(value: Any, blocks: list[Block], path: str) -> dict:
    """The ``compare`` key: rows of another table shown in this table's columns (the records it reuses), and the
    best cell of a grid table shown in one column (the oracle). Each block takes the other table's block of the same
    name. The other tables are checked to exist here; their rows when the page is built (experiments/collect.py)."""
    shape = ("compare must be {rows: {table: TABLE, rows: [ROW, ...]}, oracle: {table: TABLE, column: COLUMN}} "
             "(either part may be left out)")
    if not (isinstance(value, dict) and value and set(value) <= {"rows", "oracle"}):
        raise TableError(f"{path}: {shape}, got {value!r}")
    rows, oracle = value.get("rows"), value.get("oracle")
    if rows is not None and not (isinstance(rows, dict) and set(rows) == {"table", "rows"}
                                 and isinstance(rows["rows"], list) and rows["rows"]):
        raise TableError(f"{path}: {shape}, got rows: {rows!r}")
    if oracle is not None and not (isinstance(oracle, dict) and set(oracle) == {"table", "column"}):
        raise TableError(f"{path}: {shape}, got oracle: {oracle!r}")
    for part in (rows, oracle):
        if part is not None:
            table_path(str(part["table"]))  # TableError naming the known tables
    out: dict = {}
    if rows is not None:
        out["rows"] = {"table": str(rows["table"]), "rows": [str(r) for r in rows["rows"]]}
    if oracle is not None:
        column = str(oracle["column"])
        for b in blocks:
            keys = column_keys(b)
            if column not in keys:
                raise TableError(f"{path}: compare's oracle column {column!r} is not a column of block "
                                 f"{b.name or '(the table)'!r}; its columns: {', '.join(c.key for c in b.columns)}")
            column = keys[column]
        out["oracle"] = {"table": str(oracle["table"]), "column": column}
    return out


def _check_names(row: str, columns: list[str], blocks: list[Block], path: str, key: str,
                 more_rows: tuple | list = ()) -> None:
    """TableError unless every block has ``row`` (or it is one of ``more_rows``) and ``columns`` (a key's names
    checked before any run)."""
    for b in blocks:
        keys, rows = [c.key for c in b.columns], [*b.rows, *more_rows]
        wrong = [c for c in columns if c not in keys]
        if row not in rows or wrong:
            what = f"row {row!r}" if row not in rows else f"column(s) {', '.join(map(repr, wrong))}"
            raise TableError(f"{path}: {key} names {what}, which block {b.name or '(the table)'!r} does not have; "
                             f"its rows: {', '.join(rows)}; its columns: {', '.join(keys)}")


def _versus(value: Any, blocks: list[Block], path: str, compare: Optional[dict]) -> dict:
    """The ``versus`` key: every row (and compare's) against one row in each column, with a verdict (better / worse
    where the difference exceeds std-factor x the larger seed std), and the share of ``row``'s gap from the small to
    the large column that each row recovers at the large one (experiments/collect.py: versus_lines)."""
    shape = "versus must be {row: ROW, std-factor: FACTOR, gap: {small: COLUMN, large: COLUMN}} (gap optional)"
    if not (isinstance(value, dict) and {"row", "std-factor"} <= set(value) <= {"row", "std-factor", "gap"}
            and isinstance(value["std-factor"], (int, float)) and not isinstance(value["std-factor"], bool)
            and value["std-factor"] > 0):
        raise TableError(f"{path}: {shape}, got {value!r}")
    gap = value.get("gap")
    if gap is not None and not (isinstance(gap, dict) and set(gap) == {"small", "large"}):
        raise TableError(f"{path}: {shape}, got gap: {gap!r}")
    row = str(value["row"])
    if gap:  # a column by its key or its header (16384 or 16K)
        keys = column_keys(blocks[0])
        gap = {k: keys.get(str(gap[k]), str(gap[k])) for k in ("small", "large")}
    compared = ([compared_label(r, table_name(compare["rows"]["table"])) for r in compare["rows"]["rows"]]
                if compare and "rows" in compare else [])
    _check_names(row, list(gap.values()) if gap else [], blocks, path, "versus", compared)
    return {"row": row, "std-factor": float(value["std-factor"]), "gap": gap}


def _screen(value: Any, blocks: list[Block], path: str) -> dict:
    """The ``screen`` key: a pass rule on the table's cells (experiments/collect.py: screen_lines), checked here
    against every block's rows and columns so that a typo fails before any run, not when the page is built."""
    shape = ("screen must be {row: ROW, gap: {small: COLUMN, large: COLUMN, at-least: POINTS}, better: {than: COLUMN, "
             "cells: [COLUMN, ...], std-factor: FACTOR}}")
    if not isinstance(value, dict) or set(value) != {"row", "gap", "better"}:
        raise TableError(f"{path}: {shape}, got {value!r}")
    gap, better = value["gap"], value["better"]
    if not (isinstance(gap, dict) and set(gap) == {"small", "large", "at-least"} and isinstance(better, dict)
            and set(better) == {"than", "cells", "std-factor"} and isinstance(better["cells"], list) and better["cells"]
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                    for v in (gap["at-least"], better["std-factor"]))):
        raise TableError(f"{path}: {shape}, got {value!r}")
    row = str(value["row"])
    _check_names(row, [str(c) for c in (gap["small"], gap["large"], better["than"], *better["cells"])], blocks, path,
                 "screen")
    return {"row": row, "gap": {"small": str(gap["small"]), "large": str(gap["large"]),
                                "at-least": float(gap["at-least"])},
            "better": {"than": str(better["than"]), "cells": [str(c) for c in better["cells"]],
                       "std-factor": float(better["std-factor"])}}


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


def check_filters(table: Table, blocks: Optional[list[str]] = None, rows: Optional[list[str]] = None,
                  columns: Optional[list[str]] = None, seeds: Optional[list[int]] = None) -> None:
    """TableError naming every value of a filter (``--block``, ``--rows``, ``--columns``, ``--seeds``) that matches
    nothing in ``table``, with the values it has: a misspelt filter must not quietly leave cells out."""
    have = {"--block": [b.name for b in table.blocks if b.name],
            "--rows": list(dict.fromkeys(r for b in table.blocks for r in b.rows)),
            "--columns": list(dict.fromkeys(n for b in table.blocks for c in b.columns for n in (c.key, c.header))),
            "--seeds": list(dict.fromkeys(s for b in table.blocks for s in b.seeds))}
    for flag, wanted in (("--block", blocks), ("--rows", rows), ("--columns", columns), ("--seeds", seeds)):
        unknown = [w for w in wanted or [] if w not in have[flag]]
        if unknown:
            known = ", ".join(map(str, have[flag])) or "none (the table has no blocks)"
            raise TableError(f"{flag} {' '.join(map(str, unknown))}: not in {table.name} (it has {known})")


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


PER_RUN_FLAGS = ("--output", "--seed", "--config")  # what the sweep sets for each run itself


def check_extra(parser: argparse.ArgumentParser, extra: list[str]) -> None:
    """The train.py flags given after ``--`` (for every run): TableError naming one that train.py does not have, or
    one the sweep sets for each run itself (``--output``, ``--seed``, ``--config``: every run would get the same)."""
    options = {opt: a for a in parser._actions for opt in a.option_strings}
    for token in extra:
        if not token.startswith("-") or token == "-" or re.fullmatch(r"-\.?\d.*", token):
            continue  # a value (also a negative number)
        flag = token.split("=", 1)[0]
        action = options.get(flag)
        if action is None and flag.startswith("--"):  # argparse's unique prefixes
            matches = {options[o] for o in options if o.startswith(flag)}
            action = matches.pop() if len(matches) == 1 else None
        if action is None:
            raise TableError(f"{flag} (after --) is not a train.py flag; see `python train.py --help`")
        if any(o in PER_RUN_FLAGS for o in action.option_strings):
            raise TableError(f"{flag} (after --) is set by the sweep for each run (from the table and --runs-dir): "
                             "every run would get the same one; remove it")


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
        try:
            argv = train_argv(run, parser)
        except TableError as e:  # a flag train.py does not have, a value its action cannot take
            raise TableError(f"run {run.name}: {e}") from None
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


