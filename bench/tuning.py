"""Tuning section: what an ``optimize`` trial costs, and whether the tuned XGBoost beats the defaults.

What it measures, against a ClearML server (the test harness of ``--clearml-server``, started here):

1. **trial cost**: a base run (``--mode local --models xgboost``, default parameters, seed 42), then
   ``optimize --trials 2`` with ``--mode local`` (trials here, no agent) and on agents (one agent on
   ``default``, one on ``services``, one trial at once): wall time of each command and each trial's
   own time (its controller task, started to completed, read back from the server);
2. **tuned vs default**: ``optimize --mode local --trials N`` (Optuna, seeded) on that base run: the
   objective is XGBoost's validation R² from seed 42's training rows only; then the best
   configuration and the defaults are each fitted for ``random_state`` 0..9 (split and model) through
   the ClearML-free ``steps`` functions (:func:`bench.quality.fit_and_score`): test R² mean and min.

Usage: ``python bench/tuning.py [--trials 16] [--seeds 0-9] [--out bench/results]`` (writes
``tuning.md`` / ``tuning.csv``), or ``python bench/run_bench.py --sections tuning``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd

from bench.common import DEFAULT_HARNESS, ROOT, child_env, use_code

TUNED = ("xgb_max_depth", "xgb_learning_rate", "xgb_subsample", "xgb_colsample_bytree", "xgb_min_child_weight",
         "spatial_neighbors")
OPTIMIZER = re.compile(r"^optimizer: \S*/tasks/([0-9a-f]{32})/", re.M)
RUN = re.compile(r"/tasks/([0-9a-f]{32})/")
BEST = re.compile(r"^best: run ([0-9a-f]{32})", re.M)


def _cli(server, code: Path, tmp: Path, *args: str, timeout: float = 3600) -> tuple[subprocess.CompletedProcess, float]:
    env = {**child_env(tmp), **server.env}
    t0 = time.perf_counter()
    result = subprocess.run([sys.executable, "clearml_pipeline.py", *args], cwd=code, capture_output=True, text=True,
                            timeout=timeout, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"clearml_pipeline.py {' '.join(args)} exited {result.returncode}: "
                           f"{result.stderr.strip().splitlines()[-1:] or result.stdout[-500:]}")
    return result, time.perf_counter() - t0


def _seconds(api, task_id: str) -> float:
    task = api("tasks.get_all_ex", id=[task_id], only_fields=["started", "completed"])["tasks"][0]
    started, ended = (pd.Timestamp(task[k]) for k in ("started", "completed"))
    return (ended - started).total_seconds()


def _trial_times(api, optimizer_id: str) -> list[float]:
    trials = api("tasks.get_all_ex", parent=optimizer_id, search_hidden=True, only_fields=["id", "status"])["tasks"]
    return [_seconds(api, t["id"]) for t in trials if t["status"] == "completed"]


def _agents(server, queues=("default", "services")) -> None:
    for queue in queues:
        subprocess.run([str(server.harness / "bin" / "agent"), str(server.state), queue, "--python", sys.executable],
                       check=True, capture_output=True, text=True, timeout=120)


def trial_cost(server, code: Path, tmp: Path, base: str) -> list[tuple]:
    """Rows ``("tuning", "trial_<where>", metric, value)``: command wall time and mean trial time (s)."""
    rows = []
    for where, extra in (("local", ["--mode", "local"]), ("agents", ["--concurrent", "1"])):
        if where == "agents":
            _agents(server)
        result, wall = _cli(server, code, tmp, "optimize", *extra, "--trials", "2", "--seed", "0", "--base", base,
                            "--report-period", "5")
        times = _trial_times(server.api, OPTIMIZER.search(result.stdout).group(1))
        rows += [("tuning", f"trial_{where}", "command_s", wall), ("tuning", f"trial_{where}", "trials", len(times)),
                 ("tuning", f"trial_{where}", "trial_s_mean", sum(times) / max(1, len(times)))]
    return rows


def _args(api, task_id: str) -> dict[str, str]:
    hyper = api("tasks.get_hyper_params", tasks=[task_id])["params"][0]["hyperparams"]
    return {p["name"]: p.get("value") for p in hyper if p["section"] == "Args"}


def _validation(api, task_id: str) -> float:
    metrics = api("tasks.get_all_ex", id=[task_id], only_fields=["last_metrics"])["tasks"][0]["last_metrics"]
    return next(v["value"] for m in metrics.values() for v in m.values()
                if (v["metric"], v["variant"]) == ("Summary", "xgboost/validation R2"))


def tuned_params(server, code: Path, tmp: Path, base: str, trials: int, seed: int) -> tuple[dict, float, float]:
    """``optimize --mode local``: the best parameters, the best validation R² and the command's wall time."""
    result, wall = _cli(server, code, tmp, "optimize", "--mode", "local", "--trials", str(trials), "--seed",
                        str(seed), "--base", base, "--report-period", "10")
    print(result.stdout[-4000:], flush=True)  # the trial lines and the best trials
    best = BEST.search(result.stdout).group(1)
    args = _args(server.api, best)
    return {name: args[name] for name in TUNED}, _validation(server.api, best), wall


def seed_scores(data: Path, tuned: dict, seeds: list[int]) -> pd.DataFrame:
    """Test R² of XGBoost with the defaults and with ``tuned`` (raw text values) for each seed."""
    import dataclasses

    from bench.quality import fit_and_score
    from steps.data import load_dataset
    from steps.models import model_arguments
    from steps.params import DEFAULTS, PipelineParameters
    from steps.split import split_dataset

    dataset = load_dataset(str(data))
    tuned_params = PipelineParameters.from_raw({k: str(v) for k, v in tuned.items()})
    rows = []
    for seed in seeds:
        split = split_dataset(dataset, test_size=DEFAULTS.test_size, random_state=seed)
        for name, params in (("default", DEFAULTS), ("tuned", dataclasses.replace(
                tuned_params, **{f: getattr(DEFAULTS, f) for f in ("random_state", "data_path")}))):
            params = dataclasses.replace(params, random_state=seed)
            scores = fit_and_score("xgboost", model_arguments("xgboost", params), split, early_stopping=True)
            rows.append({"seed": seed, "config": name, "r2": scores["r2"], "fit_s": scores["fit_s"]})
        print(f"  seed {seed}: " + ", ".join(f"{r['config']} {r['r2']:.4f}" for r in rows[-2:]), flush=True)
    return pd.DataFrame(rows)


def measure_tuning(data: Path, tmp: Path, code: Path = ROOT, trials: int = 16, seeds: Optional[list[int]] = None,
                   harness: Path = DEFAULT_HARNESS, seed: int = 0) -> tuple[list, list, list]:
    """The whole section on a test harness started here: tidy rows, markdown lines, goals (none)."""
    from bench.server import start_clearml_server

    seeds = list(range(10)) if seeds is None else seeds
    if code == ROOT:  # agents clone the base run's repository and commit: a clean clone of HEAD, whose
        code = use_code("HEAD", tmp)  # origin is this repository as a URL (a local path is refused)
        subprocess.run(["git", "-C", str(code), "remote", "set-url", "origin", ROOT.as_uri()], check=True)
    server, why = start_clearml_server(str(harness), tmp)
    if server is None:
        return [], [f"skipped: {why}"], []
    try:
        result, base_s = _cli(server, code, tmp, "--mode", "local", "--models", "xgboost", "--data", str(data),
                              "--output-dir", str(tmp / "base"))
        base = RUN.findall(result.stdout)[-1]
        rows = [("tuning", "base_run", "command_s", base_s), *trial_cost(server, code, tmp, base)]
        tuned, validation, wall = tuned_params(server, code, tmp, base, trials, seed)
    finally:
        server.stop()
    scores = seed_scores(data, tuned, seeds)
    rows += [("tuning", "search", "command_s", wall), ("tuning", "search", "trials", trials),
             ("tuning", "search", "best_validation_r2", validation)]
    rows += [("tuning", f"tuned_{k}", "value", float(v)) for k, v in tuned.items()]
    summary = scores.groupby("config")["r2"].agg(["mean", "min"])
    rows += [("tuning", f"xgboost_{config}", f"test_r2_{stat}", summary.loc[config, stat])
             for config in summary.index for stat in ("mean", "min")]
    return rows, markdown(rows, tuned, summary, seeds, trials), []


def markdown(rows: list[tuple], tuned: dict, summary: pd.DataFrame, seeds: list[int], trials: int) -> list[str]:
    """The section's markdown lines."""
    value = {(name, metric): v for _, name, metric, v in rows}
    lines = ["| what | command (s) | trials | mean time of a trial (s) |", "|---|---|---|---|"]
    for where in ("local", "agents"):
        lines.append(f"| `optimize --trials 2` {where} | {value[(f'trial_{where}', 'command_s')]:.0f} | "
                     f"{value[(f'trial_{where}', 'trials')]:.0f} | {value[(f'trial_{where}', 'trial_s_mean')]:.0f} |")
    lines += ["", f"Search: Optuna, {trials} trials `--mode local` on seed 42's training rows, "
              f"{value[('search', 'command_s')]:.0f} s; best validation R² {value[('search', 'best_validation_r2')]:.4f}; "
              "best: " + ", ".join(f"`{k}={v}`" for k, v in tuned.items()), "",
              f"| XGBoost, test R² over random_state {seeds[0]}..{seeds[-1]} | mean | min |", "|---|---|---|"]
    lines += [f"| {config} | {summary.loc[config, 'mean']:.4f} | {summary.loc[config, 'min']:.4f} |"
              for config in ("default", "tuned")]
    return lines


def main(argv: Optional[list[str]] = None) -> int:
    """``python bench/tuning.py``: run the section, write ``tuning.md`` and ``tuning.csv`` to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--seeds", default="0-9", help="random_state values, e.g. 0-9")
    parser.add_argument("--seed", type=int, default=0, help="seed of Optuna's sampler")
    parser.add_argument("--data", default=str(ROOT / "data" / "cal_housing.csv"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    low, _, high = args.seeds.partition("-")
    tmp = Path(tempfile.mkdtemp(prefix="bench-tuning-"))
    try:
        rows, md, _ = measure_tuning(Path(args.data).absolute(), tmp, trials=args.trials,
                                     seeds=list(range(int(low), int(high or low) + 1)), seed=args.seed)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["section", "name", "metric", "value"]).to_csv(out / "tuning.csv", index=False)
    (out / "tuning.md").write_text("\n".join(["## Tuning", "", *md, ""]))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
