"""Issue 15: choosing a rule's source (kqlwatch.source, KQLWATCH_SOURCE), its settings, its windows, reading
Graph's answer, and `kqlwatch validate` knowing which tables each source serves."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from shared.errors import ConfigError, QueryError, RuleError
from shared.rules.loader import parse_rule
from shared.runtime.defender import parse_answer
from shared.runtime.settings import load_settings
from shared.runtime.window import DEFENDER_OVERLAP, next_window
from shared.workbench.validate import validate_paths
from tests.paths import SEED_RULE

BASE = {
    "KQLWATCH_WORKSPACE_ID": "00000000-0000-0000-0000-000000000001",
    "KQLWATCH_STATE_CONNECTION": "UseDevelopmentStorage=true;TableEndpoint=http://127.0.0.1:10002/devstoreaccount1",
    "KQLWATCH_TEAMS_WEBHOOK_URL": "https://127.0.0.1/hook",
    "KQLWATCH_RULES_DIR": str(SEED_RULE.parent),
}
RULE = "id: 0b5e9c6e-3333-4a4a-9a9a-000000000015\nname: R\ndescription: d\nquery: |\n  {query}\nkqlwatch:\n  source: {source}\n"


def test_source_and_graph_endpoint_settings() -> None:
    settings = load_settings({**BASE, "KQLWATCH_SOURCE": "Defender"})
    assert settings.source == "defender" and settings.graph_endpoint == "https://graph.microsoft.com"
    assert load_settings(BASE).source == "loganalytics"
    with pytest.raises(ConfigError, match="KQLWATCH_SOURCE must be one of defender, loganalytics"):
        load_settings({**BASE, "KQLWATCH_SOURCE": "splunk"})
    with pytest.raises(ConfigError, match="KQLWATCH_GRAPH_ENDPOINT must be an https:// URL"):
        load_settings({**BASE, "KQLWATCH_GRAPH_ENDPOINT": "http://graph.example.com"})
    assert load_settings({**BASE, "KQLWATCH_GRAPH_ENDPOINT": "https://graph.microsoft.us"}).graph_endpoint.endswith(
        ".us"
    )


def test_a_defender_only_tenant_needs_no_workspace() -> None:
    without = {k: v for k, v in BASE.items() if k != "KQLWATCH_WORKSPACE_ID"}
    assert load_settings({**without, "KQLWATCH_SOURCE": "defender"}).workspace_id == ""
    with pytest.raises(ConfigError, match="KQLWATCH_WORKSPACE_ID is not set"):
        load_settings(without)


def test_rule_key_source_is_read_and_checked() -> None:
    assert parse_rule(RULE.format(query="EmailEvents", source="Defender"), "r.yaml").source == "defender"
    assert parse_rule(RULE.format(query="EmailEvents", source="loganalytics"), "r.yaml").source == "loganalytics"
    with pytest.raises(RuleError, match=r"kqlwatch.source 'splunk' is not one of defender, loganalytics"):
        parse_rule(RULE.format(query="EmailEvents", source="splunk"), "r.yaml")


def test_defender_windows_reread_three_hours_and_reach_back_at_most_the_catchup() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
    last = now - timedelta(minutes=5)
    window = next_window(
        now,
        period=timedelta(hours=1),
        frequency=timedelta(minutes=5),
        last_end=last,
        max_catchup=timedelta(days=30),
        min_overlap=DEFENDER_OVERLAP,
    )
    assert window.start == last - timedelta(hours=3) and window.end == now
    old = next_window(
        now,
        period=timedelta(hours=1),
        frequency=timedelta(minutes=5),
        last_end=now - timedelta(days=40),
        max_catchup=timedelta(days=30),
        min_overlap=DEFENDER_OVERLAP,
    )
    assert old.start == now - timedelta(days=30)


def test_graph_answers_are_read_case_insensitively_with_types() -> None:
    result = parse_answer(
        {
            "Schema": [{"Name": "Timestamp", "Type": "DateTime"}, {"name": "Count", "type": "Int64"}],
            "Results": [{"Timestamp": "2024-03-26T09:39:50.7688641Z", "Count": 3, "Extra": "ignored"}],
        }
    )
    assert result.columns == ["Timestamp", "Count"]
    assert result.types == {"Timestamp": "datetime", "Count": "long"}
    assert result.rows[0]["Timestamp"] == datetime(2024, 3, 26, 9, 39, 50, 768864, tzinfo=timezone.utc)
    assert result.time_columns == ["Timestamp"]
    with pytest.raises(QueryError, match="not an object"):
        parse_answer([1, 2])


def _validate(tmp_path: Path, body: str, monkeypatch: pytest.MonkeyPatch, default: str = "") -> list[str]:
    if default:
        monkeypatch.setenv("KQLWATCH_SOURCE", default)
    else:
        monkeypatch.delenv("KQLWATCH_SOURCE", raising=False)
    path = tmp_path / "rule.yaml"
    path.write_text(body)
    (result,) = validate_paths([path], kql=False).files
    return [f.message for f in result.findings if f.code == "source"]


def test_validate_warns_when_the_source_cannot_serve_a_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    defender_only = _validate(tmp_path, RULE.format(query="MessageEvents | take 1", source="loganalytics"), monkeypatch)
    assert defender_only == [
        "MessageEvents is not in a Log Analytics workspace (source: loganalytics, from kqlwatch.source); "
        "it is in Defender XDR advanced hunting: set kqlwatch.source"
    ]
    sentinel_only = _validate(tmp_path, RULE.format(query="SecurityAlert | take 1", source="defender"), monkeypatch)
    assert len(sentinel_only) == 1 and "SecurityAlert is not in Defender XDR advanced hunting" in sentinel_only[0]
    custom = _validate(tmp_path, RULE.format(query="MyLogs_CL | take 1", source="defender"), monkeypatch)
    assert len(custom) == 1 and "MyLogs_CL" in custom[0]
    column = _validate(tmp_path, RULE.format(query="EmailEvents | where TimeGenerated > ago(1h)", source="defender"),
                       monkeypatch)  # fmt: skip
    assert column == [
        "advanced hunting has no TimeGenerated column (source: defender, from kqlwatch.source): use Timestamp"
    ]


@pytest.mark.parametrize("default", ["", "defender", "loganalytics"])
def test_the_seed_rule_is_valid_for_both_sources(default: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _validate(tmp_path, SEED_RULE.read_text(), monkeypatch, default) == []
    (result,) = validate_paths([SEED_RULE], kql=False).files
    assert result.errors == 0
    if default == "defender":
        assert result.window.startswith("timestamp")
