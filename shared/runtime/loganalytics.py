"""Run a rule's query against a Log Analytics workspace with the real `LogsQueryClient`.

Retries are the SDK pipeline's own (azure-core RetryPolicy, subclassed here for the query API), bounded by a
per-query time budget; a partial result is returned with its reason, not raised. The Azure SDK is imported
on first use, not at import time (Flex cold start).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.errors import QueryError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.monitor.query import LogsQueryClient

# The API's own default is 3 minutes; a scheduled detection should not hang the timer that long.
SERVER_TIMEOUT_SECONDS = 120
# A query past the server wait answers 504, which azure-core retries on POST: with 3 retries one slow rule
# could take ~8 of the function's 10 minutes. One rule's query, retries included, gets at most this long.
QUERY_BUDGET_SECONDS = 180
# Kusto's E_QUERY_RESULT_SET_TOO_LARGE (0x80DA0003): the row or size limit truncated the result. Only this
# partial error is helped by querying smaller windows.
TRUNCATION_CODES = frozenset({"-2133196797", "E_QUERY_RESULT_SET_TOO_LARGE"})


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    types: dict[str, str]  # column -> Kusto type name (datetime, string, long, dynamic, ...)
    rows: list[dict[str, Any]]
    partial_error: str | None = None  # the service's specific reason, when the result is partial
    statistics: dict[str, Any] = field(default_factory=dict)
    truncated: bool = False  # partial because of the row/size limit: a smaller window returns the rest

    @property
    def time_columns(self) -> list[str]:
        return [c for c in self.columns if self.types.get(c) == "datetime"]


class StaticTokenCredential:
    """A bearer token given by the user (KQLWATCH_ACCESS_TOKEN): local stand-ins or `az account get-access-token`."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self._token, int(datetime.now().timestamp()) + 3600)


def make_credential(access_token: str | None) -> TokenCredential:
    if access_token:
        return StaticTokenCredential(access_token)
    client_id = os.environ.get("AZURE_CLIENT_ID") or None
    if os.environ.get("IDENTITY_ENDPOINT") or os.environ.get("MSI_ENDPOINT"):
        # On Functions: the managed identity itself, so its own error is the one reported, not a chain's.
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=client_id)
    from azure.identity import DefaultAzureCredential

    # AZURE_CLIENT_ID selects the app's user-assigned identity.
    return DefaultAzureCredential(exclude_interactive_browser_credential=True)


def identity_name(credential: object | None = None) -> str:
    if isinstance(credential, StaticTokenCredential):
        return "the token in KQLWATCH_ACCESS_TOKEN"
    client_id = os.environ.get("AZURE_CLIENT_ID")
    if client_id:
        return f"managed identity {client_id}"
    if os.environ.get("IDENTITY_ENDPOINT") or os.environ.get("MSI_ENDPOINT"):
        return "the system-assigned managed identity (no AZURE_CLIENT_ID set)"
    return "DefaultAzureCredential (no AZURE_CLIENT_ID set)"


def _query_retry_policy(**settings: Any) -> Any:
    """azure-core's RetryPolicy with two changes for the query API, whose POST only reads:
    - 429, 502 and 408 are retried without Retry-After too (azure-core retries those on POST only with it);
    - each attempt's read timeout is cut to what is left of the budget (`timeout`), so retries after a
      504 cannot outlast it. azure-core itself bounds only the connect timeout by it."""
    from azure.core.pipeline.policies import RetryPolicy

    class QueryRetryPolicy(RetryPolicy[Any, Any]):
        def is_retry(self, settings: dict[str, Any], response: Any) -> bool:
            if settings["total"] and response.http_response.status_code in (408, 429, 502):
                return True
            return bool(super().is_retry(settings, response))

        def _configure_timeout(self, request: Any, absolute_timeout: float, is_response_error: bool) -> None:
            super()._configure_timeout(request, absolute_timeout, is_response_error)
            config = getattr(request.context.transport, "connection_config", None)
            read = request.context.options.get("read_timeout") or getattr(config, "read_timeout", None)
            if read is None or absolute_timeout < read:
                request.context.options["read_timeout"] = absolute_timeout

    return QueryRetryPolicy(**settings)


class LogsClient:
    """One LogsQueryClient per process, reused across rules and runs."""

    def __init__(
        self,
        endpoint: str,
        credential: TokenCredential,
        *,
        retry_total: int = 3,
        retry_backoff_factor: float = 0.8,
        read_timeout: float | None = None,
        server_timeout: int = SERVER_TIMEOUT_SECONDS,
        query_budget: float = QUERY_BUDGET_SECONDS,
    ) -> None:
        from azure.monitor.query import LogsQueryClient

        from shared.runtime import redact

        redact.install()  # azure-core's transport and pipeline logs print request URLs
        self._endpoint = endpoint
        self._credential = credential
        self.server_timeout = server_timeout
        self.query_budget = query_budget
        policy = _query_retry_policy(
            retry_total=retry_total,
            retry_backoff_factor=retry_backoff_factor,
            retry_backoff_max=30,
            timeout=query_budget,
        )
        self._client: LogsQueryClient = LogsQueryClient(
            credential,
            endpoint=endpoint,
            retry_policy=policy,
            connection_timeout=10,
            read_timeout=read_timeout if read_timeout is not None else server_timeout + 30,
        )

    def close(self) -> None:
        self._client.close()

    def query(
        self,
        workspace_id: str,
        query: str,
        start: datetime,
        end: datetime,
        *,
        additional_workspaces: Sequence[str] = (),
    ) -> QueryResult:
        """`additional_workspaces` (issue 15, kqlwatch.union): the SDK sends them as the body's `workspaces`, and the
        service answers the union of all of them, each row's TenantId its workspace's id."""
        from azure.core.exceptions import (
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
            ServiceResponseTimeoutError,
        )
        from azure.monitor.query import LogsQueryStatus

        started = time.monotonic()
        try:
            response = self._client.query_workspace(
                workspace_id,
                query,
                timespan=(start, end),
                server_timeout=self.server_timeout,
                additional_workspaces=list(additional_workspaces) or None,
                stream=True,  # with `cls`: the answer's JSON as plain dicts (_json_body)
                cls=_json_body,
            )
        except HttpResponseError as exc:
            if exc.response is None:
                # A credential failure: the SDK re-raises it as a bare HttpResponseError (no status, no body).
                raise QueryError(
                    f"could not get a token for {identity_name(self._credential)} to query workspace "
                    f"{workspace_id}: {_first_line(exc.message)}"
                ) from None
            body = _error_body(exc)
            raise QueryError(
                _http_error(exc, workspace_id, self._credential),
                status=exc.status_code,
                code=str(body["code"]) if body.get("code") else None,
                inner_code=_inner_code(body),
            ) from None
        except ServiceRequestError as exc:
            raise QueryError(f"cannot reach {self._endpoint}: {_first_line(str(exc))}") from None
        except ServiceResponseError as exc:
            spent = time.monotonic() - started
            if isinstance(exc, ServiceResponseTimeoutError) or spent >= self.query_budget:
                raise QueryError(
                    f"query time budget used up: no result within {self.query_budget:g} s (server wait "
                    f"{self.server_timeout} s, retries included; the last attempt timed out or answered 504)"
                ) from None
            # A read timeout on a POST is not retried by the SDK (not idempotent); the next run covers the window.
            raise QueryError(f"no answer from {self._endpoint}: {_first_line(str(exc))}") from None
        if response.status == LogsQueryStatus.PARTIAL:
            reason, truncated = _describe_partial(response.partial_error)
            return _result(response.partial_data, partial_error=reason, truncated=truncated)
        return _result(response.tables)


def _json_body(pipeline_response: Any, _deserialized: Any, _headers: Any) -> Any:
    """The answer's JSON as plain dicts and lists, which LogsQueryResult reads as it reads the SDK's models: the
    generated client's model layer walks every value of a result in Python (~2 s of our CPU for 10,000 rows of
    EmailEvents, issue 14's burst). Errors are raised by the SDK before this, as without it."""
    response = pipeline_response.http_response
    response.read()
    return response.json()


def _result(tables: Sequence[Any], partial_error: str | None = None, truncated: bool = False) -> QueryResult:
    if not tables:
        return QueryResult([], {}, [], partial_error, truncated=truncated)
    table = tables[0]
    columns = list(table.columns)
    types = dict(zip(columns, table.columns_types, strict=True))
    rows = [dict(zip(columns, row, strict=True)) for row in table.rows]
    return QueryResult(columns, types, rows, partial_error, truncated=truncated)


def _innermost(error: Any) -> Mapping[str, Any]:
    while isinstance(error, Mapping) and isinstance(error.get("innererror"), Mapping):
        error = error["innererror"]
    return error if isinstance(error, Mapping) else {}


def _inner_code(error: Mapping[str, Any]) -> str | None:
    """The innermost innererror's code (the specific reason), None when the error has no innererror."""
    if not isinstance(error.get("innererror"), Mapping):
        return None
    return str(_innermost(error).get("code") or "") or None


def _describe_partial(error: Any) -> tuple[str, bool]:
    """The specific reason (details[].innererror.message: the top-level and details[].message are generic)
    and whether it is truncation. Read from the SDK's LogsQueryError fields, not from message text."""
    reasons: list[str] = []
    truncated = False
    for detail in getattr(error, "details", None) or []:
        inner = _innermost(detail)
        code = str(inner.get("code") or "")
        truncated = truncated or code in TRUNCATION_CODES
        message = inner.get("message") or (detail.get("message") if isinstance(detail, Mapping) else None)
        if message:
            reasons.append(_first_line(str(message)) + (f" [{code}]" if code else ""))
    code = getattr(error, "code", "") or "PartialError"
    return f"{code}: " + (" - ".join(reasons) or _first_line(getattr(error, "message", "") or "")), truncated


def _http_error(exc: Any, workspace_id: str, credential: object) -> str:
    status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", "?")
    body = _error_body(exc)
    model = getattr(exc, "model", None)
    # The SDK's LogsQueryError holds the innermost message; on a 401/403 it has none: read the body's fields.
    message = getattr(model, "message", None) or body.get("message") or getattr(exc, "message", None) or ""
    code = getattr(model, "code", None) or body.get("code") or getattr(exc, "error_code", None) or ""
    suffix = f" (correlationId {str(body['correlationId'])[:100]})" if body.get("correlationId") else ""
    who = identity_name(credential)
    if status == 401 and isinstance(credential, StaticTokenCredential):
        return (
            f"HTTP 401 {code}: the token in KQLWATCH_ACCESS_TOKEN was rejected (expired, or for another "
            f"audience): {_first_line(message)}{suffix}"
        )
    if status in (401, 403):
        return (
            f"HTTP {status} {code}: {who} may not query workspace {workspace_id} "
            f"(needs Log Analytics Reader on it): {_first_line(message)}{suffix}"
        )
    return f"HTTP {status} {code}: {_first_line(message)}{suffix}".replace("  ", " ")


def _error_body(exc: Any) -> Mapping[str, Any]:
    """The error body's `error` object (code, message, correlationId: what Microsoft support asks for)."""
    try:
        body = exc.response.json()
    except (ValueError, AttributeError):  # no body, or not JSON
        return {}
    error = body.get("error") if isinstance(body, Mapping) else None
    return error if isinstance(error, Mapping) else {}


def _first_line(text: str) -> str:
    from shared.runtime.redact import redact_text

    # The SDK's messages can quote the request URL: keep only its scheme and host.
    return redact_text((text or "").strip().splitlines()[0])[:500] if (text or "").strip() else ""
