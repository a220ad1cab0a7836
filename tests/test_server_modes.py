"""Server and agent modes, tested up to the network boundary (no server, no network).

* the standalone code ClearML generates for each step (``clearml_pipeline.py step-code``),
  as an agent would get it: it compiles, its imports resolve in a fresh interpreter started from
  the repository root, it names the repository, commit and packages, and its parameters keep
  their types;
* caching of load and split, and ``--no-cache``;
* a server that is not configured, cannot be reached, rejects the credentials or lacks a queue:
  one clear line, non-zero exit, within 30 s (a fake API server on loopback plays the server);
* ``clearml.conf.example`` parses with ClearML's own loader;
* every flag the README documents exists.
"""

from __future__ import annotations

import ast
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from steps.params import DEFAULTS, MODEL_KINDS

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("load", "split", "train_polynomial", "train_xgboost", "train_linear", "train_random_forest", "evaluate")
#: component argument -> pipeline parameter it receives
COMPONENT_PARAMETERS = {
    "load": {"data_path": "data_path"},
    "split": {"test_size": "test_size", "random_state": "random_state"},
    "train_polynomial": {"degree": "poly_degree", "alpha": "poly_alpha", "clip_quantile": "poly_clip_quantile",
                         "neighbors": "spatial_neighbors"},
    "train_xgboost": {"n_estimators": "xgb_n_estimators", "max_depth": "xgb_max_depth",
                      "learning_rate": "xgb_learning_rate", "subsample": "xgb_subsample",
                      "colsample_bytree": "xgb_colsample_bytree", "min_child_weight": "xgb_min_child_weight",
                      "early_stopping_rounds": "xgb_early_stopping_rounds", "device": "xgb_device",
                      "n_jobs": "n_jobs", "random_state": "random_state", "neighbors": "spatial_neighbors"},
    "train_random_forest": {"n_estimators": "rf_n_estimators", "n_jobs": "n_jobs", "random_state": "random_state"},
    "evaluate": {"output_dir": "output_dir"},
}
REPO_URL = "https://github.com/example/clearml-tabular-regression.git"


def cli(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "clearml_pipeline.py", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, **(env or {})))


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> tuple[Path, str]:
    """A git checkout of the project with an https 'origin', as a user who pushed it has: (path, HEAD)."""
    repo = tmp_path_factory.mktemp("checkout") / "project"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(".git", "runs", ".venv", "__pycache__", ".pytest_cache"))
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "snapshot"], check=True)
    subprocess.run([*git, "remote", "add", "origin", REPO_URL], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    return repo, head


@pytest.fixture(scope="module")
def remote_code(checkout, tmp_path_factory) -> Path:
    """The step code generated for ``--mode remote`` (what agents receive)."""
    repo, _ = checkout
    out = tmp_path_factory.mktemp("step-code")
    result = cli("step-code", str(out), "--mode", "remote", cwd=repo)
    assert result.returncode == 0, result.stderr[-3000:]
    # nothing about the throw-away offline session it uses: only what it wrote
    assert result.stdout.strip().splitlines() == [f"wrote the code of {len(STEPS)} steps to {out}"], result.stdout
    return out


def _definition(folder: Path, step: str) -> dict:
    return json.loads((folder / f"{step}.json").read_text())


@pytest.mark.parametrize("step", STEPS)
def test_step_code_compiles_and_its_imports_resolve_from_the_repository_root(remote_code, checkout, step):
    repo, _ = checkout
    source = (remote_code / f"{step}.py").read_text()
    tree = ast.parse(source)
    compile(source, f"{step}.py", "exec")
    imports = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            imports += [(node.module, alias.name) for alias in node.names]
    assert any(module and module.startswith(("steps", "runtime")) for module, _ in imports)
    check = "import importlib\n" + "".join(
        f"m = importlib.import_module({module!r})\n" + (f"getattr(m, {name!r})\n" if name else "")
        for module, name in imports
    )
    # A fresh interpreter in the repository root, as the agent runs the step: no test sys.path.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-I", "-c", "import sys; sys.path.insert(0, ''); exec(sys.stdin.read())"],
                            input=check, cwd=repo, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("step", STEPS)
def test_step_definition_names_repository_commit_and_packages(remote_code, checkout, step):
    _, head = checkout
    script = _definition(remote_code, step)["script"]
    assert script["repository"] == REPO_URL
    assert script["version_num"] == head
    assert script["working_dir"] == "." and script["entry_point"] == f"{step}.py"
    packages = script["requirements"]["pip"].splitlines()
    assert any(p.startswith("scikit-learn") for p in packages) and any(p.startswith("numpy") for p in packages)
    if step in ("train_xgboost", "evaluate"):
        assert any(p.startswith("xgboost") for p in packages)
    if step == "evaluate":
        assert any(p.startswith("matplotlib") for p in packages)


@pytest.mark.parametrize("step", [s for s in STEPS if s in COMPONENT_PARAMETERS])
def test_step_parameters_keep_their_types_and_defaults(remote_code, step):
    """The generated ``kwargs = {...}`` is what ClearML casts edited values to (clearml issue #477)."""
    source = (remote_code / f"{step}.py").read_text()
    literal = re.search(r"^    kwargs = (\{.*\})$", source, re.M).group(1)
    kwargs = ast.literal_eval(literal)
    for argument, parameter in COMPONENT_PARAMETERS[step].items():
        default = getattr(DEFAULTS, parameter)
        assert type(kwargs[argument]) is type(default), (argument, kwargs[argument])
        if parameter != "data_path":  # the default data path is this checkout's (the controller always passes one)
            assert kwargs[argument] == default, (argument, kwargs[argument])


def test_evaluate_step_rolls_metrics_and_models_up_to_the_controller(remote_code):
    dag = json.loads((remote_code / "pipeline.json").read_text())
    assert dag["evaluate"]["monitor_models"] == list(MODEL_KINDS)
    assert "metrics.csv" in [a if isinstance(a, str) else a[0] for a in dag["evaluate"]["monitor_artifacts"]]
    assert ["R2", "xgboost"] in dag["evaluate"]["monitor_metrics"]
    assert ["RMSE", "polynomial"] in dag["evaluate"]["monitor_metrics"]
    evaluate_code = (remote_code / "evaluate.py").read_text()
    assert "report_evaluation(" in evaluate_code  # metrics, files and models (runtime.reporting)
    assert "def evaluate(X_test, y_test, output_dir, **models)" in evaluate_code  # only the models that ran
    assert "'matplotlib': False" in evaluate_code and "'joblib': False" in evaluate_code


def test_load_and_split_are_cached_and_no_cache_turns_it_off(remote_code, checkout, tmp_path):
    dag = json.loads((remote_code / "pipeline.json").read_text())
    assert {name for name, node in dag.items() if node["cache"]} == {"load", "split"}
    repo, _ = checkout
    result = cli("step-code", str(tmp_path), "--no-cache", cwd=repo)
    assert result.returncode == 0, result.stderr[-2000:]
    dag = json.loads((tmp_path / "pipeline.json").read_text())
    assert not any(node["cache"] for node in dag.values())
    assert _definition(tmp_path, "load")["script"]["repository"] in ("", None)  # local mode: the working copy


def test_remote_mode_refuses_a_checkout_agents_cannot_clone(checkout, tmp_path, housing_csv):
    repo, _ = checkout
    subprocess.run(["git", "-C", str(repo), "remote", "set-url", "origin", str(tmp_path)], check=True)
    try:
        result = cli("--mode", "remote", "--data", str(housing_csv), cwd=repo)
    finally:
        subprocess.run(["git", "-C", str(repo), "remote", "set-url", "origin", REPO_URL], check=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "local path" in result.stderr and "set-url" in result.stderr


# ---- a server that is missing, unreachable, refuses us, or lacks a queue ------------------------------------


class FakeApiServer(http.server.BaseHTTPRequestHandler):
    """Answers ``auth.login`` and ``queues.get_all`` like a ClearML API server (docs: references/api)."""

    valid_key = "good-key"
    queues = {"default"}

    def do_POST(self):  # noqa: N802
        import base64

        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/auth.login":
            auth = self.headers.get("Authorization", "")
            key = base64.b64decode(auth.split()[-1]).decode().split(":")[0] if auth.startswith("Basic") else ""
            if key != self.valid_key:
                return self._reply(401, {"meta": {"result_code": 401, "result_msg": "Unauthorized"}})
            return self._reply(200, {"data": {"token": "t0k3n"}})
        if self.path == "/queues.get_all":
            name = body.get("name", "").strip("^$")
            return self._reply(200, {"data": {"queues": [{"id": "q1"}] if name in self.queues else []}})
        return self._reply(404, {})

    def _reply(self, code: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def fake_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeApiServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_env(host: str, key: str = "good-key") -> dict:
    return {"CLEARML_API_HOST": host, "CLEARML_WEB_HOST": host, "CLEARML_FILES_HOST": host,
            "CLEARML_API_ACCESS_KEY": key, "CLEARML_API_SECRET_KEY": "secret"}


@pytest.mark.parametrize(
    "case, args, env, expected",
    [
        ("no server configured", ["--mode", "local"], {}, "no ClearML server is configured"),
        ("unreachable", ["--mode", "local"], "closed", "cannot be reached"),
        ("wrong credentials", ["--mode", "local"], "bad-key", "rejected the credentials"),
        ("missing step queue", ["--mode", "remote", "--queue", "gpu"], "ok", "queue 'gpu' does not exist"),
        ("missing controller queue", ["--mode", "remote"], "ok", "queue 'services' does not exist"),
    ],
)
def test_server_problems_fail_fast_in_one_line(case, args, env, expected, fake_server, checkout, housing_csv, tmp_path):
    repo, _ = checkout
    if env == "closed":
        env = _server_env(f"http://127.0.0.1:{_closed_port()}")
    elif env == "bad-key":
        env = _server_env(fake_server, key="wrong")
    elif env == "ok":
        env = _server_env(fake_server)
    started = time.monotonic()
    result = cli(*args, "--data", str(housing_csv), "--output-dir", str(tmp_path / "out"), cwd=repo, env=env,
                 timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, (case, result.stdout[-1000:], result.stderr[-1000:])
    assert elapsed < 30, f"{case}: {elapsed:.1f} s"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (case, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "out").exists()


def test_clearml_conf_example_parses_with_clearmls_loader():
    from clearml.utilities.pyhocon import ConfigFactory

    conf = ConfigFactory.parse_file(str(ROOT / "clearml.conf.example"))
    for key in ("api.web_server", "api.api_server", "api.files_server", "api.credentials.access_key",
                "api.credentials.secret_key", "sdk.development.default_output_uri",
                "sdk.storage.cache.default_base_dir"):
        assert conf.get(key), key
    assert conf.get("api.api_server").endswith(":8008") and conf.get("api.web_server").endswith(":8080")
    assert conf.get("sdk.development.report_use_subprocess") is False


def test_clearml_conf_example_is_what_the_sdk_reads(tmp_path):
    """Loaded through CLEARML_CONFIG_FILE, ClearML reports the example's API server."""
    code = ("from clearml.backend_api import Session; from clearml.config import config_obj;"
            "print(Session.get_api_server_host(), config_obj.get('api.credentials.access_key'))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARML_API")}
    env["CLEARML_CONFIG_FILE"] = str(ROOT / "clearml.conf.example")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.stdout.split() == ["http://localhost:8008", "<ACCESS_KEY>"], result.stderr[-1000:]


def test_every_flag_the_readme_documents_exists():
    from cli.parser import build_parser
    from cli.predict_command import build_predict_parser
    from cli.register_command import build_register_parser

    parsers = [build_parser(), build_predict_parser(), build_register_parser()]
    known = {option for parser in parsers for action in parser._actions for option in action.option_strings}
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"python clearml_pipeline\.py[^\n`]*", readme)
    assert len(commands) >= 5
    documented = {flag for command in commands for flag in re.findall(r"(--[a-z][a-z-]*)", command)}
    documented |= set(re.findall(r"\| `(--[a-z][a-z-]*)`", readme))
    assert documented, "no flags found in the README"
    assert documented <= known, documented - known


def test_import_offline_needs_a_server_and_says_so(tmp_path):
    import zipfile

    zip_path = tmp_path / "offline-x.zip"  # a zip: then the server check comes first
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("task.json", "{}")
    result = cli("import-offline", str(zip_path), timeout=60)
    assert result.returncode == 1 and result.stderr.startswith("error: no ClearML server is configured")
    missing = cli("import-offline", "/nonexistent/offline-x.zip", timeout=60)
    assert missing.returncode == 2 and "offline session not found" in missing.stderr
    not_zip = cli("import-offline", str(Path(__file__)), timeout=60)
    assert not_zip.returncode == 2 and not_zip.stderr.strip().endswith(
        "is not a zip file, so not an offline session; pass the .zip printed by an offline run (or its folder)")
    assert "Traceback" not in result.stderr + missing.stderr + not_zip.stderr


def test_artifacts_between_steps_are_exact_and_binary(remote_code, split42):
    import numpy as np
    import pandas as pd

    from steps.artifacts import deserialize_artifact, serialize_artifact

    X_train, _, y_train, _ = split42
    frame = X_train.astype({"HouseAge": "float32"})
    data = serialize_artifact(frame)
    back = deserialize_artifact(data)
    pd.testing.assert_frame_equal(back, frame, check_exact=True)
    assert back["HouseAge"].dtype == np.float32
    assert len(data) < 1.2 * frame.memory_usage(deep=True).sum()  # binary, not text
    pd.testing.assert_series_equal(deserialize_artifact(serialize_artifact(y_train)), y_train)
    split_code = (remote_code / "split.py").read_text()
    assert "serialization_function=serialize_artifact" in split_code
    assert "deserialization_function=deserialize_artifact" in split_code
