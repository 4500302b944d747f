"""The `kqlwatch` command. Exit codes: 0 all good, 1 a rule failed (or a check found problems), 2 bad
configuration or usage.

Each subcommand lives in its own module with `configure(parser)` and `main(args) -> int`; modules keep heavy
imports inside `main` so `kqlwatch --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from shared.errors import EXIT_BROKEN_PIPE, EXIT_CONFIG, EXIT_FAILED, EXIT_OK, ConfigError, KqlwatchError

if TYPE_CHECKING:  # `kqlwatch --help` must not import the runtime (or, through it, the Azure SDKs)
    from shared.runtime.detector import RunReport

__all__ = ["EXIT_BROKEN_PIPE", "EXIT_CONFIG", "EXIT_FAILED", "EXIT_OK", "main", "print_report"]

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("shared.workbench.runcmd", "run the rules against the workspace now"),
    "dispatch": ("shared.workbench.queuecmd", "queue one message per due rule run (the dispatch function)"),
    "worker": ("shared.workbench.queuecmd", "run queued rule runs (the run_rule function) until the queue is empty"),
    "demo": ("shared.workbench.demo", "run the detector locally on the bundled sample data (no Azure)"),
    "hunt": ("shared.workbench.hunt", "run a rule's KQL over local data files"),
    "preview": ("shared.workbench.hunt", "write the cards a rule would post for local data, as HTML"),
    "backtest": ("shared.workbench.backtest", "replay a rule's schedule over past data through the real pipeline"),
    "validate": ("shared.workbench.validate", "check rule files: Sentinel schema and KQL (Kusto.Language)"),
    "test": ("shared.workbench.ruletest", "run the rules' own test cases"),
    "status": ("shared.workbench.status", "show each rule's last runs and health from the state table"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kqlwatch", description="Run Sentinel KQL rules and alert Teams.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    parser.add_argument("--version", action="version", version=f"kqlwatch {version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=help_text, description=help_text)
        # -v after the subcommand too (`kqlwatch hunt RULE -v`); SUPPRESS keeps it from resetting a -v before it.
        sub.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug details")
        module.configure(sub, name)
        modules[name] = module
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        code: int = modules[args.command].main(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return code
    except BrokenPipeError:
        # `kqlwatch hunt ... | head`: the reader has what it wanted. Point stdout at devnull so Python's own
        # flush at exit does not raise again, and exit as a process killed by SIGPIPE does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except ConfigError as exc:
        print(f"kqlwatch: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KqlwatchError as exc:
        print(f"kqlwatch: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("kqlwatch")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def print_report(report: RunReport, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    for error in report.rule_errors:
        print(f"SKIPPED  {error}", file=stream)
    for warning in report.warnings:
        print(f"warning  {warning}", file=stream)
    for o in report.outcomes:
        if o.skipped:  # issue 14: its run lease said so (already ran, or another run holds the rule)
            print(f"skipped  {o.name}: {o.skipped}", file=stream)
            continue
        if not o.ran and not o.errors:
            print(f"not due  {o.name}", file=stream)
            continue
        status = "ok" if o.ok else "FAILED"
        print(
            f"{status:<8} {o.name}: {o.rows} rows, {o.new_hits} new, {o.delivered} delivered, "
            + (f"{o.suppressed} suppressed, " if o.suppressed else "")
            + f"{o.deferred} deferred, {o.dropped} dropped"
            + (f", {o.held} held by another run's lease" if o.held else "")
            + f" ({o.duration_ms} ms)",
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
    from shared.runtime import redact

    redact.install()  # and what they do log (retry warnings) loses everything after the host


if __name__ == "__main__":
    raise SystemExit(main())
