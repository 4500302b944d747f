"""Sentinel-format rule files -> typed Rule objects.

A file stays a valid Sentinel rule: everything kqlwatch needs beyond Sentinel's schema lives under the
single `kqlwatch:` key. A file that cannot be used is reported with its path and reason; the rest load.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from shared.errors import RuleError
from shared.rules.exclusions import Exclusion, ExclusionError, parse_exclusions
from shared.rules.fields import MAX_QUERY_CHARS as MAX_QUERY_CHARS  # re-exported, as are the names below
from shared.rules.fields import NAMESPACE as NAMESPACE
from shared.rules.fields import SEVERITIES as SEVERITIES
from shared.rules.fields import is_guid as is_guid
from shared.rules.fields import rule_from_dict
from shared.rules.model import Rule as Rule  # re-exported: the loader's product
from shared.rules.model import trigger_met as trigger_met
from shared.rules.yamlguard import YamlRefused, safe_load

MAX_FILE_BYTES = 1_000_000
_COMPOSER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class LoadResult:
    rules: list[Rule]
    errors: list[RuleError]
    warnings: list[str] = field(default_factory=list)  # e.g. rule-named symlinks that lead nowhere


def load_rules(directory: Path) -> LoadResult:
    """Load every rule file (*.yaml / *.yml) under `directory`; collect errors instead of stopping at the first."""
    if not directory.is_dir():
        return LoadResult([], [RuleError(str(directory), "rules directory does not exist")])
    loaded = load_files(find_rule_files(directory))
    return replace(loaded, warnings=[*map(str, broken_links(directory)), *loaded.warnings])


def rule_files(directory: Path) -> list[Path]:
    """Every YAML file under `directory` (rules and exclusion files): *.yaml / *.yml in any letter case."""
    return sorted(p for p in directory.rglob("*") if _is_yaml_name(p) and p.is_file())


def find_rule_files(directory: Path) -> list[Path]:
    """The rule files under `directory`: what the detector loads, `kqlwatch test` runs and `validate` checks."""
    return [p for p in rule_files(directory) if not is_exclusions_file(p)]


APP_ROOT = Path(__file__).resolve().parents[2]  # where function_app.py and the shipped rules/ are
RULES_DIR_SETTING = "KQLWATCH_RULES_DIR"
DEFAULT_RULES_DIR = "rules"


def rules_folder(env: Mapping[str, str]) -> tuple[str, Path]:
    """(the value as given, the folder it names): KQLWATCH_RULES_DIR, else rules/. A relative path is taken from
    the working directory when it exists there, else from the app's own folder (where function_app.py is): the
    Functions host's working directory is not guaranteed. The one resolution the detector and the workbench use;
    whether the folder exists is the caller's to report (a setting error at run time, a finding in `validate`)."""
    raw = (env.get(RULES_DIR_SETTING) or "").strip() or DEFAULT_RULES_DIR
    path = Path(raw)
    if not (path.is_absolute() or path.exists()):
        path = APP_ROOT / path
    return raw, path


@dataclass(frozen=True)
class BrokenLink:
    """A rule-named symlink that leads to no file: the link, and why it is not loaded."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def broken_links(directory: Path) -> list[BrokenLink]:
    """Rule-named symlinks that lead to no file (dangling, or a loop): rule_files cannot see them, and a rule
    that silently stops loading is a rule that silently stops alerting."""
    found = []
    for path in sorted(p for p in directory.rglob("*") if _is_yaml_name(p) and p.is_symlink()):
        try:
            path.resolve(strict=True)
        except RuntimeError:  # Python 3.11 reports a symlink loop so
            found.append(BrokenLink(str(path), "symbolic link loop: the rule file is not loaded"))
            continue
        except OSError as exc:
            found.append(
                BrokenLink(
                    str(path),
                    f"symbolic link to {_link_target(path)}, which "
                    + ("loops" if exc.errno == errno.ELOOP else "does not exist")
                    + ": the rule file is not loaded",
                )
            )
            continue
        if not path.is_file():
            found.append(
                BrokenLink(str(path), f"symbolic link to {_link_target(path)}, which is not a file: not loaded")
            )
    return found


def _link_target(path: Path) -> str:
    try:
        return str(path.readlink())
    except OSError:
        return "?"


def _is_yaml_name(path: Path) -> bool:
    return path.suffix.lower() in (".yaml", ".yml")


def is_exclusions_file(path: Path) -> bool:
    """Tuning files kept beside the rules (`exclusions.yaml`, `*.exclusions.yaml`) are not rules."""
    name = path.name.lower()
    return name in ("exclusions.yaml", "exclusions.yml") or name.endswith((".exclusions.yaml", ".exclusions.yml"))


def load_exclusion_files(directory: Path) -> tuple[list[Exclusion], list[RuleError]]:
    """Tuning kept beside the rules: `exclusions.yaml` / `*.exclusions.yaml`, each `exclusions: [...]`."""
    found: list[Exclusion] = []
    errors: list[RuleError] = []
    if directory.is_dir():
        for path in (p for p in rule_files(directory) if is_exclusions_file(p)):
            try:
                found.extend(load_exclusion_file(path))
            except RuleError as exc:
                errors.append(exc)
    return found, errors


def load_exclusion_file(path: Path) -> list[Exclusion]:
    try:
        doc = safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(doc, dict):
            raise ExclusionError(str(path), "must be a mapping with an 'exclusions' list")
        return parse_exclusions(doc.get("exclusions"), source=str(path))
    except YamlRefused as exc:
        raise RuleError(str(path), exc.reason, exc.line) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise RuleError(str(path), f"invalid YAML: {_problem(exc)}", mark.line + 1 if mark else None) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(str(path), f"cannot read exclusions: {str(exc).splitlines()[0]}") from None
    except ExclusionError as exc:
        raise RuleError(exc.source, exc.reason) from None


def load_files(paths: Iterable[Path]) -> LoadResult:
    rules: list[Rule] = []
    errors: list[RuleError] = []
    seen: dict[str, str] = {}
    for path in paths:
        try:
            rule = load_rule(path)
        except RuleError as exc:
            errors.append(exc)
            continue
        if rule.id in seen:
            errors.append(RuleError(str(path), f"duplicate rule id {rule.id} (already used by {seen[rule.id]})"))
            continue
        seen[rule.id] = str(path)
        rules.append(rule)
    return LoadResult(rules, errors)


def load_rule(path: Path) -> Rule:
    where = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise RuleError(where, f"file is {size:,} bytes; the limit is {MAX_FILE_BYTES:,}")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleError(where, f"cannot read file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise RuleError(where, "file is not UTF-8 text") from None
    return parse_rule(text, where)


def parse_rule(text: str, where: str) -> Rule:
    try:
        doc = safe_load(text)
    except YamlRefused as exc:
        raise RuleError(where, exc.reason, exc.line) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise RuleError(where, f"invalid YAML: {_problem(exc)}", mark.line + 1 if mark else None) from None
    if not isinstance(doc, dict):
        raise RuleError(where, "a rule file must be a YAML mapping (id, name, query, ...)")
    bad_key = next((k for k in doc if not isinstance(k, str)), None)
    if bad_key is not None:
        raise RuleError(
            where,
            f"top-level key {bad_key!r} is a {type(bad_key).__name__}: keys must be text",
            key_line(text, str(bad_key).lower() if isinstance(bad_key, bool) else str(bad_key)),
        )
    try:
        return rule_from_dict(doc, where)
    except RuleError as exc:
        if exc.line is None and exc.key is not None:
            raise RuleError(where, exc.reason, key_line(text, exc.key), key=exc.key) from None
        raise


def key_line(text: str, key: str) -> int | None:
    """The 1-based line of a top-level key (only on the error path: the text is parsed again)."""
    try:
        root = yaml.compose(text, Loader=_COMPOSER)
    except yaml.YAMLError:
        return None
    if not isinstance(root, yaml.MappingNode):
        return None
    for key_node, _ in root.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return int(key_node.start_mark.line) + 1
    return None


def _problem(exc: yaml.YAMLError) -> str:
    return getattr(exc, "problem", None) or (str(exc).splitlines() or ["unreadable"])[0]
