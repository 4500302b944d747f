"""The lease of a rule's run (issue 14): one entity per rule in its partition, RowKey `~lease`.

A queue message is delivered at least once, and two workers may hold messages for one rule at once. Before a
run touches the rule, it takes the lease: a conditional write (create, or update on the etag it read), so of two
workers exactly one wins and the other ends at once ("held by run X until T"), its message done: the holder, or
after a crash the next dispatched run once the lease has ended, covers the window (windows reach back to the
last successful one). Releasing records `Done` = the scheduled time of the run that completed: a duplicate of a
message whose run already happened finds Done >= its scheduled time and does nothing, so no window advances
twice and nothing is posted twice. Hits keep their own leases (store.py): the run lease only decides who runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from shared.errors import StateError

if TYPE_CHECKING:
    from azure.data.tables import TableClient

log = logging.getLogger("kqlwatch")

LEASE_ROW = "~lease"
ACQUIRED, BUSY, DONE = "acquired", "busy", "done"
_NEVER = datetime(1970, 1, 1, tzinfo=timezone.utc)  # Table Storage has no null: "no lease" is the epoch


@dataclass(frozen=True)
class Claim:
    status: str  # ACQUIRED | BUSY | DONE
    rule_id: str
    scheduled: datetime | None  # None: `run --once` (no message, so no duplicate to recognise)
    owner: str = ""  # BUSY: who holds it
    until: datetime | None = None  # BUSY: when that lease ends
    done: datetime | None = None  # the scheduled time of the last completed run
    etag: str | None = None  # ACQUIRED: the lease entity's etag, for the release

    def describe(self) -> str:
        if self.status == DONE and self.scheduled is not None:
            return f"the run scheduled for {self.scheduled:%Y-%m-%d %H:%M:%S} UTC already ran"
        if self.status == BUSY:
            until = f"{self.until:%Y-%m-%d %H:%M:%S} UTC" if self.until else "now"
            return f"rule held by run {self.owner or '?'} until {until}: that run (or the next after it) covers it"
        return "acquired"


class RunLeases:
    def __init__(self, table: TableClient) -> None:
        self._table = table

    def close(self) -> None:
        self._table.close()

    def acquire(self, rule_id: str, scheduled: datetime | None, owner: str, now: datetime, until: datetime) -> Claim:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        fields = {"Owner": owner, "Until": until, "Scheduled": scheduled or now}
        with _lease_errors(rule_id):
            try:
                entity: Any = self._table.get_entity(rule_id, LEASE_ROW)
            except ResourceNotFoundError:
                try:
                    meta = self._table.create_entity(
                        {"PartitionKey": rule_id, "RowKey": LEASE_ROW, "Kind": "runlease", "Done": _NEVER, **fields}
                    )
                except ResourceExistsError:  # another worker created it between our read and our write
                    return Claim(BUSY, rule_id, scheduled)
                return Claim(ACQUIRED, rule_id, scheduled, etag=meta.get("etag"))
            done = _utc(entity.get("Done"))
            holder, held_until = str(entity.get("Owner") or ""), _utc(entity.get("Until"))
            if scheduled is not None and done is not None and done >= scheduled:
                return Claim(DONE, rule_id, scheduled, done=done)
            if holder and holder != owner and held_until is not None and held_until > now:
                return Claim(BUSY, rule_id, scheduled, owner=holder, until=held_until, done=done)
            try:
                meta = self._table.update_entity(
                    {"PartitionKey": rule_id, "RowKey": LEASE_ROW, **fields},
                    mode=UpdateMode.MERGE,
                    etag=entity.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            except ResourceModifiedError:  # another worker took it between our read and our write
                return Claim(BUSY, rule_id, scheduled)
        return Claim(ACQUIRED, rule_id, scheduled, done=done, etag=meta.get("etag"))

    def release(self, claim: Claim, *, completed: bool) -> bool:
        """End the lease on its own (a run that saved nothing). False when the lease was no longer ours (the run
        outlived it and another took over)."""
        from azure.core.exceptions import ResourceModifiedError

        _, patch, options = release_op(claim, completed=completed)
        with _lease_errors(claim.rule_id):
            try:
                self._table.update_entity(patch, **options)
            except ResourceModifiedError:
                log.warning("run lease of rule %s was taken over before this run released it", claim.rule_id)
                return False
        return True


def release_op(claim: Claim, *, completed: bool) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The release as an operation of the run's save transaction (store.save_run): conditional on the lease's
    etag, so a run that lost its lease (it outlived it and another run took over) saves nothing at all."""
    from azure.core import MatchConditions
    from azure.data.tables import UpdateMode

    patch: dict[str, Any] = {"PartitionKey": claim.rule_id, "RowKey": LEASE_ROW, "Owner": "", "Until": _NEVER}
    if completed and claim.scheduled is not None:
        patch["Done"] = max(claim.scheduled, claim.done or _NEVER)
    return (
        "update",
        patch,
        {"mode": UpdateMode.MERGE, "etag": claim.etag, "match_condition": MatchConditions.IfNotModified},
    )


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return None if value <= _NEVER else value


class _lease_errors:
    def __init__(self, rule_id: str) -> None:
        self.rule_id = rule_id

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> Literal[False]:
        from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError

        if (
            exc is None
            or not isinstance(exc, AzureError)
            or isinstance(exc, ResourceExistsError | ResourceModifiedError)
        ):
            return False
        from shared.runtime.redact import redact_text

        message = redact_text((getattr(exc, "message", None) or type(exc).__name__).splitlines()[0])
        raise StateError(f"Table Storage: cannot take the run lease of rule {self.rule_id}: {message[:300]}") from None
