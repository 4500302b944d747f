"""Issue 15, many workspaces: the seed rule runs against two workspaces (KQLWATCH_WORKSPACE_ID as a comma list, or
the rule's kqlwatch.workspaces), one query, window, state and dedupe ledger per workspace; each hit delivered once
per workspace; the card and its query link name the workspace."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from shared.errors import ConfigError, QueryError, RuleError
from shared.rules.loader import parse_rule
from shared.runtime.settings import load_settings
from shared.runtime.units import state_id
from shared.standins.clock import Clock
from shared.standins.loganalytics import LogAnalyticsStandIn
from shared.standins.rows import email_row
from shared.standins.teams import WebhookReceiver
from tests.conftest import WORKSPACE, MakeDetector, delivered_ids, email

SEED_ID = "a256f4ea-deec-4fcd-bdf3-63987638eed9"
SECOND = "11111111-2222-4333-8444-555555555555"
ARM = "/subscriptions/0/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/"


def _card_text(card: dict[str, object]) -> str:
    return str(card)


def test_seed_rule_runs_against_two_workspaces_each_hit_once_per_workspace(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    only_first, only_second, in_both = email(clock), email(clock), email(clock)
    la.ingest("EmailEvents", [only_first], at=clock.now - timedelta(minutes=10), workspace=WORKSPACE)
    la.ingest("EmailEvents", [only_second], at=clock.now - timedelta(minutes=10), workspace=SECOND)
    la.ingest("EmailEvents", [in_both], at=clock.now - timedelta(minutes=10))  # the same row in each workspace
    detector = make_detector(
        KQLWATCH_WORKSPACE_ID=f"{WORKSPACE},{SECOND}", KQLWATCH_WORKSPACE_RESOURCE_ID=f"{ARM}one,{ARM}two"
    )
    report = detector.run(only_due=False)
    assert report.ok, [o.errors for o in report.outcomes]
    by_id = {o.rule_id: o for o in report.outcomes}
    assert set(by_id) == {SEED_ID, state_id(SEED_ID, SECOND, WORKSPACE)}
    assert {r.workspace for r in la.requests if "TriggerResults" in r.query} == {WORKSPACE, SECOND}
    assert sorted(delivered_ids(hook)) == sorted(
        [only_first["NetworkMessageId"], only_second["NetworkMessageId"], *[in_both["NetworkMessageId"]] * 2]
    )
    cards = hook.cards()
    second_cards = [c for c in cards if f"(workspace {SECOND})" in _card_text(c)]
    assert len(second_cards) == 1 and "workspaces%2Ftwo" in _card_text(second_cards[0])  # the link opens it
    first_cards = [c for c in cards if "(workspace " not in _card_text(c)]
    assert len(first_cards) == 1 and "workspaces%2Fone" in _card_text(first_cards[0])
    clock.advance(timedelta(minutes=5))
    again = detector.run(only_due=False)
    assert again.ok and all(o.new_hits == 0 for o in again.outcomes)
    assert len(delivered_ids(hook)) == 4


def test_rule_key_workspaces_picks_the_rules_workspaces(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock, rules_dir: Path
) -> None:
    seed = rules_dir / "accepted-domain-dmarc-temperror.yaml"
    seed.write_text(seed.read_text().replace("kqlwatch:\n", f"kqlwatch:\n  workspaces: [{SECOND}]\n", 1))
    row = email(clock)
    la.ingest("EmailEvents", [row], at=clock.now - timedelta(minutes=10), workspace=SECOND)
    la.ingest("EmailEvents", [email(clock)], at=clock.now - timedelta(minutes=10), workspace=WORKSPACE)
    report = make_detector().run(only_due=False)
    assert report.ok
    assert [o.rule_id for o in report.outcomes] == [state_id(SEED_ID, SECOND, WORKSPACE)]
    assert {r.workspace for r in la.requests if "TriggerResults" in r.query} == {SECOND}
    assert delivered_ids(hook) == [row["NetworkMessageId"]]


def test_state_ids_are_stable_guids_and_the_default_workspace_keeps_the_rules_id() -> None:
    assert state_id(SEED_ID, WORKSPACE, WORKSPACE) == SEED_ID
    other = state_id(SEED_ID, SECOND, WORKSPACE)
    assert other == state_id(SEED_ID, SECOND.upper(), WORKSPACE) != SEED_ID
    assert str(uuid.UUID(other)) == other


def test_bad_workspace_lists_are_named(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="KQLWATCH_WORKSPACE_ID must be the workspace GUID"):
        load_settings({**env, "KQLWATCH_WORKSPACE_ID": f"{WORKSPACE},not-a-guid"})
    with pytest.raises(ConfigError, match="KQLWATCH_WORKSPACE_RESOURCE_ID lists 1 resource id"):
        load_settings(
            {**env, "KQLWATCH_WORKSPACE_ID": f"{WORKSPACE},{SECOND}", "KQLWATCH_WORKSPACE_RESOURCE_ID": ARM + "one"}
        )
    settings = load_settings({**env, "KQLWATCH_WORKSPACE_ID": f"{WORKSPACE}, {SECOND.upper()}"})
    assert settings.workspace_ids == (WORKSPACE, SECOND) and settings.workspace_id == WORKSPACE
    rule = "id: 0b5e9c6e-3333-4a4a-9a9a-000000000015\nname: R\nquery: EmailEvents\nkqlwatch:\n  workspaces: [{}]\n"
    with pytest.raises(RuleError, match=r"kqlwatch\.workspaces must be a list of workspace GUIDs"):
        parse_rule(rule.format("nope"), "r.yaml")
    assert parse_rule(rule.format(SECOND.upper()), "r.yaml").workspaces == (SECOND,)


# --- kqlwatch.union: one cross-workspace query (additional_workspaces) instead of one per workspace ---


def _union_seed(rules_dir: Path, workspaces: list[str] | None = None) -> Path:
    seed = rules_dir / "accepted-domain-dmarc-temperror.yaml"
    listed = f"  workspaces: [{', '.join(workspaces)}]\n" if workspaces else ""
    seed.write_text(seed.read_text().replace("kqlwatch:\n", f"kqlwatch:\n  union: true\n{listed}", 1))
    return seed


def _hit_workspaces(hook: WebhookReceiver) -> list[tuple[str, str]]:
    """(NetworkMessageId, the workspace the card names for that hit) for each hit shown, in order."""
    shown: list[tuple[str, str]] = []
    current = ""
    for card in hook.cards():
        for block in card["body"]:
            for run in block.get("inlines", []):
                text = run.get("text", "")
                current = next(iter(re.findall(r"Workspace: ([0-9a-f-]{36})", text)), current)
                shown.extend((found, current) for found in re.findall(r"NetworkMessageId: ([^\s·\u00a0]+)", text))
    return shown


def test_union_rule_is_one_query_and_each_hit_names_its_workspace(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock, rules_dir: Path
) -> None:
    _union_seed(rules_dir)
    only_first, only_second, in_both = email(clock), email(clock), email(clock)
    la.ingest("EmailEvents", [only_first], at=clock.now - timedelta(minutes=10), workspace=WORKSPACE)
    la.ingest("EmailEvents", [only_second], at=clock.now - timedelta(minutes=10), workspace=SECOND)
    la.ingest("EmailEvents", [in_both], at=clock.now - timedelta(minutes=10))  # the same row in each workspace
    detector = make_detector(KQLWATCH_WORKSPACE_ID=f"{WORKSPACE},{SECOND}")
    report = detector.run(only_due=False)
    assert report.ok, [o.errors for o in report.outcomes]
    assert [o.rule_id for o in report.outcomes] == [SEED_ID]  # one unit, the rule's own state
    sent = [r for r in la.requests if "TriggerResults" in r.query]
    assert [(r.workspace, r.workspaces) for r in sent] == [(WORKSPACE, (SECOND,))]  # ONE query, the other added
    expected = {
        (only_first["NetworkMessageId"], WORKSPACE),
        (only_second["NetworkMessageId"], SECOND),
        (in_both["NetworkMessageId"], WORKSPACE),
        (in_both["NetworkMessageId"], SECOND),  # the same row in two workspaces: two hits
    }
    shown = _hit_workspaces(hook)
    assert sorted(shown) == sorted(expected) and report.outcomes[0].new_hits == 4
    clock.advance(timedelta(minutes=5))
    posts = len(hook.cards())
    again = detector.run(only_due=False)
    assert again.ok and [o.new_hits for o in again.outcomes] == [0]
    assert len(hook.cards()) == posts  # the second run posts nothing
    assert len([r for r in la.requests if "TriggerResults" in r.query]) == 2  # still one query a run


def test_union_over_more_than_100_additional_workspaces_is_a_rule_error_naming_file_and_key(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, rules_dir: Path
) -> None:
    many = [str(uuid.UUID(int=i + 1)) for i in range(102)]
    rule = "id: 0b5e9c6e-3333-4a4a-9a9a-000000000015\nname: R\nquery: EmailEvents\nkqlwatch:\n  union: {}\n  workspaces: [{}]\n"
    with pytest.raises(
        RuleError, match=r"r\.yaml:4: kqlwatch\.union: 102 workspaces in kqlwatch\.workspaces; .* at most 101"
    ):
        parse_rule(rule.format("true", ", ".join(many)), "r.yaml")
    assert len(parse_rule(rule.format("true", ", ".join(many[:101])), "r.yaml").workspaces) == 101
    assert len(parse_rule(rule.format("false", ", ".join(many)), "r.yaml").workspaces) == 102  # one query each
    with pytest.raises(RuleError, match=r"kqlwatch\.union must be true or false"):
        parse_rule(rule.format("'yes'", many[0]), "r.yaml")
    # The same limit when the workspaces come from KQLWATCH_WORKSPACE_ID: the rule fails, named, nothing is sent.
    seed = _union_seed(rules_dir)
    report = make_detector(KQLWATCH_WORKSPACE_ID=",".join(many)).run(only_due=False)
    (outcome,) = report.outcomes
    assert not outcome.ok and outcome.errors == [
        f"{seed}: kqlwatch.union: 102 workspaces in KQLWATCH_WORKSPACE_ID; one cross-workspace query reads at most "
        "101 (the first and 100 additional): split the list or drop kqlwatch.union to run one query per workspace"
    ]
    assert not [r for r in la.requests if "TriggerResults" in r.query] and not hook.cards()


def test_the_stand_in_refuses_unknown_and_too_many_additional_workspaces_as_the_service(
    la: LogAnalyticsStandIn, make_detector: MakeDetector, clock: Clock
) -> None:
    logs = make_detector().logs
    start, end = clock.now - timedelta(hours=1), clock.now
    la.add_workspaces(SECOND)
    assert logs.query(WORKSPACE, "EmailEvents | take 1", start, end, additional_workspaces=[SECOND]).rows == []
    unknown = "99999999-2222-4333-8444-555555555555"
    with pytest.raises(QueryError, match=rf"HTTP 400 .*Failed to resolve workspace '{unknown}'") as refused:
        logs.query(WORKSPACE, "EmailEvents", start, end, additional_workspaces=[SECOND, unknown])
    assert refused.value.status == 400
    many = [str(uuid.UUID(int=i + 1)) for i in range(101)]
    la.add_workspaces(*many)
    with pytest.raises(QueryError, match="references 102 workspaces; a query can reference at most 101"):
        logs.query(WORKSPACE, "EmailEvents", start, end, additional_workspaces=many)
    assert logs.query(WORKSPACE, "EmailEvents | take 1", start, end, additional_workspaces=many[:100]).rows == []


def test_a_union_rule_is_one_queue_message_and_its_worker_runs_the_union(
    la: LogAnalyticsStandIn,
    hook: WebhookReceiver,
    cli_env: dict[str, str],
    rules_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 14's fan-out: dispatch sends one message for the union (rule id, first workspace); the worker rebuilds
    the same unit and sends one query with the other workspace added."""
    from shared.runtime import fanout
    from shared.runtime.runmessage import parse

    now = datetime.now(timezone.utc)
    la.clock = lambda: datetime.now(timezone.utc)  # the queue functions run on the real clock
    monkeypatch.setenv("KQLWATCH_WORKSPACE_ID", f"{WORKSPACE},{SECOND}")
    _union_seed(rules_dir)
    first, second = email_row(now - timedelta(minutes=15)), email_row(now - timedelta(minutes=15))
    la.ingest("EmailEvents", [first], at=now - timedelta(minutes=10), workspace=WORKSPACE)
    la.ingest("EmailEvents", [second], at=now - timedelta(minutes=10), workspace=SECOND)
    [body] = fanout.dispatch()
    assert (parse(body).rule_id, parse(body).workspace_id) == (SEED_ID, WORKSPACE)
    outcome = fanout.run_message(body)
    assert outcome is not None and outcome.ok and outcome.delivered == 2, outcome
    assert [(r.workspace, r.workspaces) for r in la.requests if "TriggerResults" in r.query] == [(WORKSPACE, (SECOND,))]
    assert sorted(_hit_workspaces(hook)) == sorted(
        [(first["NetworkMessageId"], WORKSPACE), (second["NetworkMessageId"], SECOND)]
    )


def test_a_union_rule_whose_query_drops_tenantid_says_so(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock, rules_dir: Path
) -> None:
    seed = _union_seed(rules_dir)
    seed.write_text(
        seed.read_text().replace(
            "  | where DMARC in~ (TriggerResults) or SPF in~ (TriggerResults)\n",
            "  | where DMARC in~ (TriggerResults) or SPF in~ (TriggerResults)\n"
            "  | project NetworkMessageId, RecipientEmailAddress, Subject\n",
            1,
        )
    )
    la.ingest("EmailEvents", [email(clock)], at=clock.now - timedelta(minutes=10), workspace=WORKSPACE)
    la.add_workspaces(SECOND)
    report = make_detector(KQLWATCH_WORKSPACE_ID=f"{WORKSPACE},{SECOND}").run(only_due=False)
    (outcome,) = report.outcomes
    assert outcome.ok and outcome.new_hits == 1
    assert any("kqlwatch.union: the result has no TenantId column" in w for w in outcome.warnings), outcome.warnings
