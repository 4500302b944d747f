"""Result output shared by `hunt`, `preview` and `backtest`: Kusto-style text, JSON lines, CSV and aligned tables.

Data values are attacker-controlled (subjects, display names): everything printed to the terminal is made
inert first (control and bidi characters visible, no escape sequences), and CSV cells cannot start a formula.
"""

from __future__ import annotations

import io
import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from shared.workbench.engine import EngineResult

DEFAULT_WIDTH = 60
_CSV_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # all but tab, LF, CR
_NUMERIC = ("int", "long", "real", "double", "decimal")
_CSV_QUOTE = re.compile('[",\r\n]')
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def as_text(value: Any, kind: str) -> str:
    """A result value as Kusto would print it (datetimes ISO-8601 UTC, booleans true/false, null empty)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return aware.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, timedelta):
        return _timespan(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def as_json(value: Any, kind: str) -> Any:
    if kind == "dynamic" and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, (datetime, timedelta)):
        return as_text(value, kind)
    return value


# Kinds whose values json.dumps writes as they come from DuckDB (as_json leaves them alone): no per-cell call.
_PLAIN_JSON = frozenset({"string", "long", "int", "real", "double", "decimal", "bool", "boolean", "guid"})


def write_jsonl(result: EngineResult, columns: Sequence[int], out: TextIO) -> None:
    """One JSON object per row; ASCII only, so no control or bidi character reaches the terminal raw. Each
    value as `as_json` gives it; the conversion is chosen once per column, not per cell (12,000 rows of 33
    columns cost a second otherwise)."""
    encode = json.JSONEncoder(ensure_ascii=True, default=str).encode
    names = [result.columns[i] for i in columns]
    convert = [_json_converter(result.types[i]) for i in columns]
    plain = all(c is None for c in convert)
    buffer: list[str] = []
    for row in result.rows:
        values = [row[i] for i in columns]
        if not plain:
            values = [v if c is None or v is None else c(v) for v, c in zip(values, convert, strict=True)]
        buffer.append(encode(dict(zip(names, values, strict=True))))
        if len(buffer) >= 1024:
            out.write("\n".join(buffer) + "\n")
            buffer.clear()
    if buffer:
        out.write("\n".join(buffer) + "\n")


def _json_converter(kind: str) -> Callable[[Any], Any] | None:
    if kind in _PLAIN_JSON:
        return None
    if kind != "dynamic":
        return lambda value: as_json(value, kind)
    parsed: dict[str, Any] = {}  # dynamic columns repeat their values ({}, [], one bag per sender): parse once

    def dynamic(value: Any) -> Any:
        if not isinstance(value, str):
            return as_json(value, kind)
        if value not in parsed:
            if len(parsed) > 4096:
                parsed.clear()
            parsed[value] = as_json(value, kind)
        return parsed[value]

    return dynamic


def write_csv(result: EngineResult, columns: Sequence[int], out: TextIO, *, terminal: bool = False) -> None:
    """CSV with a header, readable by `--data` again. Control characters other than tab and line breaks are
    replaced by U+FFFD always (they carry no meaning in mail data and drive terminals); on a terminal, line
    breaks and bidi controls are shown as escapes too. A text cell starting with = + - @ tab or CR gets a leading
    ' so a spreadsheet shows it rather than running it as a formula (OWASP's advice)."""
    buffer = io.StringIO()
    buffer.write(_csv_record([_csv_safe(result.columns[i], terminal) for i in columns]))
    numeric = [result.types[i] in _NUMERIC for i in range(len(result.types))]
    for row in result.rows:
        buffer.write(
            _csv_record([_csv_safe(as_text(row[i], result.types[i]), terminal, numeric=numeric[i]) for i in columns])
        )
        if buffer.tell() > 1 << 16:
            out.write(buffer.getvalue())
            buffer.seek(0)
            buffer.truncate()
    out.write(buffer.getvalue())


def _csv_record(cells: Sequence[str]) -> str:
    """One RFC 4180 record. Not csv.writer: its minimal quoting leaves a bare CR (in a subject) unquoted, and
    every reader then ends the record there."""
    if list(cells) == [""]:
        return '""\n'  # a lone empty cell would be a blank line, which readers skip
    return ",".join(f'"{c.replace(chr(34), chr(34) * 2)}"' if _CSV_QUOTE.search(c) else c for c in cells) + "\n"


def format_table(result: EngineResult, columns: Sequence[int], width: int = DEFAULT_WIDTH) -> list[str]:
    """Aligned columns; long values cut at `width` characters; everything made inert for a terminal."""
    from shared.runtime.sanitize import clean

    header = [clean(result.columns[i], width, defang_text=False) for i in columns]
    cells = [
        [clean(as_text(row[i], result.types[i]), width, defang_text=False) for i in columns] for row in result.rows
    ]
    widths = [display_width(h) for h in header]
    for line in cells:
        widths = [max(w, display_width(c)) for w, c in zip(widths, line, strict=True)]
    right = [result.types[i] in _NUMERIC for i in columns]
    lines = [_join(header, widths, [False] * len(header)), "  ".join("-" * w for w in widths)]
    lines.extend(_join(line, widths, right) for line in cells)
    return lines


def _join(cells: Sequence[str], widths: Sequence[int], right: Sequence[bool]) -> str:
    parts = []
    for cell, width, align_right in zip(cells, widths, right, strict=True):
        pad = " " * (width - display_width(cell))
        parts.append(pad + cell if align_right else cell + pad)
    return "  ".join(parts).rstrip()


def display_width(text: str) -> int:
    """Terminal columns: wide East Asian characters take two, combining marks and zero-width characters none."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch) or ch in "\u200b\u200c\u200d\u2060\ufe0e\ufe0f":
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def terminal_safe(text: str) -> str:
    """Multi-line text (a query, a message) fit for a terminal: line breaks and tabs kept, other control
    characters replaced, bidi controls shown as [U+XXXX] (so nothing reorders or hides what is shown)."""
    from shared.runtime.sanitize import replace_controls, show_bidi

    return replace_controls(show_bidi(text.replace("\r\n", "\n").replace("\r", "\n")))


def _csv_safe(text: str, terminal: bool, *, numeric: bool = False) -> str:
    if terminal:
        from shared.runtime.sanitize import show_bidi

        text = show_bidi(text)
        text = text.replace("\r", "\\r").replace("\n", "\\n")
    text = _CSV_CONTROL.sub("\ufffd", text)
    # OWASP CSV injection: Excel and LibreOffice run a cell starting with = + - @ (or tab/CR before one) as a
    # formula, e.g. a Subject "=HYPERLINK(...)". A leading single quote makes it text. Numbers stay numbers:
    # a numeric column's "-5" is our own rendering, not attacker text.
    if not numeric and text.startswith(_FORMULA_START):
        text = "'" + text
    return text


def _timespan(value: timedelta) -> str:
    """Kusto's timespan text: [-][d.]hh:mm:ss[.fffffff]."""
    sign = "-" if value < timedelta(0) else ""
    value = abs(value)
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    days = f"{value.days}." if value.days else ""
    fraction = f".{value.microseconds:06d}0" if value.microseconds else ""
    return f"{sign}{days}{hours:02d}:{minutes:02d}:{seconds:02d}{fraction}"
