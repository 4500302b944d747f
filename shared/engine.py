"""The offline KQL engine: duckdb-kql behind one small adapter.

duckdb-kql is pre-alpha with one maintainer, so nothing else imports it: the Log Analytics stand-in and the
workbench go through `Engine`. It is never on the Function's runtime path. Where it cannot run a construct it
raises, and so do we (EngineError naming the construct) - never a wrong answer.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from shared.errors import KqlwatchError

_DUCK_TYPES = {
    "string": "VARCHAR",
    "datetime": "TIMESTAMPTZ",
    "long": "BIGINT",
    "int": "INTEGER",
    "real": "DOUBLE",
    "double": "DOUBLE",
    "bool": "BOOLEAN",
    "boolean": "BOOLEAN",
    "dynamic": "JSON",
    "guid": "VARCHAR",
    "timespan": "INTERVAL",
    "decimal": "DOUBLE",
}


class EngineError(KqlwatchError):
    """The offline engine cannot run this query (unsupported construct or invalid KQL)."""


@dataclass(frozen=True)
class EngineResult:
    columns: list[str]
    types: list[str]  # Kusto type names
    rows: list[tuple[Any, ...]]


class Engine:
    def __init__(self) -> None:
        import duckdb_kql

        self._con = duckdb_kql.connect()
        self._tmp = tempfile.TemporaryDirectory(prefix="kqlwatch-engine-")

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

    def load_jsonl(self, table: str, path: str, schema: Mapping[str, str]) -> None:
        columns = {name: _DUCK_TYPES.get(kind.lower(), "VARCHAR") for name, kind in schema.items()}
        spec = "{" + ", ".join(f"{_sql_str(c)}: {_sql_str(t)}" for c, t in columns.items()) + "}"
        select = ", ".join(
            f"coalesce({_ident(c)}, '') AS {_ident(c)}" if t == "VARCHAR" else _ident(c) for c, t in columns.items()
        )
        # Every name and path is quoted by _ident/_sql_str: this SQL carries no unquoted input.
        self._con.execute(f"DROP TABLE IF EXISTS {_ident(table)}")
        if os.path.getsize(path):
            sql = (
                f"CREATE TABLE {_ident(table)} AS SELECT {select} FROM read_json({_sql_str(path)}, "  # noqa: S608
                f"format='newline_delimited', columns={spec}, timestampformat='%Y-%m-%dT%H:%M:%S.%fZ')"
            )
        else:
            sql = f"CREATE TABLE {_ident(table)} ({', '.join(f'{_ident(c)} {t}' for c, t in columns.items())})"
        self._con.execute(sql)

    def query(self, kql: str, *, now: datetime | None = None) -> EngineResult:
        import duckdb
        import duckdb_kql
        from duckdb_kql.types import kusto_type

        try:
            relation = duckdb_kql.kql(self._con, kql, query_now=now)
            rows = relation.fetchall()
        except duckdb_kql.KqlUnsupportedError as exc:
            raise EngineError(f"the offline engine does not support this query: {_first(exc)}") from None
        except duckdb_kql.KqlError as exc:
            raise EngineError(f"invalid query: {_first(exc)}") from None
        except duckdb.Error as exc:
            raise EngineError(f"query failed in the offline engine: {_first(exc)}") from None
        return EngineResult(list(relation.columns), [kusto_type(t) for t in relation.types], rows)


def _first(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return str(value)


def _parse_time(text: str) -> datetime | None:
    if not text.strip():
        return None
    parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
