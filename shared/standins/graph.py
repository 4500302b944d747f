"""A local HTTPS endpoint that speaks Microsoft Graph's `POST /v1.0/security/runHuntingQuery` (issue 15).

It evaluates the posted KQL with the same offline engine as the Log Analytics stand-in, over tables with
Defender XDR's column set: `Timestamp`, and none of the columns only Log Analytics adds (TimeGenerated,
TenantId, Type, ...), so a query written for the workspace fails here as it does in advanced hunting. The
request's `Timespan` (`start/end`, `P1D`, ...; default 30 days) is applied to Timestamp, and nothing older than
30 days exists. There is no ingestion_time(): a row ingested late simply appears late.

Its unkind parts, as the real service: the answer's keys may be capitalised (`Schema`, `Name`), results are cut
silently at the row limit, 429 bodies name the limit (calls per minute, CPU quota) with or without Retry-After,
a bad query is a 400 with the reason, a missing permission a 403, and a slow query may not answer in time.
The 429 and 403 message texts are this stand-in's own wording: Microsoft documents that the body names the
limit, not its exact text.
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

from shared.schemas import known_tables, table_schema
from shared.standins._http import HttpsServer, Request, Response
from shared.standins.lawire import _infer_schema, _parse_time, _timespan
from shared.standins.loganalytics import _header
from shared.workbench.engine import INGESTED, Engine, EngineError

PATH = "/v1.0/security/runHuntingQuery"
RETENTION = timedelta(days=30)
# Columns Log Analytics adds to its copy of a Defender table; advanced hunting has none of them.
WORKSPACE_ONLY_COLUMNS = frozenset(
    {"TimeGenerated", "TenantId", "SourceSystem", "Type", "_BilledSize", "_IsBillable", "_ResourceId"}
)
_GRAPH_TYPES = {
    "datetime": "DateTime",
    "string": "String",
    "long": "Int64",
    "int": "Int32",
    "bool": "Boolean",
    "real": "Double",
    "decimal": "Decimal",
    "dynamic": "Object",
    "guid": "Guid",
    "timespan": "TimeSpan",
}
CALLS_LIMIT_MESSAGE = (
    "Query execution was throttled: the tenant exceeded the allowed number of calls (45 per minute). Try again later."
)
CPU_LIMIT_MESSAGE = (
    "Query execution was throttled: the tenant used up its CPU quota for the current 15-minute cycle. "
    "Try again after the cycle ends."
)


class GraphStandIn:
    def __init__(
        self,
        *,
        token: str = "local-graph-token",  # noqa: S107 - the stand-in's own throwaway token
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        ca: Any = None,  # a trustme.CA to issue the certificate from (share the Log Analytics stand-in's)
    ) -> None:
        self.token = token
        self.clock = clock
        self._tables: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._script: deque[Response] = deque()
        self.requests: list[dict[str, Any]] = []
        self.row_cap: int | None = None  # cut results at this many rows, silently (the real limit is 100,000)
        self.capitalised = False  # answer with `Schema`/`Results`/`Name`/`Type`, as some docs show
        self.query_seconds = 0.0  # every query takes this long before answering (timeouts)
        self._https = HttpsServer(self._handle, prefix="kqlwatch-graph-", ca=ca)
        self._ca, self.ca_file = self._https.ca, self._https.ca_file

    @property
    def endpoint(self) -> str:
        return self._https.endpoint

    def start(self) -> GraphStandIn:
        self._https.start()
        return self

    def stop(self) -> None:
        self._https.stop()

    def __enter__(self) -> GraphStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- data and faults ---

    def ingest(self, table: str, rows: Iterable[Mapping[str, Any]], *, at: datetime | None = None) -> None:
        """Add rows, queryable from `at` (default now). A row without Timestamp takes its TimeGenerated; the
        workspace-only columns are dropped."""
        when = at or self.clock()
        with self._lock:
            stored = self._tables.setdefault(table, [])
            for row in rows:
                item = {k: v for k, v in row.items() if k not in WORKSPACE_ONLY_COLUMNS}
                item["Timestamp"] = _parse_time(row.get("Timestamp") or row.get("TimeGenerated"))
                item[INGESTED] = when
                stored.append(item)

    def reset(self) -> None:
        with self._lock:
            self._tables.clear()
            self._script.clear()
            self.requests.clear()
            self.row_cap = None
            self.capitalised = False
            self.query_seconds = 0.0

    def respond(self, *responses: Response) -> None:
        """Answer the next queries with these responses, in order, then evaluate queries again."""
        with self._lock:
            self._script.extend(responses)

    # --- the API ---

    def _handle(self, request: Request) -> Response:
        if request.method != "POST" or request.path.split("?")[0] != PATH:
            return graph_error(404, "UnknownError", f"no such path {request.path.split('?')[0][:100]}")
        body = request.json()
        with self._lock:
            self.requests.append(body)
            scripted = self._script.popleft() if self._script else None
        if scripted is not None:
            return scripted
        if _header(request, "authorization") != f"Bearer {self.token}":
            return graph_error(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.")
        query = body.get("Query")
        if not isinstance(query, str) or not query.strip():
            return graph_error(400, "BadRequest", "Query is required")
        now = self.clock()
        try:
            start, end = _timespan(body.get("Timespan"), now)
            answer = self._evaluate(query, start or now - RETENTION, end or now, now)
        except EngineError as exc:
            return graph_error(400, "BadRequest", f"Query could not be executed: {exc}")
        except ValueError as exc:
            return graph_error(400, "BadRequest", f"Invalid Timespan: {exc}")
        return replace(answer, delay=self.query_seconds)

    def _evaluate(self, query: str, start: datetime, end: datetime, now: datetime) -> Response:
        start = max(start, now - RETENTION)
        with self._lock:
            tables: dict[str, list[dict[str, Any]]] = {name: [] for name in defender_tables()}
            tables.update({name: list(rows) for name, rows in self._tables.items()})
        with Engine() as engine:
            for name, table_rows in tables.items():
                visible = [
                    {k: v for k, v in r.items() if k != INGESTED}
                    for r in table_rows
                    if r[INGESTED] <= now and isinstance(r["Timestamp"], datetime) and start <= r["Timestamp"] <= end
                ]
                engine.load_rows(name, visible, defender_schema(name) or _infer_schema(table_rows))
            result = engine.query(query, now=now)
        names = ("Schema", "Results", "Name", "Type") if self.capitalised else ("schema", "results", "name", "type")
        schema = [
            {names[2]: c, names[3]: _GRAPH_TYPES.get(t, "String")}
            for c, t in zip(result.columns, result.types, strict=True)
        ]
        rows = [{c: _wire(v) for c, v in zip(result.columns, row, strict=True)} for row in result.rows]
        if self.row_cap is not None:
            rows = rows[: self.row_cap]
        payload = {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.security.huntingQueryResults",
            names[0]: schema,
            names[1]: rows,
        }
        return Response.of_json(200, payload)


def defender_tables() -> list[str]:
    """The shipped tables advanced hunting has (shared/schemas/sources.json)."""
    from shared.schemas import tables_in

    return [t for t in known_tables() if t in tables_in("defender")]


def defender_schema(table: str) -> dict[str, str] | None:
    schema = table_schema(table)
    if schema is None:
        return None
    return {c: t for c, t in schema.items() if c not in WORKSPACE_ONLY_COLUMNS}


def throttled(limit: str, *, retry_after: int | None = None) -> Response:
    """A 429 naming the limit: "calls" (per minute) or "cpu" (the 15-minute CPU quota)."""
    message = CPU_LIMIT_MESSAGE if limit == "cpu" else CALLS_LIMIT_MESSAGE
    response = graph_error(429, "TooManyRequests", message)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def forbidden() -> Response:
    """What an identity without ThreatHunting.Read.All gets."""
    return graph_error(403, "Forbidden", "Insufficient privileges to complete the operation.")


def graph_error(status: int, code: str, message: str) -> Response:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    inner = {"date": now, "request-id": str(uuid.uuid4()), "client-request-id": str(uuid.uuid4())}
    return Response.of_json(status, {"error": {"code": code, "message": message, "innerError": inner}})


def _wire(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, (timedelta, uuid.UUID)):
        return str(value)
    return value
