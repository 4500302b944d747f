"""Issue 14 point 4: bursts at storage speed (benchmark findings C-G), through Azurite and the real detector.

A burst larger than one lease can deliver goes out over successive runs, every hit exactly once, nothing
recorded as delivered after its lease; each hit is written once (delivery is recorded per card, the overflow
in whole lots); only the cards that are sent are built; a run finds pending hits by a RowKey range.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest

import shared.runtime.cards
from shared.runtime import delivery
from shared.standins.clock import Clock
from shared.standins.loganalytics import LogAnalyticsStandIn
from shared.standins.teams import WebhookReceiver
from tests.conftest import MakeDetector, delivered_ids, email
from tests.integration.test_faults import AFTER_LEASE, Killed, KillingPoster


class SlowTable:
    """The real TableClient behind a store that takes `per_transaction` (on the test's clock) for every
    entity-group transaction, as a throttled account does; it notes every write and when it landed."""

    def __init__(self, real: Any, clock: Clock, per_transaction: timedelta) -> None:
        self._real = real
        self._clock = clock
        self._per = per_transaction
        self.writes: list[tuple[datetime, str, str, dict[str, Any]]] = []  # (when, op, RowKey, entity)
        self.queries: list[str] = []

    def submit_transaction(self, operations: Any, **kwargs: Any) -> Any:
        operations = list(operations)
        result = self._real.submit_transaction(operations, **kwargs)
        self._clock.advance(self._per)
        for op in operations:
            self.writes.append((self._clock.now, op[0], op[1]["RowKey"], dict(op[1])))
        return result

    def query_entities(self, query_filter: str, **kwargs: Any) -> Any:
        self.queries.append(query_filter)
        return self._real.query_entities(query_filter, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _slow(make_detector: MakeDetector, clock: Clock, per: timedelta, **overrides: str) -> tuple[Any, SlowTable]:
    from shared.runtime.store import StateStore

    detector = make_detector(**overrides)
    table = SlowTable(detector.store._table, clock, per)
    detector.store = StateStore(table)  # type: ignore[arg-type]
    return detector, table


def _overflow_counts(hook: WebhookReceiver) -> list[int]:
    return [int(m.group(1)) for card in hook.cards() if (m := re.search(r"(\d+) more hit\(s\) in this run", str(card)))]


def test_a_burst_larger_than_one_lease_can_deliver_goes_out_over_runs_each_hit_once(
    la: LogAnalyticsStandIn,
    hook: WebhookReceiver,
    make_detector: MakeDetector,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A store so slow that recording the burst takes longer than a lease (every transaction a minute), and a
    run may lease only 300 hits: each run delivers what it leased, the rest stays pending for the next."""
    monkeypatch.setattr(delivery, "MAX_CLAIM_HITS", 300, raising=False)
    rows = [email(clock, RecipientEmailAddress=f"u{i}@contoso.com") for i in range(1_000)]
    la.ingest("EmailEvents", rows, at=clock.now - timedelta(minutes=10))
    leases: dict[str, datetime] = {}  # each lot's lease, as last written
    done: dict[str, str] = {}  # each lot's delivery record, as last written
    late: list[str] = []
    for _ in range(8):
        detector, table = _slow(make_detector, clock, timedelta(minutes=1), KQLWATCH_MAX_CARDS_PER_RUN="4")
        outcome = detector.run(only_due=False).outcomes[0]
        assert not any("lease expired" in w for w in outcome.warnings), outcome.warnings
        for when, op, key, entity in table.writes:
            if not key.startswith("~state~p~"):
                continue
            recorded = op == "delete" or entity.get("Done", "{}") != done.get(key, "{}")
            if recorded and when > leases[key]:  # recording a delivery: under the lease, never after it
                late.append(f"{op} {key} at {when}, lease until {leases[key]}")
            if op != "delete":
                done[key] = entity.get("Done", "{}")
                if entity.get("LeaseOwner"):
                    leases[key] = entity["LeaseUntil"]
        clock.advance(timedelta(minutes=5))
    shown = delivered_ids(hook)
    assert late == []
    assert len(shown) == len(set(shown))  # no hit on two cards
    assert len(shown) + sum(_overflow_counts(hook)) == 1_000  # every hit exactly once: on a card or counted
    assert len(_overflow_counts(hook)) >= 3  # over successive runs: one lease could not take them all


def test_each_hit_is_written_once_and_the_overflow_recorded_in_whole_lots(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    rows = [email(clock, RecipientEmailAddress=f"u{i}@contoso.com") for i in range(2_000)]
    la.ingest("EmailEvents", rows, at=clock.now - timedelta(minutes=10))
    detector, table = _slow(make_detector, clock, timedelta(0))
    outcome = detector.run(only_due=False).outcomes[0]
    assert (outcome.new_hits, outcome.delivered, outcome.deferred) == (2_000, 2_000, 0)
    # Each hit is written once, in a pack of up to 99 (its row, the dedupe record): 21 entities for 2,000
    # hits, created and never updated on delivery; no entity of a hit of its own.
    assert not [key for _, _, key, _ in table.writes if not key.startswith(("~", "pack~"))]
    pack_writes = [(op, entity) for _, op, key, entity in table.writes if key.startswith("pack~")]
    assert {op for op, _ in pack_writes} == {"create"} and len(pack_writes) == 21
    per_hit = Counter(k for _, entity in pack_writes for k in entity["Keys"].split(","))
    assert len(per_hit) == 2_000 and set(per_hit.values()) == {1}
    lot_writes = [key for _, op, key, _ in table.writes if key.startswith("~state~p~")]
    # 21 lots: each created with its pack, leased when delivery starts, then one write per card it is on
    # (19 cards, each on at most 2 lots) and one delete when settled (the overflow: one transaction).
    assert len(lot_writes) <= 21 + 21 + 19 * 2 + 21
    assert sum(_overflow_counts(hook)) == 2_000 - len(delivered_ids(hook))
    clock.advance(timedelta(minutes=5))
    again = make_detector().run(only_due=False).outcomes[0]
    assert again.new_hits == 0 and again.delivered == 0 and len(hook.received()) == 20  # settled: nothing again


def test_only_the_cards_that_are_sent_are_built(
    la: LogAnalyticsStandIn,
    hook: WebhookReceiver,
    make_detector: MakeDetector,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[int] = []
    real_card = shared.runtime.cards.card

    def counting(*args: Any, **kwargs: Any) -> Any:
        built.append(1)
        return real_card(*args, **kwargs)

    monkeypatch.setattr(shared.runtime.cards, "card", counting)
    la.ingest(
        "EmailEvents",
        [email(clock, RecipientEmailAddress=f"u{i}@contoso.com") for i in range(3_000)],
        at=clock.now - timedelta(minutes=10),
    )
    outcome = make_detector().run(only_due=False).outcomes[0]
    assert outcome.delivered == 3_000 and len(hook.received()) == 20
    assert len(built) <= 21  # 19 cards sent and the one that tells there is more (was: 120 for 3,000 hits)


def test_pending_hits_after_a_crash_are_found_by_a_key_range(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    settled = [email(clock, RecipientEmailAddress=f"old{i}@contoso.com") for i in range(300)]
    la.ingest("EmailEvents", settled, at=clock.now - timedelta(minutes=10))
    make_detector().run(only_due=False)
    clock.advance(timedelta(minutes=5))
    rows = [email(clock, RecipientEmailAddress=f"u{i}@contoso.com") for i in range(40)]
    la.ingest("EmailEvents", rows, at=clock.now - timedelta(minutes=1))
    before = len(hook.received())
    killed = make_detector()
    killed.teams = KillingPoster(killed.teams, before=True)
    with pytest.raises(Killed):
        killed.run(only_due=False)
    assert len(hook.received()) == before
    clock.advance(AFTER_LEASE)
    detector, table = _slow(make_detector, clock, timedelta(0))
    outcome = detector.run(only_due=False).outcomes[0]
    assert outcome.delivered == 40 and outcome.new_hits == 0
    assert sorted(delivered_ids(hook)[-40:]) == sorted(r["NetworkMessageId"] for r in rows)
    # The run's read of its state and pending hits is one RowKey range: no predicate on a non-key property
    # (Table Storage reads the whole partition for those, and for an `or` of RowKeys).
    first = table.queries[0]
    assert re.fullmatch(r"PartitionKey eq @\w+ and RowKey ge @\w+ and RowKey lt @\w+", first), first


def test_hits_left_pending_by_the_version_before_lots_are_delivered_once_after_the_upgrade(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    """A regression guard for the upgrade (it cannot fail on old main, which had no lots): state as the older
    version left it - a state row without HitShape, each pending hit saying so on its own entity."""
    import uuid

    from shared.runtime.rows import _hit_entity
    from shared.runtime.store import PENDING, Hit

    detector = make_detector()
    store = detector.store
    store.ensure_table()
    rule_id = "a256f4ea-deec-4fcd-bdf3-63987638eed9"
    rows = [email(clock) for _ in range(3)]
    for row in rows:
        store._table.create_entity(
            _hit_entity(rule_id, Hit(uuid.uuid4().hex, row, first_seen=clock.now), status=PENDING)
        )
    store._table.upsert_entity({"PartitionKey": rule_id, "RowKey": "~state", "Kind": "state", "Runs": 4})
    outcome = detector.run(only_due=False).outcomes[0]
    assert outcome.delivered == 3, outcome.warnings
    assert sorted(delivered_ids(hook)) == sorted(r["NetworkMessageId"] for r in rows)
    clock.advance(timedelta(minutes=5))
    again = make_detector().run(only_due=False).outcomes[0]
    assert again.delivered == 0 and len(delivered_ids(hook)) == 3
    assert {h.status for h in make_detector().store.hits(rule_id)} == {"delivered"}


def test_hits_left_pending_in_lots_by_the_version_before_packs_are_delivered_once(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    """State as the version before packs left it: a lot (no `Packed`) naming hits stored one entity each. Its
    hits are delivered once, from their own entities; the same rows read again are known (no second card)."""
    from shared.runtime.hits import EMAIL_IDENTITY, identity
    from shared.runtime.lots import Lot, lot_entity, new_lot_id
    from shared.runtime.rows import _hit_entity
    from shared.runtime.store import PENDING, Hit

    detector = make_detector()
    store = detector.store
    store.ensure_table()
    rule_id = "a256f4ea-deec-4fcd-bdf3-63987638eed9"
    rows = [email(clock) for _ in range(3)]
    hits = [Hit(identity(r, EMAIL_IDENTITY), r, first_seen=clock.now) for r in rows]
    lot = Lot(new_lot_id(clock.now, 0), [h.key for h in hits], clock.now, packed=False)
    old_lot = {k: v for k, v in lot_entity(rule_id, lot).items() if k != "Packed"}
    store._table.create_entity(old_lot)
    for hit in hits:
        store._table.create_entity({**_hit_entity(rule_id, hit, status=PENDING), "Lot": lot.id})
    store._table.upsert_entity({"PartitionKey": rule_id, "RowKey": "~state", "Kind": "state", "HitShape": 2})
    la.ingest("EmailEvents", rows, at=clock.now - timedelta(minutes=10))  # the same rows, read again
    outcome = detector.run(only_due=False).outcomes[0]
    assert (outcome.new_hits, outcome.delivered) == (0, 3), outcome.log_line()
    assert sorted(delivered_ids(hook)) == sorted(r["NetworkMessageId"] for r in rows)
    clock.advance(timedelta(minutes=5))
    again = make_detector().run(only_due=False).outcomes[0]
    assert again.delivered == 0 and len(delivered_ids(hook)) == 3
    assert sorted(h.status for h in make_detector().store.hits(rule_id)) == ["delivered"] * 3


class TailWatch:
    """The real TableClient and poster of one run, noting in one list when each recording transaction (one with
    packs) and each post happens. A recording transaction after the first `head` waits (up to 10 s) for the
    first post, so a run that posts only once everything is recorded shows it; `fail_pack` makes that recording
    transaction (1-based) fail as a dropped connection would."""

    def __init__(self, table: Any, teams: Any, head: int, fail_pack: int = 0) -> None:
        self._table, self._teams, self._head, self._fail = table, teams, head, fail_pack
        self.events: list[str] = []
        self.posted = threading.Event()

    def submit_transaction(self, operations: Any, **kwargs: Any) -> Any:
        operations = list(operations)
        if any(op[1].get("Kind") == "pack" for op in operations):
            if self.events.count("record") >= self._head:
                self.posted.wait(10)
            self.events.append("record")
            if self.events.count("record") == self._fail:
                from azure.core.exceptions import ServiceRequestError

                raise ServiceRequestError("connection reset by peer")
        return self._table.submit_transaction(operations, **kwargs)

    def post(self, url: str, payload: Any) -> Any:
        self.events.append("post")
        result = self._teams.post(url, payload)
        self.posted.set()
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)


def _watched(make_detector: MakeDetector, head: int, fail_pack: int = 0) -> tuple[Any, TailWatch]:
    from shared.runtime.store import StateStore

    detector = make_detector()
    watch = TailWatch(detector.store._table, detector.teams, head, fail_pack)
    detector.store, detector.teams = StateStore(watch), watch  # type: ignore[arg-type]
    return detector, watch


def _everyone_once(hook: WebhookReceiver, total: int) -> None:
    shown = delivered_ids(hook)
    assert len(shown) == len(set(shown))  # no hit on two cards
    assert len(shown) + sum(_overflow_counts(hook)) == total  # every hit on a card or counted, once


def test_a_burst_s_first_cards_go_out_while_the_rest_is_still_being_recorded(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    """5,000 hits: the first 1,000 (more than the cards show) are recorded, the first card is posted, and the
    rest is recorded meanwhile; the card that counts the rest goes out only once it is recorded. Every hit once."""
    rows = [email(clock, RecipientEmailAddress=f"u{i}@contoso.com") for i in range(5_000)]
    la.ingest("EmailEvents", rows, at=clock.now - timedelta(minutes=10))
    detector, watch = _watched(make_detector, head=1)  # the first 1,000 hits: one transaction
    outcome = detector.run(only_due=False).outcomes[0]
    assert outcome.ok and (outcome.new_hits, outcome.delivered, outcome.deferred) == (5_000, 5_000, 0), (
        outcome.log_line()
    )
    assert watch.events.index("post") < len(watch.events) - 1 - watch.events[::-1].index("record")
    assert watch.events[-1] == "post"  # the overflow card, after the last recording
    assert "5000 new hits" in str(hook.cards()[0])  # the cards count the whole burst
    _everyone_once(hook, 5_000)
    clock.advance(timedelta(minutes=5))
    again = make_detector().run(only_due=False).outcomes[0]
    assert again.new_hits == 0 and again.delivered == 0 and len(hook.received()) == 20


def test_a_burst_whose_rest_fails_to_record_loses_and_doubles_nothing(
    la: LogAnalyticsStandIn,
    hook: WebhookReceiver,
    make_detector: MakeDetector,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rest of a 5,000-hit burst fails to record after its first cards went out: the run fails, no card
    counts what was not recorded, and the runs after it deliver the rest; every hit reaches Teams once."""
    import shared.runtime.packs

    monkeypatch.setattr(shared.runtime.packs, "TRANSACTION_BYTES", 1)  # one pack (99 hits) a transaction
    rows = [email(clock, RecipientEmailAddress=f"u{i}@contoso.com") for i in range(5_000)]
    la.ingest("EmailEvents", rows, at=clock.now - timedelta(minutes=10))
    detector, watch = _watched(make_detector, head=11, fail_pack=14)  # the first 1,000: 11 packs; the rest's 3rd
    first = detector.run(only_due=False).outcomes[0]
    assert not first.ok and any("Table Storage" in e for e in first.errors), first.log_line()
    assert watch.events.index("post") < watch.events.index("record", 11)  # cards went out meanwhile
    assert _overflow_counts(hook) == [] and len(delivered_ids(hook)) > 0  # nothing counted the unrecorded
    for _ in range(3):
        clock.advance(AFTER_LEASE)
        make_detector().run(only_due=False)
    _everyone_once(hook, 5_000)
