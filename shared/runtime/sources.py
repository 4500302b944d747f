"""Blind spots (issue 13): a rule's source table that has had no new rows for too long gets one notice, and one
more when rows return. A table's last ingestion time is probed at most hourly, whichever rules read it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.errors import KqlwatchError
from shared.rules import ingestion
from shared.rules.durations import as_time
from shared.rules.fields import DEFENDER
from shared.rules.loader import Rule
from shared.runtime import notices
from shared.runtime.health import Notifier
from shared.runtime.loganalytics import QueryResult
from shared.runtime.outcome import RuleOutcome
from shared.runtime.planning import RunPlan
from shared.runtime.querying import LogsApi
from shared.runtime.store import RuleState, StateStore
from shared.runtime.window import FAST_LATENESS

TABLE_PROBE_EVERY = timedelta(hours=1)  # at most one blind-spot probe per source table per hour
TABLE_PROBE_SPAN = timedelta(hours=24)  # the probe's TimeGenerated span: on-time rows are what it looks for


@dataclass(frozen=True)
class SourceWatch:
    store: StateStore
    logs: LogsApi
    workspace_id: str  # the default workspace: its tables keep their own keys in the state table
    notifier: Notifier

    def watch(
        self,
        rule: Rule,
        plan: RunPlan,
        result: QueryResult | None,
        state: RuleState,
        now: datetime,
        outcome: RuleOutcome,
    ) -> None:
        """One notice when a source table has had no new rows for longer than its threshold, one when rows
        return. Each rule looks at most hourly (no state read on other runs)."""
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
        for table in plan.choice.tables:
            known, last = (True, now) if seen_now else self.last_ingested(table, now, outcome, plan.workspace)
            if known:
                self._judge(rule, table, last, state, now, outcome)

    def _judge(
        self, rule: Rule, table: str, last: datetime | None, state: RuleState, now: datetime, outcome: RuleOutcome
    ) -> None:
        if last is None:
            # Never a row seen (none within a day, none recorded): a missing connector or a new table rather
            # than data that stopped. Reported in the run record, not as a card on every fresh deployment.
            outcome.warnings.append(f"{table}: no rows ingested in the last {TABLE_PROBE_SPAN}")
            return
        threshold = ingestion.silence_threshold(table, rule.silence_after)
        if now - last > threshold:
            if table not in state.blind:
                outcome.warnings.append(f"{table} has had no new rows since {last.isoformat()}")
                if self.notifier.notify(notices.blind(rule, table, last, threshold), outcome):
                    state.blind[table] = last
        elif table in state.blind and self.notifier.notify(
            notices.sighted(rule, table, state.blind[table], last), outcome
        ):
            del state.blind[table]

    def last_ingested(
        self, table: str, now: datetime, outcome: RuleOutcome, workspace: str = ""
    ) -> tuple[bool, datetime | None]:
        """(known, the table's latest ingestion time or None for none within TABLE_PROBE_SPAN)."""
        workspace = workspace or self.workspace_id
        # Issue 15: a table is seen per workspace; the default workspace keeps the table's own key.
        key = table if workspace == self.workspace_id else f"{table}@{workspace}"
        last, checked = self.store.table_seen(key)
        if checked is not None and now - checked < TABLE_PROBE_EVERY:
            return True, last
        try:
            result = self.logs.query(
                workspace, ingestion.last_ingested_query(table), now - TABLE_PROBE_SPAN - FAST_LATENESS, now
            )
        except KqlwatchError as exc:
            outcome.warnings.append(f"could not probe {table} for new rows: {exc}")
            return False, None
        value = result.rows[0].get("LastIngested") if result.rows else None
        probed = as_time(value)
        last = max(t for t in (last, probed) if t is not None) if (last or probed) else None
        self.store.save_table_seen(key, last, now)
        return True, last
