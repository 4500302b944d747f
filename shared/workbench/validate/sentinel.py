"""The Sentinel-specific field checks: tactics, techniques, data connectors, entity mappings, custom details,
event grouping and suppression."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.workbench.validate.model import _Checked, _duration, _is_text, _list_of_text, _mapping
from shared.workbench.validate.reference import (
    _COLUMN,
    _DETAIL_KEY,
    _TACTIC_BY_NORMAL,
    _TECHNIQUE,
    AGGREGATIONS,
    CONNECTOR_IDS,
    ENTITY_IDENTIFIERS,
    MAX_SUPPRESSION,
    MIN_DURATION,
    TACTICS,
    _normalise,
    technique_tactics,
)

if TYPE_CHECKING:
    pass


def _check_tactics(c: _Checked) -> set[str]:
    """Report unknown tactics; return the rule's tactics, misspellings mapped to the name they were meant as."""
    tactics: set[str] = set()
    for name, node in _list_of_text(c, "tactics"):
        if name in TACTICS:
            tactics.add(name)
            continue
        meant = _TACTIC_BY_NORMAL.get(_normalise(name))
        if meant:
            tactics.add(meant)
            c.error(f"unknown tactic {name!r}: Sentinel spells it {meant!r}", "tactic", node)
        else:
            c.error(f"unknown tactic {name!r} (known: {', '.join(TACTICS)})", "tactic", node)
    return tactics


def _check_techniques(c: _Checked, tactics: set[str]) -> None:
    known = technique_tactics()
    for technique, node in _list_of_text(c, "relevantTechniques"):
        if not _TECHNIQUE.match(technique):
            c.error(f"technique {technique!r} is not an ATT&CK id like T1566 or T1566.001", "technique", node)
            continue
        base = technique.split(".")[0]
        if base not in known:
            c.warning(f"technique {technique} is not in kqlwatch's ATT&CK table (shared/schemas/"
                      "mitre_techniques.json); its tactics were not checked", "technique", node)  # fmt: skip
            continue
        if not tactics.intersection(known[base]):
            needs = " or ".join(known[base])
            c.error(f"technique {technique} belongs to {needs}; add {'it' if len(known[base]) == 1 else 'one'} "
                    "to tactics", "technique-tactic", node)  # fmt: skip


def _check_connectors(c: _Checked) -> None:
    import yaml

    node = c.shaped(
        "requiredDataConnectors",
        yaml.SequenceNode,
        "'requiredDataConnectors' must be a list of {connectorId, dataTypes}",
        "type",
    )
    if node is None:
        return
    for item in node.value:
        fields = _mapping(item)
        connector = fields.get("connectorId")
        if connector is None or not _is_text(connector[1]):
            c.error("each requiredDataConnectors entry needs a connectorId", "connector", item)
            continue
        data_types = fields.get("dataTypes")
        if data_types is None or not isinstance(data_types[1], yaml.SequenceNode):
            c.error("each requiredDataConnectors entry needs a dataTypes list", "connector", item)
        connector_id = connector[1].value
        if connector_id not in CONNECTOR_IDS:
            c.warning(f"data connector id {connector_id!r} is not one kqlwatch knows", "connector", connector[1])


def _check_entities(c: _Checked) -> None:
    import yaml

    node = c.shaped("entityMappings", yaml.SequenceNode, "'entityMappings' must be a list", "entity")
    if node is None:
        return
    if not 1 <= len(node.value) <= 5:
        c.error(f"entityMappings has {len(node.value)} entries; Sentinel allows 1 to 5", "entity", node)
    for mapping in node.value:
        fields = _mapping(mapping)
        entity = fields.get("entityType")
        entity_type = entity[1].value if entity and _is_text(entity[1]) else None
        if entity_type is None:
            c.error("each entityMappings entry needs an entityType", "entity", mapping)
        elif entity_type not in ENTITY_IDENTIFIERS:
            c.error(f"entityType {entity_type!r} is not one of {', '.join(ENTITY_IDENTIFIERS)}", "entity",
                    entity[1] if entity else mapping)  # fmt: skip
        field_list = fields.get("fieldMappings")
        if field_list is None or not isinstance(field_list[1], yaml.SequenceNode):
            c.error("each entityMappings entry needs a fieldMappings list", "entity", mapping)
            continue
        items = field_list[1].value
        if not 1 <= len(items) <= 3:
            c.error(f"fieldMappings has {len(items)} entries; Sentinel allows 1 to 3", "entity", field_list[1])
        spec = ENTITY_IDENTIFIERS.get(entity_type or "")
        used: set[str] = set()
        for item in items:
            pair = _mapping(item)
            identifier = pair.get("identifier")
            column = pair.get("columnName")
            if column is None or not _is_text(column[1]) or not column[1].value:
                c.error("each fieldMappings entry needs a columnName", "entity", item)
            elif not _COLUMN.match(column[1].value):
                c.error(f"columnName {column[1].value!r} must be a column name (letters, digits, _)", "entity",
                        column[1])  # fmt: skip
            if identifier is None or not _is_text(identifier[1]):
                c.error("each fieldMappings entry needs an identifier", "entity", item)
                continue
            name = identifier[1].value
            if spec and name not in spec[0]:
                c.error(f"identifier {name!r} is not valid for entity type {entity_type} (valid: "
                        f"{', '.join(spec[0])})", "entity", identifier[1])  # fmt: skip
            elif name in used:
                c.error(f"identifier {name!r} is mapped twice in this entity", "entity", identifier[1])
            used.add(name)
        if spec and used and not any(set(combo) <= used for combo in spec[1]):
            combos = "; ".join(" + ".join(combo) for combo in spec[1])
            c.error(f"the {entity_type} mapping needs one of these identifiers: {combos}", "entity", mapping)


def _check_custom_details(c: _Checked) -> None:
    import yaml

    node = c.shaped(
        "customDetails", yaml.MappingNode, "'customDetails' must be a mapping of name: column", "custom-details"
    )
    if node is None:
        return
    if len(node.value) > 20:
        c.error(f"customDetails has {len(node.value)} entries; Sentinel allows 20", "custom-details", node)
    for key, value in node.value:
        if not _is_text(key) or not _DETAIL_KEY.match(key.value) or len(key.value) > 20:
            c.error(f"customDetails name {getattr(key, 'value', key)!r} must start with a letter, use only letters, "
                    "digits and _, and have at most 20 characters", "custom-details", key)  # fmt: skip
        if not _is_text(value) or not _COLUMN.match(value.value):
            c.error(f"customDetails value {getattr(value, 'value', value)!r} must be a column name", "custom-details",
                    value)  # fmt: skip


def _check_grouping_and_suppression(c: _Checked) -> None:
    grouping = c.doc.get("eventGroupingSettings")
    if grouping is not None:
        kind = grouping.get("aggregationKind") if isinstance(grouping, dict) else None
        if kind not in AGGREGATIONS:
            c.error(f"eventGroupingSettings.aggregationKind must be one of {', '.join(AGGREGATIONS)}", "grouping",
                    c.node("eventGroupingSettings"))  # fmt: skip
    enabled = c.doc.get("suppressionEnabled")
    if enabled is not None and not isinstance(enabled, bool):
        c.error("suppressionEnabled must be true or false", "suppression", c.node("suppressionEnabled"))
    suppression = _duration(c, "suppressionDuration")
    if suppression is not None and enabled is True and not MIN_DURATION <= suppression <= MAX_SUPPRESSION:
        c.error("suppressionDuration must be from 5m to 24h", "suppression", c.node("suppressionDuration"))
