"""The only places this project relies on ClearML's internals, each behind a version check.

Everything else uses ClearML's public API. What is here has no public equivalent in clearml 2.1:

* :func:`cap_step_polling`: the decorator's controller checks a step's status every 5 s (20 s on
  agents) with a hard-coded ``sleep`` in ``clearml/automation/controller.py`` and ``job.py``; each
  level of the DAG waits out part of that. The two modules' ``sleep`` is replaced by a capped one.

* :func:`drop_direct_stderr_lines`: ClearML writes a few messages (its log writer's retries) straight
  to the process's real stderr (``TaskHandler._log_stderr`` calls ``sys.stderr._original_write``),
  past ``logging``; an offline run on a full disk drops those about the full disk (it says so once).

* :func:`search_stop_requested`, :func:`optuna_study`, :func:`search_thread`: ClearML's optimizer has
  no public way to tell, from a trial's launch, that ``stop()`` was called from another thread (Optuna's
  ``study.stop()`` works only in the search's own thread), nor to wait for its search thread.

* :func:`quiet_console`: on a machine without NVIDIA's driver, ClearML's resource monitor still
  asks NVML for GPUs and writes "Could not fetch GPU stats" and "GPU monitoring failed ..., switching off
  GPU monitoring" into every task's console (no setting turns its GPU part off). Its module's ``gpustat``
  is given a query that finds no GPU; in the steps' processes too, through the decorator's step-code
  header (``PipelineController._task_template_header``).

* :func:`launch_only_unstopped_steps`: a step aborted in the web UI between the moment ClearML creates its
  task and the moment it launches it would run regardless: ClearML's job then clones the stopped task and
  runs the clone, marks it started (or enqueues it), both allowed from *stopped*, or fails setting its
  parameters (a traceback). The pipeline's job class (``_clearml_job_class``) is given one that notes the
  abort, keeps the aborted task as the step's (a clone made meanwhile is deleted) and does not launch it;
  aborted even earlier, between the creation of the task and its first edit by the decorator's factory
  (``Node.task_factory_func``, called by ``_launch_node``), the factory's refusal is answered with the task.

* :func:`traceback_to_the_console_only`: a ``--mode local`` step's process shares the run's terminal, and
  ClearML echoes its console there, a step's traceback included; its ``sys.excepthook`` drops the echo.

* :func:`no_abort_wait`: a controller on an agent that registered an abort callback makes its agent wait
  up to the callback's timeout plus 15 s (45 s) once the task is failed, saying so in its console, before
  it stops the process; ``register_abort_callback(None)`` leaves the timeout at -1, which the agent still
  waits out (14 s). The task's runtime property the agent reads is set to 0 (no callback).

``tests/test_sdk_internals.py`` fails when an SDK upgrade changes what these rely on, so the
version range of :data:`SUPPORTED_VERSIONS` is widened only after that test passes.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable

#: The ClearML SDK versions whose internals were checked (``tests/test_sdk_internals.py``).
SUPPORTED_VERSIONS = ("2.1.",)


def internals_supported() -> bool:
    """Whether the installed ClearML SDK is a version whose internals were checked."""
    import clearml

    return clearml.__version__.startswith(SUPPORTED_VERSIONS)


def traceback_to_the_console_only(kind, value, tb) -> None:
    """``sys.excepthook`` of a ``--mode local`` step's process (:data:`STEP_CODE_HEADER`; ClearML's own hook calls
    it once it has noted the error): the traceback goes to the step's console, not to the run's terminal, which
    the step's process shares and where the run says the error in one line (ClearML echoes the console to the
    terminal through ``sys.stderr._original_write``, :func:`drop_direct_stderr_lines`)."""
    drop_direct_stderr_lines(lambda text: True)  # the process ends here: nothing more of it for the terminal
    sys.__excepthook__(kind, value, tb)


def no_abort_wait(task) -> None:
    """The run's controller (on an agent) recorded how it ended: no abort callback, so that its agent stops it at
    once, without a 45 s wait and its two lines in the console (its ``_abort_callback_timeout`` set to 0)."""
    from clearml.backend_interface.task.development.worker import DevWorker

    task.register_abort_callback(None)
    if internals_supported():
        task._set_runtime_properties({DevWorker.property_abort_callback_timeout: 0})


def cap_step_polling(seconds: float = 1.0) -> bool:
    """Let the controller notice a finished step within ``seconds`` instead of up to 5 s (20 s on an agent).

    Replaces ``sleep`` in ``clearml.automation.controller`` and ``clearml.automation.job`` (used
    there only by ``PipelineDecorator._wait_for_node`` and ``BaseJob.wait``) with one capped at
    ``seconds``: one light status request per waiting step per ``seconds``. On an SDK version not
    in :data:`SUPPORTED_VERSIONS` nothing is replaced.

    :returns: whether the cap was applied.
    """
    if not internals_supported():
        return False
    import clearml.automation.controller as controller
    import clearml.automation.job as job

    def capped_sleep(period: float) -> None:
        time.sleep(min(period, seconds))

    controller.sleep = capped_sleep
    job.sleep = capped_sleep
    return True


def drop_direct_stderr_lines(drop: Callable[[str], bool]) -> bool:
    """Drop the text ClearML writes straight to the real stderr when ``drop(text)`` is true.

    Applies once ClearML captures the console (after ``Task.init``: ``sys.stderr`` then has
    ``_original_write``); on an SDK version not in :data:`SUPPORTED_VERSIONS` nothing is replaced.

    :returns: whether the filter was installed.
    """
    stream = sys.stderr
    original = getattr(stream, "_original_write", None)
    if not internals_supported() or original is None:
        return False

    def write(text: str):
        return len(text) if drop(text) else original(text)

    stream._original_write = write
    return True


def search_stop_requested(strategy) -> bool:
    """Whether ``stop()`` was called on a ClearML search strategy (its ``_stop_event``)."""
    return bool(getattr(strategy, "_stop_event", None) is not None and strategy._stop_event.is_set())


def optuna_study(strategy):
    """The Optuna study of ClearML's ``OptimizerOptuna`` (its ``_study``), or None."""
    return getattr(strategy, "_study", None)


def search_thread(optimizer):
    """The thread in which ClearML's ``HyperParameterOptimizer`` runs its search (its ``_thread``), or None."""
    return getattr(optimizer, "_thread", None)


class _NoGpuQuery(list):
    """What ``gpustat.new_query`` returns on a machine with no GPU: no GPUs (iterated and as ``.gpus``)."""

    gpus: list = []
    driver_version = driver_cuda_version = ""


class _NoGpus:
    """A ``gpustat`` module for ClearML's resource monitor that finds no GPU, without asking NVML."""

    @staticmethod
    def new_query(*args, **kwargs) -> _NoGpuQuery:
        return _NoGpuQuery()


def nvidia_driver_present() -> bool:
    """Whether NVIDIA's management library loads here (as ClearML's pynvml loads it); Windows: assumed."""
    import ctypes

    if sys.platform.startswith("win"):
        return True
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


#: Added to the top of every step's code: the step's process quiets its console (see :func:`quiet_console`).
STEP_CODE_HEADER = """
import signal as _signal
# Ctrl-C in a --mode local run's terminal reaches its steps too: the run's process stops and ends them
_signal.signal(_signal.SIGINT, _signal.SIG_IGN)
try:  # no GPU-monitoring failures or progress bars of small downloads in the step's console (runtime/sdk.py)
    from runtime.sdk import quiet_console, traceback_to_the_console_only
    quiet_console(steps=False)
    import os as _os
    import sys as _sys
    if not _os.environ.get("CLEARML_WORKER_ID"):  # a --mode local step: the run's terminal says its error once
        _sys.excepthook = traceback_to_the_console_only
except ImportError:
    pass
"""

#: Downloads and uploads smaller than this show no progress bar (ClearML: from 5 MB, or after 10 s).
PROGRESS_FROM_MB = 256


def quiet_console(steps: bool = True) -> bool:
    """Before ``Task.init``: the lines ClearML writes into a task's console that say nothing of the run.

    * on a machine without NVIDIA's driver, ClearML's resource monitor finds no GPU instead of logging that it
      cannot query them (a step on a GPU agent keeps its GPU monitoring);
    * the step inputs it downloads (a 5 MB model) show no progress bar: ClearML's public
      ``StorageManager.set_report_download_chunk_size`` (and upload), to :data:`PROGRESS_FROM_MB`;
      a transfer slower than 10 s still reports.

    With ``steps``, every step's process does the same on its own machine (:data:`STEP_CODE_HEADER`).

    :returns: whether this process's GPU monitor was quieted.
    """
    from clearml import StorageManager

    StorageManager.set_report_download_chunk_size(PROGRESS_FROM_MB)
    StorageManager.set_report_upload_chunk_size(PROGRESS_FROM_MB)
    if not internals_supported():
        return False
    if steps:
        from clearml.automation.controller import PipelineController

        if STEP_CODE_HEADER not in PipelineController._task_template_header:
            PipelineController._task_template_header += STEP_CODE_HEADER
    if nvidia_driver_present():
        return False
    import clearml.utilities.resource_monitor as monitor

    monitor.gpustat = _NoGpus
    return True


def launch_only_unstopped_steps() -> bool:
    """In the running controller: a step whose task was aborted before ClearML launched it is not launched (it
    stays *stopped*; :class:`runtime.step_watch.StepWatch` then ends the run: "step '...' was aborted").

    :returns: whether the pipeline's job class was replaced.
    """
    from clearml import PipelineDecorator

    pipeline = PipelineDecorator.get_current_pipeline()
    if not internals_supported() or pipeline is None:
        return False
    base = pipeline._clearml_job_class
    if getattr(base, "launches_only_unstopped", False):
        return True

    class UnstoppedJob(base):
        launches_only_unstopped = True

        def __init__(self, base_task_id, *args, **kwargs):
            from clearml import Task

            self.run_id = kwargs.get("parent")  # the run: the step task's parent

            def aborted() -> bool:
                return str(Task.get_task(task_id=base_task_id).get_status()) == "stopped"

            try:
                super().__init__(base_task_id, *args, **kwargs)
            except Exception:  # ClearML refuses to edit a task aborted while it sets its parameters
                if not aborted():
                    raise
                super().__init__(base_task_id, *args, **kwargs)  # now it clones the stopped task
            # the decorator's step task, created just before: if it was aborted at any moment up to now, ClearML
            # has cloned it (or will launch it): checked after ClearML's own look at its status, not before
            self.aborted_before_launch = aborted()
            if self.aborted_before_launch and not self.is_cached_task() and self.task.id != base_task_id:
                clone, self.task = self.task, Task.get_task(task_id=base_task_id)  # the step is the task aborted
                clone.delete(raise_on_error=False)

        def launch(self, queue_name=None) -> bool:
            if self.aborted_before_launch or str(self.task.get_status()) == "stopped":  # aborted since its creation
                self.task.mark_stopped(force=True, status_message="aborted before it was launched")
                if self.run_id and self.task.parent != self.run_id:  # ClearML sets it on a draft only
                    from clearml.backend_api.session.client import APIClient

                    APIClient().tasks.edit(task=self.task.id, parent=self.run_id, force=True)
                return False
            launched = super().launch(queue_name)
            started = getattr(self.task.data, "started", None)  # marked started, reloaded (--mode local)
            self.launched_at = started.timestamp() if launched and started is not None else None
            return launched

    UnstoppedJob.__name__ = UnstoppedJob.__qualname__ = f"Unstopped{base.__name__}"
    # ClearML's warning as it clones an aborted step ("... status=stopped. Reverting to clone Task"): not so here
    logging.getLogger("clearml.automation.job").addFilter(
        lambda record: "status=stopped. Reverting to clone Task" not in record.getMessage())
    pipeline._clearml_job_class = UnstoppedJob
    launch_node = pipeline._launch_node

    def launch_step(node) -> bool:  # the decorator's step-task factory, given back the task it made if aborted
        if node.task_factory_func is not None and not hasattr(node.task_factory_func, "aborted_task_of"):
            node.task_factory_func = _giving_back_an_aborted_task(node.task_factory_func)
        return launch_node(node)

    pipeline._launch_node = launch_step
    return True


def _giving_back_an_aborted_task(factory: Callable):
    """The decorator's step-task factory (``Node.task_factory_func``) creates the task, then edits it; aborted
    in between, ClearML refuses the edit (``ValueError``: a traceback, then the run fails on an empty node).
    Given back instead: that task, stopped, found on the server (the newest stopped task of the step's name
    created since the run and not attached to a run), which the job class does not launch."""
    from clearml import Task

    def create(node):
        try:
            return factory(node)
        except ValueError as error:
            if "can only be updated if created or in_progress" not in str(error):
                raise
            task = aborted_task_of(node.name)
            if task is None:
                raise
            return task

    def aborted_task_of(name: str):
        from clearml.backend_api.session.client import APIClient

        client = APIClient()
        run = client.tasks.get_all(id=[Task.current_task().id], only_fields=["created"])[0]
        found = client.tasks.get_all(name=f"^{re.escape(name)}$", status=["stopped"], order_by=["-created"],
                                     page=0, page_size=10, only_fields=["id", "created", "parent"])
        found = [task.id for task in found if not task.parent and task.created >= run.created]
        return Task.get_task(task_id=found[0]) if found else None

    create.aborted_task_of = aborted_task_of
    return create
