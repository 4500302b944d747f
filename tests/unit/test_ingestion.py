"""Issue 13, pure parts: window spans, the window mode a rule gets, and the filter a run adds to its query."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from shared.rules import ingestion
from shared.rules.loader import load_rule, parse_rule
from shared.rules.prepare import window_choice, workspace_query
from shared.runtime.window import FAST_LATENESS, INGESTION_OVERLAP, ingestion_window
from tests.paths import SEED_RULE

M, H = timedelta(minutes=1), timedelta(hours=1)
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
BASE = "id: 5d1c2f0e-9a57-4c4e-8d59-2f6b3e1a7c02\nname: x\nseverity: Low\n"


def test_after_downtime_the_next_run_reads_everything_ingested_meanwhile() -> None:
    window = ingestion_window(
        NOW,
        period=H,
        last_end=NOW - 5 * H,
        last_sweep_end=NOW - 5 * H,
        max_lateness=48 * H,
        max_catchup=24 * H,
        sweep_every=H,
    )
    assert window.sweep and window.since == NOW - 5 * H - INGESTION_OVERLAP
    assert window.start == window.since - 48 * H and window.end == NOW
    capped = ingestion_window(
        NOW,
        period=H,
        last_end=NOW - 50 * H,
        last_sweep_end=NOW - 50 * H,
        max_lateness=48 * H,
        max_catchup=24 * H,
        sweep_every=H,
    )
    assert capped.since == NOW - 24 * H


def test_between_sweeps_a_run_scans_a_short_span_and_a_sweep_the_whole_lateness() -> None:
    fast = ingestion_window(
        NOW,
        period=H,
        last_end=NOW - 5 * M,
        last_sweep_end=NOW - 30 * M,
        max_lateness=48 * H,
        max_catchup=24 * H,
        sweep_every=H,
    )
    assert not fast.sweep and fast.since == NOW - 10 * M and fast.start == fast.since - FAST_LATENESS
    sweep = ingestion_window(
        NOW,
        period=H,
        last_end=NOW - 5 * M,
        last_sweep_end=NOW - H,
        max_lateness=48 * H,
        max_catchup=24 * H,
        sweep_every=H,
    )
    assert sweep.sweep and sweep.since == NOW - H - INGESTION_OVERLAP and sweep.start == sweep.since - 48 * H


@pytest.mark.parametrize(
    ("extra", "query", "mode", "reason"),
    [
        ("", "EmailEvents | where Subject has 'x'", "ingestion", "row by row"),
        ("", "EmailEvents | summarize n = count() by SenderFromAddress | where n > 5", "timegenerated", "summarize"),
        ("", "EmailEvents | extend s = make_set(Subject)", "timegenerated", "make_set"),
        ("", "EmailEvents | join EmailUrlInfo on NetworkMessageId", "timegenerated", "2 tables"),
        ("", "EmailEvents | where ingestion_time() > ago(1h)", "timegenerated", "ingestion_time"),
        ("triggerOperator: gt\ntriggerThreshold: 10\n", "EmailEvents", "timegenerated", "threshold"),
        ("kqlwatch:\n  window: timegenerated\n", "EmailEvents", "timegenerated", "kqlwatch.window"),
        ("kqlwatch:\n  window: ingestion\n", "EmailEvents | summarize count()", "ingestion", "kqlwatch.window"),
    ],
)
def test_window_mode_is_chosen_by_meaning_and_overridable(extra: str, query: str, mode: str, reason: str) -> None:
    rule = parse_rule(BASE + extra + f"query: |\n  {query}\n", "rules/x.yaml")
    choice = window_choice(rule)
    assert (choice.mode, reason in choice.reason) == (mode, True), choice


def test_a_bad_window_mode_names_the_file_and_the_key() -> None:
    # and the line: since issues 10/11 a RuleError with a key gets its line (this test predates that merge)
    with pytest.raises(
        Exception, match=r"rules/x.yaml:5: kqlwatch.window 'event' is not one of ingestion, timegenerated"
    ):
        parse_rule(BASE + "query: EmailEvents\nkqlwatch:\n  window: event\n", "rules/x.yaml")


def test_workspace_query_adds_the_filter_only_in_ingestion_mode() -> None:
    from shared.rules.prepare import prepare_rules

    prepared, _ = prepare_rules([load_rule(SEED_RULE)], {})
    sent = workspace_query(prepared[0], NOW)
    assert sent.endswith(prepared[0].query)
    assert sent.startswith("let EmailEvents = EmailEvents | where ingestion_time() > datetime(2026-11-27T12:00:00")


def test_source_tables_are_table_references_not_columns_or_let_names() -> None:
    known = ("EmailEvents", "EmailUrlInfo")
    query = (
        "let EmailUrlInfo = 1;\nlet Recent = EmailEvents | where x.EmailUrlInfo == 1;\n"
        "Recent | extend EmailUrlInfo = 2 | union Custom_CL"
    )
    assert ingestion.source_tables(query, known) == ("EmailEvents", "Custom_CL")
