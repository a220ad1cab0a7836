"""Scale section: the whole pipeline command line on the data enlarged 1x, 10x, 50x (``--sizes``).

What it measures, per size: wall time and CPU time (s), max RSS of one process and peak RSS of the
process tree (bytes), the CSV's rows and size, the offline session's size, and the test-set R² of
each model from ``metrics.csv`` (optimistic: resampled rows repeat across train and test; it only
shows that the run worked).

How: :func:`make_scaled_csv` resamples the rows with replacement (fixed seed) and puts 1%
multiplicative noise on the features (±0.01° on the coordinates, counts stay whole, households ≥ 1),
in the source's layout; then one fresh ``clearml_pipeline.py`` subprocess per size
(:func:`bench.common.run_child`, default parameters, ClearML offline), repeated once if disturbed.
The table is made by :func:`bench.report.scale_rows`.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import MIB, ChildRun, Settings, child_env, run_child

#: A scale run slower than this many seconds is reported as such (goal: the biggest run finishes within it).
SLOW_SCALE_RUN_S = 6 * 60

STATLIB_COUNTS = ("total_rooms", "total_bedrooms", "population", "households")
STATLIB_NOISY = ("housing_median_age", "total_rooms", "total_bedrooms", "population", "households", "median_income")
SKLEARN_NOISY = ("MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup")
COORDINATES = ("longitude", "latitude", "Longitude", "Latitude")


def make_scaled_csv(source: Path, factor: int, seed: int, out_dir: Path, noise: float = 0.01) -> Path:
    """Write the data enlarged ``factor`` times to ``out_dir``, in the layout of ``source``.

    ``factor * n`` rows drawn with replacement (``numpy.random.default_rng(seed)``), then each
    non-coordinate feature multiplied by ``1 + noise * N(0, 1)`` (clipped to [0.5, 1.5]);
    longitude and latitude get ``noise`` degrees of additive Gaussian noise (about 1 km) instead,
    as 1% of -122 degrees would move a district 100 km. The target is not touched. StatLib counts
    are rounded to whole numbers, non-negative, households at least 1.

    :returns: the path of the new CSV.
    """
    raw = pd.read_csv(source)
    rng = np.random.default_rng(seed)
    data = raw.iloc[rng.integers(0, len(raw), size=len(raw) * factor)].reset_index(drop=True)
    for col in (*STATLIB_NOISY, *SKLEARN_NOISY):
        if col in data.columns:
            data[col] = data[col] * np.clip(1.0 + noise * rng.standard_normal(len(data)), 0.5, 1.5)
    for col in COORDINATES:
        if col in data.columns:
            data[col] = data[col] + noise * rng.standard_normal(len(data))
    for col in STATLIB_COUNTS:
        if col in data.columns:
            data[col] = data[col].round().clip(lower=1.0 if col == "households" else 0.0)
    path = out_dir / f"cal_housing_x{factor}.csv"
    data.to_csv(path, index=False, float_format="%.6f")
    return path


def _scale_attempt(csv_path: Path, factor: int, attempt: int, tmp: Path, logs: Path, timeout: float,
                   settings: Settings) -> ChildRun:
    """One pipeline run on ``csv_path`` (``timeout`` in seconds), its output and ClearML cache removed after.
    :returns: the run; ``extra``: the offline session's size (bytes) and each model's test R²."""
    out = Path(tempfile.mkdtemp(prefix=f"out-x{factor}-", dir=tmp)) / "out"
    env = child_env(tmp)
    cmd = [sys.executable, str(settings.pipeline), "--data", str(csv_path), "--output-dir", str(out)]
    name = f"scale-x{factor}" + (f"-try{attempt}" if attempt else "")
    run = run_child(f"x{factor}", cmd, env, logs / f"{name}.log", timeout, settings)
    sessions = list(Path(env["CLEARML_CACHE_DIR"]).glob("offline/*.zip"))
    run.extra = {"session_bytes": sum(p.stat().st_size for p in sessions)}
    if (out / "metrics.csv").exists():
        for row in pd.read_csv(out / "metrics.csv").itertuples():
            run.extra[f"r2_{row.model}"] = float(row.r2)
    shutil.rmtree(out.parent, ignore_errors=True)
    shutil.rmtree(env["CLEARML_CACHE_DIR"], ignore_errors=True)
    return run


def _scale_run(data: Path, factor: int, seed: int, tmp: Path, logs: Path, timeout: float,
               settings: Settings) -> ChildRun:
    """Make the enlarged CSV, run the pipeline on it (again once if disturbed and ``settings.retries`` > 0)."""
    t0 = time.perf_counter()
    csv_path = make_scaled_csv(data, factor, seed, tmp)
    made_s = time.perf_counter() - t0
    with open(csv_path, "rb") as fh:
        rows = sum(1 for _ in fh) - 1
    disturbed: list[tuple[float, float]] = []  # the attempts that were repeated: (wall s, other load cores)
    attempts = 1 + min(1, settings.retries)
    for attempt in range(attempts):
        print(f"  scale x{factor}: {rows:,} rows, {csv_path.stat().st_size / MIB:,.1f} MiB, running ...", flush=True)
        run = _scale_attempt(csv_path, factor, attempt, tmp, logs, timeout, settings)
        run.extra = {"factor": factor, "rows": rows, "csv_bytes": csv_path.stat().st_size, "csv_make_s": made_s,
                     **run.extra, "disturbed": disturbed}
        print(f"  scale x{factor}: {run.wall_s:6.1f} s, max RSS {run.max_rss / MIB:,.0f} MiB, exit {run.returncode}, "
              f"other load {run.other_cores:.2f} cores{' (disturbed)' if run.disturbed else ''}", flush=True)
        if not run.disturbed or not run.ok or attempt == attempts - 1:
            break
        disturbed.append((run.wall_s, run.other_cores))
    csv_path.unlink()
    return run


def measure_scale(data: Path, sizes: list[int], seed: int, tmp: Path, logs: Path, timeout: float,
                  settings: Settings) -> list[ChildRun]:
    """The whole pipeline command line on the data enlarged by each factor of ``sizes``.

    One fresh subprocess per size (default parameters, ClearML offline; ``timeout`` in seconds). Besides
    the costs of :func:`bench.common.run_child`, records the rows and size (bytes) of the CSV, the size of
    the offline session and the test-set R^2 of each model read from ``metrics.csv`` (the resampled rows
    repeat across train and test, so these R^2 are optimistic: they only show that the run worked). A run
    disturbed by other processes is repeated once (if ``settings.retries`` > 0); the disturbed
    attempt's wall time and other load are kept in ``extra["disturbed"]``.
    """
    return [_scale_run(data, factor, seed, tmp, logs, timeout, settings) for factor in sizes]
