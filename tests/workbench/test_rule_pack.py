"""Issue 16: the email-authentication rule pack in rules/ - valid Sentinel rules, `kqlwatch validate` clean,
`kqlwatch test` green, each with positive, negative and false-positive cases, sharing the seed's parameters
where they mean the same, and run by the demo over the sample data with DNS evidence on its cards."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.rules.loader import load_rules
from shared.rules.params import bindings
from shared.rules.prepare import prepare_rules
from shared.workbench.cli import main
from shared.workbench.demo import demo
from tests.conftest import ROOT, SEED_RULE

RULES = ROOT / "rules"
PACK = sorted(p for p in RULES.glob("*.yaml") if not p.name.endswith("exclusions.yaml"))
CORPUS_INDEX = ROOT.parent / "shared" / "corpus" / "sentinel-email-rules" / "INDEX.tsv"
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SENTINEL_FIELDS = (
    "id",
    "name",
    "description",
    "severity",
    "queryFrequency",
    "queryPeriod",
    "triggerOperator",
    "triggerThreshold",
    "tactics",
    "relevantTechniques",
    "entityMappings",
    "version",
    "kind",
    "query",
)


def doc(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_the_pack_has_at_least_five_rules_beyond_the_seed() -> None:
    assert SEED_RULE in PACK and len(PACK) >= 6
    ids = [doc(p)["id"] for p in PACK]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("path", PACK, ids=lambda p: p.name)
def test_each_rule_is_a_complete_scheduled_sentinel_rule(path: Path) -> None:
    rule = doc(path)
    missing = [f for f in SENTINEL_FIELDS if f not in rule]
    assert not missing, missing
    assert GUID.match(rule["id"]) and rule["kind"] == "Scheduled"
    assert rule["tactics"] and rule["relevantTechniques"] and rule["entityMappings"]


@pytest.mark.parametrize("path", PACK, ids=lambda p: p.name)
def test_each_rule_has_positive_negative_and_false_positive_cases_and_tuning_notes(path: Path) -> None:
    rule = doc(path)
    cases = rule["kqlwatch"]["tests"]
    positive = [c for c in cases if c["expect"].get("rows") or c["expect"].get("count", 0) > 0]
    negative = [c for c in cases if c["expect"].get("count") == 0 or c["expect"].get("rows") == []]
    false_positive = [c for c in cases if c["name"].startswith("FP ")]
    assert positive and negative and len(false_positive) >= 2, path.name
    description = rule["description"].lower()
    assert "false positive" in description and ("tuning" in description or "exclude" in description)


def test_kqlwatch_validate_is_clean(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code = main(["validate", "rules"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert re.search(rf"validate: {len(PACK)} files, {len(PACK)} valid, 0 with errors, 0 warnings", out), out


def test_kqlwatch_test_is_green_for_every_rule(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("KQLWATCH_RULES_DIR", raising=False)
    code = main(["test"])
    out = capsys.readouterr().out
    assert code == 0 and re.search(r"\n\d+ passed, 0 failed\n?$", out), out
    for path in PACK:
        assert f"PASSED rules/{path.name}::" in out, path.name


def test_public_rules_are_credited_with_an_id_from_the_corpus() -> None:
    credited = {p.name: re.findall(r"id ([0-9a-f-]{36})", doc(p)["description"]) for p in PACK}
    credited = {name: ids for name, ids in credited.items() if ids}
    assert len(credited) >= 2, credited
    if not CORPUS_INDEX.is_file():
        pytest.skip("the public rule corpus is not beside this checkout")
    known = {line.split("\t")[3] for line in CORPUS_INDEX.read_text(encoding="utf-8").splitlines()[1:]}
    for name, ids in credited.items():
        assert set(ids) <= known, name


def test_shared_parameters_mean_the_same_in_every_rule() -> None:
    """One KQLWATCH_PARAM_SenderDomains sets every rule's accepted domains; TriggerResults stays the seed's own,
    so widening the seed to permerror cannot turn another rule into a second temperror rule."""
    rules = load_rules(RULES).rules
    with_domains = [r for r in rules if "SenderDomains" in bindings(r.query)]
    assert len(with_domains) >= 4
    defaults = {
        r.query[bindings(r.query)["SenderDomains"].value_start : bindings(r.query)["SenderDomains"].value_end]
        for r in with_domains
    }
    assert defaults == {"pack_array('contoso.com', 'fabrikam.fr')"}
    assert [r.path for r in rules if "TriggerResults" in bindings(r.query)] == [str(SEED_RULE)]
    prepared, errors = prepare_rules(rules, {"SenderDomains": "woodgrovebank.com"})
    assert not errors
    for p in prepared:
        if p.rule in with_domains:
            assert '"woodgrovebank.com"' in p.query and "'contoso.com'" not in p.query, p.rule.path


def test_the_demo_runs_the_pack_and_shows_both_dns_interpretations(tmp_path: Path) -> None:
    out = io.StringIO()
    assert demo(out_dir=tmp_path, stream=out) == 0
    text = out.getvalue()
    for path in PACK:
        assert re.search(rf"^ok +{re.escape(doc(path)['name'])}: \d+ rows", text, re.MULTILINE), path.name
    assert "records resolve now: the failure was transient" in text  # contoso.com, from the demo's DNS stand-in
    assert "records do not resolve now: this domain's DNS is failing" in text  # fabrikam.fr: SERVFAIL
    permerror = doc(RULES / "accepted-domain-auth-permerror.yaml")["name"]
    assert re.search(rf"^ok +{re.escape(permerror)}: 22 rows, 22 new, 22 delivered", text, re.MULTILINE)
