"""Build the Adaptive Cards (1.4) that Teams Workflows webhooks accept. Pure: no I/O.

Every value from the data goes into a RichTextBlock TextRun (never Markdown), sanitized. Links are
Action.OpenUrl buttons (an ActionSet under each hit, the card's `actions`), never a TextRun's selectAction:
some Teams clients show those as plain text. Hits are grouped into digest cards of at most 25; a card that
would exceed Teams' ~28 KB limit is rebuilt with shorter values, then split.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from shared.rules.loader import Rule
from shared.runtime.dnsevidence import evidence_blocks  # issue 16
from shared.runtime.hits import WORKSPACE_COLUMN
from shared.runtime.sanitize import clean, format_time, scrub_surrogates, truncate

MAX_HITS_PER_CARD = 25
# Teams drops messages over ~28 KB after answering 202, and Microsoft does not say how it counts: a card of
# 24,307 bytes as sent (compact UTF-8) is 28,684 bytes with \u-escaped non-ASCII. payload_size is the larger.
MAX_CARD_BYTES = 27_500
# Workflows' post-card step shows "this card couldn't be displayed" for 1.5; nothing here is newer than 1.2.
CARD_VERSION = "1.4"
_VALUE_LIMITS = (120, 60, 30)  # tried in turn until the card fits
SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
_SEVERITY_STYLE = {"High": "attention", "Medium": "warning", "Low": "accent", "Informational": "default"}
_PORTALS = {"api.loganalytics.us": "https://portal.azure.us", "api.loganalytics.azure.cn": "https://portal.azure.cn"}
_GENERIC_COLUMNS = 12
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# One non-ASCII character per separator: each costs 6 bytes where Teams counts \u-escaped JSON (no-break
# spaces around it cost 25 hits their place in a card).
_GAP = " \u00b7 "
_SEP = " \u00b7 "


@dataclass(frozen=True)
class CardContext:
    rule: Rule
    total: int  # hits to report in this run (for "x of y")
    query_link: str | None = None
    single_cards: int = 10  # AlertPerResult: this many hits get a card each, the rest go into digests
    # Issue 16: (domain, lines) DNS evidence for the run, shown under the hits whose MAIL FROM domain it is.
    evidence: Sequence[tuple[str, Sequence[str]]] = ()


@dataclass(frozen=True)
class Post:
    payload: dict[str, Any]
    first: int  # index of the card's first hit in the list given to build_posts
    count: int  # how many hits, in order from `first`, the card shows


def build_posts(ctx: CardContext, hits: Sequence[Mapping[str, Any]]) -> list[Post]:
    """Teams messages for these hits, in order: each under MAX_CARD_BYTES with at most MAX_HITS_PER_CARD hits."""
    posts: list[Post] = []
    singles = min(ctx.single_cards, len(hits)) if ctx.rule.aggregation == "AlertPerResult" else 0
    for index in range(singles):
        posts.extend(_fit(ctx, hits, index, index + 1))
    for start in range(singles, len(hits), MAX_HITS_PER_CARD):
        posts.extend(_fit(ctx, hits, start, min(start + MAX_HITS_PER_CARD, len(hits))))
    return posts


def build_post(
    ctx: CardContext, hits: Sequence[Mapping[str, Any]], start: int, end: int, *, compact: bool = False
) -> dict[str, Any]:
    """One message for hits[start:end] with the shortest values: the fallback when Teams rejects a card."""
    return message(card(ctx, hits[start:end], start, _VALUE_LIMITS[-1], compact=compact))


def _fit(ctx: CardContext, hits: Sequence[Mapping[str, Any]], start: int, end: int) -> list[Post]:
    for limit in _VALUE_LIMITS:
        payload = message(card(ctx, hits[start:end], start, limit))
        if payload_size(payload) <= MAX_CARD_BYTES:
            return [Post(payload, start, end - start)]
    if end - start == 1:
        return [Post(message(card(ctx, hits[start:end], start, _VALUE_LIMITS[-1], compact=True)), start, 1)]
    middle = (start + end) // 2
    return _fit(ctx, hits, start, middle) + _fit(ctx, hits, middle, end)


def payload_size(payload: Mapping[str, Any]) -> int:
    """The size Teams may count: the bytes sent, or the same JSON with non-ASCII escaped as \\uXXXX (never smaller)."""
    escaped = json.dumps(payload, ensure_ascii=True, separators=(",", ":"))
    return max(len(encode(payload)), len(escaped))


def encode(payload: Mapping[str, Any]) -> bytes:
    """The bytes posted: compact JSON in UTF-8 (sent as `application/json; charset=utf-8`). clean() already
    scrubs data values; scrubbing here also covers rule text (names, custom detail labels)."""
    return scrub_surrogates(json.dumps(payload, ensure_ascii=False, separators=(",", ":"))).encode("utf-8")


def message(content: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": content}
        ],
    }


def card(
    ctx: CardContext, hits: Sequence[Mapping[str, Any]], first: int, limit: int, *, compact: bool = False
) -> dict[str, Any]:
    rule = ctx.rule
    title = title_for(rule, hits[0]) if len(hits) == 1 else rule.name
    body: list[dict[str, Any]] = [
        {
            "type": "Container",
            "style": _SEVERITY_STYLE.get(rule.severity, "default"),
            "bleed": True,
            "items": [
                _rich([_run(truncate(title, 200), weight="Bolder", size="Large")]),
                _rich(_labelled([("Severity", rule.severity), *_mitre(rule)], 100)),
                _rich([_run(_count_line(ctx.total, first, len(hits)), isSubtle=True)]),
            ],
        }
    ]
    for hit in hits:
        body.extend(_hit_lines(rule, hit, limit, compact))
    body.extend(evidence_blocks(ctx.evidence, hits))  # issue 16
    content: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": SCHEMA,
        "version": CARD_VERSION,
        "msteams": {"width": "Full"},
        "body": body,
    }
    if ctx.query_link:
        content["actions"] = [open_url("Open query in Log Analytics", ctx.query_link)]
    return content


def operational_card(title: str, lines: Sequence[tuple[str, str]], style: str = "attention") -> dict[str, Any]:
    """A plain card for kqlwatch's own notices (rule failing, recovered, dropped deliveries)."""
    return message(
        {
            "type": "AdaptiveCard",
            "$schema": SCHEMA,
            "version": CARD_VERSION,
            "msteams": {"width": "Full"},
            "body": [
                {
                    "type": "Container",
                    "style": style,
                    "bleed": True,
                    "items": [_rich([_run(truncate(title, 200), weight="Bolder", size="Medium")])],
                },
                *(_rich(_labelled([(label, clean(value, 500))], 500)) for label, value in lines),
            ],
        }
    )


def title_for(rule: Rule, hit: Mapping[str, Any]) -> str:
    """Sentinel's alertDisplayNameFormat: `{{Column}}` placeholders filled with the hit's (cleaned) values."""
    if not rule.title_format:
        return rule.name
    return _PLACEHOLDER.sub(lambda m: clean(hit.get(m.group(1)), 80) or "-", rule.title_format)


def _count_line(total: int, first: int, shown: int) -> str:
    noun = "hit" if total == 1 else "hits"
    if shown == total:
        return f"{total} new {noun}"
    return f"{total} new {noun} · showing {first + 1}-{first + shown}"


def _mitre(rule: Rule) -> list[tuple[str, str]]:
    parts = []
    if rule.tactics:
        parts.append(("Tactics", ", ".join(rule.tactics)))
    if rule.techniques:
        parts.append(("Techniques", ", ".join(rule.techniques)))
    return parts


def _hit_lines(rule: Rule, hit: Mapping[str, Any], limit: int, compact: bool) -> list[dict[str, Any]]:
    lines = (
        _email_lines(hit, limit, compact)
        if "NetworkMessageId" in hit or "Subject" in hit
        else _generic_lines(hit, limit)
    )
    if rule.union:  # issue 15: one cross-workspace query: each hit says which workspace it came from
        lines.insert(
            1, _rich([_run(_joined([("Workspace", clean(hit.get(WORKSPACE_COLUMN), 60, defang_text=False))]))])
        )
    if rule.custom_details:
        details = [(clean(name, 40), clean(hit.get(column), limit)) for name, column in rule.custom_details.items()]
        lines.append(_rich([_run(_joined(details))]))
    # A separator above each hit; no wrapping Container: 25 hits must fit in 28 KB.
    lines[0] = {**lines[0], "separator": True, "spacing": "Medium"}
    return lines


def _email_lines(hit: Mapping[str, Any], limit: int, compact: bool) -> list[dict[str, Any]]:
    auth = _auth(hit)
    when = hit.get("TimeGenerated") or hit.get("Timestamp")
    delivery = " / ".join(clean(hit.get(c), 40) for c in ("DeliveryAction", "DeliveryLocation") if hit.get(c))
    shown_time = format_time(when) if isinstance(when, datetime) else clean(when, 40)
    lines: list[list[dict[str, Any]]] = [
        [
            *([_run(shown_time + _GAP, isSubtle=True)] if shown_time else []),
            _run(clean(hit.get("Subject"), limit) or "(no subject)", weight="Bolder"),
        ],
        [
            _run(
                _joined(
                    [
                        ("From", _with_name(hit.get("SenderFromAddress"), hit.get("SenderDisplayName"), limit)),
                        ("MAIL FROM", clean(hit.get("SenderMailFromAddress"), limit)),
                    ]
                )
            )
        ],
        [
            _run(
                _joined(
                    [
                        ("To", clean(hit.get("RecipientEmailAddress"), limit)),
                        ("IP", clean(hit.get("SenderIPv4") or hit.get("SenderIPv6"), 45, defang_text=False)),
                    ]
                )
            )
        ],
        [_run(_joined([(name, clean(auth.get(name), 20)) for name in ("SPF", "DKIM", "DMARC", "CompAuth")]))],
        [
            _run(
                _joined(
                    [
                        ("Delivery", delivery),
                        ("NetworkMessageId", clean(hit.get("NetworkMessageId"), 60, defang_text=False)),
                    ]
                )
            )
        ],
    ]
    blocks = [_rich(line) for line in lines]
    link = defender_link(hit)
    if link and not compact:
        blocks.append(open_url_set("Open in Defender", link))
    return blocks


def _generic_lines(hit: Mapping[str, Any], limit: int) -> list[dict[str, Any]]:
    items = list(hit.items())[:_GENERIC_COLUMNS]
    lines = [_rich([_run(_joined([(clean(k, 40), clean(v, limit))]))]) for k, v in items]
    if len(hit) > _GENERIC_COLUMNS:
        lines.append(_rich([_run(f"+{len(hit) - _GENERIC_COLUMNS} more columns", isSubtle=True)]))
    return lines or [_rich([_run("(empty row)", isSubtle=True)])]


def _joined(pairs: Sequence[tuple[str, str]]) -> str:
    return _SEP.join(f"{label}: {value or '-'}" for label, value in pairs)


def _with_name(address: Any, name: Any, limit: int) -> str:
    addr = clean(address, limit)
    display = clean(name, limit // 2)
    return f"{display} <{addr}>" if display else addr


def _auth(hit: Mapping[str, Any]) -> dict[str, Any]:
    parsed: Any = hit.get("AuthenticationDetails")
    if isinstance(parsed, str):
        try:
            parsed = json.loads(parsed)
        except ValueError:
            parsed = None
    auth = dict(parsed) if isinstance(parsed, dict) else {}
    for name in ("SPF", "DKIM", "DMARC", "CompAuth"):
        if hit.get(name) not in (None, ""):
            auth[name] = hit[name]
    return auth


def _labelled(pairs: Sequence[tuple[str, str]], limit: int) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for label, value in pairs:
        if runs:
            runs.append(_run(_SEP, isSubtle=True))
        runs.append(_run(f"{label}: ", weight="Bolder"))
        runs.append(_run(truncate(value, max(limit, 20)) or "-"))
    return runs


def open_url(title: str, url: str) -> dict[str, Any]:
    return {"type": "Action.OpenUrl", "title": title, "url": url}


def open_url_set(title: str, url: str) -> dict[str, Any]:
    """A button in the card's body (ActionSet, 1.2), next to the hit it opens."""
    return {"type": "ActionSet", "actions": [open_url(title, url)]}


def _run(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextRun", "text": text, **style}


def _rich(inlines: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "RichTextBlock", "inlines": inlines}


def defender_link(hit: Mapping[str, Any]) -> str | None:
    """The message's email entity page in the Microsoft Defender portal."""
    message_id = hit.get("NetworkMessageId")
    recipient = hit.get("RecipientEmailAddress")
    if not isinstance(message_id, str) or not message_id or not isinstance(recipient, str):
        return None
    params = {"f": "summary", "id": message_id, "recipient": recipient}
    when = hit.get("TimeGenerated") or hit.get("Timestamp")
    if isinstance(when, datetime):
        params["startTime"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return "https://security.microsoft.com/emailentity?" + urlencode(params, quote_via=quote)


def query_link(
    query: str, workspace_resource_id: str | None, start: datetime, end: datetime, logs_endpoint: str
) -> str | None:
    """Open the rule's final query over this run's window in the Azure portal's Logs blade."""
    if not workspace_resource_id:
        return None
    portal = _PORTALS.get(urlsplit(logs_endpoint).hostname or "", "https://portal.azure.com")
    encoded = base64.b64encode(gzip.compress(query.encode("utf-8"))).decode("ascii")
    span = f"{start.strftime('%Y-%m-%dT%H:%M:%S.000Z')}/{end.strftime('%Y-%m-%dT%H:%M:%S.000Z')}"
    return (
        f"{portal}/#blade/Microsoft_Azure_Monitoring_Logs/LogsBlade/resourceId/{quote(workspace_resource_id, safe='')}"
        f"/source/LogsBlade.AnalyticsShareLinkToQuery/q/{quote(encoded, safe='')}/timespan/{quote(span, safe='')}"
    )
