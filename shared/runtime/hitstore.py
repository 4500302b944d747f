"""Table Storage I/O for hits: recording them (the dedupe), the pending index (lots), delivery records.

Layout, in the rule's partition (PartitionKey = rule id):
  RowKey pack~<lot id>      a pack (shared.runtime.packs): up to 99 hits one run recorded, their rows and status
                            as recorded (pending|suppressed|delivered; later dropped), written once: with the run
                            lease it is the dedupe record (`known_keys`).
  RowKey ~state~p~<lot id>  a lot (shared.runtime.lots): a pack's pending hits' keys, their lease, which webhooks
                            have which of them; deleted once all are settled. Created in the same transaction as
                            its pack, so a hit is never recorded pending without its row.
  RowKey <sha256 hex>       a hit stored one entity each, before packs: still read (dedupe, status, old lots).
A hit is pending while an existing lot lists it unsettled; otherwise it is settled (delivered, unless it says
dropped or suppressed). Lots and the state row are one RowKey range: the run's snapshot is a range query.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from shared.runtime import packs
from shared.runtime.hitreads import HitReads
from shared.runtime.lots import Lot, LotChange, change_patch, lot_entity
from shared.runtime.lots import new_lot_id as _new_lot_id
from shared.runtime.rows import DELIVERED, DROPPED, PENDING, Hit, _hit_patch
from shared.runtime.tableio import BATCH, chunks, error_code, state_errors

if TYPE_CHECKING:
    from azure.data.tables import TableClient

log = logging.getLogger("kqlwatch.state")


class Fence(Protocol):
    """The run lease's hold on the state row (shared.runtime.runguard.RunGuard): a write that must land only
    while the run still holds its rule carries `fence_op` first, in the same transaction."""

    def fence_op(self) -> tuple[Any, ...] | None: ...

    def fenced(self, etag: str | None) -> None: ...

    def save_lost(self, exc: Any) -> Exception | None: ...


@dataclass
class _LotWrite:
    lot: Lot
    hits: list[Hit]
    change: LotChange
    etag: str | None


class HitStore(HitReads):
    """The hit half of StateStore (shared.runtime.store): everything about hits and their delivery. Every
    public write first calls `_guard` (the run's lease, shared.runtime.runguard: taken before a run writes)."""

    _table: TableClient
    _fence: Fence | None  # the run's, when the store is bound to a run that holds a lease (StateStore.guarded)

    # --- recording ---

    def insert_new(
        self, rule_id: str, hits: Sequence[Hit], *, status: str = PENDING, known: set[str] | None = None
    ) -> list[Hit]:
        """Record the hits not recorded before (`known`: the keys the caller read since its window's start;
        None: read every key of the rule); return those recorded, in order. Pending hits go in lots of up to
        LOT_SIZE, each with its pack (their rows: the dedupe record) in one transaction, sharing the lease of the
        first hit (the run recording them). Under a run lease each transaction also touches the state row on its
        etag (the fence), so hits are recorded only while no other run has taken the rule: that, not a write
        per hit, is what keeps two runs from both recording (and sending) one hit."""
        if not hits:
            return []
        self._guard()
        seen = self.known_keys(rule_id, None) if known is None else set(known)
        fresh: list[Hit] = []
        for hit in hits:
            if hit.key not in seen:
                seen.add(hit.key)
                fresh.append(hit)
        out: list[Hit] = []
        batch: list[_Record] = []
        ops = size = 0
        for seq, group in enumerate(packs.groups(fresh)):  # built as they are sent: a burst's rows, a batch at a time
            record = _record(rule_id, group, seq, status)
            if batch and (ops + len(record.ops) > BATCH - 1 or size + record.size > packs.TRANSACTION_BYTES):
                out += self._submit_records(rule_id, batch)
                batch, ops, size = [], 0, 0
            batch.append(record)
            ops, size = ops + len(record.ops), size + record.size
        return out + self._submit_records(rule_id, batch) if batch else out

    def _submit_records(self, rule_id: str, batch: list[_Record]) -> list[Hit]:
        """One transaction of packs (and lots); a pack Table Storage refuses (400: a value our bounds missed)
        is split until the hit it refuses is alone, and that hit stored in a minimal form instead, so it never
        blocks the rule's other hits; its note says so (the in-memory row, and so this run's card, stays whole)."""
        from azure.data.tables import TableTransactionError

        try:
            results = self._fenced(rule_id, [op for r in batch for op in r.ops])
        except TableTransactionError as exc:
            if exc.status_code not in (400, 413):  # 413: the transaction over 4 MiB (our estimate missed): split
                raise self._transaction_failed(rule_id, exc) from None
            if len(batch) == 1 and len(batch[0].laid) == 1:
                if batch[0].laid[0].note:  # refused even in its minimal form
                    raise self._transaction_failed(rule_id, exc) from None
                return self._submit_records(rule_id, [_minimal(rule_id, batch[0], exc)])
            return [h for part in _halves(rule_id, batch) for h in self._submit_records(rule_id, part)]
        out: list[Hit] = []
        for record in batch:
            etag = results.pop(0).get("etag")
            if record.lot is not None:
                record.lot.etag = etag = results.pop(0).get("etag")
            out += record.recorded(etag)
        return out

    def _fenced(self, rule_id: str, ops: list[tuple[Any, ...]]) -> list[Mapping[str, Any]]:
        """Submit the operations behind the run's fence (the state row on the etag its lease wrote), if any."""
        fence = self._fence.fence_op() if self._fence else None
        with state_errors(f"record hits of rule {rule_id}"):
            results = list(self._table.submit_transaction([fence, *ops] if fence else ops))
        if fence and self._fence:
            self._fence.fenced(results.pop(0).get("etag"))
        return results

    def _transaction_failed(self, rule_id: str, exc: Any) -> Exception:
        from shared.errors import StateError

        if self._fence and (lost := self._fence.save_lost(exc)):
            return lost
        return StateError(f"Table Storage: cannot record hits of rule {rule_id}: {error_code(exc)}")

    # --- leases and delivery ---

    def update_hits(self, rule_id: str, hits: Sequence[Hit], **changes: Any) -> list[Hit]:
        """Write the hits' lease and delivery fields (Status=delivered|dropped settles them), conditional on
        the etag each carries (a pending hit's is its lot's). Returns the hits written, with new etags; a hit
        another run changed is left out."""
        if not hits:
            return []
        self._guard()
        status = changes.get("Status")
        laid = [h for h in hits if h.lot is not None]
        plain = [h for h in hits if h.lot is None]
        out = self._update_entities(rule_id, plain, changes) if plain else []
        if laid:
            if status == DROPPED:
                self._set_dropped(rule_id, laid)
            settled = {h.key for h in laid} if status in (DELIVERED, DROPPED) else set()
            out += self.save_delivery(rule_id, laid, settled)
        return out

    def save_delivery(self, rule_id: str, hits: Sequence[Hit], settled: set[str]) -> list[Hit]:
        """Record delivery (and leases) per lot: one write per lot these hits are in, 100 lots a transaction;
        a lot all of whose hits are settled is deleted. `settled`: keys delivered everywhere (or dropped)."""
        if not hits:
            return []
        self._guard()
        plain = [h for h in hits if h.lot is None]
        out: list[Hit] = []
        if plain:
            done = [replace(h, lease_owner="", lease_until=None) for h in plain if h.key in settled]
            out += self._update_entities(rule_id, done, {"Status": DELIVERED}) if done else []
            rest = [h for h in plain if h.key not in settled]
            out += self._update_entities(rule_id, rest, {}) if rest else []
        writes = _lot_writes([h for h in hits if h.lot is not None], settled)
        for start in range(0, len(writes), BATCH):
            out += self._write_lots(rule_id, writes[start : start + BATCH])
        return out

    def _write_lots(self, rule_id: str, writes: list[_LotWrite]) -> list[Hit]:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import TableTransactionError, UpdateMode

        def op(w: _LotWrite) -> tuple[Any, ...]:
            cond = {"etag": w.etag, "match_condition": MatchConditions.IfNotModified}
            if w.change.gone(w.lot):
                return ("delete", {"PartitionKey": rule_id, "RowKey": w.lot.row_key}, cond)
            return ("update", change_patch(rule_id, w.lot, w.change), {"mode": UpdateMode.MERGE, **cond})

        with state_errors(f"record delivery of rule {rule_id}"):
            try:
                results = self._table.submit_transaction([op(w) for w in writes])
                return [h for w, r in zip(writes, results, strict=True) for h in _applied(w, r.get("etag"))]
            except TableTransactionError:
                pass  # one of them changed under us: find out which, one by one
            out: list[Hit] = []
            for w in writes:
                kind, entity, options = op(w)
                try:
                    if kind == "delete":
                        self._table.delete_entity(entity["PartitionKey"], entity["RowKey"], **options)
                        out += _applied(w, None)
                    else:
                        out += _applied(w, self._table.update_entity(entity, **options).get("etag"))
                except (ResourceModifiedError, ResourceNotFoundError):
                    log.info("lot %s of rule %s changed by another run; leaving it to that run", w.lot.id, rule_id)
            return out

    def _update_entities(self, rule_id: str, hits: Sequence[Hit], changes: dict[str, Any]) -> list[Hit]:
        """Hits outside any lot: one conditional merge each, 100 a transaction."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError
        from azure.data.tables import TableTransactionError, UpdateMode

        updated: list[Hit] = []
        for chunk in chunks(hits, BATCH):
            patches = [_hit_patch(rule_id, hit, changes) for hit in chunk]
            opts: list[dict[str, Any]] = [
                {"mode": UpdateMode.MERGE, "etag": h.etag, "match_condition": MatchConditions.IfNotModified}
                for h in chunk
            ]
            with state_errors(f"update hits of rule {rule_id}"):
                try:
                    results = self._table.submit_transaction(
                        [("update", p, o) for p, o in zip(patches, opts, strict=True)]
                    )
                    updated.extend(replace(h, etag=r.get("etag")) for h, r in zip(chunk, results, strict=True))
                    continue
                except TableTransactionError:
                    pass
                for hit, patch, o in zip(chunk, patches, opts, strict=True):
                    try:
                        updated.append(replace(hit, etag=self._table.update_entity(patch, **o).get("etag")))
                    except ResourceModifiedError:
                        log.info("hit %s of rule %s changed by another run; leaving it to that run", hit.key, rule_id)
        return updated

    def _set_dropped(self, rule_id: str, hits: Sequence[Hit]) -> None:
        """Dropped hits say so in their pack (for `kqlwatch status --dropped`), before their lot goes; hits stored
        before packs, on their own entity."""
        from azure.data.tables import UpdateMode

        by_lot: dict[int, tuple[Lot, set[int]]] = {}
        patches: list[dict[str, Any]] = []
        for hit in hits:
            assert hit.lot is not None
            if hit.lot.packed:
                by_lot.setdefault(id(hit.lot), (hit.lot, set()))[1].add(hit.slot)
            else:
                patches.append({"PartitionKey": rule_id, "RowKey": hit.key, "Status": DROPPED})
        patches += [packs.dropped_patch(rule_id, lot.id, slots, len(lot.keys)) for lot, slots in by_lot.values()]
        for chunk in chunks(patches, BATCH):
            ops = [("update", p, {"mode": UpdateMode.MERGE}) for p in chunk]
            with state_errors(f"update hits of rule {rule_id}"):
                self._table.submit_transaction(ops)


def _lot_writes(hits: Sequence[Hit], settled: set[str]) -> list[_LotWrite]:
    """One write per lot, in the order the hits come: the lot's masks with these hits' delivery applied, the
    lease of the hits still unsettled (else the lot's own), the most attempts."""
    groups: dict[int, tuple[Lot, list[Hit]]] = {}
    for hit in hits:
        assert hit.lot is not None
        groups.setdefault(id(hit.lot), (hit.lot, []))[1].append(hit)
    writes: list[_LotWrite] = []
    for lot, group in groups.values():
        done = {w: set(s) for w, s in lot.done.items()}
        for hit in group:
            for webhook in hit.delivered_to:
                done.setdefault(webhook, set()).add(hit.slot)
        held = [h for h in group if h.key not in settled]
        owner, until = (held[0].lease_owner, held[0].lease_until) if held else (lot.lease_owner, lot.lease_until)
        change = LotChange(
            done,
            lot.settled | {h.slot for h in group if h.key in settled},
            owner,
            until,
            max([lot.attempts, *(h.attempts for h in group)]),
        )
        writes.append(_LotWrite(lot, group, change, group[0].etag))
    return writes


def _applied(write: _LotWrite, etag: str | None) -> list[Hit]:
    """The write landed: the run's lot object takes it, and its hits the new etag."""
    lot, change = write.lot, write.change
    lot.done, lot.settled, lot.attempts = change.done, change.settled, change.attempts
    lot.lease_owner, lot.lease_until, lot.etag = change.lease_owner, change.lease_until, etag
    return [replace(h, etag=etag, lease_owner=change.lease_owner, lease_until=change.lease_until) for h in write.hits]


@dataclass
class _Record:
    """One pack to record, with its lot when its hits are pending: the operations and what they cost."""

    laid: list[packs.Laid]
    seq: int  # its place in the run's recording: lots are delivered oldest first, then in this order
    status: str
    lot: Lot | None
    ops: list[tuple[Any, ...]]
    size: int

    def recorded(self, etag: str | None) -> list[Hit]:
        """The hits as this run now holds them: in their lot if pending (with its etag), rows in memory."""
        return [
            replace(
                x.hit, lot=self.lot, slot=i, etag=etag, store_note=x.note, truncated=x.hit.truncated or bool(x.note)
            )
            for i, x in enumerate(self.laid)
        ]


def _record(rule_id: str, laid: list[packs.Laid], seq: int, status: str) -> _Record:
    first = laid[0].hit
    lot_id = _new_lot_id(first.first_seen, seq)
    pack = packs.pack_entity(rule_id, lot_id, laid, status)
    ops: list[tuple[Any, ...]] = [("create", pack)]
    lot = None
    if status == PENDING:
        lot = Lot(lot_id, [x.hit.key for x in laid], first.first_seen)
        lot.lease_owner, lot.lease_until = first.lease_owner, first.lease_until
        ops.append(("create", lot_entity(rule_id, lot)))
    return _Record(laid, seq, status, lot, ops, packs.size_of(pack) + 1024)


def _halves(rule_id: str, batch: list[_Record]) -> list[list[_Record]]:
    """A refused transaction, split: its records one by one, or a lone record's hits in two new packs."""
    if len(batch) > 1:
        return [[r] for r in batch]
    [record] = batch
    half = len(record.laid) // 2
    return [[_record(rule_id, part, record.seq, record.status)] for part in (record.laid[:half], record.laid[half:])]


def _minimal(rule_id: str, record: _Record, exc: Any) -> _Record:
    [laid] = record.laid
    note = f"Table Storage refused the full hit ({error_code(exc)}); stored a minimal form"
    log.warning("hit %s of rule %s: %s", laid.hit.key[:12], rule_id, note)
    return _record(rule_id, [packs.lay_minimal(laid, note)], record.seq, record.status)
