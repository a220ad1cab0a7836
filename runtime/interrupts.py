"""Ctrl-C and SIGTERM: before a run has a task, leave at once; once it has one, raise KeyboardInterrupt
so the run records "interrupted" on its task, stops its steps and closes it itself."""

from __future__ import annotations

import os
import signal
import sys

#: Exit code of an interrupted run (as a shell reports SIGINT).
EXIT_INTERRUPTED = 130
#: XGBoost's Python functions that its C library calls back (``xgboost.core.DataIter``).
_XGBOOST_C_CALLBACKS = frozenset({"_next_wrapper", "_reset_wrapper"})
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _exit_at_once(signum, frame):
    """Nothing to record or clean up yet: release the output folder claimed at start-up and leave (a normal
    exit would run ClearML's exit hooks, which may wait on the network)."""
    sys.stderr.write("error: interrupted\n")
    leave_now(EXIT_INTERRUPTED)


def leave_now(code: int) -> None:
    """End the process with ``code`` at once, past ClearML's exit hooks (output flushed, claims released)."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        from steps.outputs import release_all_claims

        release_all_claims()
    except Exception:
        pass
    os._exit(code)


def leave_at_once_on_interrupt() -> None:
    """Until the run has a task: Ctrl-C or SIGTERM prints ``error: interrupted`` and exits 130 at once."""
    for sig in _SIGNALS:
        signal.signal(sig, _exit_at_once)


def _in_xgboost_callback(frame) -> bool:
    while frame is not None:
        code = frame.f_code
        if code.co_name in _XGBOOST_C_CALLBACKS and f"{os.sep}xgboost{os.sep}" in code.co_filename:
            return True
        frame = frame.f_back
    return False


def _raise_interrupt(signum, frame):
    """Raise KeyboardInterrupt, except inside a callback that XGBoost's C library makes while it
    builds a data matrix: an exception there corrupts its heap. There, the interrupt is delivered
    again 50 ms later (SIGALRM), until it lands outside."""
    if _in_xgboost_callback(frame):
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        return
    raise KeyboardInterrupt


def raise_on_interrupt() -> None:
    """Once the run has a task: Ctrl-C and SIGTERM raise KeyboardInterrupt in the main thread
    (replacing the handlers ClearML's ``Task.init`` installs, which would close the task first)."""
    for sig in (*_SIGNALS, signal.SIGALRM):
        signal.signal(sig, _raise_interrupt)


def end_child_processes(grace: float = 0.0) -> None:
    """End every subprocess of this one (``--mode local`` steps, optimize's local trials): none may outlive
    the run. With ``grace`` seconds, first asked to stop (SIGTERM), then killed; else killed at once."""
    try:
        import psutil  # a ClearML dependency

        children = psutil.Process().children(recursive=True)
        if grace:
            for child in children:
                child.terminate()
            children = psutil.wait_procs(children, timeout=grace)[1]
        for child in children:
            child.kill()
    except Exception:
        pass


def _already_ending(signum, frame):
    sys.stderr.write("stopping: the run is already ending (its steps are being stopped and the outcome recorded); "
                     "a moment\n")


def finish_before_interrupts() -> None:
    """While a run records how it ended: a further Ctrl-C or SIGTERM says so and is otherwise ignored (raised
    in the middle of the record, it would leave the task to ClearML's exit hook, which marks it completed)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (*_SIGNALS, signal.SIGALRM):
        signal.signal(sig, _already_ending)
