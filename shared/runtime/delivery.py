"""Delivering one rule's hits in one run: every webhook its route names, each success recorded at once.

A small object with explicit state instead of parameters mutated in place: `current` holds the latest stored
version of each hit (marks replace it as they land, so the next mark's etag is the right one) and `problems`
what the run must report. A card Teams rejects (400/413) is split, then compacted; a webhook that fails is left
for the next run while the others are tried; posting stops while enough lease is left for one post's retries.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from shared.rules.model import Rule
from shared.runtime import notices
from shared.runtime.cards import CardContext, build_post, build_posts
from shared.runtime.store import DELIVERED, Hit, StateStore
from shared.runtime.teams import PostResult

LEASE_MARGIN = timedelta(minutes=3)  # stop posting when less than this is left: a post with its retries fits in it


class Poster(Protocol):
    def post(self, url: str, payload: Any) -> PostResult: ...


@dataclass
class Delivery:
    rule: Rule
    store: StateStore
    teams: Poster
    clock: Callable[[], datetime]
    max_cards: int  # KQLWATCH_MAX_CARDS_PER_RUN, per webhook
    lease_until: datetime
    link: str | None  # the card's "open query" link
    webhook_ids: frozenset[str]  # a hit is delivered once every one of these has it
    evidence: Sequence[tuple[str, Sequence[str]]] = ()  # issue 16: DNS evidence, (domain, lines), for the cards
    current: dict[str, Hit] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def deliver(self, hits: list[Hit], urls: dict[str, str]) -> list[Hit]:
        """Post to every webhook what it does not have yet; returns the hits some webhook still lacks."""
        self.current.update({h.key: h for h in hits})
        for url_id, url in urls.items():
            todo = [self.current[h.key] for h in hits if url_id not in self.current[h.key].delivered_to]
            if todo:
                self.to_webhook(url, url_id, todo)
        return [h for h in self.current.values() if not h.delivered_to >= self.webhook_ids]

    def to_webhook(self, url: str, url_id: str, todo: list[Hit]) -> None:
        """Post todo's cards to one webhook, recording each success at once. At most max_cards cards: the rest
        is summed up in one card."""
        rows = [h.row for h in todo]
        ctx = CardContext(
            self.rule, total=len(todo), query_link=self.link, single_cards=self.max_cards // 2, evidence=self.evidence
        )
        posts = build_posts(ctx, rows)
        overflow: list[Hit] = []
        if len(posts) > self.max_cards:
            posts = posts[: self.max_cards - 1]
            shown = posts[-1].first + posts[-1].count
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
            self._post_overflow(url, url_id, len(todo) - len(overflow), overflow)

    def _post_overflow(self, url: str, url_id: str, shown: int, overflow: list[Hit]) -> None:
        result = self.teams.post(url, notices.overflow(self.rule, shown, len(overflow), self.link))
        if result.ok:
            self._mark(overflow, url_id)
        else:
            self.problems.append(f"delivery failed: {result.detail}")

    def _mark(self, batch: list[Hit], url_id: str) -> None:
        current = self.current
        marked = [replace(current[h.key], delivered_to=current[h.key].delivered_to | {url_id}) for h in batch]
        done = [replace(h, lease_owner="", lease_until=None) for h in marked if h.delivered_to >= self.webhook_ids]
        not_done = [h for h in marked if not h.delivered_to >= self.webhook_ids]
        rule_id = self.rule.id
        for h in self.store.update_hits(rule_id, done, Status=DELIVERED) + self.store.update_hits(rule_id, not_done):
            current[h.key] = h
