"""A rule file's mapping -> Rule: each Sentinel field and each `kqlwatch:` key checked, the file and key named.

Split from shared.rules.loader (which reads files and YAML): one function per group of fields (identity,
schedule and trigger, the `kqlwatch:` extension, grouping and details), so each stays small.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from shared.errors import RuleError
from shared.rules.durations import parse_duration
from shared.rules.enrich import parse_enrich
from shared.rules.exclusions import Exclusion, ExclusionError, parse_exclusions
from shared.rules.model import DEFAULT_FREQUENCY, DEFAULT_PERIOD, DEFAULT_SEVERITY, Rule

NAMESPACE = "kqlwatch"
SEVERITIES = ("Informational", "Low", "Medium", "High")
MAX_QUERY_CHARS = 64_000
_KNOWN_EXTENSION_KEYS = {
    "dedupeKey",
    "tests",
    "exclusions",
    "realert",
    "route",
    "window",
    "silenceAfter",
    "enrich",
    "source",  # issue 15: defender | loganalytics
    "workspaces",  # issue 15: the Log Analytics workspaces the rule runs against (default KQLWATCH_WORKSPACE_ID)
    "union",  # issue 15: true = one cross-workspace query (additional_workspaces) instead of one per workspace
}
# Log Analytics answers one query over at most 100 workspaces besides the one it is sent to (issue 15).
MAX_ADDITIONAL_WORKSPACES = 100
WINDOW_MODES = ("ingestion", "timegenerated")  # kqlwatch.window (issue 13); unset: chosen by shared.rules.ingestion
# kqlwatch.source (issue 15): where the rule's query runs; unset = KQLWATCH_SOURCE (default loganalytics).
DEFENDER, LOG_ANALYTICS = "defender", "loganalytics"
SOURCES = (DEFENDER, LOG_ANALYTICS)
AGGREGATIONS = ("SingleAlert", "AlertPerResult")
_ROUTE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_TRIGGER_OPERATORS = {"gt", "lt", "eq", "ne", "GreaterThan", "LessThan", "Equal", "NotEqual"}


def is_guid(text: str) -> bool:
    """THE GUID check (rule ids, workspace ids, validate's findings): 8-4-4-4-12 hex digits."""
    return _GUID.match(text) is not None


@dataclass(frozen=True)
class _Doc:
    doc: Mapping[str, Any]
    where: str

    def text(self, key: str, *, required: bool = False, default: str = "") -> str:
        value = self.doc.get(key)
        if value is None:
            if required:
                raise RuleError(self.where, f"missing required field '{key}'", key=key)
            return default
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise RuleError(self.where, f"field '{key}' must be text, not {type(value).__name__}", key=key)
        return str(value)

    def fail(self, reason: str, key: str = NAMESPACE) -> RuleError:
        return RuleError(self.where, reason, key=key)


def rule_from_dict(doc: Mapping[str, Any], where: str) -> Rule:
    d = _Doc(doc, where)
    rule_id, name, query = _identity(d)
    # In this order, so that of several faults the same one is reported first as before the split.
    schedule = _schedule(d)
    extension = _extension_mapping(d)
    extras = _extension_fields(d, extension, rule_id, query)
    grouping = _grouping(d)
    return Rule(
        id=rule_id.lower(),
        name=name,
        query=query,
        path=where,
        description=d.text("description").strip(),
        tactics=_names(doc, "tactics", where),
        techniques=_names(doc, "relevantTechniques", where),
        entity_columns=_entity_columns(doc.get("entityMappings"), where),
        version=d.text("version"),
        extension=extension,
        **schedule,
        **grouping,
        **extras,
    )


def _identity(d: _Doc) -> tuple[str, str, str]:
    rule_id = d.text("id", required=True).strip()
    name = d.text("name", required=True).strip()
    if not name:
        raise d.fail("field 'name' is empty", "name")
    if not is_guid(rule_id):
        raise d.fail(f"id {rule_id!r} is not a GUID", "id")
    query = d.text("query", required=True)
    if not query.strip():
        raise d.fail("field 'query' is empty", "query")
    if len(query) > MAX_QUERY_CHARS:
        raise d.fail(f"query is {len(query):,} characters; the limit is {MAX_QUERY_CHARS:,}", "query")
    return rule_id, name, query


def _schedule(d: _Doc) -> dict[str, Any]:
    """Severity, queryFrequency/queryPeriod, the trigger and Sentinel's suppression."""
    doc, where = d.doc, d.where
    severity = d.text("severity", default=DEFAULT_SEVERITY)
    if severity not in SEVERITIES:
        raise d.fail(f"severity {severity!r} is not one of {', '.join(SEVERITIES)}", "severity")
    frequency = _duration(doc, "queryFrequency", DEFAULT_FREQUENCY, where)
    period = _duration(doc, "queryPeriod", max(DEFAULT_PERIOD, frequency), where)
    if period < frequency:
        raise d.fail("queryPeriod must be at least queryFrequency", "queryPeriod")
    operator = d.text("triggerOperator", default="gt")
    if operator not in _TRIGGER_OPERATORS:
        raise d.fail(f"triggerOperator {operator!r} is not one of gt, lt, eq, ne", "triggerOperator")
    threshold = doc.get("triggerThreshold", 0)
    if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 0:
        raise d.fail("triggerThreshold must be a whole number >= 0", "triggerThreshold")
    suppressed = doc.get("suppressionEnabled") is True
    return {
        "severity": severity,
        "query_frequency": frequency,
        "query_period": period,
        "trigger_operator": operator,
        "trigger_threshold": threshold,
        "suppression": _duration(doc, "suppressionDuration", timedelta(hours=5), where) if suppressed else None,
    }


def _grouping(d: _Doc) -> dict[str, Any]:
    """eventGroupingSettings, alertDetailsOverride and customDetails."""
    doc = d.doc
    grouping = doc.get("eventGroupingSettings") or {}
    aggregation = grouping.get("aggregationKind", "SingleAlert") if isinstance(grouping, dict) else None
    if aggregation not in AGGREGATIONS:
        raise d.fail(
            f"eventGroupingSettings.aggregationKind must be one of {', '.join(AGGREGATIONS)}", "eventGroupingSettings"
        )
    override = doc.get("alertDetailsOverride") or {}
    details = doc.get("customDetails") or {}
    if not isinstance(override, dict) or not isinstance(details, dict):
        raise d.fail(
            "alertDetailsOverride and customDetails must be mappings",
            "customDetails" if isinstance(override, dict) else "alertDetailsOverride",
        )
    if len(details) > 20:
        raise d.fail("customDetails allows at most 20 entries", "customDetails")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in details.items()):
        raise d.fail("customDetails must map names to column names (text)", "customDetails")
    title_format = override.get("alertDisplayNameFormat") or ""
    if not isinstance(title_format, str):
        raise d.fail("alertDetailsOverride.alertDisplayNameFormat must be text", "alertDetailsOverride")
    return {"aggregation": str(aggregation), "title_format": title_format, "custom_details": dict(details)}


def _extension_mapping(d: _Doc) -> Mapping[str, Any]:
    extension = d.doc.get(NAMESPACE) or {}
    if not isinstance(extension, dict):
        raise d.fail(f"'{NAMESPACE}' must be a mapping")
    unknown = sorted(map(repr_key, set(extension) - _KNOWN_EXTENSION_KEYS))
    if unknown:
        raise d.fail(
            f"unknown key(s) under '{NAMESPACE}': {', '.join(map(str, unknown))} "
            f"(known: {', '.join(sorted(_KNOWN_EXTENSION_KEYS))})"
        )
    return extension


def _extension_fields(d: _Doc, extension: Mapping[str, Any], rule_id: str, query: str) -> dict[str, Any]:
    """Every `kqlwatch:` key but tests (read by `kqlwatch test`)."""
    where = d.where
    realert = extension.get("realert") or {}
    if not isinstance(realert, dict) or (realert and not {"key", "window"} <= set(realert)):
        raise d.fail(f"{NAMESPACE}.realert needs 'key' (columns) and 'window' (a duration)")
    return {
        "dedupe_key": _names(extension, "dedupeKey", where, prefix=f"{NAMESPACE}."),
        "exclusions": _exclusions(d, extension, rule_id),
        "realert_key": _names(realert, "key", where, prefix=f"{NAMESPACE}.realert.") if realert else (),
        "realert_window": _duration(realert, "window", timedelta(0), where) if realert else None,
        "route": _route(d, extension),
        "window": _choice(d, extension, "window", WINDOW_MODES),
        "source": _choice(d, extension, "source", SOURCES),
        "workspaces": _workspaces(d, extension),
        "union": _union(d, extension),
        "silence_after": _silence_after(extension, where),
        "enrich": parse_enrich(extension.get("enrich"), query, where),  # issue 16
    }


def _exclusions(d: _Doc, extension: Mapping[str, Any], rule_id: str) -> tuple[Exclusion, ...]:
    try:
        return tuple(parse_exclusions(extension.get("exclusions"), source=d.where, rule_id=rule_id.lower()))
    except ExclusionError as exc:
        raise d.fail(exc.reason) from None


def _route(d: _Doc, extension: Mapping[str, Any]) -> str:
    route = extension.get("route") or ""
    if not isinstance(route, str):
        raise d.fail(f"{NAMESPACE}.route must be a name (letters, digits, _), not {type(route).__name__}")
    if route and not _ROUTE.match(route):
        raise d.fail(f"{NAMESPACE}.route {route!r} must be a name (letters, digits, _)")
    return route.lower()


def _choice(d: _Doc, extension: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    """A `kqlwatch.<key>` that is one of a few words (case-insensitive); "" when unset."""
    value = extension.get(key) or ""
    if not isinstance(value, str) or value.strip().lower() not in ("", *allowed):
        raise d.fail(f"{NAMESPACE}.{key} {value!r} is not one of {', '.join(allowed)}")
    return value.strip().lower()


def _workspaces(d: _Doc, extension: Mapping[str, Any]) -> tuple[str, ...]:
    """kqlwatch.workspaces: workspace GUIDs (customerId); one query, state and dedupe per workspace."""
    value = extension.get("workspaces")
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) and is_guid(i.strip()) for i in items):
        raise d.fail(f"{NAMESPACE}.workspaces must be a list of workspace GUIDs (customerId)")
    return tuple(dict.fromkeys(i.strip().lower() for i in items))


def _union(d: _Doc, extension: Mapping[str, Any]) -> bool:
    """kqlwatch.union: true runs the rule as ONE query to its first workspace with the others as
    additional_workspaces (one state, each row's TenantId naming its workspace); at most 1 + 100 workspaces."""
    value = extension.get("union", False)
    if not isinstance(value, bool):
        raise d.fail(f"{NAMESPACE}.union must be true or false, not {str(value)[:40]!r}")
    listed = extension.get("workspaces")
    if value and isinstance(listed, list) and len(set(listed)) > MAX_ADDITIONAL_WORKSPACES + 1:
        raise d.fail(union_limit_reason(len(set(listed)), f"{NAMESPACE}.workspaces"))
    return value


def union_limit_reason(count: int, listed_in: str) -> str:
    """THE message for a union over too many workspaces (the rule file at load, KQLWATCH_WORKSPACE_ID at run)."""
    return (
        f"{NAMESPACE}.union: {count} workspaces in {listed_in}; one cross-workspace query reads at most "
        f"{MAX_ADDITIONAL_WORKSPACES + 1} (the first and {MAX_ADDITIONAL_WORKSPACES} additional): split the list "
        f"or drop {NAMESPACE}.union to run one query per workspace"
    )


def _duration(doc: Mapping[str, Any], key: str, default: timedelta, where: str) -> timedelta:
    value = doc.get(key)
    if value is None:
        return default
    try:
        parsed = parse_duration(str(value))
    except ValueError as exc:
        raise RuleError(where, f"{key}: {exc}", key=key) from None
    except OverflowError:  # "99999999999d": more days than a timedelta holds
        raise RuleError(where, f"{key}: {str(value)[:40]!r} is too long a duration", key=key) from None
    if parsed <= timedelta(0):
        raise RuleError(where, f"{key} must be positive", key=key)
    return parsed


def repr_key(key: Any) -> str:
    """A mapping key as the user wrote it: YAML allows numbers, booleans and null as keys."""
    return key if isinstance(key, str) else f"{key!r} ({type(key).__name__})"


def _silence_after(extension: Mapping[str, Any], where: str) -> timedelta | None:
    if extension.get("silenceAfter") is None:
        return None
    try:
        return _duration(extension, "silenceAfter", timedelta(0), where)
    except RuleError as exc:
        raise RuleError(where, f"{NAMESPACE}.{exc.reason}") from None


def _names(doc: Mapping[str, Any], key: str, where: str, prefix: str = "") -> tuple[str, ...]:
    value = doc.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise RuleError(where, f"{prefix}{key} must be a list of names", key=NAMESPACE if prefix else key)
    return tuple(v.strip() for v in value)


def _entity_columns(mappings: Any, where: str) -> tuple[str, ...]:
    if mappings is None:
        return ()
    if not isinstance(mappings, list):
        raise RuleError(where, "entityMappings must be a list", key="entityMappings")
    columns: list[str] = []
    for mapping in mappings:
        fields = mapping.get("fieldMappings") if isinstance(mapping, dict) else None
        if not isinstance(fields, list):
            raise RuleError(where, "each entityMappings entry needs a fieldMappings list", key="entityMappings")
        for item in fields:
            column = item.get("columnName") if isinstance(item, dict) else None
            if not isinstance(column, str) or not column:
                raise RuleError(where, "each fieldMappings entry needs a columnName", key="entityMappings")
            if column not in columns:
                columns.append(column)
    return tuple(columns)
