"""What a rule's run reads: the rules as a run prepares them, and each run's window and query (issue 13)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from shared.errors import RuleError
from shared.rules import ingestion
from shared.rules.fields import DEFENDER, LOG_ANALYTICS, MAX_ADDITIONAL_WORKSPACES, NAMESPACE, union_limit_reason
from shared.rules.loader import Rule, load_exclusion_files, load_rules
from shared.rules.prepare import PreparedRule, prepare_rules, window_choice
from shared.runtime.settings import Settings
from shared.runtime.store import RuleState
from shared.runtime.window import (
    DEFENDER_MAX_CATCHUP,
    DEFENDER_OVERLAP,
    IngestionWindow,
    Window,
    ingestion_window,
    next_window,
)


@dataclass(frozen=True)
class RunPlan:
    """What one run of a rule reads: the API timespan (TimeGenerated) and, in ingestion mode, the query with
    its source tables filtered to rows ingested after the watermark."""

    choice: ingestion.WindowChoice
    window: Window  # the API timespan, on TimeGenerated
    query: str
    since: IngestionWindow | None = None  # ingestion mode only
    source: str = LOG_ANALYTICS  # issue 15: which client runs the query
    workspace: str = ""  # issue 15: the workspace it reads ("" on Defender: tenant-wide)
    additional: tuple[str, ...] = ()  # issue 15, kqlwatch.union: the other workspaces of one cross-workspace query

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


def plan_run(
    settings: Settings, prepared: PreparedRule, state: RuleState, now: datetime, workspace: str = ""
) -> RunPlan:
    """The run's window and query, against `workspace` (default: the configured default workspace)."""
    rule = prepared.rule
    choice = window_choice(rule)
    if settings.source_of(rule.source) == DEFENDER:
        return _defender_plan(settings, prepared, choice, state, now)
    workspace = workspace or settings.workspace_id
    additional = union_workspaces(settings, rule, workspace)
    if choice.mode != ingestion.INGESTION:
        window = next_window(
            now,
            period=rule.query_period,
            frequency=rule.query_frequency,
            last_end=state.last_window_end,
            max_catchup=settings.max_catchup,
        )
        return RunPlan(choice, window, prepared.query, workspace=workspace, additional=additional)
    since = ingestion_window(
        now,
        period=rule.query_period,
        last_end=state.last_window_end,
        last_sweep_end=state.last_sweep_end,
        max_lateness=settings.max_lateness,
        max_catchup=settings.max_catchup,
        sweep_every=settings.late_sweep,
    )
    query = ingestion.with_ingestion_filter(prepared.query, choice.tables, since.since)
    return RunPlan(choice, since.timespan, query, since, workspace=workspace, additional=additional)


def union_workspaces(settings: Settings, rule: Rule, workspace: str) -> tuple[str, ...]:
    """kqlwatch.union: the workspaces besides `workspace` that its one query reads (additional_workspaces).
    More than the service's 100 is the rule's error, naming its file and key, before anything is sent."""
    if not rule.union:
        return ()
    listed = rule.workspaces or settings.workspace_ids
    additional = tuple(w for w in dict.fromkeys(listed) if w != workspace)
    if len(additional) > MAX_ADDITIONAL_WORKSPACES:
        where = f"{NAMESPACE}.workspaces" if rule.workspaces else "KQLWATCH_WORKSPACE_ID"
        raise RuleError(rule.path, union_limit_reason(len(additional) + 1, where), key=NAMESPACE)
    return additional


def _defender_plan(
    settings: Settings, prepared: PreparedRule, choice: ingestion.WindowChoice, state: RuleState, now: datetime
) -> RunPlan:
    """Issue 15: advanced hunting has no ingestion time: Timestamp windows (the API's Timespan) that re-read
    DEFENDER_OVERLAP for late rows, reaching back at most 30 days (what advanced hunting keeps)."""
    rule = prepared.rule
    window = next_window(
        now,
        period=rule.query_period,
        frequency=rule.query_frequency,
        last_end=state.last_window_end,
        max_catchup=min(settings.max_catchup, DEFENDER_MAX_CATCHUP),
        min_overlap=DEFENDER_OVERLAP,
    )
    reason = f"Defender advanced hunting has no ingestion time: Timestamp windows re-reading {DEFENDER_OVERLAP}"
    return RunPlan(ingestion.WindowChoice("timestamp", reason, choice.tables), window, prepared.query, source=DEFENDER)
