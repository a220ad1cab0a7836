"""One ``optimize`` search from start to end: checks, the optimizer's task, the trials followed, the outcome.

:class:`OptimizeSession` is driven by :func:`cli.optimize_command.run_optimize`: ``prepare`` (server,
base run, ``--set`` values checked; the optimizer's task; ``--optimizer-queue`` hands it to an agent
and this process exits), ``start``, ``follow`` (a line per ended trial), then ``finish`` (the best
trials and the command line of the best) or, on Ctrl-C, ``interrupted`` (the search and every trial
stopped, nothing left queued or running, the optimizer's task aborted).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import sys
from math import prod

from runtime import sdk
from runtime.interrupts import end_child_processes
from runtime.optimize import (
    COMMAND_PARAMETER,
    LOCAL_TRIAL_ENV,
    OptimizeError,
    build_optimizer,
    check_repository,
    find_base_run,
    grid_values,
    objective_series,
    pipeline_project,
    search_parameters,
)
from runtime.optimize_report import TrialLog, short_params, summary
from runtime.optimize_stop import stop_search

#: Progress lines ClearML's optimizer and Optuna print on their own; the trial lines replace them.
_NOISE = ("Progress report #", "OptunaObjective", "Pruning trial with duplicate", "Updating job performance")


class _QuietStdout:
    """``sys.stdout`` without :data:`_NOISE` lines (``print`` writes a line, then its newline)."""

    def __init__(self, stream):
        self._stream, self._dropped = stream, False

    def write(self, text: str) -> int:
        dropped = text.startswith(_NOISE) or (self._dropped and text == "\n")
        self._dropped = dropped and text != "\n"
        return len(text) if dropped else self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def base_args(base_id: str, fixed: tuple) -> dict:
    """The base run's ``Args`` with ``fixed`` applied, checked; ``{name: value}`` of those that differ from
    the defaults (or are fixed), for the command line of the best trial.

    :raises OptimizeError: a ``--set`` value out of range.
    """
    from clearml import Task

    from runtime.controller import raw_args
    from steps.params import DEFAULTS, ParameterError, PipelineParameters

    raw = {**raw_args(Task.get_task(task_id=base_id)), **dict(fixed)}
    try:
        params = PipelineParameters.from_raw(raw).validate()
    except ParameterError as exc:
        raise OptimizeError(f"the base run {base_id} with --set: {exc}") from None
    return {name: value for name, value in dataclasses.asdict(params).items()
            if name != "output_dir" and (value != getattr(DEFAULTS, name) or name in dict(fixed))}


def agents_serving(queue: str) -> int:
    """How many agents (workers) the server lists for ``queue``."""
    from clearml.backend_api.session.client import APIClient

    client = APIClient()
    found = client.queues.get_all(name=f"^{queue}$", only_fields=["id"])
    if not found:
        return 0
    return sum(1 for w in client.workers.get_all() if found[0].id in [getattr(q, "id", q) for q in (w.queues or [])])


class OptimizeSession:
    """A search (see the module); ``options``: :class:`cli.optimize_command.OptimizeOptions`."""

    def __init__(self, options, project: str, pipeline_name: str):
        self.options, self.project, self.name = options, project, pipeline_name
        self.task = self.optimizer = self.log = None
        self.base_id, self.base_args, self.concurrent = "", {}, 1

    @property
    def local(self) -> bool:
        """Whether the trials run here (``--mode local``)."""
        return self.options.mode == "local"

    def _check(self) -> None:
        from runtime import offline, server

        o = self.options
        queues = ([] if self.local else [o.controller_queue, o.queue]) + ([o.optimizer_queue] if o.optimizer_queue else [])
        server.check_server(queues=list(dict.fromkeys(queues)))
        offline.configure_sdk(vcs_repo_detect_async=False)
        self.base_id = find_base_run(self.project, self.name, o.objective, o.base)
        if not self.local:
            check_repository(self.base_id)
        self.base_args = base_args(self.base_id, o.fixed)

    def _task(self):
        from clearml import Task

        if self.options.strategy == "optuna":
            import clearml.automation.optuna  # noqa: F401  (it adds optuna to the requirements: before Task.init)
        task = Task.init(project_name=self.project, task_name=f"optimize {self.name}: {self.options.objective}",
                         task_type=Task.TaskTypes.optimizer, auto_connect_arg_parser=False,
                         auto_connect_frameworks=False, auto_resource_monitoring=False, reuse_last_task_id=False)
        if Task.running_locally():
            task.set_parameter(COMMAND_PARAMETER, shlex.join(self.options.argv),
                               description="the optimize command line (an agent runs the search with it)")
        return task

    def prepare(self) -> None:
        """Check the server, the base run and the fixed values; create the optimizer's task and the optimizer.

        :raises runtime.errors.SetupError, OptimizeError: one line naming the fix.
        """
        from clearml import Task

        from runtime.interrupts import raise_on_interrupt

        o = self.options
        self._check()
        self.task = self._task()
        raise_on_interrupt()
        if o.optimizer_queue and Task.running_locally():
            print(f"the optimizer runs on queue '{o.optimizer_queue}'; follow it at "
                  f"{self.task.get_output_log_web_page()}", flush=True)
            self.task.execute_remotely(queue_name=o.optimizer_queue, exit_process=True)
        for name in ("clearml.automation.optimization", "clearml.automation.job", "optuna"):
            logging.getLogger(name).setLevel(logging.ERROR)  # e.g. "could not resolve optimizer_class": ours
        self.concurrent = o.concurrent or (1 if self.local else max(1, agents_serving(o.queue)))
        fixed = {f"Args/{name}": value for name, value in o.fixed}
        if not self.local:
            fixed["pipeline/default_queue"] = o.queue  # where the trials' controllers send their steps
        self.optimizer = build_optimizer(
            self.task, self.base_id, search_parameters(dict(o.space), o.strategy, o.grid_points), o.objective,
            strategy=o.strategy, trials=o.trials, concurrent=self.concurrent, queue=o.controller_queue,
            local=self.local, spawn_project=pipeline_project(self.project, self.name), fixed=fixed,
            time_limit_min=o.time_limit, seed=o.seed, report_period_s=o.report_period)
        strategy = self.optimizer.get_optimizer()
        strategy.set_job_naming_scheme(lambda base, params: f"{self.name} trial: {short_params(params)}")
        self.log = TrialLog(strategy.get_created_jobs_ids, o.objective, self.total)

    @property
    def total(self) -> int:
        """The number of trials the search may run (a grid may hold fewer points than ``--trials``)."""
        o = self.options
        if o.strategy != "grid":
            return o.trials
        return min(o.trials, prod(len(grid_values(*spec, o.grid_points)) for _, spec in o.space))

    def start(self) -> None:
        """Say what is searched, then start the optimizer (its threads; trials launched from them)."""
        o = self.options
        where = "here, one subprocess each" if self.local else f"on agents: controllers on '{o.controller_queue}', " \
            f"steps on '{o.queue}'"
        space = ", ".join(f"{name} [{low:g}, {high:g}]{' log' if scale == 'log' else ''}"
                          for name, (low, high, scale, _) in o.space)
        print(f"optimizer: {self.task.get_output_log_web_page()}\nbase run {self.base_id}; {o.strategy}, "
              f"{self.total} trial(s), {self.concurrent} at once, {where}; maximising Summary / "
              f"{objective_series(o.objective)}; searching {space}"
              + (f"; fixed {', '.join(f'{k}={v}' for k, v in o.fixed)}" if o.fixed else ""), flush=True)
        sys.stdout = _QuietStdout(sys.stdout)
        if self.local:
            os.environ[LOCAL_TRIAL_ENV] = "1"
        self.optimizer.start()

    def follow(self) -> None:
        """Print a line per ended trial until the search ends (trials done, or the time limit)."""
        self.log.follow(self.optimizer.is_running)

    def finish(self) -> bool:
        """Wait for the optimizer's last report; print the best trials and the command of the best; close the
        task. Returns whether a trial completed (else the one-line error is printed)."""
        self.optimizer.stop()  # also waits for its last report (objective plot, summary table)
        self.log.poll()
        self.log.refresh()
        best = summary(self.log, self.options.top, self.base_args, self.task.get_output_log_web_page())
        self.task.close()
        if best is None:
            print(f"error: no trial completed with a validation score ({len(self.log.trials)} ended); see their "
                  f"console logs from the optimizer's page: {self.task.get_output_log_web_page()}",
                  file=sys.stderr, flush=True)
        return best is not None

    def interrupted(self) -> None:
        """Ctrl-C or SIGTERM: stop the optimizer and every trial (and its steps), mark the task aborted; then
        raise KeyboardInterrupt again (``cli.errors``: ``error: interrupted``, exit 130)."""
        print("interrupted: stopping the optimizer and its trials ...", file=sys.stderr, flush=True)
        search = sdk.search_thread(self.optimizer)  # ClearML's search thread (launches the trials)
        if self.optimizer is not None:
            self.optimizer.stop(wait_for_reporter=False)  # no new trial; running ones aborted
        end_child_processes(grace=5.0)  # --mode local: the trials are subprocesses
        stopped = 0
        if self.task is not None:
            stopped = stop_search(self.task.id)
            self.task.close()  # first: closing marks a running task completed
            self.task.mark_stopped(force=True, status_message="interrupted (Ctrl-C)")
        if search is not None:
            search.join(timeout=30)  # it sees its trials aborted and ends (none may start at exit)
        print(f"stopped {stopped} trial task(s): none left queued or running; the optimizer's task is aborted",
              file=sys.stderr, flush=True)
        raise KeyboardInterrupt
