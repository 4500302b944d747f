"""Cost: Flex Consumption executions and GB-seconds per month for N rules at a fixed schedule (one timer invocation
runs every due rule, one after the other), and the Log Analytics data each run scans, from the figures the other
benchmarks measured (bench/results/idle_run.json, written by bench/idle_run.py; defaults below when absent) and
stated assumptions for what the stand-ins cannot tell (a real workspace's query latency).

Prices (USD, pay-as-you-go, East US; check the pricing pages for your region and date):
- Flex Consumption, on demand: $0.000026 per GB-s of instance memory while executing, first 100,000 GB-s a month
  free; $0.40 per million executions, first 250,000 free. Sources: Microsoft's billing model
  (learn.microsoft.com/azure/azure-functions/functions-consumption-costs: on demand bills "the total amount of memory
  provisioned while each on demand instance is actively executing functions (in GB-seconds), minus a free grant",
  plus executions minus a free grant), rates as quoted from azure.microsoft.com/pricing/details/functions by
  modal.com/blog/azure-function-pricing-guide (May 2025).
- Log Analytics queries: no query charge on the Analytics plan (learn.microsoft.com/azure/azure-monitor/logs/
  cost-logs: pay-as-you-go is on ingestion and retention); Basic and Auxiliary tables are billed per GB a query
  scans (learn.microsoft.com/azure/azure-monitor/logs/basic-logs-query, "Pricing model"), $0.005/GB from
  azure.microsoft.com/pricing/details/monitor (not confirmed in this session's sources: verify).

    .venv/bin/python bench/cost.py
    .venv/bin/python bench/cost.py --rules 10 --schedule-minutes 5 --memory-mb 2048
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import _stand  # noqa: E402

HOURS_PER_MONTH = 730  # Azure's billing month
GB_S_PRICE, GB_S_FREE = 0.000026, 100_000
EXEC_PRICE_PER_MILLION, EXEC_FREE = 0.40, 250_000
BASIC_QUERY_PRICE_PER_GB = 0.005
# When bench/results/idle_run.json is absent (figures measured on 2026-11-27, docs/benchmarks.md).
DEFAULT_OWN_PER_RULE, DEFAULT_STANDIN_WALL_PER_RULE, DEFAULT_STATE_OPS = 0.017, 0.20, 2.1


def billed_row_bytes() -> float:
    """Log Analytics bills a record by the string form of its stored values: estimated from the bundled sample day."""
    path = ROOT / "samples" / "EmailEvents.jsonl"
    sizes = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        sizes.append(sum(len(str(v)) for v in row.values() if v not in (None, "")))
    return sum(sizes) / len(sizes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=10)
    parser.add_argument("--schedule-minutes", type=float, default=5.0)
    parser.add_argument(
        "--memory-mb",
        type=int,
        default=2048,
        help="Flex Consumption instance memory (infra/resources.bicep instanceMemoryMB: 2048)",
    )
    parser.add_argument(
        "--query-seconds",
        type=float,
        default=1.0,
        help="ASSUMED latency of one query to a real workspace (the stand-in's is not representative)",
    )
    parser.add_argument("--table-rtt", type=float, default=0.015, help="ASSUMED in-region Table Storage round-trip, s")
    parser.add_argument("--query-period-hours", type=float, default=1.0, help="hours of data each run scans (1h)")
    parser.add_argument(
        "--mail-rows-per-day",
        default="100000,1000000",
        help="EmailEvents rows a day in the workspace, comma-separated scenarios",
    )
    parser.add_argument("--write", action="store_true", help="also write the figures into docs/benchmarks.md")
    args = parser.parse_args(argv)

    idle: dict[str, Any] | None = _stand.load_json("idle_run")
    own, standin_wall, state_ops, source = (
        DEFAULT_OWN_PER_RULE,
        DEFAULT_STANDIN_WALL_PER_RULE,
        DEFAULT_STATE_OPS,
        "defaults in bench/cost.py (bench/results/idle_run.json absent)",
    )
    if idle:
        cases = idle["cases"]
        case = max((c for c in cases.values() if c["stored_hits"] == 0), key=lambda c: c["rules"])
        own, standin_wall = case["own_per_rule_s"], case["wall_per_rule_s"]
        state_ops = case["state_ops_per_rule"]
        source = f"bench/results/idle_run.json ({case['rules']}-rule steady idle runs)"

    executions = HOURS_PER_MONTH * 60 / args.schedule_minutes
    gb = args.memory_mb / 1024
    per_rule_real = own + args.query_seconds + state_ops * args.table_rtt
    scenarios = [
        ("measured against the stand-ins", standin_wall),
        (
            f"estimate for Azure (own {own * 1000:.0f} ms + query {args.query_seconds:g} s + "
            f"{state_ops:g} x {args.table_rtt * 1000:.0f} ms state)",
            per_rule_real,
        ),
    ]
    rows = []
    for label, per_rule in scenarios:
        seconds = per_rule * args.rules
        gb_s = seconds * gb * executions
        cost = max(gb_s - GB_S_FREE, 0) * GB_S_PRICE + max(executions - EXEC_FREE, 0) / 1e6 * EXEC_PRICE_PER_MILLION
        rows.append(
            [
                label,
                f"{seconds:.2f} s",
                f"{executions:,.0f}",
                f"{gb_s:,.0f}",
                f"{max(gb_s - GB_S_FREE, 0):,.0f}",
                f"${cost:,.2f}",
            ]
        )

    row_bytes = billed_row_bytes()
    runs_per_month = executions * args.rules
    scan_rows = []
    for per_day in (int(x) for x in args.mail_rows_per_day.split(",") if x):
        per_run_gb = per_day / 24 * args.query_period_hours * row_bytes / 1e9
        month_gb = per_run_gb * runs_per_month
        scan_rows.append(
            [
                f"{per_day:,}",
                f"{per_run_gb * 1000:,.1f} MB",
                f"{month_gb:,.0f} GB",
                "$0",
                f"${month_gb * BASIC_QUERY_PRICE_PER_GB:,.2f}",
            ]
        )

    body = "\n".join(
        [
            f"{args.rules} rules every {args.schedule_minutes:g} minutes: one timer invocation runs all of them, so "
            f"{executions:,.0f} executions a month ({HOURS_PER_MONTH} h). Per-rule time from {source}. Billed memory: "
            f"the instance size, {args.memory_mb} MB ({gb:g} GB), while executing.",
            "",
            _stand.table(
                [
                    "per-rule time",
                    "per invocation",
                    "executions/month",
                    "GB-s/month",
                    "GB-s over free grant",
                    "Functions cost/month",
                ],
                rows,
            ),
            "",
            f"Log Analytics data scanned: each run of each rule reads its window, {args.query_period_hours:g} h of "
            f"EmailEvents (a row is read {args.query_period_hours * 60 / args.schedule_minutes:g} times); "
            f"{row_bytes:.0f} billed bytes per row (the sample day's average), {runs_per_month:,.0f} rule-runs a month.",
            "",
            _stand.table(
                [
                    "EmailEvents rows/day",
                    "scanned per rule-run",
                    "scanned per month",
                    "Analytics plan",
                    f"Basic plan (${BASIC_QUERY_PRICE_PER_GB}/GB)",
                ],
                scan_rows,
            ),
            "",
            f"Prices: Flex Consumption on demand ${GB_S_PRICE:.6f}/GB-s ({GB_S_FREE:,} GB-s free a month), "
            f"${EXEC_PRICE_PER_MILLION:.2f}/million executions ({EXEC_FREE:,} free); Log Analytics queries free on the "
            f"Analytics plan, ${BASIC_QUERY_PRICE_PER_GB}/GB scanned on Basic/Auxiliary. Sources in `bench/cost.py`'s "
            "docstring and below.",
        ]
    )
    _stand.report("cost", body, write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
