"""Exclusions: reviewed, expiring tuning that removes known false positives in the query itself.

Each exclusion is one or more conditions that must all hold (`match`), with a reason, an owner and an optional
expiry. They are appended to the rule's query as `| where not(...)` filters built only from validated column
names and quoted literals, so the workspace returns less data and `kqlwatch hunt --explain` shows them.
A condition on an empty or non-IP value is false, never null: `not(null)` would silently drop the row.
Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from shared.rules.kql import string_literal

OPERATORS = ("equals", "in", "startswith", "endswith", "has", "cidr")
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_COMMENT_SAFE = re.compile(r"[^A-Za-z0-9 _.,()@/-]")
EXCLUSIONS_FILE = "exclusions.yaml"


@dataclass(frozen=True)
class Place:
    """Where in a file an exclusion is: the file (or rule) it came from, and which exclusion in it."""

    source: str
    part: str


class ExclusionError(ValueError):
    """An exclusion that cannot be applied: `source` is the file (or rule), `reason` says which and why."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


@dataclass(frozen=True)
class Condition:
    column: str
    operator: str
    values: tuple[str, ...]

    def kql(self) -> str:
        col = self.column
        if self.operator == "cidr":
            ranges = [ipaddress.ip_network(v, strict=False) for v in self.values]
            tests = " or ".join(
                f"parse_ipv4({col}) between ({int(n.network_address)} .. {int(n.broadcast_address)})" for n in ranges
            )
            return f"(isnotnull(parse_ipv4({col})) and ({tests}))"
        literals = [string_literal(v) for v in self.values]
        if self.operator in ("equals", "in"):
            # Case-insensitive, as mail addresses and domains are.
            return f"(isnotempty({col}) and {col} in~ ({', '.join(literals)}))"
        tests = " or ".join(f"{col} {self.operator} {literal}" for literal in literals)
        return f"(isnotempty({col}) and ({tests}))"


@dataclass(frozen=True)
class Exclusion:
    rule_id: str
    name: str
    reason: str
    owner: str
    conditions: tuple[Condition, ...]
    expires: date | None = None
    source: str = ""  # file it came from, for messages

    def expired(self, today: date) -> bool:
        return self.expires is not None and today > self.expires

    def kql(self) -> str:
        label = _COMMENT_SAFE.sub("", self.name)[:100]
        return f"| where not({' and '.join(c.kql() for c in self.conditions)})  // exclusion: {label}"


def apply(query: str, exclusions: Iterable[Exclusion]) -> str:
    lines = [e.kql() for e in exclusions]
    if not lines:
        return query
    return query.rstrip().rstrip(";") + "\n" + "\n".join(lines) + "\n"


def parse_exclusions(items: Any, *, source: str, rule_id: str | None = None) -> list[Exclusion]:
    """From a rule's `kqlwatch.exclusions` (rule_id given) or an exclusions file's list (each names its rule)."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise ExclusionError(source, "exclusions must be a list")
    return [_one(item, source, rule_id, index) for index, item in enumerate(items, 1)]


def _one(item: Any, source: str, rule_id: str | None, index: int) -> Exclusion:
    where = Place(source, f"exclusion #{index}")
    if not isinstance(item, dict):
        raise ExclusionError(where.source, f"{where.part} must be a mapping")
    name = _text(item, "name", where)
    if name:
        where = Place(source, f"exclusion '{name}'")
    target = rule_id or _text(item, "rule", where).lower()
    if not target:
        raise ExclusionError(where.source, f"{where.part} needs 'rule' (the rule id it applies to)")
    for key in ("name", "reason", "owner"):
        if not _text(item, key, where):
            raise ExclusionError(
                where.source, f"{where.part} needs '{key}' (exclusions must say why, and who owns them)"
            )
    unknown = set(item) - {"rule", "name", "reason", "owner", "expires", "match", "column", "operator", "values"}
    if unknown:
        raise ExclusionError(where.source, f"{where.part} has unknown key(s): {', '.join(sorted(map(str, unknown)))}")
    raw_conditions = item.get("match")
    if raw_conditions is None:
        raw_conditions = [{k: item[k] for k in ("column", "operator", "values") if k in item}]
    if not isinstance(raw_conditions, list) or not raw_conditions:
        raise ExclusionError(where.source, f"{where.part}: 'match' must be a non-empty list of conditions")
    return Exclusion(
        rule_id=target,
        name=name,
        reason=_text(item, "reason", where),
        owner=_text(item, "owner", where),
        conditions=tuple(_condition(c, where) for c in raw_conditions),
        expires=_expiry(item.get("expires"), where),
        source=source,
    )


def _text(item: dict[Any, Any], key: str, where: Place) -> str:
    """A text field; YAML numbers are taken as written, anything else (a list, a mapping) is refused."""
    value = item.get(key)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ExclusionError(where.source, f"{where.part}: '{key}' must be text, not {type(value).__name__}")
    return str(value).strip()


def _condition(raw: Any, where: Place) -> Condition:
    if not isinstance(raw, dict):
        raise ExclusionError(where.source, f"{where.part}: each condition needs column, operator and values")
    column = str(raw.get("column") or "")
    operator = str(raw.get("operator") or "")
    values = raw.get("values", raw.get("value"))
    if not _COLUMN.match(column):
        raise ExclusionError(where.source, f"{where.part}: column {column!r} is not a column name")
    if operator not in OPERATORS:
        raise ExclusionError(where.source, f"{where.part}: operator {operator!r} is not one of {', '.join(OPERATORS)}")
    if isinstance(values, (str, int, float)):
        values = [values]
    if not isinstance(values, list) or not values or not all(isinstance(v, (str, int, float)) for v in values):
        raise ExclusionError(where.source, f"{where.part}: values must be a non-empty list")
    texts = tuple(str(v).strip() for v in values)
    if any(not t for t in texts):
        raise ExclusionError(
            where.source, f"{where.part}: values must not be empty (an empty value would match every blank row)"
        )
    if operator == "cidr":
        for text in texts:
            try:
                network = ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ExclusionError(
                    where.source, f"{where.part}: {text!r} is not an IPv4 address or CIDR range"
                ) from None
            if network.version != 4:
                raise ExclusionError(where.source, f"{where.part}: {text!r}: cidr supports IPv4 (SenderIPv4) ranges")
    try:
        for text in texts:
            string_literal(text)
    except ValueError as exc:
        raise ExclusionError(where.source, f"{where.part}: {exc}") from None
    return Condition(column, operator, texts)


def _expiry(value: Any, where: Place) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ExclusionError(where.source, f"{where.part}: expires {value!r} is not a date (YYYY-MM-DD)") from None


def split_by_expiry(exclusions: Sequence[Exclusion], today: date) -> tuple[list[Exclusion], list[Exclusion]]:
    active = [e for e in exclusions if not e.expired(today)]
    return active, [e for e in exclusions if e.expired(today)]


def by_rule(exclusions: Iterable[Exclusion]) -> Mapping[str, list[Exclusion]]:
    grouped: dict[str, list[Exclusion]] = {}
    for exclusion in exclusions:
        grouped.setdefault(exclusion.rule_id, []).append(exclusion)
    return grouped
