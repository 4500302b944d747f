"""Hits earlier runs could not deliver, as one run takes them up: the ones too old are dropped (and reported),
the ones another run's lease holds are reported (with when that lease ends), the rest are claimed for this
run's delivery. Moved out of detector.py, which sequences the run."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from shared.rules.loader import Rule
from shared.runtime import notices
from shared.runtime.outcome import RuleOutcome
from shared.runtime.runguard import HeldRun
from shared.runtime.store import DROPPED, Hit, Snapshot, expired, lease_is_free


def claim_older(
    rule: Rule,
    snap: Snapshot,
    created: list[Hit],
    now: datetime,
    lease: tuple[str, datetime],  # the run's id and its lease's end
    max_age: timedelta,  # KQLWATCH_DELIVERY_MAX_AGE
    outcome: RuleOutcome,
    run: HeldRun,
) -> list[Hit]:
    """Hits earlier runs could not deliver: drop the ones too old, claim the rest (unless another run holds
    them)."""
    created_keys = {h.key for h in created}
    older = [h for h in snap.pending if h.key not in created_keys and lease_is_free(h, now)]
    _report_held(snap.pending, created_keys, now, outcome)
    too_old = [h for h in older if expired(h, now, max_age)]
    if too_old:
        _drop(rule, too_old, max_age, outcome, run)
    owner, until = lease
    retry = [replace(h, lease_owner=owner, lease_until=until) for h in older if h not in too_old]
    return run.store.update_hits(rule.id, retry) if retry else []


def _report_held(pending: list[Hit], created_keys: set[str], now: datetime, outcome: RuleOutcome) -> None:
    """Pending hits another run holds (still running, or killed mid-delivery): say so, with when the lease
    ends and they are delivered, so a run after a crash never looks all-clear."""
    held = [h for h in pending if h.key not in created_keys and not lease_is_free(h, now)]
    if not held:
        return
    outcome.held = len(held)
    outcome.held_until = max(h.lease_until or now for h in held)
    outcome.warnings.append(
        f"{len(held)} pending hit(s) held by another run's lease until {outcome.held_until:%Y-%m-%d %H:%M:%S} UTC "
        "(that run is still delivering, or was killed): a run after then delivers them"
    )


def _drop(rule: Rule, hits: list[Hit], max_age: timedelta, outcome: RuleOutcome, run: HeldRun) -> None:
    dropped = run.store.update_hits(rule.id, hits, Status=DROPPED)
    outcome.dropped = len(dropped)
    outcome.ok = False
    age = str(max_age)
    outcome.errors.append(
        f"dropped {len(dropped)} hit(s) undelivered for over {age}: " + ", ".join(h.key[:12] for h in dropped[:10])
    )
    run.notifier.notify(notices.dropped(rule, len(dropped), [h.key for h in dropped], age), outcome)
