"""The steps of a server run, watched: aborted, failed, lost or waiting for an agent; and stopped.

ClearML's decorator gives an aborted or failed step's result to the next step as ``None`` and
waits for a step whose agent died for as long as the server keeps it *Running* (hours). A thread
(:class:`StepWatch`) reads the status of every launched step from the server every few seconds:

* a step aborted (the web UI's *Abort*) or failed ends the run: the watch records why and
  interrupts the main thread, which records the failure (:mod:`runtime.guard`);
* a step whose agent is gone (no longer registered, or silent, and the step's task not updated)
  for :data:`LOST_AFTER_S` is marked failed on the server and ends the run the same way;
* a step waiting in a queue says so every :data:`WAITING_EVERY_S`, with the command that serves it.

:func:`stop_steps` takes a run's queued steps out of their queues and aborts its running ones.
Only ClearML's public API is used: ``PipelineDecorator.get_current_pipeline().get_pipeline_dag()``,
the nodes' jobs, ``Task.dequeue`` and the REST API through ``APIClient``.
"""

from __future__ import annotations

import _thread
import re
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

#: A running step whose agent and task have been silent this long is lost.
LOST_AFTER_S = 90
#: A queued step says what it waits for this often.
WAITING_EVERY_S = 60


@dataclass
class StepState:
    """What the server says of one launched step."""

    name: str
    task_id: str
    status: str
    reason: str = ""
    worker: str = ""
    queue: str = ""
    last_update: Optional[datetime] = None


def _launched_steps() -> dict[str, str]:
    """``{step name: task id}`` of the steps of the current pipeline that have a task of their own."""
    from clearml import PipelineDecorator

    pipeline = PipelineDecorator.get_current_pipeline()
    if pipeline is None:
        return {}
    steps = {}
    for name, node in list(pipeline.get_pipeline_dag().items()):
        job = node.job
        if job is not None and not job.is_cached_task():
            steps[name] = job.task_id()
    return steps


def _as_datetime(value) -> Optional[datetime]:
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def step_states(client, steps: dict[str, str]) -> list[StepState]:
    """The server's view of ``steps`` (``{name: task id}``), in one ``tasks.get_all`` call."""
    if not steps:
        return []
    names = {task_id: name for name, task_id in steps.items()}
    tasks = client.tasks.get_all(id=list(names), only_fields=[
        "id", "status", "status_reason", "status_message", "last_update", "last_worker", "execution.queue"])
    return [StepState(names[t.id], t.id, str(t.status), t.status_reason or t.status_message or "",
                      t.last_worker or "", getattr(t.execution, "queue", None) or "", _as_datetime(t.last_update))
            for t in tasks]


def _workers(client) -> dict[str, tuple[Optional[datetime], list[str]]]:
    """``{worker id: (last activity, queue ids)}`` of the workers registered with the server."""
    found = {}
    for worker in client.workers.get_all():
        queues = [getattr(q, "id", q) for q in (worker.queues or [])]
        found[worker.id] = (_as_datetime(worker.last_activity_time), queues)
    return found


def _age(moment: Optional[datetime], now: datetime) -> float:
    return (now - moment).total_seconds() if moment is not None else float("inf")


def _console_lines(task_id: str) -> list[str]:
    from clearml import Task

    try:
        reports = Task.get_task(task_id=task_id).get_reported_console_output(number_of_reports=5)
    except Exception:
        return []
    return [line.strip() for report in reports for line in str(report).splitlines()]


def _error_line(lines: list[str]) -> str:
    """The last ``SomethingError: ...`` line of a step's console, or ''."""
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt): ", line)]
    # the project's own bad-input errors read as the offline run's do: the message alone
    return re.sub(r"^steps\.\w+\.(\w*Error|BadInput): ", "", errors[-1]) if errors else ""


def failed_step_reason(step: StepState) -> str:
    """Why a step ended failed: aborted by a user (ClearML then marks the step's process failed), the last
    error line of its console on the server, or its status reason."""
    lines = _console_lines(step.task_id)
    if any("USER ABORTED" in line for line in lines):
        return f"step '{step.name}' was aborted"
    detail = _error_line(lines) or step.reason
    return f"step '{step.name}' failed" + (f": {detail}" if detail else "")


class StepWatch:
    """Watches the launched steps of the current pipeline every ``period`` seconds (see the module).

    ``failure`` holds the one-line reason when a step ended the run; the main thread then gets a
    KeyboardInterrupt and reads it.
    """

    def __init__(self, period: float = 5.0, lost_after: float = LOST_AFTER_S, waiting_every: float = WAITING_EVERY_S):
        self.period, self.lost_after, self.waiting_every = period, lost_after, waiting_every
        self.failure: Optional[str] = None
        self._said_waiting: dict[str, float] = {}
        self._queued_since: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clearml-step-watch", daemon=True)

    def __enter__(self) -> StepWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def _run(self) -> None:
        from clearml.backend_api.session.client import APIClient

        client = APIClient()
        while not self._stop.wait(self.period):
            try:
                self.failure = self.check(client, step_states(client, _launched_steps()))
            except Exception:  # the server watch reports a lost server; a missed round is not a failure
                continue
            if self.failure:
                _thread.interrupt_main()
                return

    def check(self, client, states: list[StepState]) -> Optional[str]:
        """The reason the run must end (a step aborted, failed or lost), or None; says what queued steps wait for."""
        now = datetime.now(timezone.utc)
        workers = None
        for step in states:
            if step.status == "stopped":
                return f"step '{step.name}' was aborted" + (f" ({step.reason})" if step.reason else "")
            if step.status == "failed":
                return failed_step_reason(step)
            if step.status == "in_progress" and step.worker:
                workers = workers if workers is not None else _workers(client)
                lost = self._lost(client, step, workers, now)
                if lost:
                    return lost
            if step.status == "queued":
                self._say_waiting(client, step, workers if workers is not None else _workers(client))
        return None

    def _lost(self, client, step: StepState, workers: dict, now: datetime) -> Optional[str]:
        seen, _ = workers.get(step.worker, (None, []))
        if _age(seen, now) < self.lost_after or _age(step.last_update, now) < self.lost_after:
            return None
        silent = min(_age(seen, now), _age(step.last_update, now))
        reason = (f"its agent {step.worker} stopped answering (no report from it or the step for "
                  f"{silent:.0f} s)")
        try:
            client.tasks.failed(task=step.task_id, force=True, status_reason=reason, status_message=reason)
        except Exception:
            pass
        return f"step '{step.name}' was lost: {reason}"

    def _say_waiting(self, client, step: StepState, workers: dict) -> None:
        first = self._queued_since.setdefault(step.name, time.monotonic())
        last = self._said_waiting.get(step.name, first)
        if time.monotonic() - last < self.waiting_every:
            return
        self._said_waiting[step.name] = time.monotonic()
        queue = step.queue
        try:
            queue = client.queues.get_by_id(queue=step.queue).name
        except Exception:
            pass
        now = datetime.now(timezone.utc)
        serving = sum(1 for seen, queues in workers.values() if step.queue in queues and _age(seen, now) < self.lost_after)
        busy = f"{serving} agent(s) serve it, all busy" if serving else "no agent serves it"
        print(f"waiting: step '{step.name}' has been queued on '{queue}' for {time.monotonic() - first:.0f} s ({busy}); "
              f"start an agent with: clearml-agent daemon --queue {queue}", file=sys.stderr, flush=True)


def stop_steps(reason: str) -> list[str]:
    """Take the current run's queued steps out of their queues and abort its running ones, on the server.

    :returns: the names of the steps stopped.
    """
    from clearml import Task
    from clearml.backend_api.session.client import APIClient

    steps = _launched_steps()
    if not steps:
        return []
    client = APIClient()
    stopped = []
    for step in step_states(client, steps):
        if step.status not in ("queued", "in_progress", "created"):
            continue
        try:
            if step.status == "queued":
                Task.dequeue(step.task_id)
            client.tasks.stop(task=step.task_id, force=True, status_reason=reason, status_message=reason)
            stopped.append(step.name)
        except Exception:
            continue
    return stopped
