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
