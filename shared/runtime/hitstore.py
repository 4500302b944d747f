"""Table Storage I/O for hits: recording them (the dedupe), the pending index (lots), delivery records.

Layout, in the rule's partition (PartitionKey = rule id):
  RowKey <sha256 hex>       a hit, written once: the row, FirstSeen, Status as recorded (pending|suppressed; later
                            dropped), Lot (the lot it was recorded in). Creating it is the dedupe: first writer wins.
  RowKey ~state~p~<lot id>  a lot (shared.runtime.lots): up to 99 pending hits' keys, their lease, which webhooks
                            have which of them; deleted once all are settled. Created in the same transaction as
                            its hits, so a hit is never recorded pending without its lot.
A hit is pending while an existing lot lists it unsettled; otherwise it is settled (delivered, unless it says
dropped or suppressed). Lots and the state row are one RowKey range: the run's snapshot is a range query.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from shared.runtime.hitreads import HitReads
from shared.runtime.lots import LOT_SIZE, Lot, LotChange, change_patch, lot_entity
from shared.runtime.lots import new_lot_id as _new_lot_id
from shared.runtime.rows import (
    DELIVERED,
    DROPPED,
    PENDING,
    Hit,
    _hit_entity,
    _hit_patch,
)
from shared.runtime.tableio import BATCH, chunks, error_code, state_errors

if TYPE_CHECKING:
    from azure.data.tables import TableClient

log = logging.getLogger("kqlwatch.state")

RECORD_THREADS = 4  # lot transactions in flight at once while recording a burst
PARALLEL_FROM = 4  # lots: smaller recordings stay one transaction after another


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

    # --- recording ---

    def insert_new(self, rule_id: str, hits: Sequence[Hit], *, status: str = PENDING) -> list[Hit]:
        """Create the hits; return those this call created (an existing key means another run or an earlier
        one already owns that hit). Pending hits are recorded in lots of LOT_SIZE, each lot in the same
        transaction as its hits; they share the lease of the first hit (the run recording them)."""
        if not hits:
            return []
        self._guard()
        if status != PENDING:
            return self._insert_plain(rule_id, hits, status)
        lots: list[tuple[Lot, Sequence[Hit]]] = []
        for seq, start in enumerate(range(0, len(hits), LOT_SIZE)):
            chunk = hits[start : start + LOT_SIZE]
            first = chunk[0]
            lot = Lot(_new_lot_id(first.first_seen, seq), [h.key for h in chunk], first.first_seen)
            lot.lease_owner, lot.lease_until = first.lease_owner, first.lease_until
            lots.append((lot, chunk))
        if len(lots) < PARALLEL_FROM:
            return [h for lot, chunk in lots for h in self._insert_lot(rule_id, lot, chunk)]
        # A burst: several lots' transactions in flight at once (each is independent and atomic), so our
        # encoding overlaps the service's work; the order of the result is the order of the hits.
        with ThreadPoolExecutor(RECORD_THREADS, thread_name_prefix="kqlwatch-record") as pool:
            done = list(pool.map(lambda lc: self._insert_lot(rule_id, *lc), lots))
        return [h for part in done for h in part]

    def _insert_lot(self, rule_id: str, lot: Lot, chunk: Sequence[Hit]) -> list[Hit]:
        from azure.data.tables import TableTransactionError

        laid = [replace(h, lot=lot, slot=i) for i, h in enumerate(chunk)]
        entities = [_hit_entity(rule_id, h, status=PENDING) for h in laid]
        with state_errors(f"record hits of rule {rule_id}"):
            try:
                ops = [("create", lot_entity(rule_id, lot)), *(("create", e) for e in entities)]
                results = self._table.submit_transaction(ops)
                lot.etag = results[0].get("etag")
                return [replace(h, etag=lot.etag) for h in laid]
            except TableTransactionError:
                pass  # a hit already exists (or one is refused): the group failed atomically, one by one
            # The lot first: a hit is never pending without it. Then its hits; then the lot names only ours.
            meta = self._table.create_entity(lot_entity(rule_id, lot))
            lot.etag = meta.get("etag")
            mine = [one for h, e in zip(laid, entities, strict=True) if (one := self._create_one(rule_id, h, e))]
            return self._narrow(rule_id, lot, mine)

    def _narrow(self, rule_id: str, lot: Lot, mine: list[Hit]) -> list[Hit]:
        from azure.data.tables import UpdateMode

        if len(mine) == len(lot.keys):
            return [replace(h, etag=lot.etag) for h in mine]
        if not mine:
            self._table.delete_entity(rule_id, lot.row_key)
            return []
        lot.keys = [h.key for h in mine]
        meta = self._table.upsert_entity(lot_entity(rule_id, lot), mode=UpdateMode.REPLACE)
        lot.etag = meta.get("etag")
        return [replace(h, slot=i, etag=lot.etag) for i, h in enumerate(mine)]

    def _insert_plain(self, rule_id: str, hits: Sequence[Hit], status: str) -> list[Hit]:
        """Settled on arrival (suppressed, or seeded as delivered): no lot."""
        from azure.data.tables import TableTransactionError

        created: list[Hit] = []
        for chunk in chunks(hits, BATCH):
            entities = [_hit_entity(rule_id, hit, status=status) for hit in chunk]
            with state_errors(f"record hits of rule {rule_id}"):
                try:
                    results = self._table.submit_transaction([("create", e) for e in entities])
                    created.extend(replace(h, etag=r.get("etag")) for h, r in zip(chunk, results, strict=True))
                    continue
                except TableTransactionError:
                    pass
                created.extend(
                    one for h, e in zip(chunk, entities, strict=True) if (one := self._create_one(rule_id, h, e))
                )
        return created

    def _create_one(self, rule_id: str, hit: Hit, entity: dict[str, Any]) -> Hit | None:
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
            code = error_code(exc)
        note = f"Table Storage refused the full hit ({code}); stored a minimal form"
        log.warning("hit %s of rule %s: %s", hit.key[:12], rule_id, note)
        try:
            meta = self._table.create_entity(_hit_entity(rule_id, hit, status=entity["Status"], minimal=note))
        except ResourceExistsError:
            return None
        return replace(hit, etag=meta.get("etag"), store_note=note, truncated=True)

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
                self._set_status(rule_id, [h.key for h in laid], DROPPED)
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

    def _set_status(self, rule_id: str, keys: Sequence[str], status: str) -> None:
        """Dropped hits say so on their own entity (for `kqlwatch status --dropped`), before their lot goes."""
        from azure.data.tables import UpdateMode

        for start in range(0, len(keys), BATCH):
            ops = [
                ("update", {"PartitionKey": rule_id, "RowKey": k, "Status": status}, {"mode": UpdateMode.MERGE})
                for k in keys[start : start + BATCH]
            ]
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
