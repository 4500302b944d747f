"""Issue 14: the run lease on ~state (shared.runtime.runlease, runguard). An idle run costs no lease operation
(test_idle_cost.py); what the lease guarantees must hold all the same:

- a run with work takes the lease before it writes or posts anything: when another run changes the rule
  between this run's snapshot and its first write (a rival), this run writes nothing and posts nothing (it is
  skipped), and the next run does the work, once - for new hits, pending lots, a silence hit, the notices
  "failing", "recovered", blind and back, and the daily purge;
- two runs of one rule at the same moment, with work or on the rule's first run (no state row yet): one runs.

Real SDK TableClient on Azurite, the HTTPS Log Analytics stand-in, the Teams receiver.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.runtime.detector import Detector, RuleOutcome, load_prepared
from shared.runtime.store import STATE_ROW
from shared.standins._http import Response
from shared.standins.clock import Clock
from shared.standins.loganalytics import LogAnalyticsStandIn
from shared.standins.teams import WebhookReceiver
from tests.conftest import WORKSPACE, MakeDetector, delivered_ids, email
from tests.integration.test_idle_cost import race
from tests.integration.test_no_row_missed import SILENCE_RULE

M = timedelta(minutes=1)
BROKEN = Response.of_json(400, {"error": {"code": "BadArgumentError", "message": "Failed to resolve table"}})


class Rival:
    """A proxy around the real TableClient: right after the run has read its snapshot, another run saves the
    rule (its state row changes, so its etag does). Everything else is forwarded."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.struck = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def query_entities(self, query_filter: str, **kwargs: Any) -> Any:
        rows = list(self._real.query_entities(query_filter, **kwargs))
        parameters = kwargs.get("parameters") or {}
        if not self.struck and parameters.get("lo") == STATE_ROW:  # the snapshot's range query
            self.struck = True
            from azure.data.tables import UpdateMode

            rival = {"PartitionKey": parameters["pk"], "RowKey": STATE_ROW, "Kind": "state", "HitShape": 2}
            self._real.upsert_entity({**rival, "Rival": "another run saved"}, mode=UpdateMode.MERGE)
        return rows


@dataclass
class Scene:
    make: MakeDetector
    clock: Clock
    la: LogAnalyticsStandIn
    hook: WebhookReceiver
    rules_dir: Path

    def detector(self) -> Detector:
        return self.make(KQLWATCH_OPS_WEBHOOK_URL=self.hook.url("ops"))

    def run(self, *, rival: bool = False) -> tuple[RuleOutcome, Detector]:
        detector = self.detector()
        detector.store.ensure_table()  # once per process, as run_rule's worker does
        if rival:
            detector.store._table = Rival(detector.store._table)  # type: ignore[assignment]
        (prepared,), _ = load_prepared(detector.settings, self.clock().date())
        return detector.run_leased(prepared, self.clock(), workspace=WORKSPACE), detector

    def partition(self, detector: Detector, rule_id: str) -> dict[str, str | None]:
        """Every entity of the rule but its state row, with its etag: what a run's writes would change."""
        table = detector.store._table
        found = table.query_entities("PartitionKey eq @pk", parameters={"pk": rule_id})
        return {e["RowKey"]: e.metadata["etag"] for e in found if e["RowKey"] != STATE_ROW}


def _titles(hook: WebhookReceiver, name: str) -> list[str]:
    return [str(card) for card in hook.cards(name)]


def _new_hits(s: Scene) -> None:
    s.la.ingest("EmailEvents", [email(s.clock)], at=s.clock.now - 10 * M)


def _pending(s: Scene) -> None:
    _new_hits(s)
    s.hook.always("soc", Response(503))
    outcome, _ = s.run()
    assert outcome.deferred == 1, outcome.log_line()
    s.hook.always("soc", None)
    s.clock.advance(5 * M)


def _silence(s: Scene) -> None:
    (s.rules_dir / "accepted-domain-dmarc-temperror.yaml").unlink()
    (s.rules_dir / "silence.yaml").write_text(SILENCE_RULE, encoding="utf-8")


def _failing_twice(s: Scene) -> None:
    for _ in range(2):
        s.la.respond(BROKEN)
        assert not s.run()[0].ok
        s.clock.advance(5 * M)
    s.la.respond(BROKEN, BROKEN)  # the rival's run, then the next


def _failing_notified(s: Scene) -> None:
    for _ in range(3):
        s.la.respond(BROKEN)
        s.run()
        s.clock.advance(5 * M)
    assert len(s.hook.cards("ops")) == 1  # "failing", after the third


def _quiet(s: Scene) -> None:
    s.la.ingest("EmailEvents", [email(s.clock, EmailDirection="Outbound")], at=s.clock.now - 4 * 60 * M)


def _quiet_then_back(s: Scene) -> None:
    _quiet(s)
    s.run()
    assert len(s.hook.cards("ops")) == 1  # "cannot see"
    s.la.ingest("EmailEvents", [email(s.clock, EmailDirection="Outbound")], at=s.clock.now)
    s.clock.advance(65 * M)  # the next hourly probe sees the new row


def _purge_due(s: Scene) -> None:
    s.run()
    s.clock.advance(timedelta(days=31))  # the first run's record is past its 30 days; the daily purge is due


def _posted(name: str, text: str) -> Callable[[Scene], bool]:
    return lambda s: sum(text in t for t in _titles(s.hook, name)) == 1


def _purged(s: Scene) -> bool:
    detector = s.detector()
    rule_id = next(iter(detector.store.rule_states()))
    runs = detector.store.runs(rule_id)
    return len(runs) == 1 and runs[0]["Started"] > s.clock.now - timedelta(days=1)  # the old record gone


Setup = Callable[[Scene], None]
Done = Callable[[Scene], bool]

SCENES: dict[str, tuple[Setup, Done]] = {
    "new hits": (_new_hits, lambda s: len(delivered_ids(s.hook)) == 1),
    "pending lots": (_pending, lambda s: len(delivered_ids(s.hook)) == 1),
    "silence hit": (_silence, _posted("soc", "fewer than 1 row(s)")),
    "failing notice": (_failing_twice, _posted("ops", "rule failing")),
    "recovered notice": (_failing_notified, _posted("ops", "rule recovered")),
    "blind notice": (_quiet, _posted("ops", "cannot see: EmailEvents")),
    "back notice": (_quiet_then_back, _posted("ops", "can see again: EmailEvents")),
    "daily purge": (_purge_due, _purged),
}


@pytest.mark.parametrize("scene", list(SCENES))
def test_a_run_with_work_takes_the_lease_before_it_writes_or_posts_anything(
    scene: str,
    make_detector: MakeDetector,
    clock: Clock,
    la: LogAnalyticsStandIn,
    hook: WebhookReceiver,
    rules_dir: Path,
) -> None:
    s = Scene(make_detector, clock, la, hook, rules_dir)
    setup, done = SCENES[scene]
    setup(s)
    posted = len(hook.received())
    probe = s.detector()
    probe.store.ensure_table()
    (prepared,), _ = load_prepared(probe.settings, clock().date())
    before = s.partition(probe, prepared.rule.id)
    outcome, _ = s.run(rival=True)
    # Another run saved the rule after this run read it: this one wrote nothing, posted nothing (a failing
    # query still says so in its outcome).
    assert not outcome.ran and "another run" in outcome.skipped, outcome.log_line()
    assert len(hook.received()) == posted
    assert s.partition(probe, prepared.rule.id) == before
    assert not done(s)
    # The next run does the work, once.
    clock.advance(5 * M)
    outcome, _ = s.run()
    assert outcome.ran and not outcome.skipped, outcome.log_line()
    assert done(s), [t[:200] for t in _titles(hook, "ops") + _titles(hook, "soc")]


def _race(first: Detector, second: Detector, scheduled: Any) -> list[RuleOutcome]:
    (prepared,), _ = load_prepared(first.settings, scheduled.date())
    return race(first, second, prepared, scheduled)


@pytest.mark.parametrize("first_run", [True, False], ids=["first-run", "warm"])
@pytest.mark.parametrize("with_hit", [True, False], ids=["hit", "idle"])
def test_two_runs_of_one_rule_at_the_same_moment_run_it_once(
    first_run: bool,
    with_hit: bool,
    make_detector: MakeDetector,
    clock: Clock,
    la: LogAnalyticsStandIn,
    hook: WebhookReceiver,
) -> None:
    """Two workers hold one message (at-least-once delivery): one runs, one is skipped - on the rule's first
    run too, when neither finds a state row (one creates it), and when there is a hit to record and post."""
    first, second = make_detector(), make_detector()
    first.store.ensure_table()
    (prepared,), _ = load_prepared(first.settings, clock().date())
    rule_id = prepared.rule.id
    if not first_run:
        assert first.run_leased(prepared, clock(), workspace=WORKSPACE).ran
        clock.advance(5 * M)
    if with_hit:
        la.ingest("EmailEvents", [email(clock, Subject="once")], at=clock.now - 2 * M)
    outcomes = _race(first, second, clock())
    ran = [o for o in outcomes if o.ran]
    assert len(ran) == 1 and sum(1 for o in outcomes if o.skipped) == 1, [o.log_line() for o in outcomes]
    state = first.store.snapshot(rule_id).state
    assert ran[0].window is not None and state.last_window_end == ran[0].window.end
    assert state.runs == (1 if first_run else 2) and len(first.store.runs(rule_id)) == state.runs
    assert len(delivered_ids(hook)) == (1 if with_hit else 0)
    assert len(list(first.store.hits(rule_id))) == (1 if with_hit else 0)


class HeldPost:
    """A poster whose first post waits until the test lets it go, then fails as a Teams outage would (no answer):
    the run sits in its delivery, holding the rule's lease, for as long as the test needs."""

    def __init__(self, real: Any) -> None:
        self.real, self.arrived, self.go = real, threading.Event(), threading.Event()

    def post(self, url: str, payload: Any) -> Any:
        from shared.runtime.teams import PostResult

        if not self.arrived.is_set():
            self.arrived.set()
            self.go.wait(60)
            return PostResult(False, None, "no answer (test)")
        return self.real.post(url, payload)


def test_a_run_that_outlives_its_lease_saves_nothing_and_the_run_that_took_over_delivers_once(
    make_detector: MakeDetector, clock: Clock, la: LogAnalyticsStandIn, hook: WebhookReceiver
) -> None:
    """A run holding the lease sits in a post past the lease's end; the next run takes the rule over (the lease
    and the hit's lot lease have ended) and delivers. The first run's save, conditional on its lease's etag,
    then fails: it saved nothing, so the window advanced once and the hit was recorded and delivered once."""
    slow, fresh = make_detector(), make_detector()
    slow.store.ensure_table()
    (prepared,), _ = load_prepared(slow.settings, clock().date())
    la.ingest("EmailEvents", [email(clock)], at=clock.now - 10 * M)
    held = HeldPost(slow.teams)
    slow.teams = held
    outcomes: list[RuleOutcome] = []
    thread = threading.Thread(target=lambda: outcomes.append(slow.run_leased(prepared, clock(), workspace=WORKSPACE)))
    thread.start()
    assert held.arrived.wait(60), "the first run never posted"
    clock.advance(11 * M)  # past both of its leases (10 minutes)
    took_over = fresh.run_leased(prepared, clock(), workspace=WORKSPACE)
    held.go.set()
    thread.join(60)
    [late] = outcomes
    assert took_over.ran and took_over.delivered == 1, took_over.log_line()
    assert late.ran and any("outlived its run lease" in e for e in late.errors), late.log_line()
    assert len(delivered_ids(hook)) == 1
    state = fresh.store.snapshot(prepared.rule.id).state
    assert took_over.window is not None and state.last_window_end == took_over.window.end
    assert state.runs == 1 and len(fresh.store.runs(prepared.rule.id)) == 1


class TookOverWhileRecording:
    """A proxy around the real TableClient: just before the run's first recording transaction is sent, the
    run's lease has ended and another run has taken the rule over and recorded and delivered its hits (`rival`
    runs then). The transaction is then sent as it was."""

    def __init__(self, real: Any, rival: Callable[[], RuleOutcome]) -> None:
        self._real, self._rival = real, rival
        self.rival: RuleOutcome | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def submit_transaction(self, operations: Any, **kwargs: Any) -> Any:
        if self.rival is None and any(op[0] == "create" and op[1].get("Kind") == "pack" for op in operations):
            self.rival = self._rival()
        return self._real.submit_transaction(operations, **kwargs)


def test_a_run_that_outlives_its_lease_before_recording_records_nothing_and_each_hit_is_sent_once(
    make_detector: MakeDetector, clock: Clock, la: LogAnalyticsStandIn, hook: WebhookReceiver
) -> None:
    """The dedupe record is a pack per ~99 hits, not a create per hit that a second recorder would collide with:
    what keeps a run that lost its rule from recording (and posting) hits a second time is that every recording
    transaction carries the state row on its lease's etag. A run stalled past its lease, between reading the
    known keys and recording, whose rule another run took over and delivered meanwhile, records nothing and
    posts nothing: each hit reaches Teams once."""
    slow, fresh = make_detector(), make_detector()
    slow.store.ensure_table()
    (prepared,), _ = load_prepared(slow.settings, clock().date())
    la.ingest("EmailEvents", [email(clock) for _ in range(3)], at=clock.now - 10 * M)
    started = clock()

    def take_over() -> RuleOutcome:
        clock.advance(11 * M)  # past the stalled run's lease (10 minutes)
        return fresh.run_leased(prepared, clock(), workspace=WORKSPACE)

    proxy = TookOverWhileRecording(slow.store._table, take_over)
    slow.store._table = proxy  # type: ignore[assignment]
    late = slow.run_leased(prepared, started, workspace=WORKSPACE)
    assert proxy.rival is not None and proxy.rival.delivered == 3, proxy.rival and proxy.rival.log_line()
    assert not late.ok and any("outlived its run lease" in e for e in late.errors), late.log_line()
    assert late.new_hits == 0 and late.delivered == 0, late.log_line()
    assert sorted(delivered_ids(hook)) == sorted(set(delivered_ids(hook))) and len(delivered_ids(hook)) == 3
    assert len(list(fresh.store.hits(prepared.rule.id))) == 3
