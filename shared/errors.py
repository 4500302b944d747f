"""The few error types kqlwatch raises; each message names what the user must fix."""

from __future__ import annotations


class KqlwatchError(Exception):
    """Base class: an expected failure with a message fit for the user (never a traceback)."""


class ConfigError(KqlwatchError):
    """A setting is missing or malformed (the CLI exits 2)."""

    def __init__(self, setting: str, reason: str) -> None:
        super().__init__(f"{setting} {reason}")
        self.setting = setting


class RuleError(KqlwatchError):
    """A rule file cannot be used; carries the file (and line when known)."""

    def __init__(self, path: str, reason: str, line: int | None = None, *, key: str | None = None) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason
        self.key = key  # the top-level field at fault, when known (the loader turns it into a line)


class QueryError(KqlwatchError):
    """The workspace refused or failed a rule's query."""


class StateError(KqlwatchError):
    """Table Storage is unreachable or refused an operation."""
