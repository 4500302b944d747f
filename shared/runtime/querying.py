"""Querying a rule's window: a truncated result is re-queried as smaller windows, a failure or partial result is
put into the rule's outcome (issue 13's rules for what a partial result means)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from shared.errors import KqlwatchError, QueryError, QueryThrottled
from shared.runtime.loganalytics import QueryResult
from shared.runtime.outcome import RuleOutcome
from shared.runtime.window import Window

log = logging.getLogger("kqlwatch")

MAX_SPLITS = 4  # a truncated (partial) result is re-queried as up to 2**4 smaller windows
MIN_SPLIT = timedelta(minutes=1)


class LogsApi(Protocol):
    # additional_workspaces (issue 15, kqlwatch.union): one cross-workspace query; only Log Analytics has them.
    def query(
        self,
        workspace_id: str,
        query: str,
        start: datetime,
        end: datetime,
        *,
        additional_workspaces: Sequence[str] = (),
    ) -> QueryResult: ...


def query_window(
    logs: LogsApi,
    workspace_id: str,
    query: str,
    start: datetime,
    end: datetime,
    depth: int = 0,
    additional: Sequence[str] = (),
) -> QueryResult:
    """Query the window. A truncated result (row/size limit) is re-queried as two halves rather than
    losing rows; any other partial error is returned as it is: splitting would not help."""
    result = logs.query(workspace_id, query, start, end, additional_workspaces=additional)
    if not result.truncated or depth >= MAX_SPLITS or end - start <= MIN_SPLIT:
        return result
    middle = start + (end - start) / 2
    log.warning("truncated result for %s..%s (%s): querying the halves", start, end, result.partial_error)
    first = query_window(logs, workspace_id, query, start, middle, depth + 1, additional)
    second = query_window(logs, workspace_id, query, middle, end, depth + 1, additional)
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


def timed_query(
    logs: LogsApi,
    workspace_id: str,
    query: str,
    window: Window,
    outcome: RuleOutcome,
    additional: Sequence[str] = (),
) -> QueryResult | None:
    """The window's result, or None when the query failed; the time it took goes into the outcome."""
    started = time.monotonic()
    try:
        return query_window(logs, workspace_id, query, window.start, window.end, additional=additional)
    except QueryError as exc:
        if exc.status == 429:
            # Issue 14: the identity's 5 concurrent queries were busy past the service's 3-minute queue (and the
            # SDK's retries). Not the rule's fault: defer, as a worker on another instance must, and let the next
            # run (whose window reaches back to the last successful one) read it.
            outcome.throttled = True
            outcome.warnings.append(f"deferred: Log Analytics throttled the query ({exc}); the next run reads it")
            return None
        outcome.degraded = outcome.degraded or isinstance(exc, QueryThrottled)  # issue 15: quota spent: deferred
        outcome.ok = False
        outcome.errors.append(f"query failed: {exc}")
        return None
    except KqlwatchError as exc:
        outcome.ok = False
        outcome.errors.append(f"query failed: {exc}")
        return None
    finally:
        outcome.query_ms = int((time.monotonic() - started) * 1000)


def note_partial(result: QueryResult, outcome: RuleOutcome) -> None:
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
