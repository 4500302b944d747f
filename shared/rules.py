"""Sentinel-format rule files -> typed Rule objects.

A file stays a valid Sentinel rule: everything kqlwatch needs beyond Sentinel's schema lives under the
single `kqlwatch:` key. A file that cannot be used is reported with its path and reason; the rest load.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from shared.durations import parse_duration
from shared.errors import RuleError
from shared.exclusions import Exclusion, ExclusionError, parse_exclusions

NAMESPACE = "kqlwatch"
DEFAULT_FREQUENCY = timedelta(minutes=5)
DEFAULT_PERIOD = timedelta(hours=1)
DEFAULT_SEVERITY = "Medium"
SEVERITIES = ("Informational", "Low", "Medium", "High")
MAX_FILE_BYTES = 1_000_000
MAX_QUERY_CHARS = 64_000
_KNOWN_EXTENSION_KEYS = {"dedupeKey", "tests", "exclusions", "realert", "route", "window", "silenceAfter"}
WINDOW_MODES = ("ingestion", "timegenerated")  # kqlwatch.window (issue 13); unset: chosen by shared.ingestion
AGGREGATIONS = ("SingleAlert", "AlertPerResult")
_ROUTE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")
# libyaml's parser when PyYAML has it (its wheels do): rule files are parsed on every run.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_TRIGGER_OPERATORS = {"gt", "lt", "eq", "ne", "GreaterThan", "LessThan", "Equal", "NotEqual"}


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    query: str
    path: str
    description: str = ""
    severity: str = DEFAULT_SEVERITY
    query_frequency: timedelta = DEFAULT_FREQUENCY
    query_period: timedelta = DEFAULT_PERIOD
    tactics: tuple[str, ...] = ()
    techniques: tuple[str, ...] = ()
    trigger_operator: str = "gt"
    trigger_threshold: int = 0
    entity_columns: tuple[str, ...] = ()
    dedupe_key: tuple[str, ...] = ()
    version: str = ""
    exclusions: tuple[Exclusion, ...] = ()
    suppression: timedelta | None = None  # Sentinel suppressionEnabled/suppressionDuration
    realert_key: tuple[str, ...] = ()  # kqlwatch.realert: the same entity is not re-alerted within the window
    realert_window: timedelta | None = None
    aggregation: str = "SingleAlert"  # eventGroupingSettings.aggregationKind
    title_format: str = ""  # alertDetailsOverride.alertDisplayNameFormat
    custom_details: Mapping[str, str] = field(default_factory=dict)
    route: str = ""  # kqlwatch.route: a named webhook route (KQLWATCH_ROUTE_<NAME>)
    extension: Mapping[str, Any] = field(default_factory=dict)
    window: str = ""  # kqlwatch.window: ingestion | timegenerated; "" = automatic (shared.ingestion.choose)
    silence_after: timedelta | None = None  # kqlwatch.silenceAfter: a source table this quiet means a blind rule


@dataclass(frozen=True)
class LoadResult:
    rules: list[Rule]
    errors: list[RuleError]


def load_rules(directory: Path) -> LoadResult:
    """Load every rule file (*.yaml / *.yml) under `directory`; collect errors instead of stopping at the first."""
    if not directory.is_dir():
        return LoadResult([], [RuleError(str(directory), "rules directory does not exist")])
    return load_files(p for p in rule_files(directory) if not is_exclusions_file(p))


def rule_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix.lower() in (".yaml", ".yml") and p.is_file())


def is_exclusions_file(path: Path) -> bool:
    """Tuning files kept beside the rules (`exclusions.yaml`, `*.exclusions.yaml`) are not rules."""
    name = path.name.lower()
    return name in ("exclusions.yaml", "exclusions.yml") or name.endswith((".exclusions.yaml", ".exclusions.yml"))


def load_exclusion_files(directory: Path) -> tuple[list[Exclusion], list[RuleError]]:
    """Tuning kept beside the rules: `exclusions.yaml` / `*.exclusions.yaml`, each `exclusions: [...]`."""
    found: list[Exclusion] = []
    errors: list[RuleError] = []
    if directory.is_dir():
        for path in (p for p in rule_files(directory) if is_exclusions_file(p)):
            try:
                found.extend(load_exclusion_file(path))
            except RuleError as exc:
                errors.append(exc)
    return found, errors


def load_exclusion_file(path: Path) -> list[Exclusion]:
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER) or {}  # noqa: S506 - a safe loader
        if not isinstance(doc, dict):
            raise ExclusionError(f"{path}: must be a mapping with an 'exclusions' list")
        return parse_exclusions(doc.get("exclusions"), source=str(path))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RuleError(str(path), f"cannot read exclusions: {str(exc).splitlines()[0]}") from None
    except ExclusionError as exc:
        raise RuleError(str(path), str(exc).removeprefix(f"{path}: ")) from None


def load_files(paths: Iterable[Path]) -> LoadResult:
    rules: list[Rule] = []
    errors: list[RuleError] = []
    seen: dict[str, str] = {}
    for path in paths:
        try:
            rule = load_rule(path)
        except RuleError as exc:
            errors.append(exc)
            continue
        if rule.id in seen:
            errors.append(RuleError(str(path), f"duplicate rule id {rule.id} (already used by {seen[rule.id]})"))
            continue
        seen[rule.id] = str(path)
        rules.append(rule)
    return LoadResult(rules, errors)


def load_rule(path: Path) -> Rule:
    where = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise RuleError(where, f"file is {size:,} bytes; the limit is {MAX_FILE_BYTES:,}")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleError(where, f"cannot read file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise RuleError(where, "file is not UTF-8 text") from None
    return parse_rule(text, where)


def parse_rule(text: str, where: str) -> Rule:
    try:
        doc = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RuleError(where, f"invalid YAML: {problem}", mark.line + 1 if mark else None) from None
    if not isinstance(doc, dict):
        raise RuleError(where, "a rule file must be a YAML mapping (id, name, query, ...)")
    return rule_from_dict(doc, where)


def rule_from_dict(doc: Mapping[str, Any], where: str) -> Rule:
    def text(key: str, *, required: bool = False, default: str = "") -> str:
        value = doc.get(key)
        if value is None:
            if required:
                raise RuleError(where, f"missing required field '{key}'")
            return default
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise RuleError(where, f"field '{key}' must be text, not {type(value).__name__}")
        return str(value)

    rule_id = text("id", required=True).strip()
    if not text("name", required=True).strip():
        raise RuleError(where, "field 'name' is empty")
    if not _GUID.match(rule_id):
        raise RuleError(where, f"id {rule_id!r} is not a GUID")
    query = text("query", required=True)
    if not query.strip():
        raise RuleError(where, "field 'query' is empty")
    if len(query) > MAX_QUERY_CHARS:
        raise RuleError(where, f"query is {len(query):,} characters; the limit is {MAX_QUERY_CHARS:,}")
    severity = text("severity", default=DEFAULT_SEVERITY)
    if severity not in SEVERITIES:
        raise RuleError(where, f"severity {severity!r} is not one of {', '.join(SEVERITIES)}")
    frequency = _duration(doc, "queryFrequency", DEFAULT_FREQUENCY, where)
    period = _duration(doc, "queryPeriod", max(DEFAULT_PERIOD, frequency), where)
    if period < frequency:
        raise RuleError(where, "queryPeriod must be at least queryFrequency")
    operator = text("triggerOperator", default="gt")
    if operator not in _TRIGGER_OPERATORS:
        raise RuleError(where, f"triggerOperator {operator!r} is not one of gt, lt, eq, ne")
    threshold = doc.get("triggerThreshold", 0)
    if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 0:
        raise RuleError(where, "triggerThreshold must be a whole number >= 0")
    extension = doc.get(NAMESPACE) or {}
    if not isinstance(extension, dict):
        raise RuleError(where, f"'{NAMESPACE}' must be a mapping")
    unknown = sorted(set(extension) - _KNOWN_EXTENSION_KEYS)
    if unknown:
        raise RuleError(
            where,
            f"unknown key(s) under '{NAMESPACE}': {', '.join(map(str, unknown))} "
            f"(known: {', '.join(sorted(_KNOWN_EXTENSION_KEYS))})",
        )
    try:
        exclusions = tuple(parse_exclusions(extension.get("exclusions"), source=where, rule_id=rule_id.lower()))
    except ExclusionError as exc:
        raise RuleError(where, str(exc).removeprefix(f"{where}: ")) from None
    realert = extension.get("realert") or {}
    if not isinstance(realert, dict) or (realert and not {"key", "window"} <= set(realert)):
        raise RuleError(where, f"{NAMESPACE}.realert needs 'key' (columns) and 'window' (a duration)")
    route = str(extension.get("route") or "")
    if route and not _ROUTE.match(route):
        raise RuleError(where, f"{NAMESPACE}.route {route!r} must be a name (letters, digits, _)")
    window = str(extension.get("window") or "").strip().lower()
    if window and window not in WINDOW_MODES:
        raise RuleError(where, f"{NAMESPACE}.window {extension.get('window')!r} is not one of {', '.join(WINDOW_MODES)}")
    grouping = doc.get("eventGroupingSettings") or {}
    aggregation = grouping.get("aggregationKind", "SingleAlert") if isinstance(grouping, dict) else None
    if aggregation not in AGGREGATIONS:
        raise RuleError(where, f"eventGroupingSettings.aggregationKind must be one of {', '.join(AGGREGATIONS)}")
    override = doc.get("alertDetailsOverride") or {}
    details = doc.get("customDetails") or {}
    if not isinstance(override, dict) or not isinstance(details, dict):
        raise RuleError(where, "alertDetailsOverride and customDetails must be mappings")
    if len(details) > 20:
        raise RuleError(where, "customDetails allows at most 20 entries")
    suppressed = doc.get("suppressionEnabled") is True
    return Rule(
        id=rule_id.lower(),
        name=text("name", required=True).strip(),
        query=query,
        path=where,
        description=text("description").strip(),
        severity=severity,
        query_frequency=frequency,
        query_period=period,
        tactics=_names(doc, "tactics", where),
        techniques=_names(doc, "relevantTechniques", where),
        trigger_operator=operator,
        trigger_threshold=threshold,
        entity_columns=_entity_columns(doc.get("entityMappings"), where),
        dedupe_key=_names(extension, "dedupeKey", where, prefix=f"{NAMESPACE}."),
        version=text("version"),
        exclusions=exclusions,
        suppression=_duration(doc, "suppressionDuration", timedelta(hours=5), where) if suppressed else None,
        realert_key=_names(realert, "key", where, prefix=f"{NAMESPACE}.realert.") if realert else (),
        realert_window=_duration(realert, "window", timedelta(0), where) if realert else None,
        aggregation=str(aggregation),
        title_format=str(override.get("alertDisplayNameFormat") or ""),
        custom_details={str(k): str(v) for k, v in details.items()},
        route=route.lower(),
        extension=extension,
        window=window,
        silence_after=_silence_after(extension, where),
    )


def _duration(doc: Mapping[str, Any], key: str, default: timedelta, where: str) -> timedelta:
    value = doc.get(key)
    if value is None:
        return default
    try:
        parsed = parse_duration(str(value))
    except ValueError as exc:
        raise RuleError(where, f"{key}: {exc}") from None
    if parsed <= timedelta(0):
        raise RuleError(where, f"{key} must be positive")
    return parsed


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
        raise RuleError(where, f"{prefix}{key} must be a list of names")
    return tuple(v.strip() for v in value)


def _entity_columns(mappings: Any, where: str) -> tuple[str, ...]:
    if mappings is None:
        return ()
    if not isinstance(mappings, list):
        raise RuleError(where, "entityMappings must be a list")
    columns: list[str] = []
    for mapping in mappings:
        fields = mapping.get("fieldMappings") if isinstance(mapping, dict) else None
        if not isinstance(fields, list):
            raise RuleError(where, "each entityMappings entry needs a fieldMappings list")
        for item in fields:
            column = item.get("columnName") if isinstance(item, dict) else None
            if not isinstance(column, str) or not column:
                raise RuleError(where, "each fieldMappings entry needs a columnName")
            if column not in columns:
                columns.append(column)
    return tuple(columns)


def trigger_met(rule: Rule, count: int) -> bool:
    """Sentinel's triggerOperator/triggerThreshold on the result count."""
    op = {"GreaterThan": "gt", "LessThan": "lt", "Equal": "eq", "NotEqual": "ne"}.get(
        rule.trigger_operator, rule.trigger_operator
    )
    threshold = rule.trigger_threshold
    return {
        "gt": count > threshold,
        "lt": count < threshold,
        "eq": count == threshold,
        "ne": count != threshold,
    }[op]
