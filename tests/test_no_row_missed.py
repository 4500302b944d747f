"""Issue 13: late rows by ingestion time, rules that fire on silence, notices when a rule goes blind.

Through the real path: the HTTPS Log Analytics stand-in (which hides a row until it is ingested and evaluates
ingestion_time()) -> LogsQueryClient -> Azurite -> the Teams receiver.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from shared import ingestion
from shared.detector import window_choice, workspace_query
from shared.rules import load_rule, parse_rule
from shared.standins.clock import Clock
from shared.standins.loganalytics import LogAnalyticsStandIn
from shared.standins.teams import WebhookReceiver
from shared.window import FAST_LATENESS, INGESTION_OVERLAP, ingestion_window
from tests.conftest import SEED_RULE, MakeDetector, delivered_ids, email

M, H = timedelta(minutes=1), timedelta(hours=1)
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)

SILENCE_RULE = """\
id: 5d1c2f0e-9a57-4c4e-8d59-2f6b3e1a7c01
name: Inbound mail has stopped
severity: High
queryFrequency: 5m
queryPeriod: 1h
triggerOperator: lt
triggerThreshold: 1
query: |
  EmailEvents
  | where EmailDirection == 'Inbound'
"""


def _texts(card: dict[str, object]) -> str:
    return repr(card)


# --- 1. ingestion watermark ---------------------------------------------------------------------------------


def test_a_row_three_hours_late_ingested_after_run_1_is_alerted_once_by_run_2(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    """Run 1 sees nothing; then a row whose TimeGenerated is 3 h old is ingested. Run 2 (the first sweep, over the
    whole KQLWATCH_MAX_LATENESS) alerts it; run 3 does not alert it again."""
    first = make_detector().run(only_due=False)
    assert first.ok and first.outcomes[0].window_mode == "ingestion" and hook.cards("soc") == []
    late = email(clock, TimeGenerated=clock.now - 3 * H)
    la.ingest("EmailEvents", [late], at=clock.now + M)

    clock.advance(5 * M)
    second = make_detector().run(only_due=False).outcomes[0]
    assert second.ok and second.new_hits == 1
    assert delivered_ids(hook) == [late["NetworkMessageId"]]
    sent = la.requests[-1].query if "LastIngested" not in la.requests[-1].query else la.requests[-2].query
    assert sent.startswith("let EmailEvents = EmailEvents | where ingestion_time() > datetime(")

    clock.advance(5 * M)
    third = make_detector().run(only_due=False).outcomes[0]
    assert third.ok and third.new_hits == 0
    assert delivered_ids(hook) == [late["NetworkMessageId"]]


def test_between_sweeps_a_very_late_row_waits_for_the_hourly_sweep_and_alerts_once(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    make_detector().run(only_due=False)
    clock.advance(5 * M)
    sweep = make_detector().run(only_due=False).outcomes[0].window
    assert sweep is not None and sweep.span > 48 * H  # the first sweep
    late = email(clock, TimeGenerated=clock.now - 3 * H)
    on_time = email(clock, TimeGenerated=clock.now)
    la.ingest("EmailEvents", [late, on_time], at=clock.now + M)
    clock.advance(5 * M)
    make_detector().run(only_due=False)
    assert delivered_ids(hook) == [on_time["NetworkMessageId"]]  # the short span: 3 h late waits for the sweep
    for _ in range(11):
        clock.advance(5 * M)
        make_detector().run(only_due=False)
    assert sorted(delivered_ids(hook)) == sorted([on_time["NetworkMessageId"], late["NetworkMessageId"]])
    clock.advance(5 * M)
    make_detector().run(only_due=False)
    assert len(delivered_ids(hook)) == 2


def test_rows_ingested_before_the_watermark_are_not_read_again(
    la: LogAnalyticsStandIn, make_detector: MakeDetector, clock: Clock
) -> None:
    la.ingest("EmailEvents", [email(clock)], at=clock.now - 10 * M)
    assert make_detector().run(only_due=False).outcomes[0].rows == 1
    clock.advance(10 * M)
    assert make_detector().run(only_due=False).outcomes[0].rows == 1  # the first sweep re-reads the first run's
    clock.advance(10 * M)
    again = make_detector().run(only_due=False).outcomes[0]
    assert again.rows == 0 and again.ingested_since == clock.now - 10 * M - INGESTION_OVERLAP


def test_after_downtime_the_next_run_reads_everything_ingested_meanwhile() -> None:
    window = ingestion_window(NOW, period=H, last_end=NOW - 5 * H, last_sweep_end=NOW - 5 * H,
                              max_lateness=48 * H, max_catchup=24 * H, sweep_every=H)
    assert window.sweep and window.since == NOW - 5 * H - INGESTION_OVERLAP
    assert window.start == window.since - 48 * H and window.end == NOW
    capped = ingestion_window(NOW, period=H, last_end=NOW - 50 * H, last_sweep_end=NOW - 50 * H,
                              max_lateness=48 * H, max_catchup=24 * H, sweep_every=H)
    assert capped.since == NOW - 24 * H


def test_between_sweeps_a_run_scans_a_short_span_and_a_sweep_the_whole_lateness() -> None:
    fast = ingestion_window(NOW, period=H, last_end=NOW - 5 * M, last_sweep_end=NOW - 30 * M,
                            max_lateness=48 * H, max_catchup=24 * H, sweep_every=H)
    assert not fast.sweep and fast.since == NOW - 10 * M and fast.start == fast.since - FAST_LATENESS
    sweep = ingestion_window(NOW, period=H, last_end=NOW - 5 * M, last_sweep_end=NOW - H,
                             max_lateness=48 * H, max_catchup=24 * H, sweep_every=H)
    assert sweep.sweep and sweep.since == NOW - H - INGESTION_OVERLAP and sweep.start == sweep.since - 48 * H


def test_between_sweeps_a_run_scans_only_the_short_span(
    la: LogAnalyticsStandIn, make_detector: MakeDetector, clock: Clock
) -> None:
    """The stand-in counts the rows in each query's TimeGenerated span (what a workspace scans): 50 rows an hour
    over two days; a normal run scans about 2 h of them, a sweep the whole 2 days."""
    rows = [email(clock, TimeGenerated=clock.now - i * 72 * timedelta(seconds=1), EmailDirection="Outbound")
            for i in range(2400)]
    la.ingest("EmailEvents", rows, at=clock.now - 2 * M)
    scanned = []
    for _ in range(3):  # first run, first sweep, a normal run
        before = la.rows_scanned
        make_detector().run(only_due=False)
        scanned.append(la.rows_scanned - before)
        clock.advance(5 * M)
    # scanned[0] also holds the first hourly blind-spot probe (a day of rows); runs 2 and 3 probe nothing
    assert scanned[1] >= 2395, scanned  # the sweep: 48 h + 1 h 5 min before its watermark, all 2,400 rows
    assert 45 <= scanned[2] <= 55, scanned  # a normal run: from 1 h before its watermark (the rows' last hour)


def test_the_shadowing_let_is_accepted_by_kusto_language() -> None:
    from shared.validate import check_kql

    prepared_query = load_rule(SEED_RULE).query
    sent = ingestion.with_ingestion_filter(prepared_query, ("EmailEvents",), NOW)
    result = check_kql([sent])[0]
    assert [d for d in result.diagnostics if d.get("severity") == "Error"] == []
    assert result.tables == ["EmailEvents"]


# --- 2. where ingestion windows would change a rule's meaning --------------------------------------------------

BASE = "id: 5d1c2f0e-9a57-4c4e-8d59-2f6b3e1a7c02\nname: x\nseverity: Low\n"


@pytest.mark.parametrize(("extra", "query", "mode", "reason"), [
    ("", "EmailEvents | where Subject has 'x'", "ingestion", "row by row"),
    ("", "EmailEvents | summarize n = count() by SenderFromAddress | where n > 5", "timegenerated", "summarize"),
    ("", "EmailEvents | extend s = make_set(Subject)", "timegenerated", "make_set"),
    ("", "EmailEvents | join EmailUrlInfo on NetworkMessageId", "timegenerated", "2 tables"),
    ("", "EmailEvents | where ingestion_time() > ago(1h)", "timegenerated", "ingestion_time"),
    ("triggerOperator: gt\ntriggerThreshold: 10\n", "EmailEvents", "timegenerated", "threshold"),
    ("kqlwatch:\n  window: timegenerated\n", "EmailEvents", "timegenerated", "kqlwatch.window"),
    ("kqlwatch:\n  window: ingestion\n", "EmailEvents | summarize count()", "ingestion", "kqlwatch.window"),
])
def test_window_mode_is_chosen_by_meaning_and_overridable(extra: str, query: str, mode: str, reason: str) -> None:
    rule = parse_rule(BASE + extra + f"query: |\n  {query}\n", "rules/x.yaml")
    choice = window_choice(rule)
    assert (choice.mode, reason in choice.reason) == (mode, True), choice


def test_a_bad_window_mode_names_the_file_and_the_key() -> None:
    with pytest.raises(Exception, match=r"rules/x.yaml:\d+: kqlwatch.window 'event' is not one of ingestion, timegenerated"):
        parse_rule(BASE + "query: EmailEvents\nkqlwatch:\n  window: event\n", "rules/x.yaml")


def test_validate_list_shows_each_rules_window(capsys: pytest.CaptureFixture[str]) -> None:
    from shared import cli

    assert cli.main(["validate", "--list", "--no-kql", str(SEED_RULE)]) == 0
    assert "accepted-domain-dmarc-temperror.yaml: valid, scheduled rule; window: ingestion (row by row)" in (
        capsys.readouterr().out
    )


# --- 4. rules that fire on silence -----------------------------------------------------------------------------


def _silence_rule(rules_dir: Path, extra: str = "") -> None:
    (rules_dir / "accepted-domain-dmarc-temperror.yaml").unlink()
    (rules_dir / "silence.yaml").write_text(SILENCE_RULE + extra, encoding="utf-8")


def test_a_less_than_1_rule_over_an_empty_result_posts_one_card_not_again(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock, rules_dir: Path
) -> None:
    _silence_rule(rules_dir)
    first = make_detector(KQLWATCH_OPS_WEBHOOK_URL=hook.url("ops")).run(only_due=False).outcomes[0]
    assert first.ok and first.new_hits == 1 and first.window_mode == "timegenerated"
    cards = hook.cards("soc")
    assert len(cards) == 1
    assert "fewer than 1 row(s)" in _texts(cards[0]) and "0 rows" in _texts(cards[0])

    clock.advance(5 * M)
    second = make_detector(KQLWATCH_OPS_WEBHOOK_URL=hook.url("ops")).run(only_due=False).outcomes[0]
    assert second.ok and second.new_hits == 0 and len(hook.cards("soc")) == 1

    # Mail again ends the silence; the next silence is a new one and alerts once.
    la.ingest("EmailEvents", [email(clock, TimeGenerated=clock.now - M)], at=clock.now - M)
    clock.advance(5 * M)
    assert make_detector(KQLWATCH_OPS_WEBHOOK_URL=hook.url("ops")).run(only_due=False).outcomes[0].new_hits == 0
    later = []
    for _ in range(3):  # an hour and more later: the window has moved past the mail
        clock.advance(H)
        later.append(make_detector(KQLWATCH_OPS_WEBHOOK_URL=hook.url("ops")).run(only_due=False).outcomes[0].new_hits)
    assert later == [0, 1, 0] and len(hook.cards("soc")) == 2


def test_a_silence_that_lasts_past_the_suppression_window_alerts_again(
    hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock, rules_dir: Path
) -> None:
    _silence_rule(rules_dir, "suppressionEnabled: true\nsuppressionDuration: 1h\n")
    for _ in range(13):  # an hour of silence, then a little more
        make_detector(KQLWATCH_OPS_WEBHOOK_URL=hook.url("ops")).run(only_due=False)
        clock.advance(5 * M)
    assert len(hook.cards("soc")) == 2


# --- 5. blind spots -------------------------------------------------------------------------------------------


def test_a_source_table_gone_quiet_gets_one_notice_and_one_when_rows_return(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock,
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    ops = {"KQLWATCH_OPS_WEBHOOK_URL": hook.url("ops")}
    la.ingest("EmailEvents", [email(clock, EmailDirection="Outbound")], at=clock.now - 10 * M)
    make_detector(**ops).run(only_due=False)
    assert hook.cards("ops") == []

    for _ in range(36):  # three hours of runs every 5 minutes
        clock.advance(5 * M)
        make_detector(**ops).run(only_due=False)
    notices = hook.cards("ops")
    assert len(notices) == 1
    assert "cannot see: EmailEvents has had no new rows since" in _texts(notices[0])
    probes = [r for r in la.requests if "LastIngested" in r.query]
    assert 3 <= len(probes) <= 4, "at most one probe per table per hour"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from shared import cli

    cli.main(["status"])
    seed_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("Message from"))
    assert "ingestion (row by row)" in seed_line and "EmailEvents since " in seed_line

    la.ingest("EmailEvents", [email(clock, EmailDirection="Outbound")], at=clock.now)
    for _ in range(12):
        clock.advance(5 * M)
        make_detector(**ops).run(only_due=False)
    notices = hook.cards("ops")
    assert len(notices) == 2 and "can see again: EmailEvents has new rows" in _texts(notices[1])


def test_kqlwatch_silence_after_sets_the_threshold(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock, rules_dir: Path
) -> None:
    seed = rules_dir / "accepted-domain-dmarc-temperror.yaml"
    seed.write_text(seed.read_text(encoding="utf-8").replace("kqlwatch:\n", "kqlwatch:\n  silenceAfter: 6h\n", 1),
                    encoding="utf-8")
    la.ingest("EmailEvents", [email(clock, EmailDirection="Outbound")], at=clock.now - 10 * M)
    for _ in range(4):
        make_detector(KQLWATCH_OPS_WEBHOOK_URL=hook.url("ops")).run(only_due=False)
        clock.advance(H)
    assert hook.cards("ops") == []  # 4 h quiet is under 6 h


# --- 6. offline ------------------------------------------------------------------------------------------------


def test_workspace_query_adds_the_filter_only_in_ingestion_mode() -> None:
    from shared.detector import prepare_rules

    prepared, _ = prepare_rules([load_rule(SEED_RULE)], {})
    sent = workspace_query(prepared[0], NOW)
    assert sent.endswith(prepared[0].query)
    assert sent.startswith("let EmailEvents = EmailEvents | where ingestion_time() > datetime(2026-11-27T12:00:00")


def test_bad_issue_13_settings_and_keys_are_named(env: dict[str, str]) -> None:
    from shared.errors import ConfigError, RuleError
    from shared.settings import load_settings

    for name in ("KQLWATCH_MAX_LATENESS", "KQLWATCH_LATE_SWEEP"):
        with pytest.raises(ConfigError, match=name):
            load_settings({**env, name: "two days"})
    with pytest.raises(RuleError, match=r"rules/x.yaml: kqlwatch.silenceAfter"):
        parse_rule(BASE + "query: EmailEvents\nkqlwatch:\n  silenceAfter: soon\n", "rules/x.yaml")


def test_source_tables_are_table_references_not_columns_or_let_names() -> None:
    known = ("EmailEvents", "EmailUrlInfo")
    query = ("let EmailUrlInfo = 1;\nlet Recent = EmailEvents | where x.EmailUrlInfo == 1;\n"
             "Recent | extend EmailUrlInfo = 2 | union Custom_CL")
    assert ingestion.source_tables(query, known) == ("EmailEvents", "Custom_CL")
