"""Post messages to Teams Workflows webhooks over HTTPS with `requests`.

Retries live in urllib3's Retry (429 with Retry-After, 5xx with backoff), configured once on the session;
posts to one webhook are spaced to stay under Teams' ~4 requests/s. Webhook URLs carry a signature:
they appear in nothing we log or raise, only their redacted form.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, ReadTimeoutError
from urllib3.util.retry import Retry

from shared import redact
from shared.card import encode
from shared.settings import redact_url

MIN_INTERVAL = 0.3  # seconds between posts to one webhook (< 4/s)
MAX_RETRY_AFTER = 30.0  # a longer Retry-After defers to the next run instead of blocking this one
TIMEOUT = (5.0, 20.0)  # connect, read
# The body is UTF-8 (subjects are not ASCII): say so, as msteams-docs asks.
HEADERS = {"Content-Type": "application/json; charset=utf-8"}


# urllib3 logs the request path (where a webhook's secret may live) when it retries.
redact.install()


@dataclass(frozen=True)
class PostResult:
    """ok means Teams took the message. A Workflows trigger answers 202 before its flow runs: a flow that then
    fails (private channel, card refused, flow turned off) shows only in the flow's run history. A flow with a
    Response action answers after running, so its 4xx reaches us (and a 400/413 card is split and re-sent)."""

    ok: bool
    status: int | None  # HTTP status, None when no answer
    detail: str = ""  # safe to log: never contains the URL
    rejected: bool = False  # 400/413: the card itself was refused; resending the same card will not help


class _CappedRetry(Retry):
    """urllib3 Retry that gives up (rather than sleeps) when told to wait longer than MAX_RETRY_AFTER."""

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> _CappedRetry:
        if response is not None:
            retry_after = self.get_retry_after(response)
            if retry_after is not None and retry_after > MAX_RETRY_AFTER:
                # urllib3 hands back the 429 response itself when raise_on_status is off.
                raise MaxRetryError(_pool, url or "", None)
        return super().increment(method, url, response, error, _pool, _stacktrace)


class TeamsClient:
    def __init__(
        self,
        *,
        retries: int = 3,
        backoff: float = 1.0,
        min_interval: float = MIN_INTERVAL,
        timeout: tuple[float, float] = TIMEOUT,
        verify: str | bool = True,
    ) -> None:
        retry = _CappedRetry(
            total=retries,
            connect=retries,
            read=0,  # a read timeout may mean Teams got the post: let the next run decide, not a blind resend
            status=retries,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=frozenset({"POST"}),
            backoff_factor=backoff,
            backoff_max=20,
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        self._session = requests.Session()
        self._session.mount("https://", HTTPAdapter(max_retries=retry))
        self._session.mount("http://", HTTPAdapter(max_retries=retry))
        self._session.verify = verify
        self._timeout = timeout
        self._min_interval = min_interval
        self._last_post: dict[str, float] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._session.close()

    def post(self, url: str, payload: Mapping[str, Any]) -> PostResult:
        self._space(url)
        try:
            response = self._session.post(url, data=encode(payload), headers=HEADERS, timeout=self._timeout)
        except requests.RequestException as exc:
            return PostResult(False, None, f"{redact_url(url)}: {_describe(exc)}")
        status = response.status_code
        response.close()
        if 200 <= status < 300:
            return PostResult(True, status)
        reason = f"{redact_url(url)}: HTTP {status}"
        if status == 429:
            reason += f" (throttled, Retry-After {response.headers.get('Retry-After', '?')})"
        return PostResult(False, status, reason, rejected=status in (400, 413))

    def _space(self, url: str) -> None:
        with self._lock:
            now = time.monotonic()
            wait = self._last_post.get(url, 0.0) + self._min_interval - now
            self._last_post[url] = max(now, now + wait)
        if wait > 0:
            time.sleep(wait)


def _describe(exc: requests.RequestException) -> str:
    # requests' messages embed the full URL (with its signature): name only the kind of failure.
    reason = getattr(exc.args[0], "reason", None) if exc.args else None  # requests wraps urllib3's MaxRetryError
    if isinstance(exc, requests.Timeout) or isinstance(reason, TimeoutError | ReadTimeoutError):
        return "timed out"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    if isinstance(exc, requests.exceptions.RetryError):
        return "gave up after retries"
    return type(exc).__name__
