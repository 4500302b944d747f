"""Which time window a rule queries on this run, and whether it is due. Pure: no clock, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

# Rows reach Log Analytics 20 s - 3 min after the event, sometimes much later: windows overlap at least this much
# (dedupe makes the re-read rows harmless).
MIN_OVERLAP = timedelta(minutes=10)
# The timer fires at roughly fixed times; a run a few seconds early must not be skipped as "not due".
DUE_SLACK = timedelta(seconds=30)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    @property
    def span(self) -> timedelta:
        return self.end - self.start


def overlap(period: timedelta, frequency: timedelta, minimum: timedelta = MIN_OVERLAP) -> timedelta:
    return max(period - frequency, minimum)


# Issue 15: Defender XDR advanced hunting has no ingestion time (no ingestion_time(), no column for it), so a
# Defender-sourced rule reads Timestamp windows, and a row that becomes queryable late is caught only by
# re-reading. Defender's own custom detections re-read 3 hours on an hourly schedule (every hour, the past
# 4 hours); kqlwatch does the same on every run: 3 hours, against Log Analytics' 10 minutes. Rows later than
# that are missed: the trade-off is stated in docs/reliability.md. Re-read rows are deduplicated by the ledger.
DEFENDER_OVERLAP = timedelta(hours=3)
DEFENDER_MAX_CATCHUP = timedelta(days=30)  # advanced hunting keeps 30 days: nothing older can be read


def next_window(
    now: datetime,
    *,
    period: timedelta,
    frequency: timedelta,
    last_end: datetime | None,
    max_catchup: timedelta,
    min_overlap: timedelta = MIN_OVERLAP,
) -> Window:
    """[now - period, now], reaching back far enough to overlap the last successful window so that late
    rows and downtime leave no gap, but never further back than max_catchup (or period, if longer)."""
    start = now - period
    if last_end is not None:
        start = min(start, last_end - overlap(period, frequency, min_overlap))
    return Window(max(start, now - max(max_catchup, period)), now)


def is_due(now: datetime, last_run: datetime | None, frequency: timedelta) -> bool:
    return last_run is None or now - last_run >= frequency - DUE_SLACK


# --- ingestion-time windows (issue 13) ---

# ingestion_time() is approximate and unordered: each run re-reads a little of what the last one read
# (the dedupe ledger makes that harmless).
INGESTION_OVERLAP = timedelta(minutes=5)
# Between late sweeps a run reaches back this far on TimeGenerated before its ingestion watermark: the rows
# later than this (0.5% of mail in the timeliness benchmark) wait for the next sweep.
FAST_LATENESS = timedelta(hours=1)


@dataclass(frozen=True)
class IngestionWindow:
    """Rows ingested after `since`, whose TimeGenerated is in [start, end] (the API timespan)."""

    since: datetime
    start: datetime
    end: datetime
    sweep: bool  # this run reaches back over the whole max_lateness

    @property
    def timespan(self) -> Window:
        return Window(self.start, self.end)


def sweep_due(now: datetime, last_sweep: datetime | None, every: timedelta) -> bool:
    """A first run is no sweep (see next_sweep_mark): it would scan max_lateness at once for nothing it owes."""
    return last_sweep is not None and now - last_sweep >= every - DUE_SLACK


def next_sweep_mark(window: IngestionWindow, last_sweep_end: datetime | None) -> datetime | None:
    """The sweep watermark after a successful run: a sweep's end; after a first run, that run's own start, so
    the first sweep (on the next run, as it is then due) reads everything the first run read by ingestion
    time, over the whole lateness."""
    if window.sweep:
        return window.end
    if last_sweep_end is None:
        return window.since + INGESTION_OVERLAP
    return last_sweep_end


def ingestion_window(
    now: datetime,
    *,
    period: timedelta,
    last_end: datetime | None,
    last_sweep_end: datetime | None,
    max_lateness: timedelta,
    max_catchup: timedelta,
    sweep_every: timedelta,
) -> IngestionWindow:
    """Read what was ingested since the watermark (the last successful run's end, less a small overlap; a first
    run reads the last queryPeriod). A row ingested at I has TimeGenerated >= I - max_lateness, so a span reaching
    back max_lateness before `since` holds every such row. Scanning that span on every run is costly, so a normal
    run reaches back only FAST_LATENESS and a sweep, every `sweep_every`, reads everything ingested since the last
    sweep over the whole max_lateness. After downtime both watermarks are old: the run reads everything ingested
    meanwhile, capped at max_catchup."""
    floor = now - max(max_catchup, period)
    since = max(last_end - INGESTION_OVERLAP if last_end else now - period, floor)
    sweep = sweep_due(now, last_sweep_end, sweep_every)
    lateness = min(FAST_LATENESS, max_lateness)
    if sweep:
        since = max(min(since, last_sweep_end - INGESTION_OVERLAP if last_sweep_end else since), floor)
        lateness = max_lateness
    return IngestionWindow(since, since - lateness, now, sweep)
