"""The offline KQL engine: duckdb-kql behind one small adapter.

duckdb-kql is pre-alpha with one maintainer, so nothing else imports it: the Log Analytics stand-in and the
workbench go through `Engine`. It is never on the Function's runtime path. Where it cannot run a construct it
raises, and so do we (EngineError naming the construct) - never a wrong answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Collection, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from shared.errors import KqlwatchError
from shared.rules.durations import parse_time
from shared.workbench.ingested import INGESTED as INGESTED  # re-exported: callers import them from here
from shared.workbench.ingested import with_ingestion_column as with_ingestion_column
from shared.workbench.latecolumns import Late, LateFailure, fill, view_sql
from shared.workbench.loadsql import (
    _DUCK_TYPES,
    _ColumnPlan,
    _ident,
    _plan_columns,
    _sql_str,
    _unique,
    select_sql,
)
from shared.workbench.plans import Plans as Plans  # re-exported: the Log Analytics stand-in shares them
from shared.workbench.plans import planned
from shared.workbench.records import Lines, index
from shared.workbench.translation import TranslationCache, kusto_types, run_cached


class EngineError(KqlwatchError):
    """The offline engine cannot run this query (unsupported construct or invalid KQL)."""


class CacheWriteError(EngineError):
    """A typed copy for the data cache could not be written (disk full, folder gone): load without it."""


class LateColumnsLost(EngineError):
    """The query's result holds a column read late without its row's number (latecolumns.py): load whole."""


@dataclass(frozen=True)
class EngineResult:
    columns: list[str]
    types: list[str]  # Kusto type names
    rows: list[tuple[Any, ...]]


class Engine:
    def __init__(self, translations: TranslationCache | None = None, plans: Plans | None = None) -> None:
        """`translations`: keep each query's SQL on disk (hunt, preview); the translator is then imported only
        for a query not translated before. `plans`: the translations query(reuse_plan=True) keeps, shared with
        other engines when given (the Log Analytics stand-in answers each query from a fresh engine: a rule's
        runs differ only in their times)."""
        import duckdb

        # No progress bar: DuckDB prints it on stdout during a statement over 2 s (a million-row load), in the
        # middle of `hunt --format jsonl` output. TimeZone UTC as duckdb_kql.connect(): KQL datetimes are UTC.
        self._con = duckdb.connect(":memory:")
        self._con.execute("SET enable_progress_bar = false")
        self._con.execute("SET enable_progress_bar_print = false")
        self._con.execute("SET TimeZone='UTC'")
        self._tmp = tempfile.TemporaryDirectory(prefix="kqlwatch-engine-")
        self._plans: Plans = {} if plans is None else plans
        self._translations = translations
        self._lazy: dict[str, _Source | None] = {}  # view -> the file it converts (None: typed already)
        self._late: dict[str, Late] = {}  # view -> its columns read late

    def close(self) -> None:
        self._con.close()
        self._tmp.cleanup()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def load_rows(self, table: str, rows: Iterable[Mapping[str, Any]], schema: Mapping[str, str]) -> int:
        """Create `table` from dict rows typed by `schema`; missing strings become "" as in Kusto."""
        path = os.path.join(self._tmp.name, f"{table}.jsonl")
        times = [c for c, t in schema.items() if t == "datetime"]
        count = 0
        with open(path, "w", encoding="utf-8") as out:
            for row in rows:
                for column in times:
                    if isinstance(row.get(column), str):
                        row = {**row, column: _parse_time(row[column])}
                out.write(json.dumps(row, default=_json_default, ensure_ascii=False))
                out.write("\n")
                count += 1
        self.load_jsonl(table, path, schema)
        return count

    def load_jsonl(
        self, table: str, path: str, schema: Mapping[str, str] | None = None, *, extra_columns: bool = False
    ) -> LoadedTable:
        """Create `table` from a JSON Lines file (or a JSON array of objects). See `load_file`."""
        return self.load_file(table, path, schema, fmt="json", extra_columns=extra_columns)

    def load_csv(
        self, table: str, path: str, schema: Mapping[str, str] | None = None, *, extra_columns: bool = False
    ) -> LoadedTable:
        """Create `table` from a CSV file with a header row (Log Analytics / Advanced Hunting export). See `load_file`."""
        return self.load_file(table, path, schema, fmt="csv", extra_columns=extra_columns)

    def load_file(
        self,
        table: str,
        path: str,
        schema: Mapping[str, str] | None = None,
        *,
        fmt: str | None = None,
        extra_columns: bool = True,
        ignore: Collection[str] = (),
        fill_from: Mapping[str, str] | None = None,
        only: frozenset[str] | None = None,
        lazy: bool = False,
        copy_to: str | None = None,
        late: bool = False,
    ) -> LoadedTable:
        """Create `table` from a JSON Lines / JSON array / CSV / Parquet file, read and typed by DuckDB itself (no row passes
        through Python, so a million rows load in seconds).

        With a schema (column -> Kusto type) the table has exactly its columns, typed: missing strings are ""
        as in Kusto, other missing values null; datetimes are read with or without fractions (7 digits are cut
        to microseconds), with `Z`, an offset or none (UTC), as plain dates, or as the Logs blade's CSV
        `11/20/2026, 8:15:02.123 AM`; CSV text and az CLI text ("3", "True", "None") become the column's type;
        dynamic values may be JSON or JSON text. A value that does not fit its type fails the load, naming the
        column. `extra_columns` keeps file columns the schema lacks, typed as DuckDB infers them. Without a
        schema every column is inferred from the whole file. A ` [UTC]` suffix on a column name is dropped (the
        Logs blade's CSV header); `ignore` names file columns to leave out; `fill_from` fills a column absent
        from the file from another (TimeGenerated from Timestamp in an Advanced Hunting export). `only`
        (case-folded names) loads just those columns: the ones a query can read (querycolumns.needed_names).
        `lazy` (hunt: one query) makes a Parquet file's table a view: no copy, the query reads only the columns
        and row groups it needs, and a value that does not fit fails the query that reads it, naming the file,
        the row (misfit.py) and the column. `copy_to` (JSON lines, CSV: datacache.py) writes the typed table
        to that Parquet file, the table a view over it; CacheWriteError when it cannot be written. `late` (hunt, a
        file of lines) loads only the `only` columns and reads the others for the rows a query returns
        (latecolumns.py); when its records are not one a line, every column is loaded.
        """
        fmt = fmt or file_format(path)
        if late and fmt != "parquet":
            # The lines are counted (Python) while DuckDB detects the columns and copies the named ones.
            with ThreadPoolExecutor(1) as pool:
                counting = pool.submit(index, Path(path))
                empty, detected, unseen = self._file_columns(path, fmt, schema, ours=False, fill_from=fill_from)
                plan = _plan_columns(detected, schema, extra_columns=extra_columns, ignore=ignore, fill_from=fill_from)
                narrow = _plan_columns(
                    detected, schema, extra_columns=extra_columns, ignore=ignore, fill_from=fill_from, only=only
                )
                if not empty and narrow.columns != plan.columns and any(narrow.sources.values()):
                    loaded = self._load_late(table, path, fmt, narrow, plan, detected, copy_to, counting, unseen)
                    if loaded is not None:
                        return loaded
        else:
            ours = not (extra_columns or ignore or fill_from)
            empty, detected, unseen = self._file_columns(path, fmt, schema, ours=ours, fill_from=fill_from)
            plan = _plan_columns(
                detected, schema, extra_columns=extra_columns, ignore=ignore, fill_from=fill_from, only=only
            )
        columns, sources = plan.columns, plan.sources
        if not columns:
            raise EngineError(f"{path}: no rows to infer {table}'s columns from, and no schema for it")
        self._drop(table)
        if copy_to is not None and fmt != "parquet" and any(plan.sources.values()):
            self._copy(table, path, fmt, plan, detected, copy_to)
        else:
            self._create(table, path, fmt, plan, detected, lazy=lazy and fmt == "parquet" and not empty)
        rows, empties = self._emptiness(_ident(table), [c for c in unseen if c in columns])
        return LoadedTable(
            name=table,
            rows=rows,
            columns=columns,
            inferred=plan.inferred,
            missing=tuple(c for c in columns if sources.get(c) is None or c in empties),
            filled=plan.filled,
        )

    def _emptiness(self, source: str, columns: Collection[str]) -> tuple[int, set[str]]:
        """The rows of `source` (a quoted table or table function), and which of `columns` are null or "" in
        all of them."""
        counts = "".join(
            f", count(*) FILTER (WHERE {_ident(c)} IS NOT NULL AND CAST({_ident(c)} AS VARCHAR) <> '')" for c in columns
        )
        found = self._con.execute(f"SELECT count(*){counts} FROM {source}").fetchall()[0]  # noqa: S608 - quoted
        return int(found[0]), {c for c, n in zip(columns, found[1:], strict=True) if not n}

    def _file_columns(
        self,
        path: str,
        fmt: str,
        schema: Mapping[str, str] | None,
        *,
        ours: bool,
        fill_from: Mapping[str, str] | None = None,
    ) -> tuple[bool, dict[str, str], tuple[str, ...]]:
        """Whether the file is empty, its columns with the types DuckDB detects (`ours`: rows we wrote), and
        the schema's columns read from a JSON file though its sample lacks them."""
        if fmt not in ("json", "csv", "parquet"):
            raise EngineError(f"{path}: unknown data format {fmt!r} (json, csv or parquet)")
        try:
            if os.path.getsize(path) == 0:
                return True, {}, ()
        except OSError as exc:
            raise EngineError(f"cannot read {path}: {exc.strerror}") from None
        if schema is not None and fmt == "json" and ours:
            return False, {c: "" for c in schema}, ()  # rows we wrote ourselves: absent keys simply read as null
        found = self._detect(path, fmt, full=schema is None)
        if schema is None or fmt != "json":
            return False, found, ()
        # DuckDB names the keys of the records it samples (20,480): a key first used after them would read as
        # absent, its values lost. So every schema column is read by name; whether one the sample lacks is in
        # the file at all is told after the load (a missing column gets a warning). A column filled from
        # another (TimeGenerated from Timestamp) is not, when its source is there.
        seen = {raw.casefold() for raw in found}
        fills = {t for t, source in (fill_from or {}).items() if source in found}
        unseen = tuple(c for c in _unique(schema) if c.casefold() not in seen and c not in fills)
        return False, {**found, **dict.fromkeys(unseen, "")}, unseen

    def _create(
        self, table: str, path: str, fmt: str, plan: _ColumnPlan, detected: Mapping[str, str], *, lazy: bool
    ) -> None:
        """The table (or with `lazy`, the view) `plan` describes."""
        name = _ident(table)
        columns, sources = plan.columns, plan.sources
        if not any(sources.values()):
            definition = ", ".join(f"{_ident(c)} {_DUCK_TYPES.get(k, 'VARCHAR')}" for c, k in columns.items())
            self._con.execute(f"CREATE TABLE {name} ({definition})")
            return
        failure = _load_failure(path, table)
        source = _Source(path, fmt, plan, detected)
        origin = failure if lazy else ""
        select = select_sql(path, fmt, columns, sources, detected, origin=origin, options=self._csv_options(path, fmt))
        try:
            self._con.execute(f"CREATE {'VIEW' if lazy else 'TABLE'} {name} AS {select}")
        except Exception as exc:  # duckdb.Error, kept out of the module's imports
            raise EngineError(f"{failure}{self._misfit(source) or _first(exc)}") from None
        if lazy:
            self._lazy[table] = source

    def _drop(self, table: str) -> None:
        self._late.pop(table, None)
        kind = "VIEW" if self._lazy.pop(table, False) is not False else "TABLE"
        self._con.execute(f"DROP {kind} IF EXISTS {_ident(table)}")

    def _load_late(
        self,
        table: str,
        path: str,
        fmt: str,
        plan: _ColumnPlan,
        whole: _ColumnPlan,
        detected: Mapping[str, str],
        copy_to: str | None,
        counting: Future[Lines],
        unseen: Collection[str] = (),
    ) -> LoadedTable | None:
        """`plan`'s columns copied typed, the rest of `whole`'s read late (latecolumns.py). None when the
        copy's records are not the file's lines one for one (blank lines, a JSON file not one object a line,
        a CSV value over several lines) or the copy cannot be written where it would not be kept."""
        options = self._dialect(path) if fmt == "csv" else {"format": "newline_delimited"}
        if options is None:
            return None
        target = copy_to or os.path.join(self._tmp.name, f"late-{table}.parquet")
        try:
            self._write_copy(table, path, fmt, plan, detected, target, options)
        except CacheWriteError:
            if copy_to is not None:
                raise
            return None
        except EngineError:
            return None  # loaded whole, which names what is wrong, if anything
        try:
            lines = counting.result()
        except OSError:
            return None
        copy = f"read_parquet({_sql_str(target)})"
        real = [c for c in plan.columns if plan.sources.get(c) is not None]
        empty = " AND ".join(f"coalesce(CAST({_ident(c)} AS VARCHAR), '') = ''" for c in real)
        rows, empty_rows = self._con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE {empty}) FROM {copy}"  # noqa: S608 - quoted
        ).fetchall()[0]
        empties = self._emptiness(copy, [c for c in unseen if c in plan.columns])[1]
        if rows != lines.count - lines.blank_tail - (fmt == "csv"):
            with contextlib.suppress(OSError):
                os.unlink(target)
            return None
        columns = {c: k for c, k in whole.columns.items() if c not in plan.columns}
        sources = {c: whole.sources.get(c) for c in columns}
        late = Late(table, path, fmt, columns, sources, dict(detected), lines, options, int(empty_rows))
        self.view_late(table, target, whole.columns, late)
        return LoadedTable(
            name=table,
            rows=int(rows),
            columns=whole.columns,
            inferred=whole.inferred,
            missing=tuple(c for c in whole.columns if whole.sources.get(c) is None or c in empties),
            filled=whole.filled,
            late=late,
        )

    def view_late(self, table: str, parquet: str, columns: Mapping[str, str], late: Late) -> None:
        """`table` as a view over the typed copy of its named columns, the others read late (latecolumns.py)."""
        self._drop(table)
        self._con.execute(view_sql(table, parquet, columns, late))
        self._lazy[table] = None
        self._late[table] = late

    def _dialect(self, path: str) -> dict[str, str] | None:
        """A CSV file's delimiter, quote and escape as DuckDB sniffs them, or None when its first line is not
        the header (rows skipped before it)."""
        delimiter = "".join(f", delim={_sql_str(d)}" for d in self._csv_options(path, "csv").values())
        try:
            found = self._con.execute(
                f"SELECT Delimiter, Quote, Escape, SkipRows, HasHeader FROM sniff_csv({_sql_str(path)}{delimiter})"  # noqa: S608
            ).fetchone()
        except Exception:  # duckdb.Error: the load says what is wrong with the file
            return None
        if found is None or found[3] or not found[4]:
            return None
        return {k: "" if v == "(empty)" else str(v) for k, v in zip(("delim", "quote", "escape"), found, strict=False)}

    def _csv_options(self, path: str, fmt: str) -> dict[str, str]:
        """read_csv's delimiter, from the file's header line (misfit.csv_delimiter); none for other formats, or
        when the header has none or cannot be read (DuckDB then sniffs it, and says what is wrong)."""
        from shared.workbench.misfit import csv_delimiter

        found = csv_delimiter(Path(path)) if fmt == "csv" else None
        return {"delim": found} if found else {}

    def _copy(
        self, table: str, path: str, fmt: str, plan: _ColumnPlan, detected: Mapping[str, str], target: str
    ) -> None:
        """The typed table written to the Parquet file `target`, then a view over it."""
        self._write_copy(table, path, fmt, plan, detected, target)
        self.view_parquet(table, target)

    def _write_copy(
        self,
        table: str,
        path: str,
        fmt: str,
        plan: _ColumnPlan,
        detected: Mapping[str, str],
        target: str,
        options: Mapping[str, str] | None = None,
    ) -> None:
        """The typed table written to the Parquet file `target` (via a temporary file beside it, renamed: a
        concurrent hunt or a crash never leaves half a file). `options`: the reader's (loadsql.reader_sql)."""
        temp = f"{target}.{os.getpid()}.tmp"
        given = {**self._csv_options(path, fmt), **(options or {})}
        select = select_sql(path, fmt, plan.columns, plan.sources, detected, options=given)
        try:
            self._con.execute(f"COPY ({select}) TO {_sql_str(temp)} (FORMAT PARQUET)")
            os.replace(temp, target)
        except Exception as exc:  # duckdb.Error or OSError, kept out of the module's imports
            with contextlib.suppress(OSError):
                os.unlink(temp)
            if isinstance(exc, OSError | _duckdb_io_error()):  # the cache's disk (or the file: the load says)
                raise CacheWriteError(f"cannot write {target}: {_first(exc)}") from None
            misfit = self._misfit(_Source(path, fmt, plan, detected))
            raise EngineError(f"{_load_failure(path, table)}{misfit or _first(exc)}") from None

    def view_parquet(self, table: str, path: str) -> None:
        """`table` as a view over a Parquet file of exactly its columns and types (datacache's copy)."""
        self._drop(table)
        self._con.execute(f"CREATE VIEW {_ident(table)} AS SELECT * FROM read_parquet({_sql_str(path)})")  # noqa: S608
        self._lazy[table] = None

    def first_non_object(self, path: str, *, array: bool) -> tuple[int, str] | None:
        """(1-based record number, JSON type) of the first record of a JSON file that is not an object, if any.
        load_file reads a `null` record as a row of nulls, and a file of non-objects as no rows: callers check."""
        fmt = "array" if array else "newline_delimited"
        sql = (
            f"SELECT n, t FROM (SELECT row_number() OVER () AS n, json_type(json) AS t "  # noqa: S608 - quoted
            f"FROM read_json_objects({_sql_str(path)}, format='{fmt}')) WHERE t IS DISTINCT FROM 'OBJECT' LIMIT 1"
        )
        try:
            found = self._con.execute(sql).fetchone()
        except Exception as exc:  # duckdb.Error: not JSON at all
            raise EngineError(f"cannot read {path}: {_first(exc)}") from None
        return (int(found[0]), str(found[1])) if found else None

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        """Run SQL on the engine's database (the backtest's views over its source tables). Callers quote
        every name and value they put in `statement`."""
        try:
            return self._con.execute(statement).fetchall()
        except Exception as exc:  # duckdb.Error
            raise EngineError(f"the offline engine failed: {_first(exc)}") from None

    def columns(self, table: str) -> list[str]:
        return [str(row[0]) for row in self.sql(f"DESCRIBE {_ident(table)}")]

    def create_table(self, table: str, schema: Mapping[str, str]) -> None:
        """An empty table with these columns (a table a workspace has but the data files do not fill)."""
        definition = ", ".join(f"{_ident(c)} {_DUCK_TYPES.get(k, 'VARCHAR')}" for c, k in _unique(schema).items())
        self._drop(table)
        self._con.execute(f"CREATE TABLE {_ident(table)} ({definition})")

    def _detect(self, path: str, fmt: str, *, full: bool) -> dict[str, str]:
        """The file's columns and the DuckDB types DuckDB infers for them (the whole file when `full`)."""
        sample = ", sample_size=-1" if full else ""
        if fmt == "json":
            source = f"read_json({_sql_str(path)}, format='auto'{sample})"
        elif fmt == "parquet":
            source = f"read_parquet({_sql_str(path)})"
        else:
            delimiter = "".join(f", delim={_sql_str(d)}" for d in self._csv_options(path, fmt).values())
            source = f"read_csv({_sql_str(path)}, header=true{sample}{delimiter})"
        try:
            described = self._con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()  # noqa: S608
        except Exception as exc:
            from shared.workbench.misfit import csv_shape

            shape = csv_shape(path) if fmt == "csv" else None  # the row DuckDB could not lay out, by its line
            raise EngineError(f"cannot read {path}: {shape or _first(exc)}") from None
        found = {str(row[0]): str(row[1]) for row in described}
        if fmt == "json" and found == {"json": "JSON"}:
            return {}  # not objects, or no rows at all (`[]`)
        return found

    def query(self, kql: str, *, now: datetime | None = None, reuse_plan: bool = False) -> EngineResult:
        """Run `kql`. With `reuse_plan` (a backtest's thousands of runs of one query whose datetime literals
        move each run), its translation to SQL is kept, keyed by the query with those literals taken out:
        translating (parsing KQL in Python) costs ~0.2 s, running it over a day of mail a few ms."""
        import duckdb

        try:
            if reuse_plan and now is not None:
                relation = planned(self._con, self._plans, kql, now, _translate)
                types = kusto_types(relation.types)
            else:
                relation, types = self._translated(kql, now)
            rows = relation.fetchall()
        except duckdb.Error as exc:
            raise EngineError(self._failure(exc)) from None
        columns = list(relation.columns)
        if self._late:
            return self._filled(columns, types, rows)
        return EngineResult(columns, types, rows)

    def _filled(self, columns: list[str], types: list[str], rows: list[tuple[Any, ...]]) -> EngineResult:
        """The result with the columns read late put in (latecolumns.fill)."""
        try:
            filled = fill(self._con, self._tmp.name, columns, types, rows, self._late.values())
        except LateFailure as exc:
            raise EngineError(f"{_load_failure(exc.late.path, exc.late.table)}{exc.reason}") from None
        if filled is None:
            raise LateColumnsLost("the result has columns read late without their rows' numbers")
        return EngineResult(*filled)

    def _failure(self, exc: Exception) -> str:
        """A failed query's message. A value a lazily loaded file cannot give its column's type fails only
        when a query reads it: the message then names the file and column as the load would have."""
        text = _first(exc)
        for table, source in self._lazy.items():
            marker = _load_failure(source.path, table) if source else ""
            if source and marker in text:
                return marker + (self._misfit(source) or text[text.index(marker) + len(marker) :])
        return f"query failed in the offline engine: {text}"

    def _misfit(self, source: _Source) -> str | None:
        """`line N: column C: cannot read ...` for the file's first value that does not fit, else a CSV's first
        row of the wrong width (a re-scan: only after a load or query failed), or None."""
        from shared.workbench.misfit import csv_shape, describe, first_misfit

        plan, options = source.plan, self._csv_options(source.path, source.fmt)
        found = first_misfit(self._con, source.path, source.fmt, plan.columns, plan.sources, source.detected, options)
        if found is None:
            return csv_shape(source.path) if source.fmt == "csv" else None
        return describe(found, source.path, source.fmt)

    def _translated(self, kql: str, now: datetime | None) -> tuple[Any, list[str]]:
        """The relation of `kql` and its Kusto column types, through the translation cache when there is one."""
        if self._translations is None:
            relation = _run_sql(self._con, *_translate(self._con, kql, now))
            return relation, kusto_types(relation.types)
        return run_cached(self._con, self._translations, kql, now, _translate)


@dataclass(frozen=True)
class LoadedTable:
    name: str
    rows: int
    columns: dict[str, str]  # column -> Kusto type, in table order
    inferred: tuple[str, ...] = ()  # columns typed by inference (not in the schema)
    missing: tuple[str, ...] = ()  # schema columns the file does not have (empty / null)
    filled: dict[str, str] = field(default_factory=dict)  # column -> the file column it was filled from
    late: Late | None = None  # the columns read for the returned rows only (latecolumns.py)


@dataclass(frozen=True)
class _Source:
    """A lazily read file (a view): what the re-scan for a value that does not fit needs."""

    path: str
    fmt: str
    plan: _ColumnPlan
    detected: Mapping[str, str]


def file_format(path: str) -> str:
    """json, csv or parquet, from the file name (`.gz` / `.zst` compression is read transparently)."""
    name = path.lower()
    if name.endswith(".parquet"):
        return "parquet"
    for suffix in (".gz", ".zst"):
        name = name.removesuffix(suffix)
    if name.endswith((".csv", ".tsv")):
        return "csv"
    if name.endswith((".json", ".jsonl", ".ndjson")):
        return "json"
    raise EngineError(f"{path}: cannot tell the format from the name (use .jsonl, .json, .csv or .parquet)")


def _translate(con: Any, kql: str, now: datetime | None) -> tuple[str, dict[str, Any]]:
    """duckdb_kql's SQL for `kql` and the values it binds (its step before running con.sql)."""
    import duckdb_kql
    from duckdb_kql.engine import _prepare

    try:
        return _prepare(con, kql, None, query_now=now)
    except duckdb_kql.KqlUnsupportedError as exc:
        raise EngineError(f"the offline engine does not support this query: {_first(exc)}") from None
    except duckdb_kql.KqlError as exc:
        raise EngineError(f"invalid query: {_first(exc)}") from None


def _duckdb_io_error() -> type[Exception]:
    import duckdb  # not at import time: --help imports no engine

    return duckdb.IOException


def _load_failure(path: str, table: str) -> str:
    return f"cannot load {path} as {table}: "


def _run_sql(con: Any, sql: str, bound: Mapping[str, Any]) -> Any:
    return con.sql(sql, params=dict(bound)) if bound else con.sql(sql)


def _first(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return str(value)


def _parse_time(text: str) -> datetime | None:
    if not text.strip():
        return None
    return parse_time(text)
