"""The steps of a server run, watched: aborted, failed, lost or waiting for an agent; and stopped.

ClearML's decorator gives an aborted or failed step's result to the next step as ``None`` and
waits for a step whose agent died for as long as the server keeps it *Running* (hours). A thread
(:class:`StepWatch`) reads the status of every launched step from the server every few seconds:

* a step aborted (the web UI's *Abort*) or failed ends the run: the watch records why and
  interrupts the main thread, which records the failure (:mod:`runtime.guard`);
* a step whose agent is gone (no longer registered, or silent, and the step's task not updated)
  for :data:`LOST_AFTER_S` is marked failed on the server and ends the run the same way;
* a step waiting in a queue says so every :data:`WAITING_EVERY_S`, with the command that serves it.

:func:`stop_steps` takes a run's queued steps out of their queues and aborts its running ones;
:func:`settle_steps` then makes the stop stick (the step's own process may write over it).
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
    started: Optional[datetime] = None


def launched_nodes() -> dict:
    """``{step name: DAG node}`` of the current pipeline's steps that have a task of their own (not cached)."""
    from clearml import PipelineDecorator

    pipeline = PipelineDecorator.get_current_pipeline()
    if pipeline is None:
        return {}
    return {name: node for name, node in list(pipeline.get_pipeline_dag().items())
            if node.job is not None and not node.job.is_cached_task()}


def _launched_steps() -> dict[str, str]:
    """``{step name: task id}`` of the steps of the current pipeline that have a task of their own."""
    return {name: node.job.task_id() for name, node in launched_nodes().items()}


def _launch_time(node) -> Optional[float]:
    """When the controller marked a step's task started as it launched it (``--mode local``; server clock,
    epoch seconds): as the job read it then (``runtime.sdk``), else the node's ``job_started``, else its job task's
    ``started`` as read now; None if unknown."""
    if getattr(node.job, "launched_at", None):
        return float(node.job.launched_at)
    if node.job_started:
        return float(node.job_started)
    started = getattr(node.job.task.data, "started", None)
    return started.timestamp() if isinstance(started, datetime) else None


def _time_agent_steps(nodes: dict, states: list[StepState]) -> None:
    """Give ClearML the start time of steps agents run, so that the web UI's DAG shows their durations: the
    controller takes a step's start from its task as it last read it, which for a queued step is before it
    started (``Node.job_started`` stays empty; ClearML computes ``job_ended`` from it when the step ends)."""
    for step in states:
        node = nodes.get(step.name)
        if node is not None and node.job_started is None and step.started is not None:
            node.job_started = step.started.timestamp()


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
        "id", "status", "status_reason", "status_message", "last_update", "last_worker", "execution.queue", "started"])
    return [StepState(names[t.id], t.id, str(t.status), t.status_reason or t.status_message or "",
                      t.last_worker or "", getattr(t.execution, "queue", None) or "", _as_datetime(t.last_update),
                      _as_datetime(t.started))
            for t in tasks]


def restarted_after_abort(step: StepState, launched_at: Optional[float]) -> bool:
    """Whether a step's task was started again after its launch: aborted before its process began, the process
    then set it running again (the server keeps the first ``started`` of a task that stays running)."""
    return (step.status in ("in_progress", "completed") and launched_at is not None and step.started is not None
            and step.started.timestamp() - launched_at > 0.05)


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


#: The project's own bad-input errors (``steps.errors.BadInput`` and its kinds) as a step's console ends with them.
BAD_INPUT_LINE = re.compile(r"^(?:steps\.\w+|runtime\.data_versions)\.(?:\w*Error|BadInput): ")


class BadInputReason(str):
    """The reason of a step that failed on bad input (a file, a parameter): the run exits 2, as offline."""


def _error_line(lines: list[str]) -> str:
    """The last ``SomethingError: ...`` line of a step's console, or ''; the project's own bad input as the
    offline run says it, the message alone (a :class:`BadInputReason`)."""
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt): ", line)]
    if not errors:
        return ""
    bad_input = BAD_INPUT_LINE.match(errors[-1])
    return BadInputReason(errors[-1][bad_input.end():]) if bad_input else errors[-1]


def failed_step_reason(step: StepState) -> str:
    """Why a step ended failed: aborted by a user (ClearML then marks the step's process failed), the last
    error line of its console on the server, or its status reason; a :class:`BadInputReason` for bad input."""
    lines = _console_lines(step.task_id)
    if any("USER ABORTED" in line for line in lines):
        return f"step '{step.name}' was aborted"
    detail = _error_line(lines) or step.reason
    reason = f"step '{step.name}' failed" + (f": {detail}" if detail else "")
    return BadInputReason(reason) if isinstance(detail, BadInputReason) else reason


class StepWatch:
    """Watches the launched steps of the current pipeline every ``period`` seconds (see the module).

    ``failure`` holds the one-line reason when a step ended the run (the main thread then gets a
    KeyboardInterrupt and reads it); ``aborted_step`` names that step when it was aborted.
    """

    def __init__(self, period: float = 2.0, lost_after: float = LOST_AFTER_S, waiting_every: float = WAITING_EVERY_S):
        self.period, self.lost_after, self.waiting_every = period, lost_after, waiting_every
        self.failure: Optional[str] = None
        self.aborted_step: Optional[str] = None
        self._launched_at: dict[str, float] = {}
        self._since: dict[tuple[str, str], float] = {}  # (phase, step): when first seen in it
        self._said: dict[tuple[str, str], float] = {}  # (phase, step): when last said
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clearml-step-watch", daemon=True)

    #: The watch of this process's run, while it runs.
    current: Optional[StepWatch] = None

    def __enter__(self) -> StepWatch:
        StepWatch.current = self
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if StepWatch.current is self:
            StepWatch.current = None

    @classmethod
    def stop_current(cls) -> None:
        """Stop the watch of this process's run (from another thread), if one runs."""
        if cls.current is not None:
            cls.current._stop.set()

    def _look(self, client) -> Optional[str]:
        nodes = launched_nodes()
        for name, node in nodes.items():
            if name not in self._launched_at and _launch_time(node) is not None:
                self._launched_at[name] = _launch_time(node)  # the first value: a later reload may have moved it
        states = step_states(client, {name: node.job.task_id() for name, node in nodes.items()})
        _time_agent_steps(nodes, states)
        return self.check(client, states)

    def _run(self) -> None:
        from clearml.backend_api.session.client import APIClient

        client = APIClient()
        while not self._stop.wait(self.period):
            try:
                self.failure = self._look(client)
            except Exception:  # the server watch reports a lost server; a missed round is not a failure
                continue
            if self.failure:
                _thread.interrupt_main()
                return

    def last_look(self) -> Optional[str]:
        """Stop watching and look at the steps once more (one aborted just before the end): the reason the run
        must fail, or None."""
        from clearml.backend_api.session.client import APIClient

        self._stop.set()
        self._thread.join(timeout=self.period + 5)
        if self.failure is None:
            try:
                self.failure = self._look(APIClient())
            except Exception:
                pass
        return self.failure

    def check(self, client, states: list[StepState]) -> Optional[str]:
        """The reason the run must end (a step aborted, failed or lost), or None; says what queued steps wait for."""
        now = datetime.now(timezone.utc)
        workers = None
        for step in states:
            if step.status == "stopped":
                self.aborted_step = step.name
                return f"step '{step.name}' was aborted" + (f" ({step.reason})" if step.reason else "")
            if restarted_after_abort(step, self._launched_at.get(step.name)):
                self.aborted_step = step.name
                return f"step '{step.name}' was aborted as it started (its process ran it regardless; now stopped)"
            if step.status == "failed":
                reason = failed_step_reason(step)
                self.aborted_step = step.name if reason.endswith("was aborted") else None
                return reason
            if step.status == "in_progress" and step.worker:
                workers = workers if workers is not None else _workers(client)
                lost = self._lost(client, step, workers, now)
                if lost:
                    return lost
            if step.status == "in_progress":
                self._say_running(step)
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

    def _due(self, phase: str, name: str) -> Optional[float]:
        """Seconds a step has been in ``phase`` ('queued', 'running') when a line about it is due (every
        :data:`WAITING_EVERY_S`), else None."""
        first = self._since.setdefault((phase, name), time.monotonic())
        if time.monotonic() - self._said.get((phase, name), first) < self.waiting_every:
            return None
        self._said[(phase, name)] = time.monotonic()
        return time.monotonic() - first

    def _say_running(self, step: StepState) -> None:
        """A line while a step runs, so that the run is never silent for long (a step on an agent prints
        nothing here; a long fit prints nothing for minutes)."""
        seconds = self._due("running", step.name)
        if seconds is not None:
            where = f" on agent {step.worker}" if step.worker else ""
            print(f"running: step '{step.name}' for {seconds:.0f} s{where}", file=sys.stderr, flush=True)

    def _say_waiting(self, client, step: StepState, workers: dict) -> None:
        seconds = self._due("queued", step.name)
        if seconds is None:
            return
        queue = step.queue
        try:
            queue = client.queues.get_by_id(queue=step.queue).name
        except Exception:
            pass
        now = datetime.now(timezone.utc)
        serving = sum(1 for seen, queues in workers.values() if step.queue in queues and _age(seen, now) < self.lost_after)
        busy = f"{serving} agent(s) serve it, all busy" if serving else "no agent serves it"
        print(f"waiting: step '{step.name}' has been queued on '{queue}' for {seconds:.0f} s ({busy}); "
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
            # a step an agent runs stays running, with the message "stopping" the agent acts on
            client.tasks.stop(task=step.task_id, force=True, status_reason=reason, status_message=reason)
            stopped.append(step.name)
        except Exception:
            continue
    return stopped


def _tasks_agents_run(client) -> set[str]:
    """The ids of the tasks the registered agents are running now."""
    return {worker.task.id for worker in client.workers.get_all() if getattr(worker, "task", None) is not None}


def settle_steps(reasons: dict[str, str], timeout: float = 20.0) -> None:
    """Make the stop of the current run's steps stick: ``reasons`` is ``{step name: the reason it was stopped}``.

    A step's own process (ClearML's, or the agent running it) can write *completed* or *failed* over a
    stop: an agent acts on a stop request only every few seconds and a step that ends meanwhile completes;
    ClearML marks a killed ``--mode local`` step failed. Local steps are reaped now (not later by ClearML's
    thread), then :func:`settle_tasks`.
    """
    from clearml.backend_api.session.client import APIClient

    nodes = {name: node for name, node in launched_nodes().items() if name in reasons}
    for node in nodes.values():
        reap = getattr(node.job, "wait_for_process", None)  # a --mode local step (ClearML's LocalClearmlJob)
        if reap is not None:
            reap(timeout=5)
    settle_tasks(APIClient(), {node.job.task_id(): (name, reasons[name]) for name, node in nodes.items()}, timeout)


def settle_tasks(client, tasks: dict[str, tuple[str, str]], timeout: float = 20.0) -> None:
    """Wait (up to ``timeout`` seconds, saying so after 3) until no agent runs ``tasks`` (``{task id: (step name,
    reason)}``), then mark each that is not aborted, aborted, with its reason."""
    started, said = time.monotonic(), False
    pending = dict(tasks)
    while pending:
        running = set() if time.monotonic() - started > timeout else _tasks_agents_run(client)
        for task_id in [t for t in pending if t not in running]:
            name, reason = pending.pop(task_id)
            if str(client.tasks.get_by_id(task=task_id).status) != "stopped":
                client.tasks.stopped(task=task_id, force=True, status_reason=reason, status_message=reason)
        if pending and not said and time.monotonic() - started > 3:
            said = True
            names = ", ".join(repr(name) for name, _ in pending.values())
            print(f"stopping: waiting up to {timeout:.0f} s for the agents running {names} to stop them",
                  file=sys.stderr, flush=True)
        if pending:
            time.sleep(0.5)
