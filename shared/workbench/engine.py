"""The offline KQL engine: duckdb-kql behind one small adapter.

duckdb-kql is pre-alpha with one maintainer, so nothing else imports it: the Log Analytics stand-in and the
workbench go through `Engine`. It is never on the Function's runtime path. Where it cannot run a construct it
raises, and so do we (EngineError naming the construct) - never a wrong answer.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from shared.errors import KqlwatchError
from shared.rules.durations import parse_time
from shared.rules.kql import tokenize
from shared.workbench.loadsql import (
    _DUCK_TYPES,
    _ColumnPlan,
    _ident,
    _plan_columns,
    _sql_str,
    _unique,
    select_sql,
)
from shared.workbench.translation import SCHEMA_SQL, TranslationCache, kusto_types, run_cached


class EngineError(KqlwatchError):
    """The offline engine cannot run this query (unsupported construct or invalid KQL)."""


@dataclass(frozen=True)
class EngineResult:
    columns: list[str]
    types: list[str]  # Kusto type names
    rows: list[tuple[Any, ...]]


Plans = dict[tuple[str, str], tuple[str, dict[str, Any]]]  # (query template, tables' columns) -> SQL, bound


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
        self._lazy: dict[str, str] = {}  # view name -> the file it reads (load_file(lazy=True))

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
        `lazy` (a caller that runs one query, hunt) makes a Parquet file's table a view: no copy is made, the
        query reads only the columns and row groups it needs, and a value that does not fit its type fails the
        query that reads it, naming the file and column as the load would.
        """
        fmt = fmt or file_format(path)
        if fmt not in ("json", "csv", "parquet"):
            raise EngineError(f"{path}: unknown data format {fmt!r} (json, csv or parquet)")
        try:
            empty = os.path.getsize(path) == 0
        except OSError as exc:
            raise EngineError(f"cannot read {path}: {exc.strerror}") from None
        if empty:
            detected: dict[str, str] = {}
        elif schema is not None and fmt == "json" and not extra_columns and not ignore and not fill_from:
            detected = {c: "" for c in schema}  # rows we wrote ourselves: absent keys simply read as null
        else:
            detected = self._detect(path, fmt, full=schema is None)
        plan = _plan_columns(
            detected, schema, extra_columns=extra_columns, ignore=ignore, fill_from=fill_from, only=only
        )
        columns, sources = plan.columns, plan.sources
        if not columns:
            raise EngineError(f"{path}: no rows to infer {table}'s columns from, and no schema for it")
        self._create(table, path, fmt, plan, detected, lazy=lazy and fmt == "parquet" and not empty)
        count = self._con.execute(f"SELECT count(*) FROM {_ident(table)}").fetchone()  # noqa: S608
        return LoadedTable(
            name=table,
            rows=int(count[0]) if count else 0,
            columns=columns,
            inferred=plan.inferred,
            missing=tuple(c for c in columns if sources.get(c) is None),
            filled=plan.filled,
        )

    def _create(
        self, table: str, path: str, fmt: str, plan: _ColumnPlan, detected: Mapping[str, str], *, lazy: bool
    ) -> None:
        """The table (or with `lazy`, the view) `plan` describes, replacing one of the same name."""
        name = _ident(table)
        self._con.execute(
            f"DROP VIEW IF EXISTS {name}" if self._lazy.pop(table, None) else f"DROP TABLE IF EXISTS {name}"
        )
        columns, sources = plan.columns, plan.sources
        if not any(sources.values()):
            definition = ", ".join(f"{_ident(c)} {_DUCK_TYPES.get(k, 'VARCHAR')}" for c, k in columns.items())
            self._con.execute(f"CREATE TABLE {name} ({definition})")
            return
        failure = _load_failure(path, table)
        select = select_sql(path, fmt, columns, sources, detected, origin=failure if lazy else "")
        try:
            self._con.execute(f"CREATE {'VIEW' if lazy else 'TABLE'} {name} AS {select}")
        except Exception as exc:  # duckdb.Error, kept out of the module's imports
            raise EngineError(f"{failure}{_first(exc)}") from None
        if lazy:
            self._lazy[table] = path

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
        drop = "VIEW" if self._lazy.pop(table, None) else "TABLE"
        self._con.execute(f"DROP {drop} IF EXISTS {_ident(table)}")
        self._con.execute(f"CREATE TABLE {_ident(table)} ({definition})")

    def _detect(self, path: str, fmt: str, *, full: bool) -> dict[str, str]:
        """The file's columns and the DuckDB types DuckDB infers for them (the whole file when `full`)."""
        sample = ", sample_size=-1" if full else ""
        if fmt == "json":
            source = f"read_json({_sql_str(path)}, format='auto'{sample})"
        elif fmt == "parquet":
            source = f"read_parquet({_sql_str(path)})"
        else:
            source = f"read_csv({_sql_str(path)}, header=true{sample})"
        try:
            described = self._con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()  # noqa: S608
        except Exception as exc:
            raise EngineError(f"cannot read {path}: {_first(exc)}") from None
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
                relation = self._planned(kql, now)
                types = kusto_types(relation.types)
            else:
                relation, types = self._translated(kql, now)
            rows = relation.fetchall()
        except duckdb.Error as exc:
            raise EngineError(self._failure(exc)) from None
        return EngineResult(list(relation.columns), types, rows)

    def _failure(self, exc: Exception) -> str:
        """A failed query's message. A value a lazily loaded file cannot give its column's type fails only
        when a query reads it: the message then names the file and column as the load would have."""
        text = _first(exc)
        for table, path in self._lazy.items():
            marker = _load_failure(path, table)
            if marker in text:
                return text[text.index(marker) :]
        return f"query failed in the offline engine: {text}"

    def _translated(self, kql: str, now: datetime | None) -> tuple[Any, list[str]]:
        """The relation of `kql` and its Kusto column types, through the translation cache when there is one."""
        if self._translations is None:
            relation = _run_sql(self._con, *_translate(self._con, kql, now))
            return relation, kusto_types(relation.types)
        return run_cached(self._con, self._translations, kql, now, _translate)

    def _planned(self, kql: str, now: datetime) -> Any:
        values: list[str] = []

        def placeholder(match: re.Match[str]) -> str:
            values.append(match.group(1))
            return f"datetime({_SENTINEL_DAY}.{len(values):06d}Z)"

        template = _DATETIME_LITERAL.sub(placeholder, kql)
        # The SQL also depends on the tables' columns (joins, an `extend` of an existing column): part of the key.
        key = (template, repr(self._con.execute(SCHEMA_SQL).fetchall()))
        if key not in self._plans:
            sql, bound = _translate(self._con, template, now)
            sentinels = [f"'{_SENTINEL_DAY}.{n:06d}Z'" for n in range(1, len(values) + 1)]
            if not all(s in sql for s in sentinels):  # the translator rendered a literal otherwise: no reuse
                return _run_sql(self._con, *_translate(self._con, kql, now))
            self._plans[key] = (sql, bound)
        sql, bound = self._plans[key]
        for n, value in enumerate(values, start=1):
            sql = sql.replace(f"'{_SENTINEL_DAY}.{n:06d}Z'", f"'{value}'")
        if "kqlnow" in bound:
            bound = {**bound, "kqlnow": now.astimezone(timezone.utc).replace(tzinfo=None)}
        return _run_sql(self._con, sql, bound)


@dataclass(frozen=True)
class LoadedTable:
    name: str
    rows: int
    columns: dict[str, str]  # column -> Kusto type, in table order
    inferred: tuple[str, ...] = ()  # columns typed by inference (not in the schema)
    missing: tuple[str, ...] = ()  # schema columns the file does not have (empty / null)
    filled: dict[str, str] = field(default_factory=dict)  # column -> the file column it was filled from


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


# A datetime literal as the ingestion filter and windows write them: digits, T, :, ., Z, space, + and - only, so
# it can be put back inside an SQL string as it is.
_DATETIME_LITERAL = re.compile(r"\bdatetime\(\s*([0-9]{4}-[0-9]{2}-[0-9]{2}[0-9T:. Z+-]*?)\s*\)")
_SENTINEL_DAY = "1901-02-03T04:05:06"


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


# The hidden ingestion-time column behind ingestion_time(): the offline engine has no such function, so the
# Log Analytics stand-in and the backtest keep each row's ingestion time here and rewrite the call to it.
INGESTED = "_IngestedAt"


def with_ingestion_column(query: str) -> str:
    """ingestion_time() -> the hidden column (the offline engine has no such function)."""
    tokens = tokenize(query, comments=True)
    out, last = [], 0
    for i, tok in enumerate(tokens):
        if (
            tok.text == "ingestion_time"
            and i + 2 < len(tokens)
            and tokens[i + 1].text == "("
            and tokens[i + 2].text == ")"
        ):
            out.append(query[last : tok.start])
            out.append(INGESTED)
            last = tokens[i + 2].end
    out.append(query[last:])
    return "".join(out)
