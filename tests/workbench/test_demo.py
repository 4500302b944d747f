"""The README's first command: the demo runs the real detector on the bundled samples, twice."""

from __future__ import annotations

import io
import json
import re
from datetime import datetime, timezone
from pathlib import Path

from shared.rules.loader import load_rule
from shared.schemas import table_schema
from shared.workbench.demo import SAMPLES, demo, sample_rows
from shared.workbench.engine import Engine
from tests.conftest import SEED_RULE


def _seed_hits_offline() -> int:
    """What the seed rule returns on the samples, by message-recipient pair, straight from the engine."""
    rule = load_rule(SEED_RULE)
    rows = [json.loads(line) for line in SAMPLES.read_text().splitlines() if line.strip()]
    schema = table_schema("EmailEvents") or {}
    with Engine() as engine:
        engine.load_rows("EmailEvents", rows, schema)
        result = engine.query(rule.query + "| summarize by NetworkMessageId, RecipientEmailAddress")
    return len(result.rows)


def test_demo_alerts_every_hit_once_and_renders_a_preview(tmp_path: Path) -> None:
    out = io.StringIO()
    assert demo(out_dir=tmp_path, stream=out) == 0
    text = out.getvalue()
    expected = _seed_hits_offline()
    assert expected > 20
    assert re.search(
        rf"ok +Message from an Accepted Domain with DMARC TempError: \d+ rows, {expected} new, "
        rf"{expected} delivered, 0 deferred",
        text,
    )
    assert "0 card(s) posted by run 2" in text
    assert "hxxps[:]//evil[.]example" in text  # hostile sample subjects and names shown defanged
    page = (tmp_path / "cards.html").read_text()
    assert "Message from an Accepted Domain with DMARC TempError" in page


def test_demo_can_show_a_defender_sourced_card(tmp_path: Path) -> None:
    """Issue 15: `kqlwatch demo --defender` runs the seed rule on the Graph stand-in (advanced hunting)."""
    out = io.StringIO()
    assert demo(out_dir=tmp_path, stream=out, defender=True) == 0
    text = out.getvalue()
    expected = _seed_hits_offline()
    assert re.search(
        rf"ok +Message from an Accepted Domain with DMARC TempError: \d+ rows, {expected} new, {expected} delivered",
        text,
    )
    assert "Seed rule: 1 query to Defender advanced hunting, 0 to the workspace" in text
    assert "0 card(s) posted by run 2" in text
    assert "Message from an Accepted Domain with DMARC TempError" in (tmp_path / "cards.html").read_text()


def test_sample_times_are_moved_into_the_last_hour() -> None:
    now = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
    rows = sample_rows(now)
    times = [r["TimeGenerated"] for r in rows]
    assert min(times) >= now.replace(hour=11, minute=3) and max(times) <= now.replace(hour=11, minute=58)
    assert all(r["_IngestedAt"] > r["TimeGenerated"] for r in rows)
