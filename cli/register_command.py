"""``register-data PATH``: its flags and the cheap checks of the CSV, before ClearML starts."""

from __future__ import annotations

import argparse
import os

from cli.errors import UsageError
from cli.parser import RunOptions, _ArgumentParser, _HelpFormatter
from runtime.data_versions import DEFAULT_NAME as DATASET_NAME
from runtime.data_versions import DEFAULT_PROJECT as DATASET_PROJECT


def build_register_parser() -> argparse.ArgumentParser:
    """The ``register-data`` command line: a CSV file into a new version of a ClearML dataset."""
    parser = _ArgumentParser(
        prog="clearml_pipeline.py register-data",
        description="Validate a CSV as a run would, then register it as a new version of a ClearML dataset "
        "(parent: the latest version), with its SHA-256, row count and layout as metadata; upload it, "
        "finalize it and print the new version's id (the last line), for --dataset-id. A file identical to "
        "a registered version creates nothing and prints that version's id.",
        formatter_class=_HelpFormatter,
        epilog="Needs a ClearML server (clearml.conf or CLEARML_API_*). Exit codes: 0 registered (or identical), "
        "2 bad input, 1 server problem, 130 interrupted.",
    )
    parser.add_argument("path", metavar="PATH", help="CSV in scikit-learn's or StatLib's layout, with the target column")
    parser.add_argument("--dataset-project", default=DATASET_PROJECT, metavar="PROJECT", help="ClearML project")
    parser.add_argument("--dataset-name", default=DATASET_NAME, metavar="NAME", help="ClearML dataset name")
    return parser


def parse_register(argv: list[str]) -> tuple[str, RunOptions]:
    """``register-data PATH [--dataset-project P] [--dataset-name N]``: the cheap checks of the CSV, before ClearML.

    :returns: ``(absolute path, options naming the dataset)``.
    :raises UsageError: one line (the file, the names).
    """
    from steps.data import DataError, check_csv
    from steps.params import DEFAULTS

    args = build_register_parser().parse_args(argv)
    for flag, value in (("--dataset-project", args.dataset_project), ("--dataset-name", args.dataset_name)):
        if len(value.strip()) < 3:
            raise UsageError(f"{flag} {value!r} is too short: ClearML names have at least 3 characters")
    path = os.path.abspath(os.path.expanduser(args.path))
    try:
        check_csv(path, DEFAULTS.test_size)
    except DataError as exc:
        raise UsageError(str(exc)) from None
    return path, RunOptions(mode="local", dataset_project=args.dataset_project.strip(),
                            dataset_name=args.dataset_name.strip())
