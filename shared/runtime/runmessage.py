"""The queue message of one rule run (issue 14): references only, never rows or secrets.

    {"v": 1, "rule": "<rule id, GUID>", "workspace": "<workspace GUID>", "scheduled": "2026-12-01T12:05:00Z"}

`v` is the format version: a worker refuses a version it does not know (naming the field) rather than guess.
`workspace` is the workspace the run reads (issue 15: a rule runs once per workspace, units.py), or "" for a
Defender-sourced rule (advanced hunting is tenant-wide). A message is well under the 64 KiB queue limit (~130 bytes; parse refuses over 1 KiB).
Anyone who can write to the queue controls the body: parse() never raises anything but MessageError, which
names the field, and never echoes more than a short, inert excerpt of what it was given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

from shared.errors import KqlwatchError
from shared.rules.loader import is_guid

FORMAT = 1
MAX_CHARS = 1024
FIELDS = ("v", "rule", "workspace", "scheduled")


class MessageError(KqlwatchError):
    """A queue message that is not a rule run: which field, and why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"queue message field {field!r}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class RunMessage:
    rule_id: str
    workspace_id: str
    scheduled: datetime  # UTC: the dispatch tick this run belongs to

    def encode(self) -> str:
        return json.dumps(
            {
                "v": FORMAT,
                "rule": self.rule_id,
                "workspace": self.workspace_id,
                "scheduled": self.scheduled.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            },
            separators=(",", ":"),
        )


def parse(body: str | bytes) -> RunMessage:
    """The run a message names, or MessageError naming the first bad field."""
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise MessageError("(body)", "is not UTF-8") from None
    if len(body) > MAX_CHARS:
        raise MessageError("(body)", f"is {len(body)} characters; a run message is under {MAX_CHARS}")
    try:
        data = json.loads(body)
    except ValueError:
        raise MessageError("(body)", f"is not JSON ({_excerpt(body)})") from None
    if not isinstance(data, dict):
        raise MessageError("(body)", f"is not a JSON object ({_excerpt(body)})")
    unknown = sorted(str(k) for k in data if k not in FIELDS)
    if unknown:
        raise MessageError(unknown[0][:40], "is not a field of a run message")
    version = data.get("v")
    if version != FORMAT or isinstance(version, bool):
        raise MessageError("v", f"must be {FORMAT}, got {_excerpt(json.dumps(version))}")
    rule = _guid(data, "rule")
    workspace = "" if data.get("workspace") == "" else _guid(data, "workspace")  # "": Defender, tenant-wide
    return RunMessage(rule, workspace, _time(data, "scheduled"))


def _guid(data: dict[str, object], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not is_guid(value):
        raise MessageError(name, f"must be a GUID, got {_excerpt(json.dumps(value))}")
    return value.lower()


def _time(data: dict[str, object], name: str) -> datetime:
    value = data.get(name)
    if not isinstance(value, str) or len(value) > 40:
        raise MessageError(name, f"must be an ISO-8601 UTC time, got {_excerpt(json.dumps(value))}")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MessageError(name, f"must be an ISO-8601 UTC time, got {_excerpt(value)}") from None
    if when.tzinfo is None:
        raise MessageError(name, "must carry its time zone (Z)")
    return when.astimezone(timezone.utc)


def _excerpt(text: str) -> str:
    """What a log line may show of hostile input: 40 characters, control characters escaped."""
    return ascii(text[:40]) + ("..." if len(text) > 40 else "")
