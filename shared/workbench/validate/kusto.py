"""The KQL check: Microsoft's Kusto.Language parser via tools/kusto-validate.js (one Node process for all
files), its findings mapped back onto the rule files."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from shared.errors import KqlwatchError
from shared.workbench.validate.locator import _code_point_offset, query_locator
from shared.workbench.validate.model import ERROR, WARNING, Finding, KqlResult, _Checked, _is_text, _mapping
from shared.workbench.validate.reference import _PLACEHOLDER, SCHEMAS

if TYPE_CHECKING:
    import yaml


ROOT = Path(__file__).resolve().parents[3]

KUSTO_SCRIPT = ROOT / "tools" / "kusto-validate.js"

KUSTO_PACKAGE = ROOT / "node_modules" / "@kusto" / "language-service-next"


def check_kql(queries: Sequence[str], *, timeout: float | None = None) -> list[KqlResult]:
    """Check queries with Kusto.Language against the shipped table schemas, in one Node process."""
    from shared.schemas import known_tables, table_schema
    from shared.workbench.workspace_schemas import workspace_tables

    if not queries:
        return []
    tables = {name: table_schema(name) or {} for name in known_tables()}
    tables.update(workspace_tables(queries))  # `validate --workspace`: the workspace's own schemas win
    return run_kusto_validate(queries, tables, timeout=timeout)


def run_kusto_validate(
    queries: Sequence[str], tables: Mapping[str, Mapping[str, str]], *, timeout: float | None = None
) -> list[KqlResult]:
    """Run tools/kusto-validate.js once over `queries`; KqlwatchError when Node or the package is missing."""
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        raise KqlwatchError("the KQL check needs Node.js 20+ on PATH (node not found); install it, then run npm ci "
                            f"in {ROOT} - or skip the check with --no-kql")  # fmt: skip
    if not KUSTO_PACKAGE.is_dir() or not KUSTO_SCRIPT.is_file():
        raise KqlwatchError(f"the KQL check needs @kusto/language-service-next in {ROOT / 'node_modules'}: run npm ci "
                            f"in {ROOT} - or skip the check with --no-kql")  # fmt: skip
    payload = json.dumps(
        {"tables": tables, "queries": [{"id": i, "text": q} for i, q in enumerate(queries)]}, ensure_ascii=False
    )
    limit = timeout if timeout is not None else 60.0 + 2.0 * len(queries)
    try:
        proc = subprocess.run(
            [node, str(KUSTO_SCRIPT)], input=payload, capture_output=True, text=True, encoding="utf-8",
            timeout=limit, cwd=ROOT, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise KqlwatchError(f"the KQL check (tools/kusto-validate.js) did not finish within {limit:.0f} s") from None
    except OSError as exc:
        raise KqlwatchError(f"cannot run node for the KQL check: {exc}") from None
    if proc.returncode != 0:
        detail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        hint = "; run npm ci" if "Cannot find module" in proc.stderr else ""
        raise KqlwatchError(f"the KQL check failed (tools/kusto-validate.js exit {proc.returncode}): {detail}{hint}")
    try:
        results = json.loads(proc.stdout)["results"]
    except (ValueError, KeyError, TypeError):
        raise KqlwatchError("the KQL check (tools/kusto-validate.js) printed no result") from None
    if len(results) != len(queries):
        raise KqlwatchError(f"the KQL check returned {len(results)} results for {len(queries)} queries")
    return [
        KqlResult(
            diagnostics=list(r.get("diagnostics") or []),
            tables=list(r.get("tables") or []),
            tables_without_schema=list(r.get("tablesWithoutSchema") or []),
            columns=r.get("columns"),
        )
        for r in sorted(results, key=lambda r: int(r["id"]))
    ]


def _apply_kql(c: _Checked, result: KqlResult) -> None:
    import difflib

    from shared.schemas import known_tables

    assert c.query is not None
    locate = query_locator(c.text, c.query.node, c.query.value, c.query.key_col)
    path = c.result.path
    for d in result.diagnostics:
        line, col = locate(_code_point_offset(c.query.value, int(d.get("start") or 0)))
        severity = ERROR if d.get("severity") == "Error" else WARNING
        message = str(d.get("message", "")).strip()
        table = d.get("table")
        if d.get("code") == "no-schema" and isinstance(table, str):
            close = difflib.get_close_matches(table, known_tables(), n=1, cutoff=0.85)
            if close:
                message += f" (did you mean {close[0]}?)"
        c.result.findings.append(Finding(path, line, col, severity, message, str(d.get("code") or "kql")))
    defender_only = _defender_only_tables()
    for table in result.tables:
        if table in defender_only:
            c.warning(f"table {table} is documented for Defender XDR advanced hunting only; kqlwatch queries Log "
                      "Analytics, where it may not exist", "defender-only", c.query.node)  # fmt: skip
    if result.columns is not None:
        _check_output_columns(c, set(result.columns))


def _check_output_columns(c: _Checked, columns: set[str]) -> None:
    """Entity mappings, custom details, alert placeholders and kqlwatch.dedupeKey must name output columns."""
    import yaml

    def check(name: str, node: yaml.Node, what: str) -> None:
        if name not in columns:
            c.error(f"{what} column {name!r} is not in the query's output ({', '.join(sorted(columns))})",
                    "column", node)  # fmt: skip

    entity_node = c.node("entityMappings")
    if isinstance(entity_node, yaml.SequenceNode):
        for mapping in entity_node.value:
            fields = _mapping(mapping).get("fieldMappings")
            if fields and isinstance(fields[1], yaml.SequenceNode):
                for item in fields[1].value:
                    column = _mapping(item).get("columnName")
                    if column and _is_text(column[1]) and column[1].value:
                        check(column[1].value, column[1], "entity mapping")
    details = c.node("customDetails")
    if isinstance(details, yaml.MappingNode):
        for _key, value in details.value:
            if _is_text(value):
                check(value.value, value, "customDetails")
    override = c.node("alertDetailsOverride")
    if isinstance(override, yaml.MappingNode):
        for key, value in override.value:
            if _is_text(key) and key.value.startswith("alert") and key.value.endswith("Format") and _is_text(value):
                for placeholder in _PLACEHOLDER.findall(value.value):
                    check(placeholder, value, f"alertDetailsOverride.{key.value}")
    extension = c.node("kqlwatch")
    dedupe = _mapping(extension).get("dedupeKey") if extension is not None else None
    if dedupe and isinstance(dedupe[1], yaml.SequenceNode):
        for item in dedupe[1].value:
            if _is_text(item):
                check(item.value, item, "kqlwatch.dedupeKey")


@cache
def _defender_only_tables() -> frozenset[str]:
    """Tables whose schema file says `"logAnalytics": false` (documented for Defender XDR advanced hunting only)."""
    found = set()
    for path in SCHEMAS.glob("*.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "columns" in data and data.get("logAnalytics") is False:
            found.add(path.stem)
    return frozenset(found)
