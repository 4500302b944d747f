"""Issue 10 (points 1, 4, 5, 9): one hostile email or one broken setting never stops detection.

An attacker's Subject of 16,500 emoji or a lone surrogate is stored and alerted like any other hit; a bad
setting stops the run before any rule runs, naming itself; no URL path (where retired connector webhooks keep
their secret) reaches a log; a run killed mid-delivery never makes the next run or `status` look all-clear.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.rules.durations import parse_duration
from shared.rules.loader import load_rule
from shared.runtime.cards import MAX_CARD_BYTES, CardContext, build_posts, encode, payload_size
from shared.runtime.store import DELIVERED, PENDING, Hit, StateStore, connect
from shared.runtime.teams import TeamsClient
from shared.standins._http import Response
from shared.standins.azurite import Azurite
from shared.standins.clock import Clock
from shared.standins.loganalytics import LogAnalyticsStandIn
from shared.standins.teams import WebhookReceiver
from shared.workbench.cli import main, print_report
from shared.workbench.status import print_table
from tests.conftest import SEED_RULE, MakeDetector, delivered_ids, email
from tests.integration.test_faults import AFTER_LEASE, Killed, KillingPoster

RULE = load_rule(SEED_RULE)
EMOJI = "\U0001f600"
ATTACKER_SUBJECT = EMOJI * 16_500  # 16,500 characters, 33,000 UTF-16 units: over Table Storage's 64 KiB


# --- point 1: attacker-controlled values in Table Storage and in cards -------------------------------------


def test_an_attacker_subject_of_16500_emoji_never_blocks_the_rule(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    attacker = email(clock, Subject=ATTACKER_SUBJECT)
    others = [email(clock) for _ in range(3)]
    la.ingest("EmailEvents", [others[0], attacker, *others[1:]], at=clock.now - timedelta(minutes=10))
    detector = make_detector()
    outcome = detector.run(only_due=False).outcomes[0]
    assert outcome.ok, outcome.errors
    assert (outcome.new_hits, outcome.delivered, outcome.deferred) == (4, 4, 0)
    expected = sorted(r["NetworkMessageId"] for r in [attacker, *others])
    assert sorted(delivered_ids(hook)) == expected
    stored = {h.row["NetworkMessageId"]: h for h in detector.store.hits(outcome.rule_id)}
    assert {h.status for h in stored.values()} == {DELIVERED}
    kept = stored[attacker["NetworkMessageId"]]
    assert kept.truncated and kept.store_note == ""  # clipped to fit, stored in full form (no 400)
    assert kept.row["Subject"].startswith(EMOJI * 100) and kept.row["RecipientEmailAddress"] == "alice@contoso.com"
    clock.advance(timedelta(minutes=5))
    again = make_detector().run(only_due=False).outcomes[0]
    assert again.ok and again.new_hits == 0 and sorted(delivered_ids(hook)) == expected  # nothing twice


def test_a_lone_surrogate_subject_is_stored_and_alerted(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    """The API's JSON can carry a `\\ud800` escape: json gives a lone surrogate, which UTF-8 cannot encode.
    (The stand-in's engine cannot hold one, so the answer is the service's wire format, written here.)"""
    row = email(clock, Subject="Invoice \ud800 due", SenderDisplayName="\udfffCEO")
    la.respond(_answer([row]))
    detector = make_detector()
    outcome = detector.run(only_due=False).outcomes[0]
    assert outcome.ok and outcome.delivered == 1, outcome.errors + outcome.warnings
    [card] = hook.cards()
    assert "Invoice \ufffd due" in str(card)
    [stored] = detector.store.hits(outcome.rule_id)
    assert stored.row["Subject"] == "Invoice \ufffd due"


def test_a_row_of_thousands_of_columns_keeps_the_cards_columns() -> None:
    from shared.runtime.store import decode_row, encode_row

    row: dict[str, Any] = {f"Extra{i:04d}": EMOJI * 300 for i in range(3000)}
    row.update(
        NetworkMessageId="5f0c0c1e-aaaa-4bbb-8ccc-000000000001",
        Subject=EMOJI * 50 + " pay now",
        RecipientEmailAddress="alice@contoso.com",
    )
    text, clipped = encode_row(row, {})
    back = decode_row(text)
    assert clipped and len(text.encode("utf-16-le")) // 2 <= 30_000  # UTF-16 units, as Table Storage counts
    assert back["NetworkMessageId"] == row["NetworkMessageId"]  # needed for the card's Defender link
    assert back["RecipientEmailAddress"] == "alice@contoso.com" and back["Subject"].startswith(EMOJI * 19)
    assert list(back)[:2] == ["Extra0000", "Extra0001"]  # the row's own order is kept


def _answer(rows: list[dict[str, Any]]) -> Response:
    """A Log Analytics query answer for these rows (json.dumps escapes lone surrogates as `\\ud800`)."""
    columns = list(rows[0])
    kinds = {c: "datetime" if isinstance(rows[0][c], datetime) else "string" for c in columns}
    wire = [[r[c].strftime("%Y-%m-%dT%H:%M:%SZ") if kinds[c] == "datetime" else r[c] for c in columns] for r in rows]
    return Response.of_json(
        200,
        {
            "tables": [
                {"name": "PrimaryResult", "rows": wire, "columns": [{"name": c, "type": kinds[c]} for c in columns]}
            ]
        },
    )


def test_lone_surrogates_never_crash_card_building() -> None:
    row = {**email(Clock()), "Subject": "a\ud800b", "SenderDisplayName": "\udc00"}
    [post] = build_posts(CardContext(RULE, total=1), [row])
    assert "a\ufffdb" in encode(post.payload).decode("utf-8")


def test_a_hit_table_storage_still_refuses_is_stored_minimally_and_the_others_delivered(
    la: LogAnalyticsStandIn,
    hook: WebhookReceiver,
    make_detector: MakeDetector,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever our bounds miss (here: the row budget raised past the real limit), a 400 for one hit is
    isolated: that hit is stored in a minimal form and reported; it and every other hit are delivered."""
    import shared.runtime.rows

    monkeypatch.setattr(shared.runtime.rows, "MAX_ROW_UNITS", 10**6)  # Azurite now answers 400 PropertyValueTooLarge
    attacker = email(clock, Subject=ATTACKER_SUBJECT)
    others = [email(clock) for _ in range(3)]
    la.ingest("EmailEvents", [attacker, *others], at=clock.now - timedelta(minutes=10))
    detector = make_detector()
    outcome = detector.run(only_due=False).outcomes[0]
    assert outcome.ok and (outcome.new_hits, outcome.delivered) == (4, 4), outcome.errors
    assert any("PropertyValueTooLarge" in w and "minimal form" in w for w in outcome.warnings)
    assert sorted(delivered_ids(hook)) == sorted(r["NetworkMessageId"] for r in [attacker, *others])
    stored = {h.row["NetworkMessageId"]: h for h in detector.store.hits(outcome.rule_id)}
    minimal = stored[attacker["NetworkMessageId"]]
    assert minimal.status == DELIVERED and "PropertyValueTooLarge" in minimal.store_note
    assert minimal.row["RecipientEmailAddress"] == attacker["RecipientEmailAddress"]
    clock.advance(timedelta(minutes=5))
    again = make_detector().run(only_due=False).outcomes[0]
    assert again.ok and again.new_hits == 0 and len(delivered_ids(hook)) == 4


class RecordingTable:
    """The real TableClient, noting the operations of every transaction that landed (Azurite enforces neither the 1 MiB
    entity nor the 4 MiB transaction limit of Table Storage, so this test measures against them itself)."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.transactions: list[list[Any]] = []

    def submit_transaction(self, operations: Any, **kwargs: Any) -> Any:
        operations = list(operations)
        result = self._real.submit_transaction(operations, **kwargs)
        self.transactions.append(operations)  # the ones that landed
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _service_size(entity: dict[str, Any]) -> int:
    """An entity's size as Table Storage counts it against 1 MiB (UTF-16 strings, 8 bytes per property name's
    overhead, keys twice) - the documented formula."""
    size = 4 + 2 * (len(str(entity["PartitionKey"])) + len(str(entity["RowKey"]))) + 4
    for name, value in entity.items():
        if name in ("PartitionKey", "RowKey"):
            continue
        size += 8 + 2 * len(name)
        size += len(value.encode("utf-16-le")) + 4 if isinstance(value, str) else 8
    return size


def test_a_burst_of_the_largest_rows_stays_within_table_storage_s_entity_and_transaction_limits(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    """150 hits whose rows are all at the stored-row bound, in the costliest characters to send (an emoji is 2
    UTF-16 units and 12 bytes of escaped JSON): every entity written is under 1 MiB as the service counts it,
    every transaction's JSON under 4 MiB, and every hit is recorded and delivered."""
    import json

    from shared.runtime.store import StateStore

    rows = [
        email(clock, Subject=EMOJI * 20_000, SenderDisplayName=EMOJI * 20_000, Connectors="é" * 40_000)
        for _ in range(150)
    ]
    la.ingest("EmailEvents", rows, at=clock.now - timedelta(minutes=10))
    detector = make_detector(KQLWATCH_MAX_CARDS_PER_RUN="4")
    table = RecordingTable(detector.store._table)
    detector.store = StateStore(table)  # type: ignore[arg-type]
    outcome = detector.run(only_due=False).outcomes[0]
    assert outcome.ok and (outcome.new_hits, outcome.delivered) == (150, 150), outcome.log_line()
    packs = [op[1] for tx in table.transactions for op in tx if op[1].get("Kind") == "pack"]
    assert sum(len(p["Keys"].split(",")) for p in packs) == 150 and len(packs) > 2  # the bound split them
    assert max(_service_size(p) for p in packs) <= 1024 * 1024
    assert max(sum(len(json.dumps(op[1], default=str)) for op in tx) for tx in table.transactions) <= 4 * 1024 * 1024
    stored = {h.row["NetworkMessageId"]: h for h in detector.store.hits(outcome.rule_id)}
    assert len(stored) == 150 and all(h.truncated and h.status == DELIVERED for h in stored.values())


_NASTY = st.sampled_from(
    [
        EMOJI,
        "\U0001d518",
        "\U00010348",
        "\ud800",
        "\udfff",
        "\ud83d",
        "a",
        "é",
        "\u202e",
        "\n",
        "\x00",
        "<",
        "[x](https://evil.example)",
        "{{DATE()}}",
    ]
)
_PIECES = st.lists(_NASTY, max_size=60).map("".join)  # pieces of several characters too: links, templates
_VALUES = st.one_of(
    _PIECES,
    st.text(max_size=40),  # any code point, lone surrogates included
    st.builds(lambda unit, n: unit * n, _NASTY, st.integers(0, 40_000)),  # huge values of one kind
    st.lists(_PIECES, max_size=5),
    st.integers(),
    st.none(),
)


@pytest.fixture
def store(azurite: Azurite) -> Iterator[StateStore]:
    store = StateStore(connect(azurite.connection_string, "h" + uuid.uuid4().hex[:20], retry_total=0))
    store.ensure_table()
    yield store
    store.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    subject=_VALUES,
    name=_VALUES,
    extra=st.dictionaries(st.text("abcXYZ_", min_size=1, max_size=8), _VALUES, max_size=6),
)
def test_any_attacker_values_are_stored_in_full_form_and_build_a_card(
    store: StateStore, subject: Any, name: Any, extra: dict[str, Any]
) -> None:
    """Through Azurite: every value fits (no 400, so no minimal form), the card's columns survive, and the
    card built from what was stored, as from the original, encodes and stays under Teams' limit."""
    row = {**extra, **email(Clock()), "Subject": subject, "SenderDisplayName": name}
    rule_id = uuid.uuid4().hex  # a partition of its own
    [created] = store.insert_new(rule_id, [Hit(uuid.uuid4().hex, row, first_seen=Clock().now)])
    assert created.store_note == ""
    [back], _ = store.load_rows(rule_id, store.snapshot(rule_id).pending)  # the snapshot reads no rows
    assert back.status == PENDING
    assert back.row["NetworkMessageId"] == row["NetworkMessageId"]
    assert back.row["RecipientEmailAddress"] == row["RecipientEmailAddress"]
    for shown in (row, back.row):
        [post] = build_posts(CardContext(RULE, total=1), [shown])
        assert payload_size(post.payload) <= MAX_CARD_BYTES
        encode(post.payload).decode("utf-8")


# --- point 4: settings that used to escape validation -----------------------------------------------------


@pytest.mark.parametrize(
    ("change", "setting", "reason"),
    [
        (
            {"KQLWATCH_TEAMS_WEBHOOK_URL": "https://[::1/workflows/x?sig=SECRET-v6"},
            "KQLWATCH_TEAMS_WEBHOOK_URL",
            "not a valid URL",
        ),
        ({"KQLWATCH_LOGS_ENDPOINT": "https://[::1"}, "KQLWATCH_LOGS_ENDPOINT", "not a valid URL"),
        ({"KQLWATCH_LOGS_ENDPOINT": "https://127.0.0.1:99999"}, "KQLWATCH_LOGS_ENDPOINT", "not a valid URL"),
        ({"KQLWATCH_STATE_CONNECTION": "http://acct.table.core.windows.net"}, "KQLWATCH_STATE_CONNECTION", "https"),
        # 0.0.0.0 is not loopback by name, yet code that wrongly connects to it stays on this machine.
        (
            {
                "KQLWATCH_STATE_CONNECTION": "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=SECRET==;"
                "TableEndpoint=http://0.0.0.0:1/a;"
            },
            "KQLWATCH_STATE_CONNECTION",
            "TableEndpoint must be an https://",
        ),
        ({"KQLWATCH_MAX_CARDS_PER_RUN": "\u00b2"}, "KQLWATCH_MAX_CARDS_PER_RUN", "whole number"),
        ({"KQLWATCH_MAX_CARDS_PER_RUN": "\u0662\u0660"}, "KQLWATCH_MAX_CARDS_PER_RUN", "whole number"),
        ({"KQLWATCH_MAX_CATCHUP": "99999999d"}, "KQLWATCH_MAX_CATCHUP", "longer than the most allowed, 30d"),
        ({"KQLWATCH_DELIVERY_MAX_AGE": "PT99999999999999999999S"}, "KQLWATCH_DELIVERY_MAX_AGE", "longer than"),
        ({"KQLWATCH_SCHEDULE": "*/5 * * * *"}, "KQLWATCH_SCHEDULE", "must have 6 fields"),
        ({"KQLWATCH_SCHEDULE": "0 */5 * * * 8"}, "KQLWATCH_SCHEDULE", "day-of-week field '8'"),
        ({"KQLWATCH_SCHEDULE": "0 0-60 * * * *"}, "KQLWATCH_SCHEDULE", "minute field '0-60'"),
        ({"KQLWATCH_SCHEDULE": "0 */0 * * * *"}, "KQLWATCH_SCHEDULE", "step 0"),
        ({"KQLWATCH_SCHEDULE": "0 5 17-9 * * *"}, "KQLWATCH_SCHEDULE", "runs backwards"),
        ({"KQLWATCH_SCHEDULE": "0 5 * * Foo *"}, "KQLWATCH_SCHEDULE", "month field"),
        ({"KQLWATCH_RULES_DIR": "/nonexistent/kqlwatch-rules"}, "KQLWATCH_RULES_DIR", "does not exist"),
        ({"KQLWATCH_RULES_DIR": str(SEED_RULE)}, "KQLWATCH_RULES_DIR", "not a folder"),
        ({"KQLWATCH_PARAM_SenderDomains": ""}, "KQLWATCH_PARAM_SenderDomains", "is empty"),
        ({"KQLWATCH_PARAM_SenderDomains": " , "}, "KQLWATCH_PARAM_SenderDomains", "is empty"),
    ],
)
def test_settings_that_escaped_validation_exit_2_before_any_rule_runs(
    cli_env: dict[str, str],
    la: LogAnalyticsStandIn,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, str],
    setting: str,
    reason: str,
) -> None:
    for key, value in change.items():
        monkeypatch.setenv(key, value)
    assert main(["run", "--once"]) == 2
    captured = capsys.readouterr()
    assert f"configuration error: {setting} " in captured.err and reason in captured.err, captured.err
    assert "Traceback" not in captured.err and "SECRET" not in captured.err + captured.out
    assert la.requests == []  # stopped before any rule ran


def test_good_schedules_and_settings_are_accepted(env: dict[str, str]) -> None:
    from shared.runtime.settings import load_settings

    for schedule in ("0 */5 * * * *", "0 0 9-17 * * Mon-Fri", "30 15,45 8-18/2 1-31 Jan-Dec 0-6", "0 0 0 * * Sun"):
        assert load_settings({**env, "KQLWATCH_SCHEDULE": schedule}).schedule == schedule
    assert load_settings({**env, "KQLWATCH_MAX_CARDS_PER_RUN": "40"}).max_cards_per_run == 40
    assert load_settings({**env, "KQLWATCH_MAX_CATCHUP": "30d"}).max_catchup == timedelta(days=30)


@pytest.mark.parametrize("text", ["99999999d", "9999999999d", "P99999999999D", "PT1e9S", "1" * 10_000 + "d"])
def test_durations_are_bounded_and_never_overflow(text: str) -> None:
    with pytest.raises(ValueError, match=r"not a duration|longer than"):
        parse_duration(text)
    assert parse_duration("3650d") == timedelta(days=3650)


# --- point 5: no URL path in logs, errors or status ---------------------------------------------------------


def test_retry_logs_of_real_retries_never_show_the_path_or_query(
    hook: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Retired connector URLs carry their secret in the path; urllib3 logs the path when it retries."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")
    in_path = hook.url("soc").replace("/triggers/", "/SECRET-in-path-4f1c/triggers/")
    refused = "http://127.0.0.1:1/webhookb2/SECRET-conn-9a7e@tenant/IncomingWebhook/SECRET-b2/x"
    hook.always("soc", Response(503))
    client = TeamsClient(retries=2, backoff=0.01, min_interval=0.0, timeout=(2.0, 2.0))
    try:
        results = [client.post(in_path, {"type": "message", "attachments": [{}]}), client.post(refused, {})]
    finally:
        client.close()
    assert hook.attempts["soc"] == 3 and not any(r.ok for r in results)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("Retry: ") for m in messages)  # urllib3's status retry (503)
    assert any(m.startswith("Retrying (") and "connection broken" in m for m in messages)  # connection retry
    text = caplog.text + " ".join(messages) + " ".join(r.detail for r in results)
    assert "SECRET" not in text and "webhookb2" not in text and "/workflows/" not in text


def test_azure_sdk_request_logs_show_only_scheme_and_host(
    la: LogAnalyticsStandIn, make_detector: MakeDetector, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="azure")
    la.respond(Response.of_json(500, {"error": {"code": "Busy", "message": "try later"}}))
    detector = make_detector()
    detector.logs.query(
        detector.settings.workspace_id, "EmailEvents | take 1", clock.now - timedelta(hours=1), clock.now
    )
    requests_logged = [r.getMessage() for r in caplog.records if "Request URL" in r.getMessage()]
    assert len(requests_logged) == 2  # the first try and the SDK's retry
    assert "/v1/workspaces/" not in caplog.text and "https://127.0.0.1/…#" in caplog.text


def test_redaction_keeps_only_scheme_and_host() -> None:
    from shared.runtime.redact import redact_text

    text = (
        "posting to https://tenant.webhook.office.com/webhookb2/SECRET-1/IncomingWebhook/SECRET-2 failed; "
        "endpoint https://api.loganalytics.io; https://user:SECRET-3@h.example/p"
    )
    shown = redact_text(text)
    assert "SECRET" not in shown and "webhookb2" not in shown
    assert "https://tenant.webhook.office.com/…#" in shown and "endpoint https://api.loganalytics.io;" in shown


def test_status_output_redacts_urls(capsys: pytest.CaptureFixture[str]) -> None:
    print_table(
        ["rule", "last error"], [["r", "delivery failed: https://h.example/webhookb2/SECRET-x: HTTP 500"]], width=200
    )
    out = capsys.readouterr().out
    assert "SECRET" not in out and "https://h.example/…#" in out


# --- point 9: a crash never looks healthy -------------------------------------------------------------------


def test_after_a_killed_run_the_next_run_and_status_show_the_held_hits(
    la: LogAnalyticsStandIn,
    hook: WebhookReceiver,
    make_detector: MakeDetector,
    clock: Clock,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    rows = [email(clock) for _ in range(5)]
    la.ingest("EmailEvents", rows, at=clock.now - timedelta(minutes=10))
    killed = make_detector()
    killed.teams = KillingPoster(killed.teams, before=True)
    with pytest.raises(Killed):
        killed.run(only_due=False)
    lease_end = clock.now + timedelta(minutes=10)

    # `status` is offline: the state connection (and this test's table) is all it needs.
    for key in list(os.environ):
        if key.startswith("KQLWATCH_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("KQLWATCH_STATE_CONNECTION", env["KQLWATCH_STATE_CONNECTION"])
    monkeypatch.setenv("KQLWATCH_STATE_TABLE", env["KQLWATCH_STATE_TABLE"])
    monkeypatch.chdir(tmp_path)  # the default rules folder is then the app's own
    assert main(["status"]) == 0
    line = _status_line(capsys.readouterr().out)
    assert "run never finished" in line and f"5 until {lease_end:%Y-%m-%d %H:%M:%S}" in line

    clock.advance(timedelta(minutes=5))  # within the dead run's lease (issue 14: its run lease holds the rule)
    report = make_detector().run(only_due=False)
    outcome = report.outcomes[0]
    assert (outcome.ran, outcome.held_until, outcome.delivered) == (False, lease_end, 0)
    assert f"held by run {killed.run_id} until {lease_end:%Y-%m-%d %H:%M:%S} UTC" in outcome.skipped
    print_report(report)
    assert f"skipped  {outcome.name}: rule held by run {killed.run_id}" in capsys.readouterr().out
    assert main(["status"]) == 0
    line = _status_line(capsys.readouterr().out)
    assert "run never finished" in line and f"5 until {lease_end:%Y-%m-%d %H:%M:%S}" in line

    clock.advance(AFTER_LEASE)
    after = make_detector().run(only_due=False).outcomes[0]
    assert after.delivered == 5 and after.held == 0
    assert sorted(delivered_ids(hook)) == sorted(r["NetworkMessageId"] for r in rows)


def _status_line(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("Message from an Accepted Domain"))


def test_status_needs_only_the_state_connection(
    azurite: Azurite, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for key in list(os.environ):
        if key.startswith("KQLWATCH_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("KQLWATCH_STATE_CONNECTION", azurite.connection_string)
    monkeypatch.chdir(tmp_path)
    store = StateStore(connect(azurite.connection_string, "kqlwatch", retry_total=0))  # the default table
    store.ensure_table()
    store.close()
    assert main(["status"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "pending  leased" in out and "Message from an Accepted Domain" in out
