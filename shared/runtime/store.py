"""Azure Table Storage: what kqlwatch has alerted on, what is still to be delivered, and each rule's runs.

The I/O; the records and their entities (the row codec) are in shared.runtime.rows and shared.runtime.lots.
One table; one partition per rule (PartitionKey = rule id):
  RowKey pack~<lot>         up to 99 hits one run recorded, their rows, written once (shared.runtime.hitstore:
                            recording, leases, delivery); RowKey <sha256 hex>: a hit stored alone, before packs
  RowKey ~state             the rule's state: last window end, last success/error, consecutive failures, the
                            run lease (shared.runtime.runlease)
  RowKey ~state~p~<lot>     a lot of up to 99 pending hits: their lease and delivery; the state row and the
                            lots are one RowKey range, read by every run in one range query
  RowKey ~run~<ticks>       one record per run (newest first)
  RowKey ~ent~ / ~notice~   kqlwatch.realert marks, one-time notices
The dedupe: a run records only keys no pack (or older hit) holds, under its run lease, and each recording
transaction is fenced on the state row's etag, so two runs never both record a hit.
A run owns a lot's hits while its lease (LeaseOwner/LeaseUntil) holds; every lot write is conditional on the etag.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.runtime.hitstore import Fence, HitStore
from shared.runtime.packs import PACK_PREFIX
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
    _state_fields,
    _state_from,
    _utc,
    decode_row,
    encode_row,
    errors_json,
    expired,
    lease_is_free,
)
from shared.runtime.tableio import BATCH
from shared.runtime.tableio import state_errors as _state_errors

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

StateOp = Callable[[Mapping[str, Any]], tuple[Any, ...]]  # the state row's operation in a run's save transaction


def _unguarded() -> None:
    """A store not bound to one run (tools, `kqlwatch status`, tests): writes need no lease."""


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


class StateStore(HitStore):
    """The state table: hits (HitStore), rule state and runs, realert marks, notices, source-table watches."""

    def __init__(self, table: TableClient) -> None:
        self._table = table
        self._table_ready = False  # created (or found) once per process, not once per run
        self._guard: Callable[[], None] = _unguarded
        self._fence: Fence | None = None

    def guarded(self, take: Callable[[], None], fence: Fence | None = None) -> StateStore:
        """This store for one rule run (issue 14): `take` (the run lease, shared.runtime.runguard) is called
        before every write of the rule's partition - hits, lots, marks, notices, the purge - so a run writes
        only once it holds the rule; hits are recorded behind `fence` (land only while it still does). The
        same client; the process's other runs are not affected."""
        view = copy.copy(self)
        view._guard = take
        view._fence = fence
        return view

    def close(self) -> None:
        self._table.close()

    def ensure_table(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        if self._table_ready:
            return
        with _state_errors("create table"), contextlib.suppress(ResourceExistsError):
            self._table.create_table()
        self._table_ready = True

    def rule_states(self) -> dict[str, RuleState]:
        with _state_errors("read rule states"):
            return {
                e["PartitionKey"]: _state_from(e)
                for e in self._table.query_entities("RowKey eq @state", parameters={"state": STATE_ROW})
            }

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
        if entities:
            self._guard()
        for start in range(0, len(entities), BATCH):
            with _state_errors(f"record entities of rule {rule_id}"):
                self._table.submit_transaction(
                    [("upsert", e, {"mode": UpdateMode.REPLACE}) for e in entities[start : start + BATCH]]
                )

    def first_time(self, rule_id: str, notice: str, when: datetime) -> bool:
        """True exactly once per (rule, notice), across runs and concurrent runs."""
        from azure.core.exceptions import ResourceExistsError

        self._guard()  # the notice is posted only by a run that holds the rule: the lease first
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
        """Delete settled hits (packs) first seen before `hits_before`, entity marks and run records older than their
        cut-offs. Pending hits (those a lot lists unsettled) are never touched: they are still to be delivered
        (or reported dropped)."""
        self._guard()
        lots = self.pending_lots(rule_id)
        pending = {lot.keys[s] for lot in lots for s in lot.unsettled()} | {PACK_PREFIX + lot.id for lot in lots}
        query = (
            # The SDK's @name substitution needs a space after each name.
            "PartitionKey eq @pk and ((RowKey lt @tilde and FirstSeen lt @hits ) "
            "or (Kind eq @run and Started lt @runs ) or (Kind eq @entity and LastAlerted lt @hits ) )"
        )
        params = {
            "pk": rule_id,
            "tilde": "~",
            "hits": hits_before,
            "runs": runs_before,
            "run": "run",
            "entity": "entity",
        }
        with _state_errors(f"purge old state of rule {rule_id}"):
            found = self._table.query_entities(query, parameters=params, select=["RowKey"])
            doomed = [e["RowKey"] for e in found if e["RowKey"] not in pending]
            for start in range(0, len(doomed), BATCH):
                self._table.submit_transaction(
                    [("delete", {"PartitionKey": rule_id, "RowKey": key}) for key in doomed[start : start + BATCH]]
                )
        return len(doomed)

    # --- run bookkeeping ---

    def save_run(self, rule_id: str, state: RuleState, record: RunRecord, state_op: StateOp | None = None) -> list[Any]:
        """The rule's state and this run's record, in one transaction. `state_op` makes the state row's
        operation (issue 14, shared.runtime.runguard: conditional on the etag the run read or its lease wrote, so
        the window advances only while no other run changed the rule); default an unconditional replace."""
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
        state_row = _drop_none(state_entity)
        first = state_op(state_row) if state_op else ("upsert", state_row, {"mode": UpdateMode.REPLACE})
        with _state_errors(f"save run of rule {rule_id}"):
            return self._table.submit_transaction([first, ("upsert", _drop_none(run_entity))])

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
