"""`kqlwatch validate`: check rule files as the Azure-Sentinel repository's CI would, and their KQL with
Microsoft's Kusto.Language parser (tools/kusto-validate.js, one Node process for all files).

Every finding reads `file:line:col: error|warning: message [code]`; a file is valid when it has no error.
Scheduled and NRT rules must carry Sentinel's required fields; a file with neither `kind` nor
`queryFrequency` is a hunting query and is checked on the fields it has."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from shared.errors import EXIT_FAILED, EXIT_OK
from shared.rules.loader import broken_links, find_rule_files, is_exclusions_file, rules_folder
from shared.workbench.validate.checks import _check_duplicate_ids, _check_file
from shared.workbench.validate.kusto import _apply_kql, check_kql, run_kusto_validate
from shared.workbench.validate.locator import query_locator
from shared.workbench.validate.model import ERROR, WARNING, FileResult, Finding, KqlResult, Report, _finding_order
from shared.workbench.validate.reference import SCHEDULED_REQUIRED, TACTICS, technique_tactics


def configure(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("paths", nargs="*", metavar="PATH", help="rule files or folders, searched recursively "
                        "for *.yaml / *.yml (default: the rules folder, KQLWATCH_RULES_DIR or rules/)")  # fmt: skip
    parser.add_argument("--no-kql", action="store_true", help="skip the KQL check (no Node.js needed)")
    parser.add_argument("-l", "--list", action="store_true", help="also print one line per file: its kind and verdict")
    parser.add_argument("--stats", action="store_true", help="also print how often each check fired")
    parser.add_argument("--workspace", action="store_true", help="check tables and columns against the workspace's "
                        "own schemas (KQLWATCH_WORKSPACE_ID; read-only), so custom tables validate too")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.paths] or [rules_folder(os.environ)[1]]  # the folder a run would load
    from shared.workbench.workspace_schemas import use_workspace

    use_workspace(args.workspace)
    report = validate_paths(paths, kql=not args.no_kql)
    for line in render(report, list_files=args.list, stats=args.stats):
        print(line)
    return EXIT_OK if report.ok else EXIT_FAILED


def render(report: Report, *, list_files: bool = False, stats: bool = False) -> list[str]:
    """The command's output: findings file by file (and each file's verdict), then the summary."""
    lines = [str(finding) for finding in report.problems]
    for result in report.files:
        lines.extend(str(finding) for finding in sorted(result.findings, key=_finding_order))
        if list_files:
            lines.append(f"{result.path}: {result.verdict()}" + (f"; window: {result.window}" if result.window else ""))
    if stats:
        for (severity, code), count in sorted(report.counts_by_code().items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  {count:5d}  {severity:<7} {code}")
    lines.append(report.summary())
    return lines


def rule_paths(paths: Iterable[Path]) -> tuple[list[Path], list[Finding]]:
    """The rule files under `paths` (files as given; folders searched recursively), in a stable order."""
    found: list[Path] = []
    problems: list[Finding] = []
    for path in paths:
        if path.is_dir():
            found.extend(find_rule_files(path))
            problems.extend(Finding(b.path, 1, 1, WARNING, b.reason, "file") for b in broken_links(path))
        elif path.is_file():
            if not is_exclusions_file(path):
                found.append(path)
        else:
            problems.append(Finding(str(path), 1, 1, ERROR, "no such file or folder", "file"))
    unique = list(dict.fromkeys(found))
    return unique, problems


def validate_paths(paths: Iterable[Path], *, kql: bool = True) -> Report:
    files, problems = rule_paths(paths)
    return Report(validate_files(files, kql=kql), problems)


def validate_files(paths: Sequence[Path], *, kql: bool = True) -> list[FileResult]:
    """Check every file; one Node process checks all their queries. Never raises for a bad file."""
    checked = [_check_file(path) for path in paths]
    _check_duplicate_ids(checked)
    if kql:
        with_query = [c for c in checked if c.query is not None]
        results = check_kql([c.query.value for c in with_query if c.query is not None])
        for c, result in zip(with_query, results, strict=True):
            _apply_kql(c, result)
    return [c.result for c in checked]


__all__ = [
    "ERROR",
    "SCHEDULED_REQUIRED",
    "TACTICS",
    "WARNING",
    "FileResult",
    "Finding",
    "KqlResult",
    "Report",
    "check_kql",
    "configure",
    "main",
    "query_locator",
    "render",
    "rule_paths",
    "run_kusto_validate",
    "technique_tactics",
    "validate_files",
    "validate_paths",
]
