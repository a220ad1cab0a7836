"""The shape of steps/: importing defines things only, small functions, no ClearML, no import cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

STEPS = Path(__file__).resolve().parent.parent / "steps"
MODULES = sorted(p for p in STEPS.glob("*.py"))
MAX_FUNCTION_LINES = 60


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_importing_steps_chooses_no_matplotlib_backend_and_loads_no_pyplot():
    code = (
        "import sys, matplotlib\n"
        "def refuse(*a, **k): raise AssertionError('matplotlib.use called at import')\n"
        "matplotlib.use = refuse\n"
        "import " + ", ".join(f"steps.{p.stem}" for p in MODULES if p.stem != "__init__") + "\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
        "assert 'clearml' not in sys.modules, 'clearml imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=STEPS.parent, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_figures_need_no_pyplot(tmp_path):
    import matplotlib.pyplot as plt
    import numpy as np

    from steps.plots import error_distribution_plot

    before = plt.get_fignums()
    fig = error_distribution_plot("linear", np.array([1.0, 2.0, 5.0]), np.array([1.1, 2.2, 4.0]))
    assert plt.get_fignums() == before  # not one of pyplot's figures: nothing to close, nothing leaks
    fig.savefig(tmp_path / "e.png", format="png", dpi=50)
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
    plt.close("all")  # what callers do: harmless


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_modules_define_only_small_functions_without_global_or_module_level_assert(path):
    tree = _tree(path)
    assert not [n for n in tree.body if isinstance(n, ast.Assert)], "module-level assert"
    for node in ast.walk(tree):
        assert not isinstance(node, ast.Global), f"global statement at line {node.lineno}"
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            assert lines <= MAX_FUNCTION_LINES, f"{node.name} has {lines} lines"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_steps_know_nothing_of_clearml(path):
    assert not {m for m in _imported(path) if m.split(".")[0] == "clearml"}


def test_data_and_split_do_not_import_each_other():
    assert "steps.data" not in _imported(STEPS / "split.py")
    assert "steps.schema" in _imported(STEPS / "split.py") and "steps.schema" in _imported(STEPS / "data.py")
    from steps import data, schema, split

    assert data.FEATURES is schema.FEATURES is split.FEATURES and data.TARGET == schema.TARGET == "MedHouseVal"
    assert data.split_dataset is split.split_dataset  # still importable from steps.data


def test_no_function_of_radon_grade_d_or_worse():
    cc = pytest.importorskip("radon.complexity")
    worst = [(p.name, b.name, cc.cc_rank(b.complexity)) for p in MODULES
             for b in cc.cc_visit(p.read_text()) if cc.cc_rank(b.complexity) >= "D"]
    assert worst == []
