"""KQLWATCH_PARAM_<Name>: values replace `let` bindings as data and can never change the query's structure."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import ConfigError
from shared.rules.kql import Token, string_literal, string_value, tokenize, top_level_lets
from shared.rules.loader import load_rule
from shared.rules.params import ParamError, apply_params
from shared.rules.prepare import prepare_rules
from tests.paths import SEED_RULE

SEED_QUERY = load_rule(SEED_RULE).query
PIECES = [
    *"abc.,'\"|;/\\\n\r\t()[]{}`@~=- *",
    "//",
    "\u2018",
    "\u2019",
    "\u201c",
    "\u201d",
    "```",
    "let ",
    "or true",
    "\x00",
    "\u2028",
]
HOSTILE = st.lists(st.sampled_from(PIECES), max_size=30).map("".join)


def _shape(tokens: list[Token]) -> list[tuple[str, str]]:
    return [(t.kind, t.text) for t in tokens]


def _structure_outside(query: str, name: str) -> tuple[list[tuple[str, str]], list[Token]]:
    """Tokens before and after the binding's value, and the value's own tokens."""
    binding = top_level_lets(query)[name]
    tokens = tokenize(query)
    outside = [t for t in tokens if t.end <= binding.value_start or t.start >= binding.value_end]
    return _shape(outside), list(binding.value_tokens)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(HOSTILE, max_size=5))
def test_array_parameter_values_stay_string_literals(values: list[str]) -> None:
    value = ",".join(values)
    try:
        final = apply_params(SEED_QUERY, {"SenderDomains": value})
    except ValueError:
        return  # control characters are refused (tested below), never passed through
    before, _ = _structure_outside(SEED_QUERY, "SenderDomains")
    after, value_tokens = _structure_outside(final, "SenderDomains")
    assert after == before
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        assert [t.text for t in value_tokens] == ["dynamic", "(", "[", "]", ")"]
        return
    assert [t.text for t in value_tokens[:2]] == ["pack_array", "("] and value_tokens[-1].text == ")"
    inner = value_tokens[2:-1]
    assert [t.kind for t in inner[::2]] == ["string"] * len(items)
    assert [t.text for t in inner[1::2]] == [","] * (len(items) - 1)


@settings(max_examples=300, deadline=None)
@given(value=HOSTILE)
def test_scalar_parameter_values_stay_one_string_literal(value: str) -> None:
    query = 'let Marker = "x";\nEmailEvents | where Subject == Marker | take 1'
    try:
        final = apply_params(query, {"Marker": value})
    except ValueError:
        return
    before, _ = _structure_outside(query, "Marker")
    after, tokens = _structure_outside(final, "Marker")
    assert after == before
    assert [t.kind for t in tokens] == ["string"]


def test_comma_list_becomes_array_and_string_stays_string() -> None:
    query = "let Domains = dynamic(['a']);\nlet Name = 'x';\nlet Limit = 5;\nT | take Limit"
    final = apply_params(query, {"Domains": "contoso.com, fabrikam.fr", "Name": "a,b", "Limit": "10"})
    assert 'let Domains = pack_array("contoso.com", "fabrikam.fr");' in final
    assert 'let Name = "a,b";' in final
    assert "let Limit = 10;" in final
    with pytest.raises(ParamError, match="Limit is a number"):
        apply_params(query, {"Limit": "10; T | take 1000000"})


def test_let_inside_strings_and_comments_is_not_a_binding() -> None:
    query = "// let Hidden = 1;\nlet Real = 'a; let Fake = 2;';\nT"
    assert set(top_level_lets(query)) == {"Real"}


def test_parameter_naming_no_binding_is_a_configuration_error() -> None:
    rules = [load_rule(SEED_RULE)]  # the seed alone: rules/ holds the pack too (issue 16)
    with pytest.raises(ConfigError) as caught:
        prepare_rules(rules, {"SenderDomain": "contoso.com"})
    assert caught.value.setting == "KQLWATCH_PARAM_SenderDomain"


def test_control_characters_in_a_value_are_a_configuration_error() -> None:
    rules = [load_rule(SEED_RULE)]  # the seed alone: rules/ holds the pack too (issue 16)
    with pytest.raises(ConfigError, match="KQLWATCH_PARAM_SenderDomains"):
        prepare_rules(rules, {"SenderDomains": "contoso.com\x00"})


@settings(max_examples=150, deadline=None)
@given(value=HOSTILE)
def test_a_string_literal_means_exactly_the_value(value: str) -> None:
    """Kusto (here, the offline engine) reads the literal back as the very value the user set."""
    from shared.rules.kql import string_literal
    from shared.workbench.engine import Engine

    try:
        literal = string_literal(value)
    except ValueError:
        assert any(ch in value for ch in "\x00\u2028")
        return
    with Engine() as engine:
        result = engine.query(f"print v = {literal}")
    assert result.rows == [(value,)]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\u2028\u2029")))
def test_string_value_reads_back_every_literal_string_literal_writes(value: str) -> None:
    [token] = tokenize(string_literal(value))
    assert string_value(token.text) == value


def test_string_value_reads_every_kql_literal_form() -> None:
    forms = {'"a\\"b\\\\c\\n"': 'a"b\\c\n', "@'it''s'": "it's", 'h@"x""y"': 'x"y', "```a\nb```": "a\nb"}
    assert {text: string_value(tokenize(text)[0].text) for text in forms} == forms
