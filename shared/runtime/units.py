"""Run units (issue 15, many workspaces): a rule runs once per workspace it reads, each with its own windows,
state and dedupe ledger.

The state store is keyed by rule id (its partition). So that a second workspace needs no change there, a unit
for any workspace but the default one (the first of KQLWATCH_WORKSPACE_ID) runs under a derived id,
uuid5(rule id, workspace id): stable, a GUID like any rule id, and distinct per workspace. The default
workspace keeps the rule's own id, so existing state carries on. The unit's rule name says which workspace,
so its cards, notices and `kqlwatch status` name it. A Defender-sourced rule is tenant-wide: one unit; so is a
rule with kqlwatch.union (one cross-workspace query, its rows' TenantId naming their workspaces).
A queue message for a unit (issue 14's fan-out) carries the rule id and the workspace; the state id follows."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

from shared.rules.fields import DEFENDER
from shared.rules.model import Rule
from shared.rules.prepare import PreparedRule
from shared.runtime.settings import Settings


@dataclass(frozen=True)
class RunUnit:
    prepared: PreparedRule  # its rule's id is the unit's state id; its name names a non-default workspace
    workspace: str  # "" for a Defender-sourced rule
    rule_id: str  # the rule's own id (the file's)

    @property
    def rule(self) -> Rule:
        return self.prepared.rule


def state_id(rule_id: str, workspace: str, default_workspace: str) -> str:
    """Where a unit's state lives: the rule id for the default workspace, else uuid5(rule id, workspace)."""
    if not workspace or workspace == default_workspace:
        return rule_id
    return str(uuid.uuid5(uuid.UUID(rule_id), workspace.lower()))


def run_units(prepared: list[PreparedRule], settings: Settings) -> list[RunUnit]:
    units: list[RunUnit] = []
    for item in prepared:
        rule = item.rule
        if settings.source_of(rule.source) == DEFENDER:
            units.append(RunUnit(item, "", rule.id))
            continue
        if rule.union:
            # kqlwatch.union: ONE unit under the rule's own id; its query goes to the first workspace with the
            # others as additional_workspaces (planning.union_workspaces), and each row's TenantId names its own.
            first = (rule.workspaces or settings.workspace_ids or ("",))[0]
            units.append(RunUnit(item, first, rule.id))
            continue
        for workspace in rule.workspaces or settings.workspace_ids or ("",):
            sid = state_id(rule.id, workspace, settings.workspace_id)
            named = rule if sid == rule.id else replace(rule, id=sid, name=f"{rule.name} (workspace {workspace})")
            units.append(RunUnit(replace(item, rule=named), workspace, rule.id))
    return units
