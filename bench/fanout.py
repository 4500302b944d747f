"""Fan-out (issue 14): one cycle of N rules whose Log Analytics queries each take --latency seconds, driven four
ways in the same run: sequentially (`kqlwatch run --once`, KQLWATCH_CONCURRENCY=1: one query at a time, while a
second rule does its storage work), in-process concurrency
(`run --once`, 5 at once), and through the queue (`kqlwatch dispatch`, then 1, 4 or 16 `kqlwatch worker --drain`
processes, each running up to 5 rules at once, as a Functions instance with host.json's batchSize 4 +
newBatchThreshold 1 does). Every way runs against the same stand-ins: the HTTPS Log Analytics stand-in (which,
like the service, runs 5 queries per identity at once and queues the rest), Azurite's Table and Queue services.
The bound: N / 5 x latency (Log Analytics' per-identity limit). Also: Table Storage operations per rule of an
idle run in a warm worker (a counting proxy around every TableClient, the run lease's included: it lives on the
state row, so an idle run's are the snapshot and the save).

    .venv/bin/python bench/fanout.py                       # 200 rules x 1 s (the issue's figure; ~8 min here)
    .venv/bin/python bench/fanout.py --rules 20 --workers 1,4   # scaled down (~1 min)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import _stand  # noqa: E402

from shared.standins.azurite import Azurite  # noqa: E402
from shared.standins.loganalytics import LogAnalyticsStandIn  # noqa: E402

KQLWATCH = Path(sys.executable).with_name("kqlwatch")
GOAL_RATIO, GOAL_STATE_OPS = 1.5, 2


def _cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(KQLWATCH), *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _wait(procs: list[subprocess.Popen[str]], what: str) -> None:
    for proc in procs:
        out, err = proc.communicate(timeout=3600)
        if proc.returncode not in (0,):
            raise SystemExit(f"{what} failed ({proc.returncode}): {out[-500:]}\n{err[-2000:]}")


def cycle(env: dict[str, str], la: LogAnalyticsStandIn, mode: str, workers: int = 0) -> dict[str, Any]:
    """One cycle's wall time (process start to the last rule recorded), and what Log Analytics saw."""
    env = {**env, "KQLWATCH_STATE_TABLE": "f" + os.urandom(8).hex()}
    la.max_concurrent = la.throttled = 0
    before = len(la.requests)
    started = time.perf_counter()
    if mode == "sequential":
        _wait([_cli({**env, "KQLWATCH_CONCURRENCY": "1"}, "run", "--once")], mode)
    elif mode == "concurrent":
        _wait([_cli({**env, "KQLWATCH_CONCURRENCY": "5"}, "run", "--once")], mode)
    else:
        _wait([_cli(env, "dispatch")], "dispatch")
        dispatched = time.perf_counter() - started
        _wait([_cli({**env, "KQLWATCH_CONCURRENCY": "5"}, "worker", "--drain") for _ in range(workers)], mode)
    wall = time.perf_counter() - started
    return {
        "mode": mode if not workers else f"{workers} queue worker(s)",
        "wall": wall,
        "dispatch": dispatched if workers else None,
        "queries": len(la.requests) - before,
        "max_concurrent": la.max_concurrent,
        "throttled": la.throttled,
    }


def child_idle(config: dict[str, Any]) -> dict[str, Any]:
    """A warm worker's idle run: state operations per rule (the snapshot, with the run lease on the state row, and
    the save) after a first run."""
    meters = _stand.Meters()
    detector = _stand.wire(_stand.settings_from(config["env"]), meters)
    try:
        detector.run(only_due=False)  # cold: creates the table, purges once
        meters.reset()
        report = detector.run(only_due=False)
        if not report.ok:
            raise SystemExit(f"idle run failed: {[o.log_line() for o in report.outcomes]}")
        ops = meters.counts("table.")
    finally:
        _stand.close(detector)
    return {"rules": len(report.outcomes), "ops": ops}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", type=int, default=200)
    parser.add_argument("--latency", type=float, default=1.0, help="seconds each Log Analytics query takes")
    parser.add_argument("--workers", default="1,4,16", help="queue worker process counts (comma-separated)")
    parser.add_argument("--skip-sequential", action="store_true", help="leave out the sequential cycle")
    parser.add_argument("--write", action="store_true", help="write the figures into docs/benchmarks.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child_idle(json.loads(sys.stdin.read()))))
        return 0
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    with (
        Azurite() as tables,
        Azurite(service="queue") as queues,
        LogAnalyticsStandIn() as la,
        _stand.TimedReceiver() as hook,
        tempfile.TemporaryDirectory(prefix="kqlwatch-fanout-") as tmp,
    ):
        env = _stand.env_for(
            la_endpoint=la.endpoint,
            token=la.token,
            connection=tables.connection_string,
            webhook=hook.url("soc"),
            rules=_stand.rules_dir(Path(tmp) / "rules", args.rules),
        )
        os.environ["REQUESTS_CA_BUNDLE"] = la.ca_file  # every child trusts the stand-in's throwaway CA
        env |= {
            "KQLWATCH_QUEUE_CONNECTION": queues.connection_string,
            "KQLWATCH_SCHEDULE": "0 */5 * * * *",
        }
        idle = _stand.run_child(__file__, "idle", {"env": {**env, "KQLWATCH_STATE_TABLE": "i" + os.urandom(8).hex()}})
        la.query_seconds = args.latency
        modes = ([] if args.skip_sequential else [("sequential", 0)]) + [("concurrent", 0)]
        results = [cycle(env, la, mode, 0) for mode, _ in modes]
        results += [cycle(env, la, "queue", n) for n in workers]
    _stand.report("fanout", render(args, results, idle), write=args.write)
    return 0


def render(args: argparse.Namespace, results: list[dict[str, Any]], idle: dict[str, Any]) -> str:
    bound = args.rules / 5 * args.latency
    rows = [
        [
            r["mode"],
            f"{r['wall']:.1f} s",
            f"{r['wall'] / bound:.2f}x" if bound else "-",
            "-" if r["dispatch"] is None else f"{r['dispatch']:.1f} s",
            str(r["queries"]),
            str(r["max_concurrent"]),
            str(r["throttled"]),
        ]
        for r in results
    ]
    table = _stand.table(["cycle", "wall", "vs bound", "dispatch", "LA queries", "most queries at once", "429s"], rows)
    ops = idle["ops"]
    per_rule = sum(ops.values()) / max(idle["rules"], 1)
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(ops.items()))
    best = min((r for r in results if r["mode"] != "sequential"), key=lambda r: r["wall"])
    met = ("met" if best["wall"] <= GOAL_RATIO * bound else "MISSED") if bound else "not measured"
    ratio = f"{best['wall'] / bound:.2f}x" if bound else "no latency: no bound"
    lines = [
        f"{args.rules} rules, {args.latency:g} s per Log Analytics query; bound {bound:.0f} s "
        f"({args.rules} / 5 concurrent x {args.latency:g} s).",
        "",
        table,
        "",
        f"- within {GOAL_RATIO}x of the bound: **{met}** (best {best['mode']}: {best['wall']:.1f} s, {ratio}).",
        f"- idle state operations per rule in a warm worker: {per_rule:.1f} "
        f"({kinds} for {idle['rules']} rules): "
        f"goal {GOAL_STATE_OPS}: **{'met' if per_rule <= GOAL_STATE_OPS else 'MISSED'}**.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
