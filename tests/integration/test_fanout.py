"""Issue 14: the queue fan-out, against Azurite's queue service and real worker processes (`kqlwatch worker
--drain`, the run_rule function's own code): several workers, duplicate messages, a poison message, a worker
killed mid-rule, and hostile messages."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceExistsError

from shared.runtime import fanout
from shared.runtime.runlease import OWNER_FIELD, UNTIL_FIELD
from shared.runtime.runmessage import RunMessage
from shared.runtime.store import STATE_ROW, StateStore, connect
from shared.standins._http import Response
from shared.standins.azurite import Azurite, free_port
from shared.standins.loganalytics import LogAnalyticsStandIn
from shared.standins.rows import email_row
from shared.standins.teams import WebhookReceiver
from shared.workbench import queuecmd
from shared.workbench.queues import queue_client
from tests.conftest import SEED_RULE, WORKSPACE, delivered_ids

KQLWATCH = Path(sys.executable).with_name("kqlwatch")


def rule_copies(rules_dir: Path, count: int) -> list[tuple[str, str]]:
    """`count` copies of the seed rule (own id and name) in place of it: (id, name) each."""
    text = SEED_RULE.read_text()
    (rules_dir / SEED_RULE.name).unlink()
    out = []
    for i in range(count):
        rule_id, name = str(uuid.uuid4()), f"Seed copy {i:02d}"
        body = re.sub(r"(?m)^id: .*$", f"id: {rule_id}", text, count=1)
        body = re.sub(r"(?m)^name: .*$", f"name: {name}", body, count=1)
        (rules_dir / f"copy-{i:02d}.yaml").write_text(body)
        out.append((rule_id, name))
    return out


@pytest.fixture
def queue_env(cli_env: dict[str, str], azurite_queue: Azurite, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """cli_env plus a fresh queue account view: both queues emptied, the real clock on the Log Analytics stand-in."""
    monkeypatch.setenv("KQLWATCH_QUEUE_CONNECTION", azurite_queue.connection_string)
    monkeypatch.setenv("KQLWATCH_SCHEDULE", "0 */5 * * * *")
    for name in (fanout.QUEUE, fanout.POISON_QUEUE):
        client = queue_client(azurite_queue.connection_string, name)
        with contextlib.suppress(ResourceExistsError):  # from an earlier test: emptied below
            client.create_queue()
        client.clear_messages()
        client.close()
    return {**cli_env, "KQLWATCH_QUEUE_CONNECTION": azurite_queue.connection_string}


@pytest.fixture
def real_time(la: LogAnalyticsStandIn) -> Iterator[datetime]:
    """Worker processes run on the real clock: so does the stand-in."""
    la.clock = lambda: datetime.now(timezone.utc)
    yield datetime.now(timezone.utc)


def worker(env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(KQLWATCH), "worker", "--drain", "--retry-after", "0", *extra],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 240) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def queued(connection: str, name: str) -> list[Any]:
    client = queue_client(connection, name)
    try:
        return list(client.peek_messages(max_messages=32))
    finally:
        client.close()


def store_for(env: dict[str, str]) -> StateStore:
    return StateStore(connect(env["KQLWATCH_STATE_CONNECTION"], env["KQLWATCH_STATE_TABLE"]))


def test_several_workers_on_one_queue_deliver_every_hit_once(
    queue_env: dict[str, str], la: LogAnalyticsStandIn, hook: WebhookReceiver, rules_dir: Path, real_time: datetime
) -> None:
    rules = rule_copies(rules_dir, 6)
    rows = [email_row(real_time - timedelta(minutes=15), Subject=f"s{i}") for i in range(3)]
    la.ingest("EmailEvents", rows, at=real_time - timedelta(minutes=10))
    assert queuecmd.dispatch(queue_env["KQLWATCH_QUEUE_CONNECTION"]) == 6
    # At-least-once delivery: every message arrives twice.
    runs = queue_client(queue_env["KQLWATCH_QUEUE_CONNECTION"], fanout.QUEUE)
    for message in queued(queue_env["KQLWATCH_QUEUE_CONNECTION"], fanout.QUEUE):
        runs.send_message(str(message.content))
    runs.close()
    workers = [worker({**queue_env, "KQLWATCH_CONCURRENCY": "2"}) for _ in range(3)]
    results = [finish(w) for w in workers]
    assert all(code == 0 for code, _, _ in results), [err[-2000:] for _, _, err in results]
    assert "Traceback" not in "".join(err for _, _, err in results)
    # Every rule alerted every row exactly once: 6 rules x 3 rows, no duplicate.
    ids = delivered_ids(hook)
    assert sorted(ids) == sorted([r["NetworkMessageId"] for r in rows] * 6)
    store = store_for(queue_env)
    try:
        assert all(len(store.runs(rule_id)) == 1 for rule_id, _ in rules)  # one run each: no window advanced twice
    finally:
        store.close()
    assert queued(queue_env["KQLWATCH_QUEUE_CONNECTION"], fanout.QUEUE) == []


def test_a_duplicate_message_does_nothing(
    queue_env: dict[str, str], la: LogAnalyticsStandIn, hook: WebhookReceiver, real_time: datetime
) -> None:
    row = email_row(real_time - timedelta(minutes=15))
    la.ingest("EmailEvents", [row], at=real_time - timedelta(minutes=10))
    [body] = fanout.dispatch()
    first = fanout.run_message(body)
    # A new row arrives; the duplicate of the same message must not run the rule again (no second window).
    la.ingest("EmailEvents", [email_row(real_time - timedelta(minutes=14))], at=real_time - timedelta(minutes=9))
    second = fanout.run_message(body, dequeue_count=1)
    assert first is not None and first.ran and first.delivered == 1
    assert second is not None and not second.ran and "already ran" in second.skipped
    assert delivered_ids(hook) == [row["NetworkMessageId"]]
    store = store_for(queue_env)
    try:
        [rule_id] = [r.rule_id for r in [RunMessage(**_fields(body))]]
        assert len(store.runs(rule_id)) == 1
    finally:
        store.close()


def _fields(body: str) -> dict[str, Any]:
    from shared.runtime.runmessage import parse

    message = parse(body)
    return {"rule_id": message.rule_id, "workspace_id": message.workspace_id, "scheduled": message.scheduled}


def test_a_rule_held_by_another_worker_is_left_to_it(
    queue_env: dict[str, str], la: LogAnalyticsStandIn, hook: WebhookReceiver, real_time: datetime
) -> None:
    from shared.runtime.runlease import RunLeases

    la.ingest("EmailEvents", [email_row(real_time - timedelta(minutes=15))], at=real_time - timedelta(minutes=10))
    [body] = fanout.dispatch()
    rule_id = _fields(body)["rule_id"]
    leases = RunLeases(connect(queue_env["KQLWATCH_STATE_CONNECTION"], queue_env["KQLWATCH_STATE_TABLE"]))
    now = datetime.now(timezone.utc)
    other = leases.acquire(rule_id, None, "otherworker1", now, now + timedelta(minutes=10))
    assert other.status == "acquired"
    outcome = fanout.run_message(body)
    leases.close()
    assert outcome is not None and not outcome.ran and "held by run otherworker1" in outcome.skipped
    assert hook.received() == []


def _kill_when(proc: subprocess.Popen[str], reached: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while not reached() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reached(), f"the worker never {what}"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)


def test_a_worker_killed_mid_query_held_nothing_and_the_next_run_delivers_at_once(
    queue_env: dict[str, str], la: LogAnalyticsStandIn, hook: WebhookReceiver, real_time: datetime
) -> None:
    """A run takes the rule's lease only before its first write: killed in its query, it held nothing, so the
    next dispatched run need not wait out a lease (it did, 10 minutes, before the lease moved onto ~state)."""
    row = email_row(real_time - timedelta(minutes=15))
    la.ingest("EmailEvents", [row], at=real_time - timedelta(minutes=10))
    la.query_seconds = 60.0  # the worker sits in its query...
    assert queuecmd.dispatch(queue_env["KQLWATCH_QUEUE_CONNECTION"]) == 1
    _kill_when(worker(queue_env), lambda: bool(la.requests), "queried")  # ... and is killed there
    la.query_seconds = 0.0
    store = store_for(queue_env)
    assert queuecmd.dispatch(queue_env["KQLWATCH_QUEUE_CONNECTION"]) == 1
    code, _, err = finish(worker(queue_env))
    assert code == 0, err[-2000:]
    assert delivered_ids(hook) == [row["NetworkMessageId"]]
    [rule_id] = [e["PartitionKey"] for e in store._table.query_entities("RowKey eq @r", parameters={"r": STATE_ROW})]
    assert len(store.runs(rule_id)) == 1
    store.close()


def test_a_worker_killed_mid_post_holding_the_lease_is_picked_up_cleanly_after_it(
    queue_env: dict[str, str], la: LogAnalyticsStandIn, hook: WebhookReceiver, real_time: datetime
) -> None:
    row = email_row(real_time - timedelta(minutes=15))
    la.ingest("EmailEvents", [row], at=real_time - timedelta(minutes=10))
    hook.respond("soc", Response(503, delay=60))  # the worker's post hangs (the flow never ran)...
    assert queuecmd.dispatch(queue_env["KQLWATCH_QUEUE_CONNECTION"]) == 1
    _kill_when(worker(queue_env), lambda: hook.attempts["soc"] >= 1, "posted")  # ... and it is killed there
    store = store_for(queue_env)
    table = store._table
    [state] = list(table.query_entities("RowKey eq @r", parameters={"r": STATE_ROW}))
    rule_id = state["PartitionKey"]
    assert state[OWNER_FIELD] and state[UNTIL_FIELD] > datetime.now(timezone.utc)  # it held the rule's lease
    # The next dispatch's run, while the lease holds: left alone (nothing posted, nothing saved).
    assert queuecmd.dispatch(queue_env["KQLWATCH_QUEUE_CONNECTION"]) == 1
    code, _, err = finish(worker(queue_env))
    assert code == 0, err[-2000:]
    assert hook.received() == [] and store.runs(rule_id) == []
    # Both leases end (time passes: we move their ends into the past rather than wait 10 minutes): the run's
    # on ~state, and the delivery lease on the hit's lot.
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    table.update_entity({"PartitionKey": rule_id, "RowKey": STATE_ROW, UNTIL_FIELD: past})
    for lot in table.query_entities("PartitionKey eq @pk and Kind eq @lot", parameters={"pk": rule_id, "lot": "lot"}):
        table.update_entity({"PartitionKey": rule_id, "RowKey": lot["RowKey"], "LeaseUntil": past})
    assert queuecmd.dispatch(queue_env["KQLWATCH_QUEUE_CONNECTION"]) == 1
    code, _, err = finish(worker(queue_env))
    assert code == 0, err[-2000:]
    assert delivered_ids(hook) == [row["NetworkMessageId"]]
    assert len(store.runs(rule_id)) == 1
    store.close()


def test_a_poison_message_posts_an_ops_notice_naming_the_rule(
    queue_env: dict[str, str], hook: WebhookReceiver, rules_dir: Path
) -> None:
    [(rule_id, name)] = rule_copies(rules_dir, 1)
    body = RunMessage(rule_id, WORKSPACE, datetime.now(timezone.utc)).encode()
    runs = queue_client(queue_env["KQLWATCH_QUEUE_CONNECTION"], fanout.QUEUE)
    runs.send_message(body)
    for _ in range(fanout.MAX_DEQUEUE - 1):  # four failed deliveries already: the host's dequeue count is 4
        [got] = list(runs.receive_messages(max_messages=1, visibility_timeout=1))
        runs.update_message(got, visibility_timeout=0)
    runs.close()
    # Table Storage unreachable: the run cannot start, the 5th delivery fails too, the message is poison.
    dead = f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;TableEndpoint=http://127.0.0.1:{free_port()}/devstoreaccount1;"
    env = {**queue_env, "KQLWATCH_STATE_CONNECTION": dead, "KQLWATCH_OPS_WEBHOOK_URL": hook.url("ops")}
    code, out, err = finish(worker(env))
    assert code == 1 and "1 moved to kqlwatch-runs-poison" in out, (out, err[-2000:])
    assert "Traceback" not in err and "a2V5" not in err
    [card] = hook.cards("ops")
    text = str(card)
    assert name in text and rule_id in text and "abandoned" in text
    assert hook.received("soc") == []
    assert queued(queue_env["KQLWATCH_QUEUE_CONNECTION"], fanout.POISON_QUEUE) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("not json", "(body)"),
        ('{"v": 2, "rule": "x"}', "rule"),
        ('{"v": 1, "rule": "=HYPERLINK(1)", "workspace": "w", "scheduled": "x"}', "rule"),
        ("[1, 2]", "(body)"),
        ("x" * 70_000, "(body)"),
    ],
)
def test_a_hostile_message_is_refused_naming_the_field_without_a_traceback(
    queue_env: dict[str, str], hook: WebhookReceiver, body: str, field: str, caplog: pytest.LogCaptureFixture
) -> None:
    from shared.runtime.runmessage import MessageError, parse

    with pytest.raises(MessageError) as info:
        parse(body)
    assert info.value.field in (field, "v")
    assert len(str(info.value)) < 300
    if len(body) < 60_000:  # the queue itself refuses a message over 64 KiB
        runs = queue_client(queue_env["KQLWATCH_QUEUE_CONNECTION"], fanout.QUEUE)
        runs.send_message(body)
        runs.close()
        code, _, err = finish(worker(queue_env))
        assert code == 0 and "Traceback" not in err, err[-2000:]
        assert "refused a message on kqlwatch-runs" in err
        assert queued(queue_env["KQLWATCH_QUEUE_CONNECTION"], fanout.POISON_QUEUE) == []
    assert hook.received() == []


def test_24_rules_through_run_once_run_side_by_side_and_never_exceed_4_posts_per_second(
    cli_env: dict[str, str], la: LogAnalyticsStandIn, hook: WebhookReceiver, rules_dir: Path, real_time: datetime
) -> None:
    from shared.workbench.cli import main

    rule_copies(rules_dir, 24)
    rows = [email_row(real_time - timedelta(minutes=15), Subject=f"s{i}") for i in range(2)]
    la.ingest("EmailEvents", rows, at=real_time - timedelta(minutes=10))
    la.query_seconds = 1.0
    assert main(["run", "--once"]) == 0
    assert len(hook.received("soc")) >= 24
    assert hook.most_in_one_second("soc") <= 4
    assert 2 <= la.max_concurrent <= 5  # side by side, never past Log Analytics' 5 per identity
    assert sorted(delivered_ids(hook)) == sorted([r["NetworkMessageId"] for r in rows] * 24)


def test_a_slow_webhook_does_not_hold_the_next_rule_s_query(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, rules_dir: Path, make_detector: Any, clock: Any
) -> None:
    """KQLWATCH_CONCURRENCY bounds queries in flight, not whole rule runs: while one rule waits on its webhook,
    the next rule queries and posts (before, a 1.5 s webhook put 1.5 s between every rule's card)."""
    from shared.standins._http import Response

    rule_copies(rules_dir, 3)
    la.ingest("EmailEvents", [email_row(clock.now - timedelta(minutes=15))], at=clock.now - timedelta(minutes=10))
    hook.always("soc", Response(202, delay=1.5))
    report = make_detector(KQLWATCH_CONCURRENCY="1").run(only_due=False)
    assert report.ok and sum(o.delivered for o in report.outcomes) == 3
    first, second = sorted(hook.arrivals["soc"])[:2]
    assert second - first < 1.2  # the second rule's card did not wait for the first rule's post to end
    # (That the slots still bound queries, 10 runs in flight for 5 slots: test_24_rules_through_run_once_...)


def test_a_run_throttled_by_log_analytics_defers_cleanly(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, rules_dir: Path, make_detector: Any, clock: Any
) -> None:
    """Two instances (detectors) of 5 each on one identity: 10 queries at once, 5 wait past the queue bound."""
    from concurrent.futures import ThreadPoolExecutor

    rule_copies(rules_dir, 5)
    la.ingest("EmailEvents", [email_row(clock.now - timedelta(minutes=15))], at=clock.now - timedelta(minutes=10))
    la.query_seconds, la.queue_wait = 2.0, 0.3
    first, second = make_detector(), make_detector(KQLWATCH_STATE_TABLE="t" + uuid.uuid4().hex[:20])
    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda d: d.run(only_due=False), (first, second)))
    outcomes = [o for r in reports for o in r.outcomes]
    throttled = [o for o in outcomes if o.throttled]
    assert throttled and la.throttled >= len(throttled)
    assert all(o.ok for o in outcomes) and all(r.ok for r in reports)  # a deferral is not a failure
    for detector in (first, second):
        for o in [o for o in outcomes if o.throttled]:
            state = detector.store.snapshot(o.rule_id).state
            assert state.consecutive_failures == 0
    # The next run reads what the throttled ones did not.
    la.query_seconds, la.queue_wait = 0.0, 180.0
    later = [d.run(only_due=False) for d in (first, second)]
    assert all(not o.throttled for r in later for o in r.outcomes)
    assert len(delivered_ids(hook)) == 10  # 5 rules x 1 row, in each of the two state tables


def test_status_shows_the_run_queue_and_the_poison_count(
    queue_env: dict[str, str], hook: WebhookReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared.workbench.cli import main

    assert queuecmd.dispatch(queue_env["KQLWATCH_QUEUE_CONNECTION"]) == 1
    poison = queue_client(queue_env["KQLWATCH_QUEUE_CONNECTION"], fanout.POISON_QUEUE)
    poison.send_message(RunMessage(str(uuid.uuid4()), WORKSPACE, datetime.now(timezone.utc)).encode())
    poison.close()
    main(["status"])
    assert "kqlwatch-runs: 1, kqlwatch-runs-poison: 1" in capsys.readouterr().out
