"""The results tables: tidy rows, markdown and goals from what the sections measured.

Each section's results become tidy rows ``(section, name, metric, value)`` for ``results.csv``
(every repetition and seed included), markdown lines for ``results.md`` and goal entries
``{"goal", "value", "met"}`` (``met`` None: skipped). Medians are over the successful undisturbed
runs (:func:`used_runs`: all successful runs if every one was disturbed). Times in seconds, memory
in MiB, other load in cores. Nothing is measured here.
"""

from __future__ import annotations

import csv
import platform
import re
import statistics
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Optional

import pandas as pd
import psutil

from bench.common import DISTURBED_CORES, MIB, QUIET_CORES, ROOT, ChildRun, Settings, tail
from bench.overhead import GOAL_LOCAL_RATIO, GOAL_RATIO
from bench.quality import (
    ANCHORS,
    GOAL_POLY_MIN_ANY_DEGREE,
    GOAL_POLY_MIN_DEFAULT,
    GOAL_POLY_MIN_NEIGHBORS,
    GOAL_XGB_FIT_S,
    GOAL_XGB_MEAN,
    GOAL_XGB_MEAN_PLAIN,
    GOAL_XGB_MIN,
    METRICS,
)
from bench.scale import SLOW_SCALE_RUN_S
from bench.server import LOCAL_KINDS, STEP_PHASES, TASK_INIT_SCRIPTS
from steps.params import MODEL_KINDS

#: Row labels of the overhead table.
OVERHEAD_LABELS = {"pipeline": "`clearml_pipeline.py` (offline)", "local": "`clearml_pipeline.py --mode local`",
                   "local_nocache": "`clearml_pipeline.py --mode local --no-cache`",
                   "plain": "`bench/plain_script.py`",
                   "import_steps": "start-up: `import steps, xgboost, joblib`",
                   "import_clearml": "start-up: same + `import clearml`",
                   "import_clearml_only": "start-up: `import clearml` alone",
                   "task_init": "start-up: bare `Task.init` + `close()` on the server",
                   "step_init": "start-up: a step script's `Task.init` (as `--mode local` runs it)"}


def used_runs(runs: list[ChildRun]) -> list[ChildRun]:
    """The successful undisturbed runs, or every successful run if all were disturbed."""
    ok = [r for r in runs if r.ok]
    return [r for r in ok if not r.disturbed] or ok


def _median(runs: list[ChildRun], attr: str) -> float:
    values = [getattr(r, attr) for r in used_runs(runs)]
    return statistics.median(values) if values else float("nan")


def yes(ok: Optional[bool]) -> str:
    """A goal's "met" cell: skipped (None), yes or NO."""
    return "skipped" if ok is None else "**yes**" if ok else "**NO**"


def _nanmedian(values) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


# --------------------------------------------------------------------------------------------
# Overhead: the --mode local timelines and the bare step start-up
# --------------------------------------------------------------------------------------------


def _critical_path(steps: dict) -> list[str]:
    """The steps that held the run up, first to last: from the step that completed last, back through
    the parent that completed last."""
    steps = {name: step for name, step in steps.items() if not step["cached"]}
    if not steps:
        return []
    name, path = max(steps, key=lambda n: steps[n]["completed"]), []
    while name is not None:
        path.append(name)
        parents = [p for p in steps[name]["parents"] if p in steps]
        name = max(parents, key=lambda n: steps[n]["completed"]) if parents else None
    return path[::-1]


def _step_table(kind: str, title: str, timelines: list[dict]) -> tuple[list[tuple], list[str]]:
    """Rows and markdown of the per-step phases (median over the runs that did not reuse a cached step)."""
    rows, md = [], [f"**Per step, {title}** (seconds, median over {len(timelines)} run(s); _at_: after the command "
                     "started):", "",
                     "| step | created at | " + " | ".join(label for _, label, _, _ in STEP_PHASES) + " | completed at |",
                     "|---|---|" + "---|" * len(STEP_PHASES) + "---|"]
    for name in timelines[0]["steps"]:
        per_run = [t["steps"][name] for t in timelines if name in t["steps"] and not t["steps"][name]["cached"]]
        if not per_run:
            md.append(f"| {name} | cached: the step task of an earlier run is reused |" + " |" * (len(STEP_PHASES) + 1))
            rows.append((f"{kind}_steps", name, "cached_runs", len(timelines)))
            continue
        phases = {key: _nanmedian([s[b] - s[a] for s in per_run]) for key, _, a, b in STEP_PHASES}
        created, completed = _nanmedian([s["created"] for s in per_run]), _nanmedian([s["completed"] for s in per_run])
        cached = len(timelines) - len(per_run)
        md.append(f"| {name}{f' ({cached} run(s) cached)' if cached else ''} | {created:.1f} | "
                  + " | ".join(f"{phases[k]:.2f}" for k, _, _, _ in STEP_PHASES) + f" | {completed:.1f} |")
        rows += [(f"{kind}_steps", name, f"{k}_s", v) for k, v in phases.items()]
        rows += [(f"{kind}_steps", name, "created_at_s", created), (f"{kind}_steps", name, "completed_at_s", completed)]
    return rows, md


def _path_shares(timelines: list[dict]) -> list[tuple[dict, str]]:
    """Where the time goes along the critical path, per run (the parts, in seconds, add up to its wall time):
    ``[(part label -> seconds, "step -> step -> ...")]``."""
    shares = []
    for t in timelines:
        steps, c = t["steps"], t["controller"]
        path = _critical_path(steps)
        if not path:
            continue
        share = {"controller start-up (python, imports, server check, `Task.init` creates the controller task)":
                 c["created"], "controller: its task created -> first step created (on the path)":
                 steps[path[0]]["created"] - c["created"]}
        for _, label, a, b in STEP_PHASES[1:6]:
            share[label] = sum(steps[n][b] - steps[n][a] for n in path)
        share[STEP_PHASES[0][1]] = sum(steps[n]["created"] - steps[n]["released"] for n in path[1:])
        share["last step completed -> command exit (controller's end, exit)"] = c["exit"] - steps[path[-1]]["completed"]
        shares.append((share, " -> ".join(path)))
    return shares


def _shares_table(kind: str, title: str, timelines: list[dict], shares: list[tuple[dict, str]]):
    """Rows and markdown of the critical-path shares (median seconds and share of the median wall)."""
    rows, paths = [], sorted({path for _, path in shares})
    md = ["", f"**Where the wall time goes, {title}**, along the critical path ({'; '.join(paths)}), "
          "median seconds (per run the parts add up to its wall time):", "", "| part | s | share |", "|---|---|---|"]
    wall = _nanmedian([t["controller"]["exit"] for t in timelines])
    for label in shares[0][0]:
        value = _nanmedian([sh[label] for sh, _ in shares])
        md.append(f"| {label} | {value:.2f} | {value / wall:.0%} |")
        rows.append((f"{kind}_critical_path", re.sub(r"[`|]", "", label), "s", value))
    md.append(f"| wall (median) | {wall:.2f} | |")
    return rows, md


def local_rows(res: dict, kind: str, title: str) -> tuple[list[tuple], list[str]]:
    """Tidy rows and markdown of the timelines of the ``kind`` runs (``--mode local``), per step and
    along the critical path (seconds)."""
    md = []
    timelines = [r.extra["timeline"] for r in used_runs(res.get(kind, [])) if "steps" in r.extra.get("timeline", {})]
    errors = [r.extra["timeline"]["error"] for r in res.get(kind, []) if "error" in r.extra.get("timeline", {})]
    if errors:
        md += [f"{title}: the timeline read-back failed for {len(errors)} run(s): {errors[0]}", ""]
    if not timelines:
        return [], md
    rows, table = _step_table(kind, title, timelines)
    md += table
    ctrl = {k: _nanmedian([t["controller"][k] for t in timelines]) for k in ("created", "started", "completed", "exit")}
    rows += [(f"{kind}_controller", "controller", f"{k}_at_s", v) for k, v in ctrl.items()]
    md += ["", f"Controller (median): its task created {ctrl['created']:.1f} s after the command started, completed "
           f"at {ctrl['completed']:.1f} s; command exit at {ctrl['exit']:.1f} s."]
    shares = _path_shares(timelines)
    if shares:
        r, m = _shares_table(kind, title, timelines, shares)
        rows += r
        md += m
    return rows, md


def bare_rows(res: dict) -> tuple[list[tuple], list[str]]:
    """Tidy rows and markdown of the bare start-up costs of a step subprocess (seconds)."""
    rows, md = [], []
    bare = {k: res.get(k, []) for k in ("import_clearml_only", *TASK_INIT_SCRIPTS)}
    if not any(bare.values()):
        return rows, md
    md += ["", "**A step's bare start-up** (fresh subprocess against the same server, median seconds; "
           "_step script head_: ClearML's generated step script up to its `Task.init`, on a task created "
           "and started as the controller does, with `CLEARML_TASK_ID` and `CLEARML_SIMULATE_REMOTE_TASK`):", "",
           "| run | wall | interpreter start | imports | `Task.init` | `close()` | exit (at-exit flush) | other load |",
           "|---|---|---|---|---|---|---|---|"]
    labels = {"import_clearml_only": "`python -c \"import clearml\"`",
              "task_init": "bare `Task.init` + `close()` (new task)", "step_init": "step script head (`Task.init`)"}
    for kind, runs in bare.items():
        if not runs:
            continue
        used = used_runs(runs)
        phases = {k: _nanmedian([r.extra.get("phases", {}).get(k, float("nan")) for r in used])
                  for k in ("interpreter", "import", "task_init", "close", "exit")}
        md.append(f"| {labels[kind]} | {_median(runs, 'wall_s'):.2f} | "
                  + " | ".join("" if v != v else f"{v:.2f}" for v in phases.values())
                  + f" | {_median(runs, 'other_cores'):.2f} |")
        rows += [("overhead_bare", kind, f"{k}_s", v) for k, v in phases.items() if v == v]
    return rows, md


# --------------------------------------------------------------------------------------------
# Overhead: the runs and the ratios
# --------------------------------------------------------------------------------------------


def _overhead_kind(kind: str, runs: list[ChildRun]) -> tuple[list[tuple], str]:
    """Tidy rows (every run, medians) and the table line of one kind of overhead run."""
    wall, cpu, rss = _median(runs, "wall_s"), _median(runs, "cpu_s"), _median(runs, "max_rss") / MIB
    used = used_runs(runs)
    failed = sum(not r.ok for r in runs)
    rows = []
    for i, r in enumerate(runs):
        rows += [("overhead", kind, f"wall_s_run{i}", r.wall_s), ("overhead", kind, f"cpu_s_run{i}", r.cpu_s),
                 ("overhead", kind, f"max_rss_mib_run{i}", r.max_rss / MIB),
                 ("overhead", kind, f"other_cores_run{i}", r.other_cores),
                 ("overhead", kind, f"exit_code_run{i}", r.returncode),
                 ("overhead", kind, f"used_run{i}", int(r in used))]
        if "server_cpu_s" in r.extra:
            rows.append(("overhead", kind, f"server_cpu_s_run{i}", r.extra["server_cpu_s"]))
    rows += [("overhead", kind, "wall_s_median", wall), ("overhead", kind, "cpu_s_median", cpu),
             ("overhead", kind, "max_rss_mib_median", rss), ("overhead", kind, "runs_used", len(used)),
             ("overhead", kind, "failed_runs", failed)]
    left_out = ", ".join(f"{r.wall_s:.1f} @ {r.other_cores:.2f}" for r in runs if r not in used) or "-"
    line = (f"| {OVERHEAD_LABELS[kind]} | {wall:.2f} | {', '.join(f'{r.wall_s:.2f}' for r in used)} | {left_out} "
            f"| {cpu:.2f} | {rss:.0f} | {_median(runs, 'other_cores'):.2f} | {failed} |")
    return rows, line


def _overhead_table(res: dict, skipped: str) -> tuple[list[tuple], list[str]]:
    """Tidy rows and the markdown table of every kind of overhead run."""
    rows, md = [], ["| run | median wall (s) | runs used (s) | disturbed runs, left out (s @ other load) "
                    "| median CPU user+sys (s) | median max RSS (MiB) | median other load (cores) | failed |",
                    "|---|---|---|---|---|---|---|---|"]
    for kind, runs in res.items():
        if kind not in OVERHEAD_LABELS:
            continue
        r, line = _overhead_kind(kind, runs)
        rows += r
        md.append(line)
        if kind == "pipeline" and skipped:
            md += [f"| {OVERHEAD_LABELS[k]} | skipped: {skipped} | | | | | | |" for k in LOCAL_KINDS]
    return rows, md


def _plain_ratio(res: dict) -> tuple[list[tuple], list[str], dict]:
    """Rows, markdown and goal of the pipeline (offline) / plain script ratio."""
    ratio = _median(res["pipeline"], "wall_s") / _median(res["plain"], "wall_s")
    cpu_ratio = _median(res["pipeline"], "cpu_s") / _median(res["plain"], "cpu_s")
    extra = _median(res["pipeline"], "wall_s") - _median(res["plain"], "wall_s")
    clearml_import = _median(res["import_clearml"], "wall_s") - _median(res["import_steps"], "wall_s")
    rows = [("overhead", "pipeline/plain", "wall_ratio", ratio), ("overhead", "pipeline/plain", "cpu_ratio", cpu_ratio),
            ("overhead", "pipeline-plain", "extra_wall_s", extra),
            ("overhead", "import clearml", "extra_wall_s", clearml_import)]
    md = ["", f"**Ratio pipeline / plain (median wall): {ratio:.2f}** (goal <= {GOAL_RATIO}: {yes(ratio <= GOAL_RATIO)}); "
          f"the pipeline takes {extra:+.2f} s more, of which about {clearml_import:.2f} s is importing `clearml` "
          f"in a fresh interpreter. CPU time ratio: {cpu_ratio:.2f}."]
    goal = {"goal": f"overhead: pipeline / plain wall time <= {GOAL_RATIO}", "value": f"{ratio:.2f}",
            "met": ratio <= GOAL_RATIO}
    return rows, md, goal


def _local_ratio(res: dict, kind: str, title: str) -> tuple[list[tuple], list[str], dict]:
    """Rows, markdown and goal of one ``--mode local`` kind / offline ratio."""
    offline, local = _median(res["pipeline"], "wall_s"), _median(res[kind], "wall_s")
    local_ratio = local / offline
    server_cpu = _nanmedian([r.extra.get("server_cpu_s", float("nan")) for r in used_runs(res[kind])])
    rows = [("overhead", f"{kind}/offline", "wall_ratio", local_ratio),
            ("overhead", f"{kind}/offline", "cpu_ratio", _median(res[kind], "cpu_s") / _median(res["pipeline"], "cpu_s")),
            ("overhead", f"{kind}-offline", "extra_wall_s", local - offline),
            ("overhead", kind, "server_cpu_s_median", server_cpu)]
    md = [f"**Ratio {title} / offline (median wall): {local_ratio:.2f}** (goal <= {GOAL_LOCAL_RATIO}: "
          f"{yes(local_ratio <= GOAL_LOCAL_RATIO)}); {local - offline:+.2f} s; / plain "
          f"{local / _median(res['plain'], 'wall_s'):.2f}"
          + (f"; the server's processes used {server_cpu:.1f} s CPU per run (median; counted as the run's, "
             "not as other load)." if server_cpu == server_cpu else "."), ""]
    goal = {"goal": f"overhead: {title} / offline wall time <= {GOAL_LOCAL_RATIO}", "value": f"{local_ratio:.2f}",
            "met": local_ratio <= GOAL_LOCAL_RATIO}
    return rows, md, goal


def _local_sections(res: dict) -> tuple[list[tuple], list[str], list[dict]]:
    """Rows, markdown and goals of the ``--mode local`` runs (ratios, timelines, bare start-up)."""
    rows, md, goals = [], [""], []
    for kind, title in LOCAL_KINDS.items():
        r, m, g = _local_ratio(res, kind, title)
        rows, md, goals = rows + r, md + m, goals + [g]
    md += [f"Server: {res.get('local_server', '?')}. Timelines: created/started/completed of each step task "
           "from the server (`tasks.get_all`; the steps from the controller's configuration object `Pipeline`); "
           "the step subprocesses from psutil every 0.1 s (exit: when it stops running; the controller reaps it "
           "at its next poll); `Task.init` done: the step's first console line (ClearML prints its results-page "
           "line at the end of `Task.init`)."]
    for kind, title in LOCAL_KINDS.items():
        r, m = local_rows(res, kind, title)
        rows += r
        md += [""] + m
    r, m = bare_rows(res)
    return rows + r, md + m, goals


def overhead_rows(res: dict, retries: int) -> tuple[list[tuple], list[str], list[dict]]:
    """Tidy rows, markdown lines and goal entries of :func:`bench.overhead.measure_overhead`'s result
    (``retries``: how many times a disturbed run was repeated at most, for the note)."""
    skipped = res.get("local_skipped", "")
    rows, md = _overhead_table(res, skipped)
    r, m, goal = _plain_ratio(res)
    rows, md, goals = rows + r, md + m, [goal]
    if skipped:
        md += ["", f"`--mode local`: skipped: {skipped}."]
        goals.append({"goal": f"overhead: `--mode local` / offline wall time <= {GOAL_LOCAL_RATIO}",
                      "value": f"skipped: {skipped}", "met": None})
    else:
        r, m, g = _local_sections(res)
        rows, md, goals = rows + r, md + m, goals + g
    md += ["", "_other load_: CPU used by other processes of the machine during the run, in cores "
           f"(this machine has {psutil.cpu_count()}). A run with more than {DISTURBED_CORES} is _disturbed_: it is "
           f"repeated (up to {retries} times) and left out of the medians, unless every run was disturbed."]
    return rows, md, goals


# --------------------------------------------------------------------------------------------
# Scale
# --------------------------------------------------------------------------------------------


def _scale_status(r: ChildRun) -> str:
    """The status cell of a scale run: ok, slow, failed, disturbed, repeated."""
    e = r.extra
    status = "ok" if r.ok else ("timed out" if r.timed_out else f"exit {r.returncode}: {tail(r.log, 3)}")
    if r.ok and r.wall_s > SLOW_SCALE_RUN_S:
        status = f"ok, slower than {SLOW_SCALE_RUN_S // 60} min"
    if r.disturbed:
        status += " (disturbed by other processes)"
    if e["disturbed"]:
        status += "; repeated after a disturbed run of " + ", ".join(f"{w:.0f} s @ {o:.2f} cores"
                                                                   for w, o in e["disturbed"])
    return status


def _scale_tidy(r: ChildRun) -> list[tuple]:
    """Tidy rows of one scale run (sizes in MiB, times in seconds)."""
    e, name = r.extra, f"{r.extra['factor']}x"
    rows = [("scale", name, "rows", e["rows"]), ("scale", name, "csv_mib", e["csv_bytes"] / MIB),
            ("scale", name, "wall_s", r.wall_s), ("scale", name, "cpu_s", r.cpu_s),
            ("scale", name, "max_rss_mib", r.max_rss / MIB),
            ("scale", name, "peak_tree_rss_mib", r.peak_tree_rss / MIB),
            ("scale", name, "offline_session_mib", e["session_bytes"] / MIB),
            ("scale", name, "other_cores", r.other_cores), ("scale", name, "exit_code", r.returncode),
            ("scale", name, "disturbed_attempts", len(e["disturbed"])),
            ("scale", name, "timed_out", int(r.timed_out))]
    return rows + [("scale", name, k, v) for k, v in e.items() if k.startswith("r2_")]


def scale_rows(runs: list[ChildRun]) -> tuple[list[tuple], list[str], Optional[dict]]:
    """Tidy rows, markdown lines and goal entry of :func:`bench.scale.measure_scale`'s result."""
    rows, md = [], ["| size | rows | CSV (MiB) | wall (s) | CPU user+sys (s) | max RSS (MiB) | peak tree RSS (MiB) "
                    "| offline session (MiB) | other load (cores) | R² polynomial / xgboost | status |",
                    "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        e = r.extra
        r2 = " / ".join(f"{e[k]:.4f}" if k in e else "-" for k in ("r2_polynomial", "r2_xgboost"))
        md.append(f"| {e['factor']}x | {e['rows']:,} | {e['csv_bytes'] / MIB:,.1f} | {r.wall_s:.1f} | {r.cpu_s:.1f} "
                  f"| {r.max_rss / MIB:,.0f} | {r.peak_tree_rss / MIB:,.0f} | {e['session_bytes'] / MIB:,.1f} "
                  f"| {r.other_cores:.2f} | {r2} | {_scale_status(r)} |")
        rows += _scale_tidy(r)
    md += ["", "Rows are resampled with replacement, so near-duplicates sit on both sides of the split: "
           "the R² at 10x and 50x is optimistic and only shows that the run worked.",
           "_max RSS_: largest resident set of one process (`wait4`); _peak tree RSS_: largest sum over the "
           "process tree seen by polling every 0.1 s."]
    biggest = max(runs, key=lambda r: r.extra["factor"]) if runs else None
    goal = None
    if biggest is not None:
        goal = {"goal": f"scale: {biggest.extra['factor']}x run finishes (ideally within {SLOW_SCALE_RUN_S // 60} min)",
                "value": f"{biggest.wall_s:.0f} s, {biggest.max_rss / MIB:,.0f} MiB, exit {biggest.returncode}",
                "met": biggest.ok and biggest.wall_s <= SLOW_SCALE_RUN_S}
    return rows, md, goal


# --------------------------------------------------------------------------------------------
# Quality
# --------------------------------------------------------------------------------------------


def _quality_run_rows(table: pd.DataFrame, default_degree: int) -> list[tuple]:
    """Tidy rows of every fit (the default degree's ``polynomial_deg`` copy left out)."""
    rows = []
    for r in table.itertuples():
        if not r.model.startswith("polynomial_deg"):
            rows += [("quality_runs", f"{r.model} seed {r.seed}", m, getattr(r, m))
                     for m in (*METRICS, "fit_s", "other_cores", "joblib_bytes")]
        elif int(r.model.removeprefix("polynomial_deg")) != default_degree:
            rows.append(("quality_runs", f"{r.model} seed {r.seed}", "r2", r.r2))
    return rows


def _quality_table(table: pd.DataFrame, order: list[str], with_k0: bool) -> tuple[list[tuple], list[str]]:
    """Rows and markdown of the per-model statistics over the seeds, with the published anchors."""
    rows, seeds = [], sorted(table.seed.unique())
    md = [f"Test set (20% of the rows), seeds {seeds[0]}..{seeds[-1]} ({len(seeds)} seeds; the seed drives the split and "
          "the model), default parameters" + (" (`<model>_k0`: the same with `spatial_neighbors` 0, no neighbour "
                                              "features)" if with_k0 else "") + ".", "",
          "| model | R² mean | R² std | R² min | R² max | RMSE mean | MAE mean | fit s (mean) | joblib MB |",
          "|---|---|---|---|---|---|---|---|---|"]
    for model in order:
        sub = table[table.model == model]
        for metric in METRICS:
            s = sub[metric]
            stats = {"mean": s.mean(), "std": s.std(ddof=1) if len(s) > 1 else 0.0, "min": s.min(), "max": s.max()}
            rows += [("quality", model, f"{metric}_{k}", v) for k, v in stats.items()]
        rows += [("quality", model, "fit_s_mean", sub.fit_s.mean()),
                 ("quality", model, "joblib_mb_mean", sub.joblib_bytes.mean() / 1e6)]
        r2 = sub.r2
        md.append(f"| {model} | {r2.mean():.4f} | {r2.std(ddof=1) if len(r2) > 1 else 0.0:.4f} | {r2.min():.4f} | "
                  f"{r2.max():.4f} | {sub.rmse.mean():.4f} | {sub.mae.mean():.4f} | {sub.fit_s.mean():.2f} | "
                  f"{sub.joblib_bytes.mean() / 1e6:.2f} |")
    for name, value in ANCHORS.items():
        md.append(f"| *published: {name}* | {value} | | | | | | | |")
    md += ["", "RMSE and MAE in $100k; joblib MB: size of `joblib.dump` of the fitted estimator (what a run saves as "
           "`models/<model>.joblib`). Published figures as quoted in issue 12 (same 20% test size, other splits)."]
    return rows, md


def _fit_times(table: pd.DataFrame, order: list[str], with_k0: bool) -> tuple[list[tuple], list[str]]:
    """Rows and markdown of XGBoost's fit time (undisturbed and all fits) and rounds, and every model's fit time."""
    xgb = table[table.model == "xgboost"]
    calm = xgb[xgb.other_cores <= DISTURBED_CORES]
    calm_text = (f"mean {calm.fit_s.mean():.2f} s (min {calm.fit_s.min():.2f}, max {calm.fit_s.max():.2f}) over the "
                 f"{len(calm)} undisturbed fits" if len(calm) else "no fit was undisturbed")
    md = ["", f"XGBoost fit time: {calm_text}; mean {xgb.fit_s.mean():.2f} s (max {xgb.fit_s.max():.2f}) over all "
          f"{len(xgb)} fits, other load during them {xgb.other_cores.min():.2f}..{xgb.other_cores.max():.2f} cores "
          f"(a fit is disturbed above {DISTURBED_CORES}). Mean boosting rounds kept: {xgb.rounds.mean():.0f}"
          + (f" ({table[table.model == 'xgboost_k0'].rounds.mean():.0f} without neighbour features)" if with_k0 else "")
          + ".", "", "Mean fit time per model (all fits): " + ", ".join(
              f"{m} {table[table.model == m].fit_s.mean():.2f} s" for m in order)
          + f"; other load during the fits: at most {table.other_cores.max():.2f} cores."]
    rows = [("quality", "xgboost", "rounds_mean", xgb.rounds.mean()),
            ("quality", "xgboost", "fit_s_mean_undisturbed", calm.fit_s.mean() if len(calm) else float("nan")),
            ("quality", "xgboost", "undisturbed_fits", len(calm))]
    return rows, md


def _degree_table(table: pd.DataFrame, degrees: list[int], default_degree: int,
                  with_k0: bool) -> tuple[list[tuple], list[str], list[dict]]:
    """Rows, markdown and goals of the polynomial R² per degree."""
    rows, goals = [], []
    poly_floor = GOAL_POLY_MIN_NEIGHBORS if with_k0 else GOAL_POLY_MIN_DEFAULT
    md = ["", "Polynomial regression by degree (R² over the seeds" + (", with neighbour features" if with_k0 else "")
          + "):", "", "| degree | R² min | R² mean | R² max | goal | met |", "|---|---|---|---|---|---|"]
    for degree in degrees:
        s = table[table.model == f"polynomial_deg{degree}"].r2
        floor = poly_floor if degree == default_degree else GOAL_POLY_MIN_ANY_DEGREE
        label = f"{degree} (default)" if degree == default_degree else str(degree)
        md.append(f"| {label} | {s.min():.4f} | {s.mean():.4f} | {s.max():.4f} | min >= {floor} "
                  f"| {yes(s.min() >= floor)} |")
        rows += [("quality", f"polynomial degree {degree}", "r2_min", s.min()),
                 ("quality", f"polynomial degree {degree}", "r2_mean", s.mean())]
        goals.append({"goal": f"quality: polynomial degree {degree} R² >= {floor} on every seed",
                      "value": f"min {s.min():.4f}", "met": s.min() >= floor})
    return rows, md, goals


def _model_goals(table: pd.DataFrame, with_k0: bool) -> list[dict]:
    """Goals of the XGBoost R² and fit time and (with neighbour features) the polynomial without them."""
    goals = []
    xgb = table[table.model == "xgboost"]
    calm = xgb[xgb.other_cores <= DISTURBED_CORES]
    if with_k0:
        plain = table[table.model == "polynomial_k0"].r2
        goals.append({"goal": f"quality: polynomial without neighbour features R² >= {GOAL_POLY_MIN_DEFAULT} on every seed",
                      "value": f"min {plain.min():.4f}", "met": plain.min() >= GOAL_POLY_MIN_DEFAULT})
        moonshot = ANCHORS['best neural (TabR, retrieval-based)']
        goals += [{"goal": f"quality: XGBoost mean R² >= {GOAL_XGB_MEAN} (moonshot {moonshot})",
                   "value": f"{xgb.r2.mean():.4f}", "met": xgb.r2.mean() >= GOAL_XGB_MEAN},
                  {"goal": f"quality: XGBoost R² >= {GOAL_XGB_MIN} on every seed", "value": f"min {xgb.r2.min():.4f}",
                   "met": xgb.r2.min() >= GOAL_XGB_MIN}]
        xgb = table[table.model == "xgboost_k0"]
    plain_name = "XGBoost without neighbour features" if with_k0 else "XGBoost"
    goals.append({"goal": f"quality: {plain_name} mean R² >= {GOAL_XGB_MEAN_PLAIN}",
                  "value": f"{xgb.r2.mean():.4f}", "met": xgb.r2.mean() >= GOAL_XGB_MEAN_PLAIN})
    fit_s = calm.fit_s.max() if len(calm) else table[table.model == "xgboost"].fit_s.mean()
    goals.append({"goal": f"quality: XGBoost fit <= {GOAL_XGB_FIT_S:.0f} s", "value": (
        f"max {fit_s:.2f} s (undisturbed fits)" if len(calm) else f"mean {fit_s:.2f} s (all fits disturbed)"),
        "met": fit_s <= GOAL_XGB_FIT_S})
    return goals


def quality_rows(table: pd.DataFrame, degrees: list[int], default_degree: int) -> tuple[list[tuple], list[str], list[dict]]:
    """Tidy rows, markdown lines and goal entries of :func:`bench.quality.measure_quality`'s result."""
    with_k0 = (table.model == "xgboost_k0").any() or (table.model == "polynomial_k0").any()
    order = [m for kind in MODEL_KINDS for m in (kind, f"{kind}_k0") if (table.model == m).any()]
    rows = _quality_run_rows(table, default_degree)
    r, md = _quality_table(table, order, with_k0)
    rows += r
    r, m = _fit_times(table, order, with_k0)
    rows, md = rows + r, md + m
    r, m, goals = _degree_table(table, degrees, default_degree, with_k0)
    return rows + r, md + m, goals + _model_goals(table, with_k0)


# --------------------------------------------------------------------------------------------
# The whole report
# --------------------------------------------------------------------------------------------


def _commit(code_root: Path) -> str:
    """The benchmarked commit (short), noting uncommitted changes and a ``--code`` clone."""
    try:
        commit = subprocess.run(["git", "-C", str(code_root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(code_root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        commit += " (with uncommitted changes)" if dirty else ""
        commit += " (clean clone, `--code`)" if code_root != ROOT else ""
    except OSError:
        commit = "?"
    return commit


def environment_lines(args, data: Path, n_rows: int, settings: Settings) -> list[str]:
    """Where and on what the benchmark ran (a few markdown lines)."""
    versions = []
    for pkg in ("clearml", "xgboost", "scikit-learn", "pandas", "numpy"):
        try:
            versions.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    return [f"- date (UTC): {datetime.now(timezone.utc):%Y-%m-%d %H:%M}; commit {_commit(settings.code_root)}",
            f"- machine: {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
            f"Python {platform.python_version()}; {', '.join(versions)}",
            f"- data: `{data}` ({n_rows:,} rows)",
            f"- settings: sections {args.sections}; reps {args.reps} (+{args.warmup} warm-up), sizes {args.sizes}, "
            f"seeds {args.seeds}, polynomial degrees {args.degrees}, spatial_neighbors "
            f"{args.spatial_neighbors if args.spatial_neighbors is not None else 'default'}; "
            f"each measured run waits up to {args.quiet_wait:.0f} s for other "
            f"processes to use < {QUIET_CORES} cores; disturbed runs repeated up to {args.retries} times"]


def results_markdown(environment: list[str], total_s: float, command: str, goals: list[dict], body: list[str]) -> str:
    """The whole ``results.md``: title, environment, run time (``total_s`` seconds), goals table, sections."""
    head = ["# Benchmark results", "", *environment,
            f"- benchmark run time: {total_s / 60:.1f} min (`{command}`)",
            "", "## Goals", "", "| goal | value | met |", "|---|---|---|",
            *(f"| {g['goal']} | {g['value']} | {yes(g['met'])} |" for g in goals), ""]
    return "\n".join(head + body)


def goal_rows(goals: list[dict]) -> list[tuple]:
    """Tidy rows of the goals: met 1 / 0, empty when skipped."""
    return [("goals", g["goal"], "met", "" if g["met"] is None else int(g["met"])) for g in goals]


def write_results(out: Path, rows: list[tuple], markdown: str) -> None:
    """Write ``results.csv`` (section,name,metric,value; floats to 6 significant digits) and ``results.md`` to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["section", "name", "metric", "value"])
        for section, name, metric, value in rows:
            writer.writerow([section, name, metric, f"{value:.6g}" if isinstance(value, float) else value])
    (out / "results.md").write_text(markdown)
