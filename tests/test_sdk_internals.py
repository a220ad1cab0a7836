"""What this project relies on in ClearML's SDK beyond its documented API: each fails when an upgrade changes it.

``runtime/sdk.py`` is the one module that touches ClearML internals; the others use public
calls whose shape matters here (the decorator reading a controller's ``__signature__``, the
pipeline's DAG and its nodes' jobs, the generated step code).
"""

from __future__ import annotations

import inspect
import time

import clearml
import clearml.automation.controller as controller
import clearml.automation.job as job

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
    assert {"job", "name", "executed", "cache_executed_step"} <= node_fields
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
