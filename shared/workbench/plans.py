"""Engine.query(reuse_plan=True): one translation per query shape, for a backtest's thousands of runs of one
query whose datetime literals move each run (translating costs ~0.2 s, running over a day of mail a few ms)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from shared.workbench.translation import SCHEMA_SQL, Translate

Plans = dict[tuple[str, str], tuple[str, dict[str, Any]]]  # (query template, tables' columns) -> SQL, bound

# A datetime literal as the ingestion filter and windows write them: digits, T, :, ., Z, space, + and - only, so
# it can be put back inside an SQL string as it is.
_DATETIME_LITERAL = re.compile(r"\bdatetime\(\s*([0-9]{4}-[0-9]{2}-[0-9]{2}[0-9T:. Z+-]*?)\s*\)")
_SENTINEL_DAY = "1901-02-03T04:05:06"


def planned(con: Any, plans: Plans, kql: str, now: datetime, translate: Translate) -> Any:
    """The relation of `kql` from the SQL kept in `plans` for its shape (its datetime literals taken out), or
    a new translation, kept when the translator rendered every literal as a string we can put back."""
    values: list[str] = []

    def placeholder(match: re.Match[str]) -> str:
        values.append(match.group(1))
        return f"datetime({_SENTINEL_DAY}.{len(values):06d}Z)"

    template = _DATETIME_LITERAL.sub(placeholder, kql)
    # The SQL also depends on the tables' columns (joins, an `extend` of an existing column): part of the key.
    key = (template, repr(con.execute(SCHEMA_SQL).fetchall()))
    if key not in plans:
        sql, bound = translate(con, template, now)
        sentinels = [f"'{_SENTINEL_DAY}.{n:06d}Z'" for n in range(1, len(values) + 1)]
        if not all(s in sql for s in sentinels):  # the translator rendered a literal otherwise: no reuse
            return _run_sql(con, *translate(con, kql, now))
        plans[key] = (sql, bound)
    sql, bound = plans[key]
    for n, value in enumerate(values, start=1):
        sql = sql.replace(f"'{_SENTINEL_DAY}.{n:06d}Z'", f"'{value}'")
    if "kqlnow" in bound:
        bound = {**bound, "kqlnow": now.astimezone(timezone.utc).replace(tzinfo=None)}
    return _run_sql(con, sql, bound)


def _run_sql(con: Any, sql: str, bound: Mapping[str, Any]) -> Any:
    return con.sql(sql, params=dict(bound)) if bound else con.sql(sql)
