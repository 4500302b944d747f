"""Table Storage reads of hits: a rule's snapshot (its state row, the run lease on it, its pending lots, in one
range query), the rows of pending hits, known keys, and every hit for `kqlwatch status`. The half of HitStore
(shared.runtime.hitstore) that never writes, but for the one-time upgrade of state written before lots."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.runtime import packs
from shared.runtime.lots import LOT_PREFIX, PENDING_RANGE, Lot, lot_from
from shared.runtime.rows import DELIVERED, PENDING, STATE_ROW, Hit, RuleState, Snapshot, _hit_from, _state_from
from shared.runtime.runlease import mark_from
from shared.runtime.tableio import state_errors
from shared.runtime.upgrade import lots_for_old_hits

if TYPE_CHECKING:
    from azure.data.tables import TableClient


class HitReads:
    _table: TableClient
    _guard: Callable[[], None]  # called before every write of the rule's partition (the run lease, issue 14)

    # --- reading ---

    def snapshot(self, rule_id: str) -> Snapshot:
        """The rule's state and its pending hits (rows not fetched: see load_rows), in one range query; state
        written before lots first gets its lots (a write: the detector does it under the run lease instead)."""
        snap = self.read_snapshot(rule_id)
        if snap.old_hits:
            self.adopt_old_hits(rule_id, snap)
        return snap

    def read_snapshot(self, rule_id: str) -> Snapshot:
        """The rule's state, the run lease on it with the row's etag (issue 14), and its pending hits: one range
        query, no write."""
        snap = Snapshot(RuleState())
        for entity in self._state_range(rule_id):
            if entity["RowKey"] == STATE_ROW:
                snap.state = _state_from(entity)
                snap.etag = entity.metadata.get("etag")
                snap.lease = mark_from(entity)
                snap.old_hits = not entity.get("HitShape")  # written before lots: its pending hits get lots, once
            elif entity["RowKey"].startswith(LOT_PREFIX):
                snap.pending.extend(_pending_hits(lot_from(entity)))
        return snap

    def adopt_old_hits(self, rule_id: str, snap: Snapshot) -> None:
        """Put the pending hits of state written before lots into lots (shared.runtime.upgrade), once."""
        self._guard()
        snap.pending.extend(h for lot in lots_for_old_hits(self._table, rule_id) for h in _pending_hits(lot))
        snap.old_hits = False

    def pending_lots(self, rule_id: str) -> list[Lot]:
        return [lot_from(e) for e in self._state_range(rule_id) if e["RowKey"].startswith(LOT_PREFIX)]

    def _state_range(self, rule_id: str) -> list[Any]:
        lo, hi = PENDING_RANGE
        with state_errors(f"read state of rule {rule_id}"):
            return list(
                self._table.query_entities(
                    "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                    parameters={"pk": rule_id, "lo": lo, "hi": hi},
                )
            )

    def known_keys(self, rule_id: str, since: datetime | None = None, *, before: datetime | None = None) -> set[str]:
        """Keys of hits first seen since `since` and before `before` (None: no bound): the dedupe's read."""
        query = "PartitionKey eq @pk and RowKey lt @tilde"
        query += " and FirstSeen ge @since" if since else ""
        query += " and FirstSeen lt @before" if before else ""
        params = {"pk": rule_id, "tilde": "~", "since": since, "before": before}
        keys: set[str] = set()
        with state_errors(f"read hits of rule {rule_id}"):
            for e in self._table.query_entities(query, parameters=params, select=["RowKey", "Kind", "Keys"]):
                keys.update(packs.pack_keys(e) if packs.is_pack(e) else [e["RowKey"]])
        return keys

    def load_rows(self, rule_id: str, hits: Sequence[Hit]) -> tuple[list[Hit], list[Hit]]:
        """(hits with their rows, orphans): the rows of pending hits read from the index, one point read per
        lot (its pack; only the hits a card will show need one). An orphan's lot names it but its row is
        missing, or (before packs) was recorded by another lot (a run killed while recording): it is not this
        lot's to deliver."""
        from azure.core.exceptions import ResourceNotFoundError

        loaded: list[Hit] = []
        orphans: list[Hit] = []
        stored: dict[str, dict[str, Hit]] = {}  # pack row key -> its hits
        for hit in hits:
            if hit.row_loaded:
                loaded.append(hit)
                continue
            where = packs.PACK_PREFIX + hit.lot.id if hit.lot is not None and hit.lot.packed else hit.key
            if where not in stored:
                with state_errors(f"read a hit of rule {rule_id}"):
                    try:
                        entity = self._table.get_entity(rule_id, where)
                    except ResourceNotFoundError:
                        entity = None
                stored[where] = _stored_hits(entity, hit)
            found = stored[where].get(hit.key)
            if found is None:
                orphans.append(hit)
            else:
                loaded.append(packs.with_stored(hit, found))
        return loaded, orphans

    def pending_leases(self) -> dict[str, list[datetime | None]]:
        """Every rule's pending hits, as the end of the lease each is held under (None: free to deliver)."""
        out: dict[str, list[datetime | None]] = {}
        with state_errors("read pending hits"):
            for e in self._table.query_entities("Kind eq @lot", parameters={"lot": "lot"}):
                lot = lot_from(e)
                out.setdefault(e["PartitionKey"], []).extend([lot.lease_until] * len(lot.unsettled()))
        return out

    def hits(self, rule_id: str) -> Iterator[Hit]:
        """Every hit of the rule as it stands: pending while a lot lists it unsettled, else settled."""
        lots = self.pending_lots(rule_id)
        pending = {lot.keys[s]: lot for lot in lots for s in lot.unsettled()}
        with state_errors(f"read hits of rule {rule_id}"):
            for entity in self._table.query_entities(
                "PartitionKey eq @pk and RowKey lt @tilde", parameters={"pk": rule_id, "tilde": "~"}
            ):
                if packs.is_pack(entity):
                    pack_id = str(entity["RowKey"])[len(packs.PACK_PREFIX) :]
                    for hit in packs.pack_hits(entity):
                        lot = pending.get(hit.key)
                        yield hit if hit.status != PENDING or (lot and lot.id == pack_id) else _settled(hit)
                    continue
                hit = _hit_from(entity)
                lot = pending.get(hit.key)
                if hit.status == PENDING and (lot is None or entity.get("Lot") not in (None, lot.id)):
                    hit = _settled(hit)
                yield hit


def _settled(hit: Hit) -> Hit:
    return replace(hit, status=DELIVERED)


def _stored_hits(entity: Any, hit: Hit) -> dict[str, Hit]:
    """The hits a point read found: a pack's, or the one hit stored alone before packs (if its lot's)."""
    if entity is None:
        return {}
    if packs.is_pack(entity):
        return packs.pack_rows(entity)
    if hit.lot is not None and entity.get("Lot") not in (None, hit.lot.id):
        return {}
    return {hit.key: _hit_from(entity)}


def _pending_hits(lot: Lot) -> list[Hit]:
    return [
        Hit(
            lot.keys[slot],
            {},
            first_seen=lot.first_seen,
            delivered_to=lot.delivered_to(slot),
            attempts=lot.attempts,
            etag=lot.etag,
            lease_owner=lot.lease_owner,
            lease_until=lot.lease_until,
            lot=lot,
            slot=slot,
            row_loaded=False,
        )
        for slot in lot.unsettled()
    ]
