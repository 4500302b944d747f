"""kqlwatch's own notices to the SOC (or the ops webhook): a rule failing, recovered, an exclusion expired,
hits dropped. Built from card.operational_card; values are cleaned there. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from shared.rules.exclusions import Exclusion
from shared.rules.loader import Rule
from shared.runtime.cards import open_url, operational_card
from shared.runtime.sanitize import format_time

FAILURES_BEFORE_NOTICE = 3


def failing(rule: Rule, since: datetime, failures: int, reason: str) -> dict[str, Any]:
    return operational_card(
        f"kqlwatch: rule failing: {rule.name}",
        [
            ("Rule", f"{rule.name} ({rule.id})"),
            ("Failing since", format_time(since)),
            ("Consecutive failures", str(failures)),
            ("Reason", reason),
            ("File", rule.path),
        ],
    )


def recovered(rule: Rule, since: datetime | None, now: datetime) -> dict[str, Any]:
    lines = [("Rule", f"{rule.name} ({rule.id})"), ("Working again at", format_time(now))]
    if since:
        lines.insert(1, ("Had been failing since", format_time(since)))
    return operational_card(f"kqlwatch: rule recovered: {rule.name}", lines, style="good")


def exclusion_expired(rule: Rule, exclusion: Exclusion) -> dict[str, Any]:
    return operational_card(
        f"kqlwatch: exclusion expired: {exclusion.name}",
        [
            ("Rule", f"{rule.name} ({rule.id})"),
            ("Exclusion", exclusion.name),
            ("Reason", exclusion.reason),
            ("Owner", exclusion.owner),
            ("Expired", str(exclusion.expires)),
            ("Defined in", exclusion.source),
            ("What now", "It no longer applies: the mail it hid alerts again. Review it, then renew or delete it."),
        ],
        style="warning",
    )


def dropped(rule: Rule, count: int, keys: Sequence[str], max_age: str) -> dict[str, Any]:
    return operational_card(
        f"kqlwatch: {count} alert(s) could not be delivered: {rule.name}",
        [
            ("Rule", f"{rule.name} ({rule.id})"),
            ("Undelivered for over", max_age),
            ("Hits (state table keys)", ", ".join(k[:12] for k in keys[:20])),
            ("See them", f"kqlwatch status --rule {rule.id} --dropped"),
        ],
    )


def overflow(rule: Rule, shown: int, more: int, query_link: str | None) -> dict[str, Any]:
    lines = [
        ("Rule", f"{rule.name} ({rule.id})"),
        ("Shown in cards", str(shown)),
        ("Not shown", str(more)),
        ("See them all", "open the query in Log Analytics (button below), or run: kqlwatch hunt"),
    ]
    card = operational_card(f"{rule.name}: {more} more hit(s) in this run", lines, style="warning")
    if query_link:
        card["attachments"][0]["content"]["actions"] = [open_url("Open query in Log Analytics", query_link)]
    return card


def blind(rule: Rule, table: str, since: datetime, threshold: timedelta) -> dict[str, Any]:
    """Issue 13: a source table of the rule has had no new rows for longer than its threshold."""
    when = format_time(since)
    return operational_card(
        f"kqlwatch: rule {rule.name} cannot see: {table} has had no new rows since {when}",
        [
            ("Rule", f"{rule.name} ({rule.id})"),
            ("Table", table),
            ("Last new row", when),
            ("Threshold", f"{threshold} (kqlwatch.silenceAfter)"),
            ("What now", "Check the data connector feeding this table; until rows arrive, this rule cannot alert."),
        ],
        style="warning",
    )


def sighted(rule: Rule, table: str, since: datetime, now: datetime) -> dict[str, Any]:
    """Issue 13: rows reach the table again."""
    return operational_card(
        f"kqlwatch: rule {rule.name} can see again: {table} has new rows",
        [
            ("Rule", f"{rule.name} ({rule.id})"),
            ("Table", table),
            ("Had no new rows since", format_time(since)),
            ("Latest row ingested at", format_time(now)),
        ],
        style="good",
    )


def poisoned(rule_name: str, rule_id: str, scheduled: datetime, path: str, attempts: int) -> dict[str, Any]:
    """Issue 14: a rule run's queue message failed every delivery and went to kqlwatch-runs-poison."""
    return operational_card(
        f"kqlwatch: rule run abandoned: {rule_name}",
        [
            ("Rule", f"{rule_name} ({rule_id})"),
            ("Scheduled for", format_time(scheduled)),
            ("Attempts", str(attempts) if attempts else "5 (maxDequeueCount)"),
            ("File", path),
            (
                "What now",
                "Its run failed before it could start, every time (Table Storage or settings: see the function's "
                "logs). The next dispatch tries again; its window reaches back, so no row is skipped.",
            ),
        ],
        style="attention",
    )
