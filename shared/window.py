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


def overlap(period: timedelta, frequency: timedelta) -> timedelta:
    return max(period - frequency, MIN_OVERLAP)


def next_window(
    now: datetime,
    *,
    period: timedelta,
    frequency: timedelta,
    last_end: datetime | None,
    max_catchup: timedelta,
) -> Window:
    """[now - period, now], reaching back far enough to overlap the last successful window so that late
    rows and downtime leave no gap, but never further back than max_catchup (or period, if longer)."""
    start = now - period
    if last_end is not None:
        start = min(start, last_end - overlap(period, frequency))
    return Window(max(start, now - max(max_catchup, period)), now)


def is_due(now: datetime, last_run: datetime | None, frequency: timedelta) -> bool:
    return last_run is None or now - last_run >= frequency - DUE_SLACK
