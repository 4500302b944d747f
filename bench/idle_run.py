"""Idle run: a whole timer run that finds no hits, against the local stand-ins (HTTPS Log Analytics stand-in,
Azurite, webhook receiver), in steady state (second run onwards: table created, first purge done).

Counts every round-trip: Log Analytics queries (the stand-in's request log), Table Storage operations (a counting
proxy around the real TableClient: one per transaction, entity call and query page) and webhook posts (the
receiver), and splits the wall time into waiting on each stand-in and our own time (wall minus waiting; the CPU
time of the detector's thread is shown next to it). The clock is a settable one, moved on 5 minutes per run (the
seed rule's queryFrequency), and each run sees that interval's new mail (ordinary mail the rule does not match).

    .venv/bin/python bench/idle_run.py                                   # 1 and 10 rules; 0 and 10,000 stored hits
    .venv/bin/python bench/idle_run.py --rules 1 --runs 2 --stored-hits 0 --rows-per-run 10   # smoke size
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import _stand  # noqa: E402

from shared.standins.azurite import Azurite  # noqa: E402
from shared.standins.loganalytics import LogAnalyticsStandIn  # noqa: E402
from shared.state import DELIVERED, Hit, StateStore, connect  # noqa: E402

GOAL_QUERIES, GOAL_STATE_OPS, GOAL_OWN_MS = 1, 2, 50.0
STEP = timedelta(minutes=5)


@dataclass
class RunFigures:
    wall: float
    cpu: float  # the detector thread's CPU time, whole run
    queries: int
    table_ops: dict[str, int]
    posts: int
    la_wait: float
    table_wait: float
    hook_wait: float

    @property
    def state_ops(self) -> int:
        return sum(self.table_ops.values())

    @property
    def own(self) -> float:
        return self.wall - self.la_wait - self.table_wait - self.hook_wait


def _prefill(connection: str, table: str, rule_ids: list[str], count: int, now: Any) -> None:
    """`count` settled (delivered) hits per rule, as a busy rule keeps for its 14-day retention."""
    if not count:
        return
    store = StateStore(connect(connection, table))
    store.ensure_table()
    for rule_id in rule_ids:
        for start in range(0, count, 100):
            hits = [Hit(f"{rule_id[:8]}{i:056x}", _stand.email(now), first_seen=now - timedelta(days=3))
                    for i in range(start, min(start + 100, count))]
            store.insert_new(rule_id, hits, status=DELIVERED)
    store.close()


def measure(azurite: Azurite, la: LogAnalyticsStandIn, hook: _stand.TimedReceiver, *, rules: int, runs: int,
            rows_per_run: int, stored_hits: int) -> tuple[RunFigures, list[RunFigures]]:
    clock = _stand.Clock()
    la.reset()
    la.clock = clock
    hook.reset()
    with tempfile.TemporaryDirectory(prefix="kqlwatch-bench-") as tmp:
        rules_dir = _stand.rules_dir(Path(tmp) / "rules", rules)
        env = _stand.env_for(la_endpoint=la.endpoint, token=la.token, connection=azurite.connection_string,
                             webhook=hook.url("soc"), rules=rules_dir)
        settings = _stand.settings_from(env)
        from shared.rules import load_rules

        rule_ids = [r.id for r in load_rules(rules_dir).rules]
        _prefill(azurite.connection_string, settings.state_table, rule_ids, stored_hits, clock.now)
        meters = _stand.Meters()
        detector = _stand.wire(settings, meters, clock=clock)
        figures: list[RunFigures] = []
        serial = 0
        try:
            for _ in range(runs + 1):  # the first run creates the table and purges: reported apart
                la.ingest("EmailEvents", [_stand.quiet_email(clock.now, serial + i) for i in range(rows_per_run)],
                          at=clock.now - timedelta(seconds=20))
                serial += rows_per_run
                meters.reset()
                before_queries, before_posts = len(la.requests), len(hook.received())
                wall, cpu = time.perf_counter(), time.thread_time()
                report = detector.run(only_due=True)
                wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
                if not report.ok or any(o.new_hits for o in report.outcomes):
                    raise SystemExit(f"an idle run must succeed with no hits: {[o.log_line() for o in report.outcomes]}")
                if not all(o.ran for o in report.outcomes):
                    raise SystemExit("every rule must be due on every run")
                post = meters.by_name["hook.post"]
                spacing = meters.by_name["hook.spacing"]
                figures.append(RunFigures(
                    wall=wall, cpu=cpu, queries=len(la.requests) - before_queries,
                    table_ops=meters.counts("table."), posts=len(hook.received()) - before_posts,
                    la_wait=meters.total("la.").wait, table_wait=meters.total("table.").wait,
                    hook_wait=max(post.wait - spacing.wall, 0.0) + spacing.wall))
                clock.advance(STEP)
        finally:
            _stand.close(detector)
    return figures[0], figures[1:]


def _row(label: str, rules: int, stored: int, runs: list[RunFigures]) -> list[str]:
    def med(key: str) -> float:
        return _stand.median([float(getattr(r, key)) for r in runs])

    ops: dict[str, list[int]] = {}
    for r in runs:
        for name, count in r.table_ops.items():
            ops.setdefault(name, []).append(count)
    kinds = ", ".join(f"{name} {_stand.median([float(c) for c in counts]) / rules:g}" for name, counts in ops.items())
    return [label, str(rules), f"{stored:,}", f"{med('wall') * 1000:.0f} ms", f"{med('queries') / rules:g}",
            f"{med('state_ops') / rules:g} ({kinds})", f"{med('posts'):g}",
            f"{med('la_wait') / rules * 1000:.1f} ms", f"{med('table_wait') / rules * 1000:.1f} ms",
            f"{med('own') / rules * 1000:.1f} ms", f"{med('cpu') / rules * 1000:.1f} ms"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", default="1,10", help="comma-separated rule counts (copies of the seed rule)")
    parser.add_argument("--runs", type=int, default=10, help="steady-state runs measured per case (default 10)")
    parser.add_argument("--rows-per-run", type=int, default=200,
                        help="new EmailEvents rows (not matching) ingested before each run (default 200)")
    parser.add_argument("--stored-hits", default="0,10000",
                        help="settled hits already in each rule's partition, comma-separated (1-rule case only "
                             "beyond the first value)")
    parser.add_argument("--write", action="store_true", help="also write the figures into docs/benchmarks.md")
    args = parser.parse_args(argv)
    rule_counts = [int(x) for x in args.rules.split(",") if x]
    stored_counts = [int(x) for x in args.stored_hits.split(",") if x]

    rows: list[list[str]] = []
    results: dict[str, Any] = {}
    with Azurite() as azurite, LogAnalyticsStandIn() as la, _stand.TimedReceiver() as hook:
        import os

        os.environ["REQUESTS_CA_BUNDLE"] = la.ca_file  # trust the stand-in's CA, as users do a custom one
        cases = [(n, stored_counts[0]) for n in rule_counts] + [(rule_counts[0], s) for s in stored_counts[1:]]
        for rules, stored in cases:
            first, steady = measure(azurite, la, hook, rules=rules, runs=args.runs, rows_per_run=args.rows_per_run,
                                    stored_hits=stored)
            rows.append(_row("first run", rules, stored, [first]))
            rows.append(_row(f"steady (median of {len(steady)})", rules, stored, steady))
            results[f"{rules}x{stored}"] = {
                "rules": rules, "stored_hits": stored,
                "wall_per_rule_s": _stand.median([r.wall for r in steady]) / rules,
                "own_per_rule_s": _stand.median([r.own for r in steady]) / rules,
                "cpu_per_rule_s": _stand.median([r.cpu for r in steady]) / rules,
                "queries_per_rule": _stand.median([float(r.queries) for r in steady]) / rules,
                "state_ops_per_rule": _stand.median([float(r.state_ops) for r in steady]) / rules,
            }

    base = results[f"{rule_counts[-1]}x{stored_counts[0]}"]
    worst_own = max(r["own_per_rule_s"] for r in results.values()) * 1000
    verdicts = [
        f"- 1 query per rule: **{'met' if base['queries_per_rule'] <= GOAL_QUERIES else 'MISSED'}** "
        f"({base['queries_per_rule']:g}).",
        f"- at most {GOAL_STATE_OPS} state operations per rule: "
        f"**{'met' if base['state_ops_per_rule'] <= GOAL_STATE_OPS else 'MISSED'}** "
        f"({base['state_ops_per_rule']:g} per rule with {base['rules']} rules; the run's create_table is shared).",
        f"- under {GOAL_OWN_MS:.0f} ms of our own time per rule: **{'met' if worst_own < GOAL_OWN_MS else 'MISSED'}** "
        f"(worst case {worst_own:.1f} ms).",
    ]
    headers = ["run", "rules", "stored hits/rule", "wall", "LA queries/rule", "state ops/rule (by kind)",
               "posts", "LA wait/rule", "Table wait/rule", "own time/rule", "detector CPU/rule"]
    body = "\n".join([
        f"Seed rule copies at a 5-minute schedule, {args.rows_per_run} new non-matching EmailEvents rows per run. "
        "Own time = wall - time waiting on the stand-ins (includes SDK and TLS CPU).",
        "",
        _stand.table(headers, rows),
        "",
        *verdicts,
    ])
    _stand.report("idle_run", body, write=args.write)
    _stand.save_json("idle_run", {"rows_per_run": args.rows_per_run, "cases": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
