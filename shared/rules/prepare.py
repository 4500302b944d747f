"""Preparing a rule's final query: parameters and active exclusions applied, and the ingestion filter a run adds.

Shared by the detector (what is sent) and the workbench (`hunt`, `test`, `--explain`): one implementation, so
offline results are the results a run would see.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone

from shared.errors import ConfigError, RuleError
from shared.rules import exclusions as excl
from shared.rules import ingestion
from shared.rules.exclusions import Exclusion
from shared.rules.kql import KqlLexError
from shared.rules.loader import MAX_FILE_BYTES, Rule
from shared.rules.params import PARAM_PREFIX, ParamError, apply_params, bindings

window_choice = ingestion.for_rule


def workspace_query(prepared: PreparedRule, since: datetime) -> str:
    """The query as a run sends it to the workspace with ingestion watermark `since` (`hunt --explain`)."""
    choice = window_choice(prepared.rule)
    if choice.mode != ingestion.INGESTION:
        return prepared.query
    return ingestion.with_ingestion_filter(prepared.query, choice.tables, since)


@dataclass(frozen=True)
class PreparedRule:
    rule: Rule
    query: str  # parameters and active exclusions applied: exactly what is sent
    expired: tuple[Exclusion, ...] = ()  # exclusions past their date: no longer applied, to be reported


def prepare_rules(
    rules: Sequence[Rule],
    params: dict[str, str],
    exclusions: Sequence[Exclusion] = (),
    today: date | None = None,
    *,
    failed: Sequence[RuleError] = (),
    warnings: list[str] | None = None,
) -> tuple[list[PreparedRule], list[RuleError]]:
    """Apply KQLWATCH_PARAM_* and the active exclusions to every rule. A parameter no rule binds is a
    configuration error (exit 2): a typo would otherwise silently leave the default in place. But when its
    binding is in a file that failed to load (`failed`), one typo in that file must not stop every other rule:
    the parameter gets a warning naming the file (appended to `warnings`) and the good rules run."""
    today = today or datetime.now(timezone.utc).date()
    by_rule = excl.by_rule(exclusions)
    known_ids = {r.id for r in rules}
    errors = [
        RuleError(e.source, f"exclusion '{e.name}' names rule {e.rule_id}, which is not loaded")
        for e in exclusions
        if e.rule_id not in known_ids
    ]
    used: set[str] = set()
    prepared: list[PreparedRule] = []
    for rule in rules:
        try:
            names = bindings(rule.query)
            used.update(n for n in params if n in names)
            query = apply_params(rule.query, params)
        except KqlLexError as exc:
            errors.append(RuleError(rule.path, f"query cannot be read: {exc}"))
            continue
        except ParamError as exc:
            raise ConfigError(
                f"{PARAM_PREFIX}{exc.name}", f"does not fit rule {rule.id}: {exc}", parameter=exc.name
            ) from None
        except ValueError as exc:  # control characters in a value
            bad = next((n for n in params if n in names), "?")
            raise ConfigError(f"{PARAM_PREFIX}{bad}", str(exc), parameter=bad) from None
        active, stale = excl.split_by_expiry([*rule.exclusions, *by_rule.get(rule.id, [])], today)
        prepared.append(PreparedRule(rule, excl.apply(query, active), tuple(stale)))
    for name in sorted(set(params) - used):
        holders = [e.path for e in failed if _binds(e.path, name)]
        if not holders:
            raise ConfigError(
                f"{PARAM_PREFIX}{name}", f"names no top-level `let {name} = ...;` binding in any rule", parameter=name
            )
        if warnings is not None:
            warnings.append(
                f"{PARAM_PREFIX}{name} applies to no loaded rule: its `let {name}` is in "
                f"{', '.join(sorted(set(holders)))}, which failed to load (see SKIPPED)"
            )
    return prepared, errors


def _binds(path: str, name: str) -> bool:
    """Whether a file that failed to load has a `let <name> =` anywhere: it did not parse, so a text search is
    all there is (a false match only turns a config error into a warning about a file that is reported anyway)."""
    try:
        with open(path, "rb") as handle:
            text = handle.read(MAX_FILE_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return False
    return re.search(rf"\blet\s+{re.escape(name)}\s*=", text) is not None
