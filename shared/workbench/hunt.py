"""`kqlwatch hunt` and `kqlwatch preview`: a rule's final query over local data files, offline.

`hunt` prints the result rows (an aligned table, JSON lines or CSV); `--explain` prints the final query - the
rule's KQL with parameters and exclusions (its own and the exclusion files beside it) applied by `prepare_rules`,
exactly what the detector sends.
`preview` turns the rows into the cards the detector would post (same dedupe, same card builder), writes them as
an HTML page rendered by Microsoft's `adaptivecards` renderer and prints them as text. Nothing is sent anywhere.

Data values are attacker-controlled (subjects, display names): everything printed to the terminal is made
inert first (control and bidi characters visible, no escape sequences).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from shared.rules.durations import parse_time
from shared.workbench.output import DEFAULT_WIDTH, format_table, terminal_safe, write_csv, write_jsonl

if TYPE_CHECKING:
    from shared.rules.exclusions import Exclusion
    from shared.rules.loader import Rule
    from shared.rules.prepare import PreparedRule
    from shared.workbench.datafiles import Loaded
    from shared.workbench.engine import EngineResult

_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class UsageError(Exception):
    """A command-line mistake: exit 2 with this message."""


def configure(parser: argparse.ArgumentParser, name: str) -> None:
    parser.set_defaults(hunt_mode=name)
    parser.add_argument("rule", metavar="RULE", help="a rule file, or the id, name or file name of a rule in rules/")
    parser.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="TABLE=FILE",
        help="a table's rows: JSON lines, a JSON array or CSV, as exported from Advanced Hunting / Log Analytics "
        "(.gz read too); repeat for more tables. FILE alone takes the table from the file name",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a rule parameter as KQLWATCH_PARAM_NAME=VALUE would (environment parameters are not read)",
    )
    parser.add_argument(
        "--now",
        metavar="DATETIME",
        help="evaluate now() and ago(), and exclusion expiry, at this UTC time (default: now)",
    )
    parser.add_argument(
        "--no-exclusions",
        action="store_true",
        help="leave out the rule's exclusions (kqlwatch.exclusions and exclusions.yaml files)",
    )
    if name == "preview":
        parser.add_argument("--out", type=Path, default=Path("cards.html"), help="the HTML page to write")
        return
    parser.add_argument("--format", choices=("table", "jsonl", "csv"), default="table", help="output format")
    parser.add_argument("--columns", metavar="A,B,...", help="print only these result columns, in this order")
    parser.add_argument(
        "--width",
        type=int,
        default=DEFAULT_WIDTH,
        metavar="N",
        help=f"table format: cut values longer than N characters (default {DEFAULT_WIDTH})",
    )
    parser.add_argument("--explain", action="store_true", help="print the final query (no data needed)")


def main(args: argparse.Namespace) -> int:
    from shared.errors import KqlwatchError

    command = f"kqlwatch {args.hunt_mode}"
    try:
        rule = find_rule(args.rule)
        now = parse_now(args.now)
        prepared = final_query(
            rule, parse_params(args.param), exclusions=not args.no_exclusions, today=now.date() if now else None
        )
        for stale in prepared.expired:
            print(
                f"note: exclusion {terminal_safe(stale.name)!r} expired on {stale.expires}: no longer applied",
                file=sys.stderr,
            )
        if getattr(args, "explain", False):
            sys.stdout.write(terminal_safe(explain(rule, prepared.query, now)))
            return EXIT_OK
        if not args.data:
            raise UsageError("give the data to run over: --data TABLE=FILE (or --explain to see the query)")
        if args.hunt_mode == "preview":
            return _preview(prepared, args, now)
        return _hunt(prepared, args, now)
    except UsageError as exc:
        print(f"{command}: {terminal_safe(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KqlwatchError as exc:  # the rule, the data or the query: EngineError names what the engine refused
        print(f"{command}: {terminal_safe(str(exc))}", file=sys.stderr)
        return EXIT_FAILED


# --- the rule and its final query -------------------------------------------------------------------------


def explain(rule: Rule, query: str, now: datetime | None) -> str:
    """`--explain`: the query hunt and test run offline (no ingestion time offline), then the one a run sends to
    the workspace: in ingestion mode each source table is filtered to rows ingested after the run's watermark
    (shown here as the last 5 minutes)."""
    from shared.rules.ingestion import INGESTION, for_rule, with_ingestion_filter

    choice = for_rule(rule)
    offline = query.rstrip("\n") + "\n"
    if choice.mode == INGESTION:
        since = (now or datetime.now(timezone.utc)) - timedelta(minutes=5)
        sent = with_ingestion_filter(query, choice.tables, since).rstrip("\n") + "\n"
        how = "rows ingested after the run's watermark (here: 5 minutes ago)"
    else:
        sent, how = offline, "the same query"
    return (
        f"// offline (hunt, test): the rule with its parameters and exclusions\n{offline}\n"
        f"// sent to the workspace by a run: {how}; window {choice.mode} ({choice.reason})\n{sent}"
    )


def rules_dir() -> Path:
    """KQLWATCH_RULES_DIR, else rules/ here, else the app's own rules/ (shared.rules.loader.rules_folder)."""
    from shared.rules.loader import rules_folder

    return rules_folder(os.environ)[1]


def find_rule(spec: str) -> Rule:
    """A rule file path, or a rule's id, name or file name (without .yaml) in the rules folder."""
    from shared.rules.loader import load_rule, load_rules

    path = Path(spec)
    if path.is_file():
        return load_rule(path)
    directory = rules_dir()
    loaded = load_rules(directory)
    wanted = spec.strip().casefold()
    matches = [
        r
        for r in loaded.rules
        if wanted in (r.id.casefold(), r.name.casefold(), Path(r.path).stem.casefold(), Path(r.path).name.casefold())
    ]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(f"{spec!r} matches several rules: " + ", ".join(r.path for r in matches))
    hint = "".join(f"; {warning}" for warning in loaded.warnings)  # a rule behind a broken symlink, say
    raise UsageError(f"no rule file, id or name {spec!r} (looked in {directory}){hint}")


def parse_params(items: Sequence[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not _PARAM_NAME.match(name):
            raise UsageError(f"--param {item!r}: expected NAME=VALUE (NAME: letters, digits, _)")
        params[name] = value
    return params


def final_query(
    rule: Rule,
    params: Mapping[str, str],
    *,
    exclusions: bool = True,
    today: date | None = None,
    extra_exclusions: Sequence[Exclusion] = (),
) -> PreparedRule:
    """The query the detector would send for this rule with these parameters: through `prepare_rules`, with the
    rule's own exclusions and those in the exclusion files beside it (`exclusion_dir`), active on `today`."""
    from shared.errors import ConfigError, RuleError
    from shared.rules.kql import KqlLexError
    from shared.rules.loader import load_exclusion_files
    from shared.rules.params import bindings
    from shared.rules.prepare import prepare_rules

    try:
        names = bindings(rule.query)
    except KqlLexError:
        names = None  # prepare_rules reports it
    if names is not None:
        unknown = [n for n in params if n not in names]
        if unknown:
            known = ", ".join(names) or "none"
            raise UsageError(
                f"--param {unknown[0]}: rule {rule.name!r} has no top-level `let {unknown[0]} = ...;` "
                f"(its parameters: {known})"
            )
    if exclusions:
        found, problems = load_exclusion_files(exclusion_dir(Path(rule.path)))
        if problems:
            raise problems[0]
        mine = [e for e in [*found, *extra_exclusions] if e.rule_id == rule.id]
    else:
        rule = replace(rule, exclusions=())
        mine = []
    try:
        prepared, errors = prepare_rules([rule], dict(params), mine, today)
    except ConfigError as exc:
        raise UsageError(f"--param {exc.parameter or exc.setting}: {exc.reason}") from None
    if errors or not prepared:
        raise errors[0] if errors else RuleError(rule.path, "the rule could not be prepared")
    return prepared[0]


def exclusion_dir(rule_path: Path) -> Path:
    """Where the detector would look for this rule's exclusion files: the rules folder when the rule is in it,
    else the rule file's own folder."""
    folder = rules_dir().resolve()
    path = rule_path.resolve()
    return folder if path.is_relative_to(folder) else path.parent


def parse_now(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError:
        raise UsageError(f"--now {text!r} is not an ISO date/time (like 2026-11-20T12:00:00Z)") from None


# --- running ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    result: EngineResult
    rows_in: dict[str, int]
    load_seconds: float
    query_seconds: float
    notes: list[str]
    warnings: list[str] = field(default_factory=list)  # data that cannot be what the query expects


def run(prepared: PreparedRule, data: Sequence[str], now: datetime | None = None) -> Run:
    """Load the data files into a fresh engine and run the final query over them."""
    from shared.workbench.datacache import DataCache
    from shared.workbench.datafiles import DataError, load_files, parse_data_arg
    from shared.workbench.engine import Engine, LateColumnsLost
    from shared.workbench.translation import TranslationCache

    with Engine(TranslationCache.default()) as engine:
        started = time.perf_counter()
        try:
            specs = [parse_data_arg(item) for item in data]
            cache = DataCache.default()
            loaded = load_files(engine, specs, prepared.query, prune=True, lazy=True, cache=cache, late=True)
        except DataError as exc:  # the arguments, not the data in the files
            raise UsageError(str(exc)) from None
        load_seconds = time.perf_counter() - started
        started = time.perf_counter()
        try:
            result = engine.query(prepared.query, now=now)
        except LateColumnsLost:  # an operator rebuilt the rows: every column loaded, the query run again
            loaded = load_files(engine, specs, prepared.query, prune=True, lazy=True, cache=cache)
            result = engine.query(prepared.query, now=now)
        query_seconds = time.perf_counter() - started
    notes = [note for item in loaded for note in item.notes]
    rows_in = {item.spec.table: item.table.rows for item in loaded}
    return Run(result, rows_in, load_seconds, query_seconds, notes, data_warnings(prepared.query, loaded))


def data_warnings(query: str, loaded: Sequence[Loaded]) -> list[str]:
    """Why a result may be empty for the wrong reason: a file given for a table the query never reads, or a file
    without columns the query reads (they load empty, so every filter on them fails quietly)."""
    from shared.rules.kql import KqlLexError, tokenize

    try:
        names = {t.text for t in tokenize(query) if t.kind == "ident"}
    except KqlLexError:
        return []
    warnings = []
    for item in loaded:
        table, path = item.spec.table, item.spec.path
        if table not in names:
            warnings.append(f"the query does not read table {table}: {path} is not used (is it the right table?)")
            continue
        absent = [c for c in item.table.missing if c in names and c not in item.table.filled]
        if absent and item.table.rows:
            warnings.append(
                f"{path} has no column(s) {', '.join(absent)} that the query reads: "
                f"they are empty in all {item.table.rows:,} rows of {table}"
            )
    return warnings


def _hunt(prepared: PreparedRule, args: argparse.Namespace, now: datetime | None) -> int:
    from shared.rules.loader import trigger_met

    started = time.perf_counter()
    outcome = run(prepared, args.data, now)
    result = outcome.result
    columns = select_columns(result.columns, args.columns)
    _print_notes(outcome)
    out = sys.stdout
    if args.format == "jsonl":
        write_jsonl(result, columns, out)
    elif args.format == "csv":
        write_csv(result, columns, out, terminal=out.isatty())
    else:
        for line in format_table(result, columns, max(args.width, 5)):
            out.write(line + "\n")
    out.flush()
    rule = prepared.rule
    count = len(result.rows)
    met = "met" if trigger_met(rule, count) else "not met"
    loaded = ", ".join(f"{table} {rows:,}" for table, rows in outcome.rows_in.items())
    print(
        f"{count:,} row{'s' if count != 1 else ''} (trigger {rule.trigger_operator} {rule.trigger_threshold}: {met})"
        f" · load {outcome.load_seconds:.2f} s ({loaded} rows) · query {outcome.query_seconds:.2f} s"
        f" · total {time.perf_counter() - started:.2f} s",
        file=sys.stderr,
    )
    return EXIT_OK


def _print_notes(outcome: Run) -> None:
    for note in outcome.notes:
        print(f"note: {terminal_safe(note)}", file=sys.stderr)
    for warning in outcome.warnings:
        print(f"warning: {terminal_safe(warning)}", file=sys.stderr)


def _preview(prepared: PreparedRule, args: argparse.Namespace, now: datetime | None) -> int:
    from shared.runtime.cards import CardContext, build_posts
    from shared.workbench.preview import card_content, card_text, render_cards, write_page

    outcome = run(prepared, args.data, now)
    _print_notes(outcome)
    rule = prepared.rule
    hits, summary = detector_hits(rule, outcome.result)
    posts = build_posts(CardContext(rule, total=len(hits)), hits) if hits else []
    payloads = [post.payload for post in posts]
    rendered = render_cards([card_content(p) for p in payloads], f"kqlwatch preview: {rule.name}")
    write_page(rendered.page, args.out)  # as shared.workbench.preview.write_preview, keeping the verdicts
    for index, (payload, verdict) in enumerate(zip(payloads, rendered.results, strict=True), start=1):
        print(f"── card {index} of {len(payloads)} " + "─" * 40)
        print(card_text(payload))
        for error in verdict.errors:
            print(f"   INVALID: {terminal_safe(error)}")
        for warning in verdict.warnings:
            print(f"   warning: {terminal_safe(warning)}")
    print(f"{terminal_safe(summary)} -> {len(payloads)} card(s); nothing was sent. Preview: {args.out}")
    invalid = [i for i, verdict in enumerate(rendered.results, start=1) if not verdict.ok]
    if invalid:
        print(
            f"kqlwatch preview: the renderer reports card(s) {', '.join(map(str, invalid))} invalid for Teams",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


def detector_hits(rule: Rule, result: EngineResult) -> tuple[list[dict[str, Any]], str]:
    """The hits the detector makes of these rows on a first run: trigger threshold, then one hit per identity
    (the latest row wins, in first-seen order) - the rows its cards show."""
    from shared.rules.loader import trigger_met
    from shared.runtime.hits import collapse

    rows = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
    count = f"{len(rows):,} row{'s' if len(rows) != 1 else ''}"
    if not rows:
        return [], count
    if not trigger_met(rule, len(rows)):
        return [], f"{count}: trigger ({rule.trigger_operator} {rule.trigger_threshold}) not met, no alert"
    times = [c for c, t in zip(result.columns, result.types, strict=True) if t == "datetime"]
    key, by_key = collapse(rule, result.columns, times, rows)  # the detector's own dedupe, not a copy of it
    hits = list(by_key.values())
    return hits, f"{count} -> {len(hits):,} hit{'s' if len(hits) != 1 else ''} (one per {', '.join(key)})"


# --- output (the writers are in output.py) ---------------------------------------------------------------


def select_columns(columns: Sequence[str], wanted: str | None) -> list[int]:
    if not wanted:
        return list(range(len(columns)))
    names = [c.strip() for c in wanted.split(",") if c.strip()]
    unknown = [n for n in names if n not in columns]
    if unknown:
        raise UsageError(f"--columns: no column {unknown[0]!r} in the result (columns: {', '.join(columns)})")
    return [columns.index(n) for n in names]
