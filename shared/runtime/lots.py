"""The pending index, pure: a lot is up to LOT_SIZE hits one run recorded together, delivered and settled
together (benchmark findings C and G). No Azure import; shared.runtime.hitstore does the I/O.

A lot's entity sits beside the rule's state row (RowKey `~state~p~<first-seen ticks><seq><random>`), so the
rule's state and every pending hit of the rule are one RowKey range, [`~state`, `~state~~`): a range query, not
a partition scan. It names its hits (their keys, in order), holds the delivery lease for all of them, and
records delivery per card: which of its hits each webhook has (a mask per webhook) and which are settled
(delivered everywhere, or dropped). A lot whose hits are all settled is deleted; its pack (shared.runtime.packs:
the hits' rows, the dedupe record) is written once, in the same transaction as the lot, and never updated on
delivery. Lots written before packs (`Packed` absent) name hits stored one entity each.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

LOT_PREFIX = "~state~p~"  # after "~state" and before "~state~~": the rule's state row and its lots, one range
PENDING_RANGE = ("~state", "~state~~")
LOT_SIZE = 99  # with the lot's own entity: 100 operations, one entity-group transaction

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(eq=False)  # compared by identity: every hit of a lot refers to the one object of this run
class Lot:
    id: str
    keys: list[str]
    first_seen: datetime
    etag: str | None = None
    lease_owner: str = ""
    lease_until: datetime | None = None
    attempts: int = 0
    done: dict[str, set[int]] = field(default_factory=dict)  # webhook id -> slots that webhook has
    settled: set[int] = field(default_factory=set)  # slots delivered everywhere, or dropped
    packed: bool = True  # its hits' rows are in the pack of the same id (False: lots written before packs)

    @property
    def row_key(self) -> str:
        return LOT_PREFIX + self.id

    def unsettled(self) -> list[int]:
        return [slot for slot in range(len(self.keys)) if slot not in self.settled]

    def delivered_to(self, slot: int) -> frozenset[str]:
        return frozenset(w for w, slots in self.done.items() if slot in slots)


@dataclass(frozen=True)
class LotChange:
    """What one write makes of a lot: its new masks, lease and attempts; `gone` when every hit is settled."""

    done: dict[str, set[int]]
    settled: set[int]
    lease_owner: str
    lease_until: datetime | None
    attempts: int

    def gone(self, lot: Lot) -> bool:
        return len(self.settled) >= len(lot.keys)


def new_lot_id(first_seen: datetime, seq: int) -> str:
    """Oldest first (the order pending hits are delivered in), then the order one run recorded them in."""
    ticks = int(first_seen.timestamp() * 1_000_000)
    return f"{ticks:020d}{seq:06d}{uuid.uuid4().hex[:8]}"


def lot_entity(rule_id: str, lot: Lot) -> dict[str, Any]:
    entity = {"PartitionKey": rule_id, "RowKey": lot.row_key, "Kind": "lot", "FirstSeen": lot.first_seen}
    entity["Keys"] = ",".join(lot.keys)
    entity["Packed"] = lot.packed
    entity.update(_mutable(lot.done, lot.settled, lot.lease_owner, lot.lease_until, lot.attempts, len(lot.keys)))
    return entity


def change_patch(rule_id: str, lot: Lot, change: LotChange) -> dict[str, Any]:
    patch: dict[str, Any] = {"PartitionKey": rule_id, "RowKey": lot.row_key}
    size = len(lot.keys)
    patch.update(_mutable(change.done, change.settled, change.lease_owner, change.lease_until, change.attempts, size))
    return patch


def _mutable(
    done: Mapping[str, set[int]],
    settled: set[int],
    lease_owner: str,
    lease_until: datetime | None,
    attempts: int,
    size: int,
) -> dict[str, Any]:
    return {
        "Done": json.dumps({w: _mask(slots, size) for w, slots in sorted(done.items()) if slots}),
        "Settled": _mask(settled, size),
        "LeaseOwner": lease_owner,
        # An empty lease is written as the epoch: MERGE cannot remove a property.
        "LeaseUntil": lease_until or _EPOCH,
        "Attempts": attempts,
    }


def lot_from(entity: Mapping[str, Any]) -> Lot:
    from shared.runtime.rows import _utc

    keys = [k for k in str(entity.get("Keys") or "").split(",") if k]
    lease = _utc(entity.get("LeaseUntil"))
    try:
        done_raw = json.loads(entity.get("Done") or "{}")
    except ValueError:
        done_raw = {}
    return Lot(
        id=str(entity["RowKey"])[len(LOT_PREFIX) :],
        keys=keys,
        first_seen=_utc(entity.get("FirstSeen")) or datetime.now(timezone.utc),
        etag=getattr(entity, "metadata", {}).get("etag"),
        lease_owner=entity.get("LeaseOwner") or "",
        lease_until=lease if lease and lease > datetime(1971, 1, 1, tzinfo=timezone.utc) else None,
        attempts=int(entity.get("Attempts") or 0),
        done={str(w): _slots(m) for w, m in done_raw.items()} if isinstance(done_raw, dict) else {},
        settled=_slots(entity.get("Settled")),
        packed=bool(entity.get("Packed")),
    )


def _mask(slots: set[int], size: int) -> str:
    return "".join("1" if i in slots else "0" for i in range(size))


def _slots(mask: Any) -> set[int]:
    return {i for i, c in enumerate(mask) if c == "1"} if isinstance(mask, str) else set()
