"""Issue 14: the queue fan-out. What the three queue-side functions of function_app.py do, and so what
`kqlwatch dispatch` and `kqlwatch worker --drain` run off Azure:

    dispatch   (timer, KQLWATCH_SCHEDULE)      one message per due rule run onto kqlwatch-runs
    run_rule   (queue trigger, kqlwatch-runs)   one rule's run, under its run lease (runlease.py)
    poisoned   (queue trigger, ...-poison)      an ops notice naming the rule whose message failed 5 times

A message carries references only (runmessage.py). A message that is not a run message is logged, naming the
bad field, and completed: retrying it cannot help, and it never tracebacks the worker. A rule run that fails is
the rule's failure (its outcome, its "rule failing" notice), not the message's: only a run that could not start
(Table Storage or settings unusable) fails the invocation, so the host retries it and, after maxDequeueCount,
moves it to the poison queue.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from shared.errors import KqlwatchError
from shared.rules.loader import load_rules
from shared.rules.prepare import PreparedRule
from shared.runtime import notices
from shared.runtime.outcome import RuleOutcome
from shared.runtime.planning import load_prepared
from shared.runtime.runmessage import MessageError, RunMessage, parse
from shared.runtime.settings import Settings, load_settings
from shared.runtime.store import RuleState
from shared.runtime.units import run_units
from shared.runtime.window import is_due
from shared.runtime.wiring import Clients, build_detector, warm_clients

log = logging.getLogger("kqlwatch")

QUEUE = "kqlwatch-runs"
POISON_QUEUE = f"{QUEUE}-poison"
MAX_DEQUEUE = 5  # host.json extensions.queues.maxDequeueCount


class RunNotStarted(KqlwatchError):
    """A rule's run could not start (its lease or its state unreadable): the host should retry the message."""


def dispatch(
    *,
    past_due: bool = False,
    settings: Settings | None = None,
    clients: Clients | None = None,
    now: datetime | None = None,
) -> list[str]:
    """The messages of this tick: one per rule due by its queryFrequency, all with this tick's time."""
    settings = settings or load_settings()
    clients = clients or warm_clients(settings)
    now = now or datetime.now(timezone.utc)
    if past_due:
        log.warning("timer is past due; the runs dispatched now cover the missed interval")
    prepared, errors = load_prepared(settings, now.date())
    for error in errors:
        log.error("rule skipped: %s", error)
    clients.store.ensure_table()
    states = clients.store.rule_states()
    units = run_units(prepared, settings)  # issue 15: one run per rule and workspace, each with its own state
    due = [
        u for u in units if is_due(now, states.get(u.prepared.rule.id, RuleState()).last_run, u.rule.query_frequency)
    ]
    messages = [RunMessage(u.rule_id, u.workspace, now).encode() for u in due]
    log.info(
        json.dumps({"event": "kqlwatch.dispatch", "rules": len(prepared), "due": len(due), "skipped": len(errors)})
    )
    return messages


def run_message(
    body: str | bytes, *, dequeue_count: int = 1, settings: Settings | None = None, clients: Clients | None = None
) -> RuleOutcome | None:
    """Run the rule a message names (None: nothing to run). Raises RunNotStarted when the host should retry."""
    message = _parse_or_log(body, dequeue_count, "kqlwatch-runs")
    if message is None:
        return None
    settings = settings or load_settings()
    units = run_units(_prepared(settings, message.scheduled.date()), settings)
    unit = next((u for u in units if (u.rule_id, u.workspace) == (message.rule_id, message.workspace_id)), None)
    if unit is None:  # removed (or broken: dispatch logged it) since the message was sent, or not this deployment's
        log.warning(
            "queue message for rule %s on workspace %s, which is not among the loaded rules and workspaces: ignored",
            message.rule_id,
            message.workspace_id or "(Defender)",
        )
        return None
    rule = unit.prepared.rule
    detector = build_detector(settings, clients or warm_clients(settings))
    detector.store.ensure_table()
    outcome = detector.run_leased(unit.prepared, message.scheduled, workspace=unit.workspace)
    if outcome.errors and not outcome.ran and not outcome.skipped:
        raise RunNotStarted(f"rule {rule.id} ({rule.name}): {'; '.join(outcome.errors)[:500]}")
    return outcome


def poisoned(
    body: str | bytes, *, dequeue_count: int = 0, settings: Settings | None = None, clients: Clients | None = None
) -> bool:
    """An ops notice naming the rule whose run message failed maxDequeueCount times. True when a webhook took it."""
    message = _parse_or_log(body, dequeue_count, POISON_QUEUE)
    if message is None:
        return False
    settings = settings or load_settings()
    rules = {r.id: r for r in load_rules(settings.rules_dir).rules}
    rule = rules.get(message.rule_id)
    name, path = (rule.name, rule.path) if rule else ("(no rule file with this id)", "-")
    log.error(
        "rule %s (%s): its run scheduled for %s was abandoned after %d attempts",
        name,
        message.rule_id,
        message.scheduled.isoformat(),
        MAX_DEQUEUE,
    )
    card = notices.poisoned(name, message.rule_id, message.scheduled, path, MAX_DEQUEUE)
    teams = (clients or warm_clients(settings)).teams
    took = False
    for url in settings.ops_webhooks:
        result = teams.post(url, card)
        took = took or result.ok
        if not result.ok:
            log.error("poison notice not delivered: %s", result.detail)
    return took


_cache_lock = threading.Lock()
_cache: dict[str, tuple[tuple[Any, ...], list[PreparedRule]]] = {}


def _prepared(settings: Settings, day: date) -> list[PreparedRule]:
    """The prepared rules, parsed once per warm worker and again only when a rule file, the parameters or the
    day change: one message runs one rule, and parsing every rule file for each would cost N x N (200 rules:
    40,000 file parses a cycle)."""
    key = (_fingerprint(settings.rules_dir), tuple(sorted(settings.params.items())), day)
    with _cache_lock:
        cached = _cache.get(str(settings.rules_dir))
        if cached is not None and cached[0] == key:
            return cached[1]
    prepared, _ = load_prepared(settings, day)
    with _cache_lock:
        _cache[str(settings.rules_dir)] = (key, prepared)
    return prepared


def _fingerprint(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Every file under the rules folder, with its size and modification time (a stat each, no reading)."""
    found = []
    for root, _, files in os.walk(folder, followlinks=True):
        for name in files:
            path = os.path.join(root, name)
            try:
                stat = os.stat(path)
            except OSError:
                continue
            found.append((path, stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(found))


def _parse_or_log(body: str | bytes, dequeue_count: int, queue: str) -> RunMessage | None:
    try:
        return parse(body)
    except MessageError as exc:
        log.error("kqlwatch: refused a message on %s (delivery %d): %s", queue, dequeue_count, exc)
        return None
