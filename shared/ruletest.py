"""`kqlwatch test`: run the test cases each rule file declares under `kqlwatch: tests:`.

A case gives the tables' rows (inline, or a data file beside the rule), optional parameters, and what the rule's
final query (through `prepare_rules`, as the detector sends it) must return: a row count, or rows matched on
the columns they name. Output is pytest-like: one PASSED/FAILED line per case, a diff under each failure, and
a last line `N passed, M failed`. Exit 0 iff every case passed. The format is documented in docs/workbench.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from shared.rules import is_exclusions_file

if TYPE_CHECKING:
    from shared.engine import EngineResult
    from shared.rules import Rule

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
CASE_KEYS = ("name", "description", "data", "dataFile", "table", "params", "now", "exclusions", "expect")
EXPECT_KEYS = ("count", "rows", "partial")
_SHOWN_ROWS = 10  # result rows listed under a failure
_SHOWN_COLUMNS = 6
_VALUE_WIDTH = 60


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


@dataclass
class Outcome:
    passed: bool
    detail: list[str] = field(default_factory=list)


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
    from shared.hunt import rules_dir, terminal_safe
    from shared.rules import broken_links

    paths = args.paths or [str(rules_dir())]
    try:
        targets = collect(paths)
    except CaseError as exc:
        print(f"kqlwatch test: {terminal_safe(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    for folder in (Path(p) for p in paths if Path(p).is_dir()):
        for warning in broken_links(folder):
            print(f"kqlwatch test: warning: {terminal_safe(warning)}", file=sys.stderr)
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
            files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
            targets.extend((f, None) for f in files if not is_exclusions_file(f))
        elif path.is_file():
            if not is_exclusions_file(path):
                targets.append((path, case if sep else None))
        else:
            raise CaseError(f"{text}: no such file or folder")
    return targets


def run_files(targets: Sequence[tuple[Path, str | None]], out: TextIO, *, select: str | None = None) -> tuple[int, int]:
    from shared.errors import RuleError
    from shared.hunt import terminal_safe
    from shared.rules import load_rule

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
    from shared.sanitize import clean

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
    if isinstance(raw, datetime):
        return raw if raw.tzinfo else raw.replace(tzinfo=timezone.utc)
    if isinstance(raw, date):
        return datetime(raw.year, raw.month, raw.day, tzinfo=timezone.utc)
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
        except ValueError:
            raise CaseError(f"'now' {raw!r} is not an ISO date/time") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
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
    from shared.datafiles import DataError, DataSpec, create_known_tables, load_file, load_rows
    from shared.engine import Engine, EngineError
    from shared.errors import KqlwatchError
    from shared.hunt import UsageError, final_query
    from shared.rules import load_exclusion_file
    from shared.schemas import table_schema

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


def check_count(rule: Rule, result: EngineResult, expected: int) -> Outcome:
    got = len(result.rows)
    if got == expected:
        return Outcome(True)
    columns = _key_columns(rule, result, [])
    lines = [f"expected {_rows(expected)}, got {got}" + (":" if got else "")]
    lines.extend(f"+ {_show(result, row, columns)}" for row in result.rows[:_SHOWN_ROWS])
    if got > _SHOWN_ROWS:
        lines.append(f"  ... and {got - _SHOWN_ROWS} more")
    return Outcome(False, lines)


def check_rows(rule: Rule, result: EngineResult, expected: Sequence[Mapping[str, Any]], *, partial: bool) -> Outcome:
    """Each expected row must match exactly one result row (on the columns it names), no two expected rows the
    same one; result rows no expected row matched fail the case unless `partial`."""
    named = list(dict.fromkeys(str(c) for row in expected for c in row))
    absent = [c for c in named if c not in result.columns]
    if absent:
        return Outcome(
            False, [f"column(s) {', '.join(absent)} not in the result (columns: {', '.join(result.columns)})"]
        )
    columns = _key_columns(rule, result, named)
    problems: list[str] = []
    claimed: dict[int, int] = {}
    for number, want in enumerate(expected, start=1):
        matches = [i for i, row in enumerate(result.rows) if _row_matches(want, row, result)]
        if len(matches) == 1:
            other = claimed.get(matches[0])
            if other is not None:
                problems.append(
                    f"- {_show_expected(want)}   expected row {number} matches the same result row "
                    f"as expected row {other}"
                )
            claimed.setdefault(matches[0], number)
            continue
        if not matches:
            problems.append(f"- {_show_expected(want)}   expected row {number}: no result row matches")
            near = _closest(want, result)
            if near:
                problems.append(f"    closest result row differs in {near}")
        else:
            problems.append(
                f"- {_show_expected(want)}   expected row {number}: matches {len(matches)} result rows "
                "(name more columns to tell them apart)"
            )
            problems.extend(f"    {_show(result, result.rows[i], columns)}" for i in matches[:_SHOWN_ROWS])
    extra = [i for i in range(len(result.rows)) if i not in claimed]
    if extra and not partial:
        for i in extra[:_SHOWN_ROWS]:
            problems.append(f"+ {_show(result, result.rows[i], columns)}   result row not expected")
        if len(extra) > _SHOWN_ROWS:
            problems.append(f"  ... and {len(extra) - _SHOWN_ROWS} more")
    if not problems:
        return Outcome(True)
    head = f"expected {_rows(len(expected))}{' (partial)' if partial else ''}, got {len(result.rows)}; "
    head += "- expected, not found   + found, not expected"
    return Outcome(False, [head, *problems])


def _key_columns(rule: Rule, result: EngineResult, named: Sequence[str]) -> list[str]:
    """What to show of a result row: the columns the expectation names, then the rule's identity columns."""
    from shared.dedupe import identity_columns

    times = [c for c, t in zip(result.columns, result.types, strict=True) if t == "datetime"]
    identity = identity_columns(result.columns, times, dedupe_key=rule.dedupe_key, entity_columns=rule.entity_columns)
    shown = list(dict.fromkeys([*named, *(c for c in identity if c in result.columns)]))
    return shown[: max(_SHOWN_COLUMNS, len(named))] or list(result.columns[:_SHOWN_COLUMNS])


def _row_matches(want: Mapping[str, Any], row: tuple[Any, ...], result: EngineResult) -> bool:
    for column, value in want.items():
        index = result.columns.index(str(column))
        if not values_equal(value, row[index], result.types[index]):
            return False
    return True


def _closest(want: Mapping[str, Any], result: EngineResult) -> str:
    best: list[str] | None = None
    for row in result.rows:
        diffs = []
        for column, value in want.items():
            index = result.columns.index(str(column))
            if not values_equal(value, row[index], result.types[index]):
                hint = _hint(value, result.types[index])
                diffs.append(f"{column}: expected {_value(value)}, got {_value(row[index])}{hint}")
        if best is None or len(diffs) < len(best):
            best = diffs
    return "; ".join(best or [])


def _hint(value: Any, kind: str) -> str:
    if kind == "string" and not isinstance(value, str) and value is not None:
        return f" (YAML read the expected value as {type(value).__name__}: quote it)"
    return ""


def values_equal(expected: Any, actual: Any, kind: str) -> bool:
    """An expected YAML value against a result value of Kusto type `kind` (strings compare exactly, as `==`)."""
    if expected is None:
        return actual is None or (kind == "string" and actual == "")
    if kind == "datetime":
        want = _as_time(expected)
        return want is not None and isinstance(actual, datetime) and want == _aware(actual)
    if kind == "dynamic":
        got = _as_dynamic(actual)
        if isinstance(expected, str):
            try:
                return bool(json.loads(expected) == got)
            except ValueError:
                return bool(expected == got)
        return bool(expected == got)
    if kind == "bool":
        if isinstance(expected, str):
            expected = {"true": True, "false": False}.get(expected.lower(), expected)
        return isinstance(expected, bool) and expected == actual
    if kind in ("int", "long", "real", "double", "decimal"):
        if isinstance(expected, bool) or actual is None:
            return False
        if isinstance(expected, str):
            try:
                expected = float(expected)
            except ValueError:
                return False
        return isinstance(expected, (int, float)) and float(expected) == float(actual)
    if kind == "timespan" and isinstance(actual, timedelta):
        from shared.durations import parse_duration

        try:
            return isinstance(expected, str) and parse_duration(expected) == actual
        except ValueError:
            return False
    return isinstance(expected, str) and bool(expected == actual)


def _as_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return _aware(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    if isinstance(value, str):
        try:
            return _aware(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _as_dynamic(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _rows(n: int) -> str:
    return f"{n} row{'s' if n != 1 else ''}"


def _value(value: Any) -> str:
    """A value for the diff: JSON-quoted (so "" and " " are visible), ASCII-escaped, cut."""
    from shared.sanitize import truncate

    if isinstance(value, datetime):
        text = _aware(value).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    elif isinstance(value, date):
        text = value.isoformat()
    else:
        text = json.dumps(value, ensure_ascii=True, default=str)
    return truncate(text, _VALUE_WIDTH)


def _show(result: EngineResult, row: tuple[Any, ...], columns: Sequence[str]) -> str:
    pairs = (f"{c}: {_value(row[result.columns.index(c)])}" for c in columns if c in result.columns)
    return "{" + ", ".join(pairs) + "}"


def _show_expected(want: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{c}: {_value(v)}" for c, v in want.items()) + "}"
