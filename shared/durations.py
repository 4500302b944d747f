"""Durations as Sentinel writes them: short form (5m, 1h, 14d) or ISO-8601 (PT5M, P1D)."""

from __future__ import annotations

import re
from datetime import timedelta

_SHORT = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_ISO = re.compile(r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$", re.IGNORECASE)


# Far beyond any sensible window or retention, far below what datetime arithmetic overflows at
# (`99999999d` fits a timedelta but `now - it` raises OverflowError in every rule).
MAX_DURATION = timedelta(days=3650)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, *, maximum: timedelta = MAX_DURATION) -> timedelta:
    """Parse '5m', '1h', '14d' or 'PT1H' up to `maximum`; raise ValueError with the accepted forms."""
    if len(text) > 40:  # no duration is this long; spares the regexes a megabyte of digits
        raise ValueError(f"{text[:40]!r}... is not a duration (use 5m, 1h, 14d or ISO-8601 like PT1H)")
    short = _SHORT.match(text)
    seconds: float | None = None
    if short:
        seconds = int(short.group(1)) * _SECONDS[short.group(2)]
    iso = None if short else _ISO.match(text.strip())
    if iso and text.strip().upper() not in ("P", "PT") and any(iso.groupdict().values()):
        seconds = (
            int(iso["d"] or 0) * 86400 + int(iso["h"] or 0) * 3600 + int(iso["m"] or 0) * 60 + float(iso["s"] or 0)
        )
    if seconds is None:
        raise ValueError(f"{text!r} is not a duration (use 5m, 1h, 14d or ISO-8601 like PT1H)")
    if seconds > maximum.total_seconds():
        raise ValueError(f"{text.strip()!r} is longer than the most allowed, {format_duration(maximum)}")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
