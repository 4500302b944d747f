"""The hit store's rows, pure: the records kqlwatch keeps (hits, rule state, runs) and their Table Storage
entities, with every value clipped to what a property can hold. No Azure import; shared.runtime.store does the I/O.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from shared.runtime.lots import Lot
from shared.runtime.runlease import STATE_ROW as STATE_ROW  # re-exported: one literal for the row
from shared.runtime.runlease import RunMark
from shared.runtime.sanitize import scrub_surrogates, utf16_units

RUN_PREFIX = "~run~"

ENTITY_PREFIX = "~ent~"  # an entity's last alert, for kqlwatch.realert

TABLES_PARTITION = "~tables"  # one entity per source table: its last ingestion time, when it was last probed

NOTICE_PREFIX = "~notice~"  # a notice that must be sent once (an expired exclusion)

MAX_PROPERTY_UNITS = 32_768  # a string property holds 64 KiB: 32K UTF-16 code units (an emoji counts 2)

MAX_ROW_UNITS = 30_000  # the Row property, with room to spare

MINIMAL_ROW_UNITS = 2_000  # a hit Table Storage refused anyway is stored with only this much of its row

MAX_TEXT_UNITS = 4_000  # errors and other free text we store

# What the card shows of an email hit: kept first when a row must be clipped.
CARD_COLUMNS = (
    "NetworkMessageId",
    "RecipientEmailAddress",
    "Subject",
    "SenderFromAddress",
    "SenderDisplayName",
    "SenderMailFromAddress",
    "SenderIPv4",
    "SenderIPv6",
    "AuthenticationDetails",
    "DeliveryAction",
    "DeliveryLocation",
    "TimeGenerated",
    "Timestamp",
    "SPF",
    "DKIM",
    "DMARC",
    "CompAuth",
)

_MAX_TICKS = 10**19

HIT_SHAPE = 2  # on the state row: this rule's pending hits are in lots (1, absent: each hit said so itself)

PENDING, DELIVERED, DROPPED, SUPPRESSED = "pending", "delivered", "dropped", "suppressed"


@dataclass
class Hit:
    key: str
    row: dict[str, Any]
    first_seen: datetime
    delivered_to: frozenset[str] = frozenset()
    attempts: int = 0
    etag: str | None = None
    lease_owner: str = ""
    lease_until: datetime | None = None
    truncated: bool = False
    status: str = "pending"
    store_note: str = ""  # why Table Storage holds only a minimal form of this hit (empty: stored in full)
    lot: Lot | None = None  # the pending lot that holds its lease and delivery (None: settled, or not pending)
    slot: int = 0  # its place in the lot
    row_loaded: bool = True  # False: read from the pending index, the row not fetched yet (only cards need it)


@dataclass
class RuleState:
    last_window_end: datetime | None = None
    last_run: datetime | None = None
    last_success: datetime | None = None
    last_error: str = ""
    failing_since: datetime | None = None
    consecutive_failures: int = 0
    runs: int = 0
    hits_total: int = 0
    delivered_total: int = 0
    last_rows: int = 0
    suppressed_until: datetime | None = None  # Sentinel suppression after an alert
    failure_notified_at: datetime | None = None  # last "rule failing" notice (at most one an hour)
    last_purge: datetime | None = None
    # issue 13: ingestion-time windows, silence alerts, blind spots
    window_mode: str = ""  # the mode the last run used (shown by `kqlwatch status`)
    last_sweep_end: datetime | None = None  # ingestion watermark of the last full-lateness sweep
    silence_since: datetime | None = None  # first run of the current run of empty results that met the trigger
    blind: dict[str, datetime] = field(default_factory=dict)  # source table -> its last row, while reported blind
    sources_checked: datetime | None = None  # when this rule last looked at its source tables' last rows


@dataclass
class Snapshot:
    state: RuleState
    pending: list[Hit] = field(default_factory=list)
    # Issue 14: the state row's etag and the run lease on it (shared.runtime.runlease); None: no state row yet.
    etag: str | None = None
    lease: RunMark = field(default_factory=RunMark)
    old_hits: bool = False  # the state row predates lots: its pending hits get lots first (read_snapshot)


@dataclass(frozen=True)
class RunRecord:
    started: datetime
    window_start: datetime | None
    window_end: datetime | None
    rows: int
    new_hits: int
    delivered: int
    deferred: int
    dropped: int
    errors: Sequence[str]
    duration_ms: int


def datetime_columns(row: Mapping[str, Any]) -> dict[str, str]:
    """The row's datetime columns, as encode_row takes them (decode_row turns them back into datetimes)."""
    return {k: "datetime" for k, v in row.items() if isinstance(v, datetime)}


def encode_row(
    row: Mapping[str, Any], types: Mapping[str, str], *, budget: int | None = None, columns: Sequence[str] | None = None
) -> tuple[str, bool]:
    """Row -> JSON that fits one property, and whether values had to be clipped to get there (the card's
    query link shows the full row). Size is counted as Table Storage counts it, in UTF-16 code units, so
    16,500 emoji (33,000 units) are clipped, not refused; lone surrogates become U+FFFD. The columns the
    card shows go first, so clipping hundreds of columns never drops the subject or the message id."""
    budget = MAX_ROW_UNITS if budget is None else budget
    plain = {
        k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items() if columns is None or k in columns
    }
    kinds = {k: t for k, t in types.items() if k in plain and t == "datetime"}
    for limit in (None, 4000, 500, 100, 20):
        values = plain if limit is None else {k: _clip_value(v, _limit_for(k, limit)) for k, v in plain.items()}
        text = _row_json(values, kinds)
        if utf16_units(text) <= budget:
            return text, limit is not None
    # Hundreds of columns: the card's first, then the first others that fit (each costs about its own
    # `{"key": value}`: braces stand in for the ", " between entries). Kept in the row's own order.
    clipped = {k: _clip_value(v, _limit_for(k, 20)) for k, v in plain.items()}
    room = budget - utf16_units(_row_json({}, kinds))
    kept: list[str] = []
    for key in sorted(plain, key=lambda k: k not in CARD_COLUMNS):
        room -= utf16_units(json.dumps({key: clipped[key]}, ensure_ascii=False, default=str))
        if room < 0:
            break
        kept.append(key)
    while True:
        chosen = set(kept)
        text = _row_json({k: clipped[k] for k in plain if k in chosen}, kinds)
        if not kept or utf16_units(text) <= budget:
            return text, True
        kept.pop()  # the estimate was short: drop the last column taken


def _limit_for(column: str, limit: int) -> int:
    # The card's columns keep enough for the card (it shows at most 120 characters; ids whole).
    return max(limit, 200) if column in CARD_COLUMNS else limit


def _row_json(values: Mapping[str, Any], kinds: Mapping[str, str]) -> str:
    return scrub_surrogates(json.dumps({"row": values, "types": kinds}, ensure_ascii=False, default=str))


def _clip_value(value: Any, limit: int) -> Any:
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False, default=str)
    return _clip(value, limit) if isinstance(value, str) else value


def decode_row(text: str) -> dict[str, Any]:
    try:
        body = json.loads(text)
    except ValueError:
        return {"_kqlwatch": "stored row could not be read"}
    row = dict(body.get("row") or {})
    for column in body.get("types") or {}:
        value = row.get(column)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                row[column] = datetime.fromisoformat(value)
    return row


def _hit_entity(rule_id: str, hit: Hit, *, status: str, minimal: str = "") -> dict[str, Any]:
    """A hit stored alone, the shape before packs (shared.runtime.packs): what the dedupe, `kqlwatch status` and
    old lots still read, and what the burst benchmark's storage floor writes. `minimal` (the reason) keeps only
    the card's columns, in MINIMAL_ROW_UNITS."""
    types = datetime_columns(hit.row)
    if minimal:
        row_json, clipped = encode_row(hit.row, types, budget=MINIMAL_ROW_UNITS, columns=CARD_COLUMNS)
    else:
        row_json, clipped = encode_row(hit.row, types)
    return _drop_none(
        {
            "PartitionKey": rule_id,
            "RowKey": hit.key,
            "Kind": "hit",
            "Status": status,
            "FirstSeen": hit.first_seen,
            "Row": row_json,
            "Truncated": hit.truncated or clipped,
            "DeliveredTo": ",".join(sorted(hit.delivered_to)),
            "Attempts": hit.attempts,
            "LeaseOwner": hit.lease_owner,
            "LeaseUntil": hit.lease_until,
            "StoreNote": minimal or None,
            "Lot": hit.lot.id if hit.lot else None,
        }
    )


def errors_json(errors: Sequence[str], budget: int = 8000) -> str:
    """A run's errors as a JSON list that fits its property: each clipped, then as many as fit (clipping the
    JSON text itself would leave it unreadable)."""
    kept: list[str] = []
    for error in errors:
        candidate = [*kept, scrub_surrogates(_clip(error, 1000))]
        if utf16_units(json.dumps(candidate)) > budget:
            break
        kept = candidate
    return json.dumps(kept)


def _hit_patch(rule_id: str, hit: Hit, changes: Mapping[str, Any]) -> dict[str, Any]:
    patch = {
        "PartitionKey": rule_id,
        "RowKey": hit.key,
        "DeliveredTo": ",".join(sorted(hit.delivered_to)),
        "Attempts": hit.attempts,
        "LeaseOwner": hit.lease_owner,
        # An empty lease is written as the epoch: MERGE cannot remove a property.
        "LeaseUntil": hit.lease_until or datetime(1970, 1, 1, tzinfo=timezone.utc),
    }
    patch.update(changes)
    return patch


def _hit_from(entity: Mapping[str, Any]) -> Hit:
    delivered = entity.get("DeliveredTo") or ""
    lease = _utc(entity.get("LeaseUntil"))
    return Hit(
        key=entity["RowKey"],
        row=decode_row(entity.get("Row") or "{}"),
        first_seen=_utc(entity.get("FirstSeen")) or datetime.now(timezone.utc),
        delivered_to=frozenset(d for d in delivered.split(",") if d),
        attempts=int(entity.get("Attempts") or 0),
        etag=getattr(entity, "metadata", {}).get("etag"),
        lease_owner=entity.get("LeaseOwner") or "",
        lease_until=lease if lease and lease > datetime(1971, 1, 1, tzinfo=timezone.utc) else None,
        truncated=bool(entity.get("Truncated")),
        status=entity.get("Status") or PENDING,
        store_note=entity.get("StoreNote") or "",
    )


def _state_fields(state: RuleState) -> dict[str, Any]:
    return {
        "LastWindowEnd": state.last_window_end,
        "LastRun": state.last_run,
        "LastSuccess": state.last_success,
        "LastError": scrub_surrogates(_clip(state.last_error, MAX_TEXT_UNITS // 2)),
        "FailingSince": state.failing_since,
        "ConsecutiveFailures": state.consecutive_failures,
        "Runs": state.runs,
        "HitsTotal": state.hits_total,
        "DeliveredTotal": state.delivered_total,
        "LastRows": state.last_rows,
        "SuppressedUntil": state.suppressed_until,
        "FailureNotifiedAt": state.failure_notified_at,
        "LastPurge": state.last_purge,
        "WindowMode": state.window_mode,
        "LastSweepEnd": state.last_sweep_end,
        "SilenceSince": state.silence_since,
        "SourcesChecked": state.sources_checked,
        "Blind": json.dumps({t: v.isoformat() for t, v in sorted(state.blind.items())[:50]}),
        "HitShape": HIT_SHAPE,
    }


def _state_from(entity: Mapping[str, Any]) -> RuleState:
    return RuleState(
        last_window_end=_utc(entity.get("LastWindowEnd")),
        last_run=_utc(entity.get("LastRun")),
        last_success=_utc(entity.get("LastSuccess")),
        last_error=entity.get("LastError") or "",
        failing_since=_utc(entity.get("FailingSince")),
        consecutive_failures=int(entity.get("ConsecutiveFailures") or 0),
        runs=int(entity.get("Runs") or 0),
        hits_total=int(entity.get("HitsTotal") or 0),
        delivered_total=int(entity.get("DeliveredTotal") or 0),
        last_rows=int(entity.get("LastRows") or 0),
        suppressed_until=_utc(entity.get("SuppressedUntil")),
        failure_notified_at=_utc(entity.get("FailureNotifiedAt")),
        last_purge=_utc(entity.get("LastPurge")),
        window_mode=entity.get("WindowMode") or "",
        last_sweep_end=_utc(entity.get("LastSweepEnd")),
        silence_since=_utc(entity.get("SilenceSince")),
        sources_checked=_utc(entity.get("SourcesChecked")),
        blind=_blind_from(entity.get("Blind")),
    )


def _blind_from(text: Any) -> dict[str, datetime]:
    try:
        raw = json.loads(text) if isinstance(text, str) and text else {}
        return {str(t): datetime.fromisoformat(v) for t, v in raw.items()} if isinstance(raw, dict) else {}
    except ValueError:
        return {}


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    plain = datetime(
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
        tzinfo=value.tzinfo or timezone.utc,
    )
    return plain.astimezone(timezone.utc)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _drop_none(entity: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entity.items() if v is not None}


def lease_is_free(hit: Hit, now: datetime) -> bool:
    return hit.lease_until is None or hit.lease_until <= now


def expired(hit: Hit, now: datetime, max_age: timedelta) -> bool:
    return now - hit.first_seen > max_age
