"""`kqlwatch status`: each rule's heartbeat from the state table, so an operator sees at a glance what runs.
Offline: it needs only KQLWATCH_STATE_CONNECTION (and KQLWATCH_STATE_TABLE / KQLWATCH_RULES_DIR when not default).

    kqlwatch status                       one line per rule: last run, last success, failures, hits, pending
                                          and leased hits (with when the lease ends)
    kqlwatch status --rule ID             that rule's recent runs
    kqlwatch status --rule ID --dropped   its hits that could not be delivered
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TextIO

from shared.errors import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from shared.runtime.store import RuleState, StateStore


def configure(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--rule", help="a rule id: show its recent runs")
    parser.add_argument("--dropped", action="store_true", help="with --rule: list hits that were dropped")
    parser.add_argument("--runs", type=int, default=10, help="with --rule: how many runs (default 10)")


def main(args: argparse.Namespace) -> int:
    from shared.rules.loader import load_rules
    from shared.runtime.settings import load_state_settings
    from shared.runtime.wiring import state_store

    settings = load_state_settings()  # offline: the state table only, no workspace or webhook needed
    store = state_store(settings.state_connection, settings.state_table)
    try:
        loaded = load_rules(settings.rules_dir).rules
        names = {r.id: r.name for r in loaded}
        if args.rule:
            _show_rule(store, args.rule.lower(), names, dropped=args.dropped, runs=args.runs)
            return EXIT_OK
        failing = _show_rules(store, names, _windows(loaded))
        _show_queues()
        return EXIT_FAILED if failing else EXIT_OK
    finally:
        store.close()


def _show_rule(store: StateStore, rule_id: str, names: dict[str, str], *, dropped: bool, runs: int) -> None:
    from shared.runtime.store import DROPPED

    if dropped:
        rows = [
            [h.first_seen, h.key[:12], h.attempts, _summary(h.row)] for h in store.hits(rule_id) if h.status == DROPPED
        ]
        print_table(["first seen", "hit", "attempts", "row"], rows)
        return
    keys = ("Started", "Rows", "NewHits", "Delivered", "Deferred", "Dropped", "DurationMs")
    records = [[*(r.get(k) for k in keys), _errors(r.get("Errors"))] for r in store.runs(rule_id, limit=runs)]
    print(f"{names.get(rule_id, rule_id)} ({rule_id})")
    print_table(["started", "rows", "new", "delivered", "deferred", "dropped", "ms", "errors"], records)


def _show_rules(store: StateStore, names: dict[str, str], windows: dict[str, str]) -> bool:
    """One line per rule; True when a rule is failing."""
    states = store.rule_states()
    pending = store.pending_leases()
    now = datetime.now(timezone.utc)
    rows = [
        _rule_row(
            names.get(rule_id, "(no rule file)"),
            rule_id,
            states.get(rule_id),
            pending.get(rule_id, []),
            windows.get(rule_id),
            now,
        )
        for rule_id in sorted(set(names) | set(states) | set(pending), key=lambda i: names.get(i, i))
    ]
    headers = ["rule", "id", "last run", "last success", "health", "hits", "delivered", "pending", "leased"]
    print_table([*headers, "window", "cannot see", "last error"], rows)
    return any(s.consecutive_failures for s in states.values())


def _show_queues() -> None:
    """Issue 14: with KQLWATCH_QUEUE_CONNECTION set, the run queue's depth and the poison count (one call each)."""
    import os

    from shared.runtime.settings import QUEUE_CONNECTION, QUEUE_SERVICE_URI, load_queue_connection

    if not (os.environ.get(QUEUE_CONNECTION) or os.environ.get(QUEUE_SERVICE_URI)):
        return
    from shared.runtime.fanout import POISON_QUEUE, QUEUE
    from shared.workbench.queues import depth, queue_client

    connection = load_queue_connection()
    counts = []
    for name in (QUEUE, POISON_QUEUE):
        client = queue_client(connection, name, retry_total=1)
        try:
            count = depth(client)
        finally:
            client.close()
        counts.append(f"{name}: {'unreadable' if count is None else count}")
    print("queues   " + ", ".join(counts) + " (poison: runs abandoned after 5 attempts; each sent an ops notice)")


def _rule_row(
    name: str, rule_id: str, state: RuleState | None, leases: list[datetime | None], window: str | None, now: datetime
) -> list[Any]:
    """One rule's line. Pending and leased hits come from the hits themselves, not the run record: a run
    killed mid-delivery recorded no run, and its hits wait under its lease until the time shown."""
    held = [lease for lease in leases if lease is not None and lease > now]
    leased = f"{len(held)} until {_text(max(held))}" if held else "0"
    if state is None or state.last_run is None:  # no row, or only the row a first run's lease created (issue 14)
        health = "run never finished" if leases else "-"
        return [
            name,
            rule_id,
            "never",
            "-",
            health,
            len(leases),
            0,
            len(leases),
            leased,
            window or "-",
            "-",
            "not run yet",
        ]
    health = f"FAILING ({state.consecutive_failures})" if state.consecutive_failures else "ok"
    return [
        name,
        rule_id,
        _ago(state.last_run, now),
        _ago(state.last_success, now),
        health,
        state.hits_total,
        state.delivered_total,
        len(leases),
        leased,
        window or state.window_mode or "-",
        _blind(state.blind),
        state.last_error or "",
    ]


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], stream: TextIO | None = None, width: int = 48
) -> None:
    """Aligned columns; every value cleaned (no control characters from data reach the terminal)."""
    from shared.runtime.redact import redact_text
    from shared.runtime.sanitize import clean

    out = stream or sys.stdout
    cells = [[clean(redact_text(_text(v)), width, defang_text=False) for v in row] for row in rows]
    sizes = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(sizes[i]) for i, h in enumerate(headers)).rstrip(), file=out)
    print("  ".join("-" * s for s in sizes), file=out)
    for row in cells:
        print("  ".join(v.ljust(sizes[i]) for i, v in enumerate(row)).rstrip(), file=out)
    if not rows:
        print("(none)", file=out)


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return "" if value is None else str(value)


def _ago(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "never"
    seconds = int((now - when).total_seconds())
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    if seconds < 172800:
        return f"{seconds // 3600}h ago"
    return f"{seconds // 86400}d ago"


def _errors(stored: Any) -> str:
    """A run record's errors (a JSON list; older records may hold clipped, unreadable JSON)."""
    try:
        errors = json.loads(stored or "[]")
    except ValueError:
        return str(stored)
    return "; ".join(str(e) for e in errors) if isinstance(errors, list) else str(errors)


def _windows(rules: Sequence[Any]) -> dict[str, str]:
    """Each rule's window mode and why (issue 13)."""
    from shared.rules.ingestion import for_rule

    default = (os.environ.get("KQLWATCH_SOURCE") or "").strip().lower()  # issue 15: Defender rules read Timestamp
    return {
        r.id: "timestamp (Defender: no ingestion time)"
        if (r.source or default) == "defender"
        else f"{c.mode} ({c.reason})"
        for r in rules
        for c in [for_rule(r)]
    }


def _blind(blind: dict[str, datetime]) -> str:
    """Source tables with no new rows past their threshold, and since when (issue 13)."""
    return ", ".join(f"{t} since {_text(v)}" for t, v in sorted(blind.items())) or "-"


def _summary(row: dict[str, Any]) -> str:
    keys = ("NetworkMessageId", "RecipientEmailAddress", "Subject")
    shown = {k: row[k] for k in keys if k in row} or dict(list(row.items())[:3])
    return json.dumps(shown, ensure_ascii=False, default=str)
