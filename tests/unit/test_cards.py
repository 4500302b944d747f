"""The Teams card: what a SOC analyst sees, and what an attacker who controls the email cannot make it do."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.rules.loader import load_rule
from shared.runtime.cards import MAX_CARD_BYTES, MAX_HITS_PER_CARD, CardContext, build_posts, payload_size
from tests.paths import SEED_RULE

RULE = load_rule(SEED_RULE)
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


def _row(i: int = 0, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "TimeGenerated": NOW - timedelta(minutes=i),
        "NetworkMessageId": f"00000000-0000-0000-0000-{i:012d}",
        "RecipientEmailAddress": f"user{i}@contoso.com",
        "SenderFromAddress": "ceo@contoso.com",
        "SenderMailFromAddress": "bounce@contoso.com",
        "SenderDisplayName": "CEO",
        "Subject": f"Invoice {i}",
        "SenderIPv4": "203.0.113.9",
        "AuthenticationDetails": '{"SPF":"temperror","DKIM":"none","DMARC":"temperror","CompAuth":"fail"}',
        "DeliveryAction": "Delivered",
        "DeliveryLocation": "Inbox/folder",
    }
    row.update(fields)
    return row


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _texts(card: dict[str, Any]) -> str:
    return " ".join(n["text"] for n in _walk(card) if isinstance(n.get("text"), str))


def test_card_shows_what_the_soc_needs() -> None:
    [post] = build_posts(CardContext(RULE, total=1, query_link="https://portal.azure.com/#blade/x"), [_row(1)])
    body = post.payload
    assert body["type"] == "message"
    attachment = body["attachments"][0]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    text = _texts(card)
    for expected in (
        "Message from an Accepted Domain with DMARC TempError",
        "Medium",
        "InitialAccess",
        "T1566",
        "1 new hit",
        "2026-11-27 11:59:00 UTC",
        "Invoice 1",
        "ceo@contoso[.]com",
        "bounce@contoso[.]com",
        "user1@contoso[.]com",
        "203.0.113.9",
        "SPF: ",
        "temperror",
        "DKIM: ",
        "CompAuth: ",
        "fail",
        "Delivered / Inbox/folder",
        "00000000-0000-0000-0000-000000000001",
    ):
        assert expected in text, expected
    urls = [n["url"] for n in _walk(card) if "url" in n]
    assert any(u.startswith("https://security.microsoft.com/emailentity?") and "000000000001" in u for u in urls)
    assert card["actions"][0]["url"] == "https://portal.azure.com/#blade/x"


def test_digest_cards_hold_at_most_25_hits_and_every_hit_appears() -> None:
    rows = [_row(i) for i in range(60)]
    posts = build_posts(CardContext(RULE, total=60), rows)
    assert [p.count for p in posts] == [25, 25, 10]
    shown = [t for p in posts for t in re.findall(r"0000-0000-0000-(\d{12})", _texts(p.payload))]
    assert sorted(int(s) for s in shown) == list(range(60))
    assert "60 new hits · showing 26-50" in _texts(posts[1].payload)
    assert all(payload_size(p.payload) <= MAX_CARD_BYTES for p in posts)


def test_huge_values_still_fit_under_the_teams_limit() -> None:
    rows = [
        _row(i, Subject="S" * 100_000, SenderDisplayName="D" * 50_000, SenderFromAddress="a" * 5000 + "@x.com")
        for i in range(MAX_HITS_PER_CARD)
    ]
    posts = build_posts(CardContext(RULE, total=len(rows)), rows)
    assert sum(p.count for p in posts) == MAX_HITS_PER_CARD
    assert all(payload_size(p.payload) <= MAX_CARD_BYTES for p in posts)


def test_generic_rows_from_other_rules_are_shown_column_by_column() -> None:
    [post] = build_posts(CardContext(RULE, total=1), [{"AccountUpn": "x@y.com", "Count": 7, "Data": {"k": [1]}}])
    text = _texts(post.payload)
    assert "AccountUpn: " in text and "x@y[.]com" in text and "Count: " in text and '{"k":[1]}' in text


HOSTILE_PIECES = [
    "[click](https://evil.example/pay)",
    "<img src=x onerror=alert(1)>",
    "{{DATE(2020-01-01T00:00:00Z)}}",
    "\u202egnp.exe",
    "**bold**",
    "\x00\x07\x1b",
    "javascript:alert(1)",
    "![i](http://evil/i.png)",
    "www.evil.example",
    "evil.example",
    "\n- item\n",
    "&lt;b&gt;",
    "\u200f",
    "<at>everyone</at>",
]


@settings(max_examples=200, deadline=None)
@given(
    subject=st.lists(st.sampled_from(HOSTILE_PIECES) | st.text(max_size=20), max_size=8).map("".join),
    name=st.lists(st.sampled_from(HOSTILE_PIECES), max_size=4).map("".join),
    other=st.one_of(st.none(), st.integers(), st.floats(allow_nan=False), st.dictionaries(st.text(), st.text())),
)
def test_attacker_text_never_becomes_markup_or_links(subject: str, name: str, other: Any) -> None:
    posts = build_posts(
        CardContext(RULE, total=1), [_row(1, Subject=subject, SenderDisplayName=name, DeliveryLocation=other)]
    )
    for post in posts:
        card = post.payload["attachments"][0]["content"]
        assert payload_size(post.payload) <= MAX_CARD_BYTES
        json.dumps(card)  # valid JSON for any input
        for node in _walk(card):
            if node.get("type") in ("TextBlock", "Fact"):
                raise AssertionError("data must only go into TextRuns (Teams renders Markdown in TextBlock/Fact)")
            if "url" in node:
                assert node["url"].startswith(("https://security.microsoft.com/", "https://portal.azure.com/"))
        text = _texts(card)
        assert "https://evil" not in text and "http://evil" not in text and "evil.example" not in text
        assert "{{" not in text and "\u202e" not in text and "\x00" not in text and "javascript:" not in text
