"""What `kqlwatch validate` reports (findings, per-file results, the report) and the per-file checking state."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from shared.workbench.validate.reference import MAX_DURATION, MIN_DURATION

if TYPE_CHECKING:
    import yaml


ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    col: int
    severity: str  # "error" | "warning"
    message: str
    code: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.severity}: {self.message} [{self.code}]"


@dataclass
class FileResult:
    path: str
    kind: str = "unreadable"  # "scheduled" | "nrt" | "hunting" | "unreadable"
    findings: list[Finding] = field(default_factory=list)
    window: str = ""  # issue 13: the run's window mode and why, when kqlwatch can load the rule

    @property
    def errors(self) -> int:
        return sum(f.severity == ERROR for f in self.findings)

    @property
    def warnings(self) -> int:
        return sum(f.severity == WARNING for f in self.findings)

    def verdict(self) -> str:
        what = {"scheduled": "scheduled rule", "nrt": "NRT rule", "hunting": "hunting query"}.get(self.kind, self.kind)
        tally = ((self.errors, "error"), (self.warnings, "warning"))
        counts = [f"{n} {word}{'s' if n != 1 else ''}" for n, word in tally if n]
        return f"{'invalid' if self.errors else 'valid'}, {what}" + (f" ({', '.join(counts)})" if counts else "")


@dataclass(frozen=True)
class Report:
    files: list[FileResult]
    problems: list[Finding]  # not about one rule file (a path that does not exist, a dangling symlink)

    @property
    def ok(self) -> bool:
        return all(p.severity != ERROR for p in self.problems) and all(f.errors == 0 for f in self.files)

    def findings(self) -> list[Finding]:
        return self.problems + [f for r in self.files for f in sorted(r.findings, key=_finding_order)]

    def summary(self) -> str:
        kinds = Counter(r.kind for r in self.files)
        with_errors = sum(r.errors > 0 for r in self.files)
        warnings = sum(r.warnings for r in self.files)
        labels = {"scheduled": "scheduled", "nrt": "NRT", "hunting": "hunting quer", "unreadable": "unreadable"}
        described = ", ".join(
            f"{kinds[k]} {label}" + ({1: "y"}.get(kinds[k], "ies") if k == "hunting" else "")
            for k, label in labels.items()
            if kinds[k]
        )
        return (
            f"validate: {len(self.files)} file{'' if len(self.files) == 1 else 's'}, {len(self.files) - with_errors} "
            f"valid, {with_errors} with errors, {warnings} warning{'' if warnings == 1 else 's'}"
            + (f" ({described})" if described else "")
        )

    def counts_by_code(self) -> Counter[tuple[str, str]]:
        return Counter((f.severity, f.code) for f in self.findings())


@dataclass(frozen=True)
class KqlResult:
    """Kusto.Language's verdict on one query."""

    diagnostics: list[dict[str, Any]]
    tables: list[str]
    tables_without_schema: list[str]
    columns: list[str] | None  # output columns, None when not all known


@dataclass
class _Query:
    value: str
    node: yaml.ScalarNode
    key_col: int


@dataclass
class _Checked:
    result: FileResult
    text: str = ""
    doc: Mapping[str, Any] = field(default_factory=dict)
    nodes: Mapping[str, tuple[yaml.Node, yaml.Node]] = field(default_factory=dict)  # key -> (key node, value node)
    query: _Query | None = None

    def add(self, severity: str, message: str, code: str, node: yaml.Node | None = None) -> None:
        line, col = (node.start_mark.line + 1, node.start_mark.column + 1) if node is not None else (1, 1)
        self.result.findings.append(Finding(self.result.path, line, col, severity, message, code))

    def error(self, message: str, code: str, node: yaml.Node | None = None) -> None:
        self.add(ERROR, message, code, node)

    def warning(self, message: str, code: str, node: yaml.Node | None = None) -> None:
        self.add(WARNING, message, code, node)

    def node(self, key: str) -> yaml.Node | None:
        pair = self.nodes.get(key)
        return pair[1] if pair else None

    def shaped(self, key: str, kind: type[yaml.Node], message: str, code: str) -> Any:
        """The field's node when it is set and of `kind` (a list or a mapping); otherwise None, and a wrong
        shape is reported with `message`."""
        node = self.node(key)
        if node is None or self.doc.get(key) is None:
            return None
        if not isinstance(node, kind):
            self.error(message, code, node)
            return None
        return node


def _list_of_text(c: _Checked, key: str) -> list[tuple[str, yaml.Node]]:
    """The items of a list-of-text field with their nodes; reports a wrong shape."""
    import yaml

    node = c.shaped(key, yaml.SequenceNode, f"'{key}' must be a list", "type")
    if node is None:
        return []
    items: list[tuple[str, yaml.Node]] = []
    for item in node.value:
        if isinstance(item, yaml.ScalarNode) and item.tag.endswith(":str") and item.value.strip():
            items.append((item.value.strip(), item))
        else:
            c.error(f"each entry of '{key}' must be a name", "type", item)
    return items


def _is_text(node: yaml.Node | None) -> bool:
    import yaml

    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":str")


def _mapping(node: yaml.Node | None) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    import yaml

    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: (k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)}


def _finding_order(f: Finding) -> tuple[int, int]:
    return f.line, f.col


def _duration(c: _Checked, key: str) -> timedelta | None:
    from shared.rules.durations import format_duration, parse_duration

    value = c.doc.get(key)
    if value is None:
        return None
    try:
        parsed = parse_duration(str(value))
    except ValueError as exc:
        c.error(f"{key}: {exc}", "duration", c.node(key))
        return None
    except OverflowError:  # "99999999999d": more days than a timedelta holds
        c.error(f"{key}: {str(value)[:40]!r} is too long a duration", "duration", c.node(key))
        return None
    if key in ("queryFrequency", "queryPeriod") and not MIN_DURATION <= parsed <= MAX_DURATION:
        c.error(f"{key} {format_duration(parsed)} is outside Sentinel's range of 5m to 14d", "duration", c.node(key))
        return None
    return parsed
