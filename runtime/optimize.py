"""``optimize``: ClearML's ``HyperParameterOptimizer`` over runs of this pipeline (its ``Args``).

Each trial is a clone of a completed *base run* (the pipeline's controller task) with edited
``Args``, created in the pipeline's hidden project ``<project>/.pipelines/<name>`` so that it is a
run on the Pipelines page; ``load`` and ``split`` come from ClearML's cache. The objective is the
single value ``Summary`` / ``<model>/validation R2`` that the controller reports from the training
rows only (:func:`runtime.reporting.report_validation`); the test metrics are never maximised.

* :func:`search_parameters`: the search space as ClearML parameter ranges (``Args/<name>``);
* :func:`find_base_run`: the newest completed run of the pipeline, or a given one, checked;
* :func:`build_optimizer`: the optimizer, trials run by agents or here (``LocalClearmlJob``, as
  ``start_locally()`` does), fixed ``Args`` set on every trial;
* Ctrl-C: nothing of the search left queued or running on the server (:mod:`runtime.optimize_stop`).

Reports (trial lines, the best trials, the command line of the best) are in :mod:`runtime.optimize_report`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Optional

from runtime import sdk
from steps.errors import BadInput

#: Search strategies: ClearML's Optuna, random and grid search.
STRATEGIES = ("optuna", "random", "grid")
#: Title of the single values ClearML shows (``Logger.report_single_value``).
SUMMARY_TITLE = "Summary"
#: Set in the environment of ``--mode local`` trials (``LocalClearmlJob`` subprocesses of the search).
LOCAL_TRIAL_ENV = "TABULAR_OPTIMIZE_LOCAL_TRIAL"
#: The hyperparameter (section ``optimize``) that holds the command line of a search an agent runs.
COMMAND_PARAMETER = "optimize/command"
#: The tag ClearML's optimizer gives every trial it creates.
TRIAL_TAG = "optimization"
#: Statuses of a task that has ended.
ENDED = ("completed", "failed", "stopped", "published", "closed")


class OptimizeError(BadInput):
    """Bad input of ``optimize`` (a base run that cannot be tuned, an unusable range); one line naming the fix."""


def objective_series(kind: str) -> str:
    """The single value maximised for model ``kind``: ``<kind>/validation R2`` (title :data:`SUMMARY_TITLE`)."""
    from runtime.reporting import validation_series

    return validation_series(kind, "R2")


def pipeline_project(project: str, name: str) -> str:
    """The hidden project that holds a pipeline's runs (what the Pipelines page lists)."""
    return f"{project}/.pipelines/{name}"


def grid_values(low: float, high: float, scale: str, kind: type, points: int) -> list:
    """``points`` values from ``low`` to ``high`` (evenly spaced, in log space on a ``log`` scale); ints rounded, unique."""
    if points < 2:
        return [kind(low)]
    if scale == "log":
        values = [math.exp(math.log(low) + i * (math.log(high) - math.log(low)) / (points - 1)) for i in range(points)]
    else:
        values = [low + i * (high - low) / (points - 1) for i in range(points)]
    if kind is int:
        return sorted({int(round(v)) for v in values})
    return [float(f"{v:.6g}") for v in values]


def search_parameters(space: Mapping[str, tuple], strategy: str, grid_points: int = 3) -> list:
    """ClearML parameter ranges of ``space`` (``{name: (low, high, scale, int|float)}``) on ``Args/<name>``.

    Optuna and random search sample each range (ints as integers, a ``log`` scale in log space);
    grid search takes ``grid_points`` values of each. No stepped float range is made (its Optuna
    call is gone in Optuna 6).
    """
    from clearml.automation import (
        DiscreteParameterRange,
        LogUniformParameterRange,
        UniformIntegerParameterRange,
        UniformParameterRange,
    )

    ranges = []
    for name, (low, high, scale, kind) in space.items():
        key = f"Args/{name}"
        if strategy == "grid":
            ranges.append(DiscreteParameterRange(key, values=grid_values(low, high, scale, kind, grid_points)))
        elif kind is int:
            ranges.append(UniformIntegerParameterRange(key, min_value=int(low), max_value=int(high)))
        elif scale == "log":
            ranges.append(LogUniformParameterRange(key, min_value=math.log10(low), max_value=math.log10(high)))
        else:
            ranges.append(UniformParameterRange(key, min_value=float(low), max_value=float(high)))
    return ranges


def _completed_runs(project: str, name: str) -> list:
    """The pipeline's completed runs, newest first (its project is hidden: ``search_hidden``)."""
    from clearml import Task
    from clearml.backend_api.session.client import APIClient

    client = APIClient()
    found = client.projects.get_all(name=f"^{re.escape(pipeline_project(project, name))}$", search_hidden=True,
                                    only_fields=["id"])
    if not found:
        return []
    tasks = client.tasks.get_all(project=[found[0].id], status=["completed"], type=["controller"],
                                 system_tags=["-archived"], order_by=["-last_update"], search_hidden=True,
                                 only_fields=["id"], size=20)
    return [Task.get_task(task_id=t.id) for t in tasks]


def check_base_run(task, objective: str) -> None:
    """A run can be a base run: a pipeline run that trains ``objective`` and reports its validation score.

    :raises OptimizeError: naming what is missing and the fix.
    """
    from runtime.controller import raw_args, stored_models

    models = [m.strip() for m in raw_args(task).get("models", "").split(",") if m.strip()]
    if not stored_models(task):
        raise OptimizeError(f"task {task.id} is not a run of this pipeline on the server (no stored steps); pass "
                            "--base with the id of a completed pipeline run (--mode local or remote)")
    if objective not in models:
        raise OptimizeError(f"run {task.id} trains {','.join(models) or 'no model'}, not {objective}; pass --base "
                            f"with a run that trains it, or launch one: python clearml_pipeline.py --mode local "
                            f"--models {objective}")
    if objective_series(objective) not in task.get_last_scalar_metrics().get(SUMMARY_TITLE, {}):
        raise OptimizeError(f"run {task.id} does not report {SUMMARY_TITLE} / {objective_series(objective)} (it "
                            "predates validation scores, or did not complete); launch a new run: python "
                            "clearml_pipeline.py --mode local")


def find_base_run(project: str, name: str, objective: str, base_id: str = "") -> str:
    """The id of the base run: ``base_id`` checked, or the newest completed run of the pipeline that can be one
    and is not itself a trial (whose ``--set`` values would leak into the new search).

    :raises OptimizeError: an unknown or unsuitable ``base_id``, or no completed run to start from.
    """
    from clearml import Task

    if base_id:
        try:
            task = Task.get_task(task_id=base_id)
        except ValueError:
            raise OptimizeError(f"--base {base_id}: no such task on the server; pass the id of a completed "
                                "pipeline run (its web page shows it)") from None
        if str(task.status) not in ("completed", "published"):
            raise OptimizeError(f"--base {base_id} is {task.status}, not completed; pass a completed pipeline run")
        check_base_run(task, objective)
        return task.id
    problems = []
    for task in _completed_runs(project, name):
        if TRIAL_TAG in task.get_tags():  # a trial carries its search's --set values: start from a real run
            continue
        try:
            check_base_run(task, objective)
            return task.id
        except OptimizeError as exc:
            problems.append(str(exc))
    raise OptimizeError(f"no completed run of pipeline '{name}' (project '{project}') can be tuned (trials of "
                        "earlier searches are not taken)"
                        f"{' (newest: ' + problems[0] + ')' if problems else ''}; launch one first: python "
                        f"clearml_pipeline.py --mode local --models {objective} (or pass --base RUN_ID)")


def check_repository(base_id: str) -> None:
    """Trials on agents need the code: the base run must record a git repository agents can clone.

    :raises OptimizeError: it records none (launched from a checkout without a usable ``origin``).
    """
    from clearml import Task

    if not Task.get_task(task_id=base_id).data.script.repository:
        raise OptimizeError(f"run {base_id} records no git repository, so agents cannot get its code; push the "
                            "project to a git remote (origin), launch a new run from that checkout and tune it, or "
                            "run the trials here with --mode local")


def trial_job_class(base_class: type, fixed: Mapping[str, Any], strategy_of) -> type:
    """A ClearML job class that sets ``fixed`` (``{"Section/name": value}``) on every trial besides the
    sampled values, and creates no trial once the search was told to stop (see :func:`build_optimizer`).

    :param strategy_of: returns the optimizer's search strategy (its stop event; Optuna's study).
    """

    class TrialJob(base_class):
        def __init__(self, *args, parameter_override=None, **kwargs):
            strategy = strategy_of()
            if strategy is not None and sdk.search_stop_requested(strategy):  # a stop from another thread:
                study = sdk.optuna_study(strategy)  # Optuna's study.stop() works only in its own
                if study is not None:                                # thread, which is this one
                    import optuna

                    study.stop()
                    raise optuna.TrialPruned()
            super().__init__(*args, parameter_override={**fixed, **(parameter_override or {})}, **kwargs)
            own = set(kwargs.get("tags") or [])  # a trial of a trial: not tagged with the older search too
            tags = self.task.get_tags()
            if any(t.startswith("opt: ") and t not in own for t in tags):
                self.task.set_tags([t for t in tags if not t.startswith("opt: ") or t in own])

    return TrialJob


def _optuna_class(seed: Optional[int]):
    """ClearML's Optuna strategy, seeded, without pruning (a trial's objective is one final value), whose
    ``stop()`` from another thread only sets the stop event (the next trial then stops the study)."""
    import optuna
    from clearml.automation.optuna import OptimizerOptuna

    class Optuna(OptimizerOptuna):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, optuna_sampler=optuna.samplers.TPESampler(seed=seed),
                             optuna_pruner=optuna.pruners.NopPruner(), **kwargs)

        def stop(self) -> None:
            self._stop_event.set()

    return Optuna


def strategy_class(strategy: str, seed: Optional[int] = None):
    """The ClearML search strategy class of ``strategy`` (one of :data:`STRATEGIES`)."""
    from clearml.automation import GridSearch, RandomSearch

    if strategy == "optuna":
        return _optuna_class(seed)
    return {"random": RandomSearch, "grid": GridSearch}[strategy]


def build_optimizer(task, base_id: str, ranges: list, objective: str, *, strategy: str, trials: int,
                    concurrent: int, queue: str, local: bool, spawn_project: str, fixed: Mapping[str, Any],
                    time_limit_min: Optional[float] = None, seed: Optional[int] = None,
                    report_period_s: float = 10.0, poll_s: float = 3.0):
    """ClearML's ``HyperParameterOptimizer`` on ``task`` (the optimizer's own task), not started.

    :param queue: where trial controllers are enqueued (not used with ``local``: trials are subprocesses).
    :param spawn_project: the project of the trials (the pipeline's hidden project: Pipelines page).
    :param fixed: ``{"Section/name": value}`` set on every trial (``--set``; the steps' queue).
    """
    from clearml.automation import HyperParameterOptimizer
    from clearml.automation.job import ClearmlJob, LocalClearmlJob

    optimizer = HyperParameterOptimizer(
        base_task_id=base_id, hyper_parameters=ranges, objective_metric_title=SUMMARY_TITLE,
        objective_metric_series=objective_series(objective), objective_metric_sign="max",
        optimizer_class=strategy_class(strategy, seed), max_number_of_concurrent_tasks=concurrent,
        execution_queue=queue, optimization_time_limit=time_limit_min, auto_connect_task=task,
        spawn_project=spawn_project, total_max_jobs=trials, max_iteration_per_job=None,
        min_iteration_per_job=None, pool_period_min=poll_s / 60.0)
    optimizer.set_report_period(report_period_s / 60.0)
    job_base = LocalClearmlJob if local else ClearmlJob  # LocalClearmlJob: what start_locally() sets
    optimizer.get_optimizer().set_job_class(trial_job_class(job_base, fixed, optimizer.get_optimizer))
    return optimizer
