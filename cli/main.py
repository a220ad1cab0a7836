"""The commands of ``clearml_pipeline.py``, and the one ``try`` that turns their exceptions into exit codes.

A run is prepared in this order: the command line is parsed and checked (no ClearML yet), the
output folder claimed, the server checked, then ClearML starts and the pipeline is built with the
run's settings (:func:`clearml_pipeline.build_pipeline`) and called under :func:`runtime.guard.run_guarded`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Optional

from cli.errors import EXIT_INTERRUPTED, EXIT_OK, UsageError, answer, exit_code
from cli.startup import Startup, parse_startup


def _claim_output(startup: Startup) -> None:
    """The output folder, claimed atomically before any step: a second run into it is refused at once.
    (``remote``: the folder is on the agent's machine.)"""
    from steps.outputs import RUN_DIR_ENV, OutputError, claim_output_dir, default_run_dir

    if startup.command == "run" and startup.options.mode != "remote":
        try:
            folder = claim_output_dir(default_run_dir(startup.params.output_dir))
        except OutputError as exc:
            raise UsageError(str(exc)) from None
        os.environ[RUN_DIR_ENV] = str(folder)  # where a step told output_dir "" writes (steps.outputs)


def _run_dir(startup: Startup) -> Optional[Path]:
    """The folder this run writes to: ``--output-dir``, else the new ``runs/`` folder claimed for it here
    (``remote``: none, each agent makes its own)."""
    from steps.outputs import RUN_DIR_ENV

    if startup.params.output_dir or startup.options.mode == "remote":
        return Path(startup.params.output_dir) if startup.params.output_dir else None
    return Path(os.environ[RUN_DIR_ENV])


def _repository(startup: Startup):
    from cli.repository import step_repository

    if startup.options.mode == "offline":
        return None, None
    return step_repository(required=startup.options.mode == "remote")


def _chosen_dataset(startup: Startup) -> Startup:
    """``--dataset-name`` resolved to a version id, and the id checked (before any step).

    :raises runtime.data_versions.DatasetError: unknown id or name, not finalized, no CSV (exit 2).
    """
    options, params = startup.options, startup.params
    if not (params.dataset_id or options.dataset_name):
        return startup
    import runtime.data_versions as data_versions

    dataset_id = params.dataset_id or data_versions.resolve(options.dataset_project, options.dataset_name,
                                                            options.dataset_version)
    data_versions.check_dataset(dataset_id)
    return dataclasses.replace(startup, params=dataclasses.replace(params, dataset_id=dataset_id))


def run_pipeline(startup: Startup, pipeline: ModuleType) -> int:
    """Run the pipeline as ``startup`` says (offline, local or remote); returns the exit code."""
    from clearml import PipelineDecorator

    from runtime import guard, offline, sdk, server
    from runtime.step_watch import StepWatch

    options, params = startup.options, startup.params
    settings = options.settings(_repository(startup), tuple(params.model_list()))
    context = guard.RunContext(pipeline.STEP_NAMES, _run_dir(startup))
    sdk.quiet_console()
    if options.mode == "offline":
        from runtime.session_disk import check_cache_space, quiet_disk_full

        check_cache_space(offline.cache_folder())
        offline.start_offline_controller(pipeline.PROJECT, pipeline.PIPELINE_NAME)
        quiet_disk_full()
        PipelineDecorator.debug_pipeline()
        return exit_code(guard.run_guarded(pipeline.build_pipeline(settings), dataclasses.asdict(params), context))
    host = server.check_server(queues=options.queues())
    offline.configure_sdk(vcs_repo_detect_async=False)  # the repository is known before the run is stored
    sdk.cap_step_polling(1.0)
    startup = _chosen_dataset(startup)
    if options.mode == "local":
        PipelineDecorator.run_locally()
    else:
        PipelineDecorator.set_default_execution_queue(options.queue)
    server_watch = server.ServerWatch(host, on_lost=server.abandon_run, task_id=guard.controller_id)
    with server_watch, StepWatch() as watch:
        context.watch, context.server = watch, server_watch
        return exit_code(guard.run_guarded(pipeline.build_pipeline(settings), dataclasses.asdict(startup.params),
                                           context))


def run_agent_controller(pipeline: ModuleType) -> int:
    """An agent runs the controller (a re-run from the web UI, or ``--mode remote``'s controller).

    The ``Args`` typed in the web UI are checked first; a failure is recorded on the task (failed,
    with its one-line reason) and the process then waits for the agent to stop it
    (:func:`runtime.controller.leave_to_agent`), so that the agent neither replaces that reason with
    "worker execution exit code N" nor prints "Process completed successfully" under it.
    """
    from clearml import Task

    from runtime import controller, guard, sdk
    from runtime.outcome import Outcome
    from runtime.step_watch import StepWatch
    from steps.params import ParameterError

    try:
        p = controller.agent_parameters()
    except ParameterError as exc:
        task = Task.get_task(task_id=os.environ["CLEARML_TASK_ID"])
        controller.forget_cloned_runs(task)
        guard.report_outcome(task.get_logger(), Outcome("failed", str(exc)))
        task.flush(wait_for_uploads=True)
        task.mark_failed(status_reason=str(exc), status_message=str(exc), force=True)
        print(f"error: {exc}", file=sys.stderr, flush=True)
        controller.leave_to_agent()  # the agent stops this process: no "completed successfully" line
        return EXIT_OK
    from runtime.components import RunSettings

    sdk.cap_step_polling(1.0)
    sdk.quiet_console()
    settings = RunSettings(mode="agent", models=tuple(p.model_list()))
    with StepWatch() as watch:
        code = exit_code(guard.run_guarded(pipeline.build_pipeline(settings), {},
                                           guard.RunContext(pipeline.STEP_NAMES, watch=watch)))
    if code not in (EXIT_OK, EXIT_INTERRUPTED):
        controller.leave_to_agent()
    return code if code == EXIT_INTERRUPTED else EXIT_OK


def step_code(startup: Startup, pipeline: ModuleType) -> int:
    """``step-code DIR``: the code ClearML generates for every step (all model kinds), as agents get it."""
    from clearml import PipelineDecorator

    from runtime.controller import SETTINGS
    from runtime.step_code import write_step_code

    settings = startup.options.settings(_repository(startup))

    def make_pipeline():
        pipeline.build_pipeline(settings)
        return PipelineDecorator(name=pipeline.PIPELINE_NAME, project=pipeline.PROJECT,
                                 version=pipeline.PIPELINE_VERSION, **SETTINGS)

    write_step_code(startup.path, make_pipeline, pipeline.STEP_NAMES, pipeline.PROJECT, pipeline.PIPELINE_NAME)
    print(f"wrote the code of {len(pipeline.STEP_NAMES)} steps to {startup.path}")
    return EXIT_OK


def import_offline(startup: Startup) -> int:
    """``import-offline PATH``: upload the session; say how it ended."""
    from runtime.session_import import import_offline as upload

    task_id, outcome = upload(startup.path)
    if outcome.status != "completed":
        print(f"its run ended {'failed' if outcome.status == 'failed' else 'aborted'}: {outcome.reason}; "
              f"the imported task is marked so")
    print(f"imported as task {task_id}")
    return EXIT_OK


def register_data(startup: Startup) -> int:
    """``register-data PATH``: a new version of a ClearML dataset (see :mod:`runtime.data_versions`)."""
    from runtime import data_versions, offline, server

    server.check_server(queues=[])
    offline.configure_sdk()
    return data_versions.run_register(startup.path, startup.options.dataset_project, startup.options.dataset_name)


def _command(startup: Startup, pipeline: ModuleType) -> int:
    if startup.command == "import-offline":
        return import_offline(startup)
    if startup.command == "register-data":
        return register_data(startup)
    if startup.command == "step-code":
        return step_code(startup, pipeline)
    if startup.command in ("optimize", "optimize-trial"):
        from cli.optimize_command import run_local_trial, run_optimize

        return run_optimize(startup.optimize, pipeline) if startup.optimize else run_local_trial(pipeline)
    if startup.command == "agent-controller":
        from cli.optimize_command import agent_runs_optimizer, run_optimizer_on_agent

        return run_optimizer_on_agent(pipeline) if agent_runs_optimizer() else run_agent_controller(pipeline)
    _claim_output(startup)
    return run_pipeline(startup, pipeline)


def main(argv: list[str], pipeline: ModuleType) -> int:
    """Parse ``argv``, run the command; every exception becomes one line and its exit code (:mod:`cli.errors`).

    :param pipeline: the module that defines the pipeline (``clearml_pipeline``).
    """
    # OpenMP threads (XGBoost, scikit-learn) that spin while they wait make a fit 5-10x slower whenever
    # another process holds a core; passive waiting costs nothing measurable on an idle machine.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if os.environ.get("CLEARML_CACHE_DIR"):  # ClearML nests a relative cache path inside its own artifact folders
        os.environ["CLEARML_CACHE_DIR"] = os.path.abspath(os.path.expanduser(os.environ["CLEARML_CACHE_DIR"]))
    from runtime.interrupts import leave_at_once_on_interrupt
    from steps.logs import configure_console

    if argv[:1] == ["predict"]:  # ClearML-free
        from cli.predict_command import predict_main

        configure_console()
        return predict_main(argv[1:])
    leave_at_once_on_interrupt()  # until the run has a task (runtime.controller.start)
    configure_console()
    try:
        return _command(parse_startup(argv), pipeline)
    except (Exception, KeyboardInterrupt) as exc:  # e.g. the server answering errors: one line, never a traceback
        return answer(exc)
