"""The urllib3 retry policy both requests-based clients (Teams webhooks, Defender's Graph API) mount: 429 and
5xx retried with backoff, Retry-After honoured up to MAX_RETRY_AFTER; a longer wait hands the 429 back so the
run defers it instead of blocking every other rule."""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

MAX_RETRY_AFTER = 30.0  # a longer Retry-After defers to the next run instead of blocking this one


class CappedRetry(Retry):
    """urllib3 Retry that gives up (rather than sleeps) when told to wait longer than MAX_RETRY_AFTER."""

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> CappedRetry:
        if response is not None:
            retry_after = self.get_retry_after(response)
            if retry_after is not None and retry_after > MAX_RETRY_AFTER:
                # urllib3 hands back the 429 response itself when raise_on_status is off.
                raise MaxRetryError(_pool, url or "", None)
        return super().increment(method, url, response, error, _pool, _stacktrace)


def post_session(*, retries: int, backoff: float, backoff_max: float, verify: str | bool) -> requests.Session:
    """A session whose POSTs are retried on connect errors, 429 and 5xx (CappedRetry), never after a read
    timeout: the service may have acted on the request (a card posted, a query's quota spent)."""
    retry = CappedRetry(
        total=retries,
        connect=retries,
        read=0,
        status=retries,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"POST"}),
        backoff_factor=backoff,
        backoff_max=backoff_max,
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    session = requests.Session()
    session.mount("https://", HTTPAdapter(max_retries=retry))
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.verify = verify
    return session
