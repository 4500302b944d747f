"""`kqlwatch backtest --workspace`: the period's rows of the rule's source tables, read from the workspace.

Read-only and bounded: one query per source table per day (the period plus the rule's look-back), each over a
one-day timespan, with the rows' ingestion times, through the real LogsQueryClient (its retries and time
limits). A day over the service's result limit is an error naming the table and the day (export that day
and use --data), never a silently shorter day.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.errors import KqlwatchError

if TYPE_CHECKING:
    from shared.rules.loader import Rule
    from shared.workbench.backtest.replay import Period
    from shared.workbench.engine import Engine


class WorkspaceError(KqlwatchError):
    """A day of a source table the workspace would not give whole."""


def source_tables(query: str) -> list[str]:
    """The tables the query reads: known ones (shared/schemas) and custom logs (`*_CL`)."""
    from shared.rules.kql import tokenize
    from shared.schemas import known_tables

    known = set(known_tables())
    names = [t.text for t in tokenize(query) if t.kind == "ident"]
    return list(dict.fromkeys(n for n in names if n in known or n.endswith("_CL")))


def days(start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
    day = start
    while day < end:
        yield day, min(day + timedelta(days=1), end)
        day += timedelta(days=1)


def fetch(engine: Engine, rule: Rule, query: str, period: Period) -> dict[str, str]:
    """Load each source table's rows from `period.start - look-back` to `period.end` into the engine, with
    the hidden ingestion-time column the replay reads. Returns table -> where its rows came from."""
    from shared.runtime.loganalytics import LogsClient, make_credential
    from shared.runtime.settings import DEFAULT_MAX_LATENESS, load_workspace_settings
    from shared.schemas import table_schema
    from shared.workbench.engine import INGESTED

    settings = load_workspace_settings()
    client = LogsClient(settings.logs_endpoint, make_credential(settings.access_token))
    reach = period.start - rule.query_period - DEFAULT_MAX_LATENESS
    loaded: dict[str, str] = {}
    try:
        for table in source_tables(query):
            rows: list[dict[str, Any]] = []
            types: dict[str, str] = {}
            for low, high in days(reach, period.end):
                kql = f"{table}\n| where TimeGenerated >= datetime({low.isoformat()}) and TimeGenerated < datetime({high.isoformat()})\n| extend {INGESTED} = ingestion_time()"
                result = client.query(settings.workspace_id, kql, low, high)
                if result.partial_error is not None:
                    raise WorkspaceError(
                        f"--workspace: {table} on {low:%Y-%m-%d} came back partial ({result.partial_error}): "
                        "export that day and backtest with --data"
                    )
                types.update(result.types)
                rows.extend(result.rows)
            schema = dict(table_schema(table) or {}) or {c: t for c, t in types.items() if c != INGESTED}
            schema[INGESTED] = "datetime"
            engine.load_rows(table, rows, schema)
            loaded[table] = f"workspace {settings.workspace_id} ({table}: {len(rows):,} rows)"
    finally:
        client.close()
    return loaded
