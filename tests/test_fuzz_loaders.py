"""Fuzz (issue 10): random YAML, JSON and CSV - random structures, types, encodings, junk bytes - through every
loader and the run/test/hunt/validate entry points. The only acceptable failure is the project's own located
error (a KqlwatchError naming the file, or a command's exit code with a message naming it): never a traceback."""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Callable
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.cli import main
from shared.datafiles import DataSpec, load_files
from shared.detector import prepare_rules
from shared.engine import Engine
from shared.errors import KqlwatchError, RuleError
from shared.rules import load_exclusion_file, load_exclusion_files, load_rule, load_rules
from shared.ruletest import run_files
from shared.validate import validate_files
from tests.conftest import SEED_RULE

SEED: dict[str, Any] = yaml.safe_load(SEED_RULE.read_text(encoding="utf-8"))
SEED["kqlwatch"].pop("tests")  # the fuzzed file's own cases would run the engine each example: fuzzed below

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.dates(),
    st.datetimes(timezones=st.just(timezone.utc)),
    st.sampled_from(["5m", "99999999999d", "PT1H", "-1h", "0m", "2026-13-45", "gt", "", "\x00", "\ud800"[:0]]),
)
keys = st.one_of(st.text(max_size=12), st.integers(), st.booleans(), st.none(), st.sampled_from(list(SEED)))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)
# Paths into the seed rule to overwrite: its fields, its kqlwatch section, and keys it does not have.
TARGETS: list[tuple[Any, ...]] = [(k,) for k in SEED] + [
    ("kqlwatch", k) for k in ("dedupeKey", "tests", "exclusions", "realert", "route")
]
TARGETS += [
    ("entityMappings", 0, "fieldMappings"),
    ("alertDetailsOverride",),
    ("customDetails",),
    ("eventGroupingSettings", "aggregationKind"),
    ("suppressionDuration",),
    ("kqlwatch", 1),
]


def mutate(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    copy: Any = json.loads(json.dumps(doc))
    node = copy
    for step in path[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(step, {})
        elif isinstance(node, list) and isinstance(step, int) and step < len(node):
            node = node[step]
        else:
            return dict(copy)
    if isinstance(node, dict):
        node[path[-1]] = value
    return dict(copy)


def dump(value: Any) -> str:
    try:
        return yaml.safe_dump(value, allow_unicode=True, sort_keys=False)
    except (yaml.YAMLError, TypeError, ValueError):
        return repr(value)  # not representable: the repr is junk YAML, which is fine too


def encode(text: str, how: str) -> bytes:
    if how == "utf-8":
        return text.encode("utf-8", errors="surrogatepass")
    if how == "utf-16":
        return text.encode("utf-16", errors="surrogatepass")
    if how == "latin-1":
        return text.encode("latin-1", errors="replace")
    return b"\xef\xbb\xbf" + text.encode("utf-8", errors="replace")  # with a byte-order mark


rule_texts = st.one_of(
    st.builds(lambda p, v: dump(mutate(SEED, p, v)), st.sampled_from(TARGETS), values),
    st.builds(dump, values),
    st.text(max_size=300),
    st.builds(lambda v: dump({**SEED, "kqlwatch": {**SEED["kqlwatch"], "tests": v}}), values),
)
rule_files = st.one_of(
    st.builds(encode, rule_texts, st.sampled_from(["utf-8", "utf-8", "utf-16", "latin-1", "bom"])),
    st.binary(max_size=300),
)

FUZZ = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


def _command(capsys: pytest.CaptureFixture[str], argv: list[str], path: Path) -> None:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code in (0, 1, 2), (argv, code)
    assert "Traceback" not in out + err, (argv, out, err)
    if code:
        assert str(path) in out + err or path.name in out + err, (argv, out, err)  # located


@FUZZ
@given(content=rule_files)
def test_random_rule_files_give_located_errors_only(
    content: bytes, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        rules = Path(folder)
        path = rules / "fuzzed.yaml"
        path.write_bytes(content)
        monkeypatch.setenv("KQLWATCH_RULES_DIR", str(rules))
        try:
            load_rule(path)
        except RuleError as exc:
            assert exc.path == str(path)
        # `run`: everything it does before the first network call
        loaded = load_rules(rules)
        exclusions, _ = load_exclusion_files(rules)
        prepare_rules(loaded.rules, {}, exclusions)  # parameters: test_hostile_loaders.py
        [result] = validate_files([path], kql=False)
        assert result.path == str(path)
        out = io.StringIO()
        run_files([(path, None)], out)
        _command(capsys, ["validate", "--no-kql", str(path)], path)
        _command(capsys, ["hunt", str(path), "--explain"], path)
        _command(capsys, ["test", str(path)], path)


@FUZZ
@given(content=rule_files)
def test_random_exclusion_files_give_located_errors_only(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "exclusions.yaml"
        path.write_bytes(content)
        try:
            load_exclusion_file(path)
        except RuleError as exc:
            assert exc.path == str(path)
        _, errors = load_exclusion_files(Path(folder))
        assert all(e.path == str(path) for e in errors)


row_values = st.one_of(
    scalars.map(lambda v: v.isoformat() if isinstance(v, (date, datetime)) else v),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
column_names = st.sampled_from(
    [
        "TimeGenerated",
        "NetworkMessageId",
        "Subject",
        "AttachmentCount",
        "AuthenticationDetails",
        "IsFirstContact",
        "To",
        "weird col",
        "",
    ]
)
records = st.one_of(st.dictionaries(column_names, row_values, max_size=5), row_values)


def _jsonl(rows: list[Any]) -> bytes:
    return "".join(json.dumps(r, default=str) + "\n" for r in rows).encode("utf-8")


def _csv(rows: list[Any]) -> bytes:
    import csv

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        writer.writerow(list(row.keys()) + list(map(str, row.values())) if isinstance(row, dict) else [str(row)])
    return buffer.getvalue().encode("utf-8")


def _array(rows: list[Any]) -> bytes:
    return json.dumps(rows, default=str).encode("utf-8")


writers: dict[str, Callable[[list[Any]], bytes]] = {".jsonl": _jsonl, ".csv": _csv, ".json": _array}
built = st.tuples(st.sampled_from([".jsonl", ".json"]), st.lists(records, max_size=6))
junk = st.tuples(st.sampled_from([".jsonl", ".csv", ".json", ".jsonl.gz"]), st.binary(max_size=200))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(built, st.tuples(st.just(".csv"), st.lists(records, max_size=6)), junk))
def test_random_data_files_give_located_errors_only(data: tuple[str, Any]) -> None:
    """No traceback, and no silent loss: a JSON file of objects loads every one of them; a file holding
    anything else is refused with its name."""
    suffix, content = data
    rows = content if isinstance(content, list) else None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"EmailEvents{suffix}"
        path.write_bytes(writers[suffix](content) if rows is not None else content)
        with Engine() as engine:
            try:
                [loaded] = load_files(engine, [DataSpec("EmailEvents", path)], "EmailEvents | take 1")
            except KqlwatchError as exc:
                assert str(path) in str(exc), str(exc)
                return
        if rows is not None and suffix != ".csv":
            rows = _as_read(path.read_text(encoding="utf-8"), rows)
            assert all(isinstance(r, dict) for r in rows), "a record that is not an object loaded silently"
            assert loaded.table.rows == len(rows)


def _as_read(text: str, rows: list[Any]) -> list[Any]:
    """JSON lines holding one array (`[]`, `[{...}]`) is a JSON array file: its elements are the records."""
    try:
        whole = json.loads(text)
    except ValueError:
        return rows
    return whole if isinstance(whole, list) else rows
