"""Durations as Sentinel writes them: short form (5m, 1h, 14d) or ISO-8601 (PT5M, P1D)."""

from __future__ import annotations

import re
from datetime import timedelta

_SHORT = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_ISO = re.compile(
    r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$", re.IGNORECASE
)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """Parse '5m', '1h', '14d' or 'PT1H'; raise ValueError with the accepted forms."""
    short = _SHORT.match(text)
    if short:
        return timedelta(**{_UNITS[short.group(2)]: int(short.group(1))})
    iso = _ISO.match(text.strip())
    if iso and text.strip().upper() not in ("P", "PT") and any(iso.groupdict().values()):
        return timedelta(
            days=int(iso["d"] or 0),
            hours=int(iso["h"] or 0),
            minutes=int(iso["m"] or 0),
            seconds=float(iso["s"] or 0),
        )
    raise ValueError(f"{text!r} is not a duration (use 5m, 1h, 14d or ISO-8601 like PT1H)")


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
