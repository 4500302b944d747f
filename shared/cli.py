"""The `kqlwatch` command. Exit codes: 0 all good, 1 a rule failed, 2 bad configuration."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TextIO

from shared.detector import RunReport
from shared.errors import ConfigError, KqlwatchError

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kqlwatch", description="Run Sentinel KQL rules and alert Teams.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the rules against the workspace now")
    run.add_argument("--once", action="store_true", required=True, help="one run, then exit")
    run.add_argument("--due-only", action="store_true", help="only rules due by their queryFrequency (as the timer)")
    demo = commands.add_parser("demo", help="run the detector locally on bundled sample data (no Azure)")
    demo.add_argument("--keep", action="store_true", help="keep the demo's output folder")
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        if args.command == "run":
            return _run(due_only=args.due_only)
        if args.command == "demo":
            from shared.demo import demo as run_demo

            return run_demo()
    except ConfigError as exc:
        print(f"kqlwatch: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KqlwatchError as exc:
        print(f"kqlwatch: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    return EXIT_FAILED


def _run(*, due_only: bool) -> int:
    from shared.runner import run

    report = run(only_due=due_only)
    print_report(report)
    return EXIT_OK if report.ok else EXIT_FAILED


def print_report(report: RunReport, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    for error in report.rule_errors:
        print(f"SKIPPED  {error}", file=stream)
    for o in report.outcomes:
        if not o.ran and not o.errors:
            print(f"not due  {o.name}", file=stream)
            continue
        status = "ok" if o.ok else "FAILED"
        print(
            f"{status:<8} {o.name}: {o.rows} rows, {o.new_hits} new, {o.delivered} delivered, "
            f"{o.deferred} deferred, {o.dropped} dropped ({o.duration_ms} ms)",
            file=stream,
        )
        for message in o.errors:
            print(f"         error: {message}", file=stream)
        for message in o.warnings:
            print(f"         warning: {message}", file=stream)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # Azure SDK HTTP logging would print request URLs and headers.
    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


if __name__ == "__main__":
    raise SystemExit(main())
