"""One run of kqlwatch: every (due) rule -> query its window -> record new hits -> deliver -> record the run.

This module sequences one rule's run and keeps one rule's failure from touching the others. What each step does
lives beside it: planning.py (which rules, what window and query), querying.py (the query, split when
truncated), hits.py (identities, recording only what is new), delivery.py (posting and recording each post),
sources.py (blind spots), health.py (failing / recovered / expired-exclusion notices), outcome.py (what a run did).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta, timezone

from shared.errors import KqlwatchError, QueryError
from shared.rules.enrich import MAIL_AUTH_DNS
from shared.rules.fields import DEFENDER
from shared.rules.loader import Rule
from shared.rules.prepare import PreparedRule
from shared.runtime import dnsevidence, hits
from shared.runtime.cards import query_link
from shared.runtime.delivery import Delivery, Poster, card_capacity
from shared.runtime.health import NOTICE_INTERVAL, report_expired_exclusions, update_health
from shared.runtime.hits import short_hash
from shared.runtime.loganalytics import QueryResult
from shared.runtime.older import claim_older
from shared.runtime.outcome import RuleOutcome, RunReport
from shared.runtime.planning import RunPlan, load_prepared, plan_run
from shared.runtime.querygate import RUNS_PER_SLOT, QueryGate
from shared.runtime.querying import MAX_SPLITS, MIN_SPLIT, LogsApi, note_partial, timed_query
from shared.runtime.runguard import GuardedPoster, HeldRun, RunGuard
from shared.runtime.runlease import ACQUIRED, LeaseLost, RunLeases
from shared.runtime.settings import Settings
from shared.runtime.silence import record_silence
from shared.runtime.sources import TABLE_PROBE_EVERY, TABLE_PROBE_SPAN
from shared.runtime.store import (
    Hit,
    RuleState,
    RunRecord,
    Snapshot,
    StateStore,
)
from shared.runtime.units import run_units
from shared.runtime.window import is_due, next_sweep_mark

# Re-exported: callers (the wiring, the CLI, tests, the bench) take a run's vocabulary from here.
__all__ = [
    "LEASE",
    "MAX_SPLITS",
    "MIN_SPLIT",
    "NOTICE_INTERVAL",
    "TABLE_PROBE_EVERY",
    "TABLE_PROBE_SPAN",
    "Detector",
    "LogsApi",
    "RuleOutcome",
    "RunPlan",
    "RunReport",
    "load_prepared",
]

log = logging.getLogger("kqlwatch")

LEASE = timedelta(minutes=10)  # how long a run owns the hits it is delivering
BURST_HEAD = 1_000  # a burst of over twice this records this many first, the rest while the first cards go out
PURGE_EVERY = timedelta(days=1)
HIT_RETENTION = timedelta(days=14)  # beyond the furthest a window reaches back
RUN_RETENTION = timedelta(days=30)


class Detector:
    def __init__(
        self,
        settings: Settings,
        *,
        logs: LogsApi,
        store: StateStore,
        teams: Poster,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        leases: RunLeases | None = None,
        defender: LogsApi | None = None,  # issue 15: Defender XDR advanced hunting (shared.runtime.defender)
    ) -> None:
        self.settings = settings
        self.leases = leases  # issue 14: who runs a rule (None: the caller guarantees one run per rule)
        self.logs = logs
        self.defender = defender
        self.store = store
        self.teams = teams
        self.clock = clock
        self.run_id = uuid.uuid4().hex[:12]
        self.dns = dnsevidence.RunLookups(settings.dns_servers)  # issue 16: one cache and budget per run
        # Issue 14: the query services' limits are per identity, so the slots are per service, not per rule.
        self.gates = {DEFENDER: QueryGate(settings.concurrency), "": QueryGate(settings.concurrency)}

    def run(self, *, only_due: bool) -> RunReport:
        self.dns = dnsevidence.RunLookups(self.settings.dns_servers)  # issue 16
        warnings: list[str] = []
        prepared, errors = load_prepared(self.settings, self.clock().date(), warnings)
        for error in errors:
            log.error("rule skipped: %s", error)
        for warning in warnings:
            log.warning("%s", warning)
        self.store.ensure_table()
        # Issue 14: rules run side by side, at most KQLWATCH_CONCURRENCY queries at once (Log Analytics runs 5
        # per identity at once: shared.runtime.querygate) while other runs do their storage work; the one
        # TeamsClient spaces posts per webhook across all of them. Issue 15: one run unit per rule and workspace
        # (shared.runtime.units), each with its own state.
        units = run_units(prepared, self.settings)
        with ThreadPoolExecutor(self.settings.concurrency * RUNS_PER_SLOT, thread_name_prefix="kqlwatch-rule") as pool:
            outcomes = list(
                pool.map(lambda u: self.run_leased(u.prepared, None, only_due=only_due, workspace=u.workspace), units)
            )
        return RunReport(outcomes, errors, warnings)

    def run_leased(
        self, prepared: PreparedRule, scheduled: datetime | None, *, only_due: bool = False, workspace: str = ""
    ) -> RuleOutcome:
        """One rule's run under its run lease (runlease.py): a second worker on the rule, or a duplicate of a
        message whose run already happened (`scheduled` given), does nothing."""
        return self.run_rule(prepared, only_due=only_due, workspace=workspace, scheduled=scheduled)

    def run_rule(
        self,
        prepared: PreparedRule,
        *,
        only_due: bool = False,
        workspace: str = "",
        scheduled: datetime | None = None,
    ) -> RuleOutcome:
        rule = prepared.rule
        outcome = RuleOutcome(rule.id, rule.name)
        started = time.monotonic()
        now = self.clock()
        try:
            self._run_rule(prepared, outcome, now, only_due, started, workspace, scheduled)
        except LeaseLost as exc:  # another run took the rule before this one wrote anything: not a failure
            outcome.ran, outcome.skipped = False, str(exc)
        except KqlwatchError as exc:
            outcome.ok = False
            outcome.errors.append(str(exc))
        except Exception as exc:  # one rule's bug must not stop the others
            log.debug("unexpected error in rule %s", rule.id, exc_info=True)
            outcome.ok = False
            outcome.errors.append(f"internal error: {type(exc).__name__}: {str(exc)[:300]}")
        outcome.duration_ms = int((time.monotonic() - started) * 1000)
        if outcome.ran or outcome.errors or outcome.skipped:
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
        scheduled: datetime | None,
    ) -> None:
        rule = prepared.rule
        guard, snap = RunGuard.read(self.store, self.leases, rule.id, scheduled, self.run_id, now + LEASE)
        claim = guard.claim(now)
        if claim.status != ACQUIRED:
            outcome.skipped, outcome.held_until = claim.describe(), claim.until
            return
        if only_due and not is_due(now, snap.state.last_run, rule.query_frequency):
            return
        run = HeldRun.bind(guard, self.store, self.teams, self.gates[""].over(self.logs), self.settings)
        try:
            if snap.old_hits:
                run.store.adopt_old_hits(rule.id, snap)
            self._run_held(prepared, snap, outcome, now, started, workspace, run)
        except Exception:  # not `finally`: a run killed mid-post (BaseException) keeps holding, as SIGKILL does
            guard.finish(outcome)
            raise
        guard.finish(outcome)

    def _run_held(
        self,
        prepared: PreparedRule,
        snap: Snapshot,
        outcome: RuleOutcome,
        now: datetime,
        started: float,
        workspace: str,
        run: HeldRun,
    ) -> None:
        rule, state = prepared.rule, snap.state
        outcome.ran = True
        plan = plan_run(self.settings, prepared, state, now, workspace)
        outcome.window, outcome.window_mode = plan.window, plan.choice.mode
        outcome.ingested_since = plan.since.since if plan.since else None
        lease_until = now + LEASE
        report_expired_exclusions(run.notifier, run.store, prepared, now, outcome)
        result, recorded = self._query_and_record(rule, plan, state, now, lease_until, outcome, run.store)
        if outcome.throttled:
            return  # deferred (issue 14): nothing recorded, the state stays as it was, the next run reads it
        created = recorded.created
        _note_recorded(created, outcome)  # now: a run that fails while delivering still says what it recorded
        # A burst's tail is recorded while its first cards go out (they show none of it); Delivery waits for it
        # before the card that counts it. The pool's exit waits for it too, whatever happens meanwhile.
        with ThreadPoolExecutor(1, thread_name_prefix="kqlwatch-tail") as pool:
            later = pool.submit(hits.record_tail, run.store, rule, recorded, now) if recorded.tail else None
            lease, max_age = (self.run_id, lease_until), self.settings.delivery_max_age
            claimed = claim_older(rule, snap, created, now, lease, max_age, outcome, run)
            # Delivery failures defer hits to the next run; they do not fail the rule.
            to_deliver = sorted(created + claimed, key=lambda h: h.first_seen)
            tail = (later, len(recorded.tail)) if later else None
            outcome.delivered, outcome.deferred, problems = self._deliver(prepared, to_deliver, plan, run, tail)
            rest = later.result() if later else []
        _note_recorded(rest, outcome)
        created = created + rest
        outcome.warnings.extend(problems)
        self._record_run(rule, plan, result, state, len(created), now, started, outcome, run)

    def _query_and_record(
        self,
        rule: Rule,
        plan: RunPlan,
        state: RuleState,
        now: datetime,
        lease_until: datetime,
        outcome: RuleOutcome,
        store: StateStore,
    ) -> tuple[QueryResult | None, hits.Recorded]:
        """Query the window and record the hits this run is first to see (silence included; a burst's tail is
        left to record while its first cards go out)."""
        window = plan.window
        result = timed_query(self._client(plan), plan.workspace, plan.query, window, outcome, plan.additional)
        if result is None:
            return None, hits.Recorded([], 0)
        note_partial(result, outcome)
        outcome.rows = len(result.rows)
        if plan.additional and result.rows and hits.WORKSPACE_COLUMN not in result.columns:
            outcome.warnings.append(
                f"kqlwatch.union: the result has no {hits.WORKSPACE_COLUMN} column, so its hits cannot name their "
                "workspace and the same row in two workspaces is one hit: keep it in the query's output"
            )
        # A Table Storage failure here fails the rule without saving the run: the next run's window
        # reaches back over this one, and hits already created are pending, so none is lost.
        head = max(card_capacity(rule, self.settings.max_cards_per_run) + 1, BURST_HEAD)
        found = self._hits(rule, result, now, lease_until)
        recorded = hits.record_new(store, rule, state, found, plan.ledger_from, now, head=head)
        outcome.suppressed = recorded.suppressed
        if result.partial_error is None:
            silence = record_silence(store, rule, state, result, window, now, self.run_id, lease_until)
            recorded = replace(recorded, created=recorded.created + silence)
        return result, recorded

    def _client(self, plan: RunPlan) -> LogsApi:
        if plan.source == DEFENDER:
            if self.defender is None:
                raise QueryError("the rule's source is defender, but no Defender client is configured")
            return self.gates[DEFENDER].over(self.defender)
        if not plan.workspace:
            raise QueryError(
                "the rule runs on Log Analytics (kqlwatch.source / KQLWATCH_SOURCE), but KQLWATCH_WORKSPACE_ID is not set"
            )
        return self.gates[""].over(self.logs)

    def _record_run(
        self,
        rule: Rule,
        plan: RunPlan,
        result: QueryResult | None,
        state: RuleState,
        created: int,
        now: datetime,
        started: float,
        outcome: RuleOutcome,
        run: HeldRun,
    ) -> None:
        window = plan.window
        state.last_run = now
        state.runs += 1
        state.hits_total += created
        state.delivered_total += outcome.delivered
        state.last_rows = outcome.rows
        if result is not None and result.partial_error is None:  # the watermarks move only now hits are recorded
            state.last_window_end = window.end
            if plan.since:
                state.last_sweep_end = next_sweep_mark(plan.since, state.last_sweep_end)
        state.window_mode = plan.choice.mode
        run.sources.watch(rule, plan, result, state, now, outcome)
        update_health(run.notifier, rule, state, outcome, now)
        if state.last_purge is None or now - state.last_purge >= PURGE_EVERY:
            reach = max(self.settings.max_catchup, rule.query_period) + self.settings.max_lateness
            run.store.purge(rule.id, hits_before=now - reach - HIT_RETENTION, runs_before=now - RUN_RETENTION)
            state.last_purge = now
        record = RunRecord(
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
        )
        self._save(rule, state, record, run.guard)

    def _save(self, rule: Rule, state: RuleState, record: RunRecord, guard: RunGuard) -> None:
        """The state (with the run lease released) and the run record in one transaction, conditional on the
        state row as this run read it or its lease wrote it: the window moves, and the scheduled run is marked
        done, only while no other run changed the rule."""
        from azure.data.tables import TableTransactionError

        try:
            self.store.save_run(rule.id, state, record, guard.save_op)
        except TableTransactionError as exc:
            lost = guard.save_lost(exc)
            if lost is None:
                raise
            raise lost from None
        guard.saved = True

    # --- hits ---

    def _hits(self, rule: Rule, result: QueryResult, now: datetime, lease_until: datetime) -> list[Hit]:
        _, by_key = hits.collapse(rule, result.columns, result.time_columns, result.rows)
        return [
            Hit(key, row, first_seen=now, lease_owner=self.run_id, lease_until=lease_until)
            for key, row in by_key.items()
        ]

    # --- delivery ---

    def _deliver(
        self,
        prepared: PreparedRule,
        hits: list[Hit],
        plan: RunPlan,
        run: HeldRun,
        tail: tuple[Future[list[Hit]], int] | None = None,  # a burst's tail being recorded, and its size
    ) -> tuple[int, int, list[str]]:
        if not hits:
            return 0, 0, []
        rule = prepared.rule
        urls = {short_hash(u): u for u in self.settings.webhooks_for(rule.route, rule.severity)}
        # Issue 15: the link opens the unit's own workspace (KQLWATCH_WORKSPACE_RESOURCE_ID, one per workspace);
        # a Defender rule has no Logs-blade link.
        resource = self.settings.workspace_resource_ids.get(plan.workspace) if plan.source != DEFENDER else None
        link = query_link(prepared.query, resource, plan.window.start, plan.window.end, self.settings.logs_endpoint)
        # Finding F: the delivery lease starts now, not when the run did (`lease_until` only held the hits
        # while they were recorded); Delivery claims under it, bounded, and releases what it does not deliver.
        delivery = Delivery(
            rule,
            run.store,
            GuardedPoster(self.teams, run.guard.take),
            self.clock,
            self.settings.max_cards_per_run,
            self.clock() + LEASE,
            link,
            frozenset(urls),
            lambda shown: self._evidence(prepared, shown),  # issue 16: once per rule run, before any card is built
            self.run_id,
        )
        if tail is not None:
            delivery.later, delivery.later_count = tail
        delivered = delivery.run(hits, urls)
        return delivered, delivery.deferred, delivery.problems

    def _evidence(self, prepared: PreparedRule, hits: list[Hit]) -> Sequence[tuple[str, Sequence[str]]]:
        """Issue 16: DNS evidence for the rule's accepted domains on these hits (never raises, <= 5 s a run)."""
        if MAIL_AUTH_DNS not in prepared.rule.enrich:
            return ()
        return dnsevidence.card_evidence(dnsevidence.evidence_for(prepared.query, [h.row for h in hits], self.dns))


def _note_recorded(recorded: list[Hit], outcome: RuleOutcome) -> None:
    outcome.new_hits += len(recorded)
    outcome.warnings.extend(f"hit {h.key[:12]}: {h.store_note}" for h in recorded if h.store_note)
