"""Fault injection through the real stand-ins: every hit is delivered once per webhook - never lost, never
twice (except where noted: a post Teams accepted but we never heard back about) - and one failure never stops
the rest. docs/reliability.md lists each fault with the test that shows it."""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ServiceRequestError

from shared.errors import StateError
from shared.runtime.detector import LEASE
from shared.runtime.loganalytics import LogsClient
from shared.runtime.store import DELIVERED, PENDING, Hit, StateStore, connect
from shared.runtime.teams import PostResult
from shared.standins._http import Response
from shared.standins.clock import Clock
from shared.standins.loganalytics import LogAnalyticsStandIn
from shared.standins.teams import WebhookReceiver
from shared.workbench.cli import main
from tests.conftest import WORKSPACE, MakeDetector, delivered_ids, email

AFTER_LEASE = LEASE + timedelta(minutes=1)


def _second_rule(rules_dir: Path) -> None:
    (rules_dir / "other.yaml").write_text(
        "id: 0b5e9c6e-3333-4a4a-9a9a-000000000001\nname: Other rule\n"
        "query: |\n  EmailEvents | where Subject == 'other'\n"
    )


# --- Log Analytics ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_transient_workspace_errors_are_retried_by_the_sdk(
    status: int, la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    row = email(clock)
    la.ingest("EmailEvents", [row], at=clock.now - timedelta(minutes=10))
    la.respond(Response.of_json(status, {"error": {"code": "Busy", "message": "try later"}}, **{"Retry-After": "1"}))
    outcome = make_detector().run(only_due=False).outcomes[0]
    assert outcome.ok and delivered_ids(hook) == [row["NetworkMessageId"]]
    assert len(la.requests) == 2


def test_a_query_that_hangs_past_the_timeout_fails_that_rule_only(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock, rules_dir: Path
) -> None:
    _second_rule(rules_dir)
    other = email(clock, Subject="other")
    la.ingest("EmailEvents", [other], at=clock.now - timedelta(minutes=10))
    # Only the seed rule's query hangs (8 s, past the 5 s read timeout, on every attempt): rules run side by
    # side, so a scripted answer for "the next query" could go to either rule.
    la.query_seconds, la.slow_query = 8, "TriggerResults"
    started = time.monotonic()
    report = make_detector().run(only_due=False)
    by_name = {o.name: o for o in report.outcomes}
    seed = by_name["Message from an Accepted Domain with DMARC TempError"]
    assert not seed.ok and "query failed" in seed.errors[0]
    assert by_name["Other rule"].ok and delivered_ids(hook) == [other["NetworkMessageId"]]
    assert time.monotonic() - started < 30


class _IdentityToken:
    """Stands for a managed identity's credential (a TokenCredential that is not KQLWATCH_ACCESS_TOKEN's)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3600)


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_name_the_identity_and_the_workspace(
    status: int,
    la: LogAnalyticsStandIn,
    hook: WebhookReceiver,
    make_detector: MakeDetector,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AZURE_CLIENT_ID", "7d4c1e9a-0000-4000-8000-00000000abcd")
    la.respond(
        *[
            Response.of_json(
                status,
                {
                    "error": {
                        "code": "InsufficientAccessError",
                        "message": "The provided credentials have insufficient access",
                    }
                },
            )
        ]
        * 2
    )
    detector = make_detector()
    detector.logs = LogsClient(la.endpoint, _IdentityToken(la.token), retry_total=0)  # not KQLWATCH_ACCESS_TOKEN
    outcome = detector.run(only_due=False).outcomes[0]
    detector.logs.close()
    assert not outcome.ok
    error = outcome.errors[0]
    assert f"HTTP {status}" in error and "managed identity 7d4c1e9a-0000-4000-8000-00000000abcd" in error
    assert f"workspace {WORKSPACE}" in error and "Log Analytics Reader" in error


def test_invalid_token_from_the_service_is_explained(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector
) -> None:
    outcome = make_detector(KQLWATCH_ACCESS_TOKEN="expired-token").run(only_due=False).outcomes[0]
    assert not outcome.ok and "HTTP 401 AuthorizationRequiredError" in outcome.errors[0]
    assert "the token in KQLWATCH_ACCESS_TOKEN was rejected" in outcome.errors[0]
    assert "DefaultAzureCredential" not in outcome.errors[0] and "correlationId " in outcome.errors[0]
    assert "expired-token" not in json.dumps(outcome.log_line())


# --- Table Storage ---------------------------------------------------------------------------------------


class FlakyTable:
    """The real TableClient, with transactions failing when `fail(n)` says so (n counts transactions)."""

    def __init__(self, real: Any, fail: Callable[[int], bool]) -> None:
        self._real = real
        self._fail = fail
        self.transactions = 0

    def submit_transaction(self, operations: Any, **kwargs: Any) -> Any:
        self.transactions += 1
        if self._fail(self.transactions):
            raise ServiceRequestError("connection reset by peer")
        return self._real.submit_transaction(operations, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_table_storage_unreachable_at_start_fails_the_run_clearly(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    dead = env["KQLWATCH_STATE_CONNECTION"].replace(env["KQLWATCH_STATE_CONNECTION"].split(":")[-1].split("/")[0], "1")
    monkeypatch.setenv("KQLWATCH_STATE_CONNECTION", dead)
    from shared.runtime import wiring as runner

    runner._clients.cache_clear()
    assert main(["run", "--once"]) == 1
    err = capsys.readouterr().err
    assert "Table Storage: cannot create table" in err and "Traceback" not in err
    runner._clients.cache_clear()


def test_table_storage_failing_mid_run_loses_nothing(
    la: LogAnalyticsStandIn,
    hook: WebhookReceiver,
    make_detector: MakeDetector,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shared.runtime.packs

    monkeypatch.setattr(shared.runtime.packs, "TRANSACTION_BYTES", 1)  # one pack (99 hits) a transaction
    rows = [email(clock) for _ in range(150)]
    la.ingest("EmailEvents", rows, at=clock.now - timedelta(minutes=10))
    detector = make_detector()
    table = FlakyTable(detector.store._table, fail=lambda n: n == 2)  # the second batch (a pack: 51 hits) fails
    detector.store = StateStore(table)  # type: ignore[arg-type]
    first = detector.run(only_due=False).outcomes[0]
    assert not first.ok and "Table Storage" in first.errors[0] and hook.received() == []

    clock.advance(timedelta(minutes=5))
    make_detector().run(only_due=False)  # the 51 hits the failed run never recorded
    assert len(delivered_ids(hook)) == 51
    clock.advance(AFTER_LEASE)  # the 99 it recorded are pending under its lease until that expires
    make_detector().run(only_due=False)
    assert sorted(delivered_ids(hook)) == sorted(r["NetworkMessageId"] for r in rows)


def test_stale_etag_updates_are_left_to_the_run_that_changed_them(make_detector: MakeDetector, clock: Clock) -> None:
    store = make_detector().store
    store.ensure_table()
    [hit] = store.insert_new("r", [Hit("k1", {"a": 1}, first_seen=clock.now)])
    [newer] = store.update_hits("r", [replace(hit, attempts=1)])  # another run's update
    assert store.update_hits("r", [replace(hit, attempts=5)]) == []  # ours, with the old etag: refused (412)
    assert store.update_hits("r", [replace(newer, attempts=2)])[0].attempts == 2


def test_more_than_100_hits_are_recorded_in_batches(make_detector: MakeDetector, clock: Clock) -> None:
    store = make_detector().store
    store.ensure_table()
    hits = [Hit(f"k{i:04d}", {"i": i}, first_seen=clock.now) for i in range(250)]
    assert len(store.insert_new("r", hits)) == 250
    again = [*hits[:120], Hit("k9999", {"i": 9999}, first_seen=clock.now)]
    assert [h.key for h in store.insert_new("r", again)] == ["k9999"]  # 409s skipped, the new one created


# --- Teams ----------------------------------------------------------------------------------------------


def test_teams_429_with_short_retry_after_is_retried_in_the_run(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    row = email(clock)
    la.ingest("EmailEvents", [row], at=clock.now - timedelta(minutes=10))
    hook.respond("soc", Response(429, headers={"Retry-After": "1"}))
    outcome = make_detector().run(only_due=False).outcomes[0]
    assert outcome.delivered == 1 and hook.attempts["soc"] == 2
    assert delivered_ids(hook) == [row["NetworkMessageId"]]


def test_a_webhook_that_times_out_is_retried_next_run(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    row = email(clock)
    la.ingest("EmailEvents", [row], at=clock.now - timedelta(minutes=10))
    hook.respond("soc", Response(503, delay=4))  # answers after the 2 s read timeout, and not with success
    first = make_detector().run(only_due=False).outcomes[0]
    assert first.deferred == 1 and any("timed out" in w for w in first.warnings)
    clock.advance(timedelta(minutes=5))
    make_detector().run(only_due=False)
    assert delivered_ids(hook) == [row["NetworkMessageId"]]


def test_a_timeout_after_teams_accepted_means_one_duplicate_at_most(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    row = email(clock)
    la.ingest("EmailEvents", [row], at=clock.now - timedelta(minutes=10))
    hook.respond("soc", Response(202, delay=4))  # Teams took it, the answer came too late
    make_detector().run(only_due=False)
    for _ in range(3):
        clock.advance(timedelta(minutes=5))
        make_detector().run(only_due=False)
    assert delivered_ids(hook) == [row["NetworkMessageId"]] * 2  # at-least-once: the one ambiguous post


@pytest.mark.parametrize("status", [400, 413])
def test_a_rejected_card_is_split_and_every_hit_still_delivered(
    status: int, la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    rows = [email(clock) for _ in range(20)]
    la.ingest("EmailEvents", rows, at=clock.now - timedelta(minutes=10))
    hook.respond("soc", Response(status, b"message too large"))
    outcome = make_detector().run(only_due=False).outcomes[0]
    assert outcome.delivered == 20
    assert sorted(delivered_ids(hook)) == sorted(r["NetworkMessageId"] for r in rows)
    assert [c["body"][0]["items"][2]["inlines"][0]["text"] for c in hook.cards()] == [
        "20 new hits · showing 1-10",
        "20 new hits · showing 11-20",
    ]


def test_a_card_rejected_at_every_size_never_loops(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    la.ingest("EmailEvents", [email(clock), email(clock)], at=clock.now - timedelta(minutes=10))
    hook.always("soc", Response(400, b"bad card"))
    outcome = make_detector().run(only_due=False).outcomes[0]
    assert outcome.deferred == 2 and hook.attempts["soc"] <= 4  # 2 hits, halves, one compact retry at most
    assert any("HTTP 400" in w for w in outcome.warnings)


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:1/workflows/x/paths/invoke?sig=SECRET-1",
        "https://kqlwatch-no-such-host.invalid/workflows/x?sig=SECRET-2",
    ],
)
def test_unreachable_or_unresolvable_webhook_defers_without_leaking_it(
    url: str, la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    la.ingest("EmailEvents", [email(clock)], at=clock.now - timedelta(minutes=10))
    outcome = make_detector(KQLWATCH_TEAMS_WEBHOOK_URL=url).run(only_due=False).outcomes[0]
    assert outcome.ok and outcome.deferred == 1
    assert "connection failed" in outcome.warnings[0] and "SECRET" not in json.dumps(outcome.log_line())


# --- the process ----------------------------------------------------------------------------------------


class Killed(BaseException):
    """The Functions host killing the worker: nothing after it runs."""


class KillingPoster:
    def __init__(self, real: Any, *, before: bool) -> None:
        self._real = real
        self._before = before

    def post(self, url: str, payload: Any) -> PostResult:
        if not self._before:
            self._real.post(url, payload)
        raise Killed


@pytest.mark.parametrize("before_post", [True, False])
def test_killed_around_a_post(
    before_post: bool, la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    rows = [email(clock) for _ in range(3)]
    la.ingest("EmailEvents", rows, at=clock.now - timedelta(minutes=10))
    detector = make_detector()
    detector.teams = KillingPoster(detector.teams, before=before_post)
    with pytest.raises(Killed):
        detector.run(only_due=False)
    clock.advance(timedelta(minutes=5))
    make_detector().run(only_due=False)  # within the dead run's lease: its hits are left alone
    assert len(delivered_ids(hook)) == (0 if before_post else 3)
    clock.advance(AFTER_LEASE)
    make_detector().run(only_due=False)
    clock.advance(timedelta(minutes=5))
    make_detector().run(only_due=False)
    expected = sorted(r["NetworkMessageId"] for r in rows) * (1 if before_post else 2)
    # Killed before posting: delivered once. Killed between a post and its record: that one card (at most
    # 25 hits) is posted again once the lease expires; nothing is lost.
    assert sorted(delivered_ids(hook)) == sorted(expected)


def test_a_run_longer_than_its_lease_stops_posting_and_leaves_the_rest(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    rows = [email(clock, RecipientEmailAddress=f"u{i}@contoso.com") for i in range(80)]
    la.ingest("EmailEvents", rows, at=clock.now - timedelta(minutes=10))
    detector = make_detector()
    real = detector.teams

    class SlowPoster:
        def post(self, url: str, payload: Any) -> PostResult:
            clock.advance(timedelta(minutes=4))  # each post takes four minutes
            return real.post(url, payload)

    detector.teams = SlowPoster()
    outcome = detector.run(only_due=False).outcomes[0]
    assert outcome.delivered == 50 and outcome.deferred == 30
    assert any("lease nearly expired" in w for w in outcome.warnings)
    clock.advance(timedelta(minutes=5))
    make_detector().run(only_due=False)
    assert sorted(delivered_ids(hook)) == sorted(r["NetworkMessageId"] for r in rows)


# --- scale ----------------------------------------------------------------------------------------------


def test_20000_hits_bounded_digest_cards_and_all_recorded(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    rows = [
        email(
            clock, RecipientEmailAddress=f"user{i}@contoso.com", NetworkMessageId=f"m-{i:05d}", Subject=f"Invoice {i}"
        )
        for i in range(20_000)
    ]
    la.ingest("EmailEvents", rows, at=clock.now - timedelta(minutes=10))
    detector = make_detector(
        read_timeout=60,  # the stand-in evaluates 20,000 rows in-process: seconds on a busy 2-core machine
        KQLWATCH_WORKSPACE_RESOURCE_ID="/subscriptions/0/resourceGroups/rg/providers/"
        "Microsoft.OperationalInsights/workspaces/soc",
    )
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    outcome = detector.run(only_due=False).outcomes[0]
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert outcome.new_hits == 20_000 and outcome.delivered == 20_000 and outcome.deferred == 0
    assert grown < 300 * 1024, f"peak memory grew by {grown / 1024:.0f} MiB"  # bounded: rows + cards, not more
    posts = hook.received("soc")
    assert len(posts) == 20  # the per-run cap: 19 digest cards and one summary
    assert len(delivered_ids(hook)) == 19 * 25
    summary = str(posts[-1].body)
    assert f"{20_000 - 19 * 25} more hit(s) in this run" in summary and "Open query in Log Analytics" in summary
    settled = list(detector.store.hits(outcome.rule_id))
    assert len(settled) == 20_000 and {h.status for h in settled} == {DELIVERED}


# --- health ---------------------------------------------------------------------------------------------


def test_failing_rule_posts_one_notice_an_hour_and_one_when_it_recovers(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    broken = Response.of_json(400, {"error": {"code": "BadArgumentError", "message": "Failed to resolve table"}})
    ops = {"KQLWATCH_OPS_WEBHOOK_URL": hook.url("ops")}
    for _ in range(5):  # 5 failures over 20 minutes: a notice after the third, none after
        la.respond(broken)
        make_detector(**ops).run(only_due=False)
        clock.advance(timedelta(minutes=5))
    [failing] = hook.cards("ops")
    assert "rule failing: Message from an Accepted Domain" in str(failing) and "Failed to resolve table" in str(failing)
    clock.advance(timedelta(hours=1))
    la.respond(broken)
    make_detector(**ops).run(only_due=False)
    assert len(hook.cards("ops")) == 2  # an hour later, still failing: one reminder
    clock.advance(timedelta(minutes=5))
    make_detector(**ops).run(only_due=False)
    clock.advance(timedelta(minutes=5))
    make_detector(**ops).run(only_due=False)
    titles = [c["body"][0]["items"][0]["inlines"][0]["text"] for c in hook.cards("ops")]
    assert titles[-1].startswith("kqlwatch: rule recovered") and len(titles) == 3


def test_status_shows_each_rules_heartbeat(
    la: LogAnalyticsStandIn,
    hook: WebhookReceiver,
    make_detector: MakeDetector,
    clock: Clock,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    rules_dir: Path,
) -> None:
    _second_rule(rules_dir)
    la.ingest("EmailEvents", [email(clock)], at=clock.now - timedelta(minutes=10))
    clock.now = clock.now.replace()  # status reads the real clock; keep the detector on it
    make_detector().run(only_due=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    seed_line = next(line for line in out.splitlines() if line.startswith("Message from an Accepted Domain"))
    assert " ok " in seed_line and "a256f4ea-deec-4fcd-bdf3-63987638eed9" in seed_line
    assert "Other rule" in out
    assert main(["status", "--rule", "a256f4ea-deec-4fcd-bdf3-63987638eed9"]) == 0
    assert "rows  new  delivered" in capsys.readouterr().out


def test_purge_removes_old_settled_state_and_never_pending(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    delivered, pending = email(clock), email(clock)
    la.ingest("EmailEvents", [delivered], at=clock.now - timedelta(minutes=10))
    make_detector().run(only_due=False)
    la.ingest("EmailEvents", [pending], at=clock.now - timedelta(minutes=1))
    hook.always("soc", Response(503))
    make_detector().run(only_due=False)
    detector = make_detector(KQLWATCH_DELIVERY_MAX_AGE="90d")
    clock.advance(timedelta(days=40))
    detector.run(only_due=False)
    rule_id = "a256f4ea-deec-4fcd-bdf3-63987638eed9"
    left = {h.row["NetworkMessageId"]: h.status for h in detector.store.hits(rule_id)}
    assert left == {pending["NetworkMessageId"]: PENDING}
    assert len(detector.store.runs(rule_id)) == 1  # only this run's record: older ones purged


def test_state_errors_carry_no_connection_secrets(make_detector: MakeDetector) -> None:
    store = StateStore(
        connect(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
            "c2VjcmV0LWtleS12YWx1ZQ==;TableEndpoint=http://127.0.0.1:1/devstoreaccount1;",
            "t1",
            retry_total=0,
        )
    )
    with pytest.raises(StateError) as caught:
        store.ensure_table()
    assert "c2VjcmV0" not in str(caught.value) and "Table Storage: cannot create table" in str(caught.value)


def test_the_state_table_is_created_once_per_process(make_detector: MakeDetector) -> None:
    store = make_detector().store
    calls = FlakyTable(store._table, fail=lambda n: False)
    created: list[int] = []
    calls.create_table = lambda **kw: created.append(1)  # type: ignore[attr-defined]
    counted = StateStore(calls)  # type: ignore[arg-type]
    counted.ensure_table()
    counted.ensure_table()
    assert created == [1]
