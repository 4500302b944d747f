"""Dedupe in one place (shared.runtime.hits): identity, collapse, and the workbench using the detector's own."""

from __future__ import annotations

import pytest

from shared.errors import RuleError
from shared.rules.loader import parse_rule
from shared.runtime.hits import collapse, identity
from shared.workbench.engine import EngineResult
from shared.workbench.hunt import detector_hits

BASE = "id: 5d1c2f0e-9a57-4c4e-8d59-2f6b3e1a7c09\nname: x\nseverity: Low\nquery: EmailEvents\n"
COLUMNS = ["NetworkMessageId", "RecipientEmailAddress", "DeliveryAction"]


def test_one_hit_per_identity_the_latest_row_in_first_seen_order() -> None:
    rule = parse_rule(BASE, "rules/x.yaml")
    rows = [
        {"NetworkMessageId": "m1", "RecipientEmailAddress": "a@contoso.com", "DeliveryAction": "Delivered"},
        {"NetworkMessageId": "m2", "RecipientEmailAddress": "a@contoso.com", "DeliveryAction": "Delivered"},
        {"NetworkMessageId": "m1", "RecipientEmailAddress": "a@contoso.com", "DeliveryAction": "Junked"},
    ]
    key, by_key = collapse(rule, COLUMNS, [], rows)
    assert key == ("NetworkMessageId", "RecipientEmailAddress")
    assert list(by_key.values()) == [rows[2], rows[1]]
    assert list(by_key) == [identity(rows[0], key), identity(rows[1], key)]


def test_preview_refuses_a_realert_key_the_query_does_not_return_as_the_detector_does() -> None:
    rule = parse_rule(BASE + "kqlwatch:\n  realert:\n    key: [SenderIPv4]\n    window: 1h\n", "rules/x.yaml")
    rows = [{"NetworkMessageId": "m1", "RecipientEmailAddress": "a@contoso.com", "DeliveryAction": "Delivered"}]
    with pytest.raises(
        RuleError, match=r"dedupe/realert key names column\(s\) the query does not return: \['SenderIPv4'\]"
    ):
        collapse(rule, COLUMNS, [], rows)  # what a run does with this rule
    result = EngineResult(COLUMNS, ["string"] * 3, [tuple(r.values()) for r in rows])
    with pytest.raises(
        RuleError, match=r"dedupe/realert key names column\(s\) the query does not return: \['SenderIPv4'\]"
    ):
        detector_hits(rule, result)  # `kqlwatch preview`/`hunt --hits`: the same refusal, not cards a run never posts
