"""A local HTTPS endpoint that speaks the Log Analytics query API to the real `LogsQueryClient`.

It evaluates the posted KQL with the offline engine over in-memory tables. Each row has a hidden ingestion
time: a row is invisible until "ingested", and `ingestion_time()` reads it. The request's timespan is applied
to TimeGenerated, as the real service does. Tests can script failures: 429 with Retry-After, 5xx, 401/403,
partial results, slow answers. Like the real service it runs at most 5 queries per identity (per bearer token)
at once: more wait for a slot up to `queue_wait` seconds (180 in the service; tests set less), then get 429.

Shapes are the real service's: errors carry a correlationId and the specific reason in innererror; a partial
result is `error.code = PartialError` with a generic details[].message and the reason in
details[].innererror (truncation: E_QUERY_RESULT_SET_TOO_LARGE, code -2133196797); a query running past
`Prefer: wait=N` answers 504 GatewayTimeout after N seconds; timespans print as `00:05:00` / `1.00:00:00`,
guids as strings, dynamic values as JSON text.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from shared.rules.kql import tokenize
from shared.schemas import known_tables, table_schema
from shared.standins._http import HttpsServer, Request, Response
from shared.standins.lawire import _in_span, _infer_schema, _parse_time, _timespan, _wire
from shared.workbench.engine import INGESTED, Engine, EngineError, Plans, with_ingestion_column

_PATH = re.compile(r"^/v1/workspaces/([^/]+)/query")
_WAIT = re.compile(r"(?:^|[,\s])wait=(\d+)")
DEFAULT_WAIT = 180  # seconds the service waits for a query when the request does not say
CONCURRENT_PER_IDENTITY = 5  # queries one identity runs at once; the rest are queued
QUEUE_WAIT = 180.0  # seconds a queued query waits for a slot before 429
EVALUATION_ALLOWANCE = 0.25  # seconds of a slow query's time left for evaluating it (see _answer)
MAX_ADDITIONAL = 100  # workspaces a query may name in its body's `workspaces`, besides the path's
TRUNCATION_CODE = "-2133196797"  # E_QUERY_RESULT_SET_TOO_LARGE
GENERIC_DETAIL = "Something went wrong processing your query on the server."


@dataclass(frozen=True)
class PartialFailure:
    """A partial error other than truncation (e.g. low memory, a workspace of several unavailable)."""

    code: str
    message: str


@dataclass(frozen=True)
class QueryLog:
    workspace: str
    query: str
    timespan: str | None
    authorization: str
    prefer: str = ""
    workspaces: tuple[str, ...] = ()  # issue 15: the body's `workspaces` (additional_workspaces), as sent


class LogAnalyticsStandIn:
    def __init__(
        self,
        *,
        token: str = "local-test-token",  # noqa: S107 - the stand-in's own throwaway token
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.token = token
        self.clock = clock
        self._tables: dict[str, list[dict[str, Any]]] = {}
        self._scoped: dict[tuple[str, str], list[dict[str, Any]]] = {}  # (workspace, table) -> rows
        # Issue 15: the workspaces a cross-workspace query may name (ingest(workspace=) and add_workspaces add).
        self.known_workspaces: set[str] = set()
        self._lock = threading.Lock()
        self._plans: Plans = {}  # KQL->SQL, kept across queries: a rule's runs differ only in their datetimes
        self._script: deque[Response] = deque()
        self.row_cap: int | None = None  # answer a partial result past this many rows
        self.partial_failure: PartialFailure | None = None  # answer every query partially, for this reason
        self.query_seconds: float = 0.0  # server time each query takes: past the request's wait, a 504
        self.slow_query: str | None = None  # only queries containing this text take query_seconds (None: all)
        self.requests: list[QueryLog] = []
        # Rows in the request's TimeGenerated timespan, summed over queries: what a query scans in a real workspace
        # (ingestion_time() filters do not narrow the scan; the timespan does). Issue 13's cost measure.
        self.rows_scanned = 0
        # Issue 14: the per-identity concurrency limit, and what it saw.
        self.concurrent_limit = CONCURRENT_PER_IDENTITY
        self.queue_wait = QUEUE_WAIT
        self.max_concurrent = 0  # the most queries of one identity running at once
        self.throttled = 0  # queries answered 429 after waiting queue_wait
        self._running: dict[str, int] = {}
        self._slots = threading.Condition()
        self._stopping = threading.Event()
        self._https = HttpsServer(self._handle, prefix="kqlwatch-la-")
        self._ca, self.ca_file = self._https.ca, self._https.ca_file

    @property
    def endpoint(self) -> str:
        return self._https.endpoint

    def start(self) -> LogAnalyticsStandIn:
        self._https.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._https.stop()

    def __enter__(self) -> LogAnalyticsStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- data ---

    def ingest(
        self, table: str, rows: Iterable[Mapping[str, Any]], *, at: datetime | None = None, workspace: str | None = None
    ) -> None:
        """Add rows, queryable from `at` (default: now), in `workspace` (default: every workspace). A row's own
        _IngestedAt wins."""
        when = at or self.clock()
        with self._lock:
            # Issue 15: rows of one workspace are kept apart; rows without one are in every workspace.
            if workspace:
                self.known_workspaces.add(workspace.lower())
            stored = (
                self._scoped.setdefault((workspace.lower(), table), [])
                if workspace
                else self._tables.setdefault(table, [])
            )
            for row in rows:
                item = {
                    k: _parse_time(v) if k in ("TimeGenerated", "Timestamp", INGESTED) else v for k, v in row.items()
                }
                item.setdefault(INGESTED, when)
                stored.append(item)

    def add_workspaces(self, *workspaces: str) -> None:
        """Workspaces that exist (and the identity may read) without rows of their own."""
        with self._lock:
            self.known_workspaces.update(w.lower() for w in workspaces)

    def reset(self) -> None:
        """Forget all data, requests and scripted answers."""
        with self._lock:
            self._tables.clear()
            self._scoped.clear()
            self.known_workspaces.clear()
            self.requests.clear()
            self._script.clear()
            self.row_cap = None
            self.partial_failure = None
            self.query_seconds = 0.0
            self.slow_query = None
            self.rows_scanned = 0
            self.max_concurrent = 0
            self.throttled = 0
            self.concurrent_limit = CONCURRENT_PER_IDENTITY
            self.queue_wait = QUEUE_WAIT

    def respond(self, *responses: Response) -> None:
        """Answer the next queries with these responses, in order, then evaluate queries again."""
        with self._lock:
            self._script.extend(responses)

    # --- the API ---

    def _handle(self, request: Request) -> Response:
        match = _PATH.match(request.path)
        if request.method != "POST" or not match:
            return _error(404, "PathNotFoundError", f"no such path {request.path}")
        body = request.json()
        auth = _header(request, "authorization")
        prefer = _header(request, "prefer")
        listed = body.get("workspaces") or []
        sent = tuple(str(w) for w in listed) if isinstance(listed, list) else (str(listed),)
        with self._lock:
            self.requests.append(
                QueryLog(match.group(1), body.get("query", ""), body.get("timespan"), auth, prefer, sent)
            )
            scripted = self._script.popleft() if self._script else None
        if scripted is not None:
            return scripted
        if auth != f"Bearer {self.token}":
            return _error(401, "AuthorizationRequiredError", "Valid authentication was not provided")
        scope = self._scope(match.group(1).lower(), listed)
        if isinstance(scope, Response):
            return scope
        if not self._take_slot(auth):
            with self._lock:
                self.throttled += 1
            return _error(429, "ThrottledError", "Too many concurrent requests for this user: retry later")
        try:
            return self._answer(body, prefer, scope)
        finally:
            with self._slots:
                self._running[auth] -= 1
                self._slots.notify_all()

    def _scope(self, workspace: str, listed: Any) -> tuple[str, ...] | Response:
        """The workspaces a query reads: the path's, then the body's `workspaces` (a cross-workspace query, at most
        MAX_ADDITIONAL of them, each one that exists), else the service's 400 naming the fault."""
        if not isinstance(listed, list) or not all(isinstance(w, str) and w for w in listed):
            return _bad_request("BadRequest", "'workspaces' must be a list of workspace identifiers")
        if len(listed) > MAX_ADDITIONAL:
            return _bad_request(
                "TooManyResourcesError",
                f"The query references {len(listed) + 1} workspaces; a query can reference at most "
                f"{MAX_ADDITIONAL + 1} (the workspace queried and {MAX_ADDITIONAL} in 'workspaces')",
            )
        with self._lock:
            unknown = [w for w in listed if w.lower() not in self.known_workspaces]
        if unknown:
            return _bad_request(
                "FailedToResolveWorkspace",
                f"Failed to resolve workspace '{unknown[0][:100]}': it does not exist or the caller may not read it",
            )
        return tuple(dict.fromkeys([workspace, *(w.lower() for w in listed)]))

    def _take_slot(self, identity: str) -> bool:
        """One of the identity's concurrent slots, waiting up to queue_wait for one (False: none came free)."""
        deadline = time.monotonic() + self.queue_wait
        with self._slots:
            while self._running.get(identity, 0) >= self.concurrent_limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._slots.wait(left)
            self._running[identity] = self._running.get(identity, 0) + 1
            self.max_concurrent = max(self.max_concurrent, self._running[identity])
        return True

    def _answer(self, body: dict[str, Any], prefer: str, scope: tuple[str, ...]) -> Response:
        """The query's answer, after the time it takes (spent holding its slot, as a running query does)."""
        wait = _wait(prefer)
        takes = self.query_seconds if self.slow_query is None or self.slow_query in body.get("query", "") else 0.0
        if takes > wait:
            self._stopping.wait(wait)
            return _error(504, "GatewayTimeout", "Gateway timeout: the query did not finish in time.")
        began = time.monotonic()
        self._stopping.wait(max(takes - EVALUATION_ALLOWANCE, 0.0))  # rows ingested meanwhile are seen, as before
        answer = self._answer_now(body, scope)
        # The query takes `takes` in all, our own evaluation included (it would otherwise add its CPU time,
        # on the test machine's cores, to every query's latency: the service's figure is the whole).
        self._stopping.wait(max(takes - (time.monotonic() - began), 0.0))
        return answer

    def _answer_now(self, body: dict[str, Any], scope: tuple[str, ...]) -> Response:
        now = self.clock()
        try:
            start, end = _timespan(body.get("timespan"), now)
            return self._evaluate(body.get("query", ""), start, end, now, scope)
        except EngineError as exc:
            return _bad_request("SemanticError", str(exc))
        except ValueError as exc:
            return _bad_request("BadRequest", f"bad request: {exc}")

    def _tables_of(self, scope: tuple[str, ...], named: set[str]) -> dict[str, list[dict[str, Any]]]:
        """The named tables' rows in the scope's workspaces (a cross-workspace query reads their union), each row
        with its workspace's id as TenantId, as Log Analytics sets it."""
        # Every table with a shipped schema exists (empty), as it does in a workspace with the connector.
        tables: dict[str, list[dict[str, Any]]] = {name: [] for name in known_tables() if name in named}
        with self._lock:
            for workspace in scope:
                for name in named:
                    rows = [*self._tables.get(name, ()), *self._scoped.get((workspace, name), ())]
                    tenant = "TenantId" in dict(table_schema(name) or _infer_schema(rows))
                    if rows:
                        copied = [{**r, "TenantId": workspace} for r in rows] if tenant else rows
                        tables[name] = tables.get(name, []) + copied
        return tables

    def _evaluate(
        self, query: str, start: datetime | None, end: datetime | None, now: datetime, scope: tuple[str, ...] = ("",)
    ) -> Response:
        named = {t.text for t in tokenize(query) if t.kind == "ident"}
        tables = self._tables_of(scope, named)
        with Engine(plans=self._plans) as engine:
            for name, table_rows in tables.items():
                if name not in named:
                    continue  # a table the query does not name cannot change its answer: not loaded (speed)
                visible = [r for r in table_rows if r[INGESTED] <= now and _in_span(r.get("TimeGenerated"), start, end)]
                self.rows_scanned += len(visible)
                schema = dict(table_schema(name) or _infer_schema(table_rows))
                schema[INGESTED] = "datetime"
                engine.load_rows(name, visible, schema)
            result = engine.query(with_ingestion_column(query), now=now, reuse_plan=True)
        keep = [i for i, c in enumerate(result.columns) if c != INGESTED]
        hidden = _hidden_schema_rows(query, result.columns)
        rows: list[list[Any]] = [
            [_wire(row[i], result.types[i]) for i in keep] for row in result.rows if not hidden(row)
        ]
        payload: dict[str, Any] = {
            "tables": [
                {
                    "name": "PrimaryResult",
                    "columns": [{"name": result.columns[i], "type": result.types[i]} for i in keep],
                    "rows": rows,
                }
            ]
        }
        if self.row_cap is not None and len(rows) > self.row_cap:
            payload["tables"][0]["rows"] = rows[: self.row_cap]
            payload["error"] = partial_error_body(
                TRUNCATION_CODE,
                "Query result set has exceeded the internal record count "
                f"limit {self.row_cap} (E_QUERY_RESULT_SET_TOO_LARGE; see "
                "https://aka.ms/kustoquerylimits)",
            )
        elif self.partial_failure is not None:
            payload["error"] = partial_error_body(self.partial_failure.code, self.partial_failure.message)
        return Response.of_json(200, payload)


def partial_error_body(code: str, message: str) -> dict[str, Any]:
    return {
        "code": "PartialError",
        "message": "There were some errors when processing your query.",
        "details": [
            {
                "code": "EngineError",
                "message": GENERIC_DETAIL,
                "innererror": {"code": code, "message": message, "severity": 2, "severityName": "Error"},
            }
        ],
    }


def _hidden_schema_rows(query: str, columns: list[str]) -> Callable[[tuple[Any, ...]], bool]:
    """`T | getschema` lists the table's columns as the service has them: not the stand-in's hidden one."""
    if "ColumnName" not in columns or not any(t.text == "getschema" for t in tokenize(query)):
        return lambda row: False
    at = columns.index("ColumnName")
    return lambda row: row[at] == INGESTED


def _wait(prefer: str) -> float:
    match = _WAIT.search(prefer)
    return float(match.group(1)) if match else DEFAULT_WAIT


def _header(request: Request, name: str) -> str:
    return next((v for k, v in request.headers.items() if k.lower() == name), "")


def _bad_request(code: str, message: str) -> Response:
    return _error(400, "BadArgumentError", "The request had some invalid properties", inner=(code, message))


def _error(status: int, code: str, message: str, *, inner: tuple[str, str] | None = None) -> Response:
    error: dict[str, Any] = {"message": message, "code": code, "correlationId": str(uuid.uuid4())}
    if inner:
        error["innererror"] = {"code": inner[0], "message": inner[1]}
    return Response.of_json(status, {"error": error})
