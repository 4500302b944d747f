"""Where in a data file the first value that does not fit its column is: `line 12: column X: cannot read "v" as
int`. hunt reads JSON lines, CSV and Parquet through a view (no copy), so such a value fails the query that reads
it, with DuckDB's message naming the column but not the row; this re-scan runs only then (an error path: a few
seconds over a million rows is fine) and names the record in file order, then its line.

DuckDB numbers the records it reads (WITH ORDINALITY) but skips blank lines and reads a quoted CSV value over
several lines as one record, so the record's line is counted here, from the file itself.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from shared.workbench.loadsql import _ident, header_delimiter, misfit_checks, reader_sql


@dataclass(frozen=True)
class Found:
    record: int  # 1-based, in file order, as DuckDB reads them (blank lines not counted)
    column: str
    kind: str
    text: str


def first_misfit(
    con: Any,
    path: str,
    fmt: str,
    columns: Mapping[str, str],
    sources: Mapping[str, str | None],
    detected: Mapping[str, str],
    options: Mapping[str, str] | None = None,
) -> Found | None:
    """The first record of `path` with a value that does not fit its column, or None (none, or the file cannot
    be re-read: the caller keeps DuckDB's own message)."""
    checks = misfit_checks(columns, sources, detected, fmt)
    if not checks:
        return None
    flags = ", ".join(f"({c.bad}) AS {_ident(f'bad{i}')}" for i, c in enumerate(checks))
    texts = ", ".join(f"{c.text} AS {_ident(f'text{i}')}" for i, c in enumerate(checks))
    where = " OR ".join(f"({c.bad})" for c in checks)
    sql = (
        f"SELECT ordinality, {flags}, {texts} FROM {reader_sql(path, fmt, columns, sources, options)} WITH ORDINALITY "  # noqa: S608 - quoted
        f"WHERE {where} ORDER BY ordinality LIMIT 1"
    )
    try:
        row = con.execute(sql).fetchone()
    except Exception:  # duckdb.Error: the file is unreadable in another way, which the caller reports
        return None
    if row is None:
        return None
    count = len(checks)
    for index, check in enumerate(checks):
        if row[1 + index]:
            return Found(int(row[0]), check.column, check.kind, str(row[1 + count + index]))
    return None


def describe(found: Found, path: str, fmt: str, place: str | None = None) -> str:
    """`line N: column C: cannot read "v" as kind` (`row N` of a Parquet file, `element N` of a JSON array,
    `record N` when the line cannot be told; `place` when the caller knows it)."""
    at = place or where(found.record, path, fmt)
    return f'{at}: column {found.column}: cannot read "{found.text[:80]}" as {found.kind}'


def where(record: int, path: str, fmt: str) -> str:
    if fmt == "parquet":
        return f"row {record}"
    try:
        line = _csv_line(Path(path), record) if fmt == "csv" else _json_line(Path(path), record)
    except (OSError, EOFError, UnicodeError, csv.Error):
        line = None
    if isinstance(line, str):
        return line
    return f"line {line}" if line is not None else f"record {record}"


def _json_line(path: Path, record: int) -> int | str | None:
    """The line of the `record`-th record of a JSON-lines file (DuckDB skips blank lines), or the element of a
    JSON array; None when the file's lines are not one record each (a pretty-printed file)."""
    with open_data(path) as handle:
        number = seen = 0
        for line in handle:
            number += 1
            text = line.strip()
            if not text:
                continue
            if seen == 0 and text.startswith(b"["):
                return f"element {record - 1} of the JSON array"
            seen += 1
            if seen == record:
                return number if _one_record(text) else None
    return None


def _one_record(text: bytes) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _csv_line(path: Path, record: int) -> int | None:
    """The line the `record`-th data row of a CSV file starts on (the header is line 1; blank lines are
    skipped, as DuckDB does; a quoted value may span lines)."""
    with open_data(path) as raw, io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="") as text:
        reader = csv.reader(text)
        seen, start = -1, 1  # the header is not a record
        for row in reader:
            if row:
                seen += 1
                if seen == record:
                    return start
            start = reader.line_num + 1
    return None


def csv_shape(path: str) -> str | None:
    """`line N: 30 fields, the header has 29` for the first CSV row that does not have the header's number of
    fields (an unbalanced quote makes one row of many lines), or None. DuckDB's own message counts records, not
    lines ("CSV Error on Line: 21770" for line 22001 of a file with quoted line breaks)."""
    delimiter = csv_delimiter(Path(path)) or ("\t" if path.lower().removesuffix(".gz").endswith(".tsv") else ",")
    try:
        with (
            open_data(Path(path)) as raw,
            io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="") as text,
        ):
            reader = csv.reader(text, delimiter=delimiter)
            header = next(reader, [])
            start = reader.line_num + 1
            for row in reader:
                if row and len(row) != len(header):
                    return f"line {start}: {len(row)} fields, the header has {len(header)}"
                start = reader.line_num + 1
    except (OSError, EOFError, csv.Error):
        return None
    return None


def csv_delimiter(path: Path) -> str | None:
    """The delimiter of a CSV file's header line (loadsql.header_delimiter), or None when it has none or cannot
    be read: the one the engine's loads and this re-scan both split the file by."""
    try:
        with open_data(path) as handle:
            return header_delimiter(handle.readline(1 << 20))
    except (OSError, EOFError):
        return None


def open_data(path: Path) -> IO[bytes] | gzip.GzipFile:
    """A data file's bytes, decompressed from `.gz` (a `.zst` raises OSError: only DuckDB reads zstd)."""
    if path.name.lower().endswith(".zst"):
        raise OSError("zstd is read by DuckDB only")
    if path.name.lower().endswith(".gz"):
        return gzip.GzipFile(path, "rb")
    return path.open("rb")
