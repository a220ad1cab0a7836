"""Reading CSV files: what a file is (text, delimiter) and its cells as numbers.

Nothing here knows the California Housing columns: :mod:`steps.data` holds the data set's rules.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from steps.errors import DataError

_DELIMITERS = ",;\t|"


def _sniff_delimiter(path: Path, header: str) -> str:
    """Return the delimiter of ``header`` among ``, ; TAB |`` (the one that splits it most)."""
    try:
        return csv.Sniffer().sniff(header, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        counts = {d: header.count(d) for d in _DELIMITERS}
        best = max(counts, key=counts.get)
        if counts[best] == 0:
            raise DataError(
                f"{path}: the first line has no ',', ';', tab or '|' delimiter, so this is not a CSV "
                "table; pass a CSV file with a header row"
            ) from None
        return best


def _read_header(path: Path) -> tuple[list[str], str]:
    """Check that ``path`` is a readable, non-empty text CSV and return (header columns, delimiter)."""
    if not path.exists():
        raise DataError(f"data file not found: {path}; pass --data with the path of a CSV file")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a file; pass --data with the path of a CSV file")
    if not path.is_file():
        raise DataError(f"{path} is not a regular file (a pipe or device?); save the data to a CSV file "
                        "and pass its path with --data")
    try:
        with open(path, "rb") as fh:
            head = fh.read(64 * 1024)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}; check the file's permissions") from None
    if not head.strip():
        raise DataError(f"{path} is empty; pass a CSV file with a header row and data rows")
    if head[:4] == b"PK\x03\x04":
        raise DataError(f"{path} is a zip archive, not a CSV file; unzip it and pass the CSV inside")
    if head[:2] == b"\x1f\x8b":
        raise DataError(f"{path} is gzip-compressed; decompress it (gunzip) and pass the CSV file")
    if b"\x00" in head:
        raise DataError(f"{path} is a binary file, not a CSV text file; pass a CSV file")
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = head.decode("latin-1")
    lowered = text.lstrip().lower()
    if lowered.startswith(("<!doctype html", "<html", "<?xml")) or "<html" in lowered[:1000]:
        raise DataError(
            f"{path} is an HTML/XML page, not a CSV file (a web page saved by mistake?); "
            "download the raw CSV file instead"
        )
    header = text.splitlines()[0]
    delimiter = _sniff_delimiter(path, header)
    columns = [c.strip().strip('"').strip("'") for c in next(csv.reader([header], delimiter=delimiter))]
    return columns, delimiter


def read_header(path: Path) -> tuple[list[str], str]:
    """Check that ``path`` is a readable, non-empty text CSV and return (header columns, delimiter)."""
    if not path.exists():
        raise DataError(f"data file not found: {path}; pass --data with the path of a CSV file")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a file; pass --data with the path of a CSV file")
    if not path.is_file():
        raise DataError(f"{path} is not a regular file (a pipe or device?); save the data to a CSV file "
                        "and pass its path with --data")
    try:
        with open(path, "rb") as fh:
            head = fh.read(64 * 1024)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}; check the file's permissions") from None
    if not head.strip():
        raise DataError(f"{path} is empty; pass a CSV file with a header row and data rows")
    if head[:4] == b"PK\x03\x04":
        raise DataError(f"{path} is a zip archive, not a CSV file; unzip it and pass the CSV inside")
    if head[:2] == b"\x1f\x8b":
        raise DataError(f"{path} is gzip-compressed; decompress it (gunzip) and pass the CSV file")
    if b"\x00" in head:
        raise DataError(f"{path} is a binary file, not a CSV text file; pass a CSV file")
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = head.decode("latin-1")
    lowered = text.lstrip().lower()
    if lowered.startswith(("<!doctype html", "<html", "<?xml")) or "<html" in lowered[:1000]:
        raise DataError(
            f"{path} is an HTML/XML page, not a CSV file (a web page saved by mistake?); "
            "download the raw CSV file instead"
        )
    header = text.splitlines()[0]
    delimiter = _sniff_delimiter(path, header)
    columns = [c.strip().strip('"').strip("'") for c in next(csv.reader([header], delimiter=delimiter))]
    return columns, delimiter


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def to_numeric(path: Path, chunk: pd.DataFrame, first_row: int) -> pd.DataFrame:
    """Convert every column to float64; raise naming the first non-numeric cell (1-based data row)."""
    out = {}
    for col in chunk.columns:
        values = chunk[col]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            out[col] = values.astype("float64")
            continue
        numeric = pd.to_numeric(values, errors="coerce")
        bad = numeric.isna() & values.notna() & (values.astype(str).str.strip() != "")
        if bad.any():
            pos = int(np.flatnonzero(bad.to_numpy())[0])
            value = str(values.iloc[pos]).strip()
            if re.fullmatch(r"[-+]?\d*,\d+", value):
                raise DataError(
                    f"{path}: column {col} has {value!r} in data row {first_row + pos + 1}, a number with a "
                    "decimal comma; save the CSV with '.' as the decimal separator"
                )
            raise DataError(
                f"{path}: column {col} has a non-numeric value {str(values.iloc[pos])!r} in data row "
                f"{first_row + pos + 1}; fix or remove that row (every column must be numeric)"
            )
        out[col] = numeric.astype("float64")
    return pd.DataFrame(out, index=chunk.index)


def clean_name(name: str) -> str:
    """A column name as written in the header, without surrounding blanks and quotes."""
    return name.strip().strip('"').strip("'")


def read_csv_chunks(path: Path, delimiter: str, usecols, chunksize: int) -> Iterator[pd.DataFrame]:
    """The columns ``usecols`` (clean names) of the CSV ``path``, ``chunksize`` rows at a time, as read by pandas.

    :raises DataError: pandas cannot parse the file as a table (its first error line is quoted).
    """
    try:
        reader = pd.read_csv(
            path,
            sep=delimiter,
            usecols=lambda c: clean_name(c) in usecols,
            chunksize=chunksize,
            skipinitialspace=True,
            encoding="utf-8-sig",
            encoding_errors="replace",
            low_memory=False,
        )
        for chunk in reader:
            chunk.columns = [clean_name(c) for c in chunk.columns]
            yield chunk
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a well-formed CSV table ({first}); check the delimiter and quoting") from None


def count_data_rows(path: str | os.PathLike) -> int:
    """Number of non-blank lines after the header of a CSV file (its data rows), read as a stream."""
    with open(path, "rb") as fh:
        next(fh, None)
        return sum(1 for line in fh if line.strip())


