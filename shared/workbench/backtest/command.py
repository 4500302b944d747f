"""`kqlwatch backtest RULE`: would this rule have flooded us last month? Its schedule replayed over a past
period through the production Detector (replay.py), from exported files or, read-only, from the workspace.

Data: `--data EmailEvents=FILE` (the formats `hunt` reads), or `--workspace`: one query per source table per
day of the period (plus the rule's look-back), with the rows' ingestion times, into the offline engine - the
replay itself then runs locally. Period: `--from/--to`, or `--days N` (ending at `--to`, else the end of the
data, else now). On a terminal a progress bar; otherwise one summary line (stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from shared.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from shared.workbench.output import terminal_safe

if TYPE_CHECKING:
    from shared.rules.exclusions import Exclusion
    from shared.rules.loader import Rule
    from shared.rules.prepare import PreparedRule
    from shared.workbench.backtest.replay import Period, Replay
    from shared.workbench.engine import Engine

MAX_DAYS = 92  # a quarter: longer replays belong in a notebook, not a terminal


def configure(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("rule", metavar="RULE", help="a rule file, or the id, name or file name of a rule in rules/")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="TABLE=FILE",
        help="a table's exported rows (JSON lines, JSON array, CSV or Parquet, .gz too); repeat for more tables",
    )
    source.add_argument(
        "--workspace",
        action="store_true",
        help="read the rows from the workspace (KQLWATCH_WORKSPACE_ID; read-only, one query per table per day)",
    )
    parser.add_argument("--from", dest="start", metavar="DATETIME", help="start of the period (UTC)")
    parser.add_argument("--to", dest="end", metavar="DATETIME", help="end of the period (UTC)")
    parser.add_argument("--days", type=int, metavar="N", help=f"the period's length in days (at most {MAX_DAYS})")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="set a rule parameter")
    parser.add_argument(
        "--exclusions", action="append", default=[], type=Path, metavar="FILE", help="apply this exclusions file too"
    )
    parser.add_argument("--no-exclusions", action="store_true", help="leave out the rule's exclusions")
    parser.add_argument(
        "--ingestion-delay",
        default="0m",
        metavar="DURATION",
        help="files without an ingestion-time column: rows are taken as ingested this long after TimeGenerated",
    )
    parser.add_argument("--html", type=Path, metavar="FILE", help="write the report as an HTML page with a chart")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def main(args: argparse.Namespace) -> int:
    from shared.errors import KqlwatchError
    from shared.workbench.hunt import UsageError

    try:
        result = backtest(args)
    except UsageError as exc:
        print(f"kqlwatch backtest: {terminal_safe(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KqlwatchError as exc:  # the rule, the data, the workspace or the engine: each names what failed
        print(f"kqlwatch backtest: {terminal_safe(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    from shared.workbench.backtest import report

    if args.json:
        sys.stdout.write(report.dumps(result) + "\n")
    else:
        sys.stdout.write("\n".join(report.text_lines(result)) + "\n")
    sys.stdout.flush()
    if args.html:
        args.html.write_text(report.html_page(result), encoding="utf-8")
    print(report.summary_line(result) + (f"; report: {args.html}" if args.html else ""), file=sys.stderr)
    return EXIT_FAILED if result.errors else EXIT_OK


def backtest(args: argparse.Namespace) -> Replay:
    from shared.rules.durations import parse_duration
    from shared.workbench.backtest import replay as rp
    from shared.workbench.engine import Engine
    from shared.workbench.hunt import UsageError, find_rule, parse_params

    if not args.data and not args.workspace:
        raise UsageError("give the data to replay: --data TABLE=FILE, or --workspace")
    if args.days is not None and not 1 <= args.days <= MAX_DAYS:
        raise UsageError(f"--days must be from 1 to {MAX_DAYS}")
    try:
        delay = parse_duration(args.ingestion_delay)
    except ValueError as exc:
        raise UsageError(f"--ingestion-delay: {exc}") from None
    rule = find_rule(args.rule)
    params = parse_params(args.param)
    extra = _extra_exclusions(args.exclusions)
    prepare = _preparer(rule, params, extra, exclusions=not args.no_exclusions)
    with Engine() as engine:
        if args.workspace:
            period = _period(args, None, rule)
            source = _fetch_workspace(engine, rule, prepare(period.end.date()).query, period)
        else:
            source = _load_files(engine, args.data, prepare(date.today()).query)
        tables = [t for t in source if t]
        rp.load_sources(engine, {t: t for t in tables}, delay)
        if not args.workspace:
            period = _period(args, _data_span(engine, tables), rule)
        clock = rp.SimClock(period.start)
        logs = rp.EngineLogs(engine, tables, clock)
        progress = _progress_bar(period) if sys.stderr.isatty() else None
        result = rp.replay(rule, prepare, logs, period, params=params, clock=clock, progress=progress)
        result.source = ", ".join(source.values())
        final = prepare(period.end.date())
        result.expired = [(e.name, e.expires) for e in final.expired if e.expires is not None]
        if not args.no_exclusions:
            base = _preparer(rule, params, (), exclusions=False)(period.end.date()).query
            mine = [e for e in _rule_exclusions(rule, extra) if not e.expired(period.start.date())]
            result.exclusion_counts = rp.exclusion_counts(logs, base, mine, period)
    return result


def _preparer(
    rule: Rule, params: dict[str, str], extra: Sequence[Exclusion], *, exclusions: bool
) -> Callable[[date], PreparedRule]:
    from shared.workbench.hunt import final_query

    def prepare(day: date) -> PreparedRule:
        return final_query(rule, params, exclusions=exclusions, today=day, extra_exclusions=extra)

    return prepare


def _extra_exclusions(paths: Sequence[Path]) -> list[Exclusion]:
    from shared.rules.loader import load_exclusion_file
    from shared.workbench.hunt import UsageError

    found: list[Exclusion] = []
    for path in paths:
        if not path.is_file():
            raise UsageError(f"--exclusions {path}: no such file")
        found.extend(load_exclusion_file(path))
    return found


def _rule_exclusions(rule: Rule, extra: Sequence[Exclusion]) -> list[Exclusion]:
    """The exclusions the detector would apply to this rule: its own, the files beside it, and --exclusions."""
    from shared.rules.loader import load_exclusion_files
    from shared.workbench.hunt import exclusion_dir

    found, _ = load_exclusion_files(exclusion_dir(Path(rule.path)))
    return [*rule.exclusions, *(e for e in [*found, *extra] if e.rule_id == rule.id)]


def _load_files(engine: Engine, data: Sequence[str], query: str) -> dict[str, str]:
    from shared.workbench.datafiles import DataError, load_files, parse_data_arg
    from shared.workbench.hunt import UsageError

    try:
        loaded = load_files(engine, [parse_data_arg(item) for item in data], query)
    except DataError as exc:
        raise UsageError(str(exc)) from None
    for item in loaded:
        for note in item.notes:
            print(f"note: {terminal_safe(note)}", file=sys.stderr)
        if "TimeGenerated" not in item.table.columns:
            raise UsageError(f"{item.spec.path}: no TimeGenerated (or Timestamp) column: a backtest needs row times")
    return {item.spec.table: str(item.spec.path) for item in loaded}


def _data_span(engine: Engine, tables: Sequence[str]) -> tuple[datetime, datetime] | None:
    from shared.workbench.backtest.replay import SOURCE_PREFIX, _ident
    from shared.workbench.engine import INGESTED

    spans = []
    for table in tables:
        low, high = engine.sql(f"SELECT min(TimeGenerated), max({INGESTED}) FROM {_ident(SOURCE_PREFIX + table)}")[0]  # noqa: S608
        if low is not None and high is not None:
            spans.append((low, high))
    if not spans:
        return None
    return min(s[0] for s in spans).astimezone(timezone.utc), max(s[1] for s in spans).astimezone(timezone.utc)


def _period(args: argparse.Namespace, span: tuple[datetime, datetime] | None, rule: Rule) -> Period:
    """--from/--to/--days, else the data's whole span (from its first hour to the hour after its last row)."""
    from shared.workbench.backtest.replay import Period
    from shared.workbench.hunt import UsageError, parse_now

    start, end = parse_now(args.start), parse_now(args.end)
    if end is None and span is not None and (start is None or args.days is None):
        end = _ceil_hour(span[1])
    elif end is None and start is None:  # --days alone (the workspace): the days up to now
        end = _floor(datetime.now(timezone.utc), rule.query_frequency)
    if start is None:
        if args.days is not None:
            assert end is not None
            start = end - timedelta(days=args.days)
        elif span is not None:
            start = span[0].replace(minute=0, second=0, microsecond=0)
        else:
            raise UsageError("--workspace needs a period: --days N, or --from (and --to)")
    if end is None:
        end = (
            start + timedelta(days=args.days) if args.days else _floor(datetime.now(timezone.utc), rule.query_frequency)
        )
    if end <= start:
        raise UsageError(f"the period ends ({end:%Y-%m-%d %H:%M}) before it starts ({start:%Y-%m-%d %H:%M})")
    if end - start > timedelta(days=MAX_DAYS):
        raise UsageError(f"the period is over {MAX_DAYS} days: give a shorter --from/--to or --days")
    return Period(start, end)


def _floor(value: datetime, step: timedelta) -> datetime:
    epoch = datetime(2000, 1, 1, tzinfo=timezone.utc)
    return epoch + ((value - epoch) // step) * step


def _ceil_hour(value: datetime) -> datetime:
    floor = value.replace(minute=0, second=0, microsecond=0)
    return floor if floor == value else floor + timedelta(hours=1)


def _fetch_workspace(engine: Engine, rule: Rule, query: str, period: Period) -> dict[str, str]:
    from shared.workbench.backtest.workspace import fetch

    return fetch(engine, rule, query, period)


def _progress_bar(period: Period) -> Callable[[int, int], None]:
    shown = {"last": -1}

    def show(done: int, total: int) -> None:
        percent = done * 100 // max(total, 1)
        if percent == shown["last"] and done != total:
            return
        shown["last"] = percent
        filled = percent * 30 // 100
        sys.stderr.write(f"\r[{'#' * filled}{' ' * (30 - filled)}] {percent:3d}% run {done:,}/{total:,}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show
