"""The Rule: a Sentinel rule as kqlwatch runs it (typed, validated by shared.rules.loader), and its trigger."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from shared.rules.exclusions import Exclusion

DEFAULT_FREQUENCY = timedelta(minutes=5)
DEFAULT_PERIOD = timedelta(hours=1)
DEFAULT_SEVERITY = "Medium"


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
    window: str = ""  # kqlwatch.window: ingestion | timegenerated; "" = automatic (shared.rules.ingestion.choose)
    silence_after: timedelta | None = None  # kqlwatch.silenceAfter: a source table this quiet means a blind rule
    enrich: tuple[str, ...] = ()  # kqlwatch.enrich (issue 16): e.g. ("mail-auth-dns",), see shared.rules.enrich
    source: str = ""  # kqlwatch.source (issue 15): defender | loganalytics; "" = KQLWATCH_SOURCE
    workspaces: tuple[str, ...] = ()  # kqlwatch.workspaces (issue 15): () = every KQLWATCH_WORKSPACE_ID
    union: bool = False  # kqlwatch.union (issue 15): one cross-workspace query over the workspaces, not one each


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
