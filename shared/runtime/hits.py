"""Where dedupe happens, all of it: what makes two rows "the same hit" (identity), one hit per identity in a
result (collapse), and recording only the hits no earlier or concurrent run recorded (the keys the store knows,
read and written under the rule's run lease: shared.runtime.hitstore). The detector and `kqlwatch hunt`/`preview` both use these; there is no other copy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from shared.errors import RuleError
from shared.rules.loader import Rule, trigger_met

if TYPE_CHECKING:
    from shared.runtime.store import Hit, RuleState, StateStore

Row = TypeVar("Row", bound=Mapping[str, Any])

# EmailEvents emits a new row when a message's verdict or location changes; the message-recipient
# pair is what a SOC wants to hear about once.
EMAIL_IDENTITY = ("NetworkMessageId", "RecipientEmailAddress")
# Issue 15, kqlwatch.union: Log Analytics sets every row's TenantId to its workspace's id (customerId), so in one
# cross-workspace result it says where the row came from: the same row in two workspaces is two hits.
WORKSPACE_COLUMN = "TenantId"


def identity_columns(
    columns: Sequence[str],
    time_columns: Sequence[str],
    *,
    dedupe_key: Sequence[str] = (),
    entity_columns: Sequence[str] = (),
) -> tuple[str, ...]:
    """Which columns identify a row: the rule's own key, else the email pair, else the entity
    columns, else every column that is not a time column."""
    if dedupe_key:
        return tuple(dedupe_key)
    if all(c in columns for c in EMAIL_IDENTITY):
        return EMAIL_IDENTITY
    present = tuple(c for c in entity_columns if c in columns)
    if present:
        return present
    return tuple(c for c in columns if c not in time_columns)


def identity(row: Mapping[str, Any], columns: Sequence[str]) -> str:
    """A hex digest usable as a Table Storage RowKey (no / \\ # ? or control characters)."""
    canonical = json.dumps([[c, _plain(row.get(c))] for c in columns], ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _plain(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def collapse(
    rule: Rule, columns: Sequence[str], time_columns: Sequence[str], rows: Sequence[Row]
) -> tuple[tuple[str, ...], dict[str, Row]]:
    """(identity columns, identity -> row) for a result: nothing unless the rule's trigger is met, then one row
    per identity - the same identity twice in one result (e.g. a verdict change) keeps the latest row, in
    first-seen order."""
    key = identity_columns(columns, time_columns, dedupe_key=rule.dedupe_key, entity_columns=rule.entity_columns)
    if rule.union and WORKSPACE_COLUMN in columns and WORKSPACE_COLUMN not in key:
        key = (*key, WORKSPACE_COLUMN)
    if not rows or not trigger_met(rule, len(rows)):
        return key, {}
    missing = [c for c in (*key, *rule.realert_key) if c not in columns]
    if missing:
        raise RuleError(rule.path, f"dedupe/realert key names column(s) the query does not return: {missing}")
    by_key: dict[str, Row] = {}
    for row in rows:
        by_key[identity(row, key)] = row
    return key, by_key


def entity(rule: Rule, hit: Hit) -> str:
    """The kqlwatch.realert identity of a hit: the same entity is not re-alerted within the realert window."""
    return identity(hit.row, rule.realert_key)


@dataclass(frozen=True)
class Recorded:
    created: list[Hit]  # recorded by this run: to deliver
    suppressed: int  # recorded as suppressed (Sentinel suppression or kqlwatch.realert)
    tail: list[Hit] = field(default_factory=list)  # a burst's rest, fresh and not recorded yet (record_tail)


def record_new(
    store: StateStore,
    rule: Rule,
    state: RuleState,
    hits: list[Hit],
    since: datetime,
    now: datetime,
    *,
    head: int | None = None,
) -> Recorded:
    """Record the hits this run is first to see (store.insert_new records only keys not known, behind the run
    lease's fence: a hit another run recorded first is not recorded again, so never sent twice); `since`: the
    hits re-read this run were first seen after it, so only a run with something new reads further back.
    `head`: a burst of more than twice that many hits to alert records only its first `head` now (the cards
    show no more); the rest is `tail`, for record_tail while the first cards go out (issue 14)."""
    from shared.runtime.store import SUPPRESSED

    if not hits:
        return Recorded([], 0)
    known = store.known_keys(rule.id, since)
    fresh = [h for h in hits if h.key not in known]
    if not fresh:
        return Recorded([], 0)
    # A hit first seen before `since` can come back in a later row (EmailEvents writes one per verdict change):
    # the whole ledger decides, read only when this run has something new.
    known |= store.known_keys(rule.id, before=since)
    fresh = [h for h in fresh if h.key not in known]
    if not fresh:
        return Recorded([], 0)
    to_alert, to_suppress = _suppression(store, rule, state, fresh, now)
    tail: list[Hit] = []
    if head is not None and len(to_alert) > 2 * head:
        to_alert, tail = to_alert[:head], to_alert[head:]
    created = store.insert_new(rule.id, to_alert, known=known)
    suppressed = store.insert_new(rule.id, to_suppress, status=SUPPRESSED, known=known) if to_suppress else []
    _mark_entities(store, rule, created, now)
    if rule.suppression and created:
        state.suppressed_until = now + rule.suppression
    return Recorded(created, len(suppressed), tail)


def record_tail(store: StateStore, rule: Rule, recorded: Recorded, now: datetime) -> list[Hit]:
    """Record a burst's tail (record_new's `head`): the same recording, later, and the only recording of the run
    then (each recording transaction moves the run lease's fence, so two at once would fail each other). Its
    hits were checked against the ledger with the rest and are distinct from them: nothing is known to skip."""
    created = store.insert_new(rule.id, recorded.tail, known=set())
    _mark_entities(store, rule, created, now)
    return created


def _mark_entities(store: StateStore, rule: Rule, created: list[Hit], now: datetime) -> None:
    if rule.realert_key and created:
        store.mark_entities(rule.id, {entity(rule, h) for h in created}, now)


def _suppression(
    store: StateStore, rule: Rule, state: RuleState, hits: list[Hit], now: datetime
) -> tuple[list[Hit], list[Hit]]:
    """Sentinel's suppression (no alert for a while after one), then kqlwatch.realert (the same entity is
    not re-alerted within its window; another entity is). Read at run time, so a change applies at once."""
    if rule.suppression and state.suppressed_until and now < state.suppressed_until:
        return [], hits
    if not rule.realert_key or not rule.realert_window:
        return hits, []
    seen = store.recent_entities(rule.id, now - rule.realert_window)
    alert: list[Hit] = []
    quiet: list[Hit] = []
    for hit in hits:
        key = entity(rule, hit)
        (quiet if key in seen else alert).append(hit)
        seen.add(key)
    return alert, quiet
