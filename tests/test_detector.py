"""The whole path, for real: Log Analytics stand-in -> LogsQueryClient -> Azurite -> Teams receiver."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

from shared.standins._http import Response
from shared.standins.clock import Clock
from shared.standins.loganalytics import LogAnalyticsStandIn
from shared.standins.teams import WebhookReceiver
from tests.conftest import MakeDetector, delivered_ids, email


def test_each_hit_is_alerted_once_across_consecutive_runs(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    hits = [
        email(clock),
        email(clock, SenderMailFromDomain="fabrikam.fr", AuthenticationDetails='{"SPF":"temperror","DMARC":"none"}'),
    ]
    misses = [
        email(clock, EmailDirection="Outbound"),
        email(clock, SenderMailFromDomain="c0ntoso.com"),
        email(clock, AuthenticationDetails='{"SPF":"pass","DMARC":"pass"}'),
    ]
    la.ingest("EmailEvents", hits + misses, at=clock.now - timedelta(minutes=10))

    first = make_detector().run(only_due=False)
    assert first.ok
    assert sorted(delivered_ids(hook)) == sorted(h["NetworkMessageId"] for h in hits)
    assert first.outcomes[0].new_hits == 2 and first.outcomes[0].delivered == 2

    clock.advance(timedelta(minutes=5))
    second = make_detector().run(only_due=False)
    assert second.ok and second.outcomes[0].rows == 2 and second.outcomes[0].new_hits == 0
    assert len(hook.received()) == 1  # nothing re-posted


def test_verdict_change_rows_of_one_message_alert_once(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    row = email(clock)
    later = {**row, "TimeGenerated": clock.now - timedelta(minutes=5), "DeliveryLocation": "Quarantine"}
    la.ingest("EmailEvents", [row, later], at=clock.now - timedelta(minutes=1))
    make_detector().run(only_due=False)
    assert delivered_ids(hook) == [row["NetworkMessageId"]]


def test_webhook_outage_defers_and_next_run_delivers_each_hit_once(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    rows = [email(clock) for _ in range(3)]
    la.ingest("EmailEvents", rows, at=clock.now - timedelta(minutes=10))
    hook.always("soc", Response(503))

    down = make_detector().run(only_due=False)
    outcome = down.outcomes[0]
    assert down.ok, "a delivery failure defers; it does not fail the rule"
    assert (outcome.new_hits, outcome.delivered, outcome.deferred) == (3, 0, 3)
    assert hook.received("soc") == []
    assert any("HTTP 503" in w for w in outcome.warnings)

    hook.always("soc", None)
    clock.advance(timedelta(minutes=5))
    up = make_detector().run(only_due=False).outcomes[0]
    assert (up.new_hits, up.delivered, up.deferred) == (0, 3, 0)
    assert sorted(delivered_ids(hook)) == sorted(r["NetworkMessageId"] for r in rows)

    clock.advance(timedelta(minutes=5))
    make_detector().run(only_due=False)
    assert len(delivered_ids(hook)) == 3


def test_one_webhook_down_others_delivered_and_retry_only_reposts_where_it_failed(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    row = email(clock)
    la.ingest("EmailEvents", [row], at=clock.now - timedelta(minutes=10))
    urls = f"{hook.url('soc')},{hook.url('oncall')}"
    hook.always("oncall", Response(500))

    make_detector(KQLWATCH_TEAMS_WEBHOOK_URL=urls).run(only_due=False)
    assert delivered_ids(hook, "soc") == [row["NetworkMessageId"]]
    assert delivered_ids(hook, "oncall") == []

    hook.always("oncall", None)
    clock.advance(timedelta(minutes=5))
    make_detector(KQLWATCH_TEAMS_WEBHOOK_URL=urls).run(only_due=False)
    assert delivered_ids(hook, "soc") == [row["NetworkMessageId"]], "never re-posted where it already succeeded"
    assert delivered_ids(hook, "oncall") == [row["NetworkMessageId"]]


def test_two_concurrent_runs_alert_each_hit_once(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    rows = [email(clock) for _ in range(40)]
    la.ingest("EmailEvents", rows, at=clock.now - timedelta(minutes=10))
    detectors = [make_detector(), make_detector()]
    barrier = threading.Barrier(2)

    def run(index: int) -> None:
        barrier.wait()
        detectors[index].run(only_due=False)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ids = delivered_ids(hook)
    assert sorted(ids) == sorted(r["NetworkMessageId"] for r in rows)


def test_row_ingested_late_is_alerted_by_the_next_run(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    make_detector().run(only_due=False)
    # An event from 20 minutes ago that only now reaches the workspace (after the first run's window closed).
    late = email(clock, TimeGenerated=clock.now - timedelta(minutes=20))
    clock.advance(timedelta(minutes=5))
    la.ingest("EmailEvents", [late], at=clock.now - timedelta(seconds=30))
    make_detector().run(only_due=False)
    assert delivered_ids(hook) == [late["NetworkMessageId"]]


def test_after_downtime_the_next_run_reaches_back_to_the_last_window(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    make_detector().run(only_due=False)
    last_end = clock.now
    clock.advance(timedelta(hours=3))  # the Function was down for three hours
    missed = email(clock, TimeGenerated=last_end + timedelta(minutes=30))  # 2.5 h ago: outside a 1 h period
    la.ingest("EmailEvents", [missed], at=last_end + timedelta(minutes=32))
    outcome = make_detector().run(only_due=False).outcomes[0]
    assert outcome.window is not None and outcome.window.start <= last_end - timedelta(minutes=10)
    assert delivered_ids(hook) == [missed["NetworkMessageId"]]
    # The stand-in saw the window as the API's timespan, as the real service would.
    assert la.requests[-1].timespan is not None


def test_catch_up_is_capped(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    make_detector().run(only_due=False)
    clock.advance(timedelta(days=3))
    outcome = make_detector(KQLWATCH_MAX_CATCHUP="6h").run(only_due=False).outcomes[0]
    assert outcome.ingested_since == clock.now - timedelta(hours=6)  # the seed rule reads by ingestion time


def test_only_due_rules_run_on_the_timer(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    assert make_detector().run(only_due=True).outcomes[0].ran
    clock.advance(timedelta(minutes=2))
    assert not make_detector().run(only_due=True).outcomes[0].ran
    clock.advance(timedelta(minutes=3))
    assert make_detector().run(only_due=True).outcomes[0].ran
    assert len([r for r in la.requests if "LastIngested" not in r.query]) == 2  # not the hourly blind-spot probe


def test_truncated_result_is_split_into_smaller_windows_and_no_row_is_lost(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    rows = [email(clock, TimeGenerated=clock.now - timedelta(minutes=5 + 7 * i)) for i in range(8)]
    la.ingest("EmailEvents", rows, at=clock.now - timedelta(minutes=1))
    la.row_cap = 3  # the service answers at most 3 rows, flagged as a partial result
    outcome = make_detector().run(only_due=False).outcomes[0]
    assert outcome.ok and outcome.warnings == []
    assert sorted(delivered_ids(hook)) == sorted(r["NetworkMessageId"] for r in rows)
    assert len(la.requests) > 2


def test_partial_result_that_cannot_be_split_is_used_and_reported(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    same_time = clock.now - timedelta(minutes=15)  # no smaller window separates these rows
    la.ingest(
        "EmailEvents", [email(clock, TimeGenerated=same_time) for _ in range(5)], at=clock.now - timedelta(minutes=10)
    )
    la.row_cap = 3
    outcome = make_detector().run(only_due=False).outcomes[0]
    assert outcome.delivered == 3
    assert any("partial result" in w and "exceeded the internal record count limit 3" in w for w in outcome.warnings)


def test_a_failing_query_fails_that_rule_only(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock, rules_dir: Path
) -> None:
    (rules_dir / "broken-kql.yaml").write_text(
        "id: 0b5e9c6e-1111-4a4a-9a9a-000000000001\nname: Broken query\nquery: |\n  EmailEvents | where | project\n"
    )
    row = email(clock)
    la.ingest("EmailEvents", [row], at=clock.now - timedelta(minutes=10))
    report = make_detector().run(only_due=False)
    by_name = {o.name: o for o in report.outcomes}
    assert not report.ok
    assert not by_name["Broken query"].ok and "HTTP 400" in by_name["Broken query"].errors[0]
    assert by_name["Message from an Accepted Domain with DMARC TempError"].ok
    assert delivered_ids(hook) == [row["NetworkMessageId"]]


def test_a_bad_rule_file_is_reported_and_the_others_run(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock, rules_dir: Path
) -> None:
    (rules_dir / "bad.yaml").write_text("id: [unclosed\nname: x\n")
    (rules_dir / "no-query.yaml").write_text("id: 0b5e9c6e-1111-4a4a-9a9a-000000000002\nname: No query\n")
    la.ingest("EmailEvents", [email(clock)], at=clock.now - timedelta(minutes=10))
    report = make_detector().run(only_due=False)
    assert not report.ok
    messages = sorted(str(e) for e in report.rule_errors)
    assert "bad.yaml" in messages[0] and "invalid YAML" in messages[0]
    assert "no-query.yaml" in messages[1] and "missing required field 'query'" in messages[1]
    assert report.outcomes[0].delivered == 1


def test_undelivered_hits_are_dropped_after_max_age_and_reported(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    la.ingest("EmailEvents", [email(clock)], at=clock.now - timedelta(minutes=10))
    hook.always("soc", Response(503))
    make_detector().run(only_due=False)
    clock.advance(timedelta(hours=25))
    outcome = make_detector().run(only_due=False).outcomes[0]
    assert outcome.dropped == 1 and not outcome.ok
    assert "dropped 1 hit(s) undelivered" in outcome.errors[0]
    clock.advance(timedelta(minutes=5))
    assert make_detector().run(only_due=False).outcomes[0].dropped == 0  # reported once, not every run
