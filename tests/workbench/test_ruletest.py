"""`kqlwatch test`: the rules' own test cases, their output, and how malformed cases are reported."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.workbench.cli import main
from shared.workbench.ruleexpect import values_equal
from tests.conftest import ROOT, SEED_RULE

HIT = {
    "EmailDirection": "Inbound",
    "SenderMailFromDomain": "contoso.com",
    "AuthenticationDetails": '{"SPF":"pass","DKIM":"none","DMARC":"temperror","CompAuth":"fail"}',
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["test", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out


def seed_with_tests(tmp_path: Path, tests: Any, name: str = "seed.yaml", **changes: Any) -> Path:
    """The seed rule with these test cases instead of its own."""
    doc = yaml.safe_load(SEED_RULE.read_text(encoding="utf-8"))
    doc["kqlwatch"]["tests"] = tests
    if "query" in changes:  # another query may have no SenderDomains for the seed's DNS evidence (issue 16)
        doc["kqlwatch"].pop("enrich", None)
    doc.update(changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def test_the_shipped_rules_pass_their_tests(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("KQLWATCH_RULES_DIR", raising=False)
    code, out = run(capsys)
    lines = out.splitlines()
    match = re.fullmatch(r"(\d+) passed, 0 failed", lines[-1])
    assert code == 0 and match, out
    assert int(match.group(1)) >= 20
    seed = "rules/accepted-domain-dmarc-temperror.yaml::"
    for name in (
        "FP scheduled job alerts until excluded",
        "FP SaaS senders (ServiceNow, Zendesk) alert until excluded",
        "domains and results match case-insensitively (in~) - Contoso.com and TempError alert",
        "malformed or empty AuthenticationDetails - no alert, no error",
        "look-alike domains do not alert",
    ):
        assert f"PASSED {seed}{name}" in lines


def test_a_wrong_expectation_fails_with_a_diff(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = seed_with_tests(
        tmp_path,
        [
            {
                "name": "the scheduled job does not alert",  # wrong: it does, until excluded
                "data": {
                    "EmailEvents": [
                        {
                            **HIT,
                            "NetworkMessageId": "fp-a",
                            "RecipientEmailAddress": "ops@contoso.com",
                            "SenderMailFromAddress": "noreply-scheduler@contoso.com",
                        }
                    ]
                },
                "expect": {"count": 0},
            },
        ],
    )
    code, out = run(capsys, str(path))
    assert code == 1
    assert out.splitlines() == [
        f"FAILED {path}::the scheduled job does not alert",
        "    expected 0 rows, got 1:",
        '    + {NetworkMessageId: "fp-a", RecipientEmailAddress: "ops@contoso.com"}',
        "0 passed, 1 failed",
    ]


def test_rows_expectations_diff_missing_and_unexpected_rows(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rows = [{**HIT, "NetworkMessageId": "m1"}, {**HIT, "NetworkMessageId": "m2"}]
    path = seed_with_tests(
        tmp_path,
        [
            {
                "name": "exact",
                "data": {"EmailEvents": rows},
                "expect": {"rows": [{"NetworkMessageId": "m1", "DMARC": "temperror"}, {"NetworkMessageId": "m2"}]},
            },
            {
                "name": "partial",
                "data": {"EmailEvents": rows},
                "expect": {"rows": [{"NetworkMessageId": "m2"}], "partial": True},
            },
            {
                "name": "wrong",
                "data": {"EmailEvents": rows},
                "expect": {"rows": [{"NetworkMessageId": "m1", "DMARC": "permerror"}]},
            },
            {
                "name": "ambiguous",
                "data": {"EmailEvents": rows},
                "expect": {"rows": [{"DMARC": "temperror"}], "partial": True},
            },
            {"name": "no such column", "data": {"EmailEvents": rows}, "expect": {"rows": [{"Verdict": "bad"}]}},
        ],
    )
    code, out = run(capsys, str(path))
    assert code == 1
    assert f"PASSED {path}::exact" in out and f"PASSED {path}::partial" in out
    wrong = out.split(f"FAILED {path}::wrong\n")[1].split("FAILED")[0]
    assert '- {NetworkMessageId: "m1", DMARC: "permerror"}   expected row 1: no result row matches' in wrong
    assert 'closest result row differs in DMARC: expected "permerror", got "temperror"' in wrong
    assert (
        '+ {NetworkMessageId: "m1", DMARC: "temperror", RecipientEmailAddress: ""}   result row not expected' in wrong
    )
    assert (
        '+ {NetworkMessageId: "m2", DMARC: "temperror", RecipientEmailAddress: ""}   result row not expected' in wrong
    )
    assert "expected row 1: matches 2 result rows (name more columns to tell them apart)" in out
    assert "column(s) Verdict not in the result" in out
    assert out.splitlines()[-1] == "2 passed, 3 failed"


def test_typed_expectations_and_data(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Datetimes (YAML timestamps or text), dynamic values, numbers and booleans; `now` fixes ago()."""
    query = (
        "EmailEvents | where TimeGenerated > ago(1h) "
        "| project NetworkMessageId, TimeGenerated, To, AttachmentCount, IsFirstContact, Subject"
    )
    path = tmp_path / "typed.yaml"
    path.write_text(
        f"""\
id: 22222222-3333-4444-8555-666666666666
name: typed
query: "{query}"
kqlwatch:
  tests:
    - name: typed values
      now: 2026-11-20T12:00:00Z
      data:
        EmailEvents:
          - {{NetworkMessageId: recent, TimeGenerated: 2026-11-20T11:30:00Z, To: [a@contoso.com, b@contoso.com],
             AttachmentCount: 2, IsFirstContact: true}}
          - {{NetworkMessageId: old, TimeGenerated: "2026-11-20T10:59:59.9999999Z"}}
      expect:
        rows:
          - {{NetworkMessageId: recent, TimeGenerated: "2026-11-20T11:30:00Z", To: [a@contoso.com, b@contoso.com],
             AttachmentCount: 2, IsFirstContact: true, Subject: ""}}
    - name: same, written as YAML timestamps and JSON text
      now: "2026-11-20 12:00"
      data:
        EmailEvents:
          - {{NetworkMessageId: recent, TimeGenerated: "2026-11-20T11:30:00.000Z", To: '["a@contoso.com"]'}}
      expect:
        rows:
          - {{TimeGenerated: 2026-11-20T11:30:00Z, To: '["a@contoso.com"]', AttachmentCount: null}}
""",
        encoding="utf-8",
    )
    code, out = run(capsys, str(path))
    assert code == 0, out
    assert out.splitlines()[-1] == "2 passed, 0 failed"


def test_data_files_relative_to_the_rule(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mail.csv").write_text(
        "NetworkMessageId,EmailDirection,SenderMailFromDomain,AuthenticationDetails,TimeGenerated [UTC]\n"
        'csv-1,Inbound,contoso.com,"{""SPF"":""temperror""}","11/20/2026, 8:15:02.123 AM"\n'
        'csv-2,Outbound,contoso.com,"{""SPF"":""temperror""}","11/20/2026, 8:16:02.123 AM"\n',
        encoding="utf-8",
    )
    path = seed_with_tests(
        tmp_path,
        [
            {
                "name": "from a CSV export",
                "dataFile": "data/mail.csv",
                "table": "EmailEvents",
                "expect": {"rows": [{"NetworkMessageId": "csv-1", "TimeGenerated": "2026-11-20T08:15:02.123Z"}]},
            },
            {
                "name": "the sample day",
                "dataFile": str(ROOT / "samples" / "EmailEvents.jsonl"),
                "table": "EmailEvents",
                "params": {"TriggerResults": ["temperror", "permerror"], "SenderDomains": "contoso.com"},
                "expect": {"count": 58},
            },  # 63 with both domains, 41 with temperror only (samples/README.md)
        ],
    )
    code, out = run(capsys, str(path))
    assert code == 0, out


def test_an_engine_refusal_fails_the_case_naming_the_construct(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = seed_with_tests(
        tmp_path,
        [{"name": "uses ipv4_is_in_range", "data": {"EmailEvents": []}, "expect": {"count": 0}}],
        query='EmailEvents | where ipv4_is_in_range(SenderIPv4, "10.0.0.0/8")',
    )
    code, out = run(capsys, str(path))
    assert code == 1
    assert f"FAILED {path}::uses ipv4_is_in_range" in out
    assert "the query failed: the offline engine does not support this query" in out and "ipv4_is_in_range" in out


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        (
            {"name": "c", "data": {"EmailEvents": [{"SenderMailFromDomian": "contoso.com"}]}, "expect": {"count": 0}},
            "data: EmailEvents[0]: EmailEvents has no column 'SenderMailFromDomian'",
        ),
        ({"name": "c", "data": {"EmailEvents": []}, "expect": {"count": 0}, "param": {}}, "unknown key(s) param"),
        ({"name": "c", "data": {"EmailEvents": []}}, "'expect' is missing"),
        ({"name": "c", "data": {"EmailEvents": []}, "expect": {"count": 1, "rows": []}}, "exactly one of"),
        ({"name": "c", "data": {"EmailEvents": []}, "expect": {"count": -1}}, "whole number >= 0"),
        ({"name": "c", "data": {"EmailEvents": []}, "expect": {"rows": ["m1"]}}, "list of non-empty mappings"),
        ({"name": "c", "data": {"EmailEvents": []}, "expect": {"count": 0, "partial": True}}, "goes with expect.rows"),
        ({"name": "c", "expect": {"count": 0}}, "give 'data'"),
        ({"name": "c", "data": [{"EmailEvents": []}], "expect": {"count": 0}}, "'data' must map table names"),
        (
            {"name": "c", "data": {"EmailEvents": [["a"]]}, "expect": {"count": 0}},
            "data.EmailEvents[0] is not a mapping",
        ),
        ({"name": "c", "dataFile": "missing.jsonl", "table": "EmailEvents", "expect": {"count": 0}}, "no such file"),
        ({"name": "c", "dataFile": "missing.jsonl", "expect": {"count": 0}}, "needs 'table'"),
        (
            {"name": "c", "data": {"EmailEvents": []}, "params": {"SenderDomain": "x"}, "expect": {"count": 0}},
            "params.SenderDomain: rule 'Message from an Accepted Domain with DMARC TempError' has no top-level",
        ),
        (
            {"name": "c", "data": {"EmailEvents": []}, "params": {"TriggerResults": {"a": 1}}, "expect": {"count": 0}},
            "a parameter value must be",
        ),
        ({"name": "c", "data": {"Custom_CL": []}, "expect": {"count": 0}}, "Custom_CL has no schema"),
        ({"name": "c", "data": {"EmailEvents": []}, "now": "soon", "expect": {"count": 0}}, "'now' 'soon'"),
    ],
)
def test_a_malformed_case_is_a_failure_naming_file_and_case(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, case: dict[str, Any], reason: str
) -> None:
    path = seed_with_tests(tmp_path, [case, {"name": "fine", "data": {"EmailEvents": []}, "expect": {"count": 0}}])
    code, out = run(capsys, str(path))
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"FAILED {path}::c"
    assert lines[1].startswith("    malformed test case: ") and reason in lines[1], lines[1]
    assert lines[2] == f"PASSED {path}::fine", "the other cases still run"
    assert lines[-1] == "1 passed, 1 failed"


def test_unnamed_duplicate_and_non_list_cases(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ok = {"data": {"EmailEvents": []}, "expect": {"count": 0}}
    path = seed_with_tests(tmp_path, [ok, {"name": "twice", **ok}, {"name": "twice", **ok}, "just text"])
    code, out = run(capsys, str(path))
    assert code == 1
    assert f"FAILED {path}::case #1\n    malformed test case: 'name' is missing or empty" in out
    assert f"PASSED {path}::twice\nFAILED {path}::twice\n    malformed test case: another case is named 'twice'" in out
    assert f"FAILED {path}::case #4\n    malformed test case: a test case must be a mapping" in out
    other = seed_with_tests(tmp_path, {"name": "not a list"}, name="other.yaml")
    code, out = run(capsys, str(other))
    assert code == 1 and "malformed: kqlwatch.tests must be a list of test cases" in out


def test_files_without_tests_exclusions_and_broken_rules(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    doc = yaml.safe_load(SEED_RULE.read_text(encoding="utf-8"))
    del doc["kqlwatch"]["tests"]
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    (tmp_path / "exclusions.yaml").write_text("exclusions: []\n", encoding="utf-8")
    (tmp_path / "seed.exclusions.yml").write_text("exclusions: []\n", encoding="utf-8")
    code, out = run(capsys, str(tmp_path))
    assert code == 0
    assert out.splitlines() == [f"no tests {tmp_path / 'plain.yaml'}", "0 passed, 0 failed"]
    (tmp_path / "broken.yaml").write_text("id: [\n", encoding="utf-8")
    code, out = run(capsys, str(tmp_path))
    assert code == 1 and f"FAILED {tmp_path / 'broken.yaml'}\n    the rule file cannot be loaded: invalid YAML" in out


def test_selecting_cases(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ok = {"data": {"EmailEvents": []}, "expect": {"count": 0}}
    path = seed_with_tests(tmp_path, [{"name": "alpha one", **ok}, {"name": "beta", **ok}, {"name": "alpha two", **ok}])
    code, out = run(capsys, f"{path}::beta")
    assert code == 0 and out.splitlines() == [f"PASSED {path}::beta", "1 passed, 0 failed"]
    code, out = run(capsys, str(path), "-k", "alpha")
    assert code == 0 and out.splitlines()[-1] == "2 passed, 0 failed"
    code, out = run(capsys, f"{path}::gamma")
    assert code == 1 and "no test case with this name" in out
    code, out = run(capsys, str(tmp_path / "nope.yaml"))
    assert code == 2


@pytest.mark.parametrize(
    ("expected", "actual", "kind", "equal"),
    [
        ("temperror", "temperror", "string", True),
        ("TempError", "temperror", "string", False),  # == is case-sensitive
        (None, "", "string", True),
        (123, "123", "string", False),
        (2, 2, "int", True),
        (2.0, 2, "long", True),
        (True, 1, "long", False),
        (True, True, "bool", True),
        ("true", True, "bool", True),
        (1, True, "bool", False),
        ("2026-11-20T08:00:00Z", datetime(2026, 11, 20, 8, tzinfo=timezone.utc), "datetime", True),
        (datetime(2026, 11, 20, 8), datetime(2026, 11, 20, 8, tzinfo=timezone.utc), "datetime", True),
        ("2026-11-20", datetime(2026, 11, 20, tzinfo=timezone.utc), "datetime", True),
        ("not a time", datetime(2026, 11, 20, tzinfo=timezone.utc), "datetime", False),
        (["a"], '["a"]', "dynamic", True),
        ({"k": 1}, '{"k":1}', "dynamic", True),
        ('{"k": 1}', '{"k":1}', "dynamic", True),
        (None, None, "dynamic", True),
    ],
)
def test_values_equal(expected: Any, actual: Any, kind: str, equal: bool) -> None:
    assert values_equal(expected, actual, kind) is equal


def test_exclusion_files_beside_the_rule_apply_to_its_cases(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "exclusions.yaml").write_text(
        f"""\
exclusions:
  - rule: {yaml.safe_load(SEED_RULE.read_text())["id"]}
    name: scheduler
    reason: test
    owner: soc@contoso.com
    expires: 2027-01-31
    match:
      - {{column: SenderMailFromAddress, operator: equals, values: [noreply-scheduler@contoso.com]}}
""",
        encoding="utf-8",
    )
    row = {**HIT, "NetworkMessageId": "fp-a", "SenderMailFromAddress": "noreply-scheduler@contoso.com"}
    seed_with_tests(
        tmp_path,
        [
            {"name": "excluded", "now": "2027-01-31T23:00:00Z", "data": {"EmailEvents": [row]}, "expect": {"count": 0}},
            {"name": "expired", "now": "2027-02-01T00:00:00Z", "data": {"EmailEvents": [row]}, "expect": {"count": 1}},
        ],
    )
    code, out = run(capsys, str(tmp_path))
    assert code == 0, out
    assert out.splitlines()[-1] == "2 passed, 0 failed"
