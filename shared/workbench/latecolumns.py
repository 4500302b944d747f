"""Late columns: `hunt` of a query that returns columns it never names (a bare `EmailEvents | where ...` returns all
29) types only the columns the query names, in every row, and reads the others from the file for the rows the
query returns only.

Parsing and typing 29 columns of a million-row JSON-lines export is most of a first hunt, and DuckDB's JSON and CSV
readers push no filter down: a view over the file would parse every column of every row. So the query runs over a
view of the named columns (their typed Parquet copy: the data cache's, or the engine's own) in which every other
column is an empty placeholder of its type, plus the record's number in the file (`__kqlwatch_row_<table>`). Then
the returned rows' lines are read back (records.py), typed by the same conversion as a load (loadsql.py), and put
in the placeholders' places; the number column is dropped.

Why the answer is the same: the query cannot look at a column it does not name (querycolumns.named_names refuses
every construct that could: `*`, pack_all(), project-away, a join, ...), so the rows, their order and the named
values are those of the whole table, and the placeholders travel unchanged with their row. A result that has a
placeholder but not its row's number (an operator that rebuilds rows) cannot be filled: the engine says so
(LateColumnsLost) and hunt loads the file whole. A value that does not fit its column fails the hunt when it is in
a column the query names (every row is typed) or in a returned row, naming its line; one that only passes through
a row the query drops cannot change the answer and is not read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.workbench.loadsql import _DUCK_TYPES, _ident, _sql_str, select_sql
from shared.workbench.records import Lines, lines_at

ROW_PREFIX = "__kqlwatch_row_"


class LateFailure(Exception):
    """The late columns of `late`'s returned rows cannot be read: `reason` (naming the line when it can)."""

    def __init__(self, late: Late, reason: str) -> None:
        super().__init__(reason)
        self.late = late
        self.reason = reason


@dataclass(frozen=True)
class Late:
    """Table `table`'s columns read late, from `path`: their kinds, the file's columns they come from, what
    DuckDB detected of the file, where its lines are (record N is on line N, after a CSV file's header), the
    reader's options (a CSV file's dialect as sniffed), and how many rows of the copy are empty in every named
    column (a JSON `null` line reads as one: datafiles checks the file then)."""

    table: str
    path: str
    fmt: str
    columns: dict[str, str]
    sources: dict[str, str | None]
    detected: dict[str, str]
    lines: Lines
    options: dict[str, str] = field(default_factory=dict)
    empty_rows: int = 0

    @property
    def row(self) -> str:
        return ROW_PREFIX + self.table

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "path": self.path,
            "fmt": self.fmt,
            "columns": list(self.columns.items()),
            "sources": list(self.sources.items()),
            "detected": list(self.detected.items()),
            "lines": self.lines.to_json(),
            "options": list(self.options.items()),
            "empty_rows": self.empty_rows,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Late:
        """Raises KeyError, TypeError or ValueError for an entry of another shape (datacache: a miss)."""
        return cls(
            table=str(data["table"]),
            path=str(data["path"]),
            fmt=str(data["fmt"]),
            columns={str(k): str(v) for k, v in data["columns"]},
            sources={str(k): None if v is None else str(v) for k, v in data["sources"]},
            detected={str(k): str(v) for k, v in data["detected"]},
            lines=Lines.from_json(data["lines"]),
            options={str(k): str(v) for k, v in data["options"]},
            empty_rows=int(data["empty_rows"]),
        )


def view_sql(name: str, parquet: str, columns: Mapping[str, str], late: Late) -> str:
    """The table `name` over the typed copy of its named columns: every column of `columns` in order, the late
    ones empty placeholders, then the record's number (the copy keeps the file's order)."""
    select = ", ".join(
        f"CAST(NULL AS {_DUCK_TYPES.get(kind, 'VARCHAR')}) AS {_ident(c)}" if c in late.columns else _ident(c)
        for c, kind in columns.items()
    )
    return (
        f"CREATE VIEW {_ident(name)} AS SELECT {select}, file_row_number AS {_ident(late.row)} "  # noqa: S608
        f"FROM read_parquet({_sql_str(parquet)}, file_row_number=true)"
    )


def fill(
    con: Any, directory: str, columns: list[str], types: list[str], rows: list[tuple[Any, ...]], lates: Iterable[Late]
) -> tuple[list[str], list[str], list[tuple[Any, ...]]] | None:
    """The result with each late table's placeholders filled from its file and its number column dropped, or
    None when a placeholder is in the result without its row's number."""
    for late in lates:
        if late.row not in columns:
            if any(c in late.columns for c in columns):
                return None
            continue
        at = columns.index(late.row)
        values = _read(con, directory, late, {row[at] for row in rows if row[at] is not None})
        places = [(columns.index(c), j) for j, c in enumerate(late.columns) if c in columns]
        filled: list[tuple[Any, ...]] = []
        for row in rows:
            cells = list(row)
            got = values.get(row[at]) if row[at] is not None else None
            for i, j in places:
                cells[i] = got[j] if got is not None else None
            del cells[at]
            filled.append(tuple(cells))
        rows = filled
        columns, types = columns[:at] + columns[at + 1 :], types[:at] + types[at + 1 :]
    return columns, types, rows


def _read(con: Any, directory: str, late: Late, wanted: set[int]) -> dict[int, tuple[Any, ...]]:
    """Record number -> its late columns' values, typed, for each of `wanted`."""
    if not wanted:
        return {}
    first = 1 if late.fmt == "csv" else 0  # a CSV file's line 0 is its header
    order = sorted(wanted)
    try:
        lines = lines_at(Path(late.path), late.lines, [r + first for r in order] + ([0] if first else []))
    except OSError as exc:
        raise LateFailure(late, f"cannot read it again: {exc.strerror or exc}") from None
    except ValueError:  # a line break missing where the index has one
        raise LateFailure(late, "it changed after it was loaded") from None
    if len(lines) != len(order) + first:
        raise LateFailure(late, "it is shorter than when it was loaded")
    temp = os.path.join(directory, f"late-{late.table}.{'csv' if late.fmt == 'csv' else 'jsonl'}")
    with open(temp, "wb") as out:
        out.write(b"".join(lines[n] + b"\n" for n in ([0] if first else []) + [r + first for r in order]))
    sql = select_sql(temp, late.fmt, late.columns, late.sources, late.detected, options=late.options)
    try:
        got = con.execute(sql).fetchall()
    except Exception as exc:  # duckdb.Error, kept out of the module's imports
        raise LateFailure(late, _misfit(con, temp, late, [r + first + 1 for r in order]) or _first(exc)) from None
    if len(got) != len(order):
        raise LateFailure(late, f"{len(order)} records read back as {len(got)}")
    return dict(zip(order, got, strict=True))


def _misfit(con: Any, temp: str, late: Late, numbers: Sequence[int]) -> str | None:
    """`line N: column C: cannot read ...` for the first value of the read-back rows that does not fit: N is the
    line in the data file (`numbers`: the line of each read-back record)."""
    from shared.workbench.misfit import describe, first_misfit

    found = first_misfit(con, temp, late.fmt, late.columns, late.sources, late.detected, late.options)
    if found is None or not 0 < found.record <= len(numbers):
        return None
    return describe(found, temp, late.fmt, place=f"line {numbers[found.record - 1]}")


def _first(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]
