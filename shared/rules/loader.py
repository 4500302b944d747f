"""Sentinel-format rule files -> typed Rule objects.

A file stays a valid Sentinel rule: everything kqlwatch needs beyond Sentinel's schema lives under the
single `kqlwatch:` key. A file that cannot be used is reported with its path and reason; the rest load.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from shared.errors import RuleError
from shared.rules.durations import parse_duration
from shared.rules.enrich import parse_enrich
from shared.rules.exclusions import Exclusion, ExclusionError, parse_exclusions
from shared.rules.model import DEFAULT_FREQUENCY, DEFAULT_PERIOD, DEFAULT_SEVERITY
from shared.rules.model import Rule as Rule  # re-exported: the loader's product
from shared.rules.model import trigger_met as trigger_met
from shared.rules.yamlguard import YamlRefused, safe_load

NAMESPACE = "kqlwatch"
SEVERITIES = ("Informational", "Low", "Medium", "High")
MAX_FILE_BYTES = 1_000_000
MAX_QUERY_CHARS = 64_000
_KNOWN_EXTENSION_KEYS = {"dedupeKey", "tests", "exclusions", "realert", "route", "window", "silenceAfter", "enrich"}
WINDOW_MODES = ("ingestion", "timegenerated")  # kqlwatch.window (issue 13); unset: chosen by shared.rules.ingestion
AGGREGATIONS = ("SingleAlert", "AlertPerResult")
_ROUTE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")
_COMPOSER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_TRIGGER_OPERATORS = {"gt", "lt", "eq", "ne", "GreaterThan", "LessThan", "Equal", "NotEqual"}


@dataclass(frozen=True)
class LoadResult:
    rules: list[Rule]
    errors: list[RuleError]
    warnings: list[str] = field(default_factory=list)  # e.g. rule-named symlinks that lead nowhere


def load_rules(directory: Path) -> LoadResult:
    """Load every rule file (*.yaml / *.yml) under `directory`; collect errors instead of stopping at the first."""
    if not directory.is_dir():
        return LoadResult([], [RuleError(str(directory), "rules directory does not exist")])
    loaded = load_files(find_rule_files(directory))
    return replace(loaded, warnings=[*map(str, broken_links(directory)), *loaded.warnings])


def rule_files(directory: Path) -> list[Path]:
    """Every YAML file under `directory` (rules and exclusion files): *.yaml / *.yml in any letter case."""
    return sorted(p for p in directory.rglob("*") if _is_yaml_name(p) and p.is_file())


def find_rule_files(directory: Path) -> list[Path]:
    """The rule files under `directory`: what the detector loads, `kqlwatch test` runs and `validate` checks."""
    return [p for p in rule_files(directory) if not is_exclusions_file(p)]


APP_ROOT = Path(__file__).resolve().parents[2]  # where function_app.py and the shipped rules/ are
RULES_DIR_SETTING = "KQLWATCH_RULES_DIR"
DEFAULT_RULES_DIR = "rules"


def rules_folder(env: Mapping[str, str]) -> tuple[str, Path]:
    """(the value as given, the folder it names): KQLWATCH_RULES_DIR, else rules/. A relative path is taken from
    the working directory when it exists there, else from the app's own folder (where function_app.py is): the
    Functions host's working directory is not guaranteed. The one resolution the detector and the workbench use;
    whether the folder exists is the caller's to report (a setting error at run time, a finding in `validate`)."""
    raw = (env.get(RULES_DIR_SETTING) or "").strip() or DEFAULT_RULES_DIR
    path = Path(raw)
    if not (path.is_absolute() or path.exists()):
        path = APP_ROOT / path
    return raw, path


@dataclass(frozen=True)
class BrokenLink:
    """A rule-named symlink that leads to no file: the link, and why it is not loaded."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def broken_links(directory: Path) -> list[BrokenLink]:
    """Rule-named symlinks that lead to no file (dangling, or a loop): rule_files cannot see them, and a rule
    that silently stops loading is a rule that silently stops alerting."""
    found = []
    for path in sorted(p for p in directory.rglob("*") if _is_yaml_name(p) and p.is_symlink()):
        try:
            path.resolve(strict=True)
        except RuntimeError:  # Python 3.11 reports a symlink loop so
            found.append(BrokenLink(str(path), "symbolic link loop: the rule file is not loaded"))
            continue
        except OSError as exc:
            found.append(
                BrokenLink(
                    str(path),
                    f"symbolic link to {_link_target(path)}, which "
                    + ("loops" if exc.errno == errno.ELOOP else "does not exist")
                    + ": the rule file is not loaded",
                )
            )
            continue
        if not path.is_file():
            found.append(
                BrokenLink(str(path), f"symbolic link to {_link_target(path)}, which is not a file: not loaded")
            )
    return found


def _link_target(path: Path) -> str:
    try:
        return str(path.readlink())
    except OSError:
        return "?"


def _is_yaml_name(path: Path) -> bool:
    return path.suffix.lower() in (".yaml", ".yml")


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
        doc = safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(doc, dict):
            raise ExclusionError(str(path), "must be a mapping with an 'exclusions' list")
        return parse_exclusions(doc.get("exclusions"), source=str(path))
    except YamlRefused as exc:
        raise RuleError(str(path), exc.reason, exc.line) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise RuleError(str(path), f"invalid YAML: {_problem(exc)}", mark.line + 1 if mark else None) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(str(path), f"cannot read exclusions: {str(exc).splitlines()[0]}") from None
    except ExclusionError as exc:
        raise RuleError(exc.source, exc.reason) from None


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
        doc = safe_load(text)
    except YamlRefused as exc:
        raise RuleError(where, exc.reason, exc.line) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise RuleError(where, f"invalid YAML: {_problem(exc)}", mark.line + 1 if mark else None) from None
    if not isinstance(doc, dict):
        raise RuleError(where, "a rule file must be a YAML mapping (id, name, query, ...)")
    bad_key = next((k for k in doc if not isinstance(k, str)), None)
    if bad_key is not None:
        raise RuleError(
            where,
            f"top-level key {bad_key!r} is a {type(bad_key).__name__}: keys must be text",
            key_line(text, str(bad_key).lower() if isinstance(bad_key, bool) else str(bad_key)),
        )
    try:
        return rule_from_dict(doc, where)
    except RuleError as exc:
        if exc.line is None and exc.key is not None:
            raise RuleError(where, exc.reason, key_line(text, exc.key), key=exc.key) from None
        raise


def key_line(text: str, key: str) -> int | None:
    """The 1-based line of a top-level key (only on the error path: the text is parsed again)."""
    try:
        root = yaml.compose(text, Loader=_COMPOSER)
    except yaml.YAMLError:
        return None
    if not isinstance(root, yaml.MappingNode):
        return None
    for key_node, _ in root.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return int(key_node.start_mark.line) + 1
    return None


def _problem(exc: yaml.YAMLError) -> str:
    return getattr(exc, "problem", None) or (str(exc).splitlines() or ["unreadable"])[0]


def rule_from_dict(doc: Mapping[str, Any], where: str) -> Rule:
    def text(key: str, *, required: bool = False, default: str = "") -> str:
        value = doc.get(key)
        if value is None:
            if required:
                raise RuleError(where, f"missing required field '{key}'", key=key)
            return default
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise RuleError(where, f"field '{key}' must be text, not {type(value).__name__}", key=key)
        return str(value)

    rule_id = text("id", required=True).strip()
    if not text("name", required=True).strip():
        raise RuleError(where, "field 'name' is empty", key="name")
    if not is_guid(rule_id):
        raise RuleError(where, f"id {rule_id!r} is not a GUID", key="id")
    query = text("query", required=True)
    if not query.strip():
        raise RuleError(where, "field 'query' is empty", key="query")
    if len(query) > MAX_QUERY_CHARS:
        raise RuleError(where, f"query is {len(query):,} characters; the limit is {MAX_QUERY_CHARS:,}", key="query")
    severity = text("severity", default=DEFAULT_SEVERITY)
    if severity not in SEVERITIES:
        raise RuleError(where, f"severity {severity!r} is not one of {', '.join(SEVERITIES)}", key="severity")
    frequency = _duration(doc, "queryFrequency", DEFAULT_FREQUENCY, where)
    period = _duration(doc, "queryPeriod", max(DEFAULT_PERIOD, frequency), where)
    if period < frequency:
        raise RuleError(where, "queryPeriod must be at least queryFrequency", key="queryPeriod")
    operator = text("triggerOperator", default="gt")
    if operator not in _TRIGGER_OPERATORS:
        raise RuleError(where, f"triggerOperator {operator!r} is not one of gt, lt, eq, ne", key="triggerOperator")
    threshold = doc.get("triggerThreshold", 0)
    if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 0:
        raise RuleError(where, "triggerThreshold must be a whole number >= 0", key="triggerThreshold")
    extension = doc.get(NAMESPACE) or {}
    if not isinstance(extension, dict):
        raise RuleError(where, f"'{NAMESPACE}' must be a mapping", key=NAMESPACE)
    unknown = sorted(map(repr_key, set(extension) - _KNOWN_EXTENSION_KEYS))
    if unknown:
        raise RuleError(
            where,
            f"unknown key(s) under '{NAMESPACE}': {', '.join(map(str, unknown))} "
            f"(known: {', '.join(sorted(_KNOWN_EXTENSION_KEYS))})",
            key=NAMESPACE,
        )
    try:
        exclusions = tuple(parse_exclusions(extension.get("exclusions"), source=where, rule_id=rule_id.lower()))
    except ExclusionError as exc:
        raise RuleError(where, exc.reason, key=NAMESPACE) from None
    realert = extension.get("realert") or {}
    if not isinstance(realert, dict) or (realert and not {"key", "window"} <= set(realert)):
        raise RuleError(where, f"{NAMESPACE}.realert needs 'key' (columns) and 'window' (a duration)", key=NAMESPACE)
    route = extension.get("route") or ""
    if not isinstance(route, str):
        raise RuleError(
            where, f"{NAMESPACE}.route must be a name (letters, digits, _), not {type(route).__name__}", key=NAMESPACE
        )
    if route and not _ROUTE.match(route):
        raise RuleError(where, f"{NAMESPACE}.route {route!r} must be a name (letters, digits, _)", key=NAMESPACE)
    window = extension.get("window") or ""
    if not isinstance(window, str) or window.strip().lower() not in ("", *WINDOW_MODES):
        raise RuleError(where, f"{NAMESPACE}.window {window!r} is not one of {', '.join(WINDOW_MODES)}", key=NAMESPACE)
    window = window.strip().lower()
    grouping = doc.get("eventGroupingSettings") or {}
    aggregation = grouping.get("aggregationKind", "SingleAlert") if isinstance(grouping, dict) else None
    if aggregation not in AGGREGATIONS:
        raise RuleError(
            where,
            f"eventGroupingSettings.aggregationKind must be one of {', '.join(AGGREGATIONS)}",
            key="eventGroupingSettings",
        )
    override = doc.get("alertDetailsOverride") or {}
    details = doc.get("customDetails") or {}
    if not isinstance(override, dict) or not isinstance(details, dict):
        raise RuleError(
            where,
            "alertDetailsOverride and customDetails must be mappings",
            key="customDetails" if isinstance(override, dict) else "alertDetailsOverride",
        )
    if len(details) > 20:
        raise RuleError(where, "customDetails allows at most 20 entries", key="customDetails")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in details.items()):
        raise RuleError(where, "customDetails must map names to column names (text)", key="customDetails")
    title_format = override.get("alertDisplayNameFormat") or ""
    if not isinstance(title_format, str):
        raise RuleError(where, "alertDetailsOverride.alertDisplayNameFormat must be text", key="alertDetailsOverride")
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
        title_format=title_format,
        custom_details=dict(details),
        route=route.lower(),
        extension=extension,
        window=window,
        silence_after=_silence_after(extension, where),
        enrich=parse_enrich(extension.get("enrich"), query, where),  # issue 16
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


def is_guid(text: str) -> bool:
    """THE GUID check (rule ids, workspace ids, validate's findings): 8-4-4-4-12 hex digits."""
    return _GUID.match(text) is not None
