"""The lease of a rule's run (issue 14), kept on the rule's `~state` row: `RunOwner`, `RunUntil`, `RunDone`.

A queue message is delivered at least once, and two workers may hold messages for one rule at once. Of two runs
of one rule exactly one may write: every write of the state row is conditional on the etag the run read with
its snapshot (shared.runtime.runguard), so the lease costs no operation of its own on an idle run:

- the snapshot returns the lease fields: a message whose scheduled time is not after `RunDone` is a duplicate of
  a run that happened (nothing runs), and a rule whose `RunUntil` is in the future is held by the run named in
  `RunOwner` ("held by run X until T": that run, or the next after it, covers the window);
- a run with nothing to write saves its state and run record in one transaction conditional on that etag (a
  rule's first run *creates* the row): if another run changed the rule meanwhile, the save fails and this run
  saved nothing, so nothing is lost or doubled;
- a run about to write anything else (hits, lots, notices, the purge) first takes the lease: a conditional
  write of `RunOwner`/`RunUntil` on that etag (`take`); its save is then conditional on the lease's etag.

Releasing writes `RunDone` = the scheduled time of the run that completed. Hits keep their own leases (lots).
Before this, the lease was its own row (`~lease`, fields Owner/Until/Done): a state row without `RunDone` is
read with that old row once (`old_mark`), so a message queued before the deploy is still recognised as done.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from shared.errors import StateError

if TYPE_CHECKING:
    from azure.data.tables import TableClient

log = logging.getLogger("kqlwatch")

STATE_ROW = "~state"  # the rule's state row (re-exported by shared.runtime.rows): the lease lives on it
OLD_LEASE_ROW = "~lease"  # the lease's own row before it moved onto the state row: read once per rule
OWNER_FIELD, UNTIL_FIELD, DONE_FIELD = "RunOwner", "RunUntil", "RunDone"
ACQUIRED, BUSY, DONE = "acquired", "busy", "done"
NEVER = datetime(1970, 1, 1, tzinfo=timezone.utc)  # Table Storage has no null: "no lease" is the epoch


class LeaseLost(Exception):
    """Another run changed the rule after this run read it and before this run wrote anything: this run leaves
    the rule to it. Not a failure (and so not a KqlwatchError): nothing was written, so nothing is lost."""


@dataclass(frozen=True)
class RunMark:
    """The lease fields as read with the state row."""

    owner: str = ""
    until: datetime | None = None
    done: datetime | None = None  # the scheduled time of the last completed run
    present: bool = True  # False: a state row written before the lease moved onto it (see old_mark)


def mark_from(entity: Mapping[str, Any]) -> RunMark:
    return RunMark(
        str(entity.get(OWNER_FIELD) or ""),
        _utc(entity.get(UNTIL_FIELD)),
        _utc(entity.get(DONE_FIELD)),
        present=DONE_FIELD in entity,
    )


@dataclass(frozen=True)
class Claim:
    status: str  # ACQUIRED (free to run) | BUSY | DONE
    rule_id: str
    scheduled: datetime | None  # None: `run --once` (no message, so no duplicate to recognise)
    owner: str = ""  # BUSY: who holds it
    until: datetime | None = None  # BUSY: when that lease ends
    done: datetime | None = None  # the scheduled time of the last completed run

    def describe(self) -> str:
        if self.status == DONE and self.scheduled is not None:
            return f"the run scheduled for {self.scheduled:%Y-%m-%d %H:%M:%S} UTC already ran"
        if self.status == BUSY:
            until = f"{self.until:%Y-%m-%d %H:%M:%S} UTC" if self.until else "now"
            return f"rule held by run {self.owner or '?'} until {until}: that run (or the next after it) covers it"
        return "acquired"


def judge(mark: RunMark, rule_id: str, scheduled: datetime | None, now: datetime) -> Claim:
    """Whether this run may go on, from the lease fields alone (no operation). A lease still running is
    another run's, whoever it names: a run reads the rule once, before it could have taken it itself."""
    if scheduled is not None and mark.done is not None and mark.done >= scheduled:
        return Claim(DONE, rule_id, scheduled, done=mark.done)
    if mark.owner and mark.until is not None and mark.until > now:
        return Claim(BUSY, rule_id, scheduled, owner=mark.owner, until=mark.until, done=mark.done)
    return Claim(ACQUIRED, rule_id, scheduled, done=mark.done)


def held_fields(owner: str, until: datetime, done: datetime | None) -> dict[str, Any]:
    return {OWNER_FIELD: owner, UNTIL_FIELD: until, DONE_FIELD: done or NEVER}


def released_fields(done: datetime | None, scheduled: datetime | None) -> dict[str, Any]:
    """The lease fields a completed run saves: free, and done up to its scheduled time."""
    finished = max(scheduled, done or NEVER) if scheduled is not None else done
    return {OWNER_FIELD: "", UNTIL_FIELD: NEVER, DONE_FIELD: finished or NEVER}


class RunLeases:
    """The lease's own operations on the state table: taking it, ending it without a save, the upgrade read."""

    def __init__(self, table: TableClient) -> None:
        self._table = table

    def close(self) -> None:
        self._table.close()

    def take(self, rule_id: str, etag: str | None, fields: Mapping[str, Any]) -> str | None:
        """Write the lease fields on the state row, conditional on `etag` (None: the rule has no state row yet,
        so create it with a new rule's state: of two first runs one creates it). Returns the row's new etag;
        raises LeaseLost when another run wrote the row first."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        from shared.runtime.rows import RuleState, _state_fields  # rows imports this module

        keys = {"PartitionKey": rule_id, "RowKey": STATE_ROW}
        with _lease_errors(rule_id):
            try:
                if etag is None:
                    blank = {"Kind": "state", **_state_fields(RuleState())}
                    meta = self._table.create_entity({**blank, **keys, **fields})
                else:
                    meta = self._table.update_entity(
                        {**keys, **fields},
                        mode=UpdateMode.MERGE,
                        etag=etag,
                        match_condition=MatchConditions.IfNotModified,
                    )
            except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
                raise LeaseLost(
                    "another run of this rule changed it after this run read it: that run covers the window"
                ) from None
        return meta.get("etag")

    def release(self, rule_id: str, etag: str | None) -> bool:
        """End a lease taken by a run that then saved nothing (it failed, or deferred). False when the lease was
        no longer ours (the run outlived it and another run took the rule over)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        patch = {"PartitionKey": rule_id, "RowKey": STATE_ROW, OWNER_FIELD: "", UNTIL_FIELD: NEVER}
        with _lease_errors(rule_id):
            try:
                self._table.update_entity(
                    patch, mode=UpdateMode.MERGE, etag=etag, match_condition=MatchConditions.IfNotModified
                )
            except (ResourceModifiedError, ResourceNotFoundError):
                log.warning("run lease of rule %s was taken over before this run released it", rule_id)
                return False
        return True

    def old_mark(self, rule_id: str) -> RunMark:
        """The lease as the release before this one kept it (its own `~lease` row): read once per rule, when the
        state row has no lease fields yet; the next save writes them there."""
        from azure.core.exceptions import ResourceNotFoundError

        with _lease_errors(rule_id):
            try:
                entity: Any = self._table.get_entity(rule_id, OLD_LEASE_ROW)
            except ResourceNotFoundError:
                return RunMark()
        return RunMark(str(entity.get("Owner") or ""), _utc(entity.get("Until")), _utc(entity.get("Done")))

    def acquire(self, rule_id: str, scheduled: datetime | None, owner: str, now: datetime, until: datetime) -> Claim:
        """Read the lease and take it if free, in one step (what a run does across its snapshot and its first
        write; for tools and tests that hold a rule from outside a run)."""
        from azure.core.exceptions import ResourceNotFoundError

        with _lease_errors(rule_id):
            try:
                entity: Any = self._table.get_entity(rule_id, STATE_ROW)
            except ResourceNotFoundError:
                entity = None
        mark = mark_from(entity) if entity is not None else RunMark()
        claim = judge(mark, rule_id, scheduled, now)
        if claim.status != ACQUIRED:
            return claim
        etag = entity.metadata["etag"] if entity is not None else None
        try:
            self.take(rule_id, etag, held_fields(owner, until, mark.done))
        except LeaseLost:
            return Claim(BUSY, rule_id, scheduled)
        return claim


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return None if value <= NEVER else value


class _lease_errors:
    def __init__(self, rule_id: str) -> None:
        self.rule_id = rule_id

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> Literal[False]:
        from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        if exc is None or not isinstance(exc, AzureError):
            return False
        if isinstance(exc, ResourceExistsError | ResourceModifiedError | ResourceNotFoundError):
            return False
        from shared.runtime.redact import redact_text

        message = redact_text((getattr(exc, "message", None) or type(exc).__name__).splitlines()[0])
        raise StateError(f"Table Storage: cannot take the run lease of rule {self.rule_id}: {message[:300]}") from None
