"""Ingestion-time windows (issue 13): which rules read "rows ingested since the last run", and the filter that does it.

The API's timespan filters TimeGenerated only, so a row ingested hours after its event falls outside every
TimeGenerated window that has moved on. A rule in `ingestion` mode instead reads rows whose ingestion_time() is
after the rule's watermark. `ingestion_time()` is null after summarize/project/join, so the filter is put on each
source table before the rule's own operators, by a `let` that shadows the table:

    let EmailEvents = EmailEvents | where ingestion_time() > datetime(...);
    <the rule's query, unchanged>

Where reading by ingestion time would change what a rule means (aggregations over the period, count thresholds,
cross-table joins, a query that already uses ingestion_time()), the rule keeps TimeGenerated windows. Pure.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from shared.kql import tokenize

if TYPE_CHECKING:
    from shared.rules import Rule

INGESTION = "ingestion"
TIMEGENERATED = "timegenerated"
MODES = (INGESTION, TIMEGENERATED)

# Operators and functions whose result depends on the whole period, not on each row: over "rows ingested since the
# last run" they would count, collect or join a different set of rows than the rule's author meant.
_AGGREGATING = frozenset(
    {
        "summarize",
        "count",
        "make-series",
        "top-nested",
        "top-hitters",
        "evaluate",
        "join",
        "lookup",
        "as",
        "make_set",
        "make_list",
        "make_bag",
        "dcount",
        "countif",
        "dcountif",
        "arg_max",
        "arg_min",
        "toscalar",
        "materialize",
        "row_number",
        "prev",
        "next",
        "serialize",
        "scan",
        "partition",
    }
)
# Tables whose silence means a blind rule quickly (mail flows all day); others get a day.
MAIL_TABLE_SILENCE = timedelta(hours=2)
OTHER_TABLE_SILENCE = timedelta(hours=24)
_MAIL_PREFIXES = ("Email", "Message", "UrlClick")


@dataclass(frozen=True)
class WindowChoice:
    mode: str  # INGESTION | TIMEGENERATED
    reason: str  # why, for `kqlwatch validate` / `status`
    tables: tuple[str, ...]  # source tables the filter is put on


def source_tables(query: str, known: Iterable[str]) -> tuple[str, ...]:
    """Known tables (shipped schemas) and custom `_CL` tables the query names, in order of first use.
    A name after `.` (a column access) or before `=` (a let or extend target) is not a table reference."""
    names = set(known)
    tokens = tokenize(query)
    found: list[str] = []
    for i, tok in enumerate(tokens):
        if tok.kind != "ident" or not (tok.text in names or tok.text.endswith("_CL")):
            continue
        before = tokens[i - 1].text if i else ""
        after = tokens[i + 1].text if i + 1 < len(tokens) else ""
        if before == "." or after == "=" or (before == "let"):
            continue
        if tok.text not in found:
            found.append(tok.text)
    return tuple(found)


def choose(
    query: str, known: Iterable[str], *, override: str = "", trigger_operator: str = "gt", trigger_threshold: int = 0
) -> WindowChoice:
    """The rule's window mode: its `kqlwatch.window` if set, else ingestion unless that changes its meaning."""
    tables = source_tables(query, known)
    if override:
        reason = (
            "kqlwatch.window" if tables or override == TIMEGENERATED else "kqlwatch.window, but no source table found"
        )
        mode = override if tables or override == TIMEGENERATED else TIMEGENERATED
        return WindowChoice(mode, reason, tables)
    words = {t.text.lower() for t in tokenize(query) if t.kind == "ident"}
    if not tables:
        return WindowChoice(TIMEGENERATED, "no known source table to filter", tables)
    if "ingestion_time" in words:
        return WindowChoice(TIMEGENERATED, "the query already uses ingestion_time()", tables)
    if len(tables) > 1:
        return WindowChoice(TIMEGENERATED, f"reads {len(tables)} tables ({', '.join(tables)})", tables)
    aggregating = sorted(words & _AGGREGATING)
    if aggregating:
        return WindowChoice(TIMEGENERATED, f"aggregates over the period ({', '.join(aggregating)})", tables)
    if (trigger_operator, trigger_threshold) not in (("gt", 0), ("GreaterThan", 0)):
        return WindowChoice(
            TIMEGENERATED, f"threshold on the result count ({trigger_operator} {trigger_threshold})", tables
        )
    return WindowChoice(INGESTION, "row by row", tables)


def for_rule(rule: Rule) -> WindowChoice:
    """The rule's window mode (used by every run; shown by `kqlwatch validate`, `status` and `hunt --explain`)."""
    return choose(
        rule.query,
        _known_tables(),
        override=rule.window,
        trigger_operator=rule.trigger_operator,
        trigger_threshold=rule.trigger_threshold,
    )


@functools.lru_cache(maxsize=1)
def _known_tables() -> tuple[str, ...]:
    from shared.schemas import known_tables

    return tuple(known_tables())


def with_ingestion_filter(query: str, tables: Iterable[str], since: datetime) -> str:
    """The query with each source table shadowed by its rows ingested after `since`. Table names come from
    source_tables (identifiers), and the time is formatted here: nothing from a row or setting becomes KQL."""
    stamp = since.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lets = "".join(f"let {t} = {t} | where ingestion_time() > datetime({stamp});\n" for t in tables)
    return lets + query


def silence_threshold(table: str, override: timedelta | None) -> timedelta:
    """How long a table may have no new rows before a rule reading it is reported blind."""
    if override is not None:
        return override
    return MAIL_TABLE_SILENCE if table.startswith(_MAIL_PREFIXES) else OTHER_TABLE_SILENCE


def last_ingested_query(table: str) -> str:
    """The blind-spot probe: one row, the table's latest ingestion time (cheap: no column but the hidden one)."""
    return f"{table}\n| summarize LastIngested = max(ingestion_time())"
