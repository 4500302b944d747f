"""A local Teams Workflows webhook: records every message posted and answers 202, or what a test scripts
(429 + Retry-After, 5xx, 400/413, a hang)."""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

from shared.standins._http import LoopbackServer, Request, Response


@dataclass(frozen=True)
class Received:
    path: str
    body: dict[str, Any]
    size: int


class WebhookReceiver:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._script: dict[str, deque[Response]] = defaultdict(deque)
        self._default: dict[str, Response] = {}
        self.attempts: dict[str, int] = defaultdict(int)
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
        """Answer the next posts to `name` with these responses, in order, then 202 again."""
        with self._lock:
            self._script[name].extend(responses)

    def always(self, name: str, response: Response | None) -> None:
        """Answer every post to `name` with `response` (None: back to 202)."""
        with self._lock:
            if response is None:
                self._default.pop(name, None)
            else:
                self._default[name] = response

    def received(self, name: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self._received if name is None or r.path == name]

    def cards(self, name: str | None = None) -> list[dict[str, Any]]:
        return [r.body["attachments"][0]["content"] for r in self.received(name)]

    def reset(self) -> None:
        """Forget what was received and every scripted answer."""
        with self._lock:
            self._received.clear()
            self.attempts.clear()
            self._script.clear()
            self._default.clear()

    def _handle(self, request: Request) -> Response:
        parts = request.path.split("/")
        name = parts[2] if len(parts) > 2 else ""
        with self._lock:
            self.attempts[name] += 1
            scripted = self._script[name].popleft() if self._script[name] else self._default.get(name)
        if scripted is not None and not (200 <= scripted.status < 300):
            return scripted
        try:
            body = json.loads(request.body.decode("utf-8"))
        except ValueError:
            return Response(400, b"not JSON")
        if not isinstance(body, dict) or not body.get("attachments"):
            # What a Workflows flow does with a body lacking attachments: the run fails.
            return Response(400, b"attachments missing")
        with self._lock:
            self._received.append(Received(name, body, len(request.body)))
        return scripted or Response(202)
