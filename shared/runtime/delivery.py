"""Delivering one rule's hits in one run: every webhook its route names, each success recorded at once.

A small object with explicit state instead of parameters mutated in place: `current` holds the latest stored
version of each hit (marks replace it as they land) and `problems` what the run must report. The delivery lease
is taken here, when delivery starts (not when the run started: recording a big burst must not eat it), over at
most MAX_CLAIM_HITS hits; the rest stay pending for the next run. A card Teams rejects (400/413) is split, then
compacted; a webhook that fails is left for the next run while the others are tried; posting stops while enough
lease is left for one post's retries, and nothing is recorded as delivered once the lease has run out (another
run may own those hits by then). Only the cards that will be sent are built (finding E), and only their hits'
rows are read (pending hits from earlier runs come from the index without rows). A burst's tail (`later`) is
still being recorded while the first cards go out; it is claimed once it lands, before the card that counts it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from shared.rules.model import Rule
from shared.runtime import notices
from shared.runtime.cards import MAX_HITS_PER_CARD, CardContext, build_post, build_posts
from shared.runtime.store import Hit, StateStore
from shared.runtime.tableio import BATCH
from shared.runtime.teams import PostResult

LEASE_MARGIN = timedelta(minutes=3)  # stop posting when less than this is left: a post with its retries fits in it
MAX_CLAIM_HITS = 60_000  # most hits one run leases: claiming and recording them is a few hundred lot writes

Evidence = Sequence[tuple[str, Sequence[str]]]


class Poster(Protocol):
    def post(self, url: str, payload: Any) -> PostResult: ...


@dataclass
class Delivery:
    rule: Rule
    store: StateStore
    teams: Poster
    clock: Callable[[], datetime]
    max_cards: int  # KQLWATCH_MAX_CARDS_PER_RUN, per webhook
    lease_until: datetime  # the delivery lease: taken by claim(), from when delivery starts
    link: str | None  # the card's "open query" link
    webhook_ids: frozenset[str]  # a hit is delivered once every one of these has it
    evidence_for: Callable[[list[Hit]], Evidence] = lambda hits: ()  # issue 16: DNS evidence for the card hits
    owner: str = ""  # the run's id: the lease's owner
    current: dict[str, Hit] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    deferred: int = 0  # hits left pending for the next run
    write_seconds: float = 0.0  # one lot transaction, as measured when claiming: to size what can be recorded
    later: Future[list[Hit]] | None = None  # a burst's tail still being recorded (the detector): see _landed
    later_count: int = 0  # how many hits that tail holds (the cards' "x of y" counts them)
    _tail: list[Hit] = field(default_factory=list)  # the tail, recorded and claimed
    _evidence: Evidence | None = None

    def run(self, hits: list[Hit], urls: dict[str, str]) -> int:
        """Claim, post to every webhook what it lacks, release what is left; returns how many hits were
        delivered everywhere (`deferred`: how many stay pending)."""
        claimed = self.claim(hits)
        if not claimed and self.later is None:
            return 0
        remaining = self.deliver(claimed, urls)
        self._release(remaining)
        self.deferred += len(remaining)
        return len(claimed) + len(self._tail) - len(remaining)

    def claim(self, hits: list[Hit]) -> list[Hit]:
        """Lease the hits (oldest first) for this delivery, at most MAX_CLAIM_HITS of them, in whole lots; the
        rest are released for the next run. A hit another run took meanwhile is left out."""
        take, rest = _bounded(hits, MAX_CLAIM_HITS)
        started = self.clock()
        leased = [_fresh(replace(h, lease_owner=self.owner, lease_until=self.lease_until)) for h in take]
        claimed = self.store.update_hits(self.rule.id, leased)
        transactions = max(1, math.ceil(len({id(h.lot) for h in take}) / BATCH))
        self.write_seconds = (self.clock() - started).total_seconds() / transactions
        if rest:
            self.deferred += len(rest)
            self._release([replace(h, lease_owner="", lease_until=None) for h in rest], count=False)
        return claimed

    def deliver(self, hits: list[Hit], urls: dict[str, str]) -> list[Hit]:
        """Post to every webhook what it does not have yet; returns the hits some webhook still lacks."""
        self.current.update({h.key: h for h in hits})
        for url_id, url in urls.items():
            todo = [self.current[h.key] for h in [*hits, *self._tail] if h.key in self.current]
            todo = [h for h in todo if url_id not in h.delivered_to]
            if todo:
                self.to_webhook(url, url_id, todo)
        self._landed()  # a tail no overflow card reached (posting stopped early): claimed, then released
        return [h for h in self.current.values() if not h.delivered_to >= self.webhook_ids]

    def _landed(self) -> list[Hit]:
        """A burst's tail, once the detector has recorded it (it records it while the first cards go out: they
        show none of it), claimed like the rest; [] when there is none or it is in already. A recording that
        failed fails the run here, after the cards of what was recorded, and before any card counts the tail."""
        if self.later is None:
            return []
        later, self.later = self.later, None
        self._tail = self.claim(later.result())
        self.current.update({h.key: h for h in self._tail})
        return self._tail

    def to_webhook(self, url: str, url_id: str, todo: list[Hit]) -> None:
        """Post todo's cards to one webhook, recording each success at once. At most max_cards cards: the rest
        is summed up in one card."""
        todo = self._with_rows(todo, self._capacity())
        rows = [h.row for h in todo]
        single = self.max_cards // 2
        if self._evidence is None:
            self._evidence = self.evidence_for(todo[: self._capacity()])
        total = len(todo) + (self.later_count if self.later is not None else 0)
        ctx = CardContext(self.rule, total=total, query_link=self.link, single_cards=single, evidence=self._evidence)
        posts = build_posts(ctx, rows[: self._capacity()])  # only what can be sent (+1 hit: is there more?)
        overflow: list[Hit] = []
        if len(posts) > self.max_cards:
            posts = posts[: self.max_cards - 1]
            shown = posts[-1].first + posts[-1].count if posts else 0
            overflow = todo[shown:]
        queue = deque((p.first, p.count, p.payload, False) for p in posts)
        while queue:
            if self.clock() > self.lease_until - LEASE_MARGIN:
                self.problems.append("lease nearly expired: remaining deliveries left to the next run")
                return
            first, count, payload, compact = queue.popleft()
            result = self.teams.post(url, payload)
            if result.ok:
                self._mark(todo[first : first + count], url_id)
                continue
            if result.rejected and count > 1:
                half = count // 2
                queue.extendleft(
                    [
                        (first + half, count - half, build_post(ctx, rows, first + half, first + count), False),
                        (first, half, build_post(ctx, rows, first, first + half), False),
                    ]
                )
                continue
            if result.rejected and not compact:
                queue.appendleft((first, 1, build_post(ctx, rows, first, first + 1, compact=True), True))
                continue
            self.problems.append(f"delivery failed: {result.detail}")
            return  # this webhook is unwell: leave the rest for the next run, try the other webhooks
        if overflow:
            shown = len(todo) - len(overflow)
            overflow += [h for h in self._landed() if url_id not in h.delivered_to]
            self._post_overflow(url, url_id, shown, self._recordable(overflow))

    def _capacity(self) -> int:
        return card_capacity(self.rule, self.max_cards) + 1

    def _with_rows(self, todo: list[Hit], upto: int) -> list[Hit]:
        """The first `upto` hits with their rows (pending hits from earlier runs come without); a hit whose
        entity belongs to no lot of ours (a run killed while recording) is settled, not posted."""
        head, tail = todo[:upto], todo[upto:]
        if all(h.row_loaded for h in head):
            return todo
        loaded, orphans = self.store.load_rows(self.rule.id, head)
        if orphans:
            self.store.save_delivery(self.rule.id, orphans, {h.key for h in orphans})
            for hit in orphans:
                self.current.pop(hit.key, None)
        self.current.update({h.key: h for h in loaded})
        return loaded + tail

    def _recordable(self, overflow: list[Hit]) -> list[Hit]:
        """The overflow hits whose delivery can still be recorded in this lease (whole lots, in order): the
        overflow card counts only those; the others stay pending for the next run."""
        room = (self.lease_until - LEASE_MARGIN - self.clock()).total_seconds()
        if room <= 0:
            return []
        if self.write_seconds <= 0:
            return overflow
        lots = max(0, int(room / self.write_seconds)) * BATCH
        kept: list[Hit] = []
        seen: set[int] = set()
        for hit in overflow:
            seen.add(id(hit.lot) if hit.lot else id(hit))
            if len(seen) > lots:
                break
            kept.append(hit)
        return kept

    def _post_overflow(self, url: str, url_id: str, shown: int, overflow: list[Hit]) -> None:
        if not overflow:
            self.problems.append("lease nearly expired: the hits beyond the cards left to the next run")
            return
        result = self.teams.post(url, notices.overflow(self.rule, shown, len(overflow), self.link))
        if result.ok:
            self._mark(overflow, url_id)
        else:
            self.problems.append(f"delivery failed: {result.detail}")

    def _mark(self, batch: list[Hit], url_id: str) -> None:
        """Record one card's delivery: one write per lot it covers. Never once the lease has run out."""
        if self.clock() >= self.lease_until:
            self.problems.append(
                f"lease expired before {len(batch)} delivered hit(s) could be recorded: the next run may post them again"
            )
            return
        current = self.current
        marked = [_fresh(replace(current[h.key], delivered_to=current[h.key].delivered_to | {url_id})) for h in batch]
        settled = {h.key for h in marked if h.delivered_to >= self.webhook_ids}
        for h in self.store.save_delivery(self.rule.id, marked, settled):
            current[h.key] = h

    def _release(self, hits: list[Hit], *, count: bool = True) -> None:
        """Free the lease on hits this run will not deliver, so the next run can at once (and count the
        attempt). Not once the lease has run out: the hits are free then, or another run's."""
        if not hits or self.clock() >= self.lease_until:
            return
        free = [
            _fresh(replace(h, attempts=h.attempts + (1 if count else 0), lease_owner="", lease_until=None))
            for h in hits
        ]
        self.store.update_hits(self.rule.id, free)


def card_capacity(rule: Rule, max_cards: int) -> int:
    """Hits max_cards cards can show (building cards for one more tells whether there is more)."""
    singles = min(max_cards // 2, max_cards) if rule.aggregation == "AlertPerResult" else 0
    return singles + (max_cards - singles) * MAX_HITS_PER_CARD


def _fresh(hit: Hit) -> Hit:
    """A pending hit's writes are conditional on its lot's latest etag (the lot object this run holds)."""
    return replace(hit, etag=hit.lot.etag) if hit.lot is not None else hit


def _bounded(hits: list[Hit], limit: int) -> tuple[list[Hit], list[Hit]]:
    """The first hits up to `limit`, never splitting a lot (a lot shares one lease)."""
    if len(hits) <= limit:
        return hits, []
    cut = limit
    while cut > 0 and hits[cut].lot is not None and hits[cut].lot is hits[cut - 1].lot:
        cut -= 1
    return hits[:cut], hits[cut:]
