"""Importing any module of the project only defines things (issue 17): no argv parsing, signal handlers,
environment or ``sys.path`` changes, ``sys.exit``, matplotlib backend, ``atexit`` hooks or ClearML import
(ClearML patches argparse when imported, so the command line is parsed before it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for folder in ("steps", "cli", "runtime", "tracking", "bench") for path in (ROOT / folder).glob("*.py")
) + ["clearml_pipeline"]

PROBE = r"""
import atexit, json, os, signal, sys
sys.argv = ["probe", "--mode", "remote", "predict"]
# the libraries' own import-time settings (scikit-learn sets KMP_* variables) are not the project's
import joblib, matplotlib.figure, numpy, pandas, requests, sklearn, sklearn.ensemble, xgboost  # noqa
before = dict(path=list(sys.path), env=dict(os.environ),
              signals={s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)})
registered = []
atexit.register = lambda f, *a, **k: registered.append(getattr(f, "__name__", str(f)))
import importlib
importlib.import_module(MODULE)
after_signals = {s: signal.getsignal(s) for s in before["signals"]}
print(json.dumps(dict(
    path_changed=sys.path != before["path"],
    env_changed=sorted(k for k in set(os.environ) | set(before["env"]) if os.environ.get(k) != before["env"].get(k)),
    signals_changed=[int(s) for s in before["signals"] if after_signals[s] != before["signals"][s]],
    atexit=registered,
    clearml=sorted(m for m in sys.modules if m.split(".")[0] == "clearml"),
    pyplot="matplotlib.pyplot" in sys.modules,
)))
"""


@pytest.mark.parametrize("module", MODULES)
def test_importing_a_module_only_defines_things(module):
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); MODULE = {module!r}\n" + PROBE
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]  # no sys.exit, no error
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["path_changed"] is False
    assert report["env_changed"] == []
    assert report["signals_changed"] == []
    assert report["atexit"] == []
    assert report["pyplot"] is False
    if module != "runtime.sdk":  # the one module that names ClearML's internals imports ClearML in its functions too
        assert report["clearml"] == [], report["clearml"][:5]
