"""Ctrl-C during ``optimize``: every trial of the search and every step of a trial stopped on the server.

Queued ones are taken out of their queue, running ones aborted (an agent then kills their process);
the sweep repeats until it finds nothing left, since a trial's controller may still enqueue a step
until its agent has killed it. Only ClearML's REST API (``APIClient``) and ``Task.dequeue`` are used.
"""

from __future__ import annotations


def _children(client, parent: str) -> list:
    """Tasks whose parent is ``parent`` (the trials of an optimizer; the steps of a trial)."""
    try:
        return list(client.tasks.get_all(parent=parent, only_fields=["id", "status"], search_hidden=True) or [])
    except Exception:  # the server hiccuped: the second pass of the caller tries again
        return []


def stop_trials(optimizer_id: str, reason: str = "the optimization was interrupted") -> int:
    """Stop everything the search started: its trials and their steps, queued ones taken out of their queue.

    :returns: how many tasks were stopped.
    """
    from clearml import Task
    from clearml.backend_api.session.client import APIClient

    client, stopped = APIClient(), 0
    trials = _children(client, optimizer_id)
    for task in trials + [step for trial in trials for step in _children(client, trial.id)]:
        if str(task.status) not in ("queued", "in_progress", "created"):
            continue
        if str(task.status) == "queued":
            try:
                Task.dequeue(task.id)
            except Exception:  # an agent took it meanwhile: stopped below all the same
                pass
        try:
            client.tasks.stop(task=task.id, force=True, status_reason=reason, status_message=reason)
            stopped += 1
        except Exception:  # ended meanwhile
            continue
    return stopped


def stop_search(optimizer_id: str, quiet_rounds: int = 3, period: float = 2.0, limit: float = 40.0) -> int:
    """:func:`stop_trials` again and again until ``quiet_rounds`` rounds in a row find nothing left to stop
    (a trial's controller may enqueue a step until its agent has killed it), for at most ``limit`` seconds.

    :returns: how many tasks were stopped.
    """
    import time

    stopped, quiet, deadline = 0, 0, time.monotonic() + limit
    while quiet < quiet_rounds and time.monotonic() < deadline:
        found = stop_trials(optimizer_id)
        stopped, quiet = stopped + found, 0 if found else quiet + 1
        time.sleep(period)
    return stopped
