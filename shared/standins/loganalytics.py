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
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from shared.rules.durations import parse_duration, parse_time
from shared.rules.kql import tokenize
from shared.schemas import known_tables, table_schema
from shared.standins._http import LoopbackServer, Request, Response
from shared.workbench.engine import Engine, EngineError

INGESTED = "_IngestedAt"
_PATH = re.compile(r"^/v1/workspaces/([^/]+)/query")
_WAIT = re.compile(r"(?:^|[,\s])wait=(\d+)")
DEFAULT_WAIT = 180  # seconds the service waits for a query when the request does not say
CONCURRENT_PER_IDENTITY = 5  # queries one identity runs at once; the rest are queued
QUEUE_WAIT = 180.0  # seconds a queued query waits for a slot before 429
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


class LogAnalyticsStandIn:
    def __init__(
        self,
        *,
        token: str = "local-test-token",  # noqa: S107 - the stand-in's own throwaway token
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        import trustme

        self.token = token
        self.clock = clock
        self._tables: dict[str, list[dict[str, Any]]] = {}
        self._scoped: dict[tuple[str, str], list[dict[str, Any]]] = {}  # (workspace, table) -> rows
        self._lock = threading.Lock()
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
        self._ca = trustme.CA()
        cert = self._ca.issue_cert("127.0.0.1", "localhost")
        self._dir = tempfile.TemporaryDirectory(prefix="kqlwatch-la-")
        self.ca_file = str(Path(self._dir.name) / "ca.pem")
        self._ca.cert_pem.write_to_path(self.ca_file)
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        self._server = LoopbackServer(self._handle, ssl_context=context)

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self._server.port}"

    def start(self) -> LogAnalyticsStandIn:
        self._server.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.stop()
        self._dir.cleanup()

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

    def reset(self) -> None:
        """Forget all data, requests and scripted answers."""
        with self._lock:
            self._tables.clear()
            self._scoped.clear()
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
        with self._lock:
            self.requests.append(QueryLog(match.group(1), body.get("query", ""), body.get("timespan"), auth, prefer))
            scripted = self._script.popleft() if self._script else None
        if scripted is not None:
            return scripted
        if auth != f"Bearer {self.token}":
            return _error(401, "AuthorizationRequiredError", "Valid authentication was not provided")
        if not self._take_slot(auth):
            with self._lock:
                self.throttled += 1
            return _error(429, "ThrottledError", "Too many concurrent requests for this user: retry later")
        try:
            return self._answer(body, prefer, match.group(1).lower())
        finally:
            with self._slots:
                self._running[auth] -= 1
                self._slots.notify_all()

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

    def _answer(self, body: dict[str, Any], prefer: str, workspace: str) -> Response:
        """The query's answer, after the time it takes (spent holding its slot, as a running query does)."""
        wait = _wait(prefer)
        takes = self.query_seconds if self.slow_query is None or self.slow_query in body.get("query", "") else 0.0
        if takes > wait:
            self._stopping.wait(wait)
            return _error(504, "GatewayTimeout", "Gateway timeout: the query did not finish in time.")
        self._stopping.wait(takes)
        now = self.clock()
        try:
            start, end = _timespan(body.get("timespan"), now)
            return self._evaluate(body.get("query", ""), start, end, now, workspace)
        except EngineError as exc:
            return _error(
                400, "BadArgumentError", "The request had some invalid properties", inner=("SemanticError", str(exc))
            )
        except ValueError as exc:
            return _error(
                400,
                "BadArgumentError",
                "The request had some invalid properties",
                inner=("BadRequest", f"bad request: {exc}"),
            )

    def _evaluate(
        self, query: str, start: datetime | None, end: datetime | None, now: datetime, workspace: str = ""
    ) -> Response:
        with self._lock:
            # Every table with a shipped schema exists (empty), as it does in a workspace with the connector.
            tables: dict[str, list[dict[str, Any]]] = {name: [] for name in known_tables()}
            tables.update({name: list(rows) for name, rows in self._tables.items()})
            for (scope, name), scoped in self._scoped.items():
                if scope == workspace:
                    tables[name] = tables.get(name, []) + scoped
        named = {t.text for t in tokenize(query) if t.kind == "ident"}
        with Engine() as engine:
            for name, table_rows in tables.items():
                if name not in named:
                    continue  # a table the query does not name cannot change its answer: not loaded (speed)
                visible = [r for r in table_rows if r[INGESTED] <= now and _in_span(r.get("TimeGenerated"), start, end)]
                self.rows_scanned += len(visible)
                schema = dict(table_schema(name) or _infer_schema(table_rows))
                schema[INGESTED] = "datetime"
                engine.load_rows(name, visible, schema)
            result = engine.query(_with_ingestion_column(query), now=now)
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


def _with_ingestion_column(query: str) -> str:
    """ingestion_time() -> the hidden column (the engine has no such function)."""
    tokens = tokenize(query, comments=True)
    out, last = [], 0
    for i, tok in enumerate(tokens):
        if (
            tok.text == "ingestion_time"
            and i + 2 < len(tokens)
            and tokens[i + 1].text == "("
            and tokens[i + 2].text == ")"
        ):
            out.append(query[last : tok.start])
            out.append(INGESTED)
            last = tokens[i + 2].end
    out.append(query[last:])
    return "".join(out)


def _timespan(value: str | None, now: datetime) -> tuple[datetime | None, datetime | None]:
    if not value:
        return None, None
    if "/" in value:
        first, second = value.split("/", 1)
        if first.upper().startswith("P"):
            return _parse_time(second) - parse_duration(first), _parse_time(second)
        if second.upper().startswith("P"):
            return _parse_time(first), _parse_time(first) + parse_duration(second)
        return _parse_time(first), _parse_time(second)
    return now - parse_duration(value), now


def _in_span(value: Any, start: datetime | None, end: datetime | None) -> bool:
    if start is None or not isinstance(value, datetime):
        return start is None
    return start <= value <= (end or value)


def _parse_time(value: Any) -> Any:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, str) and value:
        return parse_time(value)
    return value


def _infer_schema(rows: list[dict[str, Any]]) -> dict[str, str]:
    schema: dict[str, str] = {}
    for row in rows[:100]:
        for key, value in row.items():
            if key not in schema:
                schema[key] = (
                    "datetime"
                    if isinstance(value, datetime)
                    else "bool"
                    if isinstance(value, bool)
                    else "long"
                    if isinstance(value, int)
                    else "real"
                    if isinstance(value, float)
                    else "dynamic"
                    if isinstance(value, (dict, list))
                    else "string"
                )
    return schema


def _wire(value: Any, kind: str) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, timedelta):
        return _timespan_text(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _timespan_text(value: timedelta) -> str:
    """As Kusto prints a timespan: [-][d.]hh:mm:ss[.fffffff] (`00:05:00`, `1.00:00:00`)."""
    sign = "-" if value < timedelta(0) else ""
    ticks = abs(value) // timedelta(microseconds=1) * 10
    seconds, fraction = divmod(ticks, 10_000_000)
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    text = f"{sign}{f'{days}.' if days else ''}{hours:02d}:{minutes:02d}:{seconds:02d}"
    return text + (f".{fraction:07d}" if fraction else "")


def _wait(prefer: str) -> float:
    match = _WAIT.search(prefer)
    return float(match.group(1)) if match else DEFAULT_WAIT


def _header(request: Request, name: str) -> str:
    return next((v for k, v in request.headers.items() if k.lower() == name), "")


def _error(status: int, code: str, message: str, *, inner: tuple[str, str] | None = None) -> Response:
    error: dict[str, Any] = {"message": message, "code": code, "correlationId": str(uuid.uuid4())}
    if inner:
        error["innererror"] = {"code": inner[0], "message": inner[1]}
    return Response.of_json(status, {"error": error})
