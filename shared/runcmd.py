"""`kqlwatch run --once`: every rule now (or only the due ones), through the same code as the timer."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--once", action="store_true", help="one run, then exit (required: see below)")
    parser.epilog = (
        "In Azure the Functions timer runs the rules on KQLWATCH_SCHEDULE; `kqlwatch run --once` runs "
        "them now, once, through the same code."
    )
    parser.add_argument("--due-only", action="store_true", help="only rules due by their queryFrequency (as the timer)")


def main(args: argparse.Namespace) -> int:
    import sys

    from shared.cli import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, print_report
    from shared.runner import run

    if not args.once:
        print(
            "kqlwatch run: give --once. kqlwatch has no scheduler of its own: in Azure the Functions timer runs "
            "the rules on KQLWATCH_SCHEDULE; `kqlwatch run --once` runs every rule now, one time, and exits "
            "(add --due-only to run only the rules due, as the timer does).",
            file=sys.stderr,
        )
        return EXIT_CONFIG

    report = run(only_due=args.due_only)
    print_report(report)
    return EXIT_OK if report.ok else EXIT_FAILED
