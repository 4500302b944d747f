"""The per-file checks of `kqlwatch validate`: the file, its YAML and schema, and the kqlwatch loader's verdict."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.rules.fields import DEFENDER
from shared.rules.loader import is_guid
from shared.workbench.validate.model import ERROR, FileResult, Finding, _Checked, _duration, _Query
from shared.workbench.validate.reference import (
    _VERSION,
    ARM_TRIGGER_OPERATORS,
    HUNTING_REQUIRED,
    KINDS,
    LONG_PERIOD,
    LONG_PERIOD_MIN_FREQUENCY,
    MAX_THRESHOLD,
    NRT_REQUIRED,
    SCHEDULED_REQUIRED,
    SENTINEL_QUERY_CHARS,
    TRIGGER_OPERATORS,
)
from shared.workbench.validate.sentinel import (
    _check_connectors,
    _check_custom_details,
    _check_entities,
    _check_grouping_and_suppression,
    _check_tactics,
    _check_techniques,
)
from shared.workbench.validate.sources import check_sources, rule_source

if TYPE_CHECKING:
    import yaml


def _check_file(path: Path) -> _Checked:
    c = _Checked(FileResult(str(path)))
    if not _read(c, path):
        return c
    parsed = _parse(c)
    if parsed is None:
        return c
    root, doc = parsed
    c.doc = doc
    c.nodes = _key_nodes(c, root)
    _check_schema(c)
    _check_loadable(c)
    return c


def _read(c: _Checked, path: Path) -> bool:
    from shared.rules.loader import MAX_FILE_BYTES

    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            c.error(f"file is {size:,} bytes; the limit is {MAX_FILE_BYTES:,}", "file")
            return False
        c.text = path.read_text(encoding="utf-8")
    except OSError as exc:
        c.error(f"cannot read file: {exc.strerror or exc}", "file")
        return False
    except UnicodeDecodeError:
        c.error("file is not UTF-8 text", "file")
        return False
    return True


def _parse(c: _Checked) -> tuple[yaml.MappingNode, dict[str, Any]] | None:
    """The YAML's root node and document, or None when it cannot be used (the finding is recorded)."""
    import yaml

    from shared.rules.yamlguard import YamlRefused, bad_scalar_line, check_shape

    loader = None
    try:
        check_shape(c.text, yaml.SafeLoader)  # before building anything: an alias bomb or deep nesting is refused
        loader = yaml.SafeLoader(c.text)
        root = loader.get_single_node()
        doc = loader.construct_document(root) if root is not None else None
    except YamlRefused as exc:
        c.result.findings.append(Finding(c.result.path, exc.line or 1, 1, ERROR, exc.reason, "yaml"))
        return None
    except (ValueError, OverflowError) as exc:  # a scalar YAML resolves but cannot build (2026-13-45)
        line = bad_scalar_line(c.text) or 1
        c.result.findings.append(Finding(c.result.path, line, 1, ERROR, f"a value YAML cannot read: {str(exc)[:200]}",
                                         "yaml"))  # fmt: skip
        return None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        c.result.findings.append(Finding(c.result.path, line, col, ERROR, f"invalid YAML: {problem}", "yaml"))
        return None
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(root, yaml.MappingNode) or not isinstance(doc, dict):
        c.error("a rule file must be a YAML mapping (id, name, query, ...)", "yaml", root)
        return None
    return root, doc


def _key_nodes(c: _Checked, root: yaml.MappingNode) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    import yaml

    nodes: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key_node, value_node in root.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if key is None:
            continue
        if key in nodes:
            c.error(f"duplicate key '{key}' (first at line {nodes[key][0].start_mark.line + 1}); "
                    "YAML keeps only the last", "yaml", key_node)  # fmt: skip
        nodes[key] = (key_node, value_node)
    return nodes


def _check_schema(c: _Checked) -> None:
    doc = c.doc
    if doc.get("kind") is not None:
        kind = str(doc["kind"])
        if kind not in KINDS:
            c.error(f"kind {kind!r} is not one of {', '.join(KINDS)} (the query-based rule kinds)", "kind",
                    c.node("kind"))  # fmt: skip
        c.result.kind = "nrt" if kind == "NRT" else "scheduled"
    elif doc.get("queryFrequency") is not None:
        c.result.kind = "scheduled"
    else:
        c.result.kind = "hunting"
    required = {"scheduled": SCHEDULED_REQUIRED, "nrt": NRT_REQUIRED}.get(c.result.kind, HUNTING_REQUIRED)
    what = {"scheduled": "a scheduled rule", "nrt": "an NRT rule"}.get(c.result.kind, "a hunting query")
    for key in required:
        if doc.get(key) is None:
            c.error(f"missing required field '{key}' (required in {what})", "required")
    if c.result.kind == "nrt":
        c.warning("kqlwatch does not run rules every minute: this NRT rule runs on kqlwatch's schedule "
                  "(queryFrequency, default 5m, over queryPeriod, default 1h)", "nrt", c.node("kind"))  # fmt: skip

    for key in ("name", "description"):
        value = doc.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            c.error(f"'{key}' must be non-empty text", "type", c.node(key))
    _check_id(c)
    _check_query(c)
    _check_severity(c)
    _check_schedule(c)
    _check_trigger(c)
    tactics = _check_tactics(c)
    _check_techniques(c, tactics)
    _check_connectors(c)
    _check_entities(c)
    _check_custom_details(c)
    _check_grouping_and_suppression(c)
    version = doc.get("version")
    if version is not None and not (isinstance(version, str) and _VERSION.match(version)):
        c.error(f"version {version!r} must be text in the form X.Y.Z (e.g. 1.0.0; quote it in YAML)", "version",
                c.node("version"))  # fmt: skip


def _check_id(c: _Checked) -> None:
    value = c.doc.get("id")
    if value is not None and not (isinstance(value, str) and is_guid(value.strip())):
        c.error(f"id {value!r} is not a GUID (e.g. {'a256f4ea-deec-4fcd-bdf3-63987638eed9'})", "id", c.node("id"))


def _check_query(c: _Checked) -> None:
    import yaml

    value, node = c.doc.get("query"), c.node("query")
    if value is None:
        return
    if not isinstance(value, str) or not isinstance(node, yaml.ScalarNode):
        c.error("'query' must be text", "type", node)
        return
    if not value.strip():
        c.error("'query' is empty", "query", node)
        return
    if len(value) > SENTINEL_QUERY_CHARS:
        c.warning(f"query is {len(value):,} characters; Sentinel's limit is {SENTINEL_QUERY_CHARS:,}", "query", node)
    key_node = c.nodes["query"][0]
    c.query = _Query(value, node, key_node.start_mark.column)


def _check_severity(c: _Checked) -> None:
    from shared.rules.loader import SEVERITIES

    value = c.doc.get("severity")
    if value is not None and value not in SEVERITIES:
        c.error(f"severity {value!r} is not one of {', '.join(SEVERITIES)}", "severity", c.node("severity"))


def _check_schedule(c: _Checked) -> None:
    from shared.rules.durations import format_duration

    frequency = _duration(c, "queryFrequency")
    period = _duration(c, "queryPeriod")
    if frequency is None or period is None:
        return
    if period < frequency:
        c.error(f"queryPeriod {format_duration(period)} is shorter than queryFrequency {format_duration(frequency)}: "
                "rows between runs would never be queried", "schedule", c.node("queryPeriod"))  # fmt: skip
    if period >= LONG_PERIOD and frequency < LONG_PERIOD_MIN_FREQUENCY:
        c.error(f"a queryPeriod of 2d or more ({format_duration(period)}) needs a queryFrequency of 1h or more, "
                f"not {format_duration(frequency)} (Sentinel's limit)", "schedule",
                c.node("queryFrequency"))  # fmt: skip


def _check_trigger(c: _Checked) -> None:
    operator = c.doc.get("triggerOperator")
    if operator is not None:
        if not isinstance(operator, str):
            c.error(f"triggerOperator must be one of {', '.join(TRIGGER_OPERATORS)}, not a {type(operator).__name__}",
                    "trigger", c.node("triggerOperator"))  # fmt: skip
        elif operator in ARM_TRIGGER_OPERATORS:
            c.warning(f"triggerOperator {operator!r} is the ARM spelling; Sentinel YAML uses "
                      f"{ARM_TRIGGER_OPERATORS[operator]!r}", "trigger", c.node("triggerOperator"))  # fmt: skip
        elif operator not in TRIGGER_OPERATORS:
            c.error(f"triggerOperator {operator!r} is not one of {', '.join(TRIGGER_OPERATORS)}", "trigger",
                    c.node("triggerOperator"))  # fmt: skip
    threshold = c.doc.get("triggerThreshold")
    if threshold is not None and (
        not isinstance(threshold, int) or isinstance(threshold, bool) or not 0 <= threshold <= MAX_THRESHOLD
    ):
        c.error(f"triggerThreshold {threshold!r} must be a whole number from 0 to {MAX_THRESHOLD:,}", "trigger",
                c.node("triggerThreshold"))  # fmt: skip


def _check_loadable(c: _Checked) -> None:
    """kqlwatch's own loader must accept the file too (its `kqlwatch:` section, its limits)."""
    from shared.errors import RuleError
    from shared.rules.ingestion import for_rule
    from shared.rules.loader import parse_rule

    if c.result.errors:
        return  # the loader stops at the first problem, most likely one reported above
    try:
        rule = parse_rule(c.text, c.result.path)
        choice = for_rule(rule)
        if rule_source(rule)[0] == DEFENDER:  # issue 15: advanced hunting has no ingestion time
            c.result.window = "timestamp (Defender: no ingestion time)"
        else:
            c.result.window = f"{choice.mode} ({choice.reason})"
        check_sources(c, rule)
    except RuleError as exc:
        c.result.findings.append(
            Finding(c.result.path, exc.line or 1, 1, ERROR, f"kqlwatch cannot load this rule: {exc.reason}", "kqlwatch")
        )
    except Exception as exc:  # a loader bug must not hide the other files' results
        c.error(f"kqlwatch's rule loader failed: {type(exc).__name__}: {exc}", "kqlwatch")


def _check_duplicate_ids(checked: Sequence[_Checked]) -> None:
    first: dict[str, str] = {}
    for c in checked:
        value = c.doc.get("id")
        if not isinstance(value, str) or not value.strip():
            continue
        key = value.strip().lower()
        if key in first:
            c.error(f"duplicate id {value.strip()} (first used in {first[key]})", "duplicate-id", c.node("id"))
        else:
            first[key] = c.result.path
