"""Run a rule's query against a Log Analytics workspace with the real `LogsQueryClient`.

Retries are the SDK pipeline's own (azure-core RetryPolicy), configured here; a partial result is returned
with its error, not raised. The Azure SDK is imported on first use, not at import time (Flex cold start).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.errors import QueryError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.monitor.query import LogsQueryClient

# The API's own default is 3 minutes; a scheduled detection should not hang the timer that long.
SERVER_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    types: dict[str, str]  # column -> Kusto type name (datetime, string, long, dynamic, ...)
    rows: list[dict[str, Any]]
    partial_error: str | None = None
    statistics: dict[str, Any] = field(default_factory=dict)

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
    from azure.identity import DefaultAzureCredential

    # AZURE_CLIENT_ID selects the app's user-assigned identity.
    return DefaultAzureCredential(exclude_interactive_browser_credential=True)


def identity_name() -> str:
    client_id = os.environ.get("AZURE_CLIENT_ID")
    return f"managed identity {client_id}" if client_id else "DefaultAzureCredential (no AZURE_CLIENT_ID set)"


class LogsClient:
    """One LogsQueryClient per process, reused across rules and runs."""

    def __init__(
        self,
        endpoint: str,
        credential: TokenCredential,
        *,
        retry_total: int = 3,
        retry_backoff_factor: float = 0.8,
        read_timeout: int = SERVER_TIMEOUT_SECONDS + 30,
    ) -> None:
        from azure.monitor.query import LogsQueryClient

        from shared import redact

        redact.install()  # azure-core's transport and pipeline logs print request URLs
        self._endpoint = endpoint
        self._client: LogsQueryClient = LogsQueryClient(
            credential,
            endpoint=endpoint,
            retry_total=retry_total,
            retry_backoff_factor=retry_backoff_factor,
            retry_backoff_max=30,
            connection_timeout=10,
            read_timeout=read_timeout,
        )

    def close(self) -> None:
        self._client.close()

    def query(self, workspace_id: str, query: str, start: datetime, end: datetime) -> QueryResult:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )
        from azure.monitor.query import LogsQueryStatus

        try:
            response = self._client.query_workspace(
                workspace_id, query, timespan=(start, end), server_timeout=SERVER_TIMEOUT_SECONDS
            )
        except ClientAuthenticationError as exc:
            if getattr(exc, "response", None) is not None:  # the service's own 401, not a token failure
                raise QueryError(_http_error(exc, workspace_id)) from None
            raise QueryError(
                f"could not get a token for {identity_name()} to query workspace {workspace_id}: "
                f"{_first_line(exc.message)}"
            ) from None
        except HttpResponseError as exc:
            raise QueryError(_http_error(exc, workspace_id)) from None
        except ServiceRequestError as exc:
            raise QueryError(f"cannot reach {self._endpoint}: {_first_line(str(exc))}") from None
        except ServiceResponseError as exc:
            # A read timeout on a POST is not retried by the SDK (not idempotent); the next run covers the window.
            raise QueryError(f"no answer from {self._endpoint}: {_first_line(str(exc))}") from None
        if response.status == LogsQueryStatus.PARTIAL:
            tables = response.partial_data
            return _result(tables, partial_error=_describe_partial(response.partial_error))
        return _result(response.tables)


def _result(tables: Sequence[Any], partial_error: str | None = None) -> QueryResult:
    if not tables:
        return QueryResult([], {}, [], partial_error)
    table = tables[0]
    columns = list(table.columns)
    types = dict(zip(columns, table.columns_types, strict=True))
    rows = [dict(zip(columns, row, strict=True)) for row in table.rows]
    return QueryResult(columns, types, rows, partial_error)


def _describe_partial(error: Any) -> str:
    """The service's top-level message is generic ("There were some errors..."): the details say which cap."""
    parts = [f"{getattr(error, 'code', '') or 'PartialError'}: {_first_line(getattr(error, 'message', ''))}"]
    for detail in getattr(error, "details", None) or []:
        message = detail.get("message") if isinstance(detail, dict) else getattr(detail, "message", None)
        if message:
            parts.append(_first_line(str(message)))
    return " - ".join(parts)


def _http_error(exc: Any, workspace_id: str) -> str:
    status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", "?")
    model = getattr(exc, "model", None)
    message = getattr(model, "message", None) or getattr(exc, "message", None) or ""
    code = getattr(model, "code", None) or getattr(exc, "error_code", None) or ""
    if status in (401, 403):
        return (
            f"HTTP {status} {code}: {identity_name()} may not query workspace {workspace_id} "
            f"(needs Log Analytics Reader on it): {_first_line(message)}"
        )
    return f"HTTP {status} {code}: {_first_line(message)}".replace("  ", " ")


def _first_line(text: str) -> str:
    from shared.redact import redact_text

    # The SDK's messages can quote the request URL: keep only its scheme and host.
    return redact_text((text or "").strip().splitlines()[0])[:500] if (text or "").strip() else ""
