"""What one rule's run did (RuleOutcome: the JSON line it logs) and what a whole run did (RunReport)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.errors import RuleError
from shared.runtime.window import Window


@dataclass
class RuleOutcome:
    rule_id: str
    name: str
    ran: bool = False  # False: not due, skipped
    ok: bool = True
    window: Window | None = None
    window_mode: str = ""  # ingestion | timegenerated (issue 13)
    ingested_since: datetime | None = None  # ingestion mode: rows ingested after this
    rows: int = 0
    new_hits: int = 0
    suppressed: int = 0
    delivered: int = 0
    deferred: int = 0
    dropped: int = 0
    held: int = 0  # pending hits under another run's lease (a concurrent run, or one that was killed)
    held_until: datetime | None = None  # when the last of those leases ends
    degraded: bool = False  # a partial result other than truncation: rows used, window to be read again
    query_ms: int = 0  # time spent querying, SDK retries included (bounded by the client's query budget)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    duration_ms: int = 0
    skipped: str = ""  # issue 14: why this run did nothing (its run lease: already ran, or held by another run)
    throttled: bool = False  # issue 14: Log Analytics refused the query (429): deferred, nothing saved

    def log_line(self) -> dict[str, Any]:
        return {
            "event": "kqlwatch.rule_run",
            "rule_id": self.rule_id,
            "rule": self.name,
            "ok": self.ok,
            "window_start": self.window.start.isoformat() if self.window else None,
            "window_end": self.window.end.isoformat() if self.window else None,
            "window_mode": self.window_mode,
            "ingested_since": self.ingested_since.isoformat() if self.ingested_since else None,
            "rows": self.rows,
            "new_hits": self.new_hits,
            "suppressed": self.suppressed,
            "delivered": self.delivered,
            "deferred": self.deferred,
            "dropped": self.dropped,
            "held": self.held,
            "held_until": self.held_until.isoformat() if self.held_until else None,
            "degraded": self.degraded,
            "query_ms": self.query_ms,
            "errors": self.errors,
            "warnings": self.warnings,
            "duration_ms": self.duration_ms,
            "skipped": self.skipped,
            "throttled": self.throttled,
        }


@dataclass
class RunReport:
    outcomes: list[RuleOutcome]
    rule_errors: list[RuleError]
    warnings: list[str] = field(default_factory=list)  # about the rule set, not one rule: printed, not failures

    @property
    def ok(self) -> bool:
        return not self.rule_errors and all(o.ok for o in self.outcomes)
