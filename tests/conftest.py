"""Shared fixtures: the one place the tests find the California Housing data, and the real ClearML server.

The tests use the data set shipped with the project, ``data/cal_housing.csv`` (StatLib layout,
20,640 rows; see ``data/README.md``), or the CSV named by the ``CAL_HOUSING_CSV`` environment
variable. No test downloads anything.

Every test process gets its own ClearML cache folder, so offline sessions never land in $HOME.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from server_support import connect_server, make_checkout, named_server_env, start_server, stop_server, web_available

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as clearml_pipeline.py does; before sklearn/xgboost load
os.environ.setdefault("CLEARML_CACHE_DIR", tempfile.mkdtemp(prefix="clearml-cache-tests-"))
# A user's clearml.conf or CLEARML_* server settings must not reach the tests.
for _var in ("CLEARML_API_HOST", "CLEARML_WEB_HOST", "CLEARML_FILES_HOST", "CLEARML_API_ACCESS_KEY",
             "CLEARML_API_SECRET_KEY", "CLEARML_TASK_ID", "CLEARML_OFFLINE_MODE"):
    os.environ.pop(_var, None)
os.environ["CLEARML_CONFIG_FILE"] = str(Path(os.environ["CLEARML_CACHE_DIR"]) / "no-clearml.conf")

#: The data set shipped with the project (StatLib layout).
SHIPPED_CSV = ROOT / "data" / "cal_housing.csv"


@pytest.fixture(scope="session")
def housing_csv() -> Path:
    """Path of the California Housing CSV: ``$CAL_HOUSING_CSV`` if set, else the shipped ``data/cal_housing.csv``."""
    path = Path(os.environ["CAL_HOUSING_CSV"]) if os.environ.get("CAL_HOUSING_CSV") else SHIPPED_CSV
    if not path.is_file():
        pytest.fail(f"California Housing CSV not found: {path}")
    return path


@pytest.fixture(scope="session")
def housing(housing_csv):
    """The validated data set: 20,640 rows x (8 features + MedHouseVal in $100k)."""
    from steps.data import load_dataset

    return load_dataset(str(housing_csv))


@pytest.fixture(scope="session")
def split42(housing):
    """The default train/test split (test_size 0.2, random_state 42)."""
    from steps.split import split_dataset

    return split_dataset(housing, test_size=0.2, random_state=42)


# --- the real ClearML server of ../shared/clearml-server (see tests/server_support.py) -----------------

QUEUES = ("default", "services")


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The ClearML server the environment names (``CLEARML_TEST_API_HOST``, ``CLEARML_TEST_API_ACCESS_KEY``,
    ``CLEARML_TEST_API_SECRET_KEY``; see ``server_support.NAMED``), else the harness, started once per test
    session (with the web UI where chromium and playwright are set up); the server tests skip without either."""
    state = tmp_path_factory.mktemp("clearml-server")
    named = named_server_env()
    srv, why = connect_server(state, named) if named else start_server(state, web=web_available() is None)
    if srv is None and named:
        pytest.fail(why)  # a server was asked for: never a silent skip
    if srv is None:
        pytest.skip(why)
    try:
        yield srv
    finally:
        stop_server(srv)


@pytest.fixture(scope="session")
def agents(server):
    """Agents on ``default`` (steps) and ``services`` (controllers), as ClearML's docs deploy them (on a named
    server: those serving the queues, else started here)."""
    for queue in QUEUES:
        try:
            server.agent(queue)
        except RuntimeError as exc:  # a named server with no agent and no clearml-agent here
            pytest.skip(str(exc))
    return server


@pytest.fixture(scope="session")
def checkout(tmp_path_factory):
    """The project as a user who pushed it has it: a git checkout with a ``file://`` origin."""
    return make_checkout(tmp_path_factory.mktemp("checkout"))


@pytest.fixture(scope="session")
def data(housing_csv, tmp_path_factory) -> Path:
    """A copy of the real data (20,640 rows), readable by agents on this machine."""
    path = tmp_path_factory.mktemp("data") / "cal_housing.csv"
    shutil.copyfile(housing_csv, path)
    return path


