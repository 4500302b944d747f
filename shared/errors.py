"""The few error types kqlwatch raises (each message names what the user must fix), and the CLI's exit codes.

Every room imports this leaf; it imports nothing of kqlwatch.
"""

from __future__ import annotations

# The one place the `kqlwatch` exit codes are decided: 0 all good, 1 a rule failed (or a check found problems),
# 2 bad configuration or usage.
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
EXIT_USAGE = EXIT_CONFIG
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader went away


class KqlwatchError(Exception):
    """Base class: an expected failure with a message fit for the user (never a traceback)."""


class ConfigError(KqlwatchError):
    """A setting is missing or malformed (the CLI exits 2)."""

    def __init__(self, setting: str, reason: str, *, parameter: str | None = None) -> None:
        super().__init__(f"{setting} {reason}")
        self.setting = setting
        self.reason = reason
        self.parameter = parameter  # the rule parameter (`let` name) at fault, for a KQLWATCH_PARAM_* setting


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
    """The workspace refused or failed a rule's query. `status` is the HTTP status when there was one: 429 after
    the SDK's retries means Log Analytics' per-identity limit (5 concurrent queries) held the query too long.
    `code` is the service's error code (`BadArgumentError`), `inner_code` the innermost innererror's (the specific
    reason: `SemanticError` from the stand-in, `SEM0100` "failed to resolve" from the service), when it sent them."""

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None, inner_code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.inner_code = inner_code


class QueryThrottled(QueryError):
    """The service's quota refused the query even after the configured retries (issue 15: Defender's calls per
    minute or CPU quota). The run defers: the rule is degraded, its window is read again by a later run."""

    def __init__(self, message: str, *, limit: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.limit = limit  # "calls" (per minute) | "cpu" (per 15-minute cycle) | "unknown"
        self.retry_after = retry_after


class PermissionMissing(QueryError):
    """The identity lacks the permission a source needs (issue 15: ThreatHunting.Read.All on Microsoft Graph)."""

    def __init__(self, message: str, *, permission: str, status: int) -> None:
        super().__init__(message)
        self.permission = permission
        self.status = status


class StateError(KqlwatchError):
    """Table Storage is unreachable or refused an operation."""
