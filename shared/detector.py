"""One run of kqlwatch: every (due) rule -> query its window -> record new hits -> deliver -> record the run.

Where things happen: windowing in window.py, dedupe identities in dedupe.py, Table Storage in state.py,
the card in card.py, the webhook in teams.py. This module only sequences them and keeps one rule's failure
from touching the others.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from shared.card import CardContext, build_posts, query_link
from shared.dedupe import identity, identity_columns, short_hash
from shared.errors import ConfigError, KqlwatchError, RuleError
from shared.kql import KqlLexError
from shared.loganalytics import QueryResult
from shared.params import ParamError, apply_params, bindings
from shared.rules import Rule, load_rules, trigger_met
from shared.settings import PARAM_PREFIX, Settings
from shared.state import DELIVERED, DROPPED, Hit, RunRecord, StateStore, expired, lease_is_free
from shared.teams import PostResult
from shared.window import Window, is_due, next_window

log = logging.getLogger("kqlwatch")

LEASE = timedelta(minutes=10)  # how long a run owns the hits it is delivering
LEASE_MARGIN = timedelta(minutes=1)  # stop posting when less than this is left on the lease


class LogsApi(Protocol):
    def query(self, workspace_id: str, query: str, start: datetime, end: datetime) -> QueryResult: ...


class Poster(Protocol):
    def post(self, url: str, payload: Any) -> PostResult: ...


@dataclass
class RuleOutcome:
    rule_id: str
    name: str
    ran: bool = False  # False: not due, skipped
    ok: bool = True
    window: Window | None = None
    rows: int = 0
    new_hits: int = 0
    delivered: int = 0
    deferred: int = 0
    dropped: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    duration_ms: int = 0

    def log_line(self) -> dict[str, Any]:
        return {
            "event": "kqlwatch.rule_run",
            "rule_id": self.rule_id,
            "rule": self.name,
            "ok": self.ok,
            "window_start": self.window.start.isoformat() if self.window else None,
            "window_end": self.window.end.isoformat() if self.window else None,
            "rows": self.rows,
            "new_hits": self.new_hits,
            "delivered": self.delivered,
            "deferred": self.deferred,
            "dropped": self.dropped,
            "errors": self.errors,
            "warnings": self.warnings,
            "duration_ms": self.duration_ms,
        }


@dataclass
class RunReport:
    outcomes: list[RuleOutcome]
    rule_errors: list[RuleError]

    @property
    def ok(self) -> bool:
        return not self.rule_errors and all(o.ok for o in self.outcomes)


@dataclass(frozen=True)
class PreparedRule:
    rule: Rule
    query: str  # the rule's query with parameters applied: exactly what is sent


def prepare_rules(rules: Sequence[Rule], params: dict[str, str]) -> tuple[list[PreparedRule], list[RuleError]]:
    """Apply KQLWATCH_PARAM_* to every rule. A parameter no rule binds is a configuration error (exit 2):
    a typo would otherwise silently leave the default in place."""
    used: set[str] = set()
    prepared: list[PreparedRule] = []
    errors: list[RuleError] = []
    for rule in rules:
        try:
            names = bindings(rule.query)
            used.update(n for n in params if n in names)
            prepared.append(PreparedRule(rule, apply_params(rule.query, params)))
        except KqlLexError as exc:
            errors.append(RuleError(rule.path, f"query cannot be read: {exc}"))
        except ParamError as exc:
            name = str(exc).split(" ", 1)[0]
            raise ConfigError(f"{PARAM_PREFIX}{name}", f"does not fit rule {rule.id}: {exc}") from None
        except ValueError as exc:  # control characters in a value
            bad = next((n for n in params if n in bindings(rule.query)), "?")
            raise ConfigError(f"{PARAM_PREFIX}{bad}", str(exc)) from None
    unused = sorted(set(params) - used)
    if unused:
        raise ConfigError(
            f"{PARAM_PREFIX}{unused[0]}",
            f"names no top-level `let {unused[0]} = ...;` binding in any rule",
        )
    return prepared, errors


class Detector:
    def __init__(
        self,
        settings: Settings,
        *,
        logs: LogsApi,
        store: StateStore,
        teams: Poster,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.settings = settings
        self.logs = logs
        self.store = store
        self.teams = teams
        self.clock = clock
        self.run_id = uuid.uuid4().hex[:12]

    def run(self, *, only_due: bool) -> RunReport:
        loaded = load_rules(self.settings.rules_dir)
        prepared, lex_errors = prepare_rules(loaded.rules, dict(self.settings.params))
        errors = loaded.errors + lex_errors
        for error in errors:
            log.error("rule skipped: %s", error)
        self.store.ensure_table()
        outcomes = [self.run_rule(p, only_due=only_due) for p in prepared]
        return RunReport(outcomes, errors)

    def run_rule(self, prepared: PreparedRule, *, only_due: bool = False) -> RuleOutcome:
        rule = prepared.rule
        outcome = RuleOutcome(rule.id, rule.name)
        started = time.monotonic()
        now = self.clock()
        try:
            self._run_rule(prepared, outcome, now, only_due, started)
        except KqlwatchError as exc:
            outcome.ok = False
            outcome.errors.append(str(exc))
        except Exception as exc:  # one rule's bug must not stop the others
            log.debug("unexpected error in rule %s", rule.id, exc_info=True)
            outcome.ok = False
            outcome.errors.append(f"internal error: {type(exc).__name__}: {str(exc)[:300]}")
        outcome.duration_ms = int((time.monotonic() - started) * 1000)
        if outcome.ran or outcome.errors:
            log.log(logging.INFO if outcome.ok else logging.ERROR, json.dumps(outcome.log_line(), default=str))
        return outcome

    def _run_rule(
        self, prepared: PreparedRule, outcome: RuleOutcome, now: datetime, only_due: bool, started: float
    ) -> None:
        rule = prepared.rule
        snap = self.store.snapshot(rule.id)
        state = snap.state
        if only_due and not is_due(now, state.last_run, rule.query_frequency):
            return
        outcome.ran = True
        window = next_window(
            now,
            period=rule.query_period,
            frequency=rule.query_frequency,
            last_end=state.last_window_end,
            max_catchup=self.settings.max_catchup,
        )
        outcome.window = window
        lease_until = now + LEASE

        created: list[Hit] = []
        query_ok = False
        try:
            result = self.logs.query(self.settings.workspace_id, prepared.query, window.start, window.end)
            query_ok = result.partial_error is None
            if result.partial_error:
                outcome.warnings.append(f"partial result used ({len(result.rows)} rows): {result.partial_error}")
            outcome.rows = len(result.rows)
            hits = self._hits(rule, result, now, lease_until)
            if hits:
                known = self.store.known_keys(rule.id, window.start)
                created = self.store.insert_new(rule.id, [h for h in hits if h.key not in known])
            outcome.new_hits = len(created)
        except KqlwatchError as exc:
            outcome.ok = False
            outcome.errors.append(f"query failed: {exc}")

        # Hits earlier runs could not deliver: drop the ones too old, claim the rest (unless another run holds them).
        created_keys = {h.key for h in created}
        older = [h for h in snap.pending if h.key not in created_keys and lease_is_free(h, now)]
        too_old = [h for h in older if expired(h, now, self.settings.delivery_max_age)]
        if too_old:
            dropped = self.store.update_hits(rule.id, too_old, Status=DROPPED)
            outcome.dropped = len(dropped)
            outcome.ok = False
            outcome.errors.append(
                f"dropped {len(dropped)} hit(s) undelivered for over {self.settings.delivery_max_age}: "
                + ", ".join(h.key[:12] for h in dropped[:10])
            )
        retry = [replace(h, lease_owner=self.run_id, lease_until=lease_until) for h in older if h not in too_old]
        claimed = self.store.update_hits(rule.id, retry) if retry else []

        # Delivery failures defer hits to the next run; they do not fail the rule.
        to_deliver = sorted(created + claimed, key=lambda h: h.first_seen)
        outcome.delivered, outcome.deferred, problems = self._deliver(prepared, to_deliver, window, lease_until)
        outcome.warnings.extend(problems)

        state.last_run = now
        state.runs += 1
        state.hits_total += len(created)
        if query_ok:
            state.last_window_end = window.end
        if outcome.ok:
            state.last_success = now
            state.consecutive_failures = 0
            state.failing_since = None
            state.last_error = ""
        else:
            state.consecutive_failures += 1
            state.failing_since = state.failing_since or now
            state.last_error = "; ".join(outcome.errors)
        self.store.save_run(
            rule.id,
            state,
            RunRecord(
                started=now,
                window_start=window.start,
                window_end=window.end,
                rows=outcome.rows,
                new_hits=outcome.new_hits,
                delivered=outcome.delivered,
                deferred=outcome.deferred,
                dropped=outcome.dropped,
                errors=outcome.errors + outcome.warnings,
                duration_ms=int((time.monotonic() - started) * 1000),
            ),
        )

    def _hits(self, rule: Rule, result: QueryResult, now: datetime, lease_until: datetime) -> list[Hit]:
        if not result.rows or not trigger_met(rule, len(result.rows)):
            return []
        columns = identity_columns(
            result.columns, result.time_columns, dedupe_key=rule.dedupe_key, entity_columns=rule.entity_columns
        )
        missing = [c for c in columns if c not in result.columns]
        if missing:
            raise RuleError(rule.path, f"kqlwatch.dedupeKey names column(s) the query does not return: {missing}")
        by_key: dict[str, Hit] = {}
        for row in result.rows:
            key = identity(row, columns)
            # The same identity twice in one result (e.g. a verdict change): keep the latest row.
            by_key[key] = Hit(key, row, first_seen=now, lease_owner=self.run_id, lease_until=lease_until)
        return list(by_key.values())

    def _deliver(
        self, prepared: PreparedRule, hits: list[Hit], window: Window, lease_until: datetime
    ) -> tuple[int, int, list[str]]:
        if not hits:
            return 0, 0, []
        rule = prepared.rule
        urls = {short_hash(u): u for u in self.settings.webhook_urls}
        current = {h.key: h for h in hits}
        errors: list[str] = []
        link = query_link(
            prepared.query, self.settings.workspace_resource_id, window.start, window.end, self.settings.logs_endpoint
        )
        for url_id, url in urls.items():
            todo = [current[h.key] for h in hits if url_id not in current[h.key].delivered_to]
            if not todo:
                continue
            ctx = CardContext(rule, total=len(todo), query_link=link)
            for post in build_posts(ctx, [h.row for h in todo]):
                if self.clock() > lease_until - LEASE_MARGIN:
                    errors.append("lease nearly expired: remaining deliveries left to the next run")
                    break
                result = self.teams.post(url, post.payload)
                if not result.ok:
                    errors.append(f"delivery failed: {result.detail}")
                    break  # this webhook is unwell: leave the rest for the next run, try the other webhooks
                batch = todo[post.first : post.first + post.count]
                marked = [replace(h, delivered_to=h.delivered_to | {url_id}) for h in batch]
                done = [replace(h, lease_owner="", lease_until=None) for h in marked if h.delivered_to >= urls.keys()]
                not_done = [h for h in marked if not h.delivered_to >= urls.keys()]
                for h in self.store.update_hits(rule.id, done, Status=DELIVERED) + (
                    self.store.update_hits(rule.id, not_done) if not_done else []
                ):
                    current[h.key] = h
        remaining = [h for h in current.values() if not h.delivered_to >= urls.keys()]
        if remaining:
            # Release the lease so the next run can retry at once, and count the attempt.
            self.store.update_hits(
                rule.id, [replace(h, attempts=h.attempts + 1, lease_owner="", lease_until=None) for h in remaining]
            )
        return len(hits) - len(remaining), len(remaining), errors
