"""Launch a table's runs (configs/tables/*.yaml): here one after another or at once, or as a SLURM array job.

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
(``--data-dir``, ``--workers``, ``--micro-batch``), never for what changes the result; a flag train.py does not
have, or one the sweep sets for each run (``--output``, ``--seed``, ``--config``), is refused there. So is a
``--block``/``--rows``/``--columns``/``--seeds`` value the table does not have (a misspelt filter would quietly
leave cells out).

A results.json that cannot be read (empty, truncated, not an object) marks a *failed* run: it is listed with the file
and the reason and run again. ``--export`` copies each finished run's compact record (a few hundred kB) to
``results/runs/<table>/...``; a run with a record there counts as done, so a sweep continues on another machine from
the repository alone, and ``scripts/collect.py``/``plot.py`` rebuild the pages with ``--runs-dir results/runs``. It
also carries each unfinished run that has a checkpoint (``last.pt`` and the logs, into its record's ``partial/``):
a sweep that finds no run directory but a carried one copies it back and the run resumes there (``carried`` in
``--dry-run``), so a run longer than a session is not started over on a new machine.

The table definitions and their runs: experiments/tables.py; the compact records: experiments/records.py.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import datetime
import os
import re
import shlex
import subprocess
import sys
import threading
from typing import Optional


from . import tables  # noqa: F401  (tests point tables.RECORDS_DIR elsewhere)
from .records import PARTIAL, export_records, restore_partial, reuse_records
from .tables import (RECORDS_DIR, ROOT, Run, TableError, check_extra, check_filters, check_runs,  # noqa: F401
                     expand, flag_tokens, get_train_parser, load_table, train_argv)

CLUSTER_KEYS = ("AUTOWU_PARTITION", "AUTOWU_ACCOUNT", "AUTOWU_GPUS_PER_NODE", "AUTOWU_CPUS_PER_TASK", "AUTOWU_TIME",
                "AUTOWU_DATA_ROOT", "AUTOWU_SETUP", "AUTOWU_MAX_PARALLEL", "AUTOWU_SBATCH_ARGS", "AUTOWU_GRES")
# read by scripts/slurm/common.sh on the batch node only (not by the sweep): known, so not refused as misspelt
BATCH_NODE_KEYS = ("AUTOWU_PYTHON", "AUTOWU_MASTER_PORT", "AUTOWU_SHUTDOWN_TIMEOUT", "AUTOWU_ROOT")
SLURM_TIME = re.compile(r"(\d+-)?\d+(:\d+){0,2}|UNLIMITED|INFINITE", re.IGNORECASE)  # sbatch --time's forms


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


def cluster_settings(path: Optional[str] = None) -> dict[str, str]:
    """Cluster settings: the KEY=VALUE file ``$AUTOWU_CLUSTER_ENV`` (default scripts/slurm/cluster.env), then the
    environment, which wins (same precedence as scripts/slurm/common.sh)."""
    explicit = path or os.environ.get("AUTOWU_CLUSTER_ENV")
    path = explicit or os.path.join(ROOT, "scripts", "slurm", "cluster.env")
    if explicit and not os.path.isfile(path):  # scripts/slurm/common.sh refuses it too
        raise TableError(f"AUTOWU_CLUSTER_ENV={path}: {'a directory' if os.path.isdir(path) else 'does not exist'}, "
                         "not a KEY=VALUE file; point it at your copy of scripts/slurm/cluster.env.example or unset it")
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
                key = key.strip()
                if key.startswith("AUTOWU_") and key not in CLUSTER_KEYS + BATCH_NODE_KEYS:
                    raise TableError(f"{path}:{n}: unknown setting {key} (misspelt?); the settings are "
                                     f"{', '.join(CLUSTER_KEYS + BATCH_NODE_KEYS)}")
                settings[key] = " ".join(words)
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
    """Text of an sbatch array job: task ``i`` runs ``runs[i]`` through scripts/slurm/{single,multi}_node.sbatch.
    A setting sbatch would reject or misread (a count that is not a whole number >= 1, a time limit in no SLURM
    form) is a TableError naming it."""
    # (a value with characters no #SBATCH line may hold is named for those by sbatch_line below)
    for key in ("AUTOWU_MAX_PARALLEL", "AUTOWU_GPUS_PER_NODE", "AUTOWU_CPUS_PER_TASK"):
        value = settings.get(key, "")
        if value and SBATCH_SAFE.fullmatch(value) and not re.fullmatch(r"[1-9][0-9]*", value):
            raise TableError(f"{key}={value!r}: give a whole number >= 1 (or leave it empty)")
    time_limit = settings.get("AUTOWU_TIME", "")
    if time_limit and SBATCH_SAFE.fullmatch(time_limit) and not SLURM_TIME.fullmatch(time_limit):
        raise TableError(f"AUTOWU_TIME={settings['AUTOWU_TIME']!r} is not a SLURM time limit: use MINUTES, "
                         "HOURS:MINUTES:SECONDS or DAYS-HOURS[:MINUTES[:SECONDS]], e.g. 24:00:00 or 1-12:00:00")
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
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="list the runs (pending and done) and exit")
    mode.add_argument("--local", action="store_true", help="run pending runs here, one after another")
    mode.add_argument("--slurm", action="store_true", help="write an sbatch array job for the pending runs")
    mode.add_argument("--export", nargs="?", const=os.path.join(ROOT, RECORDS_DIR), metavar="DEST",
                      help="copy every finished run's compact record (args.yaml, env.json, results.json, "
                           "epochs.jsonl, events.jsonl, decimated steps.csv) to DEST/<table>/ (default: "
                           "results/runs/ of this checkout, where it counts as done for later sweeps)")
    p.add_argument("--reuse-from", metavar="TABLE",
                   help="give each pending run the record of a finished run of TABLE whose every setting (seed "
                        "included) is equal: copied to results/runs/<table>/ with reused_from.json naming it (e.g. "
                        "the screen's baselines as Table 1's cells); with --dry-run: only list them")
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
    if not (args.dry_run or args.local or args.slurm or args.export or args.reuse_from):
        print("error: say what to do with the table: --dry-run, --local, --slurm, --export or --reuse-from TABLE",
              file=sys.stderr)
        return 2
    if args.reuse_from and (args.local or args.slurm or args.export):
        print("error: --reuse-from goes alone (copy the records) or with --dry-run (list them); run --local or "
              "--slurm after it for the runs still pending", file=sys.stderr)
        return 2
    for name in ("jobs", "threads", "nproc", "nodes"):
        value = getattr(args, name)
        if value is not None and value < 1:
            print(f"error: --{name} must be >= 1, got {value}", file=sys.stderr)
            return 2
    try:
        table = load_table(args.table)
        check_filters(table, args.block, args.rows, args.columns, args.seeds)
        runs = expand(table, args.runs_dir, args.block, args.rows, args.columns, args.seeds)
        if not runs:
            raise TableError(f"no run of {table.name} matches the filters (each matches some run, but not together)")
        parser = get_train_parser()
        check_runs(runs, parser)
        check_extra(parser, extra)
        runs_root = os.path.join(ROOT, args.runs_dir)
        if os.path.exists(runs_root) and not os.path.isdir(runs_root):
            raise TableError(f"--runs-dir {runs_root} is not a directory; give the folder of the run directories")
        if args.export and os.path.exists(args.export) and not os.path.isdir(args.export):
            raise TableError(f"--export {args.export} is not a directory; give the folder the records go to")
        if args.reuse_from:
            other = load_table(args.reuse_from)
            if other.name == table.name:
                raise TableError(f"--reuse-from {args.reuse_from}: a table cannot reuse its own runs")
            blocks = [b for b in args.block or [] if any(ob.name == b for ob in other.blocks)] or None
            others = expand(other, args.runs_dir, blocks)
            check_runs(others, parser)
    except TableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.export:
        return export_records(runs, args.export)
    if args.reuse_from:
        done = sum(1 for r in runs if r.done)
        print(f"[sweep] {table.name}: {len(runs)} runs, {done} done, {len(runs) - done} pending")
        return reuse_records(runs, others, os.path.join(ROOT, tables.RECORDS_DIR), dry_run=args.dry_run)
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
                     else "carried" if os.path.isfile(os.path.join(ROOT, r.record, PARTIAL, "last.pt"))
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
    log_dir = os.path.join(ROOT, args.runs_dir, table.name, "slurm")
    if args.slurm:
        try:  # every value checked before anything is written (or a stale run set aside): the command line's first
            sbatch_line(f"--output={log_dir}/%x_%A_%a.out", "--runs-dir")
            text = slurm_script(pending, parser, args.nodes, extra, cluster_settings(), f"autowu-{table.name}",
                                log_dir)
        except TableError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if stale:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        for r in pending:
            if r.name in stale:
                src = os.path.join(ROOT, r.output)
                os.rename(src, f"{src}.stale-{stamp}")
                print(f"[sweep] {r.name}: set aside as {r.output}.stale-{stamp}")
    for r in pending:  # an unfinished run carried in the repository continues where another machine stopped
        carried = restore_partial(r)
        if carried:
            print(f"[sweep] {r.name}: continues from the checkpoint carried in {os.path.relpath(carried, ROOT)}")
    if args.local:
        return 1 if run_local(pending, parser, args.nproc, extra, args.jobs, args.threads) else 0
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(log_dir, f"{table.name}_{stamp}.sbatch")
    try:
        os.makedirs(log_dir, exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    except OSError as e:
        print(f"error: cannot write the batch script {path}: {e.strerror}; check --runs-dir", file=sys.stderr)
        return 2
    print(f"[sweep] wrote {path} ({len(pending)} array tasks, {args.nodes} node(s) each)")
    if args.submit:
        return subprocess.call(["sbatch", path], cwd=ROOT)
    print(f"[sweep] submit with: sbatch {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
