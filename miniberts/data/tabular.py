"""The one reader for tabular input files: CSV, TSV and JSON lines (task files, predict inputs, GLUE splits).

Every defect a user's file can have becomes one `DataError` line, `file:line: what was expected`, at the line where
the defect starts:
- encodings: UTF-8 only (a UTF-8 BOM is dropped, as Excel writes one); UTF-16 (with or without its BOM) is named as
  such, since "invalid UTF-8 at byte 1" would send the user looking in the wrong place; other bad bytes name the line;
- CSV quoting: a quoted field may span lines (RFC 4180), so an unclosed quote swallows the rest of the file; the
  error names the line where the quote opened, not the line where the reader gave up;
- fields larger than the csv module's 128 KiB default limit are allowed (up to the file's own size);
- ragged rows, blank-only files, duplicate column names, JSON lines that are not objects.

TSVs are read without quote processing (GLUE text holds unbalanced quotes; HF `datasets` reads it so too).
Lines are decoded one by one from bytes, so every error knows its physical line.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

SUFFIXES = (".csv", ".tsv", ".jsonl")
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
UTF8_BOM = b"\xef\xbb\xbf"


def check_input_file(path: Path, what: str = "") -> Path:
    """An existing regular file, or one line saying what it is instead."""
    path = Path(path)
    label = f"{what} file" if what else "file"
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a {label}")
    if not path.is_file():
        raise DataError(f"{path}: {label} not found")
    return path


def looks_utf16(head: bytes) -> bool:
    """UTF-16 text of mostly ASCII characters has a NUL in every other byte; UTF-8 text has none."""
    if head.startswith(UTF16_BOMS):
        return True
    sample = head[:2048]
    return len(sample) >= 4 and sample.count(0) >= len(sample) // 4


def decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text with its line ending) for every physical line of a UTF-8 file; errors name the line."""
    with open(check_input_file(path), "rb") as f:
        head = f.read(4096)
        if looks_utf16(head):
            raise DataError(f"{path}: UTF-16 is not supported; save the file as UTF-8")
        f.seek(len(UTF8_BOM) if head.startswith(UTF8_BOM) else 0)
        for number, raw in enumerate(f, 1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{number}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column "
                                f"{e.start + 1}); save the file as UTF-8") from None


def _allow_large_fields(path: Path) -> None:
    # No field can be longer than the file; raising the limit to that size keeps a safety bound and never lowers it.
    size = path.stat().st_size
    if csv.field_size_limit() < size:
        csv.field_size_limit(size)


def delimited_rows(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line where the row starts, fields) for every non-blank row of a CSV (standard quoting) or TSV (none)."""
    path = Path(path)
    _allow_large_fields(check_input_file(path))
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    # One decoded physical line per item, so reader.line_num counts the file's lines.
    reader = csv.reader((line for _, line in decoded_lines(path)), delimiter=delimiter, quoting=quoting,
                        strict=quoting != csv.QUOTE_NONE)
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            if "end of data" in str(e):
                raise DataError(f"{path}:{start}: unclosed quote: the quoted field opened on this line runs to the "
                                "end of the file") from None
            if "new-line character" in str(e):
                raise DataError(f"{path}:{reader.line_num}: a carriage return (\\r) inside an unquoted field; save "
                                "the file with \\n or \\r\\n line endings") from None
            raise DataError(f"{path}:{start}: malformed CSV quoting ({e})") from None
        if fields:
            yield start, fields


def _jsonl_objects(path: Path) -> Iterator[tuple[int, dict]]:
    for number, text in decoded_lines(path):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{number}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, found {_json_type(record)}")
        yield number, record


def _json_type(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def require_columns(path: Path, found: list[str], wanted: list[str]) -> None:
    missing = [c for c in wanted if c not in found]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(map(repr, missing))}; "
                        f"found {', '.join(map(repr, found))}")


@dataclass
class Table:
    """A file's column names and its rows as {column: value} with the line each row starts on.

    CSV/TSV values are strings; JSONL values are whatever JSON holds (`text` and `label` check them)."""

    path: Path
    columns: list[str]
    rows: list[tuple[int, dict]]

    def require(self, columns: list[str]) -> None:
        require_columns(self.path, self.columns, columns)

    def text(self, line: int, row: dict, column: str) -> str:
        """A text value: a non-blank string (JSON numbers or lists are not silently turned into text)."""
        value = row.get(column)
        if value is None:
            raise DataError(f"{self.path}:{line}: missing value for {column!r}")
        if not isinstance(value, str):
            raise DataError(f"{self.path}:{line}: column {column!r} must be text, found {_json_type(value)}")
        if not value.strip():  # a blank text is not an example: refused, never trained on as ""
            raise DataError(f"{self.path}:{line}: empty text in column {column!r}")
        return value

    def label(self, line: int, row: dict, column: str) -> str:
        """A label as the string a CSV of the same data would hold (JSON true -> "true", 3 -> "3")."""
        value = row.get(column)
        if value is None:
            raise DataError(f"{self.path}:{line}: missing value for {column!r}")
        if isinstance(value, (dict, list)):
            raise DataError(f"{self.path}:{line}: column {column!r} must be a label (text or a number), "
                            f"found {_json_type(value)}")
        text = label_text(value)
        if text == "":
            raise DataError(f"{self.path}:{line}: empty label")
        return text


def label_text(value) -> str:
    # JSON booleans and numbers become the strings a CSV of the same data would hold.
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def read_table(path: str | Path) -> Table:
    """A .csv, .tsv or .jsonl file with a header (or the keys of its first object) naming the columns."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'!r}; expected .csv, .tsv or .jsonl")
    if suffix == ".jsonl":
        rows = list(_jsonl_objects(path))
        if not rows:
            raise DataError(f"{path}: no examples (expected one JSON object per line)")
        return Table(path, list(rows[0][1]), rows)
    rows_iter = delimited_rows(path, "\t" if suffix == ".tsv" else ",")
    first = next(rows_iter, None)
    if first is None:
        raise DataError(f"{path}: empty file (no header, no examples)")
    _, header = first
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:
        raise DataError(f"{path}:{first[0]}: duplicate column name(s) {', '.join(map(repr, duplicates))} in the header")
    rows = []
    for line, fields in rows_iter:
        if len(fields) != len(header):
            hint = "; a quoted field here spans lines: is a quote unclosed?" if any("\n" in f for f in fields) else ""
            raise DataError(f"{path}:{line}: expected {len(header)} fields, found {len(fields)}{hint}")
        rows.append((line, dict(zip(header, fields))))
    return Table(path, header, rows)


def table_columns(path: str | Path) -> list[str]:
    """The column names of a table file (reading it whole, so a broken file fails here with its line)."""
    return read_table(path).columns
