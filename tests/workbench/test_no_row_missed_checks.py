"""Issue 13 in the workbench: Kusto.Language accepts the shadowing `let`, and `validate --list` shows windows."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from shared.rules import ingestion
from shared.rules.loader import load_rule
from tests.conftest import SEED_RULE

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


def test_the_shadowing_let_is_accepted_by_kusto_language() -> None:
    from shared.workbench.validate import check_kql

    prepared_query = load_rule(SEED_RULE).query
    sent = ingestion.with_ingestion_filter(prepared_query, ("EmailEvents",), NOW)
    result = check_kql([sent])[0]
    assert [d for d in result.diagnostics if d.get("severity") == "Error"] == []
    assert result.tables == ["EmailEvents"]


def test_validate_list_shows_each_rules_window(capsys: pytest.CaptureFixture[str]) -> None:
    from shared.workbench import cli

    assert cli.main(["validate", "--list", "--no-kql", str(SEED_RULE)]) == 0
    assert "accepted-domain-dmarc-temperror.yaml: valid, scheduled rule; window: ingestion (row by row)" in (
        capsys.readouterr().out
    )
