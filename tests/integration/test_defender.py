"""Issue 15: Defender XDR advanced hunting as a source, end to end through the real code path: the detector, the
real DefenderClient (requests + urllib3 Retry) and the HTTPS Graph stand-in, Azurite and the Teams receiver.
Each hit is delivered once; each fault of the service (429 per limit, 400, 403, truncation, a query that does
not answer) has the outcome a SOC would notice."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from shared.runtime.detector import Detector
from shared.runtime.settings import load_settings
from shared.runtime.wiring import Clients, Tuning, build_detector, clients_for
from shared.standins.clock import Clock
from shared.standins.graph import GraphStandIn, forbidden, throttled
from shared.standins.loganalytics import LogAnalyticsStandIn
from shared.standins.teams import WebhookReceiver
from shared.workbench.cli import main
from tests.conftest import delivered_ids, email, fast_tuning

SEED_ID = "a256f4ea-deec-4fcd-bdf3-63987638eed9"


@pytest.fixture(scope="session")
def graph_server(la_server: LogAnalyticsStandIn) -> Iterator[GraphStandIn]:
    # The Log Analytics stand-in's CA issues this certificate too: REQUESTS_CA_BUNDLE (set by la_server) trusts
    # both, as a TLS-inspecting proxy's bundle would in production. Its token is the one the tests' credential holds.
    with GraphStandIn(ca=la_server._ca, token=la_server.token) as server:
        yield server


@pytest.fixture
def graph(graph_server: GraphStandIn, clock: Clock) -> Iterator[GraphStandIn]:
    graph_server.reset()
    graph_server.clock = clock
    yield graph_server
    graph_server.reset()


@pytest.fixture
def defender_env(env: dict[str, str], graph: GraphStandIn) -> dict[str, str]:
    return {**env, "KQLWATCH_SOURCE": "defender", "KQLWATCH_GRAPH_ENDPOINT": graph.endpoint}


@pytest.fixture
def detector(defender_env: dict[str, str], clock: Clock) -> Iterator[Detector]:
    yield _detector(defender_env, clock)


_OPENED: list[Clients] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    for clients in _OPENED:
        clients.close()
    _OPENED.clear()


def _detector(environment: dict[str, str], clock: Clock, **defender: object) -> Detector:
    settings = load_settings(environment)
    base = fast_tuning(settings)
    tuning = Tuning(
        logs=base.logs,
        state_retry_total=base.state_retry_total,
        teams=base.teams,
        credential=base.credential,
        defender={"retry_total": 2, "retry_backoff_factor": 0.01, "read_timeout": 5, **defender},
    )
    clients = clients_for(settings, tuning)
    _OPENED.append(clients)
    return build_detector(settings, clients, clock)


def test_seed_rule_runs_on_defender_and_each_hit_is_delivered_once(
    graph: GraphStandIn, la: LogAnalyticsStandIn, hook: WebhookReceiver, detector: Detector, clock: Clock
) -> None:
    first, second = email(clock), email(clock)
    passing = email(clock, AuthenticationDetails='{"SPF":"pass","DKIM":"pass","DMARC":"pass","CompAuth":"pass"}')
    graph.ingest("EmailEvents", [first, second, passing], at=clock.now - timedelta(minutes=10))
    report = detector.run(only_due=False)
    outcome = report.outcomes[0]
    assert outcome.ok, outcome.errors
    assert outcome.window_mode == "timestamp"
    assert sorted(delivered_ids(hook)) == sorted([first["NetworkMessageId"], second["NetworkMessageId"]])
    assert la.requests == []  # nothing went to the workspace
    sent = graph.requests[0]
    assert "ingestion_time" not in sent["Query"] and "/" in sent["Timespan"]
    clock.advance(timedelta(minutes=5))
    again = detector.run(only_due=False).outcomes[0]
    assert again.ok and again.rows == 2 and again.new_hits == 0  # re-read by the overlap, not re-sent
    assert len(delivered_ids(hook)) == 2


def test_rule_key_source_defender_overrides_the_default(
    graph: GraphStandIn,
    la: LogAnalyticsStandIn,
    hook: WebhookReceiver,
    env: dict[str, str],
    clock: Clock,
    rules_dir: Path,
) -> None:
    seed = rules_dir / "accepted-domain-dmarc-temperror.yaml"
    seed.write_text(seed.read_text().replace("kqlwatch:\n", "kqlwatch:\n  source: defender\n", 1))
    row = email(clock)
    graph.ingest("EmailEvents", [row], at=clock.now - timedelta(minutes=10))
    made = _detector({**env, "KQLWATCH_GRAPH_ENDPOINT": graph.endpoint}, clock)  # default source: loganalytics
    assert made.run(only_due=False).ok
    assert delivered_ids(hook) == [row["NetworkMessageId"]]
    assert la.requests == [] and len(graph.requests) == 1


def test_a_row_queryable_late_is_alerted_by_the_overlap(
    graph: GraphStandIn, hook: WebhookReceiver, detector: Detector, clock: Clock
) -> None:
    assert detector.run(only_due=False).ok
    clock.advance(timedelta(minutes=5))
    # Its event was 2 hours ago; it became queryable only now, after the last run read that time.
    late = email(clock, Timestamp=clock.now - timedelta(hours=2))
    graph.ingest("EmailEvents", [late], at=clock.now - timedelta(seconds=30))
    assert detector.run(only_due=False).ok
    assert delivered_ids(hook) == [late["NetworkMessageId"]]


def test_capitalised_answer_keys_are_read(
    graph: GraphStandIn, hook: WebhookReceiver, detector: Detector, clock: Clock
) -> None:
    graph.capitalised = True  # `Schema`, `Results`, `Name`, `Type`, as one of the documented examples
    row = email(clock)
    graph.ingest("EmailEvents", [row], at=clock.now - timedelta(minutes=10))
    outcome = detector.run(only_due=False).outcomes[0]
    assert outcome.ok and outcome.rows == 1
    assert delivered_ids(hook) == [row["NetworkMessageId"]]


def test_calls_per_minute_429_is_retried_with_and_without_retry_after(
    graph: GraphStandIn, hook: WebhookReceiver, detector: Detector, clock: Clock
) -> None:
    row = email(clock)
    graph.ingest("EmailEvents", [row], at=clock.now - timedelta(minutes=10))
    graph.respond(throttled("calls", retry_after=1), throttled("calls"))
    started = time.monotonic()
    outcome = detector.run(only_due=False).outcomes[0]
    assert outcome.ok, outcome.errors
    assert time.monotonic() - started >= 1  # Retry-After honoured
    assert len(graph.requests) == 3
    assert delivered_ids(hook) == [row["NetworkMessageId"]]


def test_spent_cpu_quota_defers_the_rule_as_degraded_and_the_next_run_catches_up(
    graph: GraphStandIn, hook: WebhookReceiver, detector: Detector, clock: Clock
) -> None:
    row = email(clock)
    graph.ingest("EmailEvents", [row], at=clock.now - timedelta(minutes=10))
    graph.respond(throttled("cpu", retry_after=900))  # the 15-minute cycle: not worth waiting for in this run
    started = time.monotonic()
    outcome = detector.run(only_due=False).outcomes[0]
    assert time.monotonic() - started < 10 and len(graph.requests) == 1
    assert not outcome.ok and outcome.degraded
    assert any("CPU quota" in e and "deferred" in e for e in outcome.errors), outcome.errors
    assert delivered_ids(hook) == []
    clock.advance(timedelta(minutes=15))
    assert detector.run(only_due=False).ok  # the window was not advanced: the next run reads the row
    assert delivered_ids(hook) == [row["NetworkMessageId"]]


def test_a_bad_query_is_a_rule_error_with_the_services_reason(
    graph: GraphStandIn, hook: WebhookReceiver, detector: Detector, rules_dir: Path
) -> None:
    # TimeGenerated is a workspace column: advanced hunting has Timestamp only.
    (rules_dir / "workspace-only.yaml").write_text(
        "id: 0b5e9c6e-3333-4a4a-9a9a-000000000015\nname: Workspace column\n"
        "query: |\n  EmailEvents | where TimeGenerated > ago(1h)\n"
    )
    report = detector.run(only_due=False)
    bad = next(o for o in report.outcomes if o.name == "Workspace column")
    assert not bad.ok
    assert any("refused the query (HTTP 400 BadRequest)" in e and "TimeGenerated" in e for e in bad.errors), bad.errors
    assert next(o for o in report.outcomes if o.rule_id == SEED_ID).ok  # one broken rule never stops the others


def test_missing_permission_is_named_in_the_run_and_in_status(
    graph: GraphStandIn,
    detector: Detector,
    defender_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    clock: Clock,
) -> None:
    graph.respond(forbidden())
    with caplog.at_level(logging.DEBUG):
        outcome = detector.run(only_due=False).outcomes[0]
    assert not outcome.ok
    assert any("ThreatHunting.Read.All" in e and "HTTP 403" in e for e in outcome.errors), outcome.errors
    assert graph.token not in caplog.text and graph.token not in " ".join(outcome.errors)
    for key, value in defender_env.items():
        monkeypatch.setenv(key, value)
    clock.now = clock.now.replace()
    main(["status"])
    out = capsys.readouterr().out
    assert "ThreatHunting.Read.All" in out and graph.token not in out


def test_a_result_cut_at_the_row_limit_is_split_and_no_hit_is_lost(
    graph: GraphStandIn, hook: WebhookReceiver, defender_env: dict[str, str], clock: Clock
) -> None:
    rows = [email(clock, Timestamp=clock.now - timedelta(minutes=5 + 10 * i)) for i in range(5)]
    graph.ingest("EmailEvents", rows, at=clock.now - timedelta(minutes=1))
    graph.row_cap = 3  # the service cuts silently at its limit (100,000)
    made = _detector(defender_env, clock, row_limit=3)
    outcome = made.run(only_due=False).outcomes[0]
    assert outcome.ok, outcome.errors
    assert len(graph.requests) > 1
    assert sorted(delivered_ids(hook)) == sorted(r["NetworkMessageId"] for r in rows)


def test_a_query_that_does_not_answer_in_time_fails_that_rule_clearly(
    graph: GraphStandIn, hook: WebhookReceiver, defender_env: dict[str, str], clock: Clock
) -> None:
    graph.ingest("EmailEvents", [email(clock)], at=clock.now - timedelta(minutes=10))
    graph.query_seconds = 4
    made = _detector(defender_env, clock, read_timeout=1)
    started = time.monotonic()
    outcome = made.run(only_due=False).outcomes[0]
    assert time.monotonic() - started < 4  # a read timeout is not retried: the query already ran its time
    assert not outcome.ok
    assert any("no answer from Defender advanced hunting within 1 s" in e for e in outcome.errors), outcome.errors
    assert delivered_ids(hook) == []
