"""The hit ledger's pages, pure: a pack is the lasting record of up to LOT_SIZE hits one run recorded together -
their keys, rows and status - in one entity, where each hit used to be an entity of its own. No Azure import;
shared.runtime.hitstore does the I/O.

Why (issue 14, a 10,000-hit burst under 10 s): the Table SDK spends ~0.8-1.7 ms of our CPU per entity in a
transaction (azure-core's multipart body is built with Python's `email` package, and its 100 answers parsed with
it), whatever the entity's size; a 1 MB entity costs about what ten small ones do. One entity per hit made the
dedupe record alone cost more than the goal; one per ~99 hits costs ~1/99 of it.

A pending pack's lot (shared.runtime.lots) has the same id, and is created in the same transaction: the lot is
the pending index (lease, delivery per card), the pack what stays once the lot is settled and deleted. RowKey
`pack~<lot id>` sorts after every hit key (sha256 hex) and before `~`, so the dedupe read (known keys), the
purge and `kqlwatch status` read packs and the hits stored before them in one RowKey range.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from shared.runtime.lots import LOT_SIZE
from shared.runtime.rows import (
    CARD_COLUMNS,
    DROPPED,
    MINIMAL_ROW_UNITS,
    PENDING,
    Hit,
    _utc,
    datetime_columns,
    decode_row,
    encode_row,
)
from shared.runtime.sanitize import utf16_units

PACK_PREFIX = "pack~"  # after any sha256 hex key, before "~": one range with the hits stored before packs
# Rows per pack, in UTF-16 units (Table Storage counts 2 bytes each): with the keys and masks (~7,000 units) a
# pack stays well under the 1 MiB entity limit. A row is at most MAX_ROW_UNITS, so a pack holds at least 13.
PACK_ROW_UNITS = 400_000
# What one transaction may carry: the service takes 4 MiB; the SDK's JSON escapes non-ASCII (6 bytes a unit)
# and adds type annotations and multipart headers, which the estimate below counts generously.
TRANSACTION_BYTES = 3 * 1024 * 1024


@dataclass(frozen=True)
class Laid:
    """A hit as a pack stores it: its row as stored (JSON, within its property) and why it is not whole."""

    hit: Hit
    row_json: str
    clipped: bool
    note: str = ""  # set when Table Storage refused the full row: a minimal form is stored instead


def lay(hit: Hit) -> Laid:
    types = datetime_columns(hit.row)
    row_json, clipped = encode_row(hit.row, types)
    return Laid(hit, row_json, clipped)


def lay_minimal(laid: Laid, note: str) -> Laid:
    """The hit in the form stored when the full one was refused: only the card's columns, MINIMAL_ROW_UNITS."""
    hit = laid.hit
    types = datetime_columns(hit.row)
    row_json, _ = encode_row(hit.row, types, budget=MINIMAL_ROW_UNITS, columns=CARD_COLUMNS)
    return Laid(hit, row_json, True, note)


def groups(hits: Sequence[Hit]) -> Iterator[list[Laid]]:
    """The hits in pack-sized groups, in order: at most LOT_SIZE hits, PACK_ROW_UNITS of rows, one first-seen
    time (the pack's, which the dedupe read and the purge filter on)."""
    group: list[Laid] = []
    units = 0
    for hit in hits:
        laid = lay(hit)
        size = utf16_units(laid.row_json)
        if group and (
            len(group) >= LOT_SIZE or units + size > PACK_ROW_UNITS or hit.first_seen != group[0].hit.first_seen
        ):
            yield group
            group, units = [], 0
        group.append(laid)
        units += size
    if group:
        yield group


def pack_entity(rule_id: str, pack_id: str, laid: Sequence[Laid], status: str) -> dict[str, Any]:
    """The pack as stored: `R<slot>` the rows, `Keys` in slot order, `Status` as recorded (pending, suppressed
    or delivered; `Dropped` marks slots dropped later), `Truncated` a mask, `N<slot>` a storage note."""
    entity: dict[str, Any] = {
        "PartitionKey": rule_id,
        "RowKey": PACK_PREFIX + pack_id,
        "Kind": "pack",
        "FirstSeen": laid[0].hit.first_seen,
        "Status": status,
        "Keys": ",".join(x.hit.key for x in laid),
        "Truncated": "".join("1" if x.clipped or x.hit.truncated else "0" for x in laid),
    }
    for slot, x in enumerate(laid):
        entity[f"R{slot}"] = x.row_json
        if x.note:
            entity[f"N{slot}"] = x.note
    return entity


def dropped_patch(rule_id: str, pack_id: str, slots: set[int], size: int) -> dict[str, Any]:
    """A lot's hits dropped undelivered (all its unsettled hits at once: they share its first-seen time)."""
    mask = "".join("1" if i in slots else "0" for i in range(size))
    return {"PartitionKey": rule_id, "RowKey": PACK_PREFIX + pack_id, "Dropped": mask}


def is_pack(entity: Mapping[str, Any]) -> bool:
    return entity.get("Kind") == "pack"


def pack_keys(entity: Mapping[str, Any]) -> list[str]:
    return [k for k in str(entity.get("Keys") or "").split(",") if k]


def pack_hits(entity: Mapping[str, Any]) -> list[Hit]:
    """The pack's hits with their rows, each with the status it was recorded with (or dropped)."""
    first_seen = _utc(entity.get("FirstSeen")) or datetime.now(timezone.utc)
    status = str(entity.get("Status") or PENDING)
    truncated = str(entity.get("Truncated") or "")
    dropped = str(entity.get("Dropped") or "")
    out: list[Hit] = []
    for slot, key in enumerate(pack_keys(entity)):
        out.append(
            Hit(
                key,
                decode_row(str(entity.get(f"R{slot}") or "{}")),
                first_seen=first_seen,
                truncated=truncated[slot : slot + 1] == "1",
                status=DROPPED if dropped[slot : slot + 1] == "1" else status,
                store_note=str(entity.get(f"N{slot}") or ""),
            )
        )
    return out


def pack_rows(entity: Mapping[str, Any]) -> dict[str, Hit]:
    """key -> the hit as stored (its row, truncation, note), for the hits a card will show."""
    return {h.key: h for h in pack_hits(entity)}


def with_stored(hit: Hit, stored: Hit) -> Hit:
    return replace(hit, row=stored.row, truncated=stored.truncated, store_note=stored.store_note, row_loaded=True)


def size_of(entity: Mapping[str, Any]) -> int:
    """A generous estimate of the entity's bytes in a transaction body (ASCII-escaped JSON, annotations)."""
    text = sum(len(json.dumps(v)) for v in entity.values() if isinstance(v, str))
    return text + 96 * len(entity)
