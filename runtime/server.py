"""Fail fast, never hang: the configured ClearML server checked before a run, and watched during it.

The SDK retries a dead server for minutes without a word, and its controller waits for steps for
ever; :func:`check_server` answers in seconds with one line, :class:`ServerWatch` ends a run whose
server stopped answering (or lost the run's task, as when its database was reset).
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Optional

from runtime.errors import SetupError
from runtime.offline import readable_config

#: Seconds without an answer after which a run's server counts as lost (docs/errors.md says the same).
LOST_AFTER_S = 30


def server_settings() -> tuple[Optional[str], Optional[str], Optional[str]]:
    """``(API server URL, access key, secret key)`` as ClearML reads them (environment, then clearml.conf)."""
    from clearml.config import config_obj

    with readable_config():
        host = os.environ.get("CLEARML_API_HOST") or config_obj.get("api.api_server", None)
        key = os.environ.get("CLEARML_API_ACCESS_KEY") or config_obj.get("api.credentials.access_key", None)
        secret = os.environ.get("CLEARML_API_SECRET_KEY") or config_obj.get("api.credentials.secret_key", None)
    return host, key, secret


def _login(host: str, key: str, secret: str, timeout: float) -> str:
    import requests

    try:
        reply = requests.post(f"{host}/auth.login", auth=(key, secret), timeout=timeout)
    except requests.RequestException as exc:
        raise SetupError(f"the ClearML server {host} cannot be reached ({type(exc).__name__}); start it, or fix "
                         "api.api_server in clearml.conf / CLEARML_API_HOST") from None
    if reply.status_code in (401, 403):
        raise SetupError(f"the ClearML server {host} rejected the credentials (HTTP {reply.status_code}); create "
                         "new credentials in its web UI (Settings > Workspace) and put them in clearml.conf or "
                         "CLEARML_API_ACCESS_KEY / CLEARML_API_SECRET_KEY")
    try:
        return reply.json()["data"]["token"]
    except (ValueError, KeyError, TypeError):
        raise SetupError(f"{host} answered HTTP {reply.status_code} but is not a ClearML API server; "
                         "api.api_server must be the API server (port 8008 when self-hosted), not the web server") from None


def _check_queue(host: str, token: str, queue: str, timeout: float) -> None:
    import requests

    try:
        found = requests.post(f"{host}/queues.get_all", json={"name": f"^{re.escape(queue)}$", "only_fields": ["id"]},
                              headers={"Authorization": f"Bearer {token}"}, timeout=timeout).json()["data"]["queues"]
    except (requests.RequestException, ValueError, KeyError, TypeError):
        raise SetupError(f"could not list the queues of {host}; check the server's health") from None
    if not found:
        raise SetupError(f"queue '{queue}' does not exist on {host}; create it in the web UI (Orchestration > Queues) "
                         f"or start an agent with: clearml-agent daemon --queue {queue} --create-queue")


def check_server(queues: list[str], timeout: float = 5.0) -> str:
    """Check, within ``timeout`` seconds per request, that the configured ClearML server answers
    (``auth.login`` with the configured credentials) and has ``queues`` (``queues.get_all``).

    :returns: the API server URL.
    :raises SetupError: one line naming what to fix.
    """
    from clearml.backend_api import Session

    host, key, secret = server_settings()
    if not host or not key or not secret:
        raise SetupError("no ClearML server is configured: run clearml-init, or copy clearml.conf.example, fill it "
                         "in and set CLEARML_CONFIG_FILE to it, or set CLEARML_API_HOST, CLEARML_API_ACCESS_KEY and "
                         "CLEARML_API_SECRET_KEY")
    host = Session.get_api_server_host().rstrip("/")
    token = _login(host, key, secret, timeout)
    for queue in queues:
        _check_queue(host, token, queue, timeout)
    return host


class ServerWatch:
    """Ends the run with one line when its server stops answering for ``grace`` seconds, or no longer
    knows the run's task (its database was lost).

    A thread makes a real API call every ``period`` seconds (``tasks.get_all`` for the run's task,
    with the run's credentials: a server whose database hangs answers a ping but not this), and
    calls ``on_lost(message)``, which must end the process.
    """

    def __init__(self, host: str, on_lost: Callable[[str], None], task_id: Callable[[], Optional[str]],
                 period: float = 5.0, grace: float = LOST_AFTER_S, timeout: float = 10.0):
        self.host, self.on_lost, self.period, self.grace, self.timeout = host.rstrip("/"), on_lost, period, grace, timeout
        self.task_id = task_id  # the run's task id, None until it has one
        _, self._key, self._secret = server_settings()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="clearml-server-watch", daemon=True)

    def __enter__(self) -> ServerWatch:
        self._previous_hook = threading.excepthook
        threading.excepthook = self._thread_failed
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        threading.excepthook = self._previous_hook

    def _thread_failed(self, args) -> None:
        """A thread died (e.g. ClearML's pipeline daemon after the server forgot the run): if the server is
        the cause, end the run now with its one line, before more of the SDK's tracebacks; else as Python does."""
        if args.exc_type is not SystemExit and not self._stop.is_set():
            reason = self.lost_reason()
            if reason:
                self.on_lost(reason)
        self._previous_hook(args)

    def _task_known(self, token: str) -> tuple[bool, Optional[str]]:
        import requests

        task_id = self.task_id()
        reply = requests.post(f"{self.host}/tasks.get_all", json={"id": [task_id] if task_id else [],
                                                                    "only_fields": ["id"], "size": 1},
                              headers={"Authorization": f"Bearer {token}"}, timeout=self.timeout)
        reply.raise_for_status()
        return (not task_id or bool(reply.json()["data"]["tasks"])), task_id

    def lost_reason(self) -> Optional[str]:
        """Checked now: why the run's server is lost (it lost the run's task, or does not answer), or None."""
        import requests

        try:
            known, task_id = self._task_known(_login(self.host, self._key, self._secret, self.timeout))
        except (requests.RequestException, SetupError, ValueError, KeyError, TypeError):
            return (f"the ClearML server {self.host} stopped answering during the run; the run is abandoned: check "
                    "the server (and its database), then run again")
        if not known:
            return (f"the ClearML server {self.host} no longer knows this run (task {task_id}): it was restarted and "
                    "lost its database; the run is abandoned: run it again")
        return None

    def _watch(self) -> None:
        import requests

        last_answer, token = time.monotonic(), None
        while not self._stop.wait(self.period):
            try:
                token = token or _login(self.host, self._key, self._secret, self.timeout)
                known, task_id = self._task_known(token)
                if not known:
                    return self.on_lost(f"the ClearML server {self.host} no longer knows this run (task {task_id}): "
                                        "it was restarted and lost its database; the run is abandoned: run it again")
                last_answer = time.monotonic()
            except (requests.RequestException, SetupError, ValueError, KeyError, TypeError):
                token = None
                if time.monotonic() - last_answer > self.grace and not self._stop.is_set():
                    return self.on_lost(f"the ClearML server {self.host} stopped answering during the run (no "
                                        f"answer for {self.grace:.0f} s); the run is abandoned: check the server "
                                        "(and its database), then run again")


def abandon_run(message: str) -> None:
    """Print ``error: message`` and end this process and its step subprocesses at once (exit 1).

    Only for a lost server: nothing can be recorded on it, and the SDK's own clean-up (exit hooks,
    task close) would retry it for minutes, so this leaves with ``os._exit``.
    """
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    from runtime.interrupts import end_child_processes

    end_child_processes()
    try:
        from steps.outputs import release_all_claims

        release_all_claims()  # the output folder is usable again
    except Exception:
        pass
    os._exit(1)
