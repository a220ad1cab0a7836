"""The pipeline's computation as a plain script with no ClearML: the benchmark's baseline.

Same steps, same functions (validation scores included), same files written (metrics.csv, PNGs, models) as
``clearml_pipeline.py --mode offline``, minus the tracking.

Usage: python bench/plain_script.py --data PATH --output-dir DIR [--random-state N] [--models a,b]
[--spatial-neighbors K]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

if not __package__:  # run as a script (the benchmark's baseline): as clearml_pipeline.py's command line does
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from steps.data import load_dataset  # noqa: E402
from steps.evaluation import metrics_table, predict_all  # noqa: E402
from steps.models import model_arguments, train_model  # noqa: E402
from steps.outputs import write_run_outputs  # noqa: E402
from steps.params import DEFAULTS as P  # noqa: E402
from steps.plots import run_figures  # noqa: E402
from steps.split import split_dataset  # noqa: E402
from steps.validation import validation_scores  # noqa: E402


def run(data_path: str, output_dir: str, random_state: int = P.random_state, models: str = P.models,
        spatial_neighbors: int = P.spatial_neighbors):
    """Load, split, train the chosen models with the default parameters (and their validation scores,
    :func:`steps.validation.validation_scores`, as the training steps), evaluate, write the outputs.

    Each model is built and fitted by :func:`steps.models.train_model` with the keywords
    :func:`steps.models.model_arguments` takes from the parameters, as the pipeline does.

    :returns: the metrics table (one row per model).
    """
    data = load_dataset(data_path)
    X_train, X_test, y_train, y_test = split_dataset(data, P.test_size, random_state)
    params = dataclasses.replace(P, random_state=random_state, spatial_neighbors=spatial_neighbors).validate()
    fitted = {name: train_model(name, X_train, y_train, **model_arguments(name, params)) for name in models.split(",")}
    for name in fitted:  # each training step also scores a fresh model on held-out training rows
        validation_scores(name, X_train, y_train, **model_arguments(name, params))
    predictions = predict_all(fitted, X_test)
    metrics = metrics_table(y_test, predictions)
    figures = run_figures(y_test, predictions, metrics)
    write_run_outputs(output_dir, metrics, figures, fitted)
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--random-state", type=int, default=P.random_state)
    parser.add_argument("--models", default=P.models)
    parser.add_argument("--spatial-neighbors", type=int, default=P.spatial_neighbors, help="0: no neighbour features")
    args = parser.parse_args()
    print(run(args.data, args.output_dir, args.random_state, args.models, args.spatial_neighbors).to_string(index=False))
