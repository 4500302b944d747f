"""Issue 14 follow-up: what an idle rule run costs in Table Storage operations, and the guarantee any cheaper
design must keep (two concurrent runs of one rule advance its window once). Real SDK TableClient on Azurite, the
HTTPS Log Analytics stand-in, the Teams receiver."""

from __future__ import annotations

import contextlib
import re
import threading
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.runtime.detector import Detector, LogsApi, load_prepared
from shared.runtime.loganalytics import QueryResult
from shared.runtime.store import DELIVERED, STATE_ROW, Hit
from shared.standins.clock import Clock
from shared.standins.loganalytics import LogAnalyticsStandIn
from shared.standins.teams import WebhookReceiver
from tests.conftest import SEED_RULE, WORKSPACE, MakeDetector

# Every call of the TableClient that is a round-trip to Table Storage (a query page is one: these are one page).
_ROUND_TRIPS = frozenset(
    {
        "get_entity",
        "create_entity",
        "update_entity",
        "upsert_entity",
        "delete_entity",
        "submit_transaction",
        "query_entities",
        "list_entities",
        "create_table",
    }
)


class CountingTable:
    """A proxy around the real TableClient that counts its round-trips by name (and forwards everything)."""

    def __init__(self, real: Any, counts: Counter[str]) -> None:
        self._real = real
        self.counts = counts

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)
        if name not in _ROUND_TRIPS:
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.counts[name] += 1
            return attr(*args, **kwargs)

        return counted


def count_state_ops(detector: Detector) -> Counter[str]:
    """Wrap every TableClient the detector holds (the state store, the run leases) in one counter."""
    counts: Counter[str] = Counter()
    detector.store._table = CountingTable(detector.store._table, counts)  # type: ignore[assignment]
    if detector.leases is not None:
        detector.leases._table = CountingTable(detector.leases._table, counts)  # type: ignore[assignment]
    return counts


def seed_copies(rules_dir: Path, count: int) -> None:
    """`count` copies of the seed rule (own id and name) in place of it."""
    text = SEED_RULE.read_text()
    (rules_dir / SEED_RULE.name).unlink()
    for i in range(count):
        body = re.sub(r"(?m)^id: .*$", f"id: {uuid.uuid4()}", text, count=1)
        body = re.sub(r"(?m)^name: .*$", f"name: Seed copy {i:02d}", body, count=1)
        (rules_dir / f"copy-{i:02d}.yaml").write_text(body)


@pytest.mark.parametrize(("rules", "stored_hits"), [(1, 0), (10, 0), (1, 300)])
def test_an_idle_run_in_a_warm_worker_costs_two_state_operations_per_rule(
    make_detector: MakeDetector,
    clock: Clock,
    la: LogAnalyticsStandIn,
    hook: WebhookReceiver,
    rules_dir: Path,
    rules: int,
    stored_hits: int,
) -> None:
    """The snapshot (state row, run lease, pending lots: one range query) and the save transaction (state with
    the lease released, run record). Before the lease moved onto ~state: 4 (its read and its write as well)."""
    if rules > 1:
        seed_copies(rules_dir, rules)
    detector = make_detector()
    detector.store.ensure_table()  # once per process, as run_rule's worker does
    prepared, _ = load_prepared(detector.settings, clock().date())
    assert len(prepared) == rules
    for one in prepared:  # stored hits (delivered earlier) sit in the rule's partition: the snapshot skips them
        old = [Hit(f"{i:064x}", {"n": i}, first_seen=clock()) for i in range(stored_hits)]
        assert len(detector.store.insert_new(one.rule.id, old, status=DELIVERED)) == stored_hits
    # Warm: the table exists, the day's purge is done, each rule has run once.
    assert all(detector.run_leased(p, clock(), workspace=WORKSPACE).ran for p in prepared)
    clock.advance(timedelta(minutes=5))
    counts = count_state_ops(detector)
    outcomes = [detector.run_leased(p, clock(), workspace=WORKSPACE) for p in prepared]
    assert all(o.ok and o.ran and o.new_hits == 0 and not o.warnings for o in outcomes), [
        o.log_line() for o in outcomes
    ]
    assert hook.received() == []
    assert counts == Counter({"query_entities": rules, "submit_transaction": rules}), dict(counts)
    for one in prepared:  # and the runs did what a run does: the window moved, one more run record
        assert len(detector.store.runs(one.rule.id)) == 2


def test_a_deploy_over_the_old_lease_row_keeps_done_and_reads_it_once(
    make_detector: MakeDetector, clock: Clock, la: LogAnalyticsStandIn, hook: WebhookReceiver
) -> None:
    """State written before the lease moved onto ~state: the lease was its own row `~lease` (Owner, Until,
    Done). A message queued before the deploy is still a duplicate; the next save carries Done over, and the
    old row is never read again."""
    from azure.data.tables import UpdateMode

    detector = make_detector()
    detector.store.ensure_table()
    (prepared,), _ = load_prepared(detector.settings, clock().date())
    rule_id = prepared.rule.id
    scheduled = clock()
    assert detector.run_leased(prepared, scheduled, workspace=WORKSPACE).ran
    table = detector.store._table
    # The old shape: the state row without the lease fields, the lease in its own row, done up to `scheduled`.
    old_state = {k: v for k, v in table.get_entity(rule_id, STATE_ROW).items() if not k.startswith("Run")}
    table.upsert_entity(old_state, mode=UpdateMode.REPLACE)
    table.create_entity(
        {"PartitionKey": rule_id, "RowKey": "~lease", "Kind": "runlease", "Owner": "", "Done": scheduled}
    )
    clock.advance(timedelta(minutes=5))
    queried = len(la.requests)
    again = detector.run_leased(prepared, scheduled, workspace=WORKSPACE)  # the message, delivered again
    assert not again.ran and "already ran" in again.skipped and len(la.requests) == queried
    assert detector.run_leased(prepared, clock(), workspace=WORKSPACE).ran
    assert table.get_entity(rule_id, STATE_ROW)["RunDone"] == clock()
    clock.advance(timedelta(minutes=5))
    counts = count_state_ops(detector)
    assert detector.run_leased(prepared, clock(), workspace=WORKSPACE).ran
    assert counts == Counter({"query_entities": 1, "submit_transaction": 1}), dict(counts)  # no ~lease read
    assert hook.received() == []


def race(first: Detector, second: Detector, prepared: Any, scheduled: datetime) -> list[Any]:
    """Both runs of one message at the same moment: each reaches Log Analytics (if it gets that far) before
    either may go on, so their reads overlap. Their outcomes, neither with an error."""
    arrived = threading.Barrier(2, timeout=3)
    for detector in (first, second):
        detector.logs = Gate(detector.logs, arrived)
    outcomes: list[Any] = []
    threads = [
        threading.Thread(target=lambda d=d: outcomes.append(d.run_leased(prepared, scheduled, workspace=WORKSPACE)))
        for d in (first, second)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(outcomes) == 2
    assert all(not o.errors for o in outcomes), [o.log_line() for o in outcomes]
    return outcomes


class Gate:
    """A Log Analytics client that holds each query until the other run's query arrives too (or 3 s pass: the
    other run left the rule to this one without querying)."""

    def __init__(self, real: LogsApi, arrived: threading.Barrier) -> None:
        self.real, self.arrived = real, arrived

    def query(
        self,
        workspace_id: str,
        query: str,
        start: datetime,
        end: datetime,
        *,
        additional_workspaces: Sequence[str] = (),
    ) -> QueryResult:
        with contextlib.suppress(threading.BrokenBarrierError):
            self.arrived.wait()
        return self.real.query(workspace_id, query, start, end, additional_workspaces=additional_workspaces)


def test_two_concurrent_idle_runs_of_one_rule_advance_its_window_once(
    make_detector: MakeDetector, clock: Clock, la: LogAnalyticsStandIn, hook: WebhookReceiver
) -> None:
    """Two workers hold the same message (at-least-once delivery) at the same moment: whichever design decides
    who runs (a lease taken first, or a save conditional on the state it read), the rule runs once."""
    first, second = make_detector(), make_detector()
    first.store.ensure_table()
    second.store.ensure_table()
    (prepared,), _ = load_prepared(first.settings, clock().date())
    assert first.run_leased(prepared, clock(), workspace=WORKSPACE).ran
    before = first.store.snapshot(prepared.rule.id).state
    clock.advance(timedelta(minutes=5))
    scheduled = clock()
    outcomes = race(first, second, prepared, scheduled)
    after = first.store.snapshot(prepared.rule.id).state
    assert after.runs == before.runs + 1, (before.runs, after.runs)
    ran = [o for o in outcomes if o.ran]
    assert len(ran) == 1 and ran[0].window is not None
    assert after.last_window_end == ran[0].window.end
    assert len(first.store.runs(prepared.rule.id)) == 2  # the first run's record and one more
    assert sum(1 for o in outcomes if o.skipped) == 1, [o.log_line() for o in outcomes]
    assert hook.received() == []
