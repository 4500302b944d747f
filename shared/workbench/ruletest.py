"""`kqlwatch test`: run the test cases each rule file declares under `kqlwatch: tests:`.

A case gives the tables' rows (inline, or a data file beside the rule), optional parameters, and what the rule's
final query (through `prepare_rules`, as the detector sends it) must return: a row count, or rows matched on
the columns they name. Output is pytest-like: one PASSED/FAILED line per case, a diff under each failure, and
a last line `N passed, M failed`. Exit 0 iff every case passed. The format is documented in docs/workbench.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from shared.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from shared.rules.durations import as_time
from shared.rules.loader import find_rule_files, is_exclusions_file
from shared.workbench.ruleexpect import Outcome, check_count, check_rows

if TYPE_CHECKING:
    from shared.rules.loader import Rule

CASE_KEYS = ("name", "description", "data", "dataFile", "table", "params", "now", "exclusions", "expect")
EXPECT_KEYS = ("count", "rows", "partial")


class CaseError(Exception):
    """A malformed test case: reported as a failure naming the file and the case."""


@dataclass
class Case:
    name: str
    index: int
    tables: dict[str, list[Mapping[str, Any]]] = field(default_factory=dict)
    data_file: Path | None = None
    data_table: str = ""
    params: dict[str, str] = field(default_factory=dict)
    now: datetime | None = None
    exclusions: Path | None = None  # an exclusions file applied for this case (relative to the rule file)
    count: int | None = None
    rows: list[Mapping[str, Any]] | None = None
    partial: bool = False


def configure(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="rule files or folders (default: rules/); FILE::NAME runs one case. "
        "exclusions.yaml / *.exclusions.yaml are skipped",
    )
    parser.add_argument("-k", dest="select", metavar="TEXT", help="only cases whose name contains TEXT")


def main(args: argparse.Namespace) -> int:
    from shared.rules.loader import broken_links
    from shared.workbench.hunt import rules_dir
    from shared.workbench.output import terminal_safe

    paths = args.paths or [str(rules_dir())]
    try:
        targets = collect(paths)
    except CaseError as exc:
        print(f"kqlwatch test: {terminal_safe(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    for folder in (Path(p) for p in paths if Path(p).is_dir()):
        for warning in broken_links(folder):
            print(f"kqlwatch test: warning: {terminal_safe(str(warning))}", file=sys.stderr)
    passed, failed = run_files(targets, sys.stdout, select=args.select)
    print(f"{passed} passed, {failed} failed")
    return EXIT_OK if failed == 0 else EXIT_FAILED


# --- collecting ------------------------------------------------------------------------------------------


def collect(paths: Sequence[str]) -> list[tuple[Path, str | None]]:
    """(rule file, case name or None for all) for each argument; folders are searched recursively."""
    targets: list[tuple[Path, str | None]] = []
    for raw in paths:
        text, sep, case = raw.partition("::")
        path = Path(text)
        if path.is_dir():
            targets.extend((f, None) for f in find_rule_files(path))
        elif path.is_file():
            if not is_exclusions_file(path):
                targets.append((path, case if sep else None))
        else:
            raise CaseError(f"{text}: no such file or folder")
    return targets


def run_files(targets: Sequence[tuple[Path, str | None]], out: TextIO, *, select: str | None = None) -> tuple[int, int]:
    from shared.errors import RuleError
    from shared.rules.loader import load_rule
    from shared.workbench.output import terminal_safe

    passed = failed = 0
    for path, only in targets:
        shown = _display(path)
        try:
            rule = load_rule(path)
        except RuleError as exc:
            line = f" (line {exc.line})" if exc.line else ""
            out.write(f"FAILED {shown}\n    the rule file cannot be loaded: {terminal_safe(exc.reason)}{line}\n")
            failed += 1
            continue
        raw_tests = rule.extension.get("tests")
        if raw_tests is None:
            out.write(f"no tests {shown}\n")
            continue
        if not isinstance(raw_tests, list):
            out.write(f"FAILED {shown}\n    malformed: kqlwatch.tests must be a list of test cases\n")
            failed += 1
            continue
        names: set[str] = set()
        ran = 0
        for index, raw in enumerate(raw_tests, start=1):
            label = _case_label(raw, index)
            if (only is not None and label != only) or (select and select not in label):
                continue
            ran += 1
            where = f"{shown}::{_inline(label)}"
            try:
                case = parse_case(raw, index, path)
                if case.name in names:
                    raise CaseError(f"another case is named {case.name!r}")
                names.add(case.name)
                outcome = run_case(rule, case)
            except CaseError as exc:
                outcome = Outcome(False, [f"malformed test case: {exc}"])
            if outcome.passed:
                passed += 1
                out.write(f"PASSED {where}\n")
            else:
                failed += 1
                out.write(f"FAILED {where}\n")
                for line in outcome.detail:
                    out.write(f"    {terminal_safe(line)}\n")
        if only is not None and ran == 0:
            out.write(f"FAILED {shown}::{_inline(only)}\n    no test case with this name\n")
            failed += 1
    return passed, failed


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _case_label(raw: Any, index: int) -> str:
    if isinstance(raw, Mapping) and isinstance(raw.get("name"), str) and raw["name"].strip():
        return str(raw["name"]).strip()
    return f"case #{index}"


def _inline(text: str) -> str:
    from shared.runtime.sanitize import clean

    return clean(text, 200, defang_text=False)


# --- parsing a case -------------------------------------------------------------------------------------


def parse_case(raw: Any, index: int, rule_path: Path) -> Case:
    if not isinstance(raw, Mapping):
        raise CaseError("a test case must be a mapping (name, data, expect, ...)")
    unknown = [str(k) for k in raw if k not in CASE_KEYS]
    if unknown:
        raise CaseError(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(CASE_KEYS)})")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise CaseError("'name' is missing or empty")
    case = Case(name=name.strip(), index=index)
    data = raw.get("data")
    if data is not None:
        if not isinstance(data, Mapping) or not data:
            raise CaseError("'data' must map table names to lists of rows, e.g. {EmailEvents: [{...}]}")
        for table, rows in data.items():
            if not isinstance(table, str) or not isinstance(rows, list):
                raise CaseError(f"data.{table}: must be a list of rows (mappings of column: value)")
            for number, row in enumerate(rows):
                if not isinstance(row, Mapping):
                    raise CaseError(f"data.{table}[{number}] is not a mapping of column: value")
            case.tables[table] = rows
    data_file = raw.get("dataFile")
    if data_file is not None:
        table = raw.get("table")
        if not isinstance(data_file, str) or not data_file.strip():
            raise CaseError("'dataFile' must be a path (relative to the rule file)")
        if not isinstance(table, str) or not table.strip():
            raise CaseError("'dataFile' needs 'table' (the table its rows belong to)")
        if table in case.tables:
            raise CaseError(f"table {table} is given both inline and by dataFile")
        case.data_file = (rule_path.parent / data_file).resolve()
        case.data_table = table.strip()
        if not case.data_file.is_file():
            raise CaseError(f"dataFile {data_file}: no such file (looked for {case.data_file})")
    elif raw.get("table") is not None:
        raise CaseError("'table' is only used with 'dataFile'")
    if data is None and data_file is None:
        raise CaseError("give 'data' (inline rows per table) or 'dataFile' with 'table'")
    case.params = _params(raw.get("params"))
    case.now = _now(raw.get("now"))
    exclusions = raw.get("exclusions")
    if exclusions is not None:
        if not isinstance(exclusions, str) or not (rule_path.parent / exclusions).is_file():
            raise CaseError(f"exclusions {exclusions!r}: no such exclusions file (a path relative to the rule file)")
        case.exclusions = (rule_path.parent / exclusions).resolve()
    _expectation(raw.get("expect"), case)
    return case


def _params(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise CaseError("'params' must map parameter names to values")
    params: dict[str, str] = {}
    for name, value in raw.items():
        if isinstance(value, list):
            value = ",".join(_scalar_text(v, f"params.{name}") for v in value)
        else:
            value = _scalar_text(value, f"params.{name}")
        params[str(name)] = value
    return params


def _scalar_text(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise CaseError(f"{where}: a parameter value must be text, a number, a boolean or a list of them")


def _now(raw: Any) -> datetime | None:
    if raw is None:
        return None
    if isinstance(raw, (datetime, date, str)):
        parsed = as_time(raw)
        if parsed is None:
            raise CaseError(f"'now' {raw!r} is not an ISO date/time")
        return parsed
    raise CaseError("'now' must be a date/time")


def _expectation(raw: Any, case: Case) -> None:
    if not isinstance(raw, Mapping):
        raise CaseError("'expect' is missing: give expect.count or expect.rows")
    unknown = [str(k) for k in raw if k not in EXPECT_KEYS]
    if unknown:
        raise CaseError(f"unknown key(s) under expect: {', '.join(unknown)} (known: {', '.join(EXPECT_KEYS)})")
    if ("count" in raw) == ("rows" in raw):
        raise CaseError("expect needs exactly one of 'count' or 'rows'")
    if "count" in raw:
        count = raw["count"]
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise CaseError("expect.count must be a whole number >= 0")
        if "partial" in raw:
            raise CaseError("expect.partial goes with expect.rows, not expect.count")
        case.count = count
        return
    rows = raw["rows"]
    if not isinstance(rows, list) or not all(isinstance(r, Mapping) and r for r in rows):
        raise CaseError("expect.rows must be a list of non-empty mappings (column: value)")
    partial = raw.get("partial", False)
    if not isinstance(partial, bool):
        raise CaseError("expect.partial must be true or false")
    case.rows = rows
    case.partial = partial


# --- running a case -------------------------------------------------------------------------------------


def run_case(rule: Rule, case: Case) -> Outcome:
    from shared.errors import KqlwatchError
    from shared.rules.loader import load_exclusion_file
    from shared.schemas import table_schema
    from shared.workbench.datafiles import DataError, DataSpec, create_known_tables, load_file, load_rows
    from shared.workbench.engine import Engine, EngineError
    from shared.workbench.hunt import UsageError, final_query

    try:
        extra = load_exclusion_file(case.exclusions) if case.exclusions else []
        prepared = final_query(rule, case.params, today=case.now.date() if case.now else None, extra_exclusions=extra)
    except UsageError as exc:
        raise CaseError(str(exc).replace("--param ", "params.")) from None
    except KqlwatchError as exc:  # the rule's query or its exclusion files
        return Outcome(False, [f"the final query cannot be built: {exc}"])
    with Engine() as engine, tempfile.TemporaryDirectory(prefix="kqlwatch-test-") as tmp:
        try:
            for table, rows in case.tables.items():
                load_rows(engine, table, rows, Path(tmp), strict=True)
            if case.data_file is not None:
                load_file(engine, DataSpec(case.data_table, case.data_file), table_schema(case.data_table))
            create_known_tables(engine, prepared.query, skip=[*case.tables, case.data_table])
        except DataError as exc:
            raise CaseError(f"data: {exc}") from None
        except EngineError as exc:
            return Outcome(False, [f"the data cannot be loaded: {exc}"])
        try:
            result = engine.query(prepared.query, now=case.now)
        except EngineError as exc:
            return Outcome(False, [f"the query failed: {exc}"])
    if case.rows is not None:
        return check_rows(rule, result, case.rows, partial=case.partial)
    return check_count(rule, result, case.count or 0)
