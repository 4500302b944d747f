"""`kqlwatch run --once` and the timer function: exit codes, messages, no tracebacks, no secrets."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from shared.runtime.settings import load_settings
from shared.standins._http import Response
from shared.standins.clock import Clock
from shared.standins.loganalytics import LogAnalyticsStandIn
from shared.standins.rows import email_row
from shared.standins.teams import WebhookReceiver
from shared.workbench.cli import main
from tests.conftest import ROOT, MakeDetector, delivered_ids, email


def test_run_once_delivers_and_exits_0(
    cli_env: dict[str, str],
    la: LogAnalyticsStandIn,
    hook: WebhookReceiver,
    clock: Clock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    row = email(clock)
    la.ingest("EmailEvents", [row], at=clock.now - timedelta(minutes=10))
    la.clock = lambda: clock.now  # the CLI uses the real clock; keep the stand-in on the same one
    assert main(["run", "--once"]) == 0
    assert delivered_ids(hook) == [row["NetworkMessageId"]]
    out = capsys.readouterr().out
    assert "ok       Message from an Accepted Domain with DMARC TempError: 1 rows, 1 new, 1 delivered" in out


def test_deferred_delivery_is_not_an_error(
    cli_env: dict[str, str], la: LogAnalyticsStandIn, hook: WebhookReceiver, clock: Clock
) -> None:
    la.ingest("EmailEvents", [email(clock)], at=clock.now - timedelta(minutes=10))
    hook.always("soc", Response(503))
    assert main(["run", "--once"]) == 0


def test_a_failed_rule_exits_1(
    cli_env: dict[str, str], la: LogAnalyticsStandIn, hook: WebhookReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    la.respond(Response.of_json(400, {"error": {"code": "BadArgumentError", "message": "Syntax error near |"}}))
    assert main(["run", "--once"]) == 1
    assert "FAILED" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "setting", "reason"),
    [
        ({"KQLWATCH_WORKSPACE_ID": None}, "KQLWATCH_WORKSPACE_ID", "is not set"),
        ({"KQLWATCH_WORKSPACE_ID": "  "}, "KQLWATCH_WORKSPACE_ID", "is not set"),
        ({"KQLWATCH_WORKSPACE_ID": "my-workspace"}, "KQLWATCH_WORKSPACE_ID", "GUID"),
        ({"KQLWATCH_STATE_CONNECTION": None}, "KQLWATCH_STATE_CONNECTION", "is not set"),
        ({"KQLWATCH_TEAMS_WEBHOOK_URL": None}, "KQLWATCH_TEAMS_WEBHOOK_URL", "is not set"),
        ({"KQLWATCH_TEAMS_WEBHOOK_URL": "http://example.com/hook?sig=SECRET-x"}, "KQLWATCH_TEAMS_WEBHOOK_URL", "https"),
        ({"KQLWATCH_LOGS_ENDPOINT": "ftp://x"}, "KQLWATCH_LOGS_ENDPOINT", "https"),
        ({"KQLWATCH_STATE_TABLE": "bad-name"}, "KQLWATCH_STATE_TABLE", "letters or digits"),
        ({"KQLWATCH_MAX_CATCHUP": "a day"}, "KQLWATCH_MAX_CATCHUP", "not a duration"),
        ({"KQLWATCH_PARAM_SenderDomain": "contoso.com"}, "KQLWATCH_PARAM_SenderDomain", "names no top-level"),
        ({"KQLWATCH_PARAM_Bad-Name": "x"}, "KQLWATCH_PARAM_Bad-Name", "not a valid parameter name"),
        ({"KQLWATCH_STATE_CONNECTION": "nonsense"}, "KQLWATCH_STATE_CONNECTION", "connection string"),
        ({"KQLWATCH_DNS_SERVERS": "dns.example:53"}, "KQLWATCH_DNS_SERVERS", "not an IP address"),  # issue 16
        ({"KQLWATCH_CONCURRENCY": "0"}, "KQLWATCH_CONCURRENCY", "from 1 to 5"),  # issue 14
        ({"KQLWATCH_CONCURRENCY": "6"}, "KQLWATCH_CONCURRENCY", "5 queries per identity"),
        ({"KQLWATCH_CONCURRENCY": "²"}, "KQLWATCH_CONCURRENCY", "whole number"),
    ],
)
def test_bad_configuration_exits_2_naming_the_setting(
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, str | None],
    setting: str,
    reason: str,
) -> None:
    for key, value in change.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    assert main(["run", "--once"]) == 2
    err = capsys.readouterr().err
    assert f"configuration error: {setting} " in err and reason in err
    assert "Traceback" not in err and "SECRET" not in err


def test_command_line_prints_no_traceback_and_no_secret(cli_env: dict[str, str], tmp_path: Path) -> None:
    env = {**os.environ, **cli_env, "KQLWATCH_TEAMS_WEBHOOK_URL": "http://hooks.example.com/x?sig=SECRET-abc"}
    proc = subprocess.run(
        [sys.executable, "-m", "shared.workbench.cli", "run", "--once"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "KQLWATCH_TEAMS_WEBHOOK_URL must be an https:// URL" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and "SECRET" not in proc.stderr + proc.stdout


def test_webhook_secret_never_reaches_logs_or_errors(
    env: dict[str, str],
    la: LogAnalyticsStandIn,
    hook: WebhookReceiver,
    clock: Clock,
    make_detector: MakeDetector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    la.ingest("EmailEvents", [email(clock)], at=clock.now - timedelta(minutes=10))
    urls = f"{hook.url('soc')},https://127.0.0.1:1/workflows/gone/paths/invoke?sig=SECRET-gone"
    hook.always("soc", Response(429, headers={"Retry-After": "120"}))
    report = make_detector(KQLWATCH_TEAMS_WEBHOOK_URL=urls).run(only_due=False)
    outcome = report.outcomes[0]
    assert outcome.deferred == 1 and len(outcome.warnings) >= 2
    text = caplog.text + repr(report)
    assert "SECRET" not in text
    assert "Retry-After 120" in text and "connection failed" in text
    assert load_settings({**env, "KQLWATCH_TEAMS_WEBHOOK_URL": urls}).webhook_urls[1].endswith("SECRET-gone")


def test_dispatch_and_run_rule_functions_run_the_due_rules(
    cli_env: dict[str, str],
    la: LogAnalyticsStandIn,
    hook: WebhookReceiver,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 14: the timer `dispatch` puts one message per due rule on its output binding; `run_rule` runs it."""
    from azure.functions.queue import QueueMessage
    from azure.functions.timer import TimerRequest

    from shared.workbench.queuecmd import _Out

    monkeypatch.setenv("KQLWATCH_SCHEDULE", "0 */5 * * * *")
    import function_app

    functions = {f.get_function_name(): f for f in function_app.app.get_functions()}
    assert sorted(str(name) for name in functions) == ["dispatch", "run_rule", "run_rule_poison"]
    bindings = functions["dispatch"].get_function_json()
    assert '"schedule": "%KQLWATCH_SCHEDULE%"' in bindings and '"runOnStartup": false' in bindings
    assert '"useMonitor": true' in bindings
    now = datetime.now(timezone.utc)
    row = email_row(now - timedelta(minutes=15))
    la.ingest("EmailEvents", [row], at=now - timedelta(minutes=10))
    la.clock = lambda: datetime.now(timezone.utc)
    out = _Out()
    functions["dispatch"].get_user_function()(TimerRequest(past_due=True), out)
    [body] = out.get()
    functions["run_rule"].get_user_function()(QueueMessage(id="1", body=body, dequeue_count=1))  # type: ignore[no-untyped-call]
    assert delivered_ids(hook) == [row["NetworkMessageId"]]
    again = _Out()
    functions["dispatch"].get_user_function()(TimerRequest(past_due=False), again)
    assert again.get() == []  # not due again yet: nothing dispatched


def test_function_app_import_stays_light() -> None:
    """Cold start: importing function_app must not pull in the Azure SDKs or our heavy modules."""
    code = (
        "import sys, function_app; heavy = [m for m in ('azure.monitor.query', 'azure.data.tables', "
        "'azure.identity', 'shared.runtime.detector', 'requests', 'yaml') if m in sys.modules]; print(heavy)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("http://queues.example.com/devstoreaccount1", "http only for loopback"),
        ("DefaultEndpointsProtocol=http;AccountName=a;AccountKey=a2V5", "QueueEndpoint: use https"),
        ("", "is not set"),
    ],
)
def test_bad_queue_connection_exits_2_naming_the_setting(
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    value: str,
    reason: str,
) -> None:
    """Issue 14: `kqlwatch dispatch` / `worker` validate KQLWATCH_QUEUE_CONNECTION as the state connection is."""
    monkeypatch.setenv("KQLWATCH_QUEUE_CONNECTION", value)
    assert main(["dispatch"]) == 2
    err = capsys.readouterr().err
    assert "KQLWATCH_QUEUE_CONNECTION" in err and reason in err and "a2V5" not in err
