"""The backtest's HTML report in a real headless browser (Debian's chromium, unpacked by
scripts/install-chromium.sh): the chart has one bar per day with that day's count, and attacker-chosen
senders, recipients and message ids stay text - no element, no script, no request comes of them."""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.workbench.cli import main
from tests.conftest import ROOT, SEED_RULE

CHROMIUM = ROOT / ".cache" / "chromium" / "chromium"
HOSTILE_SENDER = '"><img src=x onerror="document.title=\'pwned\'">@contoso.com'
HOSTILE_ID = "</td></tr></table></svg><script>document.title='pwned'</script>"
HOSTILE_RECIPIENT = "<svg onload=\"document.title='pwned'\">@contoso.com"


def _chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    reason = f"no headless browser at {CHROMIUM}: run scripts/install-chromium.sh (scripts/setup.sh does)"
    if os.environ.get("CI"):
        pytest.fail(reason)  # CI installs it: a missing browser there is a broken setup, not a skip
    pytest.skip(reason)


class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_title:
            self.title += data


def _rows() -> list[dict[str, Any]]:
    start = datetime(2026, 11, 1, 1, tzinfo=timezone.utc)
    rows = []
    # 3 days: 2, 0 and 3 alerts; the hostile values on day 3.
    for day, count in ((0, 2), (1, 0), (2, 3)):
        for n in range(count):
            at = start + timedelta(days=day, hours=n)
            hostile = day == 2
            rows.append(
                {
                    "TimeGenerated": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "NetworkMessageId": HOSTILE_ID + str(n) if hostile else f"m{day}{n}",
                    "RecipientEmailAddress": HOSTILE_RECIPIENT if hostile else "a@contoso.com",
                    "SenderFromAddress": HOSTILE_SENDER if hostile else "b@contoso.com",
                    "SenderMailFromDomain": "contoso.com",
                    "EmailDirection": "Inbound",
                    "AuthenticationDetails": json.dumps({"DMARC": "temperror"}),
                }
            )
    rows.append(
        {**rows[0], "NetworkMessageId": "quiet", "TimeGenerated": "2026-11-02T12:00:00Z", "EmailDirection": "Outbound"}
    )
    return rows


def test_the_report_renders_in_chromium_with_the_right_bars_and_no_injected_markup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    browser = _chromium()
    data = tmp_path / "EmailEvents.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows()), encoding="utf-8")
    page = tmp_path / "report.html"
    rule_doc = yaml.safe_load(SEED_RULE.read_text(encoding="utf-8"))
    rule_doc.update(queryFrequency="1h", queryPeriod="1h")  # 72 runs rather than 864: the same pipeline
    rule_doc["kqlwatch"].pop("tests", None)
    rule = tmp_path / "rules" / "seed-1h.yaml"
    rule.parent.mkdir()
    rule.write_text(yaml.safe_dump(rule_doc), encoding="utf-8")
    period = ["--from", "2026-11-01T00:00:00Z", "--days", "3"]
    code = main(["backtest", str(rule), "--data", f"EmailEvents={data}", *period, "--html", str(page)])
    _, err = capsys.readouterr()
    assert code == 0, err
    done = subprocess.run(
        [str(browser), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    dom = _Dom()
    dom.feed(done.stdout)
    bars = [attrs for tag, attrs in dom.tags if tag == "rect" and attrs.get("class") == "bar"]
    assert [(b["data-day"], int(b["data-alerts"])) for b in bars] == [
        ("2026-11-01", 2),
        ("2026-11-02", 0),
        ("2026-11-03", 3),
    ]
    heights = [float(b["height"]) for b in bars]
    assert heights[2] > heights[0] > heights[1] == 0  # bar height follows the count
    # Nothing the attacker wrote became markup, and no script ran (the title is the report's own).
    assert not [t for t, _ in dom.tags if t in ("script", "img", "iframe", "object")]
    assert [t for t, _ in dom.tags].count("svg") == 1
    assert not any(k.startswith("on") for _, attrs in dom.tags for k in attrs)
    assert dom.title.startswith("kqlwatch backtest:") and "pwned" not in dom.title
    text = "".join(dom.text)
    assert HOSTILE_SENDER in text and HOSTILE_RECIPIENT in text and HOSTILE_ID + "0" in text
    assert re.search(r"5 alerts, \d+ cards", text)
