"""Tuning through the real detector: exclusions, suppression, re-alert windows, thresholds, grouping, routing."""

from __future__ import annotations

import shutil
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from shared.rules.exclusions import parse_exclusions
from shared.rules.loader import load_rule
from shared.rules.prepare import prepare_rules
from shared.standins.clock import Clock
from shared.standins.loganalytics import LogAnalyticsStandIn
from shared.standins.teams import WebhookReceiver
from tests.conftest import SEED_RULE, MakeDetector, delivered_ids, email

SEED_ID = "a256f4ea-deec-4fcd-bdf3-63987638eed9"
EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples" / "sample-tenant.exclusions.yaml"
SCHEDULER = """
exclusions:
  - rule: a256f4ea-deec-4fcd-bdf3-63987638eed9
    name: Contoso scheduler through the on-prem relay
    reason: Nightly reports sent as noreply-scheduler@contoso.com; the relay's SPF lookups time out.
    owner: mail-team@contoso.com
    expires: {expires}
    match:
      - {{column: SenderFromAddress, operator: equals, values: [noreply-scheduler@contoso.com]}}
      - {{column: SenderIPv4, operator: cidr, values: [10.20.30.40/32]}}
      - {{column: Connectors, operator: equals, values: [Contoso-OnPrem-Relay]}}
"""


def _scheduler(clock: Clock, **fields: str) -> dict[str, Any]:
    job = {
        "SenderFromAddress": "noreply-scheduler@contoso.com",
        "SenderMailFromAddress": "noreply-scheduler@contoso.com",
        "SenderIPv4": "10.20.30.40",
        "Connectors": "Contoso-OnPrem-Relay",
    }
    return email(clock, **{**job, **fields})


def _rule(rules_dir: Path, name: str, extra: str, query: str | None = None) -> None:
    body = query or "EmailEvents | where EmailDirection == 'Inbound'"
    (rules_dir / f"{name}.yaml").write_text(
        f"id: 0b5e9c6e-2222-4a4a-9a9a-{abs(hash(name)) % 10**12:012d}\nname: {name}\nquery: |\n  {body}\n{extra}"
    )
    (rules_dir / SEED_RULE.name).unlink(missing_ok=True)


def test_exclusion_removes_the_job_but_not_a_spoof_of_it(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock, rules_dir: Path
) -> None:
    (rules_dir / "exclusions.yaml").write_text(SCHEDULER.format(expires="2099-12-31"))
    job = _scheduler(clock)
    spoof = _scheduler(clock, SenderIPv4="198.51.100.23", Connectors="")  # same sender, from outside
    ipv6_only = _scheduler(clock, SenderIPv4="", SenderIPv6="2001:db8::5")  # no IPv4: must not vanish
    la.ingest("EmailEvents", [job, spoof, ipv6_only], at=clock.now - timedelta(minutes=10))
    report = make_detector().run(only_due=False)
    assert report.ok
    assert sorted(delivered_ids(hook)) == sorted([spoof["NetworkMessageId"], ipv6_only["NetworkMessageId"]])
    sent = la.requests[-1].query
    assert "// exclusion: Contoso scheduler through the on-prem relay" in sent
    assert 'SenderFromAddress in~ ("noreply-scheduler@contoso.com")' in sent


def test_expired_exclusion_stops_applying_and_is_reported_once(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock, rules_dir: Path
) -> None:
    (rules_dir / "exclusions.yaml").write_text(SCHEDULER.format(expires="2020-01-31"))
    job = _scheduler(clock)
    la.ingest("EmailEvents", [job], at=clock.now - timedelta(minutes=10))
    ops = hook.url("ops")
    first = make_detector(KQLWATCH_OPS_WEBHOOK_URL=ops).run(only_due=False).outcomes[0]
    assert delivered_ids(hook) == [job["NetworkMessageId"]]
    assert "expired on 2020-01-31" in first.warnings[0]
    clock.advance(timedelta(minutes=5))
    make_detector(KQLWATCH_OPS_WEBHOOK_URL=ops).run(only_due=False)
    [notice] = hook.cards("ops")
    text = str(notice)
    assert "exclusion expired: Contoso scheduler through the on-prem relay" in text
    assert "mail-team@contoso[.]com" in text and "2020-01-31" in text
    assert "exclusion: Contoso scheduler" not in la.requests[-1].query


def test_a_bad_exclusion_is_reported_and_the_rule_still_runs(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock, rules_dir: Path
) -> None:
    (rules_dir / "exclusions.yaml").write_text(
        SCHEDULER.format(expires="2099-01-01").replace("operator: cidr", "operator: within")
    )
    la.ingest("EmailEvents", [_scheduler(clock)], at=clock.now - timedelta(minutes=10))
    report = make_detector().run(only_due=False)
    assert not report.ok
    assert "operator 'within' is not one of" in str(report.rule_errors[0])
    assert "exclusions.yaml" in str(report.rule_errors[0])
    assert report.outcomes[0].delivered == 1


def test_exclusion_values_are_data_not_kql() -> None:
    [exclusion] = parse_exclusions(
        [
            {
                "name": "x",
                "reason": "r",
                "owner": "o",
                "match": [{"column": "Subject", "operator": "has", "values": ['") or true //']}],
            }
        ],
        source="t",
        rule_id=SEED_ID,
    )
    rules = [load_rule(SEED_RULE)]  # the seed alone: rules/ holds the pack too (issue 16)
    [prepared], _ = prepare_rules(rules, {}, [exclusion])
    assert prepared.query.rstrip().endswith(
        '| where not((isnotempty(Subject) and (Subject has "\\") or true //")))  // exclusion: x'
    )


def test_sentinel_suppression_holds_new_alerts_for_its_duration(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock, rules_dir: Path
) -> None:
    _rule(rules_dir, "Suppressed", "suppressionEnabled: true\nsuppressionDuration: 1h\n")
    first = email(clock, TimeGenerated=clock.now - timedelta(minutes=2))
    la.ingest("EmailEvents", [first], at=clock.now - timedelta(minutes=1))
    make_detector().run(only_due=False)
    clock.advance(timedelta(minutes=10))
    during = email(clock, TimeGenerated=clock.now - timedelta(minutes=2))
    la.ingest("EmailEvents", [during], at=clock.now - timedelta(minutes=1))
    outcome = make_detector().run(only_due=False).outcomes[0]
    assert outcome.suppressed == 1 and outcome.delivered == 0
    clock.advance(timedelta(hours=1))
    after = email(clock, TimeGenerated=clock.now - timedelta(minutes=2))
    la.ingest("EmailEvents", [after], at=clock.now - timedelta(minutes=1))
    make_detector().run(only_due=False)
    assert delivered_ids(hook) == [first["NetworkMessageId"], after["NetworkMessageId"]]


def test_realert_window_is_per_entity_and_a_change_applies_next_run(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock, rules_dir: Path
) -> None:
    extra = "kqlwatch:\n  realert:\n    key: [SenderIPv4]\n    window: {window}\n"
    _rule(rules_dir, "Realert", extra.format(window="1h"))
    a1 = email(clock, SenderIPv4="198.51.100.1")
    a2 = email(clock, SenderIPv4="198.51.100.1")
    b1 = email(clock, SenderIPv4="198.51.100.2")
    la.ingest("EmailEvents", [a1, a2, b1], at=clock.now - timedelta(minutes=10))
    outcome = make_detector().run(only_due=False).outcomes[0]
    assert (outcome.new_hits, outcome.suppressed) == (2, 1)
    shown = set(delivered_ids(hook))
    assert b1["NetworkMessageId"] in shown and len(shown & {a1["NetworkMessageId"], a2["NetworkMessageId"]}) == 1

    clock.advance(timedelta(minutes=10))
    a3 = email(clock, SenderIPv4="198.51.100.1")
    la.ingest("EmailEvents", [a3], at=clock.now - timedelta(minutes=5))
    assert make_detector().run(only_due=False).outcomes[0].suppressed == 1  # same entity, inside the hour

    _rule(rules_dir, "Realert", extra.format(window="5m"))  # shortened: takes effect on the next run
    clock.advance(timedelta(minutes=10))
    a4 = email(clock, SenderIPv4="198.51.100.1")
    la.ingest("EmailEvents", [a4], at=clock.now - timedelta(minutes=5))
    assert make_detector().run(only_due=False).outcomes[0].delivered == 1
    assert a4["NetworkMessageId"] in delivered_ids(hook)


def test_trigger_threshold_applies_to_the_result_count(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock, rules_dir: Path
) -> None:
    _rule(rules_dir, "Burst", "triggerOperator: gt\ntriggerThreshold: 2\n")
    la.ingest("EmailEvents", [email(clock), email(clock)], at=clock.now - timedelta(minutes=10))
    assert make_detector().run(only_due=False).outcomes[0].new_hits == 0
    clock.advance(timedelta(minutes=5))
    la.ingest("EmailEvents", [email(clock)], at=clock.now - timedelta(minutes=4))
    assert make_detector().run(only_due=False).outcomes[0].new_hits == 3


def test_alert_per_result_titles_and_custom_details(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock, rules_dir: Path
) -> None:
    _rule(
        rules_dir,
        "PerResult",
        "eventGroupingSettings:\n  aggregationKind: AlertPerResult\n"
        "alertDetailsOverride:\n  alertDisplayNameFormat: 'Spoofed mail to {{RecipientEmailAddress}} "
        "from {{SenderDisplayName}}'\ncustomDetails:\n  Connector: Connectors\n",
    )
    rows = [
        email(clock, SenderDisplayName="[Pay](https://evil.example)", Connectors="Partner-In"),
        email(clock, RecipientEmailAddress="bob@contoso.com"),
    ]
    la.ingest("EmailEvents", rows, at=clock.now - timedelta(minutes=10))
    make_detector().run(only_due=False)
    cards = hook.cards()
    assert len(cards) == 2
    titles = sorted(c["body"][0]["items"][0]["inlines"][0]["text"] for c in cards)
    assert titles == [
        "Spoofed mail to alice@contoso[.]com from [Pay](hxxps[:]//evil[.]example)",
        "Spoofed mail to bob@contoso[.]com from The CEO",
    ]
    assert any("Connector: Partner-In" in str(c) for c in cards)


def test_single_alert_groups_hits_into_one_digest(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock, rules_dir: Path
) -> None:
    _rule(rules_dir, "Digest", "eventGroupingSettings:\n  aggregationKind: SingleAlert\n")
    la.ingest("EmailEvents", [email(clock) for _ in range(4)], at=clock.now - timedelta(minutes=10))
    make_detector().run(only_due=False)
    assert len(hook.cards()) == 1 and len(delivered_ids(hook)) == 4


def test_routing_by_rule_and_by_severity_with_a_default(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock, rules_dir: Path
) -> None:
    _rule(rules_dir, "High one", "severity: High\n", "EmailEvents | where Subject == 'high'")
    _rule(rules_dir, "Routed", "kqlwatch:\n  route: OnCall\n", "EmailEvents | where Subject == 'routed'")
    _rule(rules_dir, "Plain", "severity: Low\n", "EmailEvents | where Subject == 'plain'")
    rows = {s: email(clock, Subject=s) for s in ("high", "routed", "plain")}
    la.ingest("EmailEvents", rows.values(), at=clock.now - timedelta(minutes=10))
    make_detector(KQLWATCH_ROUTE_HIGH=hook.url("high"), KQLWATCH_ROUTE_ONCALL=hook.url("oncall")).run(only_due=False)
    assert delivered_ids(hook, "high") == [rows["high"]["NetworkMessageId"]]
    assert delivered_ids(hook, "oncall") == [rows["routed"]["NetworkMessageId"]]
    assert delivered_ids(hook, "soc") == [rows["plain"]["NetworkMessageId"]]


def test_documented_exclusions_leave_exactly_the_attacks_in_the_sample_tenant(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock, rules_dir: Path
) -> None:
    import importlib.util

    from shared.workbench.demo import SAMPLES, sample_rows

    spec = importlib.util.spec_from_file_location("sample_generator", SAMPLES.parent / "generate_emailevents.py")
    assert spec and spec.loader
    generator = importlib.util.module_from_spec(spec)
    sys.modules["sample_generator"] = generator  # dataclasses look their module up
    spec.loader.exec_module(generator)
    shutil.copy(EXAMPLES, rules_dir / "exclusions.yaml")
    rows = sample_rows(clock.now)
    la.ingest("EmailEvents", rows)
    report = make_detector().run(only_due=False)
    assert report.ok, report
    alerted = {
        (row["NetworkMessageId"], row["RecipientEmailAddress"])
        for row in rows
        if row["NetworkMessageId"] in set(delivered_ids(hook))
    }
    families = {
        generator.classify(row) for row in rows if (row["NetworkMessageId"], row["RecipientEmailAddress"]) in alerted
    }
    assert families == {generator.ATTACK}, families
    assert report.outcomes[0].new_hits == 12
