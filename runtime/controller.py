"""What the controller does around its DAG: before the first step, and after the last.

* :func:`start`: record the ``Args`` (every mode, offline included), settle the task (the
  repository agents clone, the real default queue, or hand the controller to its queue), check
  the parameters, and make Ctrl-C/SIGTERM a recorded interruption;
* :func:`data_input`: what ``load`` is given (the file's SHA-256 or the dataset version's);
* :func:`record_data`, :func:`finish`: the data trained on, and the outcome of an offline run;
* :func:`agent_parameters`: a run started by an agent (a re-run from the web UI) checks the raw
  text typed into its ``Args`` before anything runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from runtime.components import RunSettings
from steps.artifacts import deserialize_artifact, serialize_artifact
from steps.params import ParameterError, PipelineParameters

#: The controller's settings for ClearML's pipeline decorator (shared with ``step-code``): the module's
#: imports are not copied into the steps' code, and step results are pickled exactly (steps.artifacts).
SETTINGS = dict(skip_global_imports=True, artifact_serialization_function=serialize_artifact,
                artifact_deserialization_function=deserialize_artifact)


def start(args: dict, settings: RunSettings) -> PipelineParameters:
    """The controller's first act: ``Args`` recorded and checked, the task ready for re-runs.

    :raises steps.params.ParameterError: a value edited in the web UI is out of range.
    """
    from clearml import Task

    from runtime.interrupts import raise_on_interrupt
    from runtime.sdk import launch_only_unstopped_steps

    controller = Task.current_task()
    launch_only_unstopped_steps()
    if not Task.is_offline():  # aborted in the web UI: its steps are stopped too (runtime.guard.on_run_aborted)
        from runtime.guard import ABORT_CALLBACK_S, on_run_aborted

        controller.register_abort_callback(on_run_aborted, callback_execution_timeout=ABORT_CALLBACK_S)
    # debug_pipeline() (offline) does not record the pipeline's arguments; connecting them records
    # them, typed, in every mode (idempotent where ClearML recorded them already)
    controller.connect(args, name="Args")
    raise_on_interrupt()  # after Task.init, whose handlers would close the task before recording why
    _settle(controller, settings, args)
    return PipelineParameters.from_mapping(args).validate()


def _settle(task, settings: RunSettings, args: Mapping) -> None:
    """The repository and default queue a re-run needs; ``remote``: the controller handed to its queue.

    * The controller records the repository and commit its steps use, so that a re-run on an agent
      finds the code, whatever ClearML's own repository detection managed.
    * ``local``: ClearML stores the steps' default queue as ``mock``, its in-process stand-in; a re-run
      would wait for ever on it. The real queue is stored.
    * ``remote`` with the controller on a queue: now that the DAG, the step definitions and the
      ``Args`` are stored, this process hands the task to that queue and exits (``Task.execute_remotely``).
    """
    if settings.mlflow:
        from runtime.tracking import MLFLOW_PARAMETER

        task.set_parameter(MLFLOW_PARAMETER, True, description="log this run to MLflow too (--mlflow)")
    if settings.mode in ("offline", "agent"):
        return
    url, commit = settings.repository
    if url and task.data.script.repository != url:
        task.set_script(repository=url, commit=commit, working_dir=".", entry_point="clearml_pipeline.py")
    if settings.mode == "local":
        task.set_parameter("pipeline/default_queue", settings.queue)
    if settings.controller_on_queue:
        print(f"the controller runs on queue '{settings.controller_queue}', its steps on '{settings.queue}'; "
              f"follow the run at {task.get_output_log_web_page()} (results: its artifacts, and "
              f"{args.get('output_dir') or 'a new folder under ~/clearml-tabular-regression/runs'} on the agent's "
              "machine)", flush=True)
        task.execute_remotely(queue_name=settings.controller_queue, exit_process=True)


def data_input(p: PipelineParameters) -> str:
    """The data's SHA-256 the load step is given (a dataset version's, or the file's); the run shows its
    ``data_source`` until the load step records what it read.

    The SHA-256 is a ``load`` argument so that ClearML's cache key sees the data's content.

    :raises runtime.data_versions.DatasetError: an unusable ``dataset_id`` (before any step).
    """
    from clearml import Task

    from steps.datafile import data_fingerprint

    if p.dataset_id:  # a UI re-run may name any id: checked here, before any step
        from runtime.data_versions import check_dataset, describe

        version = check_dataset(p.dataset_id)
        source, sha256 = describe(p.dataset_id, version), version["sha256"]
    else:
        source, sha256 = p.data_path, data_fingerprint(p.data_path)
    # until the load step says what it read (a re-run's clone still shows its original's values)
    Task.current_task().set_user_properties(data_source=source, data_sha256="(set by the load step)", data_rows="")
    return sha256


def record_data(data_record: Mapping[str, object]) -> None:
    """The data the run trained on (source, SHA-256, rows, as the load step read them): user properties."""
    from clearml import Task

    from runtime.data_versions import RECORD_KEYS

    Task.current_task().set_user_properties(**{key: str(data_record[key]) for key in RECORD_KEYS})


def record_validation(validation: Mapping[str, Mapping[str, float]]) -> None:
    """Each model's validation scores (from training rows only; never the test set) on the pipeline run:
    what ``optimize`` maximises (:mod:`runtime.reporting`)."""
    from runtime.reporting import report_validation

    report_validation({kind: dict(scores) for kind, scores in validation.items()})


def finish(metrics, p: PipelineParameters, settings: RunSettings, experiment: str,
           validation: Mapping[str, Mapping[str, float]]):
    """The controller's last act: wait for the evaluation; ``--mlflow``: log the run to MLflow
    (:mod:`runtime.tracking`); an offline run records that it completed.

    :raises tracking.mlflow_run.MlflowLogError: ``--mlflow`` and MLflow failed (the run fails).
    """
    import dataclasses

    from clearml import Task

    import runtime.outcome as outcome
    from runtime.tracking import log_to_mlflow, requested

    metrics = metrics.copy()  # forces the evaluate step (lazy in offline mode) to have run
    task = Task.current_task()
    if settings.mlflow or (settings.mode == "agent" and requested(task)):
        log_to_mlflow(task, dataclasses.asdict(p), p.output_dir, experiment, validation)
    if Task.is_offline() and task is not None:
        task.add_tags([outcome.TAGS["completed"]])
    return metrics


def raw_args(task) -> dict[str, str]:
    """The ``Args`` of ``task`` as the text the server stores (what a user typed in the web UI)."""
    prefix = "Args/"
    return {name[len(prefix):]: str(value) for name, value in task.get_parameters(cast=False).items()
            if name.startswith(prefix)}


def stored_models(task) -> list[str]:
    """The model kinds whose training steps the stored DAG of ``task`` holds (a re-run can train no others)."""
    return sorted(name[len("train_"):] for name in task.get_configuration_objects() if name.startswith("train_"))


def agent_parameters() -> PipelineParameters:
    """An agent runs this controller: the parameters it will run with, checked before any step.

    :raises steps.params.ParameterError: a value typed in the web UI that is not of its type or out of
        range, or ``models`` naming a model whose step the stored DAG lacks (clearml 2.1.12 would fail
        with a KeyError after load and split).
    """
    from clearml import Task

    task = Task.get_task(task_id=os.environ["CLEARML_TASK_ID"])
    p = PipelineParameters.from_raw(raw_args(task)).validate()
    stored = stored_models(task)
    if stored and not set(p.model_list()) <= set(stored):
        raise ParameterError(
            f"models = {p.models!r}: a re-run trains the models of the run it was cloned from "
            f"({','.join(stored)}); to train others, launch a new run: python clearml_pipeline.py --models {p.models}")
    return p


def forget_cloned_runs(task) -> None:
    """A re-run refused before its first step: its DAG (copied from the run it was cloned from) shows every
    step *skipped* (ClearML's status of a step not run), none linked to the steps of the run it was cloned from."""
    dag = task.get_configuration_object_as_dict("Pipeline") or {}
    for node in dag.values():
        if isinstance(node, dict):
            node.update(executed=None, job_id=None, status="skipped", job_started=None, job_ended=None)
    if dag:  # as ClearML stores it: JSON text
        task.set_configuration_object("Pipeline", config_text=json.dumps(dag, indent=2), config_type="dictionary")


def leave_to_agent(timeout: float = 60.0) -> None:
    """An agent runs this controller and its failure is recorded on the task: wait for the agent to stop us.

    Exiting 0 would make the agent print "Process completed successfully" under the failure; exiting
    non-zero would make it replace the status reason with "worker execution exit code N". Seeing the
    task failed (it checks every few seconds), the agent prints "Task failed: stopping task" and kills
    this process, leaving the reason the web UI shows. After ``timeout`` seconds the caller exits anyway;
    with no agent (``CLEARML_WORKER_ID`` unset), at once.
    """
    import sys
    import time

    sys.stdout.flush()
    sys.stderr.flush()
    if not os.environ.get("CLEARML_WORKER_ID"):  # no agent runs this process (e.g. optimize's local trial)
        return
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            time.sleep(0.5)
    except KeyboardInterrupt:  # a SIGTERM (runtime.interrupts): the failure is recorded already
        os._exit(1)
