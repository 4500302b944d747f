"""KQLWATCH_SCHEDULE: the timer's NCRONTAB expression, validated so a typo is named (split from settings.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from shared.errors import ConfigError

SCHEDULE = "KQLWATCH_SCHEDULE"
DEFAULT_SCHEDULE = "0 */5 * * * *"

_CRON_FIELDS = (  # NCRONTAB: {second} {minute} {hour} {day} {month} {day-of-week}
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 6),
)
_CRON_NAMES = {
    4: {
        m: i + 1
        for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))
    },
    5: {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))},
}
_CRON_ITEM = re.compile(r"^(?P<range>\*|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:/(?P<step>[0-9]+))?$", re.ASCII)


def check_schedule(env: Mapping[str, str]) -> str:
    """The timer's NCRONTAB expression: 6 fields, each `*`, a value, a range, a list, with optional steps."""
    raw = (env.get(SCHEDULE) or "").strip() or DEFAULT_SCHEDULE
    fields = raw.split()
    if len(fields) != 6:
        raise ConfigError(SCHEDULE, f"must have 6 fields (second minute hour day month day-of-week), got {raw[:100]!r}")
    for index, text in enumerate(fields):
        problem = _cron_field_problem(index, text)
        if problem:
            raise ConfigError(SCHEDULE, f"{_CRON_FIELDS[index][0]} field {text[:40]!r}: {problem}")
    return raw


def _cron_field_problem(index: int, text: str) -> str:
    _, low, high = _CRON_FIELDS[index]
    for item in text.split(","):
        match = _CRON_ITEM.match(item)
        if not match:
            return "use *, a value, a range a-b, a list a,b or a step */n"
        step = match["step"]
        if step is not None and not 1 <= int(step) <= high:
            return f"step {step} is not from 1 to {high}"
        if match["range"] == "*":
            continue
        ends = [_cron_value(index, part) for part in match["range"].split("-")]
        if any(v is None or not low <= v <= high for v in ends):
            return f"values must be from {low} to {high}"
        if len(ends) == 2 and ends[0] > ends[1]:  # type: ignore[operator]
            return f"range {match['range']} runs backwards"
    return ""


def _cron_value(index: int, text: str) -> int | None:
    if text.isdigit():
        return int(text) if len(text) <= 2 else None
    return _CRON_NAMES.get(index, {}).get(text.lower())
