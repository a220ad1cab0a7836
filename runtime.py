"""ClearML's runtime around the pipeline: sessions, server checks, interruption, failures, commands.

What the pipeline needs from ClearML besides its steps, each one function:

* :func:`configure_sdk`, :func:`start_offline_controller`: the offline session (``--mode offline``);
* :func:`check_server`, :class:`ServerWatch`: fail fast and never hang on a server that is
  missing, misconfigured or lost during a run (the SDK itself retries for minutes in silence);
* :func:`install_interrupt_handlers`: Ctrl-C and SIGTERM recorded by the run instead of torn through it;
* :func:`record_failure`: a failed or interrupted run as one line, and on its ClearML task;
* :func:`import_offline`, :func:`write_step_code`: the ``import-offline`` and ``step-code`` commands.

ClearML is imported inside the functions, so that importing this module costs nothing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from cli import EXIT_FAILED, EXIT_INTERRUPTED, SetupError

#: XGBoost's Python functions that its C library calls back (``xgboost.core.DataIter``).
_XGBOOST_C_CALLBACKS = frozenset({"_next_wrapper", "_reset_wrapper"})


def exit_at_once(signum, frame):
    """Ctrl-C/SIGTERM before the run has a ClearML task: nothing to record or clean up, so leave now."""
    sys.stderr.write("error: interrupted\n")
    try:
        from steps.outputs import release_all_claims

        release_all_claims()  # the output folder claimed at start-up goes again
    except Exception:
        pass
    os._exit(EXIT_INTERRUPTED)


def configure_sdk(**development) -> None:
    """Make ClearML write reports from a thread of this process, not a forked subprocess.

    ``sdk.development.report_use_subprocess`` defaults to true on Linux; its fork-with-threads
    subprocess can deadlock at exit (seen offline: runs stuck for minutes in
    ``BackgroundMonitor.wait_for_sub_process``), and a run reporting a few dozen events gains
    nothing from it. Set through the SDK's own configuration overrides, on top of clearml.conf,
    with any other ``sdk.development`` settings given.
    """
    from clearml.config import config_obj

    with _readable_config():
        config_obj.set_overrides({"sdk": {"development": {"report_use_subprocess": False, **development}}})


@contextmanager
def _readable_config() -> Iterator[None]:
    """ClearML parses its configuration file on first use: a broken one becomes one :class:`SetupError` line."""
    try:
        yield
    except Exception as exc:
        if "clearml" not in type(exc).__module__ and "pyparsing" not in type(exc).__module__:
            raise
        path = os.environ.get("CLEARML_CONFIG_FILE", "~/clearml.conf")
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SetupError(f"ClearML cannot read its configuration file {path} ({first}); fix it (it is HOCON, "
                         "see clearml.conf.example) or point CLEARML_CONFIG_FILE at a valid clearml.conf") from None


def poll_steps_every(seconds: float = 1.0) -> None:
    """Let the controller notice a finished step within ``seconds`` instead of up to 5 s (20 s on an agent).

    In clearml 2.1 the decorator's controller waits for a step in ``PipelineDecorator._wait_for_node``
    and ``BaseJob.wait``, which sleep a fixed 5 s between status checks when steps run locally and
    20 s when they run on agents (``clearml/automation/controller.py:4454``, ``job.py:200``); every
    level of the DAG (load, split, training, evaluate) waits out part of that period after its
    parent is done. Those two modules' ``sleep`` (used only there) is capped at ``seconds``: one
    light ``tasks.get_all`` request per waiting step per ``seconds``. Nothing else changes; other
    SDK versions are left alone.
    """
    import clearml
    import clearml.automation.controller as controller
    import clearml.automation.job as job

    if not clearml.__version__.startswith("2.1."):
        return

    def capped_sleep(period: float) -> None:
        time.sleep(min(period, seconds))

    controller.sleep = capped_sleep
    job.sleep = capped_sleep


def _raise_interrupt(signum, frame):
    """Raise KeyboardInterrupt, except inside a callback that XGBoost's C library makes while it
    builds a data matrix: an exception there corrupts its heap. There, the interrupt is delivered
    again 50 ms later (SIGALRM), until it lands outside."""
    while frame is not None:
        if frame.f_code.co_name in _XGBOOST_C_CALLBACKS and f"{os.sep}xgboost{os.sep}" in frame.f_code.co_filename:
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            return
        frame = frame.f_back
    raise KeyboardInterrupt


def install_interrupt_handlers() -> None:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt in the main thread, so the run records
    "interrupted" on its task and closes it itself (ClearML's own handlers, installed by
    ``Task.init``, would close the task first and leave the interruption unrecorded)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
        signal.signal(sig, _raise_interrupt)


def start_offline_controller(project: str, name: str):
    """Start the controller task of an offline run (ClearML offline mode) and return it.

    The task is created here rather than by the pipeline decorator so that argparse, joblib,
    scikit-learn and matplotlib are not auto-connected: the command line is not a pipeline
    parameter, and models and figures are reported once, explicitly, by the evaluate step.
    XGBoost's training curve is reported by the training step itself. The decorator then adopts
    this task as its controller (it uses ``Task.current_task()`` when there is one).

    :raises SetupError: the ClearML cache folder or configuration file is unusable.
    """
    import logging

    from clearml import Task

    # Detect the repository inside Task.init rather than in a thread: the thread parses source
    # files while the pipeline decorator parses this module, and concurrent ast.parse calls break
    # at random on Python 3.11 ("AST constructor recursion depth mismatch", cpython#106905).
    configure_sdk(vcs_repo_detect_async=False)
    # A checkout without a git remote is normal for a laptop run; the session records the code anyway.
    logging.getLogger("clearml.Repository Detection").setLevel(logging.ERROR)
    try:
        Task.set_offline(offline_mode=True)
        task = Task.init(
            project_name=project,
            task_name=name,
            task_type=Task.TaskTypes.controller,
            auto_connect_arg_parser=False,
            auto_connect_frameworks={"matplotlib": False, "joblib": False, "scikit": False, "xgboost": False,
                                     "detect_repository": True},
            auto_resource_monitoring=False,
            reuse_last_task_id=False,
        )
    except Exception as exc:  # a broken ClearML cache folder or configuration file
        cache = os.path.abspath(os.environ.get("CLEARML_CACHE_DIR", "~/.clearml/cache"))
        raise SetupError(
            f"ClearML could not start its offline session ({type(exc).__name__}: {exc}); check that "
            f"the cache folder {cache} (CLEARML_CACHE_DIR or sdk.storage.cache.default_base_dir) is a writable "
            "folder and that CLEARML_CONFIG_FILE, if set, is a valid clearml.conf"
        ) from None
    install_interrupt_handlers()
    return task


def offline_session_zip(task) -> str:
    """The absolute path of the ``.zip`` ClearML writes for an offline task when it closes."""
    return os.path.abspath(f"{task.get_offline_mode_folder()}.zip")


def _server_settings() -> tuple[Optional[str], Optional[str], Optional[str]]:
    from clearml.config import config_obj

    with _readable_config():
        host = os.environ.get("CLEARML_API_HOST") or config_obj.get("api.api_server", None)
        key = os.environ.get("CLEARML_API_ACCESS_KEY") or config_obj.get("api.credentials.access_key", None)
        secret = os.environ.get("CLEARML_API_SECRET_KEY") or config_obj.get("api.credentials.secret_key", None)
    return host, key, secret


def check_server(queues: list[str], timeout: float = 5.0) -> str:
    """Check, within ``timeout`` seconds per request, that the configured ClearML server answers.

    The SDK itself retries a dead server for minutes without a word, so server modes call this
    first: ``auth.login`` with the configured credentials, then ``queues.get_all`` per queue
    (ClearML's REST API, ``docs/references/api``).

    :param queues: queue names that must exist.
    :returns: the API server URL.
    :raises SetupError: one line naming what to fix.
    """
    import requests
    from clearml.backend_api import Session

    host, key, secret = _server_settings()
    if not host or not key or not secret:
        raise SetupError(
            "no ClearML server is configured: run clearml-init, or copy clearml.conf.example, fill it in and "
            "set CLEARML_CONFIG_FILE to it, or set CLEARML_API_HOST, CLEARML_API_ACCESS_KEY and "
            "CLEARML_API_SECRET_KEY"
        )
    host = Session.get_api_server_host().rstrip("/")
    try:
        reply = requests.post(f"{host}/auth.login", auth=(key, secret), timeout=timeout)
    except requests.RequestException as exc:
        raise SetupError(
            f"the ClearML server {host} cannot be reached ({type(exc).__name__}); start it, or fix api.api_server "
            "in clearml.conf / CLEARML_API_HOST"
        ) from None
    if reply.status_code in (401, 403):
        raise SetupError(
            f"the ClearML server {host} rejected the credentials (HTTP {reply.status_code}); create new "
            "credentials in its web UI (Settings > Workspace) and put them in clearml.conf or "
            "CLEARML_API_ACCESS_KEY / CLEARML_API_SECRET_KEY"
        )
    try:
        token = reply.json()["data"]["token"]
    except (ValueError, KeyError, TypeError):
        raise SetupError(
            f"{host} answered HTTP {reply.status_code} but is not a ClearML API server; api.api_server "
            "must be the API server (port 8008 when self-hosted), not the web server"
        ) from None
    for queue in queues:
        try:
            found = requests.post(
                f"{host}/queues.get_all", json={"name": f"^{re.escape(queue)}$", "only_fields": ["id"]},
                headers={"Authorization": f"Bearer {token}"}, timeout=timeout,
            ).json()["data"]["queues"]
        except (requests.RequestException, ValueError, KeyError, TypeError):
            raise SetupError(f"could not list the queues of {host}; check the server's health") from None
        if not found:
            raise SetupError(
                f"queue '{queue}' does not exist on {host}; create it in the web UI (Orchestration > Queues) "
                f"or start an agent with: clearml-agent daemon --queue {queue} --create-queue"
            )
    return host


class ServerWatch:
    """Ends the run with one line when the ClearML server stops answering for ``grace`` seconds.

    The SDK retries a lost server for many minutes and its pipeline controller waits for steps
    for ever; this thread makes a real API call every ``period`` seconds (``queues.get_all`` for
    one queue id, with the run's credentials: a server whose database is stuck answers a ping but
    not this) with a ``timeout``, and after ``grace`` seconds without an answer calls
    ``on_lost(message)`` (which must end the process).
    """

    def __init__(self, host: str, on_lost: Callable[[str], None], period: float = 5.0, grace: float = 30.0,
                 timeout: float = 10.0):
        self.host, self.on_lost, self.period, self.grace = host.rstrip("/"), on_lost, period, grace
        self.timeout = timeout
        _, self._key, self._secret = _server_settings()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="clearml-server-watch", daemon=True)

    def __enter__(self) -> ServerWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def _watch(self) -> None:
        import requests

        last_answer, token = time.monotonic(), None
        while not self._stop.wait(self.period):
            try:
                if token is None:
                    token = requests.post(f"{self.host}/auth.login", auth=(self._key, self._secret),
                                          timeout=self.timeout).json()["data"]["token"]
                requests.post(f"{self.host}/queues.get_all", json={"only_fields": ["id"], "size": 1},
                              headers={"Authorization": f"Bearer {token}"}, timeout=self.timeout)
                last_answer = time.monotonic()
            except (requests.RequestException, ValueError, KeyError, TypeError):
                if time.monotonic() - last_answer > self.grace and not self._stop.is_set():
                    self.on_lost(f"the ClearML server {self.host} stopped answering during the run (no answer "
                                 f"for {self.grace:.0f} s); the run is abandoned: check the server (and its "
                                 "database), then run again")
                    return


def abandon_run(message: str) -> None:
    """Print ``error: message`` and end this process and its step subprocesses at once (exit 1).

    Used when the server is lost: the SDK's own clean-up would retry the dead server for minutes.
    """
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    try:
        import psutil  # a ClearML dependency

        for child in psutil.Process().children(recursive=True):
            child.kill()
    except Exception:
        pass
    os._exit(EXIT_FAILED)


def failed_step(exc: BaseException, step_names: tuple[str, ...]) -> Optional[str]:
    """The name of the step whose code raised ``exc`` (innermost step frame of its traceback)."""
    step, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name in step_names:
            step = tb.tb_frame.f_code.co_name
        tb = tb.tb_next
    return step


def failure_message(exc: BaseException, step: Optional[str], output_dir: Optional[Path] = None) -> str:
    """One line for a failed or interrupted run: which step, and the error (its type unless it is bad input)."""
    if isinstance(exc, KeyboardInterrupt):
        if output_dir is not None and (output_dir / "metrics.csv").exists():  # stopped while closing the task
            return f"interrupted after the results were complete in {output_dir}"
        return "interrupted"
    where = f"step '{step}' failed" if step else "the pipeline failed"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{where}: {text}" if isinstance(exc, ValueError) else f"{where}: {type(exc).__name__}: {text}"


def record_failure(task, exc: BaseException, message: str) -> None:
    """Mark ``task`` failed (status reason = ``message``, shown by the web UI) or stopped, and close it.

    An offline session has no status of its own (an import marks it completed): the outcome is
    also kept as a tag, ``failed`` or ``interrupted``, and the message and traceback in its log;
    :func:`import_offline` restores the status from them.
    """
    import traceback

    from clearml import Task

    interrupted = isinstance(exc, KeyboardInterrupt)
    try:
        if Task.is_offline():
            task.add_tags(["interrupted" if interrupted else "failed"])
        task.get_logger().report_text(message + "\n" + "".join(traceback.format_exception(exc)), print_console=False)
        if interrupted:
            task.mark_stopped(force=True, status_message="interrupted")
        else:
            task.mark_failed(status_reason=message, status_message=message, force=True)
        task.close()
    except Exception:  # the one-line answer matters more than the record
        pass


def _session_outcome(path: Path) -> tuple[Optional[str], str]:
    """``(tag, reason)`` of an offline session: ``failed``/``interrupted`` (or None) and its one-line message."""
    def read(name: str) -> Optional[str]:
        if path.is_dir():
            matches = list(path.rglob(name))
            return matches[0].read_text() if matches else None
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == name]
            return archive.read(names[0]).decode() if names else None

    try:
        task = json.loads(read("task.json") or "{}")
    except (OSError, ValueError, zipfile.BadZipFile):
        return None, ""
    tags = set(task.get("tags") or [])
    outcome = "failed" if "failed" in tags else "interrupted" if "interrupted" in tags else None
    reason = outcome or ""
    for line in (read("log.jsonl") or "").splitlines():  # the first line of the recorded failure text
        try:
            for event in json.loads(line) if line.startswith("[") else [json.loads(line)]:
                for text in str(event.get("msg", "")).splitlines():
                    if text.startswith(("step '", "the pipeline failed", "interrupted")):
                        return outcome, text
        except (ValueError, AttributeError):
            continue
    return outcome, reason


def import_offline(path: str) -> str:
    """``import-offline PATH``: upload an offline session (zip or folder) with ClearML's own import.

    ClearML marks every imported task completed; a session whose run failed or was interrupted
    (tag ``failed``/``interrupted``) is then marked failed or stopped, with its one-line reason.

    :returns: the new task id.
    :raises SetupError: no server, or ClearML could not import the file.
    """
    from clearml import Task

    check_server(queues=[])
    task_id = Task.import_offline_session(str(path))
    if not task_id:
        raise SetupError(f"ClearML could not import {path}; is it an offline session folder or zip?")
    outcome, reason = _session_outcome(Path(path))
    if outcome:
        task = Task.get_task(task_id=task_id)
        if outcome == "failed":
            task.mark_failed(status_reason=reason, status_message=reason, force=True)
        else:
            task.mark_stopped(force=True, status_message=reason or "interrupted")
    return task_id


def write_step_code(folder: str, make_pipeline: Callable[[], object], step_names: tuple[str, ...],
                    project: str, name: str) -> None:
    """``step-code DIR``: write the standalone script ClearML generates for each step, as agents get it.

    Builds the pipeline's step definitions exactly as a server run does (the decorator's own
    code generation), in a throw-away offline task, then writes ``DIR/<step>.py`` (the script),
    ``DIR/<step>.json`` (entry point, repository, requirements, parameters) and
    ``DIR/pipeline.json`` (the DAG: parents, queues, caching of every step).

    :param make_pipeline: creates the ``PipelineDecorator`` (with the controller's settings).
    """
    import contextlib
    import io
    import shutil

    from clearml import PipelineDecorator

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):  # its throw-away session is no session for the user
        task = start_offline_controller(project, name)
    PipelineDecorator.run_locally()  # generate the step tasks' code, as for a server run
    pipeline = make_pipeline()
    dag = {step: {"cache": node.cache_executed_step, "queue": node.queue, "parents": node.parents,
                  "monitor_metrics": node.monitor_metrics, "monitor_artifacts": node.monitor_artifacts,
                  "monitor_models": node.monitor_models}
           for step, node in pipeline.get_pipeline_dag().items()}
    (out / "pipeline.json").write_text(json.dumps(dag, indent=1))
    definitions = task.get_configuration_objects()
    for step in step_names:
        definition = json.loads(definitions[step])
        (out / f"{step}.py").write_text(definition["script"]["diff"])
        (out / f"{step}.json").write_text(json.dumps(definition, indent=1))
    # The throw-away session is closed silently (ClearML would announce a zip that is deleted next).
    with contextlib.redirect_stdout(io.StringIO()):
        task.close()
    shutil.rmtree(os.environ["CLEARML_CACHE_DIR"], ignore_errors=True)


#: The controller task of this process's run, once the pipeline has started (see :func:`prepare_controller`).
_controller = None


def prepare_controller(task, startup) -> None:
    """Settle the controller task of a run started from the command line, before any step.

    * A server run's controller records the repository and commit its steps use (the same git
      ``origin`` URL), so that a re-run from the web UI on an agent finds the code, whatever
      ClearML's own repository detection managed.
    * ``--mode local``: ClearML serializes the steps' default queue as ``mock`` (its in-process
      stand-in), so a clone of the run re-run from the web UI would wait for ever on a queue that
      does not exist. The queue stored is the real one (``--queue``).
    * ``--mode remote`` with the controller on a queue: now that the decorator has stored the DAG,
      the step definitions, the ``Args`` and the default queue on the task, the task is handed to
      that queue and this process exits (ClearML's ``Task.execute_remotely``). The agent then
      runs it exactly as a re-run from the web UI.
    """
    global _controller
    _controller = task
    if startup.command != "run":
        return
    options = startup.options
    url, commit = startup.repository
    if url and task.data.script.repository != url:  # an agent re-running the controller clones this
        task.set_script(repository=url, commit=commit, working_dir=".", entry_point="clearml_pipeline.py")
    if options.mode == "local":
        task.set_parameter("pipeline/default_queue", options.queue)
    if options.controller_on_queue:
        print(f"the controller runs on queue '{options.controller_queue}', its steps on '{options.queue}'; "
              f"follow the run at {task.get_output_log_web_page()} (results: its artifacts, and "
              f"{startup.params.output_dir} on the agent's machine)", flush=True)
        task.execute_remotely(queue_name=options.controller_queue, exit_process=True)


def check_rerun_models(startup, params) -> None:
    """A re-run from the web UI trains the models of the run it was cloned from, no others.

    The clone's controller rebuilds the DAG stored by the first run, which holds only the training
    steps that run called; a step it does not hold cannot be launched (clearml 2.1.12 fails with a
    ``KeyError`` after ``load`` and ``split`` have run). So an edited ``models`` is checked here,
    before any step, and refused in one line (the run's status reason).

    :raises steps.params.ParameterError: ``models`` names a model whose step the stored DAG lacks.
    """
    from clearml import PipelineDecorator

    from steps.params import ParameterError

    pipeline = PipelineDecorator._singleton
    if startup.command != "agent-controller" or pipeline is None:
        return
    stored = sorted(name[len("train_"):] for name in pipeline._nodes if name.startswith("train_"))
    if stored and not set(params.model_list()) <= set(stored):
        raise ParameterError(
            f"models = {params.models!r}: a re-run trains the models of the run it was cloned from "
            f"({','.join(stored)}); to train others, launch a new run: python clearml_pipeline.py "
            f"--models {params.models}")


def run_guarded(pipeline: Callable, kwargs: dict, output_dir: Optional[Path], step_names: tuple[str, ...]) -> int:
    """Call the pipeline function; print its results, or its failure in one line; return the exit code.

    A failure is recorded on the controller task (:func:`record_failure`): failed with the
    one-line reason the web UI shows, or stopped when interrupted.
    """
    from clearml import Task

    from cli import exit_code

    try:
        metrics = pipeline(**kwargs)
    except (Exception, KeyboardInterrupt) as exc:
        node = None if failed_step(exc, step_names) else _failed_node()
        message = failure_message(exc, failed_step(exc, step_names) or node, output_dir)
        if node:  # the step ran in another process: its own error says more than the controller's
            detail = step_error_line(_node_task_id(node))
            message = f"step '{node}' failed: {detail}" if detail else message
        task = _controller or Task.current_task()
        if task is not None:
            record_failure(task, exc, message)
        print(f"error: {message}", file=sys.stderr)
        return exit_code(exc)
    if metrics is not None:
        print(metrics.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    task = _controller
    if output_dir is not None:
        print(f"results: {output_dir}")
    if task is not None and Task.is_offline():
        print(f"ClearML offline session: {offline_session_zip(task)} "
              "(upload it with: python clearml_pipeline.py import-offline <that zip>)")
    elif task is not None:
        print(f"ClearML: {task.get_output_log_web_page()}")
    return 0


def step_error_line(task_id: str) -> str:
    """The last ``SomethingError: ...`` line a step task printed (its console log on the server), or ''."""
    from clearml import Task

    try:
        reports = Task.get_task(task_id=task_id).get_reported_console_output(number_of_reports=5)
    except Exception:
        return ""
    lines = [line.strip() for report in reports for line in str(report).splitlines()]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt): ", line)]
    # the project's own bad-input errors read as the offline run's do: the message alone
    return re.sub(r"^steps\.\w+\.(DataError|OutputError|ParameterError|PredictError): ", "", errors[-1]) if errors else ""


def _node_task_id(name: str) -> str:
    from clearml import PipelineDecorator

    node = PipelineDecorator._singleton._nodes[name]
    return node.job.task_id() if node.job is not None else ""


def _failed_node() -> Optional[str]:
    """The name of a step whose task failed (server modes: the step ran in another process)."""
    from clearml import PipelineDecorator

    pipeline = PipelineDecorator._singleton
    for name, node in (pipeline._nodes.items() if pipeline is not None else ()):
        try:
            if node.job is not None and node.job.is_failed():
                return name
        except Exception:
            continue
    return None
