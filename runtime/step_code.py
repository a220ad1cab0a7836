"""``step-code DIR``: the standalone script ClearML generates for each step, as agents get it.

The pipeline's steps are defined exactly as a server run defines them (ClearML's own code
generation), in a throw-away offline task whose cache folder is made here and removed after.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_step_code(folder: str, make_pipeline: Callable[[], object], step_names: tuple[str, ...],
                    project: str, name: str) -> None:
    """Write ``DIR/<step>.py`` (the script), ``DIR/<step>.json`` (entry point, repository, requirements,
    parameters) and ``DIR/pipeline.json`` (the DAG: parents, queues, caching of every step).

    :param make_pipeline: defines the steps (their components) and creates the ``PipelineDecorator``.
    """
    from clearml import PipelineDecorator

    from runtime.offline import start_offline_controller

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    cache = tempfile.mkdtemp(prefix="clearml-step-code-")  # never the user's ClearML cache
    previous = os.environ.get("CLEARML_CACHE_DIR")
    os.environ["CLEARML_CACHE_DIR"] = cache
    try:
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
        with contextlib.redirect_stdout(io.StringIO()):  # ClearML would announce a zip that is deleted next
            task.close()
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        if previous is None:
            os.environ.pop("CLEARML_CACHE_DIR", None)
        else:
            os.environ["CLEARML_CACHE_DIR"] = previous
