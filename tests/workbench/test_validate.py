"""`kqlwatch validate`: Sentinel schema checks, KQL checked by Microsoft's Kusto.Language, findings at file:line:col.

Node costs ~1.5 s to start, so the whole module runs it once: the targeted rule files, the repo's rules/ and the
corpus are validated together in one module fixture.
"""

from __future__ import annotations

import csv
import os
import re
import uuid
from pathlib import Path

import pytest
import yaml

from shared.errors import KqlwatchError
from shared.workbench import cli, validate
from shared.workbench.validate import (
    FileResult,
    Finding,
    Report,
    query_locator,
    render,
    technique_tactics,
    validate_paths,
)

ROOT = Path(__file__).resolve().parents[2]
SEED_RULE = ROOT / "rules" / "accepted-domain-dmarc-temperror.yaml"
CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "sentinel-email-rules"

QUERY = """\
  EmailEvents
  | where EmailDirection == 'Inbound'
  | project TimeGenerated, NetworkMessageId, RecipientEmailAddress, SenderFromAddress"""

TEMPLATE = """\
id: {id}
name: {name}
description: A rule written for the validator's tests.
severity: Medium
requiredDataConnectors:
  - connectorId: MicrosoftThreatProtection
    dataTypes:
      - EmailEvents
queryFrequency: {frequency}
queryPeriod: {period}
triggerOperator: gt
triggerThreshold: 0
tactics:
{tactics}
relevantTechniques:
{techniques}
query: |
{query}
entityMappings:
  - entityType: MailMessage
    fieldMappings:
      - identifier: NetworkMessageId
        columnName: NetworkMessageId
      - identifier: {identifier}
        columnName: RecipientEmailAddress
version: 1.0.0
kind: Scheduled
"""

HUNTING = """\
id: {id}
name: A hunting query
description: No schedule fields, so not a scheduled rule.
requiredDataConnectors:
  - connectorId: MicrosoftThreatProtection
    dataTypes:
      - EmailEvents
tactics:
  - InitialAccess
relevantTechniques:
  - T1566.002
query: |
  EmailEvents
  | summarize count() by SenderFromDomain
"""


def rule_text(**fields: str) -> str:
    values = {
        "id": str(uuid.uuid4()),
        "name": "Test rule",
        "frequency": "5m",
        "period": "1h",
        "tactics": "  - InitialAccess",
        "techniques": "  - T1566",
        "query": QUERY,
        "identifier": "Recipient",
    }
    values.update(fields)
    return TEMPLATE.format(**values)


DUPLICATE_ID = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"

CASES: dict[str, str] = {
    "good.yaml": rule_text(),
    "iso-durations.yaml": rule_text(frequency="PT1H", period="P2D"),
    "misspelt-column.yaml": rule_text(query=QUERY.replace("EmailDirection ==", "EmailDirecton ==")),
    "crlf-emoji.yaml": rule_text(
        query=QUERY.replace("'Inbound'", "'Inbound' and Subject has '\U0001f600' and Sbject != ''")
    ).replace("\n", "\r\n"),
    "unknown-table.yaml": rule_text(query=QUERY.replace("EmailEvents", "EmailEventz")),
    "bad-guid.yaml": rule_text(id="not-a-guid"),
    "frequency-over-period.yaml": rule_text(frequency="2h", period="1h"),
    "long-period.yaml": rule_text(frequency="30m", period="2d"),
    "out-of-range.yaml": rule_text(frequency="1m", period="15d"),
    "t1566-without-initialaccess.yaml": rule_text(tactics="  - Execution"),
    "dup-a.yaml": rule_text(id=DUPLICATE_ID),
    "dup-b.yaml": rule_text(id=DUPLICATE_ID.upper()),
    "unknown-function.yaml": rule_text(query=QUERY + "\n  | where foo_bar(SenderFromAddress)"),
    "sentinel-functions.yaml": rule_text(
        query="  let VIPs = _GetWatchlist('VIP') | project SearchKey;\n"
        "  _Im_NetworkSession(starttime=ago(1h)) | where DstIpAddr == '10.0.0.1' | take 1;\n"
        + QUERY
        + "\n  | where RecipientEmailAddress in (VIPs)"
    ),
    "syntax-error.yaml": rule_text(query=QUERY.replace("== 'Inbound'", "== ")),
    "wrong-type.yaml": rule_text(query=QUERY.replace("EmailDirection == 'Inbound'", 'AttachmentCount has "x"')),
    "missing-entity-column.yaml": rule_text(query=QUERY.replace(", RecipientEmailAddress", "")),
    "unknown-technique-and-tactic.yaml": rule_text(tactics="  - Initial access", techniques="  - T1999"),
    "bad-identifier.yaml": rule_text(identifier="RecipientAddress"),
    "hunting.yaml": HUNTING.format(id=str(uuid.uuid4())),
    "nrt.yaml": re.sub(r"(queryFrequency|queryPeriod|triggerOperator|triggerThreshold): .*\n", "", rule_text()).replace(
        "kind: Scheduled", "kind: NRT"
    ),
    "custom-details.yaml": rule_text()
    + "customDetails:\n"
    + "".join(f"  Detail{i}: NetworkMessageId\n" for i in range(21)),
    "unknown-kqlwatch-key.yaml": rule_text() + "kqlwatch:\n  dedupKey: [NetworkMessageId]\n",
    "numeric-version.yaml": rule_text().replace("version: 1.0.0", "version: 1.0"),
    "missing-fields.yaml": "id: 7c4f2a51-96e1-4bd4-8d77-55a0b6f1c2de\nname: No schedule\nkind: Scheduled\n"
    "query: EmailEvents | take 1\n",
    "malformed.yaml": "id: 5e0c1f3a-2b4d-4e6f-8a9b-0c1d2e3f4a5b\nname: Bad\nquery: |\nEmailEvents\n| take 1\n",
    "UPPER-CASE-EXTENSION.YAML": HUNTING.format(id=str(uuid.uuid4())),
    "exclusions.yaml": "exclusions: []\n",
    "tuning.exclusions.yaml": "exclusions: []\n",
}


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Report]:
    folder = tmp_path_factory.mktemp("rules")
    for name, text in CASES.items():
        (folder / name).write_text(text, encoding="utf-8", newline="")
    corpus = [CORPUS] if CORPUS.is_dir() else []
    report = validate_paths([folder, SEED_RULE.parent, *corpus])  # one Node process for every file
    assert not report.problems
    return folder, report


@pytest.fixture(scope="module")
def batch(everything: tuple[Path, Report]) -> tuple[Path, dict[str, FileResult]]:
    folder, report = everything
    return folder, {Path(r.path).name: r for r in report.files if not Path(r.path).is_relative_to(CORPUS)}


def findings(batch: tuple[Path, dict[str, FileResult]], name: str, code: str | None = None) -> list[Finding]:
    return [f for f in batch[1][name].findings if code is None or f.code == code]


def position_of(text: str, needle: str, after: str = "query:") -> tuple[int, int]:
    """1-based line and column of the first `needle` after `after` (by default the `query:` key)."""
    start = text.index(after)
    offset = text.index(needle, start)
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


# ----------------------------------------------------------------------------------------------- the repo and CLI


def test_the_repos_rules_validate_clean(
    batch: tuple[Path, dict[str, FileResult]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = batch[1][SEED_RULE.name]  # schema and KQL, checked in the batch
    assert (seed.kind, seed.findings) == ("scheduled", [])
    monkeypatch.chdir(ROOT)
    assert cli.main(["validate", "--list", "--no-kql"]) == 0  # default: rules/
    out = capsys.readouterr().out.splitlines()
    assert "rules/accepted-domain-dmarc-temperror.yaml: valid, scheduled rule; window: ingestion (row by row)" in out
    shipped = len(list(SEED_RULE.parent.glob("*.yaml")))  # the seed and the rule pack (issue 16)
    assert out[-1] == f"validate: {shipped} files, {shipped} valid, 0 with errors, 0 warnings ({shipped} scheduled)"


def test_cli_exits_1_and_prints_file_line_col(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "rule.yaml"
    path.write_text(rule_text(id="rule-1"), encoding="utf-8")
    assert cli.main(["validate", "--no-kql", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{path}:1:5: error: id 'rule-1' is not a GUID (e.g. a256f4ea-deec-4fcd-bdf3-63987638eed9) [id]"
    assert out[-1] == "validate: 1 file, 0 valid, 1 with errors, 0 warnings (1 scheduled)"
    assert cli.main(["validate", "--no-kql", str(tmp_path / "missing")]) == 1
    assert "missing:1:1: error: no such file or folder [file]" in capsys.readouterr().out


def test_files_are_found_recursively_and_tuning_files_skipped(batch: tuple[Path, dict[str, FileResult]]) -> None:
    # checked like any rule file: the detector loads *.YAML too (one case rule, shared.rules.loader.find_rule_files)
    assert batch[1]["UPPER-CASE-EXTENSION.YAML"].findings == []
    assert "exclusions.yaml" not in batch[1] and "tuning.exclusions.yaml" not in batch[1]
    assert len(batch[1]) == len(CASES) - 2 + len(list(SEED_RULE.parent.glob("*.yaml")))  # and the shipped rules


# ---------------------------------------------------------------------------------------------- schema checks


def test_a_good_rule_and_a_hunting_query_are_valid(batch: tuple[Path, dict[str, FileResult]]) -> None:
    assert findings(batch, "good.yaml") == []
    assert findings(batch, "iso-durations.yaml") == []  # PT1H / P2D
    hunting = batch[1]["hunting.yaml"]
    assert (hunting.kind, hunting.findings) == ("hunting", [])  # T1566.002 inherits T1566's tactic
    assert hunting.verdict() == "valid, hunting query"


def test_nrt_rule_needs_no_schedule_fields(batch: tuple[Path, dict[str, FileResult]]) -> None:
    result = batch[1]["nrt.yaml"]
    assert result.kind == "nrt" and result.errors == 0
    assert [f.code for f in result.findings] == ["nrt"]


def test_custom_details_version_and_the_kqlwatch_section(batch: tuple[Path, dict[str, FileResult]]) -> None:
    [details] = findings(batch, "custom-details.yaml")
    assert (details.code, details.message) == ("custom-details", "customDetails has 21 entries; Sentinel allows 20")
    [version] = findings(batch, "numeric-version.yaml")
    assert version.code == "version" and version.message.startswith("version 1.0 must be text in the form X.Y.Z")
    [extension] = findings(batch, "unknown-kqlwatch-key.yaml")
    assert extension.code == "kqlwatch" and "unknown key(s) under 'kqlwatch': dedupKey" in extension.message


def test_bad_guid(batch: tuple[Path, dict[str, FileResult]]) -> None:
    [f] = findings(batch, "bad-guid.yaml")
    assert (f.line, f.col, f.severity, f.code) == (1, 5, "error", "id")


def test_frequency_longer_than_period(batch: tuple[Path, dict[str, FileResult]]) -> None:
    [f] = findings(batch, "frequency-over-period.yaml")
    assert (f.line, f.code) == (10, "schedule")  # at queryPeriod
    assert "queryPeriod 1h is shorter than queryFrequency 2h" in f.message


def test_a_two_day_period_needs_an_hourly_frequency(batch: tuple[Path, dict[str, FileResult]]) -> None:
    [f] = findings(batch, "long-period.yaml")
    assert (f.line, f.code) == (9, "schedule")  # at queryFrequency
    assert "needs a queryFrequency of 1h or more, not 30m" in f.message


def test_durations_outside_sentinels_range(batch: tuple[Path, dict[str, FileResult]]) -> None:
    messages = {f.message for f in findings(batch, "out-of-range.yaml", "duration")}
    assert messages == {
        "queryFrequency 1m is outside Sentinel's range of 5m to 14d",
        "queryPeriod 15d is outside Sentinel's range of 5m to 14d",
    }


def test_technique_needs_its_tactic(batch: tuple[Path, dict[str, FileResult]]) -> None:
    [f] = findings(batch, "t1566-without-initialaccess.yaml")
    assert (f.line, f.col, f.severity, f.code) == (16, 5, "error", "technique-tactic")
    assert f.message == "technique T1566 belongs to InitialAccess; add it to tactics"


def test_unknown_tactic_and_technique(batch: tuple[Path, dict[str, FileResult]]) -> None:
    [tactic] = findings(batch, "unknown-technique-and-tactic.yaml", "tactic")
    assert (tactic.severity, tactic.message) == ("error", "unknown tactic 'Initial access': Sentinel spells it "
                                                          "'InitialAccess'")  # fmt: skip
    [technique] = findings(batch, "unknown-technique-and-tactic.yaml", "technique")
    assert technique.severity == "warning" and "T1999 is not in kqlwatch's ATT&CK table" in technique.message


def test_duplicate_ids_across_files(batch: tuple[Path, dict[str, FileResult]]) -> None:
    assert findings(batch, "dup-a.yaml") == []
    [f] = findings(batch, "dup-b.yaml")
    assert (f.line, f.col, f.code) == (1, 5, "duplicate-id")
    assert f.message == f"duplicate id {DUPLICATE_ID.upper()} (first used in {batch[0] / 'dup-a.yaml'})"


def test_entity_mapping_identifier(batch: tuple[Path, dict[str, FileResult]]) -> None:
    [f] = findings(batch, "bad-identifier.yaml")
    assert (f.line, f.col, f.code) == (*position_of(CASES["bad-identifier.yaml"], "RecipientAddress"), "entity")
    assert (f.line, f.col) == (26, 21)
    assert f.message.startswith("identifier 'RecipientAddress' is not valid for entity type MailMessage (valid: ")


def test_entity_column_must_be_in_the_query_output(batch: tuple[Path, dict[str, FileResult]]) -> None:
    [f] = findings(batch, "missing-entity-column.yaml")
    text = CASES["missing-entity-column.yaml"]
    assert (f.line, f.col, f.code) == (*position_of(text, "RecipientEmailAddress", "entityMappings"), "column")
    assert f.message.startswith("entity mapping column 'RecipientEmailAddress' is not in the query's output")


def test_required_fields_of_a_scheduled_rule(batch: tuple[Path, dict[str, FileResult]]) -> None:
    missing = {re.match(r"missing required field '(\w+)'", f.message)[1]  # type: ignore[index]
               for f in findings(batch, "missing-fields.yaml", "required")}  # fmt: skip
    assert missing == set(validate.SCHEDULED_REQUIRED) - {"id", "name", "query", "kind"}


def test_malformed_yaml_is_reported_with_its_line(batch: tuple[Path, dict[str, FileResult]]) -> None:
    [f] = findings(batch, "malformed.yaml")
    assert (f.line, f.col, f.severity, f.code) == (5, 1, "error", "yaml")  # the unindented query's 2nd line
    assert f.message == "invalid YAML: could not find expected ':'"
    assert batch[1]["malformed.yaml"].kind == "unreadable"


# ------------------------------------------------------------------------------------------------- the KQL check


def test_misspelt_column_points_at_its_line_and_column(batch: tuple[Path, dict[str, FileResult]]) -> None:
    [f] = findings(batch, "misspelt-column.yaml")
    assert (f.severity, f.code) == ("error", "KS142")
    assert "'EmailDirecton' does not refer to any known column" in f.message
    assert (f.line, f.col) == position_of(CASES["misspelt-column.yaml"], "EmailDirecton") == (19, 11)
    assert str(f).startswith(f"{batch[0] / 'misspelt-column.yaml'}:19:11: error: ")


def test_positions_survive_crlf_and_characters_outside_the_bmp(batch: tuple[Path, dict[str, FileResult]]) -> None:
    [f] = findings(batch, "crlf-emoji.yaml")  # Kusto counts UTF-16 units; the emoji is one column
    assert (f.code, f.line) == ("KS142", 19)
    line = CASES["crlf-emoji.yaml"].split("\r\n")[18]
    assert f.col == line.index("Sbject") + 1


def test_unknown_table_is_one_warning_not_a_crash(batch: tuple[Path, dict[str, FileResult]]) -> None:
    [f] = findings(batch, "unknown-table.yaml")
    assert (f.severity, f.code) == ("warning", "no-schema")
    assert f.message == ("table EmailEventz has no schema in kqlwatch; its columns were not checked "
                         "(did you mean EmailEvents?)")  # fmt: skip
    assert (f.line, f.col) == (18, 3)
    assert batch[1]["unknown-table.yaml"].errors == 0  # its columns (Foo, ...) are not reported


def test_unknown_function(batch: tuple[Path, dict[str, FileResult]]) -> None:
    [f] = findings(batch, "unknown-function.yaml")
    assert (f.severity, f.code, f.line, f.col) == ("error", "KS211", 21, 11)
    assert "'foo_bar' does not refer to any known function" in f.message


def test_sentinel_watchlists_and_asim_parsers(batch: tuple[Path, dict[str, FileResult]]) -> None:
    [f] = findings(batch, "sentinel-functions.yaml")  # _GetWatchlist is known; an ASIM parser is not checked
    assert (f.severity, f.code, f.line, f.col) == ("warning", "no-schema", 19, 3)
    assert f.message == "ASIM parser _Im_NetworkSession has no definition in kqlwatch; its result was not checked"


def test_syntax_error(batch: tuple[Path, dict[str, FileResult]]) -> None:
    [f] = findings(batch, "syntax-error.yaml")
    assert (f.severity, f.code, f.message) == ("error", "KS006", "Missing expression")
    assert f.line == 19


def test_type_error(batch: tuple[Path, dict[str, FileResult]]) -> None:
    # Kusto.Language does not flag `AttachmentCount == "x"` (int == string); it does flag `has` on an int.
    [f] = findings(batch, "wrong-type.yaml")
    assert (f.severity, f.code, f.line, f.col) == ("error", "KS106", 19, 27)
    assert f.message == "The operator 'has' is not defined for the operand types int and string."


def test_node_or_package_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(validate.kusto, "KUSTO_PACKAGE", tmp_path / "missing")
    with pytest.raises(KqlwatchError, match="run npm ci"):
        validate.check_kql(["EmailEvents"])
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(KqlwatchError, match="node not found"):
        validate.check_kql(["EmailEvents"])


# ------------------------------------------------------------------------------- query offsets -> file positions


@pytest.mark.parametrize(
    "text",
    [
        "id: x\nquery: |\n  EmailEvents\n\n    | where Subject has 'x'\n  | take 1\nname: y\n",
        "query: |-  # a comment\n    EmailEvents\n    | where Subject has 'x'\n",
        "query: |+\n  EmailEvents\n  | where Subject has 'x'\n\n\nname: y\n",
        "query: |2\n    EmailEvents\n   | where Subject has 'x'\n",
        "query: >\n  EmailEvents\n  | take 1\n\n  | where Subject has 'x'\n    | extend Extra = 1\n",
        "query: >-\n  EmailEvents | take 1\n  | where Subject has 'x'\n",
        "query: EmailEvents | where Subject has 'x'\n",
        "query: 'EmailEvents | where Subject has \"x\"'\n",
        "query: \"EmailEvents | where Subject has 'x'\"\n",
        "\n\nquery:   |\n\n\n      EmailEvents\n      | where Subject has 'x'\n",
    ],
)
def test_query_offsets_map_to_the_file(text: str) -> None:
    root = yaml.compose(text)
    assert isinstance(root, yaml.MappingNode)
    key, node = next((k, v) for k, v in root.value if k.value == "query")
    value = yaml.safe_load(text)["query"]
    locate = query_locator(text, node, value, key.start_mark.column)
    for needle in ("Subject", "EmailEvents"):
        assert locate(value.index(needle)) == position_of(text, needle), needle


def test_escaped_scalars_fall_back_to_the_scalar_start() -> None:
    text = "name: n\nquery: \"EmailEvents\\n| where Subject has 'x'\"\n"
    root = yaml.compose(text)
    assert isinstance(root, yaml.MappingNode)
    key, node = root.value[1]
    value = yaml.safe_load(text)["query"]
    assert query_locator(text, node, value, key.start_mark.column)(value.index("Subject")) == (2, 8)


def test_technique_table_covers_the_common_email_and_identity_techniques() -> None:
    table = technique_tactics()
    expected = {
        "T1566": "InitialAccess", "T1078": "InitialAccess", "T1114": "Collection", "T1534": "LateralMovement",
        "T1204": "Execution", "T1598": "Reconnaissance", "T1586": "ResourceDevelopment", "T1110": "CredentialAccess",
        "T1621": "CredentialAccess", "T1528": "CredentialAccess", "T1539": "CredentialAccess",
        "T1564": "DefenseEvasion", "T1656": "DefenseEvasion", "T1098": "PrivilegeEscalation", "T1137": "Persistence",
        "T1020": "Exfiltration", "T1567": "Exfiltration", "T1071": "CommandAndControl", "T1189": "InitialAccess",
        "T1657": "Impact",
    }  # fmt: skip
    for technique, tactic in expected.items():
        assert tactic in table[technique], technique
    assert set(validate.TACTICS) >= {t for tactics in table.values() for t in tactics}


# ---------------------------------------------------------------------------------------------------- the corpus


def test_the_corpus_loads_and_validates(everything: tuple[Path, Report]) -> None:
    if not CORPUS.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"the rule corpus is missing: {CORPUS} (CI expects a copy of shared/ beside the clone)")
        pytest.skip(f"no rule corpus at {CORPUS}")
    with (CORPUS / "INDEX.tsv").open(encoding="utf-8") as index:
        indexed = {CORPUS / row["local_path"] for row in csv.DictReader(index, delimiter="\t")}
    files = {p for p in CORPUS.rglob("*") if p.suffix.lower() in (".yaml", ".yml")}
    assert files == indexed and len(files) > 100

    report = Report([r for r in everything[1].files if Path(r.path).is_relative_to(CORPUS)], [])
    out = "\n".join(render(report, list_files=True)) + "\n"  # what `kqlwatch validate --list CORPUS` prints
    assert not report.ok  # the malformed file at least: exit code 1
    for path in files:
        assert f"\n{path}: " in f"\n{out}", path
    malformed = CORPUS / "legacy-email-queries-hunting" / "MDO_URLClickedinEmail.YAML"
    problem = "invalid YAML: expected <block end>, but found '<block sequence start>'"
    assert f"{malformed}:8:2: error: {problem} [yaml]" in out
    # (no "rename .YAML" warning: the detector loads *.YAML like *.yaml, so validate checks it like one)
    assert f"{malformed}: invalid, unreadable (1 error)" in out
    summary = out.splitlines()[-1]
    assert summary.startswith(f"validate: {len(files)} files, ")
    assert "1 unreadable" in summary
    # Real upstream defects the checks find.
    assert "identifier 'IpAddress' is not valid for entity type IP" in out
    assert "The function 'replace' expects 3 arguments. [KS119]" in out


def test_validate_accepts_kqlwatch_union_and_names_a_bad_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 15: kqlwatch.union (one cross-workspace query) is a known key; a value that is not a boolean is named."""
    path = tmp_path / "seed.yaml"
    path.write_text(SEED_RULE.read_text().replace("kqlwatch:\n", "kqlwatch:\n  union: true\n", 1))
    assert cli.main(["validate", "--no-kql", str(path)]) == 0, capsys.readouterr().out
    capsys.readouterr()
    path.write_text(SEED_RULE.read_text().replace("kqlwatch:\n", "kqlwatch:\n  union: sometimes\n", 1))
    assert cli.main(["validate", "--no-kql", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:" in out and "kqlwatch.union must be true or false, not 'sometimes'" in out
