"""`kqlwatch run --once`: every rule now (or only the due ones), through the same code as the timer."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--once", action="store_true", required=True, help="one run, then exit")
    parser.add_argument("--due-only", action="store_true", help="only rules due by their queryFrequency (as the timer)")


def main(args: argparse.Namespace) -> int:
    from shared.cli import EXIT_FAILED, EXIT_OK, print_report
    from shared.runner import run

    report = run(only_due=args.due_only)
    print_report(report)
    return EXIT_OK if report.ok else EXIT_FAILED
