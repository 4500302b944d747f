"""Issue 15, many workspaces: the seed rule runs against two workspaces (KQLWATCH_WORKSPACE_ID as a comma list, or
the rule's kqlwatch.workspaces), one query, window, state and dedupe ledger per workspace; each hit delivered once
per workspace; the card and its query link name the workspace."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from shared.errors import ConfigError, RuleError
from shared.rules.loader import parse_rule
from shared.runtime.settings import load_settings
from shared.runtime.units import state_id
from shared.standins.clock import Clock
from shared.standins.loganalytics import LogAnalyticsStandIn
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
