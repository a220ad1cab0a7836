"""Run the pipeline function and answer for how it ended: its results, or one line recorded on the server.

:func:`run_guarded` is the one place a run ends. Whatever happens (a step raised or was aborted,
lost or left unfinished; Ctrl-C; SIGTERM) the run's controller task is marked failed (with the
one-line reason the web UI shows) or aborted, its steps still queued or running are stopped
(:func:`runtime.step_watch.stop_steps`), and the exit code says the same. A run that did not
train and evaluate every model it was asked for never exits 0 and never prints results.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import runtime.outcome as outcome
from runtime.interrupts import end_child_processes, finish_before_interrupts
from runtime.step_watch import (
    BadInputReason,
    StepState,
    StepWatch,
    failed_step_reason,
    launched_nodes,
    settle_steps,
    stop_steps,
)
from steps.errors import BadInput


@dataclass
class RunContext:
    """What the run's ending needs to know: its step names, output folder, and (server modes) step watch."""

    step_names: tuple[str, ...]
    output_dir: Optional[Path] = None
    watch: Optional[StepWatch] = None
    server: Optional[object] = None  # runtime.server.ServerWatch


def raising_step(exc: BaseException, step_names: tuple[str, ...]) -> Optional[str]:
    """The name of the step whose code raised ``exc`` in this process (innermost step frame), or None."""
    step, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name in step_names:
            step = tb.tb_frame.f_code.co_name
        tb = tb.tb_next
    return step


def unfinished_steps() -> dict[str, str]:
    """``{step: status}`` of the current pipeline's steps that did not complete (server modes)."""
    unfinished = {}
    for name, node in launched_nodes().items():
        status = str(node.job.status(force=True))
        if status not in ("completed", "published"):
            unfinished[name] = status
    return unfinished


def aborted_steps() -> list[str]:
    """The steps of the current pipeline that ClearML saw aborted (its DAG nodes' ``status``)."""
    from clearml import PipelineDecorator

    pipeline = PipelineDecorator.get_current_pipeline()
    if pipeline is None:
        return []
    return [name for name, node in pipeline.get_pipeline_dag().items() if getattr(node, "status", "") == "aborted"]


def _failure(exc: BaseException, context: RunContext) -> str:
    """The one-line reason of a run that ended with ``exc``."""
    if isinstance(exc, KeyboardInterrupt) and context.watch is not None and context.watch.failure:
        return context.watch.failure
    if isinstance(exc, StepNotCompleted):
        return str(exc)
    from runtime.session_disk import disk_full_reason

    full = disk_full_reason(exc, current_controller())
    if full:
        return full
    lost = context.server.lost_reason() if context.server is not None and not isinstance(exc, KeyboardInterrupt) else None
    if lost:  # e.g. an IndexError deep in ClearML because the server forgot the run's task
        return lost
    step = raising_step(exc, context.step_names)
    if step is None and not isinstance(exc, KeyboardInterrupt):
        for name, status in unfinished_steps().items():  # the step ran in another process
            if status == "failed":
                from clearml import PipelineDecorator

                node = PipelineDecorator.get_current_pipeline().get_pipeline_dag()[name]
                said = failed_step_reason(StepState(name, node.job.task_id(), status))
                return said if said != f"step '{name}' failed" else outcome.failure_reason(exc, name)
        aborted = aborted_steps()
        if aborted:  # ClearML saw the step stopped (its process may have written "completed" over it since)
            return f"step '{aborted[0]}' was aborted"
    return outcome.failure_reason(exc, step, context.output_dir)


def record(task, result: outcome.Outcome, exc: Optional[BaseException] = None) -> None:
    """Record ``result`` on the run's task and close it: failed with its reason, aborted, or completed
    (:func:`report_outcome`: what its pipeline page shows, with the traceback of ``exc`` if given).

    An offline session has no status of its own: the outcome is written into it (:mod:`runtime.outcome`).
    """
    from clearml import Task

    try:
        if Task.is_offline():
            task.add_tags([outcome.TAGS[result.status]])
        if result.status != "completed":
            _say_why(task, result, exc)
        task.close()  # first: closing marks a task that is still running completed
        if result.status != "completed":
            finish_before_interrupts()  # closing put back the handlers from before Task.init
        if result.status == "failed":
            task.mark_failed(status_reason=result.reason, status_message=result.reason, force=True)
        elif result.status == "aborted":  # as mark_stopped, with the reason the INFO tab shows as its status reason
            task.flush(wait_for_uploads=True)
            task.stopped(force=True, status_reason=result.reason, status_message=result.reason)
    except Exception:  # the one-line answer matters more than the record
        pass


def _say_why(task, result: outcome.Outcome, exc: Optional[BaseException]) -> None:
    """:func:`report_outcome` on the run's task and, on an agent, let it stop the process as soon as the task is
    failed; neither keeps the run's status from being recorded."""
    from clearml import Task

    from runtime.sdk import no_abort_wait

    try:
        report_outcome(task.get_logger(), result, exc)
        if not Task.running_locally():
            no_abort_wait(task)
    except Exception:  # e.g. the server is gone
        pass


def report_outcome(logger, result: outcome.Outcome, exc: Optional[BaseException] = None) -> None:
    """Say on the run's task why it did not complete, where its pipeline page shows it: a table *run outcome*
    (status, reason, the step that ended the run; the page's *DETAILS* > *PREVIEW*, and the run's *PLOTS*) and,
    as the console's last line, ``run outcome: <reason>``, after the traceback of ``exc`` when one is given."""
    import pandas as pd
    from clearml import Task

    rows = {"status": result.status, "reason": result.reason or result.status,
            "step": _step_of(result.reason) or "none (no step ended the run)"}
    logger.report_table("run outcome", result.status, iteration=0,
                        table_plot=pd.DataFrame({"": list(rows.values())}, index=list(rows)))
    detail = "".join(traceback.format_exception(exc)) if exc is not None else ""
    # on an agent, the console is what the process prints (ClearML sends no console text of its own there)
    logger.report_text(f"{detail}{outcome.reason_line(result)}", print_console=not Task.running_locally())


def _worth_a_traceback(exc: BaseException, reason: str, context: RunContext) -> bool:
    """An error the run did not expect, raised here: not bad input, an interruption or a step that ended
    without completing (the reason says all of those), nor a step that failed in its own process (its
    console has its traceback)."""
    from runtime.errors import SetupError

    if isinstance(exc, (KeyboardInterrupt, StepNotCompleted, BadInput, SetupError)):
        return False
    return _step_of(reason) is None or raising_step(exc, context.step_names) is not None


def _step_of(reason: str) -> Optional[str]:
    """The step a run's reason names (``step '<name>' ...``: it ended the run), or None."""
    named = re.match(r"step '(\w+)'", reason)
    return named.group(1) if named else None


class _WebUiAbort:
    """The run's own task aborted in the web UI: ``seen`` (by :func:`on_run_aborted`), then ``main_thread_ended``
    (it stopped running the pipeline), then ``handled`` (the steps stopped and the run recorded aborted)."""

    seen, main_thread_ended, handled = threading.Event(), threading.Event(), threading.Event()


ABORTED_IN_WEB_UI = "the run was aborted in the web UI"
#: How long ClearML gives :func:`on_run_aborted` before it ends the process (``register_abort_callback``).
ABORT_CALLBACK_S = 30.0


def on_run_aborted() -> None:
    """Called by ClearML (in its own thread) when the run's task is aborted in the web UI, before ClearML ends
    the process: one line, the run's steps stopped on the server (queued ones dequeued, running ones aborted,
    ``--mode local`` subprocesses ended), so none is left running. The run's task stays *Aborted*."""
    _WebUiAbort.seen.set()
    StepWatch.stop_current()  # its interrupt would end the main thread before the steps are stopped
    print("error: the run was aborted (its task was stopped in the web UI); stopping its steps",
          file=sys.stderr, flush=True)
    reason = "the run was aborted"
    try:
        reasons = dict.fromkeys(stop_steps(reason), reason)
        end_child_processes()
        settle_steps(reasons, timeout=ABORT_CALLBACK_S - 15)
        # the stopped steps end the pipeline, and ClearML marks its task failed ("Pipeline aborted and failed"):
        # once the main thread is past that, the run is marked aborted again
        _WebUiAbort.main_thread_ended.wait(timeout=10)
        from clearml.backend_api.session.client import APIClient

        APIClient().tasks.stopped(task=controller_id(), force=True, status_reason=ABORTED_IN_WEB_UI,
                                  status_message=ABORTED_IN_WEB_UI)
    except Exception:  # e.g. the server is gone
        pass
    _WebUiAbort.handled.set()


def _end_failed(task, exc: BaseException, context: RunContext) -> BaseException:
    finish_before_interrupts()
    if _WebUiAbort.seen.is_set():  # on_run_aborted said so, stops the steps and records the run aborted
        _WebUiAbort.main_thread_ended.set()
        _WebUiAbort.handled.wait(timeout=ABORT_CALLBACK_S)
        _withdraw_results(context)
        from runtime.interrupts import EXIT_INTERRUPTED, leave_now

        leave_now(EXIT_INTERRUPTED)  # ClearML's exit hooks would close the task, which marks it completed
    reason = _failure(exc, context)
    user_stop = isinstance(exc, KeyboardInterrupt) and not (context.watch and context.watch.failure)
    if context.watch is not None:
        _stop_steps(context.watch, "the run was interrupted" if user_stop else f"the run failed: {reason}")
    _withdraw_results(context)
    if task is not None:
        if context.watch is not None and not (context.server is not None and context.server.lost_reason()):
            _store_the_dag()
        record(task, outcome.Outcome("aborted" if user_stop else "failed", reason),
               exc if _worth_a_traceback(exc, reason, context) else None)
        from clearml import Task

        if Task.is_offline():
            from runtime.session_disk import remove_broken_session

            remove_broken_session(task)
        elif not os.environ.get("CLEARML_WORKER_ID"):  # launched here (on an agent, the console is the page)
            print(f"web UI: {pipeline_page(task)}", flush=True)  # the run's page says why, as its last line does
    print(f"error: {reason}", file=sys.stderr, flush=True)
    if isinstance(reason, BadInputReason):  # found by a step in its own process: exit 2, as offline
        return StepBadInput(reason)
    return exc if user_stop or not isinstance(exc, KeyboardInterrupt) else StepNotCompleted(reason)


def _store_the_dag() -> None:
    """Store the run's DAG with each step's status once more as it ends (ClearML stores it every few seconds),
    so that the pipeline page draws the step that failed or was aborted so: on an agent, the failed controller
    is stopped at once."""
    from clearml import PipelineDecorator

    pipeline = PipelineDecorator.get_current_pipeline()
    try:
        if pipeline is not None:
            pipeline.update_execution_plot()
    except Exception:  # e.g. the server is gone: the one-line answer matters more
        pass


def _withdraw_results(context: RunContext) -> None:
    """A run that failed keeps no results, also those its last step wrote before it was aborted."""
    if context.output_dir is not None:
        from steps.outputs import withdraw_results

        withdraw_results(context.output_dir)


def _stop_steps(watch: StepWatch, reason: str) -> None:
    """Stop the run's steps still queued or running, and make the stop stick (also on the step a user aborted)."""
    watch.__exit__()
    reasons = {}
    for _ in range(2):  # twice: ClearML's launch threads may enqueue a step just after the first pass
        reasons.update(dict.fromkeys(stop_steps(reason), reason))
        end_child_processes()  # --mode local: the steps are subprocesses of this one
        time.sleep(0.5)
    if watch.aborted_step:
        reasons.setdefault(watch.aborted_step, "aborted")
    try:
        settle_steps(reasons)
    except Exception:  # e.g. the server is gone: the one-line answer matters more
        pass


def current_controller():
    """The controller task of this process's run (also once ClearML closed it), or None before it exists."""
    from clearml import PipelineDecorator, Task

    pipeline = PipelineDecorator.get_current_pipeline()
    return pipeline.task if pipeline is not None else Task.current_task()


def controller_id() -> Optional[str]:
    """The id of this process's run (its controller task), or None before it exists."""
    return getattr(current_controller(), "id", None)


def run_guarded(pipeline: Callable, kwargs: dict, context: RunContext,
                controller: Callable[[], object] = current_controller) -> Optional[BaseException]:
    """Call the pipeline function; print its results, or its failure in one line (recorded on the server).

    :param controller: returns the run's controller task (None before it exists).
    :returns: None when the run completed, else the exception that ended it (``cli.errors.exit_code``
        turns it into the exit code; a step that ended the run is a :class:`StepNotCompleted`).
    """
    try:
        metrics = pipeline(**kwargs)
        if _WebUiAbort.seen.is_set():
            raise KeyboardInterrupt
        missed = context.watch.last_look() if context.watch is not None else None
        if missed:  # e.g. a step aborted as it started, or just before the end
            raise StepNotCompleted(missed)
        unfinished = unfinished_steps() if context.watch is not None else {}
        if unfinished:  # e.g. a step aborted just before the end: its result reached evaluate as None
            name, status = next(iter(unfinished.items()))
            raise StepNotCompleted(f"step '{name}' ended {'aborted' if status == 'stopped' else status}")
    except (Exception, KeyboardInterrupt) as exc:
        return _end_failed(controller(), exc, context)
    if context.watch is not None:
        context.watch.__exit__()
    report_results(controller(), metrics, context.output_dir)
    return None


class StepNotCompleted(RuntimeError):
    """A step of the run ended without completing."""


class StepBadInput(StepNotCompleted, BadInput):
    """A step in its own process (an agent's, or ``--mode local``) failed on bad input (exit code 2)."""


def report_results(task, metrics, output_dir: Optional[Path]) -> None:
    """Print the metrics table, then once each: where the results are, the ``predict`` command for them, and
    how to see the run in the web UI (the controller recorded the outcome)."""
    import shlex

    from clearml import Task

    from runtime.offline import record_run, session_zip, web_ui_line

    if metrics is not None:
        print(metrics.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if output_dir is not None:
        if task is not None:
            record_run(task, output_dir)  # what predict compares its data with
        print(f"results: {output_dir}")
        print(f"predict: python clearml_pipeline.py predict --run {shlex.quote(str(output_dir))} "
              "--data new_districts.csv --output predictions.csv")
    if task is not None and Task.is_offline():
        print(f"ClearML offline session: {session_zip(task)}")
        print(web_ui_line(session_zip(task)))
    elif task is not None:
        print(f"web UI: {pipeline_page(task)}")


def pipeline_page(task) -> str:
    """The run's page under the web UI's Pipelines (its DAG, steps and results): ClearML's link to the run's
    console, ``<web UI>/projects/<project id>/tasks/<run id>/output/log``, read as ``<web UI>/pipelines/...``."""
    console = task.get_output_log_web_page()
    return console.replace("/projects/", "/pipelines/", 1).removesuffix("/output/log")
