"""Sentinel's rules as the Azure-Sentinel CI checks them: required fields, limits, and its reference data
(tactics, entity identifiers, connector ids) from shared/schemas/sentinel_reference.json."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"

SCHEDULED_REQUIRED = (
    "id", "name", "description", "severity", "requiredDataConnectors", "queryFrequency", "queryPeriod",
    "triggerOperator", "triggerThreshold", "tactics", "relevantTechniques", "query", "entityMappings", "version",
    "kind",
)  # fmt: skip

# Sentinel's NRT rules run every minute: no schedule or trigger fields.
NRT_REQUIRED = tuple(
    k for k in SCHEDULED_REQUIRED if k not in ("queryFrequency", "queryPeriod", "triggerOperator", "triggerThreshold")
)

HUNTING_REQUIRED = ("id", "name", "description", "query")

KINDS = ("Scheduled", "NRT")

MIN_DURATION, MAX_DURATION = timedelta(minutes=5), timedelta(days=14)

LONG_PERIOD, LONG_PERIOD_MIN_FREQUENCY = timedelta(days=2), timedelta(hours=1)

MAX_SUPPRESSION = timedelta(hours=24)

SENTINEL_QUERY_CHARS = 10_000

MAX_THRESHOLD = 10_000

TRIGGER_OPERATORS = ("gt", "lt", "eq", "ne")

ARM_TRIGGER_OPERATORS = {"GreaterThan": "gt", "LessThan": "lt", "Equal": "eq", "NotEqual": "ne"}

AGGREGATIONS = ("SingleAlert", "AlertPerResult")

_REFERENCE = json.loads((SCHEMAS / "sentinel_reference.json").read_text(encoding="utf-8"))
# Sentinel's tactic names (ATT&CK Enterprise and ICS; PreAttack is Sentinel's older name for the pre-attack ones).
TACTICS: tuple[str, ...] = tuple(_REFERENCE["tactics"])

_TECHNIQUE = re.compile(r"^T\d{4}(\.\d{3})?$")

_VERSION = re.compile(r"^\d+\.\d+\.\d+$")

_COLUMN = re.compile(r"^[a-zA-Z_]+\w*$")  # Sentinel: entity/custom-detail columns

_DETAIL_KEY = re.compile(r"^[a-zA-Z]+\w*$")

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")

# Entity type -> (its identifiers, the minimal sets of identifiers that identify one).
ENTITY_IDENTIFIERS: dict[str, tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]] = {
    kind: (tuple(names), tuple(tuple(s) for s in sets))
    for kind, (names, sets) in _REFERENCE["entityIdentifiers"].items()
}

# Data connector ids (Azure-Sentinel CI's ValidConnectorIds.json, the Microsoft ones and those the bundled corpus
# uses). Not exhaustive - an id missing here is a warning, not an error.
CONNECTOR_IDS: frozenset[str] = frozenset(_REFERENCE["connectorIds"])


def _normalise(name: str) -> str:
    return re.sub(r"[\s_-]", "", name).lower()


_TACTIC_BY_NORMAL = {_normalise(t): t for t in TACTICS}


@cache
def technique_tactics() -> dict[str, tuple[str, ...]]:
    """ATT&CK technique id (no sub-technique) -> its tactics, from shared/schemas/mitre_techniques.json."""
    data = json.loads((SCHEMAS / "mitre_techniques.json").read_text(encoding="utf-8"))
    return {str(k): tuple(str(t) for t in v) for k, v in data["techniques"].items()}
