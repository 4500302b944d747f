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
_SURROGATE = re.compile("[\ud800-\udfff]")
_SCHEME = re.compile(r"(h)(tt)(ps?)(:)//", re.IGNORECASE)
_OTHER_SCHEME = re.compile(r"(ftp|file|mailto|javascript|data|vbscript)(:)", re.IGNORECASE)
# A dot between a name character and a letter: every domain label boundary (evil.example, www.x.co.uk),
# but not decimals or IP addresses, which no client turns into links.
_DOMAIN_DOT = re.compile(r"(?<=[\w-])\.(?=[^\W\d_])")


def scrub_surrogates(text: str) -> str:
    """Lone surrogates (U+D800-U+DFFF, e.g. from a JSON `\\ud800` escape) as U+FFFD, a split pair joined:
    no UTF-8 encoder accepts them, so a card or a stored row holding one could not be sent at all."""
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def utf16_units(text: str) -> int:
    """Length as Table Storage counts it (UTF-16 code units: an emoji is 2)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return scrub_surrogates(value)
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, (dict, list)):
        return scrub_surrogates(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))
    return scrub_surrogates(str(value))


def format_time(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def clean(value: Any, limit: int, *, defang_text: bool = True) -> str:
    """Untrusted value -> short, inert display text."""
    text = as_text(value)
    # Truncate before the (expanding) rewrites so a 100 KB value costs nothing; then again after.
    text = text[: limit * 2]
    text = show_bidi(text)
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\t", " ")
    text = replace_controls(text)
    text = text.replace("{{", "{\u200b{").replace("}}", "}\u200b}")
    if defang_text:
        text = defang(text)
    return truncate(text, limit)


def show_bidi(text: str) -> str:
    """Bidi controls (which can reorder or hide what is shown) as visible [U+XXXX]."""
    return _BIDI.sub(lambda m: f"[U+{ord(m.group()):04X}]", text)


def replace_controls(text: str) -> str:
    """Control characters other than tab and line feed as U+FFFD."""
    return _CONTROL.sub("\ufffd", text)


def defang(text: str) -> str:
    text = _SCHEME.sub(r"\1xx\3[\4]//", text)
    text = _OTHER_SCHEME.sub(r"\1[\2]", text)
    return _DOMAIN_DOT.sub("[.]", text)


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + ELLIPSIS
