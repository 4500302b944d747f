"""The cards kqlwatch builds, rendered by Microsoft's adaptivecards JS renderer (tools/render-cards.js, jsdom).

One Node process per render call: every card of a test goes into a single batch.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from shared import preview
from shared.card import CardContext, Post, build_posts, defender_link, operational_card, query_link
from shared.errors import KqlwatchError
from shared.preview import RenderResult, card_content, card_text, render_cards, write_preview
from shared.rules import Rule, parse_rule
from shared.standins.rows import email_row

ROOT = Path(__file__).resolve().parents[1]
SEED_RULE = ROOT / "rules" / "accepted-domain-dmarc-temperror.yaml"
WHEN = datetime(2026, 11, 27, 9, 30, 5, tzinfo=UTC)
WORKSPACE_RESOURCE = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-soc"
    "/providers/Microsoft.OperationalInsights/workspaces/soc-ws"
)
OUR_HOSTS = {"security.microsoft.com", "portal.azure.com"}
EVIL = "evil.example"
BIDI_OR_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
ALLOWED_TAGS = {"div", "p", "span", "a", "button", "br", "strong", "em"}


def seed_rule() -> Rule:
    return parse_rule(SEED_RULE.read_text(encoding="utf-8"), "seed")


def email(**fields: Any) -> dict[str, Any]:
    return email_row(WHEN, **{"NetworkMessageId": "6a3b1f5e-2c1d-4e6f-9a7b-0c8d9e1f2a3b", **fields})


HTML_SUBJECT = '<img src=x onerror=alert(1)><a href="https://evil.example/a">click</a><script>alert(2)</script>'
DATE_SUBJECT = "Payment due {{DATE(2017-02-14T06:08:39Z, SHORT)}} {{TIME(2017-02-14T06:08:39Z)}}"

HOSTILE_EMAILS: list[dict[str, Any]] = [
    email(),
    email(
        Subject="[Verify your account](https://evil.example/login) now", SenderDisplayName="[IT](http://evil.example)"
    ),
    email(Subject=HTML_SUBJECT, SenderDisplayName="<b>Admin</b>"),
    email(Subject=DATE_SUBJECT),
    email(Subject="Invoice_\u202egnp.exe and \u2066isolate\u2069 \u200f"),
    email(Subject="a\x00b\x1b[31mred\x07\r\nnext\tline\u2028sep\ufeffbom\x9b"),
    email(Subject="A" * 100_000 + " https://evil.example/tail", SenderDisplayName="B" * 50_000),
    email(
        Subject="see www.evil.example or evil.example/x, mailto:x@evil.example javascript:alert(1)",
        RecipientEmailAddress='bob@contoso.com"><img src=x>',
    ),
    email(
        Subject=12345,
        SenderFromAddress={"nested": ["https://evil.example"]},
        RecipientEmailAddress=None,
        NetworkMessageId=42,
        TimeGenerated="not a time <i>",
        DeliveryAction=[1, 2],
        SenderIPv4=3.5,
        AuthenticationDetails="not json {",
    ),
    email(Subject=None, AuthenticationDetails={"SPF": "temperror", "DMARC": "**bold**"}, SPF="fail"),
    {"Subject": "only a subject"},
    {"NetworkMessageId": "abc", "RecipientEmailAddress": "x@contoso.com"},
    {"NetworkMessageId": "", "Subject": ""},
]

GENERIC_ROWS: list[dict[str, Any]] = [
    {"Account": "[x](https://evil.example)", "Count": 3, "Data": {"k": "<img src=x>"}, "Empty": None},
    {f"Col{i}": f"https://evil.example/{i} <b>{i}</b>" for i in range(15)},
    {"<img src=x>": "key is html", "{{DATE(2017-02-14T06:08:39Z)}}": True, "\u202eKey": b"bytes"},
]


@dataclasses.dataclass
class Built:
    posts: list[Post]
    payloads: list[dict[str, Any]]
    links: set[str]  # every link kqlwatch built for these cards
    rendered: RenderResult


def hostile_posts() -> tuple[list[Post], set[str]]:
    rule = seed_rule()
    link = query_link(rule.query, WORKSPACE_RESOURCE, WHEN, WHEN, "https://api.loganalytics.io")
    assert link
    posts = build_posts(CardContext(rule, total=len(HOSTILE_EMAILS), query_link=link), HOSTILE_EMAILS)
    posts += build_posts(CardContext(rule, total=len(GENERIC_ROWS)), GENERIC_ROWS)
    for severity in ("High", "Low", "Informational"):
        styled = dataclasses.replace(
            rule, severity=severity, name=f"<b>{severity}</b> [rule](https://evil.example)", tactics=(), techniques=()
        )
        posts += build_posts(CardContext(styled, total=1), HOSTILE_EMAILS[:1])
    # 60 hits of 100 KB: the builder must shorten and split them into cards under Teams' size limit
    big = [email(Subject="S" * 100_000 + str(i), NetworkMessageId=f"id-{i}") for i in range(60)]
    posts += build_posts(CardContext(rule, total=len(big)), big)
    links = {link} | {found for row in [*HOSTILE_EMAILS, *big] if (found := defender_link(row))}
    return posts, links


def operational_payloads() -> list[dict[str, Any]]:
    return [
        operational_card(
            "Rule <b>failing</b> [x](https://evil.example)",
            [("Error", HTML_SUBJECT), ("Since", DATE_SUBJECT), ("Detail", "\u202e\x1b[2J")],
        ),
        operational_card("Recovered", [("Rule", "seed")], style="good"),
    ]


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []
        self.tags: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("href", "src", "srcdoc", "action", "formaction"):
                assert tag == "a" and name == "href", f"unexpected {tag} {name}={value!r}"
                self.hrefs.append(value or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_html(html: str) -> Links:
    parser = Links()
    parser.feed(html)
    parser.close()
    return parser


@pytest.fixture(scope="module")
def built() -> Built:
    posts, links = hostile_posts()
    payloads = [post.payload for post in posts] + operational_payloads()
    rendered = render_cards([card_content(p) for p in payloads], "kqlwatch hostile rows")
    return Built(posts, payloads, links, rendered)


def test_built_cards_are_valid_for_teams(built: Built) -> None:
    rendered = built.rendered
    assert len(rendered.results) == len(built.payloads) == len(built.posts) + 2
    assert len(built.posts) >= 8
    for i, result in enumerate(rendered.results):
        assert result.ok, f"card {i}: {result.errors}"
        assert result.errors == []
        assert result.warnings == [], f"card {i}: {result.warnings}"
        assert result.html.startswith("<div")
    assert rendered.ok
    assert "<title>kqlwatch hostile rows</title>" in rendered.page
    assert rendered.page.count('class="kw-card"') == len(built.payloads)


def test_only_links_we_build(built: Built) -> None:
    seen: set[str] = set()
    for i, result in enumerate(built.rendered.results):
        parsed = parse_html(result.html)
        assert parsed.tags <= ALLOWED_TAGS, f"card {i}: {parsed.tags - ALLOWED_TAGS}"
        for href in parsed.hrefs:
            parts = urlsplit(href)
            assert parts.scheme == "https" and parts.hostname in OUR_HOSTS, f"card {i}: data became a link: {href}"
            assert href in built.links, f"card {i}: a link kqlwatch did not build: {href}"
            seen.add(href)
        assert "<img" not in result.html and "<script" not in result.html and "<b>" not in result.html
        if i < len(built.posts):  # operational cards: see test_operational_card_values_are_cleaned
            text = "".join(parsed.text)
            assert not BIDI_OR_CONTROL.search(text), f"card {i} shows bidi/control characters"
            assert "Feb 14, 2017" not in text, f"card {i}: the renderer evaluated a {{{{DATE()}}}} from the data"
    assert seen == set()  # no <a> at all: links are Action.OpenUrl buttons, never inline selectAction links
    # Card actions render as <button> (Teams opens the URL on click): check their URLs in the cards themselves.
    actions = [a for p in built.payloads for a in card_content(p).get("actions", [])]
    assert actions and all(
        a["url"] in built.links and urlsplit(a["url"]).hostname == "portal.azure.com" for a in actions
    )
    assert sum(r.html.count(">Open query in Log Analytics<") for r in built.rendered.results) == len(actions)
    in_body = [
        a for p in built.payloads for b in card_content(p)["body"] if b.get("type") == "ActionSet" for a in b["actions"]
    ]
    assert in_body and all(
        a["url"] in built.links and urlsplit(a["url"]).hostname == "security.microsoft.com" for a in in_body
    )
    assert sum(r.html.count(">Open in Defender<") for r in built.rendered.results) == len(in_body)


def test_hostile_values_are_shown_as_text(built: Built) -> None:
    html_card = next(
        i
        for i, p in enumerate(built.posts)
        if any(r.get("Subject") == HTML_SUBJECT for r in HOSTILE_EMAILS[p.first : p.first + p.count])
    )
    text = "".join(parse_html(built.rendered.results[html_card].html).text)
    assert "<img src=x onerror=alert(1)>" in text  # visible, escaped in the HTML
    assert "Quarterly numbers" in text
    assert "evil[.]example" in text and "hxxps[:]//" in text  # defanged, not linked
    assert "DATE(2017-02-14T06:08:39Z, SHORT)" in text  # not evaluated by the renderer's {{DATE()}} support
    assert "{{DATE(" not in text
    assert "[U+202E]" in text


def test_operational_card_values_are_cleaned(built: Built) -> None:
    for result in built.rendered.results[len(built.posts) :]:
        text = "".join(parse_html(result.html).text)
        assert not BIDI_OR_CONTROL.search(text), "bidi/control characters shown"
        assert "Feb 14, 2017" not in text, "the renderer evaluated {{DATE()}}"


def test_the_validator_can_fail() -> None:
    good_run = {"type": "TextRun", "text": "ok"}
    broken: list[dict[str, Any]] = [
        {"type": "AdaptiveCard", "version": "1.4", "body": [{"type": "NoSuchElement"}]},
        {
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": [{"type": "RichTextBlock", "inlines": [{"type": "TextRun"}]}],
        },
        {
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": [{"type": "RichTextBlock", "inlines": [{**good_run, "weight": "Heaviest"}]}],
        },
        {"type": "AdaptiveCard", "version": "1.4", "body": [{"type": "Container", "style": "purple", "items": []}]},
        {"type": "AdaptiveCard", "version": "1.5", "body": [{"type": "TextBlock", "text": "x"}]},
        {"type": "AdaptiveCard", "body": [{"type": "TextBlock", "text": "x"}]},
        {"type": "Card", "version": "1.4", "body": []},
        {"type": "AdaptiveCard", "version": "1.4", "actions": [{"type": "Action.Nope", "title": "x"}]},
        {"type": "AdaptiveCard", "version": "1.4", "actions": [{"type": "Action.OpenUrl", "title": "no url"}]},
        {
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": [{"type": "RichTextBlock", "inlines": [{"type": "TextBlock", "text": "not an inline"}]}],
        },
        {"type": "AdaptiveCard", "version": "1.4", "body": [{"type": "TextBlock", "text": 5}]},
        {
            "type": "AdaptiveCard",
            "version": "1.4",
            "actions": [{"type": "Action.OpenUrl", "title": "x", "url": "javascript:alert(1)"}],
        },
        {"type": "AdaptiveCard", "version": "1.4", "body": [{"type": "TextBlock", "text": "x" * 30_000}]},
    ]
    # Controls: valid cards showing that the HTML checks above are meaningful with this renderer. Markdown in
    # a TextBlock becomes a link, and {{DATE()}} in a TextRun is evaluated; a TextRun's selectAction is a link.
    controls: list[dict[str, Any]] = [
        {
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": [{"type": "TextBlock", "text": "[x](https://evil.example/)"}],
        },
        {
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": [
                {
                    "type": "RichTextBlock",
                    "inlines": [
                        {"type": "TextRun", "text": "{{DATE(2017-02-14T06:08:39Z, LONG)}}"},
                        {**good_run, "selectAction": {"type": "Action.OpenUrl", "url": "https://example.com/"}},
                    ],
                }
            ],
        },
    ]
    rendered = render_cards(broken + controls, "broken")
    for card, result in zip(broken, rendered.results[: len(broken)], strict=True):
        assert not result.ok and result.errors, f"accepted: {card}"
    expected = [
        "UnknownElementType",
        'TextRun needs a string "text"',
        'Invalid value "Heaviest" for property "weight"',
        'Invalid value "purple" for property "style"',
        "UnsupportedCardVersion",
        "version is missing",
        'root type is "Card"',
        "UnknownActionType",
        'Property "url" must be set',
        "only TextRun",
        'TextBlock needs a string "text"',
        "javascript",
        "Teams drops messages",
    ]
    for fragment, result in zip(expected, rendered.results[: len(broken)], strict=True):
        assert any(fragment in error for error in result.errors), (fragment, result.errors)
    link, date = rendered.results[len(broken) :]
    assert link.ok and date.ok
    assert parse_html(link.html).hrefs == ["https://evil.example/"]
    assert "{{DATE(" not in date.html and "February 14, 2017" in date.html
    assert parse_html(date.html).hrefs == ["https://example.com/"]
    assert not rendered.ok


def test_card_text_shows_the_hit() -> None:
    rule = seed_rule()
    link = query_link(rule.query, WORKSPACE_RESOURCE, WHEN, WHEN, "https://api.loganalytics.io")
    rows = [email(), email(Subject="Second <b>one</b>\x1b[31m", NetworkMessageId="n2")]
    [post] = build_posts(CardContext(rule, total=2, query_link=link), rows)
    text = card_text(post.payload)
    assert rule.name in text
    assert "Quarterly numbers" in text and "Second <b>one</b>" in text
    assert "\x1b" not in text
    assert "─" * 20 in text
    assert "[Open in Defender] security.microsoft.com" in text
    assert "[Open query in Log Analytics] portal.azure.com" in text
    assert "https://" not in text
    assert card_text(card_content(post.payload)) == text


def test_write_preview(tmp_path: Path) -> None:
    [post] = build_posts(CardContext(seed_rule(), total=1), [email()])
    path = write_preview([card_content(post.payload)], "Preview <&>", tmp_path / "out" / "preview.html")
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>")
    assert "<h1>Preview &lt;&amp;&gt;</h1>" in page
    assert "Quarterly numbers" in page and "1 card(s), 1 valid" in page


def test_missing_node_or_modules_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    card = {"type": "AdaptiveCard", "version": "1.4", "body": []}
    monkeypatch.setattr(shutil, "which", lambda _: None)
    with pytest.raises(KqlwatchError, match="npm ci"):
        render_cards([card], "x")
    monkeypatch.undo()
    monkeypatch.setattr(preview, "ROOT", tmp_path)
    with pytest.raises(KqlwatchError, match=r"adaptivecards, jsdom not installed .*run `npm ci`"):
        render_cards([card], "x")
