"""The pipeline's computation as a plain script with no ClearML: the benchmark's baseline.

Same steps, same functions, same files written (metrics.csv, PNGs, models) as
``clearml_pipeline.py --mode offline``, minus the tracking.

Usage: python bench/plain_script.py --data PATH --output-dir DIR [--random-state N] [--models a,b]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as clearml_pipeline.py does

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from steps.data import load_dataset, split_dataset  # noqa: E402
from steps.evaluation import metrics_table, predict_all  # noqa: E402
from steps.outputs import write_run_outputs  # noqa: E402
from steps.models import build_linear, build_polynomial, build_random_forest, build_xgboost, fit_xgboost  # noqa: E402
from steps.params import DEFAULTS as P  # noqa: E402
from steps.plots import run_figures  # noqa: E402


def run(data_path: str, output_dir: str, random_state: int = P.random_state, models: str = P.models):
    """Load, split, train the chosen models with the default parameters, evaluate, write the outputs.

    :returns: the metrics table (one row per model).
    """
    data = load_dataset(data_path)
    X_train, X_test, y_train, y_test = split_dataset(data, P.test_size, random_state)
    fitted = {}
    for name in models.split(","):
        if name == "polynomial":
            fitted[name] = build_polynomial(P.poly_degree, P.poly_alpha, P.poly_clip_quantile).fit(X_train, y_train)
        elif name == "xgboost":
            model = build_xgboost(
                n_estimators=P.xgb_n_estimators, max_depth=P.xgb_max_depth, learning_rate=P.xgb_learning_rate,
                subsample=P.xgb_subsample, colsample_bytree=P.xgb_colsample_bytree,
                min_child_weight=P.xgb_min_child_weight, early_stopping_rounds=P.xgb_early_stopping_rounds,
                device=P.xgb_device, n_jobs=P.n_jobs, random_state=random_state,
            )
            fitted[name] = fit_xgboost(model, X_train, y_train, random_state=random_state)
        elif name == "linear":
            fitted[name] = build_linear().fit(X_train, y_train)
        elif name == "random_forest":
            fitted[name] = build_random_forest(P.rf_n_estimators, random_state, P.n_jobs).fit(X_train, y_train)
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
    args = parser.parse_args()
    print(run(args.data, args.output_dir, args.random_state, args.models).to_string(index=False))
