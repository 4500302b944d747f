"""Triggers met by zero rows (issue 13): a rule whose trigger an empty result meets (LessThan N, Equal 0,
NotEqual k > 0) alerts on the silence itself, once per silence. Moved out of detector.py (house limit)."""

from __future__ import annotations

import hashlib
from datetime import datetime

from shared.rules.loader import Rule, trigger_met
from shared.runtime.loganalytics import QueryResult
from shared.runtime.store import Hit, RuleState, StateStore
from shared.runtime.window import Window

_OPERATOR_WORDS = {
    "gt": "more than",
    "GreaterThan": "more than",
    "lt": "fewer than",
    "LessThan": "fewer than",
    "eq": "exactly",
    "Equal": "exactly",
    "ne": "other than",
    "NotEqual": "other than",
}


def record_silence(
    store: StateStore,
    rule: Rule,
    state: RuleState,
    result: QueryResult,
    window: Window,
    now: datetime,
    run_id: str,
    lease_until: datetime,
) -> list[Hit]:
    """A trigger met by an empty result is one hit per silence: its identity is the rule and the run the silence
    began, so later runs of the same silence find it in the ledger. With suppressionDuration or
    kqlwatch.realert.window set, a silence still lasting after that long alerts again (one more identity per
    elapsed window)."""
    if result.rows or not trigger_met(rule, 0):
        state.silence_since = None
        return []
    since = state.silence_since = state.silence_since or now
    every = rule.suppression or rule.realert_window
    repeat = int((now - since) / every) if every else 0
    key = hashlib.sha256(f"silence\x00{rule.id}\x00{since.isoformat()}\x00{repeat}".encode()).hexdigest()
    row = {
        "Expected": f"{_OPERATOR_WORDS.get(rule.trigger_operator, rule.trigger_operator)} "
        f"{rule.trigger_threshold} row(s)",
        "Found": "0 rows",
        "SilentSince": since,
        "WindowStart": window.start,
        "WindowEnd": window.end,
    }
    hit = Hit(key, row, first_seen=now, lease_owner=run_id, lease_until=lease_until)
    return store.insert_new(rule.id, [hit])
