"""``python clearml_pipeline.py optimize``: tune the pipeline's ``Args`` with ClearML's HyperParameterOptimizer.

    python clearml_pipeline.py optimize [--mode local] [--objective xgboost] [--trials 20] [--concurrent K]
        [--time-limit MIN] [--strategy optuna|random|grid] [--search NAME=LOW:HIGH ...] [--set NAME=VALUE ...]
        [--base RUN_ID] [--queue default] [--controller-queue services] [--optimizer-queue services]

Trials are runs of the pipeline cloned from a completed base run (:mod:`runtime.optimize`); the
objective is the chosen model's validation R² (training rows only), maximised. Everything is
checked here before ClearML starts; the search itself is :func:`run_optimize`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
from pathlib import Path
from types import ModuleType
from typing import Optional

from cli.errors import EXIT_FAILED, EXIT_OK, UsageError
from runtime.optimize import COMMAND_PARAMETER, LOCAL_TRIAL_ENV, STRATEGIES
from steps.params import MODEL_KINDS, PipelineParameters, parameter_fields, search_space


@dataclasses.dataclass(frozen=True)
class OptimizeOptions:
    """The checked input of ``optimize`` (see ``optimize --help``)."""

    mode: str = "remote"
    objective: str = "xgboost"
    trials: int = 20
    concurrent: int = 0
    time_limit: Optional[float] = None
    strategy: str = "optuna"
    space: tuple = ()
    fixed: tuple = ()
    base: str = ""
    queue: str = "default"
    controller_queue: str = "services"
    optimizer_queue: str = ""
    top: int = 5
    seed: Optional[int] = None
    grid_points: int = 3
    report_period: float = 10.0
    argv: tuple = ()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(f"{message}; see optimize --help")


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``optimize``."""
    p = _Parser(prog="clearml_pipeline.py optimize", allow_abbrev=False,
                formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                description="Tune the pipeline's parameters with ClearML's HyperParameterOptimizer: each trial is a "
                "run of the pipeline (cloned from a completed run); the objective is the chosen model's validation "
                "R2 (from the training rows only), maximised. Needs a ClearML server.")
    p.add_argument("--mode", default="remote", help="remote: trials run on agents (controllers on "
                   "--controller-queue, steps on --queue); local: trials run here, one subprocess each, no agent")
    p.add_argument("--objective", default="xgboost",
                   help=f"model whose validation R2 is maximised: {', '.join(MODEL_KINDS)}")
    p.add_argument("--trials", type=int, default=20, help="number of trials (runs)")
    p.add_argument("--concurrent", type=int, default=0, help="trials at once (0: 1 with --mode local, else the "
                   "number of agents serving --queue)")
    p.add_argument("--time-limit", type=float, default=None, metavar="MIN", help="stop the search after MIN minutes")
    p.add_argument("--strategy", default="optuna", help=f"search strategy: {', '.join(STRATEGIES)}")
    p.add_argument("--search", action="append", default=[], metavar="NAME=LOW:HIGH",
                   help="search NAME in [LOW, HIGH] instead of its declared range (repeatable); the default search "
                   "space is the declared ranges of the objective model's parameters")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="fixed",
                   help="fix a parameter on every trial, e.g. xgb_n_estimators=300 (repeatable)")
    p.add_argument("--base", default="", metavar="RUN_ID", help="base run (default: the newest completed run of the "
                   "pipeline that trains the objective model)")
    p.add_argument("--queue", default="default", help="queue of the trials' steps (agents)")
    p.add_argument("--controller-queue", default="services", help="queue of the trials' controllers (agents)")
    p.add_argument("--optimizer-queue", default="", metavar="QUEUE", help="run the optimizer itself on this queue "
                   "(e.g. services) and return at once: the search goes on with this machine off")
    p.add_argument("--top", type=int, default=5, help="rows of the table of best trials")
    p.add_argument("--seed", type=int, default=None, help="seed of Optuna's sampler")
    p.add_argument("--grid-points", type=int, default=3, help="values per parameter in a grid search")
    p.add_argument("--report-period", type=float, default=10.0, metavar="S", help="seconds between the optimizer "
                   "task's reports (objective plot, summary table)")
    return p


def _checked_fixed(items: list[str], tuned: dict) -> tuple:
    fields = {f.name: f for f in parameter_fields()}
    fixed = []
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in fields:
            raise UsageError(f"--set {item!r}: {name!r} is not a pipeline parameter; give NAME=VALUE with a name of: "
                             f"{', '.join(fields)}")
        if name in tuned:
            raise UsageError(f"--set {item!r}: {name} is also searched; fix it or search it, not both "
                             f"(searched: {', '.join(tuned)})")
        PipelineParameters.from_raw({name: value})  # ParameterError: not of its type
        fixed.append((name, value))
    return tuple(fixed)


def _checked_space(args) -> dict:
    from steps.params import parse_search_override

    if args.objective not in MODEL_KINDS:
        raise UsageError(f"--objective {args.objective!r} is not a model; choose one of {', '.join(MODEL_KINDS)}")
    space = {name: spec for name, spec in search_space().items()
             if args.objective in next(f for f in parameter_fields() if f.name == name).metadata["models"]}
    for text in args.search:
        name, low, high = parse_search_override(text)
        space[name] = (low, high, *search_space()[name][2:])
    if not space:
        raise UsageError(f"{args.objective} has no tuned parameter; choose --objective xgboost or polynomial, or give "
                         "ranges with --search NAME=LOW:HIGH")
    return space


def _check_numbers(args) -> None:
    if args.mode not in ("local", "remote"):
        hint = ("a ClearML server: its trials are runs stored there, and --mode offline has none; " if args.mode ==
                "offline" else "")
        raise UsageError(f"optimize --mode {args.mode!r}: optimize needs {hint}use --mode local (trials here, no "
                         "agent) or --mode remote (the default: trials on agents)")
    if args.strategy not in STRATEGIES:
        raise UsageError(f"--strategy {args.strategy!r}: choose one of {', '.join(STRATEGIES)}")
    for flag, value, low in (("--trials", args.trials, 1), ("--concurrent", args.concurrent, 0), ("--top", args.top, 1),
                             ("--grid-points", args.grid_points, 2)):
        if value < low:
            raise UsageError(f"{flag} {value} must be at least {low}")
    if args.time_limit is not None and not args.time_limit > 0:
        raise UsageError(f"--time-limit {args.time_limit} must be a number of minutes above 0")
    if not args.report_period > 0:
        raise UsageError(f"--report-period {args.report_period} must be above 0 seconds")
    for flag in ("queue", "controller_queue", "optimizer_queue"):
        value = getattr(args, flag)
        if value and len(value) < 3:
            raise UsageError(f"--{flag.replace('_', '-')} {value!r} is too short: ClearML queue names have at least "
                             "3 characters")


def parse_optimize(argv: list[str]) -> OptimizeOptions:
    """Parse and check ``optimize``'s flags (no ClearML yet).

    :raises UsageError, steps.params.ParameterError: one line naming the problem and the fix (exit 2).
    """
    args = build_parser().parse_args(argv)
    _check_numbers(args)
    space = _checked_space(args)
    fixed = _checked_fixed(args.fixed, space)
    return OptimizeOptions(args.mode, args.objective, args.trials, args.concurrent, args.time_limit, args.strategy,
                           tuple(space.items()), fixed, args.base, args.queue, args.controller_queue,
                           args.optimizer_queue, args.top, args.seed, args.grid_points, args.report_period, tuple(argv))


def agent_runs_optimizer() -> bool:
    """Whether the task an agent started this process for is an ``optimize`` search (``--optimizer-queue``)."""
    from clearml import Task

    task = Task.get_task(task_id=os.environ["CLEARML_TASK_ID"])
    return COMMAND_PARAMETER in task.get_parameters(cast=False)


def run_optimizer_on_agent(pipeline: ModuleType) -> int:
    """An agent runs the search that ``--optimizer-queue`` sent it (its command line is on the task)."""
    from clearml import Task

    task = Task.get_task(task_id=os.environ["CLEARML_TASK_ID"])
    return run_optimize(parse_optimize(shlex.split(task.get_parameters(cast=False)[COMMAND_PARAMETER])), pipeline)


def run_local_trial(pipeline: ModuleType) -> int:
    """A ``--mode local`` trial: this process is a clone of the base run's controller, started by
    ClearML's ``LocalClearmlJob``; its steps run as subprocesses here (``PipelineDecorator.run_locally``).
    Its output (and its steps') goes to its task's console log only: the search prints a line per trial."""
    from clearml import PipelineDecorator

    from cli.main import run_agent_controller

    os.environ.pop(LOCAL_TRIAL_ENV, None)  # (no agent: after a recorded failure it leaves at once)
    os.environ.pop("CLEARML_WORKER_ID", None)
    quiet = os.open(os.devnull, os.O_WRONLY)  # its console is on its task (ClearML captures it), not the search's
    os.dup2(quiet, 1)
    os.dup2(quiet, 2)
    PipelineDecorator.run_locally()
    return run_agent_controller(pipeline)


def run_optimize(options: OptimizeOptions, pipeline: ModuleType) -> int:
    """Run the search (:class:`runtime.optimize_session.OptimizeSession`); returns the exit code."""
    from runtime.optimize_session import OptimizeSession

    if options.mode == "local":
        os.chdir(Path(pipeline.__file__).resolve().parent)  # LocalClearmlJob starts clearml_pipeline.py from here
    session = OptimizeSession(options, pipeline.PROJECT, pipeline.PIPELINE_NAME)
    try:
        session.prepare()
        session.start()
        session.follow()
    except KeyboardInterrupt:
        session.interrupted()  # raises KeyboardInterrupt again: cli.errors answers (exit 130)
    return EXIT_OK if session.finish() else EXIT_FAILED
