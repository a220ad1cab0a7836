"""``predict --run RUN_DIR --data CSV --output PRED_CSV``: apply a run's saved models to a CSV (ClearML-free)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.errors import answer, exit_code
from cli.parser import _ArgumentParser, _HelpFormatter


def build_predict_parser() -> argparse.ArgumentParser:
    """The ``predict`` command line: apply a run's saved models to a CSV (ClearML is not used)."""
    parser = _ArgumentParser(
        prog="clearml_pipeline.py predict",
        description="Apply the saved models of a training run to a CSV file and write their predictions "
        "of the median house value ($100k), one column pred_<model> per model. ClearML is not used.",
        formatter_class=_HelpFormatter,
        epilog="The output CSV has one line per data row of --data, in its order: row (1-based data row), "
        "MedHouseVal (the actual value, only when --data has a target column) and pred_<model> per model. "
        "When --data has a target column, R2, RMSE and MAE of each model are printed (rows the models were "
        "trained on score better than new data). Exit codes: 0 done, 2 bad input, 1 other failure, 130 interrupted.",
    )
    parser.add_argument("--run", required=True, metavar="RUN_DIR",
                        help="folder of a training run (the 'results:' folder it printed; it holds models/)")
    parser.add_argument("--data", required=True, metavar="CSV",
                        help="CSV (or Parquet) in scikit-learn's or StatLib's layout; the target column (MedHouseVal or "
                        "median_house_value) is optional")
    parser.add_argument("--output", required=True, metavar="PRED_CSV",
                        help="new CSV file for the predictions (never overwritten; its folder must exist)")
    parser.add_argument("--model", default=None, metavar="NAME",
                        help="predict with this model of the run only (e.g. xgboost); default: every model")
    return parser


def predict_main(argv: list[str]) -> int:
    """``predict --run RUN_DIR --data CSV --output PRED_CSV [--model NAME]``: see :func:`steps.predict.predict_csv`.

    Prints the metrics table (when the CSV has a target) and the output path on stdout, warnings
    (``WARNING: ...``) and a one-line ``error: ...`` on stderr.

    :returns: the exit code: 0 done, 2 bad input (argument, run folder, model name, CSV, output
        path), 1 another failure (e.g. disk full while writing), 130 interrupted.
    """
    import signal

    # Ctrl-C/SIGTERM raise KeyboardInterrupt, so the output's temporary file is removed on the way out.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        args = build_predict_parser().parse_args(argv)
        from steps.predict import predict_csv

        predictions, metrics = predict_csv(args.run, args.data, args.output, model=args.model)
    except (Exception, KeyboardInterrupt) as exc:  # argparse, DataError, PredictError, a full disk: one line
        return answer(exc)
    if metrics is not None:
        print(metrics.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        from steps.predict import training_data_note

        note = training_data_note(args.run, args.data)
        if note:
            print(note)
    print(f"predictions: {Path(args.output).expanduser().absolute()} ({len(predictions):,} rows, "
          f"{', '.join(c for c in predictions.columns if c.startswith('pred_'))})")
    return exit_code(None)
