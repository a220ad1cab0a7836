"""What ``optimize`` says: a line per finished trial, the best trials, and the command line of the best.

:class:`TrialLog` follows the trials an optimizer created (:mod:`runtime.optimize`) on the server
and prints one line per trial that ended: k of N, its parameters, its validation score (the
objective), its test R² (shown, never maximised) and the best so far. A trial that failed or was
aborted is counted and reported, never fatal to the search.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

from runtime.optimize import ENDED, SUMMARY_TITLE, objective_series


@dataclass
class Trial:
    """One ended trial: its task, status, parameters (``Args/<name>``), validation and test scores."""

    task_id: str
    status: str
    params: dict[str, Any]
    validation: Optional[float] = None
    test: dict[str, float] = field(default_factory=dict)
    seconds: Optional[float] = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        """Whether the trial completed and reported its objective."""
        return self.validation is not None


def trial_scores(metrics: Mapping[str, Mapping[str, Mapping[str, float]]], kind: str) -> tuple[Optional[float], dict]:
    """``(validation R2, {"R2", "RMSE", "MAE"} on the test set)`` of model ``kind``, from a run's last metrics."""
    validation = metrics.get(SUMMARY_TITLE, {}).get(objective_series(kind), {}).get("last")
    test = {title: metrics[title][kind]["last"] for title in ("R2", "RMSE", "MAE")
            if kind in metrics.get(title, {})}
    return validation, test


def _seconds(task) -> Optional[float]:
    started, ended = getattr(task, "started", None), getattr(task, "completed", None) or getattr(task, "last_update", None)
    if isinstance(started, datetime) and isinstance(ended, datetime):
        return (ended - started).total_seconds()
    return None


def short_params(params: Mapping[str, Any]) -> str:
    """``name=value ...`` of sampled parameters (``Args/`` dropped, floats to 4 significant digits)."""
    return " ".join(f"{name.split('/', 1)[-1]}={value:.4g}" if isinstance(value, float) else
                    f"{name.split('/', 1)[-1]}={value}" for name, value in params.items())


class TrialLog:
    """The trials of one search, as they end (see the module).

    :param created: returns ``{task id: sampled parameters}`` of the trials created so far.
    :param kind: the model whose validation R² is the objective.
    """

    def __init__(self, created: Callable[[], Mapping[str, Mapping]], kind: str, total: int,
                 say: Callable[[str], None] = print):
        self.created, self.kind, self.total, self.say = created, kind, total, say
        self.trials: list[Trial] = []

    @property
    def best(self) -> Optional[Trial]:
        """The trial with the highest validation score so far (None before one completed)."""
        done = [t for t in self.trials if t.ok]
        return max(done, key=lambda t: t.validation) if done else None

    @property
    def failed(self) -> list[Trial]:
        """The trials that ended without an objective (failed, aborted, or no validation score)."""
        return [t for t in self.trials if not t.ok]

    def poll(self) -> None:
        """Read the status of the created trials; print a line for each one that ended since the last poll."""
        from clearml import Task
        from clearml.backend_api.session.client import APIClient

        created = dict(self.created())
        seen = {t.task_id for t in self.trials}
        waiting = [task_id for task_id in created if task_id not in seen]
        if not waiting:
            return
        tasks = APIClient().tasks.get_all(id=waiting, only_fields=["id", "status", "status_reason", "started",
                                                                   "completed", "last_update"])
        for task in tasks:
            if str(task.status) not in ENDED:
                continue
            validation, test = trial_scores(Task.get_task(task_id=task.id).get_last_scalar_metrics(), self.kind)
            trial = Trial(task.id, str(task.status), dict(created[task.id] or {}), validation, test, _seconds(task),
                          task.status_reason or "")
            self.trials.append(trial)
            self.say(self.line(trial))

    def refresh(self) -> None:
        """Read again the test scores of completed trials that had none yet (reported just before the end)."""
        from clearml import Task

        for trial in self.trials:
            if trial.ok and not trial.test:
                _, trial.test = trial_scores(Task.get_task(task_id=trial.task_id).get_last_scalar_metrics(), self.kind)

    def line(self, trial: Trial) -> str:
        """The line of one ended trial (k of N, parameters, scores, best so far)."""
        k = len(self.trials)
        took = f" in {trial.seconds:.0f} s" if trial.seconds is not None else ""
        if trial.ok:
            test = f", test R2 {trial.test['R2']:.4f}" if "R2" in trial.test else ""
            result = f"validation R2 {trial.validation:.4f}{test}"
        else:
            result = f"{trial.status}, no validation score" + (f" ({trial.reason})" if trial.reason else "")
        best = self.best
        best_text = f"best so far {best.validation:.4f} ({best.task_id[:8]})" if best else "no trial completed yet"
        return f"trial {k}/{self.total} {trial.task_id[:8]}{took}: {short_params(trial.params)}: {result}; {best_text}"

    def follow(self, running: Callable[[], bool], period: float = 2.0) -> None:
        """Poll until ``running()`` is false, then once more (Ctrl-C raises KeyboardInterrupt here)."""
        while running():
            self.poll()
            time.sleep(period)
        self.poll()


def best_table(trials: list[Trial], kind: str, top: int = 5):
    """The ``top`` trials by validation R² (a pandas DataFrame): task, parameters, validation R², test scores."""
    import pandas as pd

    rows = [{"trial": t.task_id[:8], **{name.split("/", 1)[-1]: value for name, value in t.params.items()},
             f"{kind} validation R2": t.validation, **{f"test {name}": value for name, value in t.test.items()}}
            for t in sorted((t for t in trials if t.ok), key=lambda t: -t.validation)[:top]]
    return pd.DataFrame(rows)


def best_command(params: Mapping[str, Any], mode: str = "local") -> str:
    """The command line that launches a run with ``params`` (``{name: value}``, Args names without section)."""
    from steps.params import flag_of, parameter_fields

    flags = {f.name: flag_of(f) for f in parameter_fields()}
    parts = ["python", "clearml_pipeline.py", "--mode", mode]
    for name, value in params.items():
        text = f"{value:.6g}" if isinstance(value, float) else str(value)
        parts += [flags[name], text if text and " " not in text else repr(text)]
    return " ".join(parts)


def summary(log: TrialLog, top: int, base_args: Mapping[str, Any], web_page: str,
            out=sys.stdout) -> Optional[dict]:
    """Print the outcome of a search: counts, the best trials, the command line of the best; returns its
    parameters (``{name: value}``, the tuned and fixed ones) or None when no trial completed."""
    failed = log.failed
    print(f"{len(log.trials)} trial(s) ended, {len(log.trials) - len(failed)} with a validation score, "
          f"{len(failed)} failed or aborted; optimizer: {web_page}", file=out)
    best = log.best
    if best is None:
        return None
    table = best_table(log.trials, log.kind, top)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"), file=out)
    params = {**base_args, **{name.split("/", 1)[-1]: value for name, value in best.params.items()}}
    print(f"best: run {best.task_id}, validation R2 {best.validation:.4f}; run it with:", file=out)
    print(f"  {best_command(params)}", file=out)
    return params
