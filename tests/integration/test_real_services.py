"""kqlwatch against stand-ins that behave as the real services do where ours used to be kind (issue 11;
facts in docs/reliability.md, "Real-service behaviour"): Teams Workflows answering 202 before its flow runs,
Log Analytics' partial errors, 504s and wire formats, the Azure SDK's retry rules and token failures."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from shared.errors import ConfigError, QueryError
from shared.runtime import querying as querying_module
from shared.runtime.loganalytics import LogsClient, StaticTokenCredential, make_credential
from shared.runtime.settings import load_settings
from shared.runtime.teams import TeamsClient
from shared.standins._http import LoopbackServer, Request, Response
from shared.standins.clock import Clock
from shared.standins.loganalytics import TRUNCATION_CODE, LogAnalyticsStandIn, PartialFailure, partial_error_body
from shared.standins.teams import WebhookReceiver
from tests.conftest import WORKSPACE, MakeDetector, delivered_ids, email

# --- Teams Workflows ------------------------------------------------------------------------------------


def _client() -> TeamsClient:
    return TeamsClient(retries=0, backoff=0.01, min_interval=0.0, timeout=(2.0, 2.0))


def test_posts_are_utf8_json_and_say_so(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    row = email(clock, Subject="Facture impayée – 請求書 – счёт")
    la.ingest("EmailEvents", [row], at=clock.now - timedelta(minutes=10))
    make_detector().run(only_due=False)
    [received] = hook.received("soc")
    assert received.content_type == "application/json; charset=utf-8"
    assert "Facture impayée – 請求書 – счёт" in json.dumps(received.body, ensure_ascii=False)


def test_202_means_accepted_a_flow_that_fails_later_is_seen_only_in_its_run_history(hook: WebhookReceiver) -> None:
    client = _client()
    broken = {"type": "message", "text": "no attachments"}
    result = client.post(hook.url("async"), broken)
    assert result.ok and result.status == 202  # all the poster can know
    [run] = hook.runs("async")
    assert not run.succeeded and "'attachments' is missing" in run.error
    assert hook.received("async") == []  # nothing reached the channel
    client.close()


def test_a_flow_with_a_response_action_answers_its_failure_synchronously(hook: WebhookReceiver) -> None:
    hook.synchronous("sync")
    client = _client()
    result = client.post(hook.url("sync"), {"type": "message", "text": "no attachments"})
    assert not result.ok and result.status == 400 and result.rejected
    assert "SECRET" not in result.detail
    client.close()


def test_cards_run_through_both_kinds_of_flow(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    """The flow displays our cards (1.4, under 28 KB as Teams may count): no failed run in either mode."""
    rows = [email(clock, Subject="é" * 5000 + str(i)) for i in range(30)]
    la.ingest("EmailEvents", rows, at=clock.now - timedelta(minutes=10))
    hook.synchronous("sync")
    outcome = (
        make_detector(KQLWATCH_TEAMS_WEBHOOK_URL=f"{hook.url('soc')},{hook.url('sync')}")
        .run(only_due=False)
        .outcomes[0]
    )
    assert outcome.delivered == 30 and outcome.deferred == 0
    assert [r.error for r in hook.runs() if not r.succeeded] == []
    ids = sorted(r["NetworkMessageId"] for r in rows)
    assert sorted(delivered_ids(hook, "soc")) == ids and sorted(delivered_ids(hook, "sync")) == ids


@pytest.mark.parametrize(
    "url",
    [
        "https://contoso.webhook.office.com/webhookb2/0c7f@72f9/IncomingWebhook/SECRET0123456789/8e3a",
        "https://outlook.office.com/webhook/0c7f@72f9/IncomingWebhook/SECRET0123456789/8e3a",
    ],
)
@pytest.mark.parametrize("setting", ["KQLWATCH_TEAMS_WEBHOOK_URL", "KQLWATCH_OPS_WEBHOOK_URL", "KQLWATCH_ROUTE_HIGH"])
def test_retired_office_365_connector_urls_are_a_configuration_error(
    url: str, setting: str, env: dict[str, str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**env, setting: url})
    assert caught.value.setting == setting
    message = str(caught.value)
    assert "retired Office 365 connector" in message and "Workflows" in message and "SECRET" not in message


# --- Log Analytics: partial results ---------------------------------------------------------------------

LOW_MEMORY = PartialFailure("-2133196794", "Partial query failure: Low memory condition (E_LOW_MEMORY_CONDITION).")


def test_a_partial_error_other_than_truncation_keeps_the_rows_and_degrades_the_rule(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    rows = [email(clock) for _ in range(3)]
    la.ingest("EmailEvents", rows, at=clock.now - timedelta(minutes=10))
    la.partial_failure = LOW_MEMORY
    outcome = make_detector().run(only_due=False).outcomes[0]
    assert len(la.requests) == 1  # not split: a smaller window does not help (it used to cost 31 queries)
    assert outcome.delivered == 3 and sorted(delivered_ids(hook)) == sorted(r["NetworkMessageId"] for r in rows)
    assert not outcome.ok and outcome.degraded
    assert "Low memory condition (E_LOW_MEMORY_CONDITION)" in outcome.errors[0]  # the innererror, not the generic
    assert "Something went wrong" not in outcome.errors[0]


def test_a_degraded_window_is_read_again_and_counts_toward_the_failing_notice(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    ops = {"KQLWATCH_OPS_WEBHOOK_URL": hook.url("ops")}
    assert make_detector(**ops).run(only_due=False).outcomes[0].ok
    last_good = clock.now
    first = email(clock)
    la.ingest("EmailEvents", [first], at=clock.now)
    la.partial_failure = LOW_MEMORY
    for _ in range(3):  # 90 minutes of partial answers
        clock.advance(timedelta(minutes=30))
        outcome = make_detector(**ops).run(only_due=False).outcomes[0]
        assert outcome.degraded and outcome.window is not None
        assert outcome.window.start <= last_good - timedelta(minutes=50)  # reaches back to the last good window
    [notice] = hook.cards("ops")
    assert "rule failing" in json.dumps(notice) and "E_LOW_MEMORY_CONDITION" in json.dumps(notice)
    assert delivered_ids(hook, "soc") == [first["NetworkMessageId"]]  # its rows were used, alerted once
    la.partial_failure = None
    late = email(clock, TimeGenerated=last_good + timedelta(minutes=1))  # in the part read only partially
    la.ingest("EmailEvents", [late], at=clock.now)
    clock.advance(timedelta(minutes=5))
    outcome = make_detector(**ops).run(only_due=False).outcomes[0]
    assert outcome.ok and delivered_ids(hook, "soc") == [first["NetworkMessageId"], late["NetworkMessageId"]]
    assert "rule recovered" in json.dumps(hook.cards("ops")[-1])


def test_truncation_still_splits_the_window_and_reports_the_real_reason(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    same_time = clock.now - timedelta(minutes=15)
    la.ingest(
        "EmailEvents", [email(clock, TimeGenerated=same_time) for _ in range(5)], at=clock.now - timedelta(minutes=10)
    )
    la.row_cap = 3
    outcome = make_detector().run(only_due=False).outcomes[0]
    assert outcome.ok and not outcome.degraded and outcome.delivered == 3 and len(la.requests) > 1
    assert any("exceeded the internal record count limit 3" in w and "-2133196797" in w for w in outcome.warnings)


# --- Log Analytics: time budget and retries -------------------------------------------------------------


def _slow_client(la: LogAnalyticsStandIn, budget: float) -> LogsClient:
    # The production shape at 1/120 scale: a 1 s server wait instead of 120 s, three retries.
    return LogsClient(
        la.endpoint,
        StaticTokenCredential(la.token),
        retry_total=3,
        retry_backoff_factor=0.01,
        server_timeout=1,
        query_budget=budget,
    )


def test_a_query_past_the_server_wait_is_bounded_by_the_rule_budget(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    la.query_seconds = 60  # longer than any wait: each attempt is answered 504 after the wait
    detector = make_detector()
    detector.logs = client = _slow_client(la, budget=2.5)
    started = time.monotonic()
    outcome = detector.run(only_due=False).outcomes[0]
    spent = time.monotonic() - started
    client.close()
    assert la.requests[0].prefer == "wait=1"
    assert not outcome.ok and "query time budget used up: no result within 2.5 s" in outcome.errors[0]
    assert 2.0 <= outcome.query_ms / 1000 <= 3.5 and spent < 5
    assert len(la.requests) <= 3  # without the budget: 4 attempts of a full wait each (~8 min in production)


def test_one_slow_rule_leaves_the_others_their_time(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock, rules_dir: Path
) -> None:
    (rules_dir / "other.yaml").write_text(
        "id: 0b5e9c6e-4444-4a4a-9a9a-000000000003\nname: Other rule\n"
        "query: |\n  EmailEvents | where Subject == 'other'\n"
    )
    other = email(clock, Subject="other")
    la.ingest("EmailEvents", [other], at=clock.now - timedelta(minutes=10))
    la.query_seconds, la.slow_query = 60, "SenderDomains"  # only the seed rule's query is slow
    detector = make_detector()
    detector.logs = client = _slow_client(la, budget=2.5)
    started = time.monotonic()
    outcomes = {o.name: o for o in detector.run(only_due=False).outcomes}
    spent = time.monotonic() - started
    client.close()
    slow = outcomes["Message from an Accepted Domain with DMARC TempError"]
    assert not slow.ok and "query time budget used up" in slow.errors[0] and slow.query_ms <= 3500
    assert outcomes["Other rule"].ok and outcomes["Other rule"].query_ms < 1500
    assert delivered_ids(hook) == [other["NetworkMessageId"]] and spent < 6


def test_without_a_budget_the_sdk_would_retry_the_504_three_times(la: LogAnalyticsStandIn) -> None:
    """The control for the test above: what azure-core does on its own."""
    la.query_seconds = 60
    client = _slow_client(la, budget=600)
    now = datetime.now(timezone.utc)
    with pytest.raises(QueryError, match="HTTP 504 GatewayTimeout") as caught:
        client.query(WORKSPACE, "EmailEvents", now - timedelta(hours=1), now)
    client.close()
    assert len(la.requests) == 4 and "correlationId " in str(caught.value)


@pytest.mark.parametrize("status", [429, 502])
def test_transient_429_and_502_without_retry_after_are_retried_in_the_run(
    status: int, la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    row = email(clock)
    la.ingest("EmailEvents", [row], at=clock.now - timedelta(minutes=10))
    la.respond(
        Response.of_json(
            status, {"error": {"code": "ServiceUnavailable", "message": "try later", "correlationId": "0c1d"}}
        )
    )  # no Retry-After
    outcome = make_detector().run(only_due=False).outcomes[0]
    assert len(la.requests) == 2 and outcome.ok and delivered_ids(hook) == [row["NetworkMessageId"]]


# --- token failures, through the real credential -------------------------------------------------------

CLIENT_ID = "7d4c1e9a-0000-4000-8000-00000000abcd"


class IdentityEndpoint:
    """A local stand-in for the Functions host's managed identity endpoint (IDENTITY_ENDPOINT), refusing
    to issue tokens the way it does for an identity not assigned to the app."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._server = LoopbackServer(self._handle)

    def _handle(self, request: Request) -> Response:
        self.requests.append(request)
        return Response.of_json(
            400,
            {
                "statusCode": 400,
                "message": "No User Assigned or Delegated Managed "
                "Identity found for specified ClientId/ResourceId/PrincipalId.",
                "correlationId": "5f0e3f4c-0000-4000-8000-000000000001",
            },
        )

    def __enter__(self) -> IdentityEndpoint:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}/msi/token"


def test_a_managed_identity_token_failure_names_the_identity_and_the_workspace(
    la: LogAnalyticsStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    with IdentityEndpoint() as identity:
        monkeypatch.setenv("IDENTITY_ENDPOINT", identity.url)
        monkeypatch.setenv("IDENTITY_HEADER", "local-identity-header")
        monkeypatch.setenv("AZURE_CLIENT_ID", CLIENT_ID)
        monkeypatch.delenv("MSI_ENDPOINT", raising=False)
        client = LogsClient(la.endpoint, make_credential(None), retry_total=0)
        now = datetime.now(timezone.utc)
        with pytest.raises(QueryError) as caught:
            client.query(WORKSPACE, "EmailEvents", now - timedelta(hours=1), now)
        client.close()
    message = str(caught.value)
    assert message.startswith(
        f"could not get a token for managed identity {CLIENT_ID} to query workspace {WORKSPACE}: "
    )
    assert "No User Assigned or Delegated Managed Identity found" in message and "HTTP None" not in message
    assert identity.requests and la.requests == []  # the token was asked for locally; no query went out


def test_no_credential_at_all_is_explained(la: LogAnalyticsStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    """Off Azure with nothing signed in: DefaultAzureCredential's chain really fails (no IMDS probe: the
    managed identity is excluded here, as this machine must not reach 169.254.169.254)."""
    from azure.identity import DefaultAzureCredential

    for name in (
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_SECRET",
        "IDENTITY_ENDPOINT",
        "MSI_ENDPOINT",
        "AZURE_FEDERATED_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")  # no az, azd or pwsh to ask
    credential = DefaultAzureCredential(
        exclude_managed_identity_credential=True,
        exclude_shared_token_cache_credential=True,
        exclude_visual_studio_code_credential=True,
    )
    client = LogsClient(la.endpoint, credential, retry_total=0)
    now = datetime.now(timezone.utc)
    with pytest.raises(QueryError) as caught:
        client.query(WORKSPACE, "EmailEvents", now - timedelta(hours=1), now)
    client.close()
    message = str(caught.value)
    assert (
        message.startswith(
            "could not get a token for DefaultAzureCredential (no AZURE_CLIENT_ID set) to query "
            f"workspace {WORKSPACE}: "
        )
        and "HTTP None" not in message
    )
    assert la.requests == []


# --- wire formats ---------------------------------------------------------------------------------------

PROBE_ID = "6a3b1f5e-2c1d-4e6f-9a7b-0c8d9e1f2a3b"


def test_timespans_guids_and_dynamic_null_as_the_service_sends_them(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock, rules_dir: Path
) -> None:
    (rules_dir / "probe.yaml").write_text(
        "id: 0b5e9c6e-4444-4a4a-9a9a-000000000001\nname: Probe rule\n"
        "query: |\n  Probe_CL | extend Delay = 5m, Day = 1d, Id = toguid(IdText)\n"
        "  | project TimeGenerated, Host, Id, Delay, Day, Extra\n"
    )
    when = clock.now - timedelta(minutes=15)
    la.ingest(
        "Probe_CL",
        [
            {"TimeGenerated": when, "Host": "a", "IdText": PROBE_ID, "Extra": {"k": [1]}},
            {"TimeGenerated": when, "Host": "b", "IdText": PROBE_ID, "Extra": None},
        ],
        at=clock.now - timedelta(minutes=10),
    )
    result = make_detector().logs.query(
        WORKSPACE,
        "Probe_CL | extend Delay = 5m, Day = 1d, Id = toguid(IdText) | project Host, Id, Delay, Day, Extra",
        when - timedelta(minutes=1),
        clock.now,
    )
    assert result.types == {"Host": "string", "Id": "guid", "Delay": "timespan", "Day": "timespan", "Extra": "dynamic"}
    assert result.rows[1] == {"Host": "b", "Id": PROBE_ID, "Delay": "00:05:00", "Day": "1.00:00:00", "Extra": None}
    outcome = next(o for o in make_detector().run(only_due=False).outcomes if o.name == "Probe rule")
    assert outcome.ok and outcome.new_hits == 2
    text = json.dumps(hook.cards("soc"), ensure_ascii=False)
    assert "Delay: 00:05:00" in text and "Day: 1.00:00:00" in text and f"Id: {PROBE_ID}" in text
    assert "Extra: -" in text and 'Extra: {\\"k\\":[1]}' in text
    clock.advance(timedelta(minutes=5))
    again = next(o for o in make_detector().run(only_due=False).outcomes if o.name == "Probe rule")
    assert again.ok and again.rows == 2 and again.new_hits == 0  # the same identities: alerted once


def test_service_errors_keep_the_correlation_id(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, rules_dir: Path
) -> None:
    (rules_dir / "broken.yaml").write_text(
        "id: 0b5e9c6e-4444-4a4a-9a9a-000000000002\nname: Broken rule\n"
        "query: |\n  EmailEvents | summarize by NoSuchColumn\n"
    )
    outcome = next(o for o in make_detector().run(only_due=False).outcomes if o.name == "Broken rule")
    error = outcome.errors[0]
    assert not outcome.ok and error.startswith("query failed: HTTP 400 BadArgumentError: ")
    assert "NoSuchColumn" in error  # the innererror's specific reason, not "The request had some invalid..."
    assert re.search(r"\(correlationId [0-9a-f-]{36}\)$", error)


def test_a_window_split_for_truncation_whose_half_fails_otherwise_is_degraded(
    la: LogAnalyticsStandIn,
    hook: WebhookReceiver,
    make_detector: MakeDetector,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(querying_module, "MAX_SPLITS", 1)  # one split: the halves' answers decide
    empty = {"tables": [{"name": "PrimaryResult", "columns": [{"name": "Subject", "type": "string"}], "rows": []}]}
    truncated = {
        **empty,
        "error": partial_error_body(
            TRUNCATION_CODE,
            "Query result set has exceeded the internal record count limit 500000 (E_QUERY_RESULT_SET_TOO_LARGE)",
        ),
    }
    low_memory = {**empty, "error": partial_error_body(LOW_MEMORY.code, LOW_MEMORY.message)}
    la.respond(Response.of_json(200, truncated), Response.of_json(200, truncated), Response.of_json(200, low_memory))
    outcome = make_detector().run(only_due=False).outcomes[0]
    assert len(la.requests) == 3 and outcome.degraded and not outcome.ok
    assert "E_LOW_MEMORY_CONDITION" in outcome.errors[0] and "E_QUERY_RESULT_SET_TOO_LARGE" in outcome.errors[0]
