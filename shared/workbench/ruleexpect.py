"""What a `kqlwatch test` case expects, checked against its result: a row count, or rows matched on the columns
they name, with a readable diff under a failure (the closest result row for each expected row not found)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from shared.rules.durations import as_time

if TYPE_CHECKING:
    from shared.rules.loader import Rule
    from shared.workbench.engine import EngineResult

_SHOWN_ROWS = 10  # result rows listed under a failure
_SHOWN_COLUMNS = 6
_VALUE_WIDTH = 60


@dataclass
class Outcome:
    passed: bool
    detail: list[str] = field(default_factory=list)


def check_count(rule: Rule, result: EngineResult, expected: int) -> Outcome:
    got = len(result.rows)
    if got == expected:
        return Outcome(True)
    columns = _key_columns(rule, result, [])
    lines = [f"expected {_rows(expected)}, got {got}" + (":" if got else "")]
    lines.extend(f"+ {_show(result, row, columns)}" for row in result.rows[:_SHOWN_ROWS])
    if got > _SHOWN_ROWS:
        lines.append(f"  ... and {got - _SHOWN_ROWS} more")
    return Outcome(False, lines)


def check_rows(rule: Rule, result: EngineResult, expected: Sequence[Mapping[str, Any]], *, partial: bool) -> Outcome:
    """Each expected row must match exactly one result row (on the columns it names), no two expected rows the
    same one; result rows no expected row matched fail the case unless `partial`."""
    named = list(dict.fromkeys(str(c) for row in expected for c in row))
    absent = [c for c in named if c not in result.columns]
    if absent:
        return Outcome(
            False, [f"column(s) {', '.join(absent)} not in the result (columns: {', '.join(result.columns)})"]
        )
    columns = _key_columns(rule, result, named)
    problems: list[str] = []
    claimed: dict[int, int] = {}
    for number, want in enumerate(expected, start=1):
        matches = [i for i, row in enumerate(result.rows) if _row_matches(want, row, result)]
        if len(matches) == 1:
            other = claimed.get(matches[0])
            if other is not None:
                problems.append(
                    f"- {_show_expected(want)}   expected row {number} matches the same result row "
                    f"as expected row {other}"
                )
            claimed.setdefault(matches[0], number)
            continue
        if not matches:
            problems.append(f"- {_show_expected(want)}   expected row {number}: no result row matches")
            near = _closest(want, result)
            if near:
                problems.append(f"    closest result row differs in {near}")
        else:
            problems.append(
                f"- {_show_expected(want)}   expected row {number}: matches {len(matches)} result rows "
                "(name more columns to tell them apart)"
            )
            problems.extend(f"    {_show(result, result.rows[i], columns)}" for i in matches[:_SHOWN_ROWS])
    extra = [i for i in range(len(result.rows)) if i not in claimed]
    if extra and not partial:
        for i in extra[:_SHOWN_ROWS]:
            problems.append(f"+ {_show(result, result.rows[i], columns)}   result row not expected")
        if len(extra) > _SHOWN_ROWS:
            problems.append(f"  ... and {len(extra) - _SHOWN_ROWS} more")
    if not problems:
        return Outcome(True)
    head = f"expected {_rows(len(expected))}{' (partial)' if partial else ''}, got {len(result.rows)}; "
    head += "- expected, not found   + found, not expected"
    return Outcome(False, [head, *problems])


def _key_columns(rule: Rule, result: EngineResult, named: Sequence[str]) -> list[str]:
    """What to show of a result row: the columns the expectation names, then the rule's identity columns."""
    from shared.runtime.hits import identity_columns

    times = [c for c, t in zip(result.columns, result.types, strict=True) if t == "datetime"]
    identity = identity_columns(result.columns, times, dedupe_key=rule.dedupe_key, entity_columns=rule.entity_columns)
    shown = list(dict.fromkeys([*named, *(c for c in identity if c in result.columns)]))
    return shown[: max(_SHOWN_COLUMNS, len(named))] or list(result.columns[:_SHOWN_COLUMNS])


def _row_matches(want: Mapping[str, Any], row: tuple[Any, ...], result: EngineResult) -> bool:
    for column, value in want.items():
        index = result.columns.index(str(column))
        if not values_equal(value, row[index], result.types[index]):
            return False
    return True


def _closest(want: Mapping[str, Any], result: EngineResult) -> str:
    best: list[str] | None = None
    for row in result.rows:
        diffs = []
        for column, value in want.items():
            index = result.columns.index(str(column))
            if not values_equal(value, row[index], result.types[index]):
                hint = _hint(value, result.types[index])
                diffs.append(f"{column}: expected {_value(value)}, got {_value(row[index])}{hint}")
        if best is None or len(diffs) < len(best):
            best = diffs
    return "; ".join(best or [])


def _hint(value: Any, kind: str) -> str:
    if kind == "string" and not isinstance(value, str) and value is not None:
        return f" (YAML read the expected value as {type(value).__name__}: quote it)"
    return ""


def values_equal(expected: Any, actual: Any, kind: str) -> bool:
    """An expected YAML value against a result value of Kusto type `kind` (strings compare exactly, as `==`)."""
    if expected is None:
        return actual is None or (kind == "string" and actual == "")
    if kind == "datetime":
        want = _as_time(expected)
        return want is not None and isinstance(actual, datetime) and want == _aware(actual)
    if kind == "dynamic":
        got = _as_dynamic(actual)
        if isinstance(expected, str):
            try:
                return bool(json.loads(expected) == got)
            except ValueError:
                return bool(expected == got)
        return bool(expected == got)
    if kind == "bool":
        if isinstance(expected, str):
            expected = {"true": True, "false": False}.get(expected.lower(), expected)
        return isinstance(expected, bool) and expected == actual
    if kind in ("int", "long", "real", "double", "decimal"):
        if isinstance(expected, bool) or actual is None:
            return False
        if isinstance(expected, str):
            try:
                expected = float(expected)
            except ValueError:
                return False
        return isinstance(expected, (int, float)) and float(expected) == float(actual)
    if kind == "timespan" and isinstance(actual, timedelta):
        from shared.rules.durations import parse_duration

        try:
            return isinstance(expected, str) and parse_duration(expected) == actual
        except ValueError:
            return False
    return isinstance(expected, str) and bool(expected == actual)


_as_time = as_time


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _as_dynamic(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _rows(n: int) -> str:
    return f"{n} row{'s' if n != 1 else ''}"


def _value(value: Any) -> str:
    """A value for the diff: JSON-quoted (so "" and " " are visible), ASCII-escaped, cut."""
    from shared.runtime.sanitize import truncate

    if isinstance(value, datetime):
        text = _aware(value).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    elif isinstance(value, date):
        text = value.isoformat()
    else:
        text = json.dumps(value, ensure_ascii=True, default=str)
    return truncate(text, _VALUE_WIDTH)


def _show(result: EngineResult, row: tuple[Any, ...], columns: Sequence[str]) -> str:
    pairs = (f"{c}: {_value(row[result.columns.index(c)])}" for c in columns if c in result.columns)
    return "{" + ", ".join(pairs) + "}"


def _show_expected(want: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{c}: {_value(v)}" for c, v in want.items()) + "}"
