"""hunt loads only the columns its query can read (issue 17: parsing and typing 29 columns of a million-row
export was most of the load), and every column whenever the query may read or return one it does not name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from shared.workbench.cli import main
from shared.workbench.datafiles import DataSpec, load_files
from shared.workbench.demo import SAMPLES
from shared.workbench.engine import Engine
from shared.workbench.querycolumns import needed_names
from tests.conftest import ROOT

SAMPLE = SAMPLES
BURST = ROOT / "rules" / "sender-domain-auth-failure-burst.yaml"


@pytest.mark.parametrize(
    "query",
    [
        "EmailEvents | where EmailDirection == 'Inbound'",  # a bare table: every column is returned
        "EmailEvents | project-away Subject",
        "EmailEvents | summarize arg_max(TimeGenerated, *) by SenderFromDomain",
        "EmailEvents | project Subject | extend All = pack_all()",
        "EmailEvents | project ['Subject']",
        "EmailEvents | project Subject | join (EmailEvents | project Subject) on Subject",
        "EmailEvents | project Subject | union EmailEvents",
        "EmailEvents | getschema",
        "EmailEvents | project Subject | mv-expand Subject",
        "EmailEvents | extend X = column_ifexists('Subject', '') | project X",
        "EmailEvents | evaluate bag_unpack(AdditionalFields) | project Subject",
        "EmailEvents | where Subject has 'x",  # does not lex: unsure, so everything
    ],
)
def test_a_query_that_may_need_every_column_loads_every_column(query: str) -> None:
    assert needed_names(query) is None


def test_a_shaped_query_loads_only_what_it_names_and_the_window_columns(tmp_path: Path) -> None:
    query = "EmailEvents | where EmailDirection == 'Inbound' | summarize n = count() by SenderFromDomain | where n > 1"
    with Engine() as engine:
        [loaded] = load_files(engine, [DataSpec("EmailEvents", SAMPLE)], query, prune=True)
        assert sorted(loaded.table.columns) == ["EmailDirection", "SenderFromDomain", "TimeGenerated", "Timestamp"]
        pruned = engine.query(query + " | order by SenderFromDomain asc")
        [full] = load_files(engine, [DataSpec("EmailEvents", SAMPLE)], query)
        assert len(full.table.columns) > 20 and full.table.rows == loaded.table.rows
        assert engine.query(query + " | order by SenderFromDomain asc").rows == pruned.rows
    with Engine() as engine:  # a bare table output keeps the file's every column
        [loaded] = load_files(engine, [DataSpec("EmailEvents", SAMPLE)], "EmailEvents | take 1", prune=True)
        assert len(loaded.table.columns) == len(full.table.columns)


def test_hunt_of_a_shaped_rule_answers_as_with_every_column(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The burst rule (summarize) over the sample day: the same rows as the full load, and a column the rule
    reads but the file lacks is still warned about."""
    doc = yaml.safe_load(BURST.read_text(encoding="utf-8"))
    doc["query"] = doc["query"].replace("let FailureThreshold = 10;", "let FailureThreshold = 1;")
    rule = tmp_path / "burst.yaml"
    rule.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    argv = ["hunt", str(rule), "--data", f"EmailEvents={SAMPLE}", "--format", "jsonl", "--now", "2026-11-21T00:00:00Z"]
    assert main(argv) == 0
    pruned, _ = capsys.readouterr()
    assert pruned.count("\n") > 0
    with Engine() as engine:
        load_files(engine, [DataSpec("EmailEvents", SAMPLE)])
        from shared.rules.loader import load_rule
        from shared.workbench.hunt import final_query

        full = engine.query(final_query(load_rule(rule), {}).query)
    assert pruned.count("\n") == len(full.rows)
    lacking = tmp_path / "EmailEvents.jsonl"
    shutil.copy(SAMPLE, lacking)
    text = lacking.read_text(encoding="utf-8").replace('"OrgLevelPolicy"', '"OrgLevelPolicyX"')
    lacking.write_text(text, encoding="utf-8")
    assert main([*argv[:3], f"EmailEvents={lacking}", *argv[4:]]) == 0
    _, err = capsys.readouterr()
    assert "no column(s) OrgLevelPolicy that the query reads" in err
