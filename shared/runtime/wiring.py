"""Wire the real clients to the detector, once per process (Functions reuses the worker between runs)."""

from __future__ import annotations

import logging
from functools import lru_cache

from shared.runtime.detector import Detector, RunReport
from shared.runtime.loganalytics import LogsClient, make_credential
from shared.runtime.settings import Settings, load_settings
from shared.runtime.store import StateStore, connect
from shared.runtime.teams import TeamsClient

log = logging.getLogger("kqlwatch")


@lru_cache(maxsize=4)
def _clients(
    logs_endpoint: str, access_token: str | None, state_connection: str, state_table: str
) -> tuple[LogsClient, StateStore, TeamsClient]:
    logs = LogsClient(logs_endpoint, make_credential(access_token))
    store = StateStore(connect(state_connection, state_table))
    return logs, store, TeamsClient()


def detector(settings: Settings) -> Detector:
    logs, store, teams = _clients(
        settings.logs_endpoint, settings.access_token, settings.state_connection, settings.state_table
    )
    return Detector(settings, logs=logs, store=store, teams=teams)


def run(*, only_due: bool, settings: Settings | None = None) -> RunReport:
    settings = settings or load_settings()
    return detector(settings).run(only_due=only_due)


def run_timer(*, past_due: bool) -> RunReport:
    """The timer's entry point. A late timer (past_due) changes nothing: windows reach back to the last
    successful one, so the missed interval is covered by this run."""
    if past_due:
        log.warning("timer is past due; this run covers the missed interval")
    report = run(only_due=True)
    if not report.ok:
        # Failing the invocation makes the failure visible in Application Insights and the portal.
        failed = [o.rule_id for o in report.outcomes if not o.ok] + [e.path for e in report.rule_errors]
        raise RuntimeError(f"kqlwatch run finished with failures: {', '.join(failed)}")
    return report
