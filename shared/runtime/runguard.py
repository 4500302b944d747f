"""One rule run's hold on its rule (issue 14): the run lease's steps, as a run takes them (shared.runtime.runlease
says what the lease is). Moved out of detector.py, which sequences the run.

1. `RunGuard.read`: the run's snapshot gives the lease and the state row's etag (no operation of its own; a state
   row written before the lease moved onto it reads the old `~lease` row once). `claim` says whether to run.
2. `take`, called before the run's first write or post (the run's store view and poster call it): a conditional
   write of the lease on that etag, once. Of two runs of one rule, the one whose write lands second leaves.
3. `save_op`: the state row's operation in the run's save transaction, conditional on the etag last read or
   written (a first run creates the row); `save_lost` says what a failed one means.
4. `finish`: a run that took the lease and saved nothing (it failed, or deferred) ends it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.errors import KqlwatchError
from shared.runtime.delivery import Poster
from shared.runtime.health import Notifier
from shared.runtime.outcome import RuleOutcome
from shared.runtime.querying import LogsApi
from shared.runtime.rows import Snapshot
from shared.runtime.runlease import (
    ACQUIRED,
    STATE_ROW,
    UNTIL_FIELD,
    Claim,
    LeaseLost,
    RunLeases,
    RunMark,
    held_fields,
    judge,
    released_fields,
)
from shared.runtime.settings import Settings
from shared.runtime.sources import SourceWatch
from shared.runtime.store import StateStore
from shared.runtime.teams import PostResult


@dataclass
class RunGuard:
    rule_id: str
    scheduled: datetime | None  # the message's scheduled time (None: `run --once`)
    owner: str  # the run's id, shown to a run that finds the rule held
    until: datetime  # the lease's end, if taken: the run's start plus the Functions timeout
    leases: RunLeases | None  # None: no lease; the caller guarantees one run per rule (the backtest)
    etag: str | None = None  # the state row's, as last read or written (None: no state row yet)
    lease: RunMark = field(default_factory=RunMark)
    taken: bool = False
    saved: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def read(
        cls,
        store: StateStore,
        leases: RunLeases | None,
        rule_id: str,
        scheduled: datetime | None,
        owner: str,
        until: datetime,
    ) -> tuple[RunGuard, Snapshot]:
        snap = store.read_snapshot(rule_id)
        lease = snap.lease
        if leases is not None and snap.etag is not None and not lease.present:
            lease = leases.old_mark(rule_id)  # written by the release before this one: once per rule
        return cls(rule_id, scheduled, owner, until, leases, snap.etag, lease), snap

    def claim(self, now: datetime) -> Claim:
        if self.leases is None:
            return Claim(ACQUIRED, self.rule_id, self.scheduled)
        return judge(self.lease, self.rule_id, self.scheduled, now)

    def take(self) -> None:
        """Take the lease before the run's first write or post (once). Raises LeaseLost when another run wrote
        the rule since this run read it: this run has written nothing yet, and leaves the rule to that run."""
        if self.leases is None:
            return
        with self._lock:  # a run's writes may come from several threads (a burst's lots): one take
            if self.taken:
                return
            fields = held_fields(self.owner, self.until, self.lease.done)
            self.etag = self.leases.take(self.rule_id, self.etag, fields)
            self.taken = True

    def fence_op(self) -> tuple[Any, ...] | None:
        """The state row touched on the etag this run's lease last wrote, put first in a transaction that must
        land only while this run still holds the rule (a burst's packs: the dedupe record). None: no lease."""
        from azure.core import MatchConditions
        from azure.data.tables import UpdateMode

        if self.leases is None or not self.taken or self.etag is None:
            return None
        row = {"PartitionKey": self.rule_id, "RowKey": STATE_ROW, UNTIL_FIELD: self.until}
        return (
            "update",
            row,
            {"mode": UpdateMode.MERGE, "etag": self.etag, "match_condition": MatchConditions.IfNotModified},
        )

    def fenced(self, etag: str | None) -> None:
        """A fenced transaction landed: the state row's etag moved, and the next write is conditional on it."""
        with self._lock:
            self.etag = etag

    def save_op(self, state_row: Mapping[str, Any]) -> tuple[Any, ...]:
        """The state row in the run's save: the lease released (done up to this run's scheduled time), and the
        write conditional on the etag this run read or its lease wrote; a rule's first run creates the row."""
        from azure.core import MatchConditions
        from azure.data.tables import UpdateMode

        row = {**state_row, **released_fields(self.lease.done, self.scheduled)}
        if self.leases is None:
            return ("upsert", row, {"mode": UpdateMode.REPLACE})
        if self.etag is None:
            return ("create", row)
        return (
            "update",
            row,
            {"mode": UpdateMode.REPLACE, "etag": self.etag, "match_condition": MatchConditions.IfNotModified},
        )

    def save_lost(self, exc: Any) -> Exception | None:
        """What a failed save transaction means: None when it failed for another reason than the state row's
        condition (the caller re-raises it)."""
        if (
            self.leases is None
            or getattr(exc, "index", None) != 0
            or getattr(exc, "status_code", None) not in (409, 412)
        ):
            return None
        if self.taken:
            return KqlwatchError(
                "the run outlived its run lease and another run took the rule over: this run saved nothing"
            )
        return LeaseLost(
            "another run of this rule saved it while this run ran: this run saved nothing, that run covers it"
        )

    def finish(self, outcome: RuleOutcome) -> None:
        """After the run: a lease taken and not released by a save is ended here (the lease also ends by itself)."""
        if self.leases is None or not self.taken or self.saved:
            return
        try:
            self.leases.release(self.rule_id, self.etag)
        except KqlwatchError as exc:  # the lease ends by itself: the next run after it proceeds
            outcome.warnings.append(str(exc))


@dataclass(frozen=True)
class GuardedPoster:
    """A poster that takes the run's lease before its first post: every card and notice of a run (recovered,
    failing, blind, back, dropped, overflow) is posted only by the run that holds the rule."""

    teams: Poster
    take: Callable[[], None]

    def post(self, url: str, payload: Any) -> PostResult:
        self.take()
        return self.teams.post(url, payload)


@dataclass(frozen=True)
class HeldRun:
    """One rule run's store, notices and source watch, bound to its run lease: each writes or posts only once
    the run holds the rule."""

    guard: RunGuard
    store: StateStore
    notifier: Notifier
    sources: SourceWatch

    @classmethod
    def bind(cls, guard: RunGuard, store: StateStore, teams: Poster, logs: LogsApi, settings: Settings) -> HeldRun:
        view = store.guarded(guard.take, guard)
        notifier = Notifier(GuardedPoster(teams, guard.take), settings.ops_webhooks)
        return cls(guard, view, notifier, SourceWatch(view, logs, settings.workspace_id, notifier))
