"""One run of kqlwatch: every (due) rule -> query its window -> record new hits -> deliver -> record the run.

Where things happen: windowing in window.py, identities in dedupe.py, Table Storage in state.py, the card in
card.py, the webhook in teams.py, tuning in exclusions.py, kqlwatch's own notices in notices.py. This module
sequences them and keeps one rule's failure from touching the others.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from typing import Any, Protocol

from shared.errors import KqlwatchError, QueryError, QueryThrottled, RuleError
from shared.rules import ingestion
from shared.rules.durations import as_time
from shared.rules.enrich import MAIL_AUTH_DNS
from shared.rules.fields import DEFENDER, LOG_ANALYTICS
from shared.rules.loader import Rule, load_exclusion_files, load_rules, trigger_met
from shared.rules.prepare import PreparedRule, prepare_rules, window_choice
from shared.runtime import dnsevidence, hits, notices
from shared.runtime.cards import query_link
from shared.runtime.delivery import Delivery, Poster
from shared.runtime.hits import short_hash
from shared.runtime.loganalytics import QueryResult
from shared.runtime.settings import Settings
from shared.runtime.store import (
    DROPPED,
    Hit,
    RuleState,
    RunRecord,
    StateStore,
    expired,
    lease_is_free,
)
from shared.runtime.units import run_units
from shared.runtime.window import (
    DEFENDER_MAX_CATCHUP,
    DEFENDER_OVERLAP,
    FAST_LATENESS,
    IngestionWindow,
    Window,
    ingestion_window,
    is_due,
    next_sweep_mark,
    next_window,
)

log = logging.getLogger("kqlwatch")

LEASE = timedelta(minutes=10)  # how long a run owns the hits it is delivering
MAX_SPLITS = 4  # a truncated (partial) result is re-queried as up to 2**4 smaller windows
MIN_SPLIT = timedelta(minutes=1)
NOTICE_INTERVAL = timedelta(hours=1)  # at most one "rule failing" card per rule per hour
PURGE_EVERY = timedelta(days=1)
HIT_RETENTION = timedelta(days=14)  # beyond the furthest a window reaches back
RUN_RETENTION = timedelta(days=30)
TABLE_PROBE_EVERY = timedelta(hours=1)  # at most one blind-spot probe per source table per hour
TABLE_PROBE_SPAN = timedelta(hours=24)  # the probe's TimeGenerated span: on-time rows are what it looks for


class LogsApi(Protocol):
    def query(self, workspace_id: str, query: str, start: datetime, end: datetime) -> QueryResult: ...


@dataclass
class RuleOutcome:
    rule_id: str
    name: str
    ran: bool = False  # False: not due, skipped
    ok: bool = True
    window: Window | None = None
    window_mode: str = ""  # ingestion | timegenerated (issue 13)
    ingested_since: datetime | None = None  # ingestion mode: rows ingested after this
    rows: int = 0
    new_hits: int = 0
    suppressed: int = 0
    delivered: int = 0
    deferred: int = 0
    dropped: int = 0
    held: int = 0  # pending hits under another run's lease (a concurrent run, or one that was killed)
    held_until: datetime | None = None  # when the last of those leases ends
    degraded: bool = False  # a partial result other than truncation: rows used, window to be read again
    query_ms: int = 0  # time spent querying, SDK retries included (bounded by the client's query budget)
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
            "window_mode": self.window_mode,
            "ingested_since": self.ingested_since.isoformat() if self.ingested_since else None,
            "rows": self.rows,
            "new_hits": self.new_hits,
            "suppressed": self.suppressed,
            "delivered": self.delivered,
            "deferred": self.deferred,
            "dropped": self.dropped,
            "held": self.held,
            "held_until": self.held_until.isoformat() if self.held_until else None,
            "degraded": self.degraded,
            "query_ms": self.query_ms,
            "errors": self.errors,
            "warnings": self.warnings,
            "duration_ms": self.duration_ms,
        }


@dataclass
class RunReport:
    outcomes: list[RuleOutcome]
    rule_errors: list[RuleError]
    warnings: list[str] = field(default_factory=list)  # about the rule set, not one rule: printed, not failures

    @property
    def ok(self) -> bool:
        return not self.rule_errors and all(o.ok for o in self.outcomes)


@dataclass(frozen=True)
class RunPlan:
    """What one run of a rule reads: the API timespan (TimeGenerated) and, in ingestion mode, the query with
    its source tables filtered to rows ingested after the watermark."""

    choice: ingestion.WindowChoice
    window: Window  # the API timespan, on TimeGenerated
    query: str
    since: IngestionWindow | None = None  # ingestion mode only
    source: str = LOG_ANALYTICS  # issue 15: which client runs the query

    @property
    def ledger_from(self) -> datetime:
        """Hits re-read this run were first seen after this (an ingested row is seen after its ingestion)."""
        return self.since.since if self.since else self.window.start


def load_prepared(
    settings: Settings, today: date | None = None, warnings: list[str] | None = None
) -> tuple[list[PreparedRule], list[RuleError]]:
    """The rules, exclusions and parameters as a run uses them (also what `kqlwatch hunt --explain` shows).
    Warnings about the rule set (broken symlinks, parameters whose rule failed to load) go to `warnings`."""
    loaded = load_rules(settings.rules_dir)
    if warnings is not None:
        warnings.extend(loaded.warnings)
    exclusions, exclusion_errors = load_exclusion_files(settings.rules_dir)
    prepared, errors = prepare_rules(
        loaded.rules, dict(settings.params), exclusions, today, failed=loaded.errors, warnings=warnings
    )
    return prepared, loaded.errors + exclusion_errors + errors


class Detector:
    def __init__(
        self,
        settings: Settings,
        *,
        logs: LogsApi,
        store: StateStore,
        teams: Poster,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        defender: LogsApi | None = None,  # issue 15: Defender XDR advanced hunting (shared.runtime.defender)
    ) -> None:
        self.settings = settings
        self.logs = logs
        self.defender = defender
        self.store = store
        self.teams = teams
        self.clock = clock
        self.run_id = uuid.uuid4().hex[:12]
        self.dns = dnsevidence.RunLookups(settings.dns_servers)  # issue 16: one cache and budget per run

    def run(self, *, only_due: bool) -> RunReport:
        self.dns = dnsevidence.RunLookups(self.settings.dns_servers)  # issue 16
        warnings: list[str] = []
        prepared, errors = load_prepared(self.settings, self.clock().date(), warnings)
        for error in errors:
            log.error("rule skipped: %s", error)
        for warning in warnings:
            log.warning("%s", warning)
        self.store.ensure_table()
        # Issue 15: one run unit per rule and workspace (shared.runtime.units), each with its own state.
        units = run_units(prepared, self.settings)
        outcomes = [self.run_rule(u.prepared, only_due=only_due, workspace=u.workspace) for u in units]
        return RunReport(outcomes, errors, warnings)

    def run_rule(self, prepared: PreparedRule, *, only_due: bool = False, workspace: str = "") -> RuleOutcome:
        rule = prepared.rule
        outcome = RuleOutcome(rule.id, rule.name)
        started = time.monotonic()
        now = self.clock()
        try:
            self._run_rule(prepared, outcome, now, only_due, started, workspace or self.settings.workspace_id)
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
        self,
        prepared: PreparedRule,
        outcome: RuleOutcome,
        now: datetime,
        only_due: bool,
        started: float,
        workspace: str,
    ) -> None:
        rule = prepared.rule
        snap = self.store.snapshot(rule.id)
        state = snap.state
        if only_due and not is_due(now, state.last_run, rule.query_frequency):
            return
        outcome.ran = True
        plan = self._plan(prepared, state, now)
        window = plan.window
        outcome.window, outcome.window_mode = window, plan.choice.mode
        outcome.ingested_since = plan.since.since if plan.since else None
        lease_until = now + LEASE
        self._report_expired_exclusions(prepared, now, outcome)

        created: list[Hit] = []
        result = self._timed_query(plan.query, window, outcome, plan.source, workspace)
        query_ok = result is not None and result.partial_error is None
        if result is not None:
            self._note_partial(result, outcome)
            outcome.rows = len(result.rows)
            # A Table Storage failure here fails the rule without saving the run: the next run's window
            # reaches back over this one, and hits already created are pending, so none is lost.
            created, outcome.suppressed = self._record_new_hits(
                rule, state, result, Window(plan.ledger_from, window.end), now, lease_until
            )
            if result.partial_error is None:
                created += self._record_silence(rule, state, result, window, now, lease_until)
            outcome.new_hits = len(created)
            outcome.warnings.extend(f"hit {h.key[:12]}: {h.store_note}" for h in created if h.store_note)

        # Hits earlier runs could not deliver: drop the ones too old, claim the rest (unless another run holds them).
        created_keys = {h.key for h in created}
        older = [h for h in snap.pending if h.key not in created_keys and lease_is_free(h, now)]
        self._report_held(snap.pending, created_keys, now, outcome)
        too_old = [h for h in older if expired(h, now, self.settings.delivery_max_age)]
        if too_old:
            self._drop(rule, too_old, outcome)
        retry = [replace(h, lease_owner=self.run_id, lease_until=lease_until) for h in older if h not in too_old]
        claimed = self.store.update_hits(rule.id, retry) if retry else []

        # Delivery failures defer hits to the next run; they do not fail the rule.
        to_deliver = sorted(created + claimed, key=lambda h: h.first_seen)
        outcome.delivered, outcome.deferred, problems = self._deliver(
            prepared, to_deliver, window, lease_until, workspace
        )
        outcome.warnings.extend(problems)

        state.last_run = now
        state.runs += 1
        state.hits_total += len(created)
        state.delivered_total += outcome.delivered
        state.last_rows = outcome.rows
        if query_ok:  # the watermarks move only now that the run's hits are recorded
            state.last_window_end = window.end
            if plan.since:
                state.last_sweep_end = next_sweep_mark(plan.since, state.last_sweep_end)
        state.window_mode = plan.choice.mode
        self._watch_sources(rule, plan, result, state, now, outcome, workspace)
        self._update_health(rule, state, outcome, now)
        if state.last_purge is None or now - state.last_purge >= PURGE_EVERY:
            reach = max(self.settings.max_catchup, rule.query_period) + self.settings.max_lateness
            self.store.purge(rule.id, hits_before=now - reach - HIT_RETENTION, runs_before=now - RUN_RETENTION)
            state.last_purge = now
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

    def _report_held(self, pending: list[Hit], created_keys: set[str], now: datetime, outcome: RuleOutcome) -> None:
        """Pending hits another run holds (still running, or killed mid-delivery): say so, with when the lease
        ends and they are delivered, so a run after a crash never looks all-clear."""
        held = [h for h in pending if h.key not in created_keys and not lease_is_free(h, now)]
        if not held:
            return
        outcome.held = len(held)
        outcome.held_until = max(h.lease_until or now for h in held)
        outcome.warnings.append(
            f"{len(held)} pending hit(s) held by another run's lease until {outcome.held_until:%Y-%m-%d %H:%M:%S} UTC "
            "(that run is still delivering, or was killed): a run after then delivers them"
        )

    # --- windows (issue 13) ---

    def _plan(self, prepared: PreparedRule, state: RuleState, now: datetime) -> RunPlan:
        rule = prepared.rule
        choice = window_choice(rule)
        if self.settings.source_of(rule.source) == DEFENDER:
            return self._defender_plan(prepared, choice, state, now)
        if choice.mode != ingestion.INGESTION:
            window = next_window(
                now,
                period=rule.query_period,
                frequency=rule.query_frequency,
                last_end=state.last_window_end,
                max_catchup=self.settings.max_catchup,
            )
            return RunPlan(choice, window, prepared.query)
        since = ingestion_window(
            now,
            period=rule.query_period,
            last_end=state.last_window_end,
            last_sweep_end=state.last_sweep_end,
            max_lateness=self.settings.max_lateness,
            max_catchup=self.settings.max_catchup,
            sweep_every=self.settings.late_sweep,
        )
        query = ingestion.with_ingestion_filter(prepared.query, choice.tables, since.since)
        return RunPlan(choice, since.timespan, query, since)

    def _defender_plan(
        self, prepared: PreparedRule, choice: ingestion.WindowChoice, state: RuleState, now: datetime
    ) -> RunPlan:
        """Issue 15: advanced hunting has no ingestion time: Timestamp windows (the API's Timespan) that re-read
        DEFENDER_OVERLAP for late rows, reaching back at most 30 days (what advanced hunting keeps)."""
        rule = prepared.rule
        window = next_window(
            now,
            period=rule.query_period,
            frequency=rule.query_frequency,
            last_end=state.last_window_end,
            max_catchup=min(self.settings.max_catchup, DEFENDER_MAX_CATCHUP),
            min_overlap=DEFENDER_OVERLAP,
        )
        reason = f"Defender advanced hunting has no ingestion time: Timestamp windows re-reading {DEFENDER_OVERLAP}"
        defender_choice = ingestion.WindowChoice("timestamp", reason, choice.tables)
        return RunPlan(defender_choice, window, prepared.query, source=DEFENDER)

    # --- querying ---

    def _client(self, source: str, workspace: str) -> tuple[LogsApi, str]:
        if source == DEFENDER:
            if self.defender is None:
                raise QueryError("the rule's source is defender, but no Defender client is configured")
            return self.defender, ""
        if not workspace:
            raise QueryError(
                "the rule runs on Log Analytics (kqlwatch.source / KQLWATCH_SOURCE), but KQLWATCH_WORKSPACE_ID is not set"
            )
        return self.logs, workspace

    def _query(
        self,
        query: str,
        start: datetime,
        end: datetime,
        depth: int = 0,
        source: str = LOG_ANALYTICS,
        workspace: str = "",
    ) -> QueryResult:
        """Query the window. A truncated result (row/size limit) is re-queried as two halves rather than
        losing rows; any other partial error is returned as it is: splitting would not help."""
        client, workspace = self._client(source, workspace or self.settings.workspace_id)
        result = client.query(workspace, query, start, end)
        if not result.truncated or depth >= MAX_SPLITS or end - start <= MIN_SPLIT:
            return result
        middle = start + (end - start) / 2
        log.warning("truncated result for %s..%s (%s): querying the halves", start, end, result.partial_error)
        first = self._query(query, start, middle, depth + 1, source, workspace)
        second = self._query(query, middle, end, depth + 1, source, workspace)
        columns = first.columns or second.columns
        partial = [r for r in (first, second) if r.partial_error is not None]
        return QueryResult(
            columns,
            {**second.types, **first.types},
            first.rows + second.rows,
            "; ".join(dict.fromkeys(r.partial_error or "" for r in partial)) or None,
            # Still only truncation if every half that stayed partial was truncated, else the rule is degraded.
            truncated=bool(partial) and all(r.truncated for r in partial),
        )

    def _timed_query(
        self, query: str, window: Window, outcome: RuleOutcome, source: str = LOG_ANALYTICS, workspace: str = ""
    ) -> QueryResult | None:
        """The window's result, or None when the query failed; the time it took goes into the outcome."""
        started = time.monotonic()
        try:
            return self._query(query, window.start, window.end, source=source, workspace=workspace)
        except KqlwatchError as exc:
            outcome.degraded = outcome.degraded or isinstance(exc, QueryThrottled)  # issue 15: quota spent: deferred
            outcome.ok = False
            outcome.errors.append(f"query failed: {exc}")
            return None
        finally:
            outcome.query_ms = int((time.monotonic() - started) * 1000)

    @staticmethod
    def _note_partial(result: QueryResult, outcome: RuleOutcome) -> None:
        """A partial result's rows are used either way and its window is read again. Truncation that no
        smaller window avoids is a warning; any other partial error (the service did not read everything)
        degrades the rule: it counts as a failure, toward the "rule failing" notice."""
        if result.partial_error is None:
            return
        message = f"partial result used ({len(result.rows)} rows): {result.partial_error}"
        if result.truncated:
            outcome.warnings.append(message)
            return
        outcome.ok = False
        outcome.degraded = True
        outcome.errors.append(message)

    # --- hits ---

    def _record_new_hits(
        self, rule: Rule, state: RuleState, result: QueryResult, window: Window, now: datetime, lease_until: datetime
    ) -> tuple[list[Hit], int]:
        """Create the hits this run is first to see; returns those to deliver, and how many were suppressed."""
        recorded = hits.record_new(
            self.store, rule, state, self._hits(rule, result, now, lease_until), window.start, now
        )
        return recorded.created, recorded.suppressed

    def _hits(self, rule: Rule, result: QueryResult, now: datetime, lease_until: datetime) -> list[Hit]:
        _, by_key = hits.collapse(rule, result.columns, result.time_columns, result.rows)
        return [
            Hit(key, row, first_seen=now, lease_owner=self.run_id, lease_until=lease_until)
            for key, row in by_key.items()
        ]

    def _drop(self, rule: Rule, hits: list[Hit], outcome: RuleOutcome) -> None:
        dropped = self.store.update_hits(rule.id, hits, Status=DROPPED)
        outcome.dropped = len(dropped)
        outcome.ok = False
        age = str(self.settings.delivery_max_age)
        outcome.errors.append(
            f"dropped {len(dropped)} hit(s) undelivered for over {age}: " + ", ".join(h.key[:12] for h in dropped[:10])
        )
        self._notify(notices.dropped(rule, len(dropped), [h.key for h in dropped], age), outcome)

    # --- delivery ---

    def _deliver(
        self, prepared: PreparedRule, hits: list[Hit], window: Window, lease_until: datetime, workspace: str = ""
    ) -> tuple[int, int, list[str]]:
        if not hits:
            return 0, 0, []
        rule = prepared.rule
        urls = {short_hash(u): u for u in self.settings.webhooks_for(rule.route, rule.severity)}
        in_workspace = self.settings.source_of(rule.source) != DEFENDER  # issue 15: no Logs-blade link for Defender
        link = query_link(
            prepared.query,
            # Issue 15: the link opens the unit's own workspace (KQLWATCH_WORKSPACE_RESOURCE_ID, one per workspace).
            self.settings.workspace_resource_ids.get(workspace or self.settings.workspace_id) if in_workspace else None,
            window.start,
            window.end,
            self.settings.logs_endpoint,
        )
        delivery = Delivery(
            rule,
            self.store,
            self.teams,
            self.clock,
            self.settings.max_cards_per_run,
            lease_until,
            link,
            frozenset(urls),
            self._evidence(prepared, hits),  # issue 16: once per rule run, before any card is built
        )
        remaining = delivery.deliver(hits, urls)
        if remaining:
            # Release the lease so the next run can retry at once, and count the attempt.
            self.store.update_hits(
                rule.id, [replace(h, attempts=h.attempts + 1, lease_owner="", lease_until=None) for h in remaining]
            )
        return len(hits) - len(remaining), len(remaining), delivery.problems

    def _evidence(self, prepared: PreparedRule, hits: list[Hit]) -> Sequence[tuple[str, Sequence[str]]]:
        """Issue 16: DNS evidence for the rule's accepted domains on these hits (never raises, <= 5 s a run)."""
        if MAIL_AUTH_DNS not in prepared.rule.enrich:
            return ()
        return dnsevidence.card_evidence(dnsevidence.evidence_for(prepared.query, [h.row for h in hits], self.dns))

    # --- silence: triggers met by zero rows (issue 13) ---

    def _record_silence(
        self, rule: Rule, state: RuleState, result: QueryResult, window: Window, now: datetime, lease_until: datetime
    ) -> list[Hit]:
        """A trigger met by an empty result (LessThan N, Equal 0, NotEqual k > 0) is one hit per silence: its
        identity is the rule and the run the silence began, so later runs of the same silence find it in the
        ledger. With suppressionDuration or kqlwatch.realert.window set, a silence still lasting after that
        long alerts again (one more identity per elapsed window)."""
        if result.rows or not trigger_met(rule, 0):
            state.silence_since = None
            return []
        since = state.silence_since = state.silence_since or now
        every = rule.suppression or rule.realert_window
        repeat = int((now - since) / every) if every else 0
        key = hashlib.sha256(f"silence\x00{rule.id}\x00{since.isoformat()}\x00{repeat}".encode()).hexdigest()
        row = {
            "Expected": f"{_OPERATOR_WORDS.get(rule.trigger_operator, rule.trigger_operator)} "
            f"{rule.trigger_threshold} row(s)",
            "Found": "0 rows",
            "SilentSince": since,
            "WindowStart": window.start,
            "WindowEnd": window.end,
        }
        hit = Hit(key, row, first_seen=now, lease_owner=self.run_id, lease_until=lease_until)
        return self.store.insert_new(rule.id, [hit])

    # --- blind spots: a source table with no new rows (issue 13) ---

    def _watch_sources(
        self,
        rule: Rule,
        plan: RunPlan,
        result: QueryResult | None,
        state: RuleState,
        now: datetime,
        outcome: RuleOutcome,
        workspace: str = "",
    ) -> None:
        """One notice when a source table has had no new rows for longer than its threshold, one when rows
        return. Each rule looks at most hourly (no state read on other runs); a table's last ingestion time is
        probed at most once an hour whichever rules read it."""
        choice = plan.choice
        if plan.source == DEFENDER:
            return  # the probe reads ingestion_time(), which advanced hunting does not have (issue 15)
        if result is None or result.partial_error is not None:
            return  # the workspace is unwell or the answer incomplete: that is reported already, and says nothing
        # Rows read by ingestion time were ingested after the watermark: the table is not silent, no probe needed.
        seen_now = plan.since is not None and bool(result.rows)
        if not seen_now and state.sources_checked and now - state.sources_checked < TABLE_PROBE_EVERY:
            return
        if not seen_now:
            state.sources_checked = now
        for table in choice.tables:
            known, last = (True, now) if seen_now else self._last_ingested(table, now, outcome, workspace)
            if not known:
                continue
            if last is None:
                # Never a row seen (none within a day, none recorded): a missing connector or a new table rather
                # than data that stopped. Reported in the run record, not as a card on every fresh deployment.
                outcome.warnings.append(f"{table}: no rows ingested in the last {TABLE_PROBE_SPAN}")
                continue
            threshold = ingestion.silence_threshold(table, rule.silence_after)
            quiet_since = last
            if now - quiet_since > threshold:
                if table not in state.blind:
                    outcome.warnings.append(f"{table} has had no new rows since {quiet_since.isoformat()}")
                    if self._notify(notices.blind(rule, table, quiet_since, threshold), outcome):
                        state.blind[table] = quiet_since
            elif table in state.blind and self._notify(
                notices.sighted(rule, table, state.blind[table], quiet_since), outcome
            ):
                del state.blind[table]

    def _last_ingested(
        self, table: str, now: datetime, outcome: RuleOutcome, workspace: str = ""
    ) -> tuple[bool, datetime | None]:
        """(known, the table's latest ingestion time or None for none within TABLE_PROBE_SPAN)."""
        workspace = workspace or self.settings.workspace_id
        # Issue 15: a table is seen per workspace; the default workspace keeps the table's own key.
        key = table if workspace == self.settings.workspace_id else f"{table}@{workspace}"
        last, checked = self.store.table_seen(key)
        if checked is not None and now - checked < TABLE_PROBE_EVERY:
            return True, last
        try:
            result = self.logs.query(
                workspace,
                ingestion.last_ingested_query(table),
                now - TABLE_PROBE_SPAN - FAST_LATENESS,
                now,
            )
        except KqlwatchError as exc:
            outcome.warnings.append(f"could not probe {table} for new rows: {exc}")
            return False, None
        value = result.rows[0].get("LastIngested") if result.rows else None
        probed = _as_time(value)
        last = max(t for t in (last, probed) if t is not None) if (last or probed) else None
        self.store.save_table_seen(key, last, now)
        return True, last

    # --- health and notices ---

    def _update_health(self, rule: Rule, state: RuleState, outcome: RuleOutcome, now: datetime) -> None:
        """Count consecutive failures; after FAILURES_BEFORE_NOTICE post one "failing" card (again at most
        hourly), and one "recovered" card when the rule works again."""
        if outcome.ok:
            if state.failure_notified_at is not None:
                self._notify(notices.recovered(rule, state.failing_since, now), outcome)
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
            if self._notify(card, outcome):
                state.failure_notified_at = now

    def _report_expired_exclusions(self, prepared: PreparedRule, now: datetime, outcome: RuleOutcome) -> None:
        for exclusion in prepared.expired:
            message = (
                f"exclusion '{exclusion.name}' ({exclusion.source}) expired on {exclusion.expires}: no longer applied"
            )
            outcome.warnings.append(message)
            notice = f"expired-{short_hash(repr(exclusion))}"
            if self.store.first_time(prepared.rule.id, notice, now):
                log.warning("kqlwatch: %s; owner %s should review it", message, exclusion.owner)
                self._notify(notices.exclusion_expired(prepared.rule, exclusion), outcome)

    def _notify(self, payload: dict[str, Any], outcome: RuleOutcome) -> bool:
        delivered = False
        for url in self.settings.ops_webhooks:
            result = self.teams.post(url, payload)
            delivered = delivered or result.ok
            if not result.ok:
                outcome.warnings.append(f"notice not delivered: {result.detail}")
        return delivered


_OPERATOR_WORDS = {
    "gt": "more than",
    "GreaterThan": "more than",
    "lt": "fewer than",
    "LessThan": "fewer than",
    "eq": "exactly",
    "Equal": "exactly",
    "ne": "other than",
    "NotEqual": "other than",
}


_as_time = as_time  # a row's time value, as the detector and the workbench read it
