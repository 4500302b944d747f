"""Azure Table Storage: what kqlwatch has alerted on, what is still to be delivered, and each rule's runs.

One table; one partition per rule (PartitionKey = rule id):
  RowKey <sha256 hex>   a hit: Status pending|delivered|dropped, the row, DeliveredTo (webhook ids), a lease
  RowKey ~state         the rule's state: last window end, last success/error, consecutive failures
  RowKey ~run~<ticks>   one record per run (newest first)
Creating a hit is the dedupe: create_entity is first-writer-wins, so two runs never both own a hit.
A run owns a hit while its lease (LeaseOwner/LeaseUntil) holds; every update is conditional on the etag.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from shared.errors import StateError
from shared.sanitize import scrub_surrogates, utf16_units

if TYPE_CHECKING:
    from azure.data.tables import TableClient

log = logging.getLogger("kqlwatch.state")

STATE_ROW = "~state"
RUN_PREFIX = "~run~"
ENTITY_PREFIX = "~ent~"  # an entity's last alert, for kqlwatch.realert
TABLES_PARTITION = "~tables"  # one entity per source table: its last ingestion time, when it was last probed
NOTICE_PREFIX = "~notice~"  # a notice that must be sent once (an expired exclusion)
BATCH = 100  # entity-group transaction limit (the SDK fails on 101)
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


def connect(connection: str, table_name: str, *, retry_total: int = 3, credential: Any = None) -> TableClient:
    """A TableClient from an Azurite/account connection string, or from a Table service URL with Entra ID."""
    from azure.data.tables import TableClient

    from shared import redact

    redact.install()  # azure-core's transport and pipeline logs print request URLs
    options: dict[str, Any] = {
        "retry_total": retry_total,
        "retry_backoff_factor": 0.5,
        "connection_timeout": 10,
        "read_timeout": 30,
    }
    if connection.startswith(("https://", "http://")):
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential(exclude_interactive_browser_credential=True)
        return TableClient(endpoint=connection.rstrip("/"), table_name=table_name, credential=credential, **options)
    try:
        return TableClient.from_connection_string(connection, table_name=table_name, **options)
    except ValueError as exc:
        from shared.errors import ConfigError

        raise ConfigError("KQLWATCH_STATE_CONNECTION", f"is not a usable connection string or URL ({exc})") from None


class StateStore:
    def __init__(self, table: TableClient) -> None:
        self._table = table
        self._table_ready = False  # created (or found) once per process, not once per run

    def close(self) -> None:
        self._table.close()

    def ensure_table(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        if self._table_ready:
            return
        with _state_errors("create table"), contextlib.suppress(ResourceExistsError):
            self._table.create_table()
        self._table_ready = True

    # --- reading ---

    def snapshot(self, rule_id: str) -> Snapshot:
        """The rule's state and its pending hits, in one query."""
        query = "PartitionKey eq @pk and (RowKey eq @state or Status eq @pending )"
        snap = Snapshot(RuleState())
        with _state_errors(f"read state of rule {rule_id}"):
            for entity in self._table.query_entities(
                query, parameters={"pk": rule_id, "state": STATE_ROW, "pending": PENDING}
            ):
                if entity["RowKey"] == STATE_ROW:
                    snap.state = _state_from(entity)
                else:
                    snap.pending.append(_hit_from(entity))
        return snap

    def known_keys(self, rule_id: str, since: datetime) -> set[str]:
        """Keys of hits first seen since `since`: lets a run skip creating what it already knows."""
        with _state_errors(f"read hits of rule {rule_id}"):
            return {
                e["RowKey"]
                for e in self._table.query_entities(
                    "PartitionKey eq @pk and FirstSeen ge @since",
                    parameters={"pk": rule_id, "since": since},
                    select=["RowKey"],
                )
            }

    def pending_leases(self) -> dict[str, list[datetime | None]]:
        """Every rule's pending hits, as the end of the lease each is held under (None: free to deliver)."""
        out: dict[str, list[datetime | None]] = {}
        with _state_errors("read pending hits"):
            for e in self._table.query_entities(
                "Status eq @pending", parameters={"pending": PENDING}, select=["PartitionKey", "LeaseUntil"]
            ):
                lease = _utc(e.get("LeaseUntil"))
                out.setdefault(e["PartitionKey"], []).append(
                    lease if lease and lease > datetime(1971, 1, 1, tzinfo=timezone.utc) else None
                )
        return out

    def rule_states(self) -> dict[str, RuleState]:
        with _state_errors("read rule states"):
            return {
                e["PartitionKey"]: _state_from(e)
                for e in self._table.query_entities("RowKey eq @state", parameters={"state": STATE_ROW})
            }

    # --- writing hits ---

    def insert_new(self, rule_id: str, hits: Sequence[Hit], *, status: str = PENDING) -> list[Hit]:
        """Create the hits; return those this call created (an existing key means another run or an
        earlier one already owns that hit)."""
        from azure.data.tables import TableTransactionError

        created: list[Hit] = []
        for chunk in _chunks(hits, BATCH):
            entities = [_hit_entity(rule_id, hit, status=status) for hit in chunk]
            with _state_errors(f"record hits of rule {rule_id}"):
                try:
                    results = self._table.submit_transaction([("create", e) for e in entities])
                    created.extend(replace(h, etag=r.get("etag")) for h, r in zip(chunk, results, strict=True))
                    continue
                except TableTransactionError:
                    pass  # at least one already exists: the group failed atomically, fall back to one by one
                for hit, entity in zip(chunk, entities, strict=True):
                    one = self._create_one(rule_id, hit, entity, status)
                    if one is not None:
                        created.append(one)
        return created

    def _create_one(self, rule_id: str, hit: Hit, entity: dict[str, Any], status: str) -> Hit | None:
        """Create one hit; None if it already exists. A hit Table Storage refuses (400: a value our bounds
        missed) is stored in a minimal form instead, so it can never block the rule's other hits; the
        returned hit says so in `store_note` (the in-memory row, and so this run's card, stays whole)."""
        from azure.core.exceptions import HttpResponseError, ResourceExistsError

        try:
            meta = self._table.create_entity(entity)
            return replace(hit, etag=meta.get("etag"))
        except ResourceExistsError:
            return None
        except HttpResponseError as exc:
            if exc.status_code != 400:
                raise
            code = _error_code(exc)
        note = f"Table Storage refused the full hit ({code}); stored a minimal form"
        log.warning("hit %s of rule %s: %s", hit.key[:12], rule_id, note)
        try:
            meta = self._table.create_entity(_hit_entity(rule_id, hit, status=status, minimal=note))
        except ResourceExistsError:
            return None
        return replace(hit, etag=meta.get("etag"), store_note=note, truncated=True)

    def update_hits(self, rule_id: str, hits: Sequence[Hit], **changes: Any) -> list[Hit]:
        """Merge `changes` (and each hit's own lease/delivery fields) into the hits, each conditional on its
        etag. Returns the hits that were updated, with new etags; a hit another run changed is left out."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError
        from azure.data.tables import TableTransactionError, UpdateMode

        updated: list[Hit] = []
        for chunk in _chunks(hits, BATCH):
            patches = [_hit_patch(rule_id, hit, changes) for hit in chunk]
            options = [
                {"mode": UpdateMode.MERGE, "etag": h.etag, "match_condition": MatchConditions.IfNotModified}
                for h in chunk
            ]
            with _state_errors(f"update hits of rule {rule_id}"):
                try:
                    results = self._table.submit_transaction(
                        [("update", p, o) for p, o in zip(patches, options, strict=True)]
                    )
                    updated.extend(replace(h, etag=r.get("etag")) for h, r in zip(chunk, results, strict=True))
                    continue
                except TableTransactionError:
                    pass  # one of them changed under us: find out which, one by one
                for hit, patch in zip(chunk, patches, strict=True):
                    try:
                        meta = self._table.update_entity(
                            patch, mode=UpdateMode.MERGE, etag=hit.etag, match_condition=MatchConditions.IfNotModified
                        )
                        updated.append(replace(hit, etag=meta.get("etag")))
                    except ResourceModifiedError:
                        log.info("hit %s of rule %s changed by another run; leaving it to that run", hit.key, rule_id)
        return updated

    # --- entities (kqlwatch.realert) and one-time notices ---

    def recent_entities(self, rule_id: str, since: datetime) -> set[str]:
        with _state_errors(f"read entities of rule {rule_id}"):
            return {
                e["RowKey"][len(ENTITY_PREFIX) :]
                for e in self._table.query_entities(
                    "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi and LastAlerted ge @since",
                    parameters={"pk": rule_id, "lo": ENTITY_PREFIX, "hi": ENTITY_PREFIX + "~", "since": since},
                    select=["RowKey"],
                )
            }

    def mark_entities(self, rule_id: str, entity_keys: Iterable[str], when: datetime) -> None:
        from azure.data.tables import UpdateMode

        entities = [
            {"PartitionKey": rule_id, "RowKey": ENTITY_PREFIX + k, "Kind": "entity", "LastAlerted": when}
            for k in sorted(set(entity_keys))
        ]
        for start in range(0, len(entities), BATCH):
            with _state_errors(f"record entities of rule {rule_id}"):
                self._table.submit_transaction(
                    [("upsert", e, {"mode": UpdateMode.REPLACE}) for e in entities[start : start + BATCH]]
                )

    def first_time(self, rule_id: str, notice: str, when: datetime) -> bool:
        """True exactly once per (rule, notice), across runs and concurrent runs."""
        from azure.core.exceptions import ResourceExistsError

        with _state_errors(f"record a notice of rule {rule_id}"):
            try:
                self._table.create_entity(
                    {"PartitionKey": rule_id, "RowKey": NOTICE_PREFIX + notice, "Kind": "notice", "At": when}
                )
            except ResourceExistsError:
                return False
        return True

    # --- source tables (issue 13: blind spots) ---

    def table_seen(self, table: str) -> tuple[datetime | None, datetime | None]:
        """A source table's latest ingestion time as last probed, and when it was probed."""
        from azure.core.exceptions import ResourceNotFoundError

        with _state_errors(f"read the watch of table {table}"):
            try:
                entity = self._table.get_entity(TABLES_PARTITION, table)
            except ResourceNotFoundError:
                return None, None
        return _utc(entity.get("LastIngested")), _utc(entity.get("CheckedAt"))

    def save_table_seen(self, table: str, last_ingested: datetime | None, checked_at: datetime) -> None:
        from azure.data.tables import UpdateMode

        entity = {
            "PartitionKey": TABLES_PARTITION,
            "RowKey": table,
            "Kind": "table",
            "LastIngested": last_ingested,
            "CheckedAt": checked_at,
        }
        with _state_errors(f"record the watch of table {table}"):
            self._table.upsert_entity(_drop_none(entity), mode=UpdateMode.REPLACE)

    # --- purging (Table Storage has no TTL) ---

    def purge(self, rule_id: str, *, hits_before: datetime, runs_before: datetime) -> int:
        """Delete settled hits first seen before `hits_before`, entity marks and run records older than their
        cut-offs. Pending hits are never touched: they are still to be delivered (or reported dropped)."""
        query = (
            # The SDK's @name substitution needs a space after each name.
            "PartitionKey eq @pk and ((RowKey lt @tilde and Status ne @pending and FirstSeen lt @hits ) "
            "or (Kind eq @run and Started lt @runs ) or (Kind eq @entity and LastAlerted lt @hits ) )"
        )
        params = {
            "pk": rule_id,
            "tilde": "~",
            "pending": PENDING,
            "hits": hits_before,
            "runs": runs_before,
            "run": "run",
            "entity": "entity",
        }
        deleted = 0
        with _state_errors(f"purge old state of rule {rule_id}"):
            doomed = [e["RowKey"] for e in self._table.query_entities(query, parameters=params, select=["RowKey"])]
            for start in range(0, len(doomed), BATCH):
                self._table.submit_transaction(
                    [("delete", {"PartitionKey": rule_id, "RowKey": key}) for key in doomed[start : start + BATCH]]
                )
                deleted += len(doomed[start : start + BATCH])
        return deleted

    # --- run bookkeeping ---

    def save_run(self, rule_id: str, state: RuleState, record: RunRecord) -> None:
        """The rule's state and this run's record, in one transaction."""
        from azure.data.tables import UpdateMode

        state_entity = {"PartitionKey": rule_id, "RowKey": STATE_ROW, "Kind": "state", **_state_fields(state)}
        run_entity = {
            "PartitionKey": rule_id,
            "RowKey": f"{RUN_PREFIX}{_MAX_TICKS - int(record.started.timestamp() * 1_000_000):020d}",
            "Kind": "run",
            "Started": record.started,
            "WindowStart": record.window_start,
            "WindowEnd": record.window_end,
            "Rows": record.rows,
            "NewHits": record.new_hits,
            "Delivered": record.delivered,
            "Deferred": record.deferred,
            "Dropped": record.dropped,
            "Errors": errors_json(record.errors),
            "DurationMs": record.duration_ms,
        }
        with _state_errors(f"save run of rule {rule_id}"):
            self._table.submit_transaction(
                [("upsert", _drop_none(state_entity), {"mode": UpdateMode.REPLACE}), ("upsert", _drop_none(run_entity))]
            )

    def runs(self, rule_id: str, limit: int = 20) -> list[dict[str, Any]]:
        with _state_errors(f"read runs of rule {rule_id}"):
            out: list[dict[str, Any]] = []
            for entity in self._table.query_entities(
                "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                parameters={"pk": rule_id, "lo": RUN_PREFIX, "hi": RUN_PREFIX + "~"},
            ):
                out.append(dict(entity))
                if len(out) >= limit:
                    break
            return out

    def hits(self, rule_id: str) -> Iterator[Hit]:
        with _state_errors(f"read hits of rule {rule_id}"):
            for entity in self._table.query_entities(
                "PartitionKey eq @pk and RowKey lt @tilde", parameters={"pk": rule_id, "tilde": "~"}
            ):
                yield _hit_from(entity)


@contextmanager
def _state_errors(doing: str) -> Iterator[None]:
    """Turn Azure SDK failures into StateError saying what we were doing (no URLs, no keys). The conflicts
    our callers handle themselves pass through."""
    from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError
    from azure.data.tables import TableTransactionError

    try:
        yield
    except (ResourceExistsError, ResourceModifiedError, TableTransactionError):
        raise
    except AzureError as exc:
        from shared.redact import redact_text

        message = redact_text((getattr(exc, "message", None) or type(exc).__name__).splitlines()[0])
        raise StateError(f"Table Storage: cannot {doing}: {message[:300]}") from None


def _chunks(items: Sequence[Hit], size: int) -> Iterator[Sequence[Hit]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


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
    """The hit as stored. `minimal` (the reason) keeps only the card's columns, in MINIMAL_ROW_UNITS."""
    types = {k: "datetime" for k, v in hit.row.items() if isinstance(v, datetime)}
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
        }
    )


def _error_code(exc: Any) -> str:
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    return str(headers.get("x-ms-error-code") or getattr(exc, "error_code", None) or f"HTTP {exc.status_code}")


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
