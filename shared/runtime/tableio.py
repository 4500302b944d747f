"""Calling Table Storage: errors named for what we were doing (never a URL or key), transaction-sized chunks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from shared.errors import StateError

BATCH = 100  # entity-group transaction limit (the SDK fails on 101)

T = TypeVar("T")


@contextmanager
def state_errors(doing: str) -> Iterator[None]:
    """Turn Azure SDK failures into StateError saying what we were doing (no URLs, no keys). The conflicts
    our callers handle themselves pass through."""
    from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError
    from azure.data.tables import TableTransactionError

    try:
        yield
    except (ResourceExistsError, ResourceModifiedError, TableTransactionError):
        raise
    except AzureError as exc:
        from shared.runtime.redact import redact_text

        message = redact_text((getattr(exc, "message", None) or type(exc).__name__).splitlines()[0])
        raise StateError(f"Table Storage: cannot {doing}: {message[:300]}") from None


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def error_code(exc: Any) -> str:
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    return str(headers.get("x-ms-error-code") or getattr(exc, "error_code", None) or f"HTTP {exc.status_code}")
