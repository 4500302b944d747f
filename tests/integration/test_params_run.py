"""KQLWATCH_PARAM_<Name> through a real run: the parameters change what the workspace returns, never the query."""

from __future__ import annotations

from datetime import timedelta

from shared.standins.clock import Clock
from shared.standins.loganalytics import LogAnalyticsStandIn
from shared.standins.teams import WebhookReceiver
from tests.conftest import MakeDetector, delivered_ids, email


def test_parameters_change_what_the_workspace_returns(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    contoso = email(clock)
    fabrikam_perm = email(
        clock, SenderMailFromDomain="fabrikam.fr", AuthenticationDetails='{"SPF":"pass","DMARC":"permerror"}'
    )
    woodgrove = email(clock, SenderMailFromDomain="woodgrove.com")
    la.ingest("EmailEvents", [contoso, fabrikam_perm, woodgrove], at=clock.now - timedelta(minutes=10))
    detector = make_detector(
        KQLWATCH_PARAM_SenderDomains="fabrikam.fr,woodgrove.com", KQLWATCH_PARAM_TriggerResults="temperror, permerror"
    )
    detector.run(only_due=False)
    assert sorted(delivered_ids(hook)) == sorted([fabrikam_perm["NetworkMessageId"], woodgrove["NetworkMessageId"]])
    sent = la.requests[-1].query
    assert 'let SenderDomains = pack_array("fabrikam.fr", "woodgrove.com");' in sent


def test_injection_attempt_through_a_parameter_matches_nothing(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    la.ingest(
        "EmailEvents", [email(clock), email(clock, EmailDirection="Outbound")], at=clock.now - timedelta(minutes=10)
    )
    hostile = "x'); EmailEvents | where true or ('1"
    outcome = make_detector(KQLWATCH_PARAM_SenderDomains=hostile).run(only_due=False).outcomes[0]
    assert outcome.ok and outcome.rows == 0
    assert hook.received() == []
