"""Issue 15: whether a rule's source can serve the tables its query reads (shared/schemas/sources.json).

A rule runs on Defender XDR advanced hunting or a Log Analytics workspace (`kqlwatch.source`, else
KQLWATCH_SOURCE, else loganalytics). Some tables exist in only one of them (MessageEvents in Defender only,
SecurityAlert and custom `_CL` tables in workspaces only); advanced hunting has Timestamp but no TimeGenerated.
Each mismatch is a warning: a workspace onboarded to the Defender portal can serve more than the lists say."""

from __future__ import annotations

import os

from shared.rules.fields import DEFENDER, LOG_ANALYTICS, NAMESPACE
from shared.rules.ingestion import source_tables
from shared.rules.kql import KqlLexError, tokenize
from shared.rules.model import Rule
from shared.schemas import known_tables, sources_of, tables_in
from shared.workbench.validate.model import _Checked

_NAMES = {DEFENDER: "Defender XDR advanced hunting", LOG_ANALYTICS: "a Log Analytics workspace"}


def rule_source(rule: Rule) -> tuple[str, str]:
    """(the source, where that choice comes from)."""
    if rule.source:
        return rule.source, f"{NAMESPACE}.source"
    default = (os.environ.get("KQLWATCH_SOURCE") or "").strip().lower()
    if default in _NAMES:
        return default, "KQLWATCH_SOURCE"
    return LOG_ANALYTICS, "the default"


def check_sources(c: _Checked, rule: Rule) -> None:
    source, chosen = rule_source(rule)
    names = {*known_tables(), *tables_in(DEFENDER), *tables_in(LOG_ANALYTICS)}
    try:
        tables = source_tables(rule.query, names)
        words = {t.text for t in tokenize(rule.query) if t.kind == "ident"}
    except KqlLexError:
        return  # reported by the KQL check
    node = c.node(NAMESPACE) if rule.source else c.node("query")
    for table in tables:
        served_by = sources_of(table)
        if served_by and source not in served_by:
            elsewhere = " and ".join(_NAMES[s] for s in served_by if s in _NAMES)
            c.warning(
                f"{table} is not in {_NAMES[source]} (source: {source}, from {chosen}); it is in {elsewhere}: "
                f"set {NAMESPACE}.source",
                "source",
                node,
            )
    if source == DEFENDER and "TimeGenerated" in words:
        c.warning(
            f"advanced hunting has no TimeGenerated column (source: defender, from {chosen}): use Timestamp",
            "source",
            node,
        )
