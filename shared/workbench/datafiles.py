"""Local data for the workbench (`kqlwatch hunt`, `preview`, `test`): exported files and inline rows -> engine tables.

Files are read by DuckDB itself (`Engine.load_file`), never row by row in Python, so a million-row export loads
in seconds. A table with a schema in shared/schemas gets exactly the workspace's column types (missing strings
are "" as in Kusto); a table without one has its types inferred. Every other table with a schema exists, empty,
as it does in a workspace with the connector.
"""

from __future__ import annotations

import gzip
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from shared.errors import KqlwatchError

if TYPE_CHECKING:
    from shared.workbench.datacache import DataCache
    from shared.workbench.engine import Engine, LoadedTable


def file_format(path: str) -> str:
    from shared.workbench.engine import file_format as engine_format

    return engine_format(path)


_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Exports that add columns the table does not have: the az CLI adds TableName to every row.
_EXPORT_NOISE = ("TableName",)
# An Advanced Hunting export has Timestamp but no TimeGenerated; Sentinel's copy of the table has both, equal.
_FILL_FROM = {"TimeGenerated": "Timestamp"}


class DataError(KqlwatchError):
    """A data argument or file that cannot be used."""


@dataclass(frozen=True)
class DataSpec:
    table: str
    path: Path


@dataclass(frozen=True)
class Loaded:
    spec: DataSpec
    table: LoadedTable
    seconds: float
    notes: list[str] = field(default_factory=list)


def parse_data_arg(text: str) -> DataSpec:
    """`TABLE=FILE`, or just `FILE` when its name starts with the table's (`EmailEvents.jsonl`, `EmailEvents-1d.csv`)."""
    table, sep, path = text.partition("=")
    if sep and _TABLE_NAME.match(table.strip()):
        return DataSpec(table.strip(), Path(path.strip()))
    stem = re.match(r"[A-Za-z_][A-Za-z0-9_]*", Path(text).name)
    if stem is None:
        raise DataError(f"--data {text!r}: expected TABLE=FILE")
    return DataSpec(stem.group(), Path(text))


def load_files(
    engine: Engine,
    specs: Sequence[DataSpec],
    query: str | None = None,
    *,
    prune: bool = False,
    lazy: bool = False,
    cache: DataCache | None = None,
    late: bool = False,
) -> list[Loaded]:
    """Load each file into its table (one file per table); then create the other known tables `query` names,
    empty. With `prune`, only the columns `query` can read are loaded (all when unsure: querycolumns); with
    `lazy`, a Parquet file is read by the query itself (a view, see Engine.load_file); with `late`, a query
    that returns columns it does not name gets them for its returned rows only (latecolumns.py): all three
    only for a caller that runs exactly `query` afterwards, once. `cache`: typed copies of JSON-lines and CSV
    files (load_file)."""
    from shared.schemas import table_schema
    from shared.workbench.querycolumns import named_names, needed_names

    only = needed_names(query) if prune and query is not None else None
    named = named_names(query) if late and prune and query is not None and only is None else None
    seen: dict[str, Path] = {}
    loaded: list[Loaded] = []
    for spec in specs:
        if spec.table in seen:
            raise DataError(f"table {spec.table} is given twice ({seen[spec.table]}, {spec.path}): one file per table")
        seen[spec.table] = spec.path
        if not spec.path.is_file():
            raise DataError(f"{spec.path}: no such file")
        loaded.append(load_file(engine, spec, table_schema(spec.table), only, lazy=lazy, cache=cache, named=named))
    create_known_tables(engine, query, skip=seen)
    return loaded


def load_file(
    engine: Engine,
    spec: DataSpec,
    schema: Mapping[str, str] | None,
    only: frozenset[str] | None = None,
    *,
    lazy: bool = False,
    cache: DataCache | None = None,
    named: frozenset[str] | None = None,
) -> Loaded:
    """`spec`'s file into its table. With `cache` (hunt), a JSON-lines or CSV file is read from its typed copy.
    `named`: the columns a query that returns every column names; the others are read late (latecolumns.py)."""
    started = time.perf_counter()
    late = named is not None and _plain_lines(spec.path)
    options: dict[str, Any] = {
        "extra_columns": True,
        "ignore": [c for c in _EXPORT_NOISE if schema is None or c not in schema],
        "fill_from": {k: v for k, v in _FILL_FROM.items() if schema and k in schema and v in schema},
        "only": named if late else only,
    }
    entry = None
    if cache is not None and file_format(str(spec.path)) != "parquet":
        entry = cache.entry(spec.path, spec.table, {"schema": schema, **options, **({"late": 1} if late else {})})
        hit = cache.get(entry) if entry is not None else None
        if entry is not None and hit is not None:
            if hit.late is not None:  # the file's path as given now (the entry is keyed by the resolved path)
                late_columns = replace(hit.late, path=str(spec.path))
                hit = replace(hit, late=late_columns)
                engine.view_late(spec.table, str(entry.parquet), hit.columns, late_columns)
            else:
                engine.view_parquet(spec.table, str(entry.parquet))
            return _loaded(spec, schema, hit, started)
        if not cache.writable():
            entry = None
    table = _load(engine, spec, schema, options, lazy=lazy, copy_to=entry.parquet if entry else None, late=late)
    if cache is not None and entry is not None and entry.parquet.is_file():
        cache.put(entry, table)
    return _loaded(spec, schema, table, started)


def _load(
    engine: Engine,
    spec: DataSpec,
    schema: Mapping[str, str] | None,
    options: Mapping[str, Any],
    *,
    lazy: bool,
    copy_to: Path | None,
    late: bool = False,
) -> LoadedTable:
    from shared.workbench.engine import CacheWriteError, EngineError

    is_json = file_format(str(spec.path)) == "json"
    if late and is_json and _starts_array(spec.path):
        late, options = False, {**options, "only": None}  # a JSON array: its records are not lines
    if is_json and not late:
        # DuckDB reads a JSON-lines file with a `null` line as a row of nulls, and one with an array or string
        # line as no rows at all: silent wrong answers. One quick pass over the lines' first bytes finds them.
        _check_json_lines(engine, spec.path)
    try:
        try:
            table = engine.load_file(
                spec.table,
                str(spec.path),
                schema,
                lazy=lazy,
                copy_to=str(copy_to) if copy_to else None,
                late=late,
                **options,
            )
        except CacheWriteError:  # a full disk: load as without a cache
            table = engine.load_file(spec.table, str(spec.path), schema, lazy=lazy, late=late, **options)
    except EngineError:
        if is_json:
            _check_json_records(spec.path)  # names the line DuckDB's message does not
        raise
    if is_json and late and table.late is None:
        _check_json_lines(engine, spec.path)  # the late load fell back to a whole one: check it as one
    elif is_json and table.late is not None and table.late.empty_rows:
        _check_json_records(spec.path)  # a late load's check for a `null` line: its copy has an empty row
    if is_json and table.rows == 0 and spec.path.stat().st_size > 0:
        _check_json_records(spec.path)  # a JSON array of non-objects (only here: a good file is not re-read)
    return table


def _loaded(spec: DataSpec, schema: Mapping[str, str] | None, table: LoadedTable, started: float) -> Loaded:
    notes = []
    if schema is None:
        notes.append(f"{spec.table} has no schema in shared/schemas: column types inferred from the file")
    elif table.inferred:
        notes.append(f"columns not in the {spec.table} schema, types inferred: {', '.join(table.inferred)}")
    notes.extend(f"{target} is not in the file: filled from {source}" for target, source in table.filled.items())
    return Loaded(spec, table, time.perf_counter() - started, notes)


def _plain_lines(path: Path) -> bool:
    """An uncompressed JSON-lines or CSV file: its records can be found again by their lines."""
    name = path.name.lower()
    return file_format(str(path)) in ("json", "csv") and not name.endswith((".gz", ".zst"))


def _check_json_lines(engine: Engine, path: Path) -> None:
    """For JSON lines: every non-blank line must start with `{`; else DataError naming the line. A file that is
    one JSON array is checked element by element instead."""
    if _compressed_unreadable(path):
        return
    if not path.name.lower().endswith(".gz"):
        _scan_json_lines(engine, path)
        return
    try:
        with _open_binary(path) as handle:
            for number, line in enumerate(handle, start=1):
                first = line.lstrip()[:1]
                if number == 1 and first == b"[" and _check_json_array(engine, path):
                    return
                if first and first != b"{":
                    _check_json_records(path)  # the exact reason, with the line
                    raise DataError(f"{path}:{number}: a JSON line must be an object of column: value")
    except (OSError, EOFError) as exc:  # a truncated or corrupt .gz
        raise DataError(f"{path}: cannot read: {exc}") from None


# A `null` line: the one non-object line DuckDB reads silently (as a row of nulls). DuckDB refuses the others
# itself, naming the line (read_json with records='true'), so a plain file needs only a search for it (the
# bytes of `null`, at C speed: a regex anchored at each line start cost a second more per GB).
_LINE_BLANKS = b" \t\r"


def _scan_json_lines(engine: Engine, path: Path) -> None:
    """The check of `_check_json_lines` for an uncompressed file, without a Python loop over its lines: a JSON
    array is checked by DuckDB; the file is searched for `null` at C speed, 16 MiB at a time (memory stays
    flat; a mapped file would count its whole size in the process's RSS), each hit checked for being a whole
    line; one sends the file to the line-by-line check, which names it."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4096)
            start = re.search(rb"\S", head)
            if start and start.group() == b"[" and _check_json_array(engine, path):
                return
            found = _has_null_line(head, handle)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if found:
        _check_json_records(path)


def _has_null_line(head: bytes, handle: IO[bytes]) -> bool:
    """True when a line of the file (`head`, then the rest of `handle`) is `null`, blanks around it allowed.
    Each block's whole lines are searched in place; only the line a block boundary cuts is put together (a
    copy of every block would double the time)."""
    tail, chunk = b"", head  # tail: the current line's bytes before this block
    while chunk:
        first = chunk.find(b"\n")
        if first < 0:
            tail += chunk  # the block is inside one line
        else:
            if (tail + chunk[:first]).strip(_LINE_BLANKS) == b"null":
                return True
            last = chunk.rfind(b"\n")
            if _null_line_in(chunk, first + 1, last + 1):
                return True
            tail = chunk[last + 1 :]
        chunk = handle.read(1 << 24)
    return tail.strip(_LINE_BLANKS) == b"null"


def _null_line_in(block: bytes, start: int, limit: int) -> bool:
    """Whether one of the whole lines in block[start:limit] (`start` begins a line) is `null`. Each hit decides
    its line, so the search goes on from the next: a `"X":null` in every record costs two searches a line."""
    at = block.find(b"null", start, limit)
    while at >= 0:
        end = block.find(b"\n", at, limit)
        end = limit if end < 0 else end
        if block[at - 1] in b"\n \t\r" if at else True:  # else something precedes it on its line
            begin = block.rfind(b"\n", 0, at) + 1
            if block[begin:end].strip(_LINE_BLANKS) == b"null":
                return True
        at = block.find(b"null", end, limit)
    return False


def _check_json_array(engine: Engine, path: Path) -> bool:
    """Every element of a JSON array file must be an object (DuckDB reads it; no Python pass over a big file).
    False when the file is not one JSON array."""
    from shared.workbench.engine import EngineError

    try:
        found = engine.first_non_object(str(path), array=True)
    except EngineError:
        return False
    if found:
        number, kind = found
        raise DataError(f"{path}: element {number} of the JSON array is {kind.lower()}, not an object of column: value")
    return True


def _compressed_unreadable(path: Path) -> bool:
    """zstd files are decompressed by DuckDB only (no zstd module here): they are not pre-checked."""
    return path.name.lower().endswith(".zst")


def _open_binary(path: Path) -> IO[bytes] | gzip.GzipFile:
    try:
        if path.name.lower().endswith(".gz"):
            return gzip.open(path, "rb")
        return path.open("rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _check_json_records(path: Path) -> None:
    """Raise DataError naming `path:line` for the first JSON record that is not an object."""
    if _compressed_unreadable(path):
        return
    if _starts_array(path):
        try:
            records = json.loads(_read_text(path))
        except ValueError as exc:
            raise DataError(f"{path}: not valid JSON: {exc}") from None
        for index, record in enumerate(records if isinstance(records, list) else [records]):
            if not isinstance(record, dict):
                raise DataError(
                    f"{path}: element {index} of the JSON array is {_json_kind(record)}, not an object of column: value"
                )
        return
    try:  # line by line: a 1 GB export is not read into memory whole
        with _open_binary(path) as handle:
            for number, raw in enumerate(handle, start=1):
                _check_json_line(path, number, raw.decode("utf-8", errors="replace"))
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None


def _check_json_line(path: Path, number: int, line: str) -> None:
    if not line.strip():
        return
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise DataError(f"{path}:{number}: not valid JSON: {exc.args[0] if exc.args else exc}") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}:{number}: a JSON line must be an object of column: value, not {_json_kind(record)}")


def _starts_array(path: Path) -> bool:
    try:
        with _open_binary(path) as handle:
            head = handle.read(4096)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    return head.lstrip()[:1] == b"["


def _read_text(path: Path) -> str:
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.lower().endswith(".gz") else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    return raw.decode("utf-8", errors="replace")


def _json_kind(value: Any) -> str:
    kinds = {
        list: "an array",
        str: "a string",
        bool: "a boolean",
        type(None): "null",
        int: "a number",
        float: "a number",
    }
    return kinds.get(type(value), type(value).__name__)


def load_rows(
    engine: Engine, table: str, rows: Iterable[Mapping[str, Any]], directory: Path, *, strict: bool = True
) -> LoadedTable:
    """Inline rows (a rule's test case) -> `table`, through the same loader as files. With `strict`, a column the
    table's schema does not have is an error: a misspelt column would otherwise leave the real one empty and
    make a "no alert" case pass for the wrong reason."""
    from shared.schemas import table_schema

    schema = table_schema(table)
    rows = list(rows)
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise DataError(f"{table}[{index}] is not a mapping of column: value")
        unknown = sorted(str(c) for c in row if schema is not None and c not in schema)
        if unknown and strict:
            raise DataError(f"{table}[{index}]: {table} has no column {', '.join(map(repr, unknown))}")
    if schema is None and not rows:
        raise DataError(f"{table} has no schema in shared/schemas: give at least one row so its columns are known")
    path = directory / f"{table}.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps({str(k): v for k, v in row.items()}, default=_json_value, ensure_ascii=False))
            out.write("\n")
    return engine.load_file(table, str(path), schema, fmt="json", extra_columns=not strict)


def create_known_tables(engine: Engine, query: str | None = None, skip: Iterable[str] = ()) -> None:
    """Every table with a schema that the data did not fill, empty (only those `query` names, when given)."""
    from shared.rules.kql import KqlLexError, tokenize
    from shared.schemas import known_tables, table_schema

    skipped = set(skip)
    names: set[str] | None = None
    if query is not None:
        try:
            names = {t.text for t in tokenize(query) if t.kind == "ident"}
        except KqlLexError:
            names = None
    for name in known_tables():
        schema = table_schema(name)
        if name not in skipped and schema and (names is None or name in names):
            engine.create_table(name, schema)


def _json_value(value: Any) -> Any:
    """YAML gives datetimes and dates for unquoted timestamps: write them as ISO text (UTC when naive)."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return aware.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (dtime, timedelta)):
        return str(value)
    return str(value)
