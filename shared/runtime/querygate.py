"""At most N queries in flight per query service, however many rule runs go on side by side (issue 14).

Log Analytics runs 5 queries per identity at once and queues the rest (for up to 3 minutes, then 429). A rule run
is more than its query: Table Storage round-trips before it (snapshot) and after it (recording, the save) and the
posting of its cards. If a run held a query slot for all of that, the slots would stand idle between queries and
a cycle of many rules would take far longer than rules / 5 x query latency. So the run pool is wider than the
limit and only the query itself takes a slot: other runs do their storage work meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime

from shared.runtime.loganalytics import QueryResult
from shared.runtime.querying import LogsApi

RUNS_PER_SLOT = 2  # rule runs in flight per query slot: one querying, one doing its storage and delivery work


class QueryGate:
    """One service's query slots; `over(client)` is the client seen through them."""

    def __init__(self, limit: int) -> None:
        self._slots = threading.BoundedSemaphore(limit)

    def over(self, api: LogsApi) -> LogsApi:
        return _Gated(api, self._slots)


class _Gated:
    def __init__(self, api: LogsApi, slots: threading.BoundedSemaphore) -> None:
        self._api = api
        self._slots = slots

    def query(
        self,
        workspace_id: str,
        query: str,
        start: datetime,
        end: datetime,
        *,
        additional_workspaces: Sequence[str] = (),
    ) -> QueryResult:
        with self._slots:  # the SDK's own retries (429 with Retry-After, 5xx) happen inside the slot, as they should
            return self._api.query(workspace_id, query, start, end, additional_workspaces=additional_workspaces)
