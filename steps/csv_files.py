"""Reading CSV files: what a file really is, and its cells as numbers.

:func:`sniff_csv` reads the first :data:`HEAD_BYTES` of a file (decompressed when it is gzip, bz2,
xz or a zip of one file: pandas reads those) and decides its text encoding (UTF-8 with or without
BOM, UTF-16/UTF-32 with or without BOM, else Windows-1252/Latin-1), its delimiter (``, ; TAB |``
or runs of blanks) and its header; line endings (``\\n``, ``\\r\\n``, old-Mac ``\\r``) need no
choice, pandas and Python's universal newlines read each. Every file it cannot hand to
:func:`pandas.read_csv` that way is refused with a :class:`~steps.errors.DataError` naming what the
file really is (a spreadsheet, Parquet, a database, JSON, an archive, a web page, ...) and how to
convert it to CSV. :func:`to_numeric` turns cells into float64, accepting thousands separators
(``"2,810"``) and naming the first cell it cannot read.

Nothing here knows the California Housing columns: :mod:`steps.data` holds the data set's rules.
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import csv
import gzip
import io
import lzma
import re
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Optional

import numpy as np
import pandas as pd

from steps.errors import DataError

#: Bytes read (after decompression) to decide what a file is.
HEAD_BYTES = 64 * 1024
#: The delimiters tried; ``WHITESPACE`` stands for runs of blanks (pandas' ``sep=r"\s+"``).
WHITESPACE = r"\s+"
_DELIMITERS = (",", ";", "\t", "|")


@dataclass(frozen=True)
class CsvFormat:
    """How to read a CSV file with :func:`pandas.read_csv`.

    :ivar compression: pandas' name of the compression (``None``, ``"gzip"``, ``"bz2"``, ``"xz"``, ``"zip"``),
        or :data:`PARQUET` for a Parquet file (read with :func:`pandas.read_parquet`, ``encoding`` unused).
    :ivar encoding: the text encoding, a Python codec name (``"utf-8-sig"``, ``"utf-16"``, ``"cp1252"``, ...).
    :ivar delimiter: ``","``, ``";"``, ``"\\t"``, ``"|"`` or :data:`WHITESPACE`.
    :ivar columns: the header's column names, stripped of blanks and quotes (``""`` for a blank name).
    :ivar member: the file inside a zip archive, if any.
    :ivar skip_lines: lines before the header: blank lines, and Excel's delimiter hint line (``sep=;``).
    """

    compression: Optional[str]
    encoding: str
    delimiter: str
    columns: tuple[str, ...]
    member: Optional[str] = None
    skip_lines: int = 0


def clean_name(name: str) -> str:
    """A column name as written in the header, without surrounding blanks and quotes."""
    return name.strip().strip('"').strip("'")


# --------------------------------------------------------------------------- what a file is

#: The leading (and trailing) bytes of an Apache Parquet file.
PARQUET_MAGIC = b"PAR1"
#: :attr:`CsvFormat.compression` of a Parquet file: read with :func:`pandas.read_parquet`, not as text.
PARQUET = "parquet"


#: Leading bytes of file formats that are not text, with what to call them and how to convert them.
#: ``{path}`` is the file. Checked in order, after decompression.
_SIGNATURES: tuple[tuple[bytes, int, str, str], ...] = (
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", 0, "an Excel 97-2003 workbook (.xls) or another OLE2 Office file",
     "open it in Excel or LibreOffice and save it as CSV UTF-8, or run pip install xlrd, then "
     "python -c \"import pandas; pandas.read_excel('{path}').to_csv('data.csv', index=False)\""),
    (PARQUET_MAGIC, 0, "an Apache Parquet file", "decompress it and pass the Parquet file itself (pandas reads it"
     " with pyarrow)"),
    (b"ARROW1", 0, "an Apache Arrow / Feather v2 file",
     "convert it: pip install pyarrow, then "
     "python -c \"import pandas; pandas.read_feather('{path}').to_csv('data.csv', index=False)\""),
    (b"FEA1", 0, "a Feather v1 file",
     "convert it: pip install pyarrow, then "
     "python -c \"import pandas; pandas.read_feather('{path}').to_csv('data.csv', index=False)\""),
    (b"ORC", 0, "an Apache ORC file",
     "convert it: pip install pyarrow, then "
     "python -c \"import pandas; pandas.read_orc('{path}').to_csv('data.csv', index=False)\""),
    (b"Obj\x01", 0, "an Apache Avro file", "convert it to CSV (e.g. with fastavro or avro-tools tojson) and pass the CSV"),
    (b"SQLite format 3\x00", 0, "an SQLite database",
     "export its table{tables}: python -c \"import sqlite3, pandas; pandas.read_sql('SELECT * FROM {table}', "
     "sqlite3.connect('{path}')).to_csv('data.csv', index=False)\""),
    (b"\x89HDF\r\n\x1a\n", 0, "an HDF5 file",
     "convert it: pip install tables, then "
     "python -c \"import pandas; pandas.read_hdf('{path}').to_csv('data.csv', index=False)\""),
    (b"\x93NUMPY", 0, "a NumPy array file (.npy), which has no column names",
     "save it as a CSV with a header row (e.g. pandas.DataFrame(numpy.load('{path}'), columns=[...]).to_csv(...))"),
    (b"$FL2", 0, "an SPSS data file (.sav)",
     "convert it: pip install pyreadstat, then "
     "python -c \"import pandas; pandas.read_spss('{path}').to_csv('data.csv', index=False)\""),
    (b"$FL3", 0, "an SPSS data file (.sav)",
     "convert it: pip install pyreadstat, then "
     "python -c \"import pandas; pandas.read_spss('{path}').to_csv('data.csv', index=False)\""),
    (b"<stata_dta>", 0, "a Stata data file (.dta)",
     "convert it: python -c \"import pandas; pandas.read_stata('{path}').to_csv('data.csv', index=False)\""),
    (b"\xc2\xea\x81\x60\xb3\x14\x11\xcf\xbd\x92\x08\x00\x09\xc7\x31\x8c\x18\x1f\x10\x11", 12, "a SAS data file (.sas7bdat)",
     "convert it: python -c \"import pandas; pandas.read_sas('{path}').to_csv('data.csv', index=False)\""),
    (b"%PDF", 0, "a PDF document", "export the table from the program that made it as CSV and pass that file"),
    (b"{\\rtf", 0, "an RTF document", "export the table from the program that made it as CSV and pass that file"),
    (b"\x89PNG\r\n\x1a\n", 0, "a PNG image", "pass the CSV file of the data instead"),
    (b"\xff\xd8\xff", 0, "a JPEG image", "pass the CSV file of the data instead"),
    (b"GIF8", 0, "a GIF image", "pass the CSV file of the data instead"),
    (b"\x7fELF", 0, "an executable program (ELF)", "pass the CSV file of the data instead"),
    (b"\x28\xb5\x2f\xfd", 0, "a zstd-compressed file",
     "decompress it: pip install zstandard, then python -c \"import pandas; pandas.read_csv('{path}', "
     "compression='zstd').to_csv('data.csv', index=False)\""),
    (b"\x1f\x9d", 0, "a compress'd (.Z) file", "decompress it (uncompress or gunzip) and pass the CSV file"),
    (b"7z\xbc\xaf\x27\x1c", 0, "a 7-Zip archive", "extract it with an archive tool (7-Zip) and pass the CSV file inside"),
    (b"Rar!\x1a\x07", 0, "a RAR archive", "extract it with an archive tool that reads RAR and pass the CSV file inside"),
)
#: Python pickle: protocol 2 and up start with PROTO (0x80) and the protocol number.
_PICKLE = re.compile(rb"\x80[\x02-\x05]")

_BOMS: tuple[tuple[bytes, str, str], ...] = (  # longest first: UTF-32-LE's BOM starts with UTF-16-LE's
    (codecs.BOM_UTF32_LE, "utf-32", "UTF-32"),
    (codecs.BOM_UTF32_BE, "utf-32", "UTF-32"),
    (codecs.BOM_UTF8, "utf-8-sig", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16", "UTF-16"),
)


def _refuse(path: Path, what: str, fix: str, inside: str = "") -> DataError:
    return DataError(f"{path} is {what}{inside}, not a CSV file; {fix.format(path=path)}")


def _compression(head: bytes) -> Optional[str]:
    """pandas' name of the compression whose magic bytes start ``head``, if it is one pandas reads."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh") and head[4:10] == b"1AY&SY":
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    return None


_COMPRESSED_NAME = {"gzip": "gzip-compressed", "bz2": "bzip2-compressed", "xz": "xz-compressed", "zip": "in a zip archive"}
_ARCHIVE_NAME = {"gzip": "gzip", "bz2": "bzip2", "xz": "xz", "zip": "zip"}
#: What reading a damaged compressed file raises.
_DAMAGED = (OSError, EOFError, lzma.LZMAError, zipfile.BadZipFile, zlib.error)


def _damaged(path: Path, compression: Optional[str], exc: BaseException) -> DataError:
    return DataError(f"{path} is a damaged {_ARCHIVE_NAME.get(compression or '', 'compressed')} file ({exc}); "
                     "decompress it again from its source, or pass the CSV file itself")


def _is_file_entry(info: zipfile.ZipInfo) -> bool:
    """Whether a zip entry is a file: not a folder entry (``zip -r`` writes ``data/``) nor macOS's
    resource-fork copies (``__MACOSX/...``, ``._name``) that Finder's "Compress" adds."""
    name = info.filename
    return not (info.is_dir() or name.startswith("__MACOSX/") or name.rsplit("/", 1)[-1].startswith("._"))


def _zip_member(path: Path) -> str:
    """The one file of the zip archive ``path`` to read, or a :class:`DataError` naming what the archive is.

    Folder entries and macOS ``__MACOSX/`` entries are not files: a zip made with ``zip -r`` of a
    folder holding one CSV is that CSV."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [i.filename for i in archive.infolist() if _is_file_entry(i)]
            if "[Content_Types].xml" in names and any(n.startswith("xl/") for n in names):
                raise _refuse(path, "an Excel workbook (.xlsx)", "in Excel choose File > Save As > CSV UTF-8, or "
                              "pip install openpyxl, then python -c \"import pandas; pandas.read_excel('{path}')"
                              ".to_csv('data.csv', index=False)\"")
            if "mimetype" in names:
                kind = archive.read("mimetype")[:100].decode("ascii", "replace")
                if "opendocument.spreadsheet" in kind:
                    raise _refuse(path, "an OpenDocument spreadsheet (.ods)", "in LibreOffice choose File > Save As > "
                                  "Text CSV, or pip install odfpy, then python -c \"import pandas; pandas.read_excel("
                                  "'{path}', engine='odf').to_csv('data.csv', index=False)\"")
                raise _refuse(path, f"an OpenDocument file ({kind.strip()})", "export the table as CSV and pass that file")
            if "[Content_Types].xml" in names:
                raise _refuse(path, "an Office document (Word or PowerPoint)", "export the table as CSV and pass that file")
            if any(n.startswith("Index/") and n.endswith(".iwa") for n in names):
                raise _refuse(path, "an Apple Numbers document", "choose File > Export To > CSV and pass that file")
            if names and all(n.endswith(".npy") for n in names):
                raise _refuse(path, "a NumPy archive (.npz)", "save the table as a CSV with a header row and pass it")
    except zipfile.BadZipFile:
        raise DataError(f"{path} is a damaged zip archive; unzip it again or pass the CSV file itself") from None
    if len(names) != 1:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        what = "an empty zip archive" if not names else f"a zip archive of {len(names)} files ({shown})"
        raise DataError(f"{path} is {what}, not a CSV file; unzip it and pass the CSV file itself")
    return names[0]


def _head(path: Path, compression: Optional[str], member: Optional[str]) -> bytes:
    """The first :data:`HEAD_BYTES` of the file, decompressed."""
    with open_binary(path, compression, member) as fh:
        try:
            return fh.read(HEAD_BYTES)
        except _DAMAGED as exc:
            raise _damaged(path, compression, exc) from None


@contextmanager
def open_binary(path: Path, compression: Optional[str], member: Optional[str] = None) -> Iterator[IO[bytes]]:
    """The file's bytes, decompressed (``compression`` as in :class:`CsvFormat`)."""
    if compression == "zip":
        with zipfile.ZipFile(path) as archive, archive.open(member or archive.namelist()[0]) as fh:
            yield fh
        return
    opener = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}.get(compression or "", open)
    with opener(path, "rb") as fh:
        yield fh


def _utf16_32(head: bytes) -> Optional[tuple[str, str]]:
    """(codec, name) of UTF-16/UTF-32 text without a BOM, told by where its zero bytes are."""
    n = len(head) - len(head) % 4
    if n < 8:
        return None
    data = np.frombuffer(head[:n], dtype=np.uint8).reshape(-1, 4)
    zero = data == 0
    for codec, name, zeros, nonzero in (
        ("utf-32-le", "UTF-32", [1, 2, 3], [0]), ("utf-32-be", "UTF-32", [0, 1, 2], [3]),
        ("utf-16-le", "UTF-16", [1, 3], [0, 2]), ("utf-16-be", "UTF-16", [0, 2], [1, 3]),
    ):
        if zero[:, zeros].mean() > 0.95 and zero[:, nonzero].mean() < 0.05:
            return codec, name
    return None


def _decode(head: bytes, codec: str) -> Optional[str]:
    """``head`` decoded with ``codec``, allowing a character cut at the end; None if it is not that encoding."""
    try:
        return codecs.getincrementaldecoder(codec)("strict").decode(head, final=False)
    except UnicodeDecodeError:
        return None


def _is_text(text: str) -> bool:
    """Whether decoded text looks like text: almost no control characters besides tab, CR, LF, FF."""
    if not text:
        return True
    control = sum(1 for ch in text[:20000] if ch < " " and ch not in "\t\r\n\f")
    return control <= 0.01 * min(len(text), 20000) and "\x00" not in text


def _encoding(path: Path, head: bytes, inside: str) -> tuple[str, str, str]:
    """(pandas codec, encoding name, decoded head) of the text ``head``, else a DataError for a binary file."""
    for bom, codec, name in _BOMS:
        if head.startswith(bom):
            text = _decode(head, codec)
            if text is not None and _is_text(text):
                return codec, name, text.lstrip("\ufeff")
    wide = _utf16_32(head) if b"\x00" in head else None
    if wide:
        text = _decode(head, wide[0])
        if text is not None and _is_text(text):
            return wide[0], wide[1], text
    if b"\x00" not in head:
        for codec, name in (("utf-8", "UTF-8"), ("cp1252", "Windows-1252"), ("latin-1", "Latin-1")):
            text = _decode(head, codec)
            if text is not None and _is_text(text):
                return codec, name, text
    raise DataError(f"{path} is a binary file{inside} (not text in any common encoding), not a CSV file; "
                    "export the data from the program that made it as CSV (UTF-8) and pass that file")


def _text_format(path: Path, text: str, inside: str) -> None:
    """Refuse text that is a known non-CSV format (HTML, XML, JSON) with how to convert it."""
    start = text.lstrip().lower()[:2000]
    if start.startswith("<"):
        if "urn:schemas-microsoft-com:office:spreadsheet" in start:
            raise _refuse(path, "an Excel 2003 XML spreadsheet", "in Excel choose File > Save As > CSV UTF-8", inside)
        if "opendocument" in start and "office:document" in start:
            raise _refuse(path, "a flat OpenDocument spreadsheet (.fods)", "in LibreOffice choose File > Save As > "
                          "Text CSV", inside)
        if "<html" in start or start.startswith("<!doctype html") or "<table" in start:
            raise _refuse(path, "an HTML page (a web page saved by mistake?)", "download the raw CSV file instead", inside)
        raise _refuse(path, "an XML document", "convert it: python -c \"import pandas; pandas.read_xml('{path}', "
                      "parser='etree').to_csv('data.csv', index=False)\"", inside)
    if start[:1] in "{[":
        first = start.splitlines()[0] if start else ""
        lines = "JSON Lines (one JSON record per line)" if first.startswith("{") and first.rstrip().endswith("}") \
            and "\n{" in start else ""
        if lines or _looks_like_json(start):
            option = ", lines=True" if lines else ""
            raise _refuse(path, lines or "a JSON file", "convert it: python -c \"import pandas; pandas.read_json("
                          "'{path}'" + option + ").to_csv('data.csv', index=False)\"", inside)


def _looks_like_json(start: str) -> bool:
    """Whether text starting with '{' or '[' starts like a JSON object or array."""
    body = start[1:].lstrip()
    if start[:1] == "{":
        return body[:1] in ('"', "}")
    return body[:1] in ("{", "[", '"', "]") or bool(re.match(r"-?\d", body))


#: Excel's delimiter hint, the first line of some of its CSV exports: ``sep=;`` (possibly quoted).
_SEP_HINT = re.compile(r'"?sep=([,;\t|])"?[ \t]*(?:\r\n|\r|\n|$)', re.IGNORECASE)


def _header_line(path: Path, text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line
    raise DataError(f"{path} is empty; pass a CSV file with a header row and data rows")


def _delimiter(path: Path, header: str, expected: Iterable[str]) -> str:
    """The delimiter of ``header``: the one that splits it into the most ``expected`` names, else the one
    :class:`csv.Sniffer` (or, failing it, the most frequent one) picks; blanks only as a last resort."""
    expected = set(expected)
    scores = {d: len(expected & {clean_name(c) for c in _split(header, d)}) for d in (*_DELIMITERS, WHITESPACE)}
    best = max(scores, key=scores.get)
    if scores[best] > 0:
        return best
    try:
        return csv.Sniffer().sniff(header, delimiters="".join(_DELIMITERS)).delimiter
    except csv.Error:
        counts = {d: header.count(d) for d in _DELIMITERS}
        best = max(counts, key=counts.get)
        if counts[best] == 0:
            raise DataError(
                f"{path}: the first line has no ',', ';', tab or '|' delimiter, so this is not a CSV "
                "table; pass a CSV file with a header row"
            ) from None
        return best


def _split(line: str, delimiter: str) -> list[str]:
    if delimiter == WHITESPACE:
        return line.split()
    return next(csv.reader([line], delimiter=delimiter))


def sniff_csv(path: Path, expected_columns: Iterable[str] = ()) -> CsvFormat:
    """Decide how to read the CSV file ``path``, or say what it is instead.

    :param expected_columns: column names the caller looks for; they decide between delimiters.
    :returns: its :class:`CsvFormat`.
    :raises DataError: the path is missing, a folder, not a regular file or unreadable; the file is
        empty, damaged, an archive of several files, a spreadsheet, a columnar or database file,
        pickle, JSON, HTML/XML, an image, binary, or text without a delimiter. The message names
        what the file is and how to convert it to CSV.
    """
    path = Path(path)
    raw = _first_bytes(path)
    if raw.startswith(PARQUET_MAGIC):
        return _parquet_format(path)
    compression = _compression(raw)
    member = _zip_member(path) if compression == "zip" else None
    inside = f" ({_COMPRESSED_NAME[compression]})" if compression else ""
    head = _decompressed_head(path, compression, member, inside) if compression else raw
    _refuse_binary_formats(path, head, inside)
    encoding, _, text = _encoding(path, head, inside)
    _text_format(path, text, inside)
    hint = _SEP_HINT.match(text)
    if hint:  # Excel's delimiter hint: the first line is "sep=;" (the delimiter), then the header
        text = text[hint.end():]
    header = _header_line(path, text)
    delimiter = hint.group(1) if hint else _delimiter(path, header, expected_columns)
    columns = tuple(clean_name(c) for c in _split(header, delimiter))
    return CsvFormat(compression, encoding, delimiter, columns, member,
                     skip_lines=_blank_lines(text) + (1 if hint else 0))


def parquet_engine() -> Optional[str]:
    """The package pandas reads Parquet with here (``pyarrow`` or ``fastparquet``), or None."""
    import importlib.util

    return next((name for name in ("pyarrow", "fastparquet") if importlib.util.find_spec(name)), None)


def _parquet_format(path: Path) -> CsvFormat:
    """A Parquet file's :class:`CsvFormat` (its column names), or one line naming what to install or what is wrong."""
    if parquet_engine() is None:
        raise DataError(f"{path} is an Apache Parquet file, which pandas reads once pyarrow is installed: "
                        "pip install pyarrow (or pass the data as CSV)")
    return CsvFormat(PARQUET, "", ",", tuple(clean_name(str(c)) for c in _read_parquet(path).columns))


def _read_parquet(path: Path, columns: Optional[list[str]] = None) -> pd.DataFrame:
    try:
        return pd.read_parquet(path, columns=columns)
    except Exception as exc:  # pyarrow's and fastparquet's own errors: a damaged or unsupported file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path} is an Apache Parquet file that pandas cannot read ({first}); write it again, "
                        "or pass the data as CSV") from None


def _first_bytes(path: Path) -> bytes:
    """The first :data:`HEAD_BYTES` of the file as stored; DataError if it is missing, no file, unreadable or blank."""
    if not path.exists():
        raise DataError(f"data file not found: {path}; pass --data with the path of a CSV (or Parquet) file")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a file; pass --data with the path of a CSV (or Parquet) file")
    if not path.is_file():
        raise DataError(f"{path} is not a regular file (a pipe or device?); save the data to a CSV file "
                        "and pass its path with --data")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(HEAD_BYTES)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}; check the file's permissions") from None
    if not raw.strip():
        raise DataError(f"{path} is empty; pass a CSV file with a header row and data rows")
    return raw


def _decompressed_head(path: Path, compression: str, member: Optional[str], inside: str) -> bytes:
    """The first :data:`HEAD_BYTES` after decompression; DataError for a tar archive, a file compressed
    twice or an empty one."""
    head = _head(path, compression, member)
    if len(head) > 262 and head[257:262] == b"ustar":
        raise DataError(f"{path} is a tar archive{inside}, not a CSV file; extract it (tar xf) and pass the CSV "
                        "file inside")
    if _compression(head):
        raise DataError(f"{path} is compressed twice{inside}; decompress it and pass the CSV file")
    if not head.strip():
        raise DataError(f"{path} is empty{inside}; pass a CSV file with a header row and data rows")
    return head


def _refuse_binary_formats(path: Path, head: bytes, inside: str) -> None:
    """Refuse a file whose leading bytes are those of a known non-text format (:data:`_SIGNATURES`, Stata, pickle)."""
    for magic, offset, what, fix in _SIGNATURES:
        if head[offset:offset + len(magic)] == magic:
            tables = [] if inside or "{table}" not in fix else _sqlite_tables(path)
            fix = fix.replace("{tables}", f" (one of: {', '.join(tables)})" if len(tables) > 1 else "")
            raise _refuse(path, what, fix.replace("{table}", f"[{tables[0]}]" if tables else "<table>"), inside)
    if head[:1] in b"\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f\x70\x71\x72\x73" and head[1:2] in b"\x01\x02" \
            and head[2:3] == b"\x01":  # Stata formats 104-115: version, byte order, file type 1
        raise _refuse(path, "a Stata data file (.dta)", "convert it: python -c \"import pandas; pandas.read_stata("
                      "'{path}').to_csv('data.csv', index=False)\"", inside)
    if _PICKLE.match(head):
        raise _refuse(path, "a Python pickle", "convert it (only if you trust its source): python -c \"import "
                      "pandas; pandas.read_pickle('{path}').to_csv('data.csv', index=False)\"", inside)


def _sqlite_tables(path: Path) -> list[str]:
    """The tables of an SQLite database (for the export command a message suggests); [] when they cannot be listed."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)) as con:
            return [row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    except sqlite3.Error:
        return []


def _blank_lines(text: str) -> int:
    """Number of blank lines at the start of ``text``."""
    blank = 0
    for line in re.split(r"\r\n|\r|\n", text):
        if line.strip():
            break
        blank += 1
    return blank


# --------------------------------------------------------------------------- reading it


@contextmanager
def open_text(path: Path, fmt: CsvFormat) -> Iterator[io.TextIOWrapper]:
    """The file as text lines, decompressed and decoded, any line ending read as one (universal newlines)."""
    with open_binary(path, fmt.compression, fmt.member) as raw:
        yield io.TextIOWrapper(raw, encoding=fmt.encoding, errors="replace", newline=None)


def count_data_rows(path: Path, fmt: Optional[CsvFormat] = None) -> int:
    """Number of non-blank lines after the header (its data rows), read as a stream in any format
    :func:`sniff_csv` accepts (``fmt``: its result; sniffed when not given)."""
    path = Path(path)
    fmt = fmt or sniff_csv(path)
    if fmt.compression == PARQUET:
        return len(_read_parquet(path, columns=list(fmt.columns[:1])))
    try:
        with open_text(path, fmt) as fh:
            for _ in range(fmt.skip_lines):  # blank lines and Excel's "sep=;" line before the header
                fh.readline()
            for line in fh:
                if line.strip():  # the header: the first non-blank line, as pandas reads it
                    break
            return sum(1 for line in fh if line.strip())
    except _DAMAGED as exc:
        if not fmt.compression:
            raise DataError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}; check the file") from None
        raise _damaged(path, fmt.compression, exc) from None


#: The name given to a field after the header's last column (see :func:`read_csv_chunks`).
_AFTER_HEADER = "\x00after the header"


def read_csv_chunks(path: Path, fmt: CsvFormat, usecols: Iterable[str], chunksize: int) -> Iterator[pd.DataFrame]:
    """The columns ``usecols`` (clean names) of the CSV ``path``, ``chunksize`` rows at a time, as
    :func:`pandas.read_csv` reads it in the format ``fmt``; cells are still text or numbers.

    A data row may have one field more than the header when it is empty: the field after a
    trailing delimiter (``1,2,3,``), which is dropped. pandas would otherwise take the first field
    of every such row for a row index and shift every column by one; here the columns are named
    from the header (``index_col=False``: never a row index) plus one more, which must be empty.

    :raises DataError: pandas cannot parse the file as a table (its first error line is quoted), or
        a data row has a value after the header's last column.
    """
    if fmt.compression == PARQUET:
        frame = _read_parquet(path, columns=[c for c in fmt.columns if c in set(usecols)])
        yield from (frame.iloc[start:start + chunksize] for start in range(0, len(frame), chunksize))
        return
    wanted = set(usecols)
    # Every column gets a unique name (those not read a placeholder), plus one for a field after the
    # last; the header line itself is skipped. (pandas refuses ``usecols`` with more names than fields.)
    names = [c if c in wanted else f"\x00column {i}" for i, c in enumerate(fmt.columns, 1)] + [_AFTER_HEADER]
    keep = [n for n in names if n in wanted]
    rows = 0
    try:
        with ExitStack() as stack:
            source: object = path
            compression = fmt.compression
            if compression == "zip":  # the one file of the archive, whatever folder entries it has
                source = stack.enter_context(open_binary(path, compression, fmt.member))
                compression = None
            reader = stack.enter_context(pd.read_csv(
                source,
                sep=fmt.delimiter,
                header=None,
                names=names,
                dtype={_AFTER_HEADER: str},  # quoted as written in a message
                index_col=False,
                skiprows=fmt.skip_lines + 1,
                chunksize=chunksize,
                skipinitialspace=True,
                compression=compression,
                encoding=fmt.encoding,
                encoding_errors="replace",
                low_memory=False,
            ))
            for chunk in reader:
                _check_after_header(path, fmt, chunk[_AFTER_HEADER], rows)
                _check_overflow(path, fmt, chunk[keep], rows)
                rows += len(chunk)
                yield chunk[keep]
    except (pd.errors.ParserError, UnicodeError, ValueError, *_DAMAGED) as exc:
        if isinstance(exc, DataError):
            raise
        if fmt.compression and isinstance(exc, _DAMAGED):
            raise _damaged(path, fmt.compression, exc) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a well-formed CSV table ({first}); check the delimiter and quoting") from None


def _check_after_header(path: Path, fmt: CsvFormat, after: pd.Series, first_row: int) -> None:
    """Refuse a value in a field after the header's last column (an empty one, after a trailing delimiter, is fine)."""
    filled = after.notna() & (after.astype(str).str.strip() != "")
    if filled.any():
        pos = int(np.flatnonzero(filled.to_numpy())[0])
        delimiter = "blank" if fmt.delimiter == WHITESPACE else repr(fmt.delimiter)
        raise DataError(
            f"{path}: data row {first_row + pos + 1} has one value more than the header's {len(fmt.columns)} columns "
            f"({str(after.iloc[pos]).strip()!r} after the last {delimiter} delimiter); name that column in the header "
            "or remove the extra value (an empty field after a trailing delimiter at the end of each row is fine)"
        )


# --------------------------------------------------------------------------- cells as numbers


def is_number(text: str) -> bool:
    """Whether ``text`` is a number as Python's :class:`float` reads it."""
    try:
        float(text)
    except ValueError:
        return False
    return True


#: A number written with ',' between groups of three digits ("2,810", "-1,234,567.5").
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d*)?(?:[eE][-+]?\d+)?")
_DECIMAL_COMMA = re.compile(r"[-+]?\d*,\d+")


def _overflow(path: Path, col: str, text: str, row: int) -> DataError:
    digits = text.strip()
    shown = digits if len(digits) <= 20 else f"{digits[:12]}... ({len(digits)} digits)"
    return DataError(f"{path}: column {col} has a number too large for a float, {shown}, in data row {row}; "
                     "fix or remove that row (no census figure has that many digits)")


def _refuse_overflow(path: Path, col: str, values: pd.Series, first_row: int) -> None:
    """Raise naming the first cell of ``values`` that is a number too large for a float."""
    for pos, value in enumerate(values):
        try:
            float(value)
        except OverflowError:
            raise _overflow(path, col, str(value), first_row + pos + 1) from None
        except (TypeError, ValueError):
            continue
    raise DataError(f"{path}: column {col} has a number too large for a float; fix or remove that row")


#: A number written with digits (not "inf"): if pandas read it as infinite, it was too large for a float.
_FINITE_LITERAL = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _check_overflow(path: Path, fmt: CsvFormat, chunk: pd.DataFrame, first_row: int) -> None:
    """Refuse a cell pandas read as infinite although it is written as a number (``1e400``, 400 digits in a
    column of decimals): too large for a float, not an infinity the data meant. Only such rows are re-read."""
    infinite = {}
    for col in chunk.columns:
        if pd.api.types.is_float_dtype(chunk[col]):
            found = np.flatnonzero(np.isinf(chunk[col].to_numpy()))
            if len(found):
                infinite[col] = set((first_row + found + 1).tolist())
    if not infinite:
        return
    wanted = set().union(*infinite.values())
    last = max(wanted)
    with open_text(path, fmt) as fh:
        for _ in range(fmt.skip_lines + 1):  # the lines before the header, and the header
            fh.readline()
        row = 0
        for line in fh:
            if not line.strip():
                continue
            row += 1
            if row in wanted:
                fields = _split(line.rstrip("\r\n"), fmt.delimiter)
                for col, rows in infinite.items():
                    i = fmt.columns.index(col)
                    if row in rows and i < len(fields) and _FINITE_LITERAL.fullmatch(clean_name(fields[i])):
                        raise _overflow(path, col, clean_name(fields[i]), row)
            if row >= last:
                return


def to_numeric(path: Path, chunk: pd.DataFrame, first_row: int, delimiter: str = ",") -> pd.DataFrame:
    """Convert every column to float64; raise naming the first cell that is no number (1-based data row).

    Numbers with thousands separators (``"2,810"``: ',' between groups of three digits) are read
    as such, except in a ';'-separated file, where ',' is the decimal comma of the same locale.

    :param first_row: data rows before this chunk in the file.
    :raises DataError: a cell is not a number, is one written with a decimal comma, or is an integer
        too large for a float (hundreds of digits).
    """
    out = {}
    for col in chunk.columns:
        values = chunk[col]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            out[col] = values.astype("float64")
            continue
        try:
            numeric = pd.to_numeric(values, errors="coerce")
        except OverflowError:  # pandas keeps an integer too large for int64 as a Python int
            _refuse_overflow(path, col, values, first_row)
        text = values.astype(str).str.strip()
        bad = numeric.isna() & values.notna() & (text != "")
        if bad.any() and delimiter != ";":
            grouped = bad & text.str.fullmatch(_THOUSANDS.pattern)
            if grouped.any():
                numeric = numeric.where(~grouped, pd.to_numeric(text.where(grouped).str.replace(",", ""),
                                                                errors="coerce"))
                bad = bad & ~grouped
        if bad.any():
            pos = int(np.flatnonzero(bad.to_numpy())[0])
            value = str(values.iloc[pos]).strip()
            if _DECIMAL_COMMA.fullmatch(value):
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
