"""Render Adaptive Cards as Teams would, to check and preview them offline.

`render_cards` runs tools/render-cards.js (Microsoft's `adaptivecards` renderer under jsdom, with a Teams-like
host config; installed by `npm ci`) once for a batch of cards and returns, per card, whether it is valid for
Teams (Adaptive Cards 1.4), the renderer's errors and warnings and the rendered HTML, plus a standalone page.
`card_text` is a pure-Python plain-text rendering for the terminal.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.errors import KqlwatchError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "render-cards.js"
NODE_PACKAGES = ("adaptivecards", "jsdom")
DEFAULT_TIMEOUT = 60.0
CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
_RULE_WIDTH = 60
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class CardRender:
    ok: bool
    errors: list[str]
    warnings: list[str]
    html: str


@dataclass(frozen=True)
class RenderResult:
    results: list[CardRender]
    page: str

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results)


def card_content(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    """The card in a Teams message payload (as built by shared.card.message); a bare card is returned as is."""
    if payload.get("type") != "message":
        return payload
    for attachment in payload.get("attachments") or []:
        if isinstance(attachment, Mapping) and attachment.get("contentType") == CARD_CONTENT_TYPE:
            content = attachment.get("content")
            if isinstance(content, Mapping):
                return content
    raise KqlwatchError("the message has no Adaptive Card attachment")


def render_cards(cards: Sequence[Mapping[str, Any]], title: str, *, timeout: float = DEFAULT_TIMEOUT) -> RenderResult:
    """Validate and render these cards (card contents, not messages) in one Node process."""
    node = shutil.which("node")
    if node is None:
        raise KqlwatchError(
            f"Node.js is not installed (no `node` on PATH): install Node 20+, then run `npm ci` in {ROOT}"
        )
    missing = [name for name in NODE_PACKAGES if not (ROOT / "node_modules" / name / "package.json").is_file()]
    if missing:
        raise KqlwatchError(f"{', '.join(missing)} not installed in {ROOT / 'node_modules'}: run `npm ci` in {ROOT}")
    if not SCRIPT.is_file():
        raise KqlwatchError(f"{SCRIPT} is missing")
    try:
        request = json.dumps({"cards": list(cards), "title": title}, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise KqlwatchError(f"cards are not JSON-serializable: {exc}") from None
    try:
        proc = subprocess.run(
            [node, str(SCRIPT)],
            input=request.encode("utf-8"),
            capture_output=True,
            cwd=ROOT,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise KqlwatchError(f"rendering {len(cards)} card(s) took over {timeout:.0f} s") from None
    except OSError as exc:
        raise KqlwatchError(f"cannot run {node}: {exc.strerror}") from None
    if proc.returncode != 0:
        detail = proc.stderr.decode("utf-8", errors="replace").strip()[-2000:]
        raise KqlwatchError(f"{SCRIPT.name} exited with code {proc.returncode}: {detail or '(no output)'}")
    return _parse_output(proc.stdout, len(cards))


def write_preview(cards: Sequence[Mapping[str, Any]], title: str, path: Path) -> Path:
    """Render the cards into a standalone HTML page at `path` (parents created); returns the path."""
    write_page(render_cards(cards, title).page, path)
    return path


def write_page(page: str, path: Path) -> None:
    """Write an HTML page; a folder, an unwritable or impossible path is a KqlwatchError naming it."""
    if path.is_dir():
        raise KqlwatchError(f"--out {path}: is a folder; give the HTML file to write, e.g. {path / 'cards.html'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise KqlwatchError(f"--out {path}: cannot write: {exc.strerror or exc}") from None


def _parse_output(stdout: bytes, expected: int) -> RenderResult:
    try:
        data = json.loads(stdout.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise KqlwatchError(f"{SCRIPT.name} wrote invalid JSON: {exc}") from None
    raw_results = data.get("results") if isinstance(data, dict) else None
    page = data.get("page") if isinstance(data, dict) else None
    if not isinstance(raw_results, list) or len(raw_results) != expected or not isinstance(page, str):
        raise KqlwatchError(f"{SCRIPT.name} wrote an unexpected answer (wanted {expected} result(s) and a page)")
    results = []
    for raw in raw_results:
        if not isinstance(raw, dict):
            raise KqlwatchError(f"{SCRIPT.name} wrote a result that is not an object")
        results.append(
            CardRender(
                ok=raw.get("ok") is True,
                errors=[str(e) for e in raw.get("errors") or []],
                warnings=[str(w) for w in raw.get("warnings") or []],
                html=str(raw.get("html") or ""),
            )
        )
    return RenderResult(results, page)


# --- plain text ------------------------------------------------------------------------------------------


def card_text(card: Mapping[str, Any]) -> str:
    """A plain-text rendering of a card (or of a Teams message holding one) for the terminal."""
    content = card_content(card)
    lines = list(_elements(content.get("body"), 0))
    actions = list(_actions(content.get("actions"), 0))
    if actions:
        lines.extend(actions)
    return "\n".join(lines)


def _elements(items: Any, depth: int) -> Iterator[str]:
    if not isinstance(items, list):
        return
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            continue
        if index > 0 and item.get("separator") is True:
            yield _indent("─" * _RULE_WIDTH, depth)
        yield from _element(item, depth)


def _element(item: Mapping[str, Any], depth: int) -> Iterator[str]:
    kind = item.get("type")
    if kind == "TextBlock":
        yield _indent(_safe(item.get("text")), depth)
    elif kind == "RichTextBlock":
        yield _indent("".join(_inline(run) for run in item.get("inlines") or []), depth)
    elif kind == "Container":
        yield from _elements(item.get("items"), depth + 1)
    elif kind == "ColumnSet":
        for column in item.get("columns") or []:
            if isinstance(column, Mapping):
                yield from _elements(column.get("items"), depth + 1)
    elif kind == "FactSet":
        for fact in item.get("facts") or []:
            if isinstance(fact, Mapping):
                yield _indent(f"{_safe(fact.get('title'))}: {_safe(fact.get('value'))}", depth)
    elif kind == "ActionSet":
        yield from _actions(item.get("actions"), depth)
    elif kind == "Image":
        yield _indent(f"[image{': ' + _safe(item.get('altText')) if item.get('altText') else ''}]", depth)
    else:
        yield _indent(f"[{_safe(kind)}]", depth)


def _inline(run: Any) -> str:
    if isinstance(run, str):
        return _safe(run)
    if not isinstance(run, Mapping):
        return ""
    text = _safe(run.get("text"))
    action = run.get("selectAction")
    if isinstance(action, Mapping) and action.get("url"):
        lead = text[: len(text) - len(text.lstrip())]
        return f"{lead}[{text.strip()}] {_host(action.get('url'))}"
    return text


def _actions(actions: Any, depth: int) -> Iterator[str]:
    if not isinstance(actions, list):
        return
    for action in actions:
        if isinstance(action, Mapping):
            title = _safe(action.get("title")) or _safe(action.get("type"))
            target = f" {_host(action.get('url'))}" if action.get("url") else ""
            yield _indent(f"[{title}]{target}", depth)


def _host(url: Any) -> str:
    try:
        host = urlsplit(str(url)).hostname
    except ValueError:
        host = None
    return _safe(host or "?")


def _safe(value: Any) -> str:
    """Text fit for a terminal: no escape sequences or other control characters."""
    if value is None:
        return ""
    return _UNPRINTABLE.sub("\ufffd", value if isinstance(value, str) else str(value))


def _indent(text: str, depth: int) -> str:
    pad = "  " * depth
    return "\n".join(pad + line for line in text.split("\n"))
