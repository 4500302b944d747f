"""Post messages to Teams Workflows webhooks over HTTPS with `requests`.

Retries live in urllib3's Retry (429 with Retry-After, 5xx with backoff), configured once on the session;
posts to one webhook are spaced to stay under Teams' ~4 requests/s. Webhook URLs carry a signature:
they appear in nothing we log or raise, only their redacted form.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from urllib3.exceptions import ReadTimeoutError

from shared.runtime import redact
from shared.runtime.cards import encode
from shared.runtime.httpretry import post_session
from shared.runtime.settings import redact_url

MIN_INTERVAL = 0.3  # seconds between posts to one webhook (< 4/s)
MAX_PER_SECOND = 4  # Teams Workflows webhooks: 4 requests per second each
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
        # No retry after a read timeout: Teams may have got the post; the next run decides, not a blind resend.
        self._session = post_session(retries=retries, backoff=backoff, backoff_max=20, verify=verify)
        self._timeout = timeout
        self._limiter = WebhookRateLimiter(min_interval)

    def close(self) -> None:
        self._session.close()

    def _space(self, url: str) -> _Post:
        """Wait for this webhook's next slot (the benchmarks time this wait apart)."""
        return self._limiter.acquire(url)

    def post(self, url: str, payload: Mapping[str, Any]) -> PostResult:
        slot = self._space(url)
        try:
            response = self._session.post(url, data=encode(payload), headers=HEADERS, timeout=self._timeout)
        except requests.RequestException as exc:
            return PostResult(False, None, f"{redact_url(url)}: {_describe(exc)}")
        finally:
            self._limiter.finish(slot)
        status = response.status_code
        response.close()
        if 200 <= status < 300:
            return PostResult(True, status)
        reason = f"{redact_url(url)}: HTTP {status}"
        if status == 429:
            reason += f" (throttled, Retry-After {response.headers.get('Retry-After', '?')})"
        return PostResult(False, status, reason, rejected=status in (400, 413))


class _Post:
    """One post's place in its webhook's window: when it finished (inf while it is in flight)."""

    __slots__ = ("finished",)

    def __init__(self) -> None:
        self.finished = float("inf")


class WebhookRateLimiter:
    """The one per-webhook limit of a process, shared by every rule running in it (issue 14): posts to one URL
    start at least `min_interval` apart, and a post starts only once the post `per_second` posts before it
    *finished* more than a second ago. A post reaches Teams between its start and its finish, so any second, as
    Teams counts it, holds at most `per_second` posts of ours, however slow or concurrent they are."""

    def __init__(self, min_interval: float = MIN_INTERVAL, per_second: int = MAX_PER_SECOND) -> None:
        self.min_interval = min_interval
        self.per_second = per_second
        self._cond = threading.Condition()
        self._last_start: dict[str, float] = {}
        self._recent: dict[str, deque[_Post]] = {}  # the last `per_second` posts per URL, oldest first

    def finish(self, post: _Post) -> None:
        with self._cond:
            post.finished = time.monotonic()
            self._cond.notify_all()

    def acquire(self, url: str) -> _Post:
        """Wait until a post to `url` may start; call finish() with the result once it has been answered."""
        with self._cond:
            recent = self._recent.setdefault(url, deque())
            while True:
                now = time.monotonic()
                start = self._last_start.get(url, -1e9) + self.min_interval
                if len(recent) >= self.per_second and self.min_interval > 0:  # 0: unlimited (storage benchmarks)
                    start = max(start, recent[0].finished + 1.0)  # inf while that post is in flight
                if start <= now:
                    break
                self._cond.wait(None if start == float("inf") else start - now)
            self._last_start[url] = now
            if len(recent) >= self.per_second:
                recent.popleft()
            post = _Post()
            recent.append(post)
            return post


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
