"""The Log Analytics stand-in's wire format: the request's timespan, and values as the service prints them
(datetimes as ISO text in UTC, timespans as `00:05:00` / `1.00:00:00`, guids as text). Split from
shared.standins.loganalytics (house limit)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from shared.rules.durations import parse_duration, parse_time


def _timespan(value: str | None, now: datetime) -> tuple[datetime | None, datetime | None]:
    if not value:
        return None, None
    if "/" in value:
        first, second = value.split("/", 1)
        if first.upper().startswith("P"):
            return _parse_time(second) - parse_duration(first), _parse_time(second)
        if second.upper().startswith("P"):
            return _parse_time(first), _parse_time(first) + parse_duration(second)
        return _parse_time(first), _parse_time(second)
    return now - parse_duration(value), now


def _in_span(value: Any, start: datetime | None, end: datetime | None) -> bool:
    if start is None or not isinstance(value, datetime):
        return start is None
    return start <= value <= (end or value)


def _parse_time(value: Any) -> Any:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, str) and value:
        return parse_time(value)
    return value


def _infer_schema(rows: list[dict[str, Any]]) -> dict[str, str]:
    schema: dict[str, str] = {}
    for row in rows[:100]:
        for key, value in row.items():
            if key not in schema:
                schema[key] = (
                    "datetime"
                    if isinstance(value, datetime)
                    else "bool"
                    if isinstance(value, bool)
                    else "long"
                    if isinstance(value, int)
                    else "real"
                    if isinstance(value, float)
                    else "dynamic"
                    if isinstance(value, (dict, list))
                    else "string"
                )
    return schema


def _wire(value: Any, kind: str) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, timedelta):
        return _timespan_text(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _timespan_text(value: timedelta) -> str:
    """As Kusto prints a timespan: [-][d.]hh:mm:ss[.fffffff] (`00:05:00`, `1.00:00:00`)."""
    sign = "-" if value < timedelta(0) else ""
    ticks = abs(value) // timedelta(microseconds=1) * 10
    seconds, fraction = divmod(ticks, 10_000_000)
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    text = f"{sign}{f'{days}.' if days else ''}{hours:02d}:{minutes:02d}:{seconds:02d}"
    return text + (f".{fraction:07d}" if fraction else "")
