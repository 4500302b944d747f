"""Make untrusted values (subjects, addresses, display names) inert before they reach a card or a log.

Cards put these values only in RichTextBlock TextRuns, which Teams does not read as Markdown; on top of that
we defang URLs and domains (so nothing is auto-linked), make bidi and control characters visible, break
`{{...}}` templates and truncate. Pure functions.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

ELLIPSIS = "…"
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ufeff]")
_SCHEME = re.compile(r"\b(h)(tt)(ps?)(:)//", re.IGNORECASE)
_OTHER_SCHEME = re.compile(r"\b(ftp|file|mailto|javascript|data|vbscript)(:)", re.IGNORECASE)
_DOMAIN = re.compile(r"(?<![\w.-])((?:[\w-]+\.)+)([a-z][a-z0-9-]{1,62})(?![\w-])", re.IGNORECASE)


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return str(value)


def format_time(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def clean(value: Any, limit: int, *, defang_text: bool = True) -> str:
    """Untrusted value -> short, inert display text."""
    text = as_text(value)
    # Truncate before the (expanding) rewrites so a 100 KB value costs nothing; then again after.
    text = text[: limit * 2]
    text = _BIDI.sub(lambda m: f"[U+{ord(m.group()):04X}]", text)
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\t", " ")
    text = _CONTROL.sub("\ufffd", text)
    text = text.replace("{{", "{\u200b{").replace("}}", "}\u200b}")
    if defang_text:
        text = defang(text)
    return truncate(text, limit)


def defang(text: str) -> str:
    text = _SCHEME.sub(r"\1xx\3[\4]//", text)
    text = _OTHER_SCHEME.sub(r"\1[\2]", text)
    return _DOMAIN.sub(lambda m: m.group(1).replace(".", "[.]") + m.group(2), text)


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + ELLIPSIS
