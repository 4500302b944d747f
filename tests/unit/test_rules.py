"""Rule files: the seed rule, Sentinel defaults, and clear errors for bad files."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from shared.errors import RuleError
from shared.rules.durations import parse_duration
from shared.rules.loader import load_files, load_rule, load_rules, parse_rule, trigger_met
from tests.paths import SEED_RULE

MINIMAL = "id: 6f0a1f36-3c8c-4a3f-9d0c-2f3a1d2b3c4d\nname: Minimal\nquery: EmailEvents | take 1\n"


def test_seed_rule_is_the_specified_sentinel_rule() -> None:
    rule = load_rule(SEED_RULE)
    assert rule.id == "a256f4ea-deec-4fcd-bdf3-63987638eed9"
    assert rule.name == "Message from an Accepted Domain with DMARC TempError"
    assert (rule.severity, rule.tactics, rule.techniques, rule.version) == (
        "Medium",
        ("InitialAccess",),
        ("T1566",),
        "1.0.0",
    )
    assert "let SenderDomains = pack_array('contoso.com', 'fabrikam.fr');" in rule.query
    assert "let TriggerResults = pack_array('temperror');" in rule.query
    assert rule.dedupe_key == ("NetworkMessageId", "RecipientEmailAddress")
    text = SEED_RULE.read_text()
    assert "connectorId: MicrosoftThreatProtection" in text and "- EmailEvents" in text


def test_a_rule_without_kqlwatch_keys_runs_with_sentinel_defaults() -> None:
    rule = parse_rule(MINIMAL, "minimal.yaml")
    assert (rule.query_frequency, rule.query_period, rule.severity) == (
        timedelta(minutes=5),
        timedelta(hours=1),
        "Medium",
    )
    assert rule.dedupe_key == () and rule.trigger_operator == "gt" and rule.trigger_threshold == 0


@pytest.mark.parametrize("text", ["1h", "PT1H", "60m", "3600s"])
def test_durations_in_short_and_iso_form(text: str) -> None:
    assert parse_duration(text) == timedelta(hours=1)
    assert parse_duration("P14D") == parse_duration("14d") == timedelta(days=14)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("severity: Critical\n", "severity 'Critical' is not one of"),
        ("queryFrequency: 2h\nqueryPeriod: 1h\n", "queryPeriod must be at least queryFrequency"),
        ("queryFrequency: soon\n", "queryFrequency: 'soon' is not a duration"),
        ("triggerOperator: gte\n", "triggerOperator 'gte'"),
        ("triggerThreshold: -1\n", "triggerThreshold must be a whole number"),
        ("kqlwatch:\n  dedupKey: [A]\n", "unknown key(s) under 'kqlwatch': dedupKey"),
        ("kqlwatch:\n  dedupeKey: 5\n", "kqlwatch.dedupeKey must be a list of names"),
        ("entityMappings: [{entityType: IP}]\n", "fieldMappings"),
    ],
)
def test_bad_fields_are_reported_with_the_file(extra: str, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rule(MINIMAL + extra, "rules/x.yaml")
    # the line of the field at fault is named too (issue 10)
    assert re.match(r"rules/x\.yaml:\d+: ", str(caught.value)) and message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id: [oops\n", "rules/x.yaml:2: invalid YAML"),
        ("- a list\n", "must be a YAML mapping"),
        ("name: x\nquery: T\n", "missing required field 'id'"),
        ("id: not-a-guid\nname: x\nquery: T\n", "is not a GUID"),
        ("id: 6f0a1f36-3c8c-4a3f-9d0c-2f3a1d2b3c4d\nname: x\nquery: {a: 1}\n", "'query' must be text"),
        ("id: 6f0a1f36-3c8c-4a3f-9d0c-2f3a1d2b3c4d\nname: x\nquery: '  '\n", "'query' is empty"),
    ],
)
def test_unusable_files_are_reported(text: str, message: str) -> None:
    with pytest.raises(RuleError, match=None) as caught:
        parse_rule(text, "rules/x.yaml")
    assert message in str(caught.value)


def test_one_bad_file_never_hides_the_others(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(MINIMAL)
    (tmp_path / "b.yaml").write_text(MINIMAL.replace("Minimal", "Copy"))  # same id
    (tmp_path / "c.yml").write_text(": : :\n")
    (tmp_path / "d.yaml").write_bytes(b"\xff\xfe not utf-8")
    (tmp_path / "huge.yaml").write_text(MINIMAL + "#" * 1_100_000)
    (tmp_path / "long-query.yaml").write_text(MINIMAL.replace("EmailEvents | take 1", "T" + " | take 1" * 9000))
    result = load_files(sorted(tmp_path.iterdir()))
    assert [r.name for r in result.rules] == ["Minimal"]
    reasons = {Path(e.path).name: e.reason for e in result.errors}
    assert "duplicate rule id" in reasons["b.yaml"]
    assert "invalid YAML" in reasons["c.yml"]
    assert "not UTF-8" in reasons["d.yaml"]
    assert "limit is 1,000,000" in reasons["huge.yaml"]
    assert "query is 81,001 characters; the limit is 64,000" in reasons["long-query.yaml"]


def test_missing_rules_directory_is_reported(tmp_path: Path) -> None:
    result = load_rules(tmp_path / "nope")
    assert result.rules == [] and "does not exist" in str(result.errors[0])


@pytest.mark.parametrize(
    ("op", "threshold", "count", "met"),
    [
        ("gt", 0, 1, True),
        ("gt", 2, 2, False),
        ("lt", 5, 3, True),
        ("eq", 3, 3, True),
        ("ne", 3, 3, False),
        ("GreaterThan", 0, 1, True),
    ],
)
def test_trigger_operator_and_threshold(op: str, threshold: int, count: int, met: bool) -> None:
    rule = parse_rule(MINIMAL + f"triggerOperator: {op}\ntriggerThreshold: {threshold}\n", "x")
    assert trigger_met(rule, count) is met
