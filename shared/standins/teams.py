"""A local Teams Workflows webhook ("When a Teams webhook request is received" + "Post card in a chat or
channel"), as the real one behaves.

By default the trigger answers 202 *before* the flow runs: a missing `attachments`, a body that is not
UTF-8 JSON, a card Teams cannot display (version newer than 1.4) or a message over ~28 KB fails the flow
later, visible only in its run history (`runs()`), never to the poster. `synchronous(name)` models a flow
with a Response action: the flow runs first and a failure answers 400 (or 413 for size). Tests can also
script answers (429 + Retry-After, 5xx, 400/413, a hang).
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

from shared.standins._http import LoopbackServer, Request, Response

MAX_MESSAGE_BYTES = 28_000  # ~28 KB; counted on the \u-escaped JSON, the larger way Teams may count
NEWEST_VERSION = (1, 4)  # Workflows' post-card step shows "this card couldn't be displayed" for 1.5


@dataclass(frozen=True)
class Received:
    path: str
    body: dict[str, Any]
    size: int
    content_type: str = ""


@dataclass(frozen=True)
class _Failure:
    status: int  # what a Response action answers for it
    reason: str


@dataclass(frozen=True)
class FlowRun:
    """One entry of a flow's run history: what only the flow's owner can see."""

    path: str
    succeeded: bool
    error: str = ""


class WebhookReceiver:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._runs: list[FlowRun] = []
        self._script: dict[str, deque[Response]] = defaultdict(deque)
        self._default: dict[str, Response] = {}
        self._synchronous: set[str] = set()
        self.attempts: dict[str, int] = defaultdict(int)
        self.arrivals: dict[str, list[float]] = defaultdict(list)  # issue 14: when each request came (monotonic)
        self._server = LoopbackServer(self._handle)

    def start(self) -> WebhookReceiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, name: str = "hook") -> str:
        # Shaped like a Workflows URL, signature included, so redaction is exercised for real.
        return (
            f"http://127.0.0.1:{self._server.port}/workflows/{name}/triggers/manual/paths/invoke"
            f"?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=SECRET-{name}-d41d8cd98f00b204"
        )

    def respond(self, name: str, *responses: Response) -> None:
        """Answer the next posts to `name` with these responses, in order, then as the flow does again."""
        with self._lock:
            self._script[name].extend(responses)

    def always(self, name: str, response: Response | None) -> None:
        """Answer every post to `name` with `response` (None: back to the flow's own answer)."""
        with self._lock:
            if response is None:
                self._default.pop(name, None)
            else:
                self._default[name] = response

    def synchronous(self, name: str, on: bool = True) -> None:
        """Give `name`'s flow a Response action: it answers after running, 4xx when the run fails."""
        with self._lock:
            (self._synchronous.add if on else self._synchronous.discard)(name)

    def received(self, name: str | None = None) -> list[Received]:
        """Messages the flow posted to the channel (runs that succeeded)."""
        with self._lock:
            return [r for r in self._received if name is None or r.path == name]

    def runs(self, name: str | None = None) -> list[FlowRun]:
        """The flow's run history, failures included."""
        with self._lock:
            return [r for r in self._runs if name is None or r.path == name]

    def cards(self, name: str | None = None) -> list[dict[str, Any]]:
        return [r.body["attachments"][0]["content"] for r in self.received(name)]

    def most_in_one_second(self, name: str) -> int:
        """The most requests to `name` that arrived within any one second, as Teams counts its 4 per second."""
        with self._lock:
            times = sorted(self.arrivals.get(name, []))
        most, first = 0, 0
        for last, at in enumerate(times):
            while at - times[first] >= 1.0:
                first += 1
            most = max(most, last - first + 1)
        return most

    def reset(self) -> None:
        """Forget what was received, the run history and every scripted answer."""
        with self._lock:
            self._received.clear()
            self._runs.clear()
            self.attempts.clear()
            self.arrivals.clear()
            self._script.clear()
            self._default.clear()
            self._synchronous.clear()

    def _handle(self, request: Request) -> Response:
        parts = request.path.split("/")
        name = parts[2] if len(parts) > 2 else ""
        with self._lock:
            self.attempts[name] += 1
            self.arrivals[name].append(time.monotonic())
            scripted = self._script[name].popleft() if self._script[name] else self._default.get(name)
            synchronous = name in self._synchronous
        if scripted is not None and not (200 <= scripted.status < 300):
            return scripted
        body, failure = _run_flow(request)
        with self._lock:
            self._runs.append(FlowRun(name, failure is None, failure.reason if failure else ""))
            if body is not None and failure is None:
                self._received.append(Received(name, body, len(request.body), _header(request, "content-type")))
        if synchronous and failure is not None:
            return Response(failure.status, failure.reason.encode("utf-8"))
        return scripted or Response(200 if synchronous else 202)


def _run_flow(request: Request) -> tuple[dict[str, Any] | None, _Failure | None]:
    """What the flow's steps do with the body: the message (if it parsed) and why the run failed, if it did."""
    content_type = _header(request, "content-type").lower()
    if not content_type.startswith("application/json"):
        return None, _Failure(400, f"InvalidTemplate: content type {content_type!r} is not application/json")
    try:
        body = json.loads(request.body.decode("utf-8"))
    except ValueError:
        return None, _Failure(400, "InvalidTemplate: the body is not UTF-8 JSON")
    if not isinstance(body, dict) or not body.get("attachments"):
        return None, _Failure(400, "InvalidTemplate: 'attachments' is missing")
    size = len(json.dumps(body, ensure_ascii=True, separators=(",", ":")))
    if size > MAX_MESSAGE_BYTES:
        return body, _Failure(413, f"RequestEntityTooLarge: message is {size} bytes")
    content = body["attachments"][0].get("content") if isinstance(body["attachments"][0], dict) else None
    version = content.get("version") if isinstance(content, dict) else None
    if not _displayable(version):
        return body, _Failure(400, f"We're sorry, this card couldn't be displayed (version {version!r})")
    return body, None


def _displayable(version: Any) -> bool:
    try:
        major, minor = (int(part) for part in str(version).split("."))
    except ValueError:
        return False
    return (major, minor) <= NEWEST_VERSION


def _header(request: Request, name: str) -> str:
    return next((v for k, v in request.headers.items() if k.lower() == name), "")
