#!/usr/bin/env python3
"""Run the seed rule over samples/EmailEvents.jsonl with the offline engine and count hits per scenario.

    .venv/bin/python samples/scenario_counts.py                                   # rule defaults
    .venv/bin/python samples/scenario_counts.py --param TriggerResults=temperror,permerror

Prints a Markdown table (the one in samples/README.md). Each hit is attributed to a scenario by
`generate_emailevents.classify`, which looks only at EmailEvents columns. The engine's answer is also checked
against a plain-Python reading of the rule's logic; a disagreement is reported and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from generate_emailevents import ACCEPTED_DOMAINS, OUTPUT, SCENARIOS, Row, classify

from shared.rules.loader import Rule, load_rules
from shared.rules.params import apply_params, split_list
from shared.schemas import table_schema
from shared.workbench.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
SEED_RULE_ID = "a256f4ea-deec-4fcd-bdf3-63987638eed9"


def seed_rule(rules_dir: Path) -> Rule:
    for rule in load_rules(rules_dir).rules:
        if rule.id == SEED_RULE_ID:
            return rule
    raise SystemExit(f"the seed rule {SEED_RULE_ID} is not in {rules_dir}")


def reference_hits(rows: Sequence[Row], domains: Sequence[str], triggers: Sequence[str]) -> Counter[str]:
    """The seed rule's logic in Python, with Kusto's semantics: `==` case-sensitive, `in~` not, a missing
    string is "", and a property of anything but a JSON object is empty."""
    wanted_domains = {d.lower() for d in domains}
    wanted_results = {t.lower() for t in triggers}
    hits: Counter[str] = Counter()
    for row in rows:
        if row.get("EmailDirection", "") != "Inbound":
            continue
        if str(row.get("SenderMailFromDomain", "")).lower() not in wanted_domains:
            continue
        try:
            details = json.loads(row.get("AuthenticationDetails", ""))
        except ValueError:
            details = None
        if not isinstance(details, dict):
            details = {}
        spf, dmarc = (str(details.get(k, "")).lower() for k in ("SPF", "DMARC"))
        if dmarc in wanted_results or spf in wanted_results:
            hits[classify(row)] += 1
    return hits


def auth_shape(text: str) -> str:
    """How AuthenticationDetails is written: the shapes a parser must survive."""
    if text == "":
        return "empty string"
    try:
        details = json.loads(text)
    except ValueError:
        return "malformed (not JSON)"
    if not isinstance(details, dict):
        return "JSON, not an object"
    keys = {"SPF", "DKIM", "DMARC", "CompAuth"}
    if not set(details) <= keys:
        return "unexpected keys (e.g. lower-case spf)"
    if set(details) != keys:
        return "some keys missing"
    if any(str(v) != str(v).lower() for v in details.values()):
        return "upper/mixed-case values"
    return "all four keys, lower-case"


def has_temperror(row: Row) -> bool:
    """SPF or DMARC says temperror in any letter case, in a readable AuthenticationDetails."""
    try:
        details = json.loads(row.get("AuthenticationDetails", ""))
    except ValueError:
        return False
    if not isinstance(details, dict):
        return False
    return any(str(details.get(k, "")).lower() == "temperror" for k in ("SPF", "DMARC"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=OUTPUT)
    parser.add_argument("--rules", type=Path, default=ROOT / "rules")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a rule parameter")
    args = parser.parse_args(argv)

    params = dict(p.split("=", 1) for p in args.param)
    rule = seed_rule(args.rules)
    query = apply_params(rule.query, params)
    schema = table_schema("EmailEvents")
    assert schema is not None
    with args.data.open(encoding="utf-8") as handle:
        rows: list[Row] = [json.loads(line) for line in handle]

    with Engine() as engine:
        engine.load_rows("EmailEvents", rows, schema)
        result = engine.query(query)
    hit_rows: list[dict[str, Any]] = [dict(zip(result.columns, values, strict=True)) for values in result.rows]
    engine_hits = Counter(classify(row) for row in hit_rows)
    expected = reference_hits(
        rows,
        split_list(params.get("SenderDomains", ",".join(ACCEPTED_DOMAINS))),
        split_list(params.get("TriggerResults", "temperror")),
    )

    totals = Counter(classify(row) for row in rows)
    messages: dict[str, set[str]] = {}
    for row in rows:
        messages.setdefault(classify(row), set()).add(row["NetworkMessageId"])
    temperror = Counter(classify(row) for row in rows if has_temperror(row))
    pairs: dict[str, set[tuple[str, str]]] = {}
    for row in hit_rows:
        pairs.setdefault(classify(row), set()).add((row["NetworkMessageId"], row["RecipientEmailAddress"]))
    print(f"Seed rule {rule.name!r} over {args.data.name}: {len(rows):,} rows, {len(result.rows)} hits")
    if params:
        print("parameters: " + ", ".join(f"{k}={v}" for k, v in params.items()))
    print()
    print("| scenario | rows | messages | rows with SPF or DMARC temperror (any case) | rule hits (rows) | "
          "hits after dedupe (message, recipient) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for scenario in SCENARIOS:
        print(
            f"| {scenario} | {totals[scenario]} | {len(messages.get(scenario, ()))} | {temperror[scenario]} | "
            f"{engine_hits[scenario]} | {len(pairs.get(scenario, ()))} |"
        )
    print(
        f"| **total** | {sum(totals.values())} | {sum(len(m) for m in messages.values())} | "
        f"{sum(temperror.values())} | {len(result.rows)} | {sum(len(p) for p in pairs.values())} |"
    )

    shapes = Counter(auth_shape(row.get("AuthenticationDetails", "")) for row in rows)
    shape_hits = Counter(auth_shape(row.get("AuthenticationDetails", "")) for row in hit_rows)
    print()
    print("| AuthenticationDetails shape | rows | rule hits |")
    print("|---|---:|---:|")
    for shape, count in shapes.most_common():
        print(f"| {shape} | {count} | {shape_hits[shape]} |")

    if engine_hits != expected:
        print(f"\nMISMATCH: engine {dict(engine_hits)} != reference {dict(expected)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
