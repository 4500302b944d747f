"""kqlwatch's own notices about a rule: failing / recovered, an expired exclusion. Each goes to the ops webhooks;
a notice Teams did not take is a warning of the run, never a failure of the rule."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from shared.rules.loader import Rule
from shared.rules.prepare import PreparedRule
from shared.runtime import notices
from shared.runtime.delivery import Poster
from shared.runtime.hits import short_hash
from shared.runtime.outcome import RuleOutcome
from shared.runtime.store import RuleState, StateStore

log = logging.getLogger("kqlwatch")

NOTICE_INTERVAL = timedelta(hours=1)  # at most one "rule failing" card per rule per hour


class Notifier:
    """Posts kqlwatch's own cards to the ops webhooks."""

    def __init__(self, teams: Poster, urls: Sequence[str]) -> None:
        self.teams = teams
        self.urls = tuple(urls)

    def notify(self, payload: dict[str, Any], outcome: RuleOutcome) -> bool:
        delivered = False
        for url in self.urls:
            result = self.teams.post(url, payload)
            delivered = delivered or result.ok
            if not result.ok:
                outcome.warnings.append(f"notice not delivered: {result.detail}")
        return delivered


def update_health(notifier: Notifier, rule: Rule, state: RuleState, outcome: RuleOutcome, now: datetime) -> None:
    """Count consecutive failures; after FAILURES_BEFORE_NOTICE post one "failing" card (again at most
    hourly), and one "recovered" card when the rule works again."""
    if outcome.ok:
        if state.failure_notified_at is not None:
            notifier.notify(notices.recovered(rule, state.failing_since, now), outcome)
        state.last_success = now
        state.consecutive_failures = 0
        state.failing_since = None
        state.failure_notified_at = None
        state.last_error = ""
        return
    state.consecutive_failures += 1
    state.failing_since = state.failing_since or now
    state.last_error = "; ".join(outcome.errors)
    quiet = state.failure_notified_at is not None and now - state.failure_notified_at < NOTICE_INTERVAL
    if state.consecutive_failures >= notices.FAILURES_BEFORE_NOTICE and not quiet:
        card = notices.failing(rule, state.failing_since, state.consecutive_failures, state.last_error)
        if notifier.notify(card, outcome):
            state.failure_notified_at = now


def report_expired_exclusions(
    notifier: Notifier, store: StateStore, prepared: PreparedRule, now: datetime, outcome: RuleOutcome
) -> None:
    for exclusion in prepared.expired:
        message = f"exclusion '{exclusion.name}' ({exclusion.source}) expired on {exclusion.expires}: no longer applied"
        outcome.warnings.append(message)
        notice = f"expired-{short_hash(repr(exclusion))}"
        if store.first_time(prepared.rule.id, notice, now):
            log.warning("kqlwatch: %s; owner %s should review it", message, exclusion.owner)
            notifier.notify(notices.exclusion_expired(prepared.rule, exclusion), outcome)
