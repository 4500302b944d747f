"""`kqlwatch backtest`: the rule's schedule replayed through the production Detector, checked against counts made
here in plain Python over the rows (not the engine, not the detector), on the bundled sample day and on a
generated 30-day month; and the in-memory state table checked against Azurite doing the same operations."""

from __future__ import annotations

import ipaddress
import json
import math
import random
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.runtime.store import Hit, StateStore, connect
from shared.standins.azurite import Azurite
from shared.workbench.backtest.memtable import FilterError, MemoryTableClient, compile_filter
from shared.workbench.cli import main
from tests.conftest import ROOT, SEED_RULE

SAMPLES = ROOT / "samples" / "EmailEvents.jsonl"
SAMPLE_EXCLUSIONS = ROOT / "docs" / "examples" / "sample-tenant.exclusions.yaml"
SEED_DOMAINS = {"contoso.com", "fabrikam.fr"}
HITS_PER_CARD = 25  # shared/runtime/cards.py: a SingleAlert digest holds 25 hits


def backtest(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str]:
    code = main(["backtest", *argv, "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else {}), err


# --- the independent count -------------------------------------------------------------------------------------


def seed_rule_matches(row: Mapping[str, Any]) -> bool:
    """The seed rule, read off its KQL by hand: inbound, MAIL FROM an accepted domain, DMARC or SPF temperror."""
    raw = row.get("AuthenticationDetails") or "{}"
    try:
        auth = raw if isinstance(raw, dict) else json.loads(raw)
    except ValueError:  # parse_json of text that is not JSON is that text: it has no SPF or DMARC
        auth = {}
    if not isinstance(auth, dict):
        auth = {}
    return (
        row.get("EmailDirection") == "Inbound"
        and str(row.get("SenderMailFromDomain", "")).lower() in SEED_DOMAINS
        and "temperror" in (str(auth.get("DMARC", "")).lower(), str(auth.get("SPF", "")).lower())
    )


def excluded(row: Mapping[str, Any], exclusion: Mapping[str, Any]) -> bool:
    """An exclusions.yaml entry: every condition holds (equals is case-insensitive; cidr by ipaddress)."""
    for condition in exclusion["match"]:
        value = str(row.get(condition["column"]) or "")
        if condition["operator"] == "equals":
            if value.lower() not in {str(v).lower() for v in condition["values"]}:
                return False
        elif condition["operator"] == "cidr":
            try:
                address = ipaddress.ip_address(value)
            except ValueError:
                return False
            if not any(address in ipaddress.ip_network(v) for v in condition["values"]):
                return False
        else:
            raise AssertionError(f"operator {condition['operator']} not modelled here")
    return True


def expected_days(
    rows: Sequence[Mapping[str, Any]],
    start: datetime,
    every: timedelta,
    exclusions: Sequence[Mapping[str, Any]] = (),
) -> dict[str, tuple[int, int]]:
    """day -> (alerts, cards): each (NetworkMessageId, recipient) alerts once, at the first run at or after its
    first matching row arrives (ingested at TimeGenerated), unless an exclusion active on that run's date matches
    it; a run's new hits go out as digests of 25, counted on the day the run closes."""
    per_run: Counter[datetime] = Counter()
    seen: set[tuple[str, str]] = set()
    for row in sorted(rows, key=lambda r: r["TimeGenerated"]):
        if not seed_rule_matches(row):
            continue
        at = row["TimeGenerated"]
        run = start + math.ceil((at - start) / every) * every
        active = [e for e in exclusions if e.get("expires") is None or run.date() <= e["expires"]]
        if any(excluded(row, e) for e in active):
            continue
        key = (row["NetworkMessageId"], row["RecipientEmailAddress"])
        if key not in seen:
            seen.add(key)
            per_run[run] += 1
    days: dict[str, tuple[int, int]] = {}
    for run, count in per_run.items():
        closes = (run - timedelta(microseconds=1)).date().isoformat()  # the midnight run closes the day before
        alerts, cards = days.get(closes, (0, 0))
        days[closes] = (alerts + count, cards + math.ceil(count / HITS_PER_CARD))
    return days


def _rows(path: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for row in rows:
        row["TimeGenerated"] = datetime.fromisoformat(row["TimeGenerated"].replace("Z", "+00:00"))
    return rows


def _reported(report: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """day -> (alerts, alert cards): kqlwatch's own notices (a quiet day's "cannot see") are counted apart."""
    days = {d["day"]: (d["alerts"], d["cards"] - d["notices"]) for d in report["days"]}
    return {day: counts for day, counts in days.items() if any(counts)}


# --- the sample day --------------------------------------------------------------------------------------------


def test_backtest_of_the_sample_day_matches_an_independent_count(capsys: pytest.CaptureFixture[str]) -> None:
    code, report, err = backtest(
        capsys, str(SEED_RULE), "--data", f"EmailEvents={SAMPLES}", "--exclusions", str(SAMPLE_EXCLUSIONS)
    )
    assert code == 0, err
    rows = _rows(SAMPLES)
    start = min(r["TimeGenerated"] for r in rows).replace(minute=0, second=0, microsecond=0)
    exclusions = yaml.safe_load(SAMPLE_EXCLUSIONS.read_text(encoding="utf-8"))["exclusions"]
    expected = expected_days(rows, start, timedelta(minutes=5), exclusions)
    assert _reported(report) == expected
    assert report["totals"]["alerts"] == 12  # samples/README.md: the 12 real attacks, once each
    assert report["totals"]["runs"] == 288 and report["totals"]["failed_runs"] == 0
    # How often each exclusion fired: result rows (not identities) it matches among the rule's rows of the day.
    matching = [r for r in rows if seed_rule_matches(r)]
    assert report["exclusions"] == {e["name"]: sum(excluded(r, e) for r in matching) for e in exclusions}
    assert f"backtest {report['rule']['id']}: 288 runs over 2 days: 12 alerts" in err  # the plain summary line


def test_without_exclusions_the_false_positives_alert_too(capsys: pytest.CaptureFixture[str]) -> None:
    code, report, err = backtest(capsys, str(SEED_RULE), "--data", f"EmailEvents={SAMPLES}", "--no-exclusions")
    assert code == 0, err
    rows = _rows(SAMPLES)
    start = min(r["TimeGenerated"] for r in rows).replace(minute=0, second=0, microsecond=0)
    assert _reported(report) == expected_days(rows, start, timedelta(minutes=5))
    assert report["totals"]["alerts"] > 12 and report["exclusions"] == {}


# --- a generated month -----------------------------------------------------------------------------------------

MONTH_START = datetime(2026, 10, 1, tzinfo=timezone.utc)
EXPIRES = date(2026, 10, 15)  # the partner exclusion stops applying from the 16th


def month_rows(seed: int = 17) -> list[dict[str, Any]]:
    """30 days of mail: noise, accepted-domain temperrors (some repeated as a second EmailEvents row for the same
    message and recipient), and a partner relay the exclusion covers. Rows avoid the ten minutes before each
    6-hourly run, where a run's 5-minute overlap would re-read them on the next run's day."""
    rnd = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for day in range(30):
        for n in range(rnd.randint(20, 60) if day % 7 != 3 else 2):
            offset = timedelta(hours=rnd.randrange(0, 6), minutes=rnd.randrange(0, 350))
            block = rnd.randrange(4) * timedelta(hours=6)
            at = MONTH_START + timedelta(days=day) + block + min(offset, timedelta(hours=5, minutes=49))
            kind = rnd.random()
            domain = rnd.choice(["contoso.com", "Fabrikam.fr", "contoso.com.evil.io", "gmail.com"])
            dmarc = "temperror" if kind < 0.5 else rnd.choice(["pass", "fail", "permerror"])
            ip = "203.0.113.25" if kind < 0.15 else f"198.51.100.{rnd.randrange(1, 250)}"
            row = {
                "TimeGenerated": at,
                "Timestamp": at,
                "NetworkMessageId": f"m-{day}-{n}",
                "RecipientEmailAddress": rnd.choice(["a@contoso.com", "b@contoso.com"]),
                "SenderMailFromDomain": domain,
                "SenderFromDomain": "tailspintoys.com" if kind < 0.15 else domain,
                "SenderFromAddress": f"user{rnd.randrange(5)}@{domain}",
                "SenderIPv4": ip,
                "EmailDirection": rnd.choice(["Inbound", "Inbound", "Inbound", "Intra-org"]),
                "AuthenticationDetails": json.dumps({"SPF": "pass", "DMARC": dmarc}),
                "Subject": f"Invoice {n}",
            }
            rows.append(row)
            if rnd.random() < 0.2:  # the same message's later verdict row: one hit, not two
                rows.append({**row, "TimeGenerated": at + timedelta(minutes=1), "Timestamp": at + timedelta(minutes=1)})
    return rows


def write_month(tmp_path: Path) -> tuple[Path, Path, Path, list[dict[str, Any]]]:
    rows = month_rows()
    data = tmp_path / "EmailEvents.jsonl"
    with data.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(
                json.dumps({**row, "TimeGenerated": _iso(row["TimeGenerated"]), "Timestamp": _iso(row["Timestamp"])})
            )
            out.write("\n")
    rule_doc = yaml.safe_load(SEED_RULE.read_text(encoding="utf-8"))
    rule_doc.update(queryFrequency="6h", queryPeriod="6h")
    rule_doc["kqlwatch"].pop("tests", None)
    rule = tmp_path / "rules" / "seed-6h.yaml"
    rule.parent.mkdir()
    rule.write_text(yaml.safe_dump(rule_doc), encoding="utf-8")
    exclusions = tmp_path / "partner.exclusions.yaml"
    exclusions.write_text(
        yaml.safe_dump(
            {
                "exclusions": [
                    {
                        "rule": rule_doc["id"],
                        "name": "Tailspin partner relay",
                        "reason": "partner relay",
                        "owner": "mail@contoso.com",
                        "expires": EXPIRES.isoformat(),
                        "match": [
                            {"column": "SenderFromDomain", "operator": "equals", "values": ["tailspintoys.com"]},
                            {"column": "SenderIPv4", "operator": "cidr", "values": ["203.0.113.25/32"]},
                        ],
                    }
                ]
            }
        ),
        encoding="utf-8",
    )
    return data, rule, exclusions, rows


def test_backtest_of_a_generated_month_matches_an_independent_count(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data, rule, exclusions, rows = write_month(tmp_path)
    html = tmp_path / "report.html"
    code, report, err = backtest(
        capsys,
        str(rule),
        "--data",
        f"EmailEvents={data}",
        "--exclusions",
        str(exclusions),
        "--from",
        "2026-10-01T00:00:00Z",
        "--days",
        "30",
        "--html",
        str(html),
    )
    assert code == 0, err
    spec = yaml.safe_load(exclusions.read_text(encoding="utf-8"))["exclusions"]
    for item in spec:
        item["expires"] = date.fromisoformat(item["expires"])
    expected = expected_days(rows, MONTH_START, timedelta(hours=6), spec)
    assert _reported(report) == expected
    assert len(report["days"]) == 30 and report["totals"]["runs"] == 120
    # kqlwatch's own notices, as in production: the near-silent days (2 rows) make it say it cannot see, then
    # that rows are back; the exclusion's expiry is announced once, by the first run after it (midnight: the 15th).
    notices = {d["day"]: d["notices"] for d in report["days"] if d["notices"]}
    assert notices.pop("2026-10-15") == 1
    assert notices and all(date.fromisoformat(day).day % 7 in (4, 5) for day in notices), notices
    assert sum(a for a, _ in expected.values()) == report["totals"]["alerts"] > 100
    # The exclusion expired mid-period: reported, and its rows alert from the 16th on.
    assert report["expired_exclusions"] == [{"name": "Tailspin partner relay", "expired": "2026-10-15"}]
    partner_after = [
        r for r in rows if seed_rule_matches(r) and excluded(r, spec[0]) and r["TimeGenerated"].date() > EXPIRES
    ]
    assert partner_after and report["exclusions"]["Tailspin partner relay"] > 0
    # The HTML chart: one bar per day, each carrying that day's count.
    page = html.read_text(encoding="utf-8")
    assert page.count('class="bar"') == 30
    for day in report["days"]:
        assert f'data-day="{day["day"]}" data-alerts="{day["alerts"]}"' in page


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- the in-memory state table ---------------------------------------------------------------------------------


def test_the_filter_evaluator_reads_what_the_store_sends() -> None:
    when = datetime(2026, 11, 20, 12, tzinfo=timezone.utc)
    entity = {"PartitionKey": "r1", "RowKey": "abc", "Status": "pending", "FirstSeen": when, "Rows": 3}
    cases = {
        "PartitionKey eq @pk and (RowKey eq @state or Status eq @pending )": True,
        "PartitionKey eq @pk and RowKey lt @tilde and FirstSeen ge @since": True,
        "FirstSeen gt datetime'2026-11-20T12:00:00Z'": False,
        "not (Status ne 'pending') and Rows le 3": True,
        "Missing eq 'x' or Missing ne 'x'": False,  # a property the entity lacks matches nothing
        "Rows eq '3'": False,  # a number is not a string
        "RowKey eq 'it''s'": False,
    }
    params = {"pk": "r1", "state": "~state", "pending": "pending", "tilde": "~", "since": when}
    for text, outcome in cases.items():
        assert compile_filter(text, params)(entity) is outcome, text
    for bad in ("PartitionKey eq", "PartitionKey like 'x'", "(RowKey eq 'a'", "RowKey eq @nope"):
        with pytest.raises(FilterError):
            compile_filter(bad, params)(entity)


def _store_script(store: StateStore) -> Iterator[Any]:
    """The same StateStore operations, for Azurite and for the in-memory table to answer."""
    when = datetime(2026, 11, 20, 12, tzinfo=timezone.utc)
    store.ensure_table()
    hits = [
        Hit(key=f"{n:064x}", row={"n": n, "Subject": "x" * n}, first_seen=when + timedelta(minutes=n)) for n in range(3)
    ]
    created = store.insert_new("rule-1", hits)
    yield sorted(h.key for h in created)
    yield sorted(h.key for h in store.insert_new("rule-1", hits[:2]))  # first writer wins: nothing new
    yield sorted(store.known_keys("rule-1", when + timedelta(minutes=1)))
    updated = store.update_hits("rule-1", created[:2], Status="delivered")
    yield len(updated)
    yield len(store.update_hits("rule-1", created[:2], Status="pending"))  # stale etags: left to "another run"
    snap = store.snapshot("rule-1")
    yield sorted(h.key for h in snap.pending)
    store.mark_entities("rule-1", ["sender-a", "sender-b"], when)
    yield sorted(store.recent_entities("rule-1", when - timedelta(hours=1)))
    yield store.first_time("rule-1", "expired-x", when), store.first_time("rule-1", "expired-x", when)
    deleted = store.purge("rule-1", hits_before=when + timedelta(days=1), runs_before=when)
    yield deleted
    yield sorted((h.key, h.status) for h in store.hits("rule-1"))


def test_the_memory_table_answers_the_store_as_azurite_does(azurite: Azurite) -> None:
    real = StateStore(connect(azurite.connection_string, f"parity{uuid.uuid4().hex[:12]}"))
    try:
        on_azurite = list(_store_script(real))
    finally:
        real.close()
    in_memory = list(_store_script(StateStore(MemoryTableClient())))  # type: ignore[arg-type]
    assert in_memory == on_azurite
