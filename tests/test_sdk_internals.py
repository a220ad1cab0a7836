"""What this project relies on in ClearML's SDK beyond its documented API: each fails when an upgrade changes it.

``runtime/sdk.py`` is the one module that touches ClearML internals; the others use public
calls whose shape matters here (the decorator reading a controller's ``__signature__``, the
pipeline's DAG and its nodes' jobs, the generated step code).
"""

from __future__ import annotations

import inspect
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import clearml
import clearml.automation.controller as controller
import clearml.automation.job as job
import clearml.task as task_module
import pytest

from runtime import sdk


def test_the_sdk_version_is_one_whose_internals_were_checked():
    assert sdk.internals_supported(), clearml.__version__


def test_the_step_waits_sleep_through_the_module_names_cap_step_polling_replaces():
    """``PipelineDecorator._wait_for_node`` and ``BaseJob.wait`` call their module's ``sleep`` by name."""
    assert "sleep(" in inspect.getsource(controller.PipelineDecorator._wait_for_node)
    assert "sleep(" in inspect.getsource(job.BaseJob.wait)
    saved = controller.sleep, job.sleep
    try:
        assert sdk.cap_step_polling(0.01)
        started = time.monotonic()
        controller.sleep(5)
        job.sleep(20)
        assert time.monotonic() - started < 1
    finally:
        controller.sleep, job.sleep = saved


def test_the_decorators_read_arguments_through_the_signature_we_give_them():
    """runtime.components sets ``__signature__``; ClearML's decorators read arguments with getfullargspec."""
    assert "getfullargspec" in inspect.getsource(controller.PipelineDecorator.component)
    assert "getfullargspec" in inspect.getsource(controller.PipelineDecorator.pipeline)


def test_the_public_pipeline_api_the_runtime_uses_is_there():
    for name in ("get_current_pipeline", "set_default_execution_queue", "run_locally", "debug_pipeline"):
        assert callable(getattr(controller.PipelineDecorator, name))
    assert isinstance(inspect.getattr_static(controller.PipelineController, "task"), property)
    node_fields = {a.name for a in controller.PipelineController.Node.__attrs_attrs__}
    assert {"job", "name", "executed", "cache_executed_step", "job_started"} <= node_fields
    assert callable(job.LocalClearmlJob.wait_for_process)  # runtime.step_watch.settle_steps reaps local steps
    for name in ("task_id", "status", "is_cached_task", "abort"):
        assert callable(getattr(job.ClearmlJob, name))


def test_clearml_writes_its_log_retries_straight_to_the_real_stderr_through_original_write():
    """runtime.sdk.drop_direct_stderr_lines wraps ``sys.stderr._original_write``, which ClearML's log writer calls."""
    from clearml.backend_interface.task.log import TaskHandler

    assert "_original_write" in inspect.getsource(TaskHandler._log_stderr)


def test_drop_direct_stderr_lines_filters_only_what_it_is_told(monkeypatch):
    import io

    written = io.StringIO()

    class Captured(io.StringIO):
        _original_write = staticmethod(written.write)

    monkeypatch.setattr("sys.stderr", Captured())
    assert sdk.drop_direct_stderr_lines(lambda text: "Errno 28" in text)
    import sys

    sys.stderr._original_write("retrying: [Errno 28] No space left on device\n")
    sys.stderr._original_write("kept\n")
    assert written.getvalue() == "kept\n"


def test_the_optimizer_internals_optimize_relies_on_are_there():
    """runtime.sdk.search_stop_requested / optuna_study / search_thread read these attributes."""
    from clearml.automation.optimization import HyperParameterOptimizer, SearchStrategy
    from clearml.automation.optuna import OptimizerOptuna

    assert "self._stop_event" in inspect.getsource(SearchStrategy.__init__)
    assert "self._study" in inspect.getsource(OptimizerOptuna)
    assert "self._thread" in inspect.getsource(HyperParameterOptimizer)
    assert sdk.search_stop_requested(object()) is False and sdk.optuna_study(object()) is None


MONITORED = """
import sys, time
sys.path.insert(0, {root!r})
from clearml import Task
if {quiet}:
    from runtime.sdk import quiet_console
    assert quiet_console(steps=False)
Task.set_offline(True)
task = Task.init(project_name="gpu-lines", task_name="t", auto_connect_frameworks=False)
time.sleep(4)  # the monitor samples twice a second; it gives up on GPUs after 3 failed samples
task.close()
"""


@pytest.mark.skipif(sdk.nvidia_driver_present(), reason="this machine has NVIDIA's driver: no lines to quiet")
def test_quiet_console_removes_the_gpu_lines_clearml_prints_without_nvidia(tmp_path):
    """Without it, ClearML's resource monitor prints NVML failures (the control run shows them: if an upgrade
    stops printing them, this test says so and the workaround can go); with it, no GPU line."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "CLEARML_CACHE_DIR": str(tmp_path / "cache"), "CLEARML_CONFIG_FILE": str(tmp_path / "none")}
    said = {}
    for quiet in (False, True):
        run = subprocess.run([sys.executable, "-c", MONITORED.format(root=root, quiet=quiet)], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        said[quiet] = [line for line in (run.stdout + run.stderr).splitlines() if "GPU" in line]
    assert any("Could not fetch GPU stats" in line for line in said[False]), said[False]
    assert said[True] == []


def test_step_code_starts_with_the_header_runtime_sdk_adds():
    """The decorator writes ``PipelineController._task_template_header`` at the top of every step's code."""
    from clearml.backend_interface.task.populate import CreateFromFunction

    assert "{header}" in CreateFromFunction.task_template.split("Task.init(")[0]
    assert "task_template_header=self._task_template_header" in inspect.getsource(controller.PipelineDecorator)
    saved = controller.PipelineController._task_template_header
    try:
        sdk.quiet_console()
        sdk.quiet_console()
        header = controller.PipelineController._task_template_header
        assert header.count(sdk.STEP_CODE_HEADER) == 1 and header.startswith(saved)
        compile(header, "<step header>", "exec")
    finally:
        controller.PipelineController._task_template_header = saved


def test_a_step_aborted_before_its_launch_is_not_launched(monkeypatch):
    """The pipeline creates each step's job with ``self._clearml_job_class(...)`` and then calls its ``launch``;
    runtime.sdk gives it a class whose ``launch`` leaves a task that is already stopped alone."""
    from types import SimpleNamespace

    assert "self._clearml_job_class(" in inspect.getsource(controller.PipelineController._launch_node)
    assert "node.job.launch(" in inspect.getsource(controller.PipelineController._launch_node)
    nodes = []
    pipeline = SimpleNamespace(_clearml_job_class=job.LocalClearmlJob, _launch_node=lambda node: nodes.append(node))
    monkeypatch.setattr(controller.PipelineDecorator, "get_current_pipeline", lambda: pipeline)
    assert sdk.launch_only_unstopped_steps() and sdk.launch_only_unstopped_steps()  # idempotent
    # the decorator's task factory is given back the task it made when an abort made ClearML refuse to edit it
    assert "node.task_factory_func(node)" in inspect.getsource(controller.PipelineController._launch_node)
    node = SimpleNamespace(name="train_xgboost", task_factory_func=lambda node: "task")
    pipeline._launch_node(node)
    pipeline._launch_node(node)
    assert nodes == [node, node] and node.task_factory_func(node) == "task"
    assert node.task_factory_func.aborted_task_of.__name__ == "aborted_task_of"  # wrapped once
    unstopped = pipeline._clearml_job_class
    assert issubclass(unstopped, job.LocalClearmlJob) and unstopped.__mro__[1] is job.LocalClearmlJob
    launched = []
    monkeypatch.setattr(job.LocalClearmlJob, "launch", lambda self, queue_name=None: launched.append(self) or True)
    stopped = []
    for before, status, expected in ((False, "stopped", False), (True, "created", False), (False, "created", True)):
        step = unstopped.__new__(unstopped)
        step.aborted_before_launch, step.run_id = before, None
        step.task = SimpleNamespace(get_status=lambda status=status: status, data=SimpleNamespace(started=None),
                                    mark_stopped=lambda **kwargs: stopped.append(kwargs))
        assert step.launch() is expected
    assert len(launched) == 1 and len(stopped) == 2
    # aborted while ClearML's own __init__ runs: it refuses to edit the stopped task (tried again, it clones it),
    # or it has looked at the status already and clones it: either way the step is the aborted task, not launched
    deleted, tries = [], []

    def clearml_init(self, base_task_id, **kwargs):
        tries.append(base_task_id)
        if len(tries) == 1 and refuses:
            raise ValueError("Task object can only be updated if created or in_progress [status=stopped]")
        self._is_cached_task = False
        self.task = SimpleNamespace(id="clone", get_status=lambda: "created", delete=lambda **kw: deleted.append(1),
                                    data=SimpleNamespace(started=None))

    monkeypatch.setattr(job.LocalClearmlJob, "__init__", clearml_init)
    assert "self.task.update_parameters(" in inspect.getsource(job.ClearmlJob.__init__)
    assert "can only be updated if created or in_progress" in inspect.getsource(task_module.Task._edit)
    for refuses, status, expected in ((True, "stopped", False), (False, "stopped", False), (False, "created", True)):
        tries.clear()
        base = SimpleNamespace(id="base", get_status=lambda status=status: status,
                               mark_stopped=lambda **kwargs: stopped.append(kwargs))
        monkeypatch.setattr(task_module.Task, "get_task", lambda task_id, base=base: base)
        step = unstopped("base")
        assert step.launch() is expected and len(tries) == 1 + refuses
        assert step.task.id == ("clone" if expected else "base")
    assert len(launched) == 2 and len(stopped) == 4 and len(deleted) == 2
    # ClearML sets the step's parent (the run) on a draft only: an aborted step is put under its run
    import clearml.backend_api.session.client as client_module

    assert "elif parent:\n                self.task.set_parent(parent)" in inspect.getsource(job.ClearmlJob.__init__)
    edits = []
    monkeypatch.setattr(client_module, "APIClient", lambda: SimpleNamespace(tasks=SimpleNamespace(
        edit=lambda **kwargs: edits.append(kwargs))))
    base.parent, refuses = None, False
    monkeypatch.setattr(task_module.Task, "get_task", lambda task_id: SimpleNamespace(
        id="base", parent=None, get_status=lambda: "stopped", mark_stopped=lambda **kwargs: None))
    assert unstopped("base", parent="run").launch() is False
    assert edits == [{"task": "base", "parent": "run", "force": True}]
    refuses = True  # refused for another reason: ClearML's error stands
    monkeypatch.setattr(task_module.Task, "get_task", lambda task_id: SimpleNamespace(get_status=lambda: "created"))
    tries.clear()
    with pytest.raises(ValueError, match="can only be updated"):
        unstopped("base")
    assert "disable_clone_task" in inspect.signature(job.ClearmlJob.__init__).parameters
    clearml_init = inspect.getsource(job.ClearmlJob.__init__)
    assert 'status={task_status}. "' in clearml_init and '"Reverting to clone Task"' in clearml_init
    said = logging.getLogger("clearml.automation.job")
    assert not said.filter(logging.makeLogRecord({"msg": "Task [x] status=stopped. Reverting to clone Task"}))
    assert said.filter(logging.makeLogRecord({"msg": "Task [x] status=completed. Reverting to clone Task"}))



def test_a_step_aborted_as_its_task_is_made_is_given_back_stopped(monkeypatch):
    """The decorator's factory creates a step's task, then edits it: aborted in between, ClearML refuses the
    edit; the run's factory wrapper finds that task (stopped, no parent, newer than the run) and returns it."""
    from datetime import datetime, timedelta, timezone
    from types import SimpleNamespace

    import clearml.backend_api.session.client as client_module

    factory = inspect.getsource(controller.PipelineController._add_function_step)
    assert factory.index("a_task = Task.create(") < factory.index("a_task.update_task(task_definition)")
    now = datetime.now(timezone.utc)
    tasks = [SimpleNamespace(id="other-run", created=now + timedelta(seconds=2), parent="run2"),
             SimpleNamespace(id="ours", created=now + timedelta(seconds=1), parent=None),
             SimpleNamespace(id="older", created=now - timedelta(seconds=1), parent=None)]
    asked = []

    def get_all(**kwargs):
        asked.append(kwargs)
        return [SimpleNamespace(created=now)] if "id" in kwargs else tasks

    monkeypatch.setattr(client_module, "APIClient", lambda: SimpleNamespace(tasks=SimpleNamespace(get_all=get_all)))
    monkeypatch.setattr(task_module.Task, "current_task", staticmethod(lambda: SimpleNamespace(id="run")))
    monkeypatch.setattr(task_module.Task, "get_task", staticmethod(lambda task_id: f"task {task_id}"))

    def refused(node):
        raise ValueError("Task object can only be updated if created or in_progress [status=stopped fields=[]]")

    assert sdk._giving_back_an_aborted_task(refused)(SimpleNamespace(name="train_xgboost")) == "task ours"
    assert asked[-1]["name"] == "^train_xgboost$" and asked[-1]["status"] == ["stopped"]
    tasks.pop(1)  # none of its own: ClearML's error stands
    with pytest.raises(ValueError, match="can only be updated"):
        sdk._giving_back_an_aborted_task(refused)(SimpleNamespace(name="train_xgboost"))


def test_no_abort_wait_sets_the_runtime_property_the_agent_reads():
    """runtime.sdk.no_abort_wait: ClearML's abort callback is kept in the task's runtime property
    ``_abort_callback_timeout`` (clearml-agent waits while it is set); unregistering leaves it at -1."""
    from clearml.backend_interface.task.development.worker import DevWorker

    assert DevWorker.property_abort_callback_timeout == "_abort_callback_timeout"
    source = inspect.getsource(DevWorker.register_abort_callback)
    assert "property_abort_callback_timeout: float(-1)" in source  # what register_abort_callback(None) leaves
    edits = []

    class FakeTask:
        def register_abort_callback(self, callback):
            edits.append(("callback", callback))

        def _set_runtime_properties(self, properties):
            edits.append(("runtime", properties))

    assert callable(task_module.Task._set_runtime_properties)
    sdk.no_abort_wait(FakeTask())
    assert edits == [("callback", None), ("runtime", {"_abort_callback_timeout": 0})]


def test_clearml_hands_a_steps_uncaught_error_on_to_the_excepthook_set_before_task_init():
    """runtime.sdk.traceback_to_the_console_only is the step's ``sys.excepthook`` set in the step code's header,
    before ``Task.init``; ClearML's exit hooks note the error, then call it (and it reaches the console through
    the patched ``sys.stderr``, whose terminal echo goes through ``_original_write``)."""
    from clearml.utilities.process.exit_hooks import ExitHooks

    source = inspect.getsource(ExitHooks.exc_handler)
    assert "self.exception = value" in source and "self._orig_exc_handler(exctype, value, traceback" in source
    assert "sys.excepthook = self.exc_handler" in inspect.getsource(ExitHooks)
    assert "_sys.excepthook = traceback_to_the_console_only" in sdk.STEP_CODE_HEADER
