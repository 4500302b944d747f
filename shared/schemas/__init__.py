"""Table schemas (column -> Kusto type) for offline execution and validation."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

HERE = Path(__file__).parent


@cache
def table_schema(table: str) -> dict[str, str] | None:
    path = HERE / f"{table}.json"
    if not path.is_file():
        return None
    columns: dict[str, str] | None = json.loads(path.read_text(encoding="utf-8")).get("columns")
    return columns


def known_tables() -> list[str]:
    # Only table schemas (files with "columns"): other data lives here too (mitre_techniques.json).
    return sorted(p.stem for p in HERE.glob("*.json") if table_schema(p.stem) is not None)


@cache
def _sources() -> dict[str, frozenset[str]]:
    data = json.loads((HERE / "sources.json").read_text(encoding="utf-8"))
    return {name: frozenset(tables) for name, tables in data.items() if isinstance(tables, list)}


def tables_in(source: str) -> frozenset[str]:
    """The shipped tables a source serves (issue 15): "defender" (advanced hunting) or "loganalytics"."""
    return _sources().get(source, frozenset())


def sources_of(table: str) -> tuple[str, ...]:
    """The sources that serve `table` (custom `_CL` tables: workspaces only); () for a table not shipped."""
    if table.endswith("_CL"):
        return ("loganalytics",)
    return tuple(name for name, tables in sorted(_sources().items()) if table in tables)
