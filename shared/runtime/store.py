"""Azure Table Storage: what kqlwatch has alerted on, what is still to be delivered, and each rule's runs.

The I/O half; the records and their entities (the row codec) are in shared.runtime.rows.
One table; one partition per rule (PartitionKey = rule id):
  RowKey <sha256 hex>   a hit: Status pending|delivered|dropped, the row, DeliveredTo (webhook ids), a lease
  RowKey ~state         the rule's state: last window end, last success/error, consecutive failures
  RowKey ~run~<ticks>   one record per run (newest first)
Creating a hit is the dedupe: create_entity is first-writer-wins, so two runs never both own a hit.
A run owns a hit while its lease (LeaseOwner/LeaseUntil) holds; every update is conditional on the etag.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from shared.errors import StateError
from shared.runtime.rows import (
    _MAX_TICKS,
    CARD_COLUMNS,
    DELIVERED,
    DROPPED,
    ENTITY_PREFIX,
    MAX_PROPERTY_UNITS,
    MAX_ROW_UNITS,
    MAX_TEXT_UNITS,
    MINIMAL_ROW_UNITS,
    NOTICE_PREFIX,
    PENDING,
    RUN_PREFIX,
    STATE_ROW,
    SUPPRESSED,
    TABLES_PARTITION,
    Hit,
    RuleState,
    RunRecord,
    Snapshot,
    _drop_none,
    _hit_entity,
    _hit_from,
    _hit_patch,
    _state_fields,
    _state_from,
    _utc,
    decode_row,
    encode_row,
    errors_json,
    expired,
    lease_is_free,
)

if TYPE_CHECKING:
    from azure.data.tables import TableClient

# The records and the codec are re-exported: callers take the store and its records from one place.
__all__ = [
    "CARD_COLUMNS",
    "DELIVERED",
    "DROPPED",
    "ENTITY_PREFIX",
    "MAX_PROPERTY_UNITS",
    "MAX_ROW_UNITS",
    "MAX_TEXT_UNITS",
    "MINIMAL_ROW_UNITS",
    "NOTICE_PREFIX",
    "PENDING",
    "RUN_PREFIX",
    "STATE_ROW",
    "SUPPRESSED",
    "TABLES_PARTITION",
    "Hit",
    "RuleState",
    "RunRecord",
    "Snapshot",
    "StateStore",
    "connect",
    "decode_row",
    "encode_row",
    "errors_json",
    "expired",
    "lease_is_free",
]

log = logging.getLogger("kqlwatch.state")

BATCH = 100  # entity-group transaction limit (the SDK fails on 101)


def connect(connection: str, table_name: str, *, retry_total: int = 3, credential: Any = None) -> TableClient:
    """A TableClient from an Azurite/account connection string, or from a Table service URL with Entra ID."""
    from azure.data.tables import TableClient

    from shared.runtime import redact

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

    def save_run(self, rule_id: str, state: RuleState, record: RunRecord, extra: Sequence[Any] = ()) -> None:
        """The rule's state and this run's record, in one transaction (with `extra` operations of the same
        partition: issue 14's run-lease release, so the window advances only while the run still holds it)."""
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
                [
                    ("upsert", _drop_none(state_entity), {"mode": UpdateMode.REPLACE}),
                    ("upsert", _drop_none(run_entity)),
                    *extra,
                ]
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
        from shared.runtime.redact import redact_text

        message = redact_text((getattr(exc, "message", None) or type(exc).__name__).splitlines()[0])
        raise StateError(f"Table Storage: cannot {doing}: {message[:300]}") from None


def _chunks(items: Sequence[Hit], size: int) -> Iterator[Sequence[Hit]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _error_code(exc: Any) -> str:
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    return str(headers.get("x-ms-error-code") or getattr(exc, "error_code", None) or f"HTTP {exc.status_code}")
