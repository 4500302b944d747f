"""`kqlwatch validate --workspace`: tables and columns checked against the workspace's own schemas (read through
the query API's `getschema`, from the Log Analytics stand-in as from the service), so a custom table validates;
offline, the same rule keeps the shipped schemas and its custom table has none."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shared.standins.loganalytics import LogAnalyticsStandIn
from shared.workbench.cli import main
from tests.conftest import SEED_RULE

CUSTOM_QUERY = "MyApp_CL\n| where Action_s == 'login' and Count_d > 3\n| project TimeGenerated, Action_s, Count_d\n"


def _rule(folder: Path, query: str) -> Path:
    doc = yaml.safe_load(SEED_RULE.read_text(encoding="utf-8"))
    doc["query"] = query
    doc["entityMappings"] = [
        {"entityType": "Account", "fieldMappings": [{"identifier": "Name", "columnName": "Action_s"}]}
    ]
    doc["kqlwatch"] = {"dedupeKey": ["TimeGenerated", "Action_s"]}
    path = folder / "custom.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _validate(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["validate", *argv])
    out, err = capsys.readouterr()
    return code, out + err


def test_a_custom_table_validates_against_the_workspace_schema(
    cli_env: dict[str, str], la: LogAnalyticsStandIn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    la.ingest("MyApp_CL", [{"TimeGenerated": "2026-11-20T10:00:00Z", "Action_s": "login", "Count_d": 4.0}])
    rule = _rule(tmp_path, CUSTOM_QUERY)
    code, offline = _validate(capsys, str(rule))
    assert "MyApp_CL" in offline and "[no-schema]" in offline  # offline: the shipped schemas only
    code, online = _validate(capsys, str(rule), "--workspace")
    assert code == 0, online
    assert "[no-schema]" not in online and "0 warnings" in online
    asked = [r.query for r in la.requests]
    assert any(q.startswith("MyApp_CL\n| getschema") for q in asked)  # read-only: getschema, nothing else
    assert all("getschema" in q for q in asked)
    # A misspelt column of the custom table is now an error naming it.
    misspelt = _rule(tmp_path, CUSTOM_QUERY.replace("Count_d > 3", "Cuont_d > 3"))
    code, found = _validate(capsys, str(misspelt), "--workspace")
    assert code != 0 and "Cuont_d" in found


def test_getschema_from_the_stand_in_is_the_service_s_answer(la: LogAnalyticsStandIn) -> None:
    """The stand-in's hidden ingestion-time column is not a column of the table."""
    from datetime import datetime, timedelta, timezone

    from shared.runtime.loganalytics import LogsClient, StaticTokenCredential

    la.ingest("MyApp_CL", [{"TimeGenerated": "2026-11-20T10:00:00Z", "Action_s": "login"}])
    client = LogsClient(la.endpoint, StaticTokenCredential(la.token))
    end = datetime.now(timezone.utc)
    result = client.query("00000000-0000-0000-0000-000000000000", "MyApp_CL | getschema", end - timedelta(days=1), end)
    client.close()
    assert result.columns == ["ColumnName", "ColumnOrdinal", "DataType", "ColumnType"]
    assert [(r["ColumnName"], r["ColumnType"]) for r in result.rows] == [
        ("TimeGenerated", "datetime"),
        ("Action_s", "string"),
    ]


def test_a_table_the_workspace_lacks_is_told_by_the_error_s_fields(
    cli_env: dict[str, str], la: LogAnalyticsStandIn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The service's 400 for `NAME | getschema` carries its codes as fields (status, code, inner_code): validate
    --workspace reads those, not the message text, to leave a table out as "no schema"."""
    from datetime import datetime, timedelta, timezone

    from shared.errors import QueryError
    from shared.runtime.loganalytics import LogsClient, StaticTokenCredential

    client = LogsClient(la.endpoint, StaticTokenCredential(la.token))
    end = datetime.now(timezone.utc)
    with pytest.raises(QueryError) as raised:
        client.query("00000000-0000-0000-0000-000000000000", "Nope_CL | getschema", end - timedelta(days=1), end)
    client.close()
    assert (raised.value.status, raised.value.code, raised.value.inner_code) == (
        400,
        "BadArgumentError",
        "SemanticError",
    )
    rule = _rule(tmp_path, CUSTOM_QUERY.replace("MyApp_CL", "Nope_CL"))
    _, online = _validate(capsys, str(rule), "--workspace")
    assert "Nope_CL" in online and "[no-schema]" in online and "cannot read the schema" not in online
