"""`kqlwatch backtest --workspace`: the month's rows read from the workspace (the HTTPS Log Analytics stand-in in
front of the real LogsQueryClient), one bounded query per table per day, replayed locally; the per-day numbers
checked against the same independent count as the exported month, and a day the service gives only partly is
a clear error naming the table and the day."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml

from shared.standins.loganalytics import LogAnalyticsStandIn
from shared.workbench.engine import INGESTED
from tests.workbench.test_backtest import MONTH_START, _reported, backtest, expected_days, write_month


def _ingest_month(la: LogAnalyticsStandIn, tmp_path: Path) -> tuple[Path, Path, list[dict[str, object]]]:
    folder = tmp_path / "month"  # tmp_path/rules is the fixtures' rules folder
    folder.mkdir()
    _, rule, exclusions, rows = write_month(folder)
    # Ingested at their TimeGenerated, as the independent count assumes (the stand-in's hidden column).
    la.ingest("EmailEvents", [{**row, INGESTED: row["TimeGenerated"]} for row in rows])
    return rule, exclusions, rows


def test_backtest_from_the_workspace_matches_an_independent_count(
    cli_env: dict[str, str], la: LogAnalyticsStandIn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rule, exclusions, rows = _ingest_month(la, tmp_path)
    argv = [str(rule), "--workspace", "--exclusions", str(exclusions), "--from", "2026-10-01T00:00:00Z", "--days", "30"]
    code, report, err = backtest(capsys, *argv)
    assert code == 0, err
    spec = yaml.safe_load(exclusions.read_text(encoding="utf-8"))["exclusions"]
    for item in spec:
        item["expires"] = date.fromisoformat(item["expires"])
    expected = expected_days(rows, MONTH_START, timedelta(hours=6), spec)
    assert _reported(report) == expected
    assert len(report["days"]) == 30 and report["totals"]["runs"] == 120
    assert sum(a for a, _ in expected.values()) == report["totals"]["alerts"] > 100
    # Read-only and bounded: one query per day of the period plus the look-back, each a one-day timespan.
    asked = [r.query for r in la.requests]
    assert asked and all(q.startswith("EmailEvents\n| where TimeGenerated >= datetime(") for q in asked)
    assert 30 <= len(asked) <= 34
    assert "workspace" in report["source"]


def test_a_day_the_workspace_gives_only_partly_is_a_clear_error(
    cli_env: dict[str, str], la: LogAnalyticsStandIn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rule, _, _ = _ingest_month(la, tmp_path)
    la.row_cap = 30  # the service's result limit, scaled down: the busier days come back truncated
    code, report, err = backtest(capsys, str(rule), "--workspace", "--from", "2026-10-01T00:00:00Z", "--days", "30")
    assert code == 1 and not report
    assert "Traceback" not in err
    assert "kqlwatch backtest: --workspace: EmailEvents on 2026-" in err
    assert "came back partial" in err and "export that day and backtest with --data" in err
