"""Benchmark of the California Housing pipeline: ClearML overhead, scaling and model quality.

Three measurements, in one run, on the real data (see ``bench/README.md``):

1. **overhead**: wall time of ``clearml_pipeline.py`` (ClearML offline mode, the embedded
   default) against ``bench/plain_script.py`` (the same computation without ClearML), each a
   fresh subprocess, interleaved, median of ``--reps``; plus the start-up cost of importing the
   libraries with and without ClearML. Beside them ``--mode local`` (with and without ``--no-cache``)
   against a ClearML server (the environment's, or the test server harness of ``--clearml-server``;
   skipped without one), each run read back from the server as a per-step timeline, and the bare
   start-up of a step subprocess (``import clearml``, ``Task.init``).
2. **scale**: the whole pipeline command line on the data enlarged 1x, 10x, 50x (rows resampled
   with replacement, 1% multiplicative noise on the features): wall time, peak memory, CPU time.
3. **quality**: R^2 / RMSE / MAE of every model for each seed (split and model seed), in this
   process through the ClearML-free ``steps`` functions, and the polynomial R^2 per degree.

Results go to ``bench/results/results.md`` (tables, goals) and ``bench/results/results.csv``
(tidy rows ``section,name,metric,value``); the markdown is printed at the end. The benchmark never
imports ClearML; the pipeline only runs in its subprocesses.

This file is the command line; the work is in the modules beside it: ``bench/common.py`` (settings,
the measured child process, data file), ``bench/overhead.py``, ``bench/scale.py``,
``bench/quality.py`` (the sections), ``bench/server.py`` (the ClearML server of the ``--mode local``
runs and its read-back) and ``bench/report.py`` (tables, goals, result files).

Usage (from the project root): ``python bench/run_bench.py [--reps 3] [--sizes 1,10,50]
[--seeds 0-9] [--data CSV] [--out bench/results] [--clearml-server HARNESS_DIR|none] [--code REV]``
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):  # run as a script: the project root, for the bench.* modules and steps
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd

from bench.common import DEFAULT_HARNESS, DISTURBED_CORES, QUIET_CORES, ROOT, Settings, find_data, use_code
from bench.overhead import measure_overhead
from bench.quality import measure_quality
from bench.report import (
    environment_lines,
    goal_rows,
    overhead_rows,
    quality_rows,
    results_markdown,
    scale_rows,
    write_results,
)
from bench.scale import measure_scale
from bench.server import start_clearml_server

#: The sections, in the order they run, and their headings in ``results.md``.
SECTIONS = {"overhead": "## Overhead: ClearML pipeline (offline, `--mode local`) vs plain script",
            "scale": "## Scale: whole pipeline run on enlarged data",
            "quality": "## Quality: test-set metrics over seeds",
            "tuning": "## Tuning: cost of an optimize trial; tuned XGBoost vs defaults over seeds"}


def int_list(text: str) -> list[int]:
    """``"1,10,50"`` -> [1, 10, 50]; ``"0-9"`` or ``"0..9"`` -> [0, ..., 9] (non-negative integers)."""
    values: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\d+)(?:-|\.\.)(\d+)|(\d+)", part)
        if not match:
            raise argparse.ArgumentTypeError(f"not a number or range: {part!r} (e.g. 1,10,50 or 0-9)")
        lo, hi, single = match.groups()
        values += [int(single)] if single else list(range(int(lo), int(hi) + 1))
    if not values:
        raise argparse.ArgumentTypeError(f"no numbers in {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring and ``bench/README.md``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each overhead run (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs of each before the overhead runs")
    parser.add_argument("--sizes", type=int_list, default="1,10,50", help="data enlargement factors of the scale runs")
    parser.add_argument("--scale-seed", type=int, default=0, help="seed of the row resampling and noise")
    parser.add_argument("--seeds", type=int_list, default="0-9", help="random_state values of the quality runs")
    parser.add_argument("--degrees", type=int_list, default="2,3,4", help="polynomial degrees of the quality runs")
    parser.add_argument("--spatial-neighbors", type=int, default=None,
                        help="k of the neighbour-target features in the quality runs (default: the pipeline's "
                             "default); when > 0 the polynomial and XGBoost also run without them (k 0)")
    parser.add_argument("--data", default=None,
                        help="CSV (StatLib or scikit-learn layout); default $CAL_HOUSING_CSV, else "
                             "../shared/data/cal_housing.csv, else scikit-learn's download")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"), help="folder of results.md / results.csv")
    parser.add_argument("--sections", default="overhead,scale,quality",
                        help="which measurements to run (also: tuning, see bench/tuning.py)")
    parser.add_argument("--tuning-trials", type=int, default=16, help="Optuna trials of the tuning section")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before a benchmarked run is stopped")
    parser.add_argument("--quiet-wait", type=float, default=120.0,
                        help=f"before each measured run, wait up to this many seconds until other processes use "
                             f"< {QUIET_CORES} cores (0: never wait)")
    parser.add_argument("--retries", type=int, default=3,
                        help=f"repeat an overhead run disturbed by other processes (> {DISTURBED_CORES} cores) up to "
                             "this many times; a disturbed scale run is repeated once (0: never)")
    parser.add_argument("--clearml-server", default=None, metavar="HARNESS_DIR",
                        help="ClearML test server harness (bin/start, bin/stop) started for the overhead section's "
                             "`--mode local` runs; 'none': no local runs. Default: the server the environment "
                             "configures (CLEARML_API_HOST and keys, or CLEARML_CONFIG_FILE), else "
                             f"{DEFAULT_HARNESS} if it exists; without a server the local runs are skipped")
    parser.add_argument("--code", default=None, metavar="REV",
                        help="run the benchmarked commands from a clean clone of this commit (e.g. HEAD) instead "
                             "of the working tree (which others may be editing)")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temporary folder (CSVs, outputs, caches)")
    return parser


def run_overhead(args, data: Path, tmp: Path, logs: Path, settings: Settings) -> tuple[list, list, list]:
    """The overhead section, its ClearML server started and stopped around it: rows, markdown, goals."""
    server, no_server = start_clearml_server(args.clearml_server, tmp)
    if server is None:
        print(f"  --mode local: skipped: {no_server}", flush=True)
    try:
        res = measure_overhead(data, args.reps, args.warmup, tmp, logs, args.timeout, settings, server, no_server)
        res["local_server"] = server.source if server else ""
    finally:
        if server is not None:
            server.stop()
    return overhead_rows(res, settings.retries)


def run_scale(args, data: Path, tmp: Path, logs: Path, settings: Settings) -> tuple[list, list, list]:
    """The scale section: rows, markdown, goals."""
    rows, md, goal = scale_rows(measure_scale(data, args.sizes, args.scale_seed, tmp, logs, args.timeout, settings))
    return rows, md, [goal] if goal else []


def run_quality(args, data: Path, tmp: Path, logs: Path, settings: Settings) -> tuple[list, list, list]:
    """The quality section (in this process): rows, markdown, goals."""
    from steps.params import DEFAULTS

    table = measure_quality(data, args.seeds, args.degrees, settings, args.spatial_neighbors)
    return quality_rows(table, args.degrees, DEFAULTS.poly_degree)


def run_tuning(args, data: Path, tmp: Path, logs: Path, settings: Settings) -> tuple[list, list, list]:
    """The tuning section (``bench/tuning.py``; its own test server): rows, markdown, goals."""
    from bench.tuning import measure_tuning

    return measure_tuning(data, tmp, settings.code_root, args.tuning_trials, args.seeds)


RUNNERS = {"overhead": run_overhead, "scale": run_scale, "quality": run_quality, "tuning": run_tuning}


def run_sections(args, sections: list[str], data: Path, tmp: Path, logs: Path,
                 settings: Settings) -> tuple[list[tuple], list[str], list[dict]]:
    """Run the chosen sections in their fixed order: tidy rows (with each section's time in seconds),
    markdown body, goals."""
    rows: list[tuple] = []
    body: list[str] = []
    goals: list[dict] = []
    for name, heading in SECTIONS.items():
        if name not in sections:
            continue
        print(f"{name} ...", flush=True)
        t0 = time.perf_counter()
        r, md, g = RUNNERS[name](args, data, tmp, logs, settings)
        rows += r + [("meta", name, "section_s", time.perf_counter() - t0)]
        body += [heading, "", *md, ""]
        goals += g
    return rows, body, goals


def main(argv: Optional[list[str]] = None) -> int:
    """Run the benchmark (command line ``argv``, default ``sys.argv[1:]``); write and print the results."""
    parser = build_parser()
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown or args.reps < 1:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}" if unknown else "--reps must be >= 1")

    started = time.perf_counter()
    out = Path(args.out).absolute()
    logs = out / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix="cal-housing-bench-"))
    try:
        settings = Settings(code_root=use_code(args.code, tmp) if args.code else ROOT,
                            quiet_wait_s=args.quiet_wait, retries=args.retries)
        data = find_data(args.data, tmp)
        n_rows = len(pd.read_csv(data, usecols=[0]))
        print(f"benchmark: data {data} ({n_rows:,} rows), temporary files in {tmp}", flush=True)
        rows, body, goals = run_sections(args, sections, data, tmp, logs, settings)
        rows = [("meta", "data", "rows", n_rows), *rows]
        total = time.perf_counter() - started
        rows.append(("meta", "benchmark", "total_s", total))
        command = " ".join(["python", "bench/run_bench.py", *(argv if argv is not None else sys.argv[1:])])
        markdown = results_markdown(environment_lines(args, data, n_rows, settings), total, command, goals, body)
        write_results(out, rows + goal_rows(goals), markdown)
        print("\n" + markdown)
        print(f"\nwritten: {out / 'results.md'}, {out / 'results.csv'} (logs in {logs})")
        return 0
    finally:
        if args.keep_tmp:
            print(f"temporary files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
