"""Run a rule's query in Defender XDR advanced hunting: `POST {graph}/v1.0/security/runHuntingQuery` (issue 15).

Behind the same `query(workspace_id, query, start, end) -> QueryResult` the detector uses for Log Analytics, so
a rule's source is only a choice of client. Plain `requests` + an azure-identity token (scope
`https://graph.microsoft.com/.default`; msgraph-sdk is async-only and ~392 MB). Retries are urllib3's Retry on
the session: 429 and 5xx, Retry-After honoured when given (up to MAX_RETRY_AFTER; longer defers to a later run),
a bounded exponential backoff when not. Advanced hunting has no ingestion time, so the window is the API's
`Timespan` (on `Timestamp`); see shared.runtime.window.DEFENDER_OVERLAP for how late rows are caught.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import requests
from urllib3.exceptions import ReadTimeoutError

from shared.errors import PermissionMissing, QueryError, QueryThrottled
from shared.rules.durations import parse_time
from shared.runtime.httpretry import post_session
from shared.runtime.loganalytics import QueryResult, StaticTokenCredential, identity_name

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
PERMISSION = "ThreatHunting.Read.All"
PATH = "/v1.0/security/runHuntingQuery"
ROW_LIMIT = 100_000  # advanced hunting returns at most this many rows, cut silently: as many means "maybe more"
SERVICE_TIMEOUT = 180.0  # advanced hunting stops a query after 3 minutes
_KUSTO_TYPES = {
    "datetime": "datetime",
    "string": "string",
    "int64": "long",
    "long": "long",
    "int32": "int",
    "int": "int",
    "boolean": "bool",
    "bool": "bool",
    "double": "real",
    "real": "real",
    "decimal": "decimal",
    "object": "dynamic",
    "dynamic": "dynamic",
    "guid": "guid",
    "timespan": "timespan",
}


class DefenderClient:
    """One session per process, reused across rules and runs."""

    def __init__(
        self,
        endpoint: str,
        credential: TokenCredential,
        *,
        retry_total: int = 3,
        retry_backoff_factor: float = 2.0,
        read_timeout: float = SERVICE_TIMEOUT + 15,
        row_limit: int = ROW_LIMIT,
        verify: str | bool = True,
    ) -> None:
        from shared.runtime import redact

        redact.install()  # urllib3's retry records print request paths
        self._endpoint = endpoint.rstrip("/")
        self._credential = credential
        self._timeout = (10.0, read_timeout)
        self.row_limit = row_limit
        # No retry after a read timeout: the query ran (and spent CPU quota) for 3 minutes; the next run tries again.
        self._session = post_session(retries=retry_total, backoff=retry_backoff_factor, backoff_max=30, verify=verify)

    def close(self) -> None:
        self._session.close()

    def query(
        self,
        workspace_id: str,
        query: str,
        start: datetime,
        end: datetime,
        *,
        additional_workspaces: Sequence[str] = (),
    ) -> QueryResult:
        """`workspace_id` is not used: advanced hunting is tenant-wide (the identity's tenant), so it has no
        additional workspaces either (a Defender-sourced rule is one unit, never a kqlwatch.union)."""
        if additional_workspaces:
            raise QueryError("Defender advanced hunting is tenant-wide: it has no additional workspaces to union")
        body = {"Query": query, "Timespan": f"{_stamp(start)}/{_stamp(end)}"}
        headers = {"Authorization": f"Bearer {self._token()}", "Content-Type": "application/json; charset=utf-8"}
        try:
            response = self._session.post(
                self._endpoint + PATH, data=json.dumps(body).encode("utf-8"), headers=headers, timeout=self._timeout
            )
        except requests.RequestException as exc:
            raise self._unanswered(exc) from None
        with response:
            if response.status_code == 200:
                return self._result(response)
            raise self._error(response)

    def _unanswered(self, exc: requests.RequestException) -> QueryError:
        # requests wraps a read timeout that Retry will not retry (read=0) in MaxRetryError -> ConnectionError.
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        if isinstance(exc, requests.Timeout) or isinstance(reason, ReadTimeoutError | TimeoutError):
            return QueryError(
                f"no answer from Defender advanced hunting within {self._timeout[1]:g} s (its queries stop after "
                "3 minutes): the window is read again by the next run"
            )
        # requests' messages embed the URL; the endpoint's origin is enough (and holds no secret).
        return QueryError(f"cannot reach {self._endpoint}: {type(exc).__name__}")

    def _token(self) -> str:
        try:
            return str(self._credential.get_token(GRAPH_SCOPE).token)
        except Exception as exc:  # azure-identity raises several types; the message says which and why
            from shared.runtime.loganalytics import _first_line

            raise QueryError(
                f"could not get a Microsoft Graph token for {identity_name(self._credential)}: {_first_line(str(exc))}"
            ) from None

    def _result(self, response: requests.Response) -> QueryResult:
        try:
            payload = response.json()
        except ValueError:
            raise QueryError("Defender advanced hunting answered 200 with a body that is not JSON") from None
        result = parse_answer(payload)
        if len(result.rows) >= self.row_limit:
            # The service cuts at its limit without saying so: as many rows as the limit may mean more.
            return QueryResult(
                result.columns,
                result.types,
                result.rows,
                f"Defender advanced hunting returned {len(result.rows):,} rows, its limit: the result may be cut",
                truncated=True,
            )
        return result

    def _error(self, response: requests.Response) -> QueryError:
        status = response.status_code
        code, message, request_id = _error_fields(response)
        suffix = f" (request-id {request_id})" if request_id else ""
        if status == 400:
            return QueryError(f"Defender advanced hunting refused the query (HTTP 400 {code}): {message}{suffix}")
        if status in (401, 403):
            who = identity_name(self._credential)
            token = (
                " (the token in KQLWATCH_ACCESS_TOKEN was rejected: expired, or not for https://graph.microsoft.com)"
                if status == 401 and isinstance(self._credential, StaticTokenCredential)
                else ""
            )
            # The permission first: `kqlwatch status` shows the start of a rule's last error.
            return PermissionMissing(
                f"{PERMISSION} missing? HTTP {status} {code}: {who} may not run Defender advanced hunting "
                f"queries{token}: grant it the Microsoft Graph application permission {PERMISSION} "
                f"(docs/deploy.md, 'Defender XDR'): {message}{suffix}",
                permission=PERMISSION,
                status=status,
            )
        if status == 429:
            limit = _limit(message)
            retry_after = _seconds(response.headers.get("Retry-After"))
            words = {"cpu": "CPU quota", "calls": "calls-per-minute limit"}.get(limit, "a quota")
            return QueryThrottled(
                f"HTTP 429 {code}: Defender advanced hunting's {words} refused the query after retries "
                f"(Retry-After {response.headers.get('Retry-After', 'not given')}): deferred to a later run: "
                f"{message}{suffix}",
                limit=limit,
                retry_after=retry_after,
            )
        return QueryError(f"HTTP {status} {code}: Defender advanced hunting failed: {message}{suffix}")


def parse_answer(payload: Any) -> QueryResult:
    """huntingQueryResults, keys read case-insensitively (the docs show `name`/`Name`, `schema`/`Schema`)."""
    if not isinstance(payload, Mapping):
        raise QueryError("Defender advanced hunting answered with JSON that is not an object")
    schema = _get(payload, "schema") or []
    results = _get(payload, "results") or []
    if not isinstance(schema, list) or not isinstance(results, list):
        raise QueryError("Defender advanced hunting's answer has no schema/results lists")
    types: dict[str, str] = {}
    for column in schema:
        name = _get(column, "name") if isinstance(column, Mapping) else None
        if isinstance(name, str) and name:
            kind = str(_get(column, "type") or "string").lower()
            types[name] = _KUSTO_TYPES.get(kind, kind)
    columns = list(types)
    rows = [{c: _value(_get(row, c), types[c]) for c in columns} for row in results if isinstance(row, Mapping)]
    return QueryResult(columns, types, rows)


def _get(mapping: Any, key: str) -> Any:
    if not isinstance(mapping, Mapping):
        return None
    if key in mapping:
        return mapping[key]
    lowered = key.lower()
    return next((v for k, v in mapping.items() if isinstance(k, str) and k.lower() == lowered), None)


def _value(value: Any, kind: str) -> Any:
    """As the Log Analytics path gives it: datetimes parsed, dynamic values as JSON text."""
    if kind == "datetime" and isinstance(value, str) and value:
        try:
            return parse_time(value)
        except ValueError:
            return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value


def _error_fields(response: requests.Response) -> tuple[str, str, str]:
    """Graph's error object: code, message, innerError.request-id (what Microsoft support asks for)."""
    from shared.runtime.loganalytics import _first_line

    try:
        body = response.json()
    except ValueError:
        body = {}
    error = _get(body, "error") if isinstance(body, Mapping) else None
    error = error if isinstance(error, Mapping) else {}
    inner = _get(error, "innerError")
    request_id = _get(inner, "request-id") if isinstance(inner, Mapping) else None
    return (
        str(_get(error, "code") or "")[:100],
        _first_line(str(_get(error, "message") or response.reason or "")),
        str(request_id or "")[:100],
    )


def _limit(message: str) -> str:
    """Which quota a 429 names: the service says it only in its message text."""
    text = message.lower()
    if "cpu" in text or "resource" in text:
        return "cpu"
    if "call" in text or "request" in text or "minute" in text:
        return "calls"
    return "unknown"


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
