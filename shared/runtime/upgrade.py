"""State written before lots (each pending hit said so on its own entity), brought up to date once per rule."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.runtime.lots import LOT_SIZE, Lot, lot_entity, new_lot_id
from shared.runtime.rows import PENDING, _hit_from
from shared.runtime.tableio import state_errors

if TYPE_CHECKING:
    from azure.data.tables import TableClient


def lots_for_old_hits(table: TableClient, rule_id: str) -> list[Lot]:
    """State from before lots kept each pending hit's status on the hit: put those hits in lots (each hit
    told its lot in the same transaction, so a repeat after a crash skips it). Once per rule: the next
    saved state row says HitShape 2."""
    from azure.data.tables import UpdateMode

    with state_errors(f"read hits of rule {rule_id}"):
        old = table.query_entities(
            "PartitionKey eq @pk and RowKey lt @tilde and Status eq @pending",
            parameters={"pk": rule_id, "tilde": "~", "pending": PENDING},
            select=["RowKey", "Kind", "FirstSeen", "DeliveredTo", "Attempts", "Lot"],
        )
        old_hits = sorted(
            (e for e in old if not e.get("Lot") and e.get("Kind") != "pack"), key=lambda e: _hit_from(e).first_seen
        )
    lots: list[Lot] = []
    for seq, start in enumerate(range(0, len(old_hits), LOT_SIZE)):
        chunk = [_hit_from(e) for e in old_hits[start : start + LOT_SIZE]]
        lot = Lot(new_lot_id(chunk[0].first_seen, seq), [h.key for h in chunk], chunk[0].first_seen, packed=False)
        lot.attempts = max(h.attempts for h in chunk)
        for slot, hit in enumerate(chunk):
            for webhook in hit.delivered_to:
                lot.done.setdefault(webhook, set()).add(slot)
        told = [{"PartitionKey": rule_id, "RowKey": h.key, "Lot": lot.id} for h in chunk]
        ops: list[Any] = [("create", lot_entity(rule_id, lot))]
        ops += [("update", t, {"mode": UpdateMode.MERGE}) for t in told]
        with state_errors(f"record hits of rule {rule_id}"):
            lot.etag = table.submit_transaction(ops)[0].get("etag")
        lots.append(lot)
    return lots
