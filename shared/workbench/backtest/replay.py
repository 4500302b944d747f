"""Replay a rule's schedule over a past period through the production Detector, on a simulated clock.

The Detector, StateStore, dedupe, suppression, re-alert, thresholds, silence and card building are the real
ones; only the three edges differ: the state table is in memory (memtable.MemoryTableClient), the workspace
is the offline engine over exported files (EngineLogs) or the real workspace read-only (WorkspaceLogs), and
the webhook records instead of posting (RecordingPoster). DNS evidence is not looked up (today's DNS says
nothing about last month's mail), so nothing leaves the machine but the `--workspace` queries.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.workbench.engine import INGESTED, with_ingestion_column

if TYPE_CHECKING:
    from shared.rules.exclusions import Exclusion
    from shared.rules.loader import Rule
    from shared.rules.prepare import PreparedRule
    from shared.runtime.loganalytics import QueryResult
    from shared.runtime.teams import PostResult
    from shared.workbench.engine import Engine

SOURCE_PREFIX = "__backtest_"
WEBHOOK = "https://backtest.invalid/webhook"  # never connected to: RecordingPoster records instead
OPS_WEBHOOK = "https://backtest.invalid/ops"  # kqlwatch's own notices: told apart from alert cards by URL
# Exports that carry the ingestion time (`| extend IngestedAt = ingestion_time()`) replay it exactly; others
# are taken as ingested at TimeGenerated plus --ingestion-delay.
INGESTION_COLUMNS = ("_IngestedAt", "IngestedAt", "IngestionTime", "ingestion_time")


class SimClock:
    """The Detector's clock: the simulated run time, moved by the replay."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass(frozen=True)
class Post:
    at: datetime
    url: str
    payload: Any


class RecordingPoster:
    """The webhook: every post is kept, answered 202 as a Workflows trigger does; nothing is sent."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self.posts: list[Post] = []

    def post(self, url: str, payload: Any) -> PostResult:
        from shared.runtime.teams import PostResult

        self.posts.append(Post(self.clock(), url, payload))
        return PostResult(ok=True, status=202)


class EngineLogs:
    """The Log Analytics query API over exported files in the offline engine, as the stand-in answers it: a
    row is visible once ingested (its ingestion time <= now), the request's timespan applies to TimeGenerated,
    and `ingestion_time()` reads the row's ingestion time."""

    def __init__(self, engine: Engine, tables: Sequence[str], clock: Callable[[], datetime]) -> None:
        self.engine, self.tables, self.clock = engine, tuple(tables), clock
        self.queries = 0

    def query(
        self,
        workspace_id: str,
        query: str,
        start: datetime,
        end: datetime,
        *,
        additional_workspaces: Sequence[str] = (),
    ) -> QueryResult:
        # The exported files are one data set: a kqlwatch.union rule replays over them as over one workspace.
        return self.run(query, start, end, self.clock())

    def run(self, query: str, start: datetime | None, end: datetime | None, now: datetime) -> QueryResult:
        from shared.runtime.loganalytics import QueryResult

        self.queries += 1
        for table in self.tables:
            span = f" AND TimeGenerated >= {_ts(start)} AND TimeGenerated <= {_ts(end)}" if start and end else ""
            self.engine.sql(
                f"CREATE OR REPLACE VIEW {_ident(table)} AS SELECT * FROM {_ident(SOURCE_PREFIX + table)} "  # noqa: S608
                f"WHERE {INGESTED} <= {_ts(now)}{span}"
            )
        result = self.engine.query(with_ingestion_column(query), now=now, reuse_plan=True)
        keep = [i for i, c in enumerate(result.columns) if c != INGESTED]
        columns = [result.columns[i] for i in keep]
        types = {result.columns[i]: result.types[i] for i in keep}
        rows = [{result.columns[i]: _wire(row[i], result.types[i]) for i in keep} for row in result.rows]
        return QueryResult(columns, types, rows)


def load_sources(engine: Engine, tables: Mapping[str, str], delay: timedelta) -> None:
    """Each loaded table -> its hidden source table with an ingestion time; the table itself becomes the view
    EngineLogs re-points at every query."""
    for table in tables:
        columns = {c.casefold(): c for c in engine.columns(table)}
        stated = next((columns[c.casefold()] for c in INGESTION_COLUMNS if c.casefold() in columns), None)
        if stated is not None and stated != INGESTED:
            ingested = f"coalesce(TRY_CAST({_ident(stated)} AS TIMESTAMPTZ), TimeGenerated)"
        elif stated == INGESTED:
            ingested = f"coalesce({INGESTED}, TimeGenerated)"
        else:
            ingested = f"TimeGenerated + INTERVAL '{int(delay.total_seconds())} seconds'"
        exclude = f" EXCLUDE ({INGESTED})" if stated == INGESTED else ""
        engine.sql(
            f"CREATE TABLE {_ident(SOURCE_PREFIX + table)} AS SELECT *{exclude}, {ingested} AS {INGESTED} "  # noqa: S608
            f"FROM {_ident(table)}"
        )
        engine.sql(f"DROP TABLE {_ident(table)}")


# --- the replay --------------------------------------------------------------------------------------------


@dataclass
class Day:
    day: date
    runs: int = 0
    rows: int = 0
    alerts: int = 0  # new hits recorded (what the SOC is alerted to)
    suppressed: int = 0
    cards: int = 0  # posts to the webhook: alert cards, digests, overflow and kqlwatch's own notices
    notices: int = 0  # of those, kqlwatch's own (expired exclusion, cannot see, rule failing, ...)
    failed_runs: int = 0


@dataclass
class Replay:
    rule: Rule
    start: datetime
    end: datetime
    days: list[Day]
    hits: list[dict[str, Any]]  # every hit's row, in first-seen order
    errors: list[str] = field(default_factory=list)
    exclusion_counts: dict[str, int] = field(default_factory=dict)  # exclusion name -> rows it removes
    expired: list[tuple[str, date]] = field(default_factory=list)  # exclusions expiring before or in the period
    source: str = ""  # what was replayed: the files, or the workspace


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime

    def ticks(self, every: timedelta) -> Iterator[datetime]:
        """The rule's run times: every `every` from start (exclusive) to end (inclusive)."""
        count = math.floor((self.end - self.start) / every)
        for k in range(1, count + 1):
            yield self.start + k * every


def replay(
    rule: Rule,
    prepare: Callable[[date], PreparedRule],
    logs: Any,
    period: Period,
    *,
    params: Mapping[str, str],
    clock: SimClock | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Replay:
    """Run the rule at each tick of its schedule over `period` through the production Detector."""
    from shared.runtime.detector import Detector
    from shared.runtime.dnsevidence import SKIPPED, Lookup, RunLookups
    from shared.runtime.settings import Settings
    from shared.runtime.store import StateStore
    from shared.workbench.backtest.memtable import MemoryTableClient

    clock = clock or SimClock(period.start)
    settings = Settings(
        workspace_ids=("00000000-0000-0000-0000-000000000000",),
        logs_endpoint="https://backtest.invalid",
        state_connection="memory",
        state_table="kqlwatch",
        webhook_urls=(WEBHOOK,),
        ops_webhook_urls=(OPS_WEBHOOK,),
        rules_dir=Path(rule.path).parent,
        params=dict(params),
    )
    poster = RecordingPoster(clock)
    store = StateStore(MemoryTableClient())  # type: ignore[arg-type]  # the TableClient surface the store uses
    detector = Detector(settings, logs=logs, store=store, teams=poster, clock=clock)
    detector.dns = RunLookups(resolve=lambda name, timeout: Lookup(SKIPPED))
    store.ensure_table()
    ticks = list(period.ticks(rule.query_frequency))
    tally = _Tally(rule, prepare, poster, store)
    with _quiet_runs():
        for index, now in enumerate(ticks, start=1):
            clock.now = now
            tally.run(detector, now)
            if progress is not None:
                progress(index, len(ticks))
    return Replay(rule, period.start, period.end, _all_days(tally.days, ticks), list(tally.hits.values()), tally.errors)


@contextmanager
def _quiet_runs() -> Iterator[None]:
    """The detector logs one kqlwatch.rule_run line per run: thousands in a backtest. Shown with -v only;
    failed runs are in the report."""
    logger = logging.getLogger("kqlwatch")
    level = logger.level
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


@dataclass
class _Tally:
    rule: Rule
    prepare: Callable[[date], PreparedRule]
    poster: RecordingPoster
    store: Any
    days: dict[date, Day] = field(default_factory=dict)
    hits: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    prepared_on: dict[date, PreparedRule] = field(default_factory=dict)

    def run(self, detector: Any, now: datetime) -> None:
        """One scheduled run at `now` (exclusions active on its day), and what it did on that day's line."""
        if now.date() not in self.prepared_on:
            self.prepared_on[now.date()] = self.prepare(now.date())
        posted = len(self.poster.posts)
        outcome = detector.run_rule(self.prepared_on[now.date()], only_due=False)
        # A run reads the rows up to its own time: the midnight run closes the day before, and counts there.
        closes = (now - timedelta(microseconds=1)).date()
        day = self.days.setdefault(closes, Day(closes))
        day.runs += 1
        day.rows += outcome.rows
        day.alerts += outcome.new_hits
        day.suppressed += outcome.suppressed
        new_posts = self.poster.posts[posted:]
        day.cards += len(new_posts)
        day.notices += sum(1 for p in new_posts if p.url == OPS_WEBHOOK)
        if not outcome.ok:
            day.failed_runs += 1
            self.errors.extend(f"{now:%Y-%m-%d %H:%M} {e}" for e in outcome.errors)
        if outcome.new_hits:  # now: the daily purge removes settled hits after two weeks
            for hit in sorted(self.store.hits(self.rule.id), key=lambda h: h.first_seen):
                self.hits.setdefault(hit.key, hit.row)


def _all_days(days: Mapping[date, Day], ticks: Sequence[datetime]) -> list[Day]:
    """Every day with a run, quiet ones included (a chart with gaps would hide them)."""
    if not ticks:
        return []
    out, day = [], (ticks[0] - timedelta(microseconds=1)).date()
    while day <= (ticks[-1] - timedelta(microseconds=1)).date():
        out.append(days.get(day) or Day(day))
        day += timedelta(days=1)
    return out


def exclusion_counts(
    logs: EngineLogs, base_query: str, exclusions: Sequence[Exclusion], period: Period
) -> dict[str, int]:
    """How many of the rule's result rows over the whole period each exclusion matches (so removes)."""
    counts: dict[str, int] = {}
    for exclusion in exclusions:
        condition = " and ".join(c.kql() for c in exclusion.conditions)
        query = f"{base_query.rstrip().rstrip(';')}\n| where {condition}\n| count"
        result = logs.run(query, None, None, period.end)
        counts[exclusion.name] = int(next(iter(result.rows[0].values()))) if result.rows else 0
    return counts


def _wire(value: Any, kind: str) -> Any:
    """A value as the LogsQueryClient hands it over: datetimes aware, timespans and guids as text."""
    import uuid
    from decimal import Decimal

    from shared.workbench.output import as_text

    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, timedelta):
        return as_text(value, kind)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    return value


def _ts(value: datetime | None) -> str:
    assert value is not None
    return f"TIMESTAMPTZ '{value.astimezone(timezone.utc).isoformat()}'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
