"""The pack layout (shared.runtime.packs): how hits are grouped into one entity, and read back."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from shared.runtime import packs
from shared.runtime.rows import DROPPED, PENDING, Hit
from shared.runtime.sanitize import utf16_units

NOW = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)


def _hits(n: int, *, subject: str = "s", first_seen: datetime = NOW) -> list[Hit]:
    return [Hit(f"{i:064x}", {"Subject": subject, "i": i}, first_seen=first_seen) for i in range(n)]


def test_hits_are_grouped_by_lot_size_row_budget_and_first_seen_time_in_order() -> None:
    assert [len(g) for g in packs.groups(_hits(250))] == [99, 99, 52]
    big = list(packs.groups(_hits(40, subject="\U0001f600" * 14_500)))  # each row near the 30,000-unit bound
    assert all(sum(utf16_units(x.row_json) for x in g) <= packs.PACK_ROW_UNITS for g in big)
    assert len(big) == 4 and sum(len(g) for g in big) == 40
    mixed = _hits(3) + _hits(2, first_seen=NOW + timedelta(minutes=5))
    assert [[x.hit.first_seen for x in g] for g in packs.groups(mixed)] == [[NOW] * 3, [NOW + timedelta(minutes=5)] * 2]
    flat = [x.hit.key for g in packs.groups(_hits(250)) for x in g]
    assert flat == [h.key for h in _hits(250)]


def test_a_pack_reads_back_as_its_hits_with_rows_truncation_status_and_drops() -> None:
    hits = _hits(3)
    hits[1].row["When"] = NOW
    laid = [packs.lay(h) for h in hits]
    laid[2] = packs.lay_minimal(laid[2], "refused (test)")
    entity = packs.pack_entity("rule", "lot-1", laid, PENDING)
    assert entity["RowKey"] == "pack~lot-1" and packs.is_pack(entity)
    assert packs.pack_keys(entity) == [h.key for h in hits]
    back = packs.pack_hits(entity)
    assert [h.key for h in back] == [h.key for h in hits] and back[1].row["When"] == NOW
    assert [h.truncated for h in back] == [False, False, True] and back[2].store_note == "refused (test)"
    assert {h.status for h in back} == {PENDING}
    entity.update(packs.dropped_patch("rule", "lot-1", {0, 2}, 3))
    assert [h.status for h in packs.pack_hits(entity)] == [DROPPED, PENDING, DROPPED]
