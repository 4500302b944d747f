"""Stable identities for result rows: what makes two rows "the same hit" across runs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

# EmailEvents emits a new row when a message's verdict or location changes; the message-recipient
# pair is what a SOC wants to hear about once.
EMAIL_IDENTITY = ("NetworkMessageId", "RecipientEmailAddress")


def identity_columns(
    columns: Sequence[str],
    time_columns: Sequence[str],
    *,
    dedupe_key: Sequence[str] = (),
    entity_columns: Sequence[str] = (),
) -> tuple[str, ...]:
    """Which columns identify a row: the rule's own key, else the email pair, else the entity
    columns, else every column that is not a time column."""
    if dedupe_key:
        return tuple(dedupe_key)
    if all(c in columns for c in EMAIL_IDENTITY):
        return EMAIL_IDENTITY
    present = tuple(c for c in entity_columns if c in columns)
    if present:
        return present
    return tuple(c for c in columns if c not in time_columns)


def identity(row: Mapping[str, Any], columns: Sequence[str]) -> str:
    """A hex digest usable as a Table Storage RowKey (no / \\ # ? or control characters)."""
    canonical = json.dumps([[c, _plain(row.get(c))] for c in columns], ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _plain(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
