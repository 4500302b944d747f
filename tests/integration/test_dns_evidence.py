"""Issue 16: live DNS evidence on mail-authentication cards, through the real DNS stand-in (UDP and TCP on one
port) and real dnspython, and end to end through Azurite, the HTTPS Log Analytics stand-in and the Teams
receiver."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.errors import ConfigError, RuleError
from shared.rules import enrich
from shared.rules.loader import parse_rule
from shared.rules.params import apply_params
from shared.runtime import dnsevidence as de
from shared.runtime.cards import CardContext, build_posts
from shared.runtime.settings import DNS_SERVERS, load_settings
from shared.standins.clock import Clock
from shared.standins.dns import SERVFAIL, TIMEOUT, DnsStandIn
from shared.standins.loganalytics import LogAnalyticsStandIn
from shared.standins.teams import WebhookReceiver
from tests.conftest import SEED_RULE, MakeDetector, delivered_ids, email


def lookups(dns: DnsStandIn, **kw: Any) -> de.RunLookups:
    host, port = dns.server.split(":")
    return de.RunLookups(((host, int(port)),), **kw)


def card_texts(card: dict[str, Any]) -> list[str]:
    """Every TextRun of a card, in order, including those inside Containers."""
    texts: list[str] = []

    def walk(items: list[dict[str, Any]]) -> None:
        for item in items:
            texts.extend(run.get("text", "") for run in item.get("inlines", []))
            walk(item.get("items", []))

    walk(card["body"])
    return texts


# --- through the real stand-in and dnspython ---


def test_records_present_resolve_now_and_say_the_failure_was_transient(dns_standin: DnsStandIn) -> None:
    evidence = lookups(dns_standin).evidence("contoso.com")
    assert evidence.dmarc.status == de.FOUND and evidence.spf.status == de.FOUND
    dmarc, spf, meaning = evidence.lines()
    assert dmarc == "DMARC: p=reject (v=DMARC1; p=reject; rua=mailto:dmarc@contoso.com)"
    assert spf == "SPF: record found (v=spf1 include:spf.protection.outlook.com -all)"  # not the MS= record
    assert meaning == "Meaning: " + de.TRANSIENT


def test_missing_records_nxdomain(dns_standin: DnsStandIn) -> None:
    no_dmarc = lookups(dns_standin).evidence("nodmarc.example")
    assert no_dmarc.lines() == (
        "DMARC: no record (_dmarc name does not exist)",
        "SPF: record found (v=spf1 -all)",
        "Meaning: " + de.TRANSIENT,
    )
    gone = lookups(dns_standin).evidence("nx.example")
    assert gone.spf.status == de.NXDOMAIN
    assert gone.lines()[1] == "SPF: NXDOMAIN (the domain does not exist in DNS)"
    assert gone.lines()[2] == "Meaning: " + de.FAILING  # an accepted domain that does not exist: broken DNS


def test_servfail_says_the_domains_dns_is_failing(dns_standin: DnsStandIn) -> None:
    started = time.monotonic()
    evidence = lookups(dns_standin).evidence("fabrikam.fr")
    assert time.monotonic() - started < 1.5  # SERVFAIL is an answer: no waiting for a timeout
    assert evidence.lines() == (
        "DMARC: SERVFAIL (the domain's name servers failed)",
        "SPF: SERVFAIL (the domain's name servers failed)",
        "Meaning: " + de.FAILING,
    )


def test_timeout_is_bounded_per_lookup_and_per_run(dns_standin: DnsStandIn) -> None:
    run = lookups(dns_standin)
    started = time.monotonic()
    slow = run.evidence("slow.example")
    after_slow = time.monotonic() - started
    assert 1.8 < after_slow < 4.8  # two lookups of at most 2 s each
    assert slow.dmarc.status == de.TIMEOUT and slow.spf.status == de.TIMEOUT
    assert slow.lines()[0].startswith("DMARC: timeout (no answer within 2.0 s)")
    assert slow.lines()[2] == "Meaning: " + de.FAILING
    dns_standin.set("slow2.example", TIMEOUT)
    dns_standin.set("_dmarc.slow2.example", TIMEOUT)
    slow2, contoso = run.evidence("slow2.example"), run.evidence("contoso.com")
    assert time.monotonic() - started < 5.6  # the whole run's DNS stays within its 5 s budget
    assert (slow2.dmarc.status, slow2.spf.status) == (de.TIMEOUT, de.SKIPPED)
    assert (contoso.dmarc.status, contoso.spf.status) == (de.SKIPPED, de.SKIPPED)
    assert contoso.lines() == (
        "DMARC: not looked up (the run's DNS time budget was spent)",
        "SPF: not looked up (the run's DNS time budget was spent)",
        "Meaning: " + de.UNKNOWN,
    )
    assert "contoso.com" not in {q.name for q in dns_standin.queries()}


def test_several_strings_in_one_record_are_joined_and_the_spf_record_is_picked(dns_standin: DnsStandIn) -> None:
    evidence = lookups(dns_standin).evidence("split.example")
    assert sorted(evidence.spf.records) == [
        "other=record",
        "v=spf1 ip4:192.0.2.0/24 include:spf.protection.outlook.com ~all",
    ]
    assert evidence.lines()[:2] == (
        "DMARC: p=quarantine (v=DMARC1; p=quarantine; pct=100)",
        "SPF: record found (v=spf1 ip4:192.0.2.0/24 include:spf.protection.outlook.com ~all)",
    )


def test_oversized_txt_is_truncated_over_udp_and_read_over_tcp(dns_standin: DnsStandIn) -> None:
    evidence = lookups(dns_standin).evidence("big.example")
    assert evidence.spf.status == de.FOUND
    [record] = evidence.spf.records
    assert len(record) > 1500 and record.startswith("v=spf1 include:_spf00.big.example") and record.endswith("-all")
    transports = [q.transport for q in dns_standin.queries() if q.name == "big.example"]
    assert transports == ["udp", "tcp"]  # TC on UDP, then the full answer over TCP
    spf_line = evidence.lines()[1]
    assert len(spf_line) < 200 and spf_line.endswith("\u2026)")  # shown truncated, never the whole 1.6 KB


def test_markup_in_txt_is_plain_inert_text_on_the_card(dns_standin: DnsStandIn) -> None:
    evidence = de.card_evidence([lookups(dns_standin).evidence("markup.example")])
    blocks = de.evidence_blocks(evidence, [{"SenderMailFromDomain": "markup.example"}])
    text = json.dumps(blocks, ensure_ascii=False)
    assert "https://" not in text and "evil.example" not in text  # defanged: nothing is auto-linked
    assert "hxxps[:]//evil[.]example/x" in text
    assert "{{Subject}}" not in text  # templates broken
    kinds = {b["type"] for block in blocks for b in block["items"]} | {
        i["type"] for block in blocks for b in block["items"] for i in b["inlines"]
    }
    assert kinds == {"RichTextBlock", "TextRun"}  # no TextBlock/FactSet: nothing Teams reads as Markdown


def test_lookups_are_cached_for_the_run(dns_standin: DnsStandIn) -> None:
    run = lookups(dns_standin)
    first = run.evidence("contoso.com")
    dns_standin.set("contoso.com", SERVFAIL)
    assert run.evidence("contoso.com") == first
    assert [q.name for q in dns_standin.queries()].count("contoso.com") == 1
    assert lookups(dns_standin).evidence("contoso.com").spf.status == de.SERVFAIL  # a new run asks again


def test_only_the_rules_accepted_domains_are_looked_up_never_a_name_from_the_row(dns_standin: DnsStandIn) -> None:
    query = parse_rule(SEED_RULE.read_text(), str(SEED_RULE)).query
    rows = [
        {"SenderMailFromDomain": "evil.example"},
        {"SenderMailFromDomain": "c0ntoso.com"},
        {"SenderMailFromDomain": "_dmarc.contoso.com"},
        {"SenderMailFromDomain": "FABRIKAM.FR."},
        {"SenderMailFromAddress": "x@Contoso.com"},
        {"SenderMailFromDomain": "contoso.com"},
    ]
    evidence = de.evidence_for(query, rows, lookups(dns_standin))
    assert [e.domain for e in evidence] == ["fabrikam.fr", "contoso.com"]
    assert {q.name for q in dns_standin.queries()} == {
        "fabrikam.fr",
        "_dmarc.fabrikam.fr",
        "contoso.com",
        "_dmarc.contoso.com",
    }


def test_the_header_from_domain_counts_when_it_is_accepted(dns_standin: DnsStandIn) -> None:
    """The header-spoof rule's hits carry a foreign MAIL FROM: the evidence is for the accepted header From."""
    query = parse_rule(SEED_RULE.read_text(), str(SEED_RULE)).query
    row = {"SenderMailFromDomain": "kestrelquartz68.ru", "SenderFromDomain": "Contoso.com"}
    evidence = de.evidence_for(query, [row], lookups(dns_standin))
    assert [e.domain for e in evidence] == ["contoso.com"]
    assert "kestrelquartz68.ru" not in {q.name for q in dns_standin.queries()}
    blocks = de.evidence_blocks(de.card_evidence(evidence), [row])
    assert "contoso[.]com" in json.dumps(blocks)


def test_accepted_domains_follow_the_parameter(dns_standin: DnsStandIn) -> None:
    query = apply_params(
        parse_rule(SEED_RULE.read_text(), str(SEED_RULE)).query, {"SenderDomains": "Split.Example, contoso.com"}
    )
    assert enrich.accepted_domains(query) == {"split.example", "contoso.com"}
    evidence = de.evidence_for(
        query,
        [{"SenderMailFromDomain": "split.example"}, {"SenderMailFromDomain": "fabrikam.fr"}],
        lookups(dns_standin),
    )
    assert [e.domain for e in evidence] == ["split.example"]


# --- pure interpretation ---


@pytest.mark.parametrize(
    ("records", "policy"),
    [
        (["v=DMARC1; p=reject"], "reject"),
        (["v=DMARC1;p=Quarantine;pct=50"], "quarantine"),
        (["some=thing", "v=DMARC1; p=none; rua=mailto:x@y"], "none"),
        (["v=DMARC1; rua=mailto:x@y"], "(no p= tag)"),
        (["v=spf1 -all"], None),
        ([], None),
    ],
)
def test_dmarc_policy(records: list[str], policy: str | None) -> None:
    assert de.dmarc_policy(records) == policy


def test_spf_record_needs_v_spf1_as_its_own_term() -> None:
    assert de.spf_record(["v=spf1x -all", "v=spf10 -all"]) is None
    assert de.spf_record(["MS=1", "V=SPF1 -all"]) == "V=SPF1 -all"


# --- settings and rule validation ---


@pytest.mark.parametrize("raw", ["dns.example:53", "127.0.0.1:0", "127.0.0.1:99999", "127.0.0.1:x", " , ", "[::1]:"])
def test_bad_dns_servers_setting_is_named(env: dict[str, str], raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({**env, DNS_SERVERS: raw})
    assert info.value.setting == DNS_SERVERS and str(info.value).startswith(DNS_SERVERS)


def test_dns_servers_setting_forms(env: dict[str, str]) -> None:
    assert load_settings({**env, DNS_SERVERS: "127.0.0.1:5353, [::1]:53,10.0.0.2"}).dns_servers == (
        ("127.0.0.1", 5353),
        ("::1", 53),
        ("10.0.0.2", 53),
    )
    assert load_settings({**env, DNS_SERVERS: ""}).dns_servers == ()  # unset: the platform resolver


def _rule(extension: str, query: str = "let SenderDomains = pack_array('contoso.com');\nEmailEvents") -> str:
    body = "\n".join("  " + line for line in query.splitlines())
    return (
        f"id: 6f1c1a62-2f0f-4e55-9a39-5f7a3c8d0a11\nname: x\nseverity: Low\nquery: |\n{body}\nkqlwatch:\n{extension}\n"
    )


@pytest.mark.parametrize(
    ("extension", "query", "reason"),
    [
        ("  enrich: [mail-auth-dsn]", None, "unknown 'mail-auth-dsn' (known: mail-auth-dns)"),
        ("  enrich: {mail-auth-dns: true}", None, "must be a list of names"),
        (
            "  enrich: [mail-auth-dns]",
            "EmailEvents | where SenderMailFromDomain == 'contoso.com'",
            "no top-level `let SenderDomains",
        ),
    ],
)
def test_bad_enrich_is_a_rule_error_naming_the_file(extension: str, query: str | None, reason: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_rule(_rule(extension, *(q for q in [query] if q)), "rules/x.yaml")
    assert info.value.path == "rules/x.yaml" and reason in info.value.reason


def test_enrich_is_read() -> None:
    assert parse_rule(_rule("  enrich: mail-auth-dns"), "rules/x.yaml").enrich == ("mail-auth-dns",)
    assert parse_rule(SEED_RULE.read_text(), str(SEED_RULE)).enrich == ("mail-auth-dns",)


# --- end to end: Log Analytics stand-in -> LogsQueryClient -> Azurite -> DNS stand-in -> Teams receiver ---


def test_seed_rule_cards_carry_the_dns_evidence_end_to_end(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    hits = [email(clock), email(clock, SenderMailFromDomain="fabrikam.fr", SenderMailFromAddress="x@fabrikam.fr")]
    la.ingest("EmailEvents", hits, at=clock.now - timedelta(minutes=10))
    report = make_detector().run(only_due=False)
    assert report.ok and report.outcomes[0].delivered == 2
    [card] = hook.cards()
    texts = card_texts(card)
    at = texts.index("DNS now (looked up by kqlwatch when alerting)")
    assert texts[at + 1 : at + 9] == [
        "contoso[.]com",
        "DMARC: p=reject (v=DMARC1; p=reject; rua=mailto[:]dmarc@contoso[.]com)",
        "SPF: record found (v=spf1 include:spf[.]protection[.]outlook[.]com -all)",
        "Meaning: " + de.TRANSIENT,
        "fabrikam[.]fr",
        "DMARC: SERVFAIL (the domain's name servers failed)",
        "SPF: SERVFAIL (the domain's name servers failed)",
        "Meaning: " + de.FAILING,
    ]


def test_dns_timeout_does_not_stop_delivery(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock, dns_standin: DnsStandIn
) -> None:
    for name in ("contoso.com", "_dmarc.contoso.com", "fabrikam.fr", "_dmarc.fabrikam.fr"):
        dns_standin.set(name, TIMEOUT)
    hits = [email(clock), email(clock, SenderMailFromDomain="fabrikam.fr")]
    la.ingest("EmailEvents", hits, at=clock.now - timedelta(minutes=10))
    started = time.monotonic()
    report = make_detector().run(only_due=False)
    elapsed = time.monotonic() - started
    assert report.ok and report.outcomes[0].delivered == 2 and report.outcomes[0].deferred == 0
    assert sorted(delivered_ids(hook)) == sorted(h["NetworkMessageId"] for h in hits)
    assert elapsed < 9  # DNS adds at most its 5 s run budget
    texts = card_texts(hook.cards()[0])
    assert "DMARC: timeout (no answer within 2.0 s)" in texts
    assert "SPF: not looked up (the run's DNS time budget was spent)" in texts  # fabrikam.fr: said so


def test_rules_without_enrich_never_ask_dns(
    la: LogAnalyticsStandIn,
    hook: WebhookReceiver,
    rules_dir: Path,
    make_detector: MakeDetector,
    clock: Clock,
    dns_standin: DnsStandIn,
) -> None:
    seed = rules_dir / SEED_RULE.name
    seed.write_text(seed.read_text().replace("  enrich: [mail-auth-dns]\n", ""))
    la.ingest("EmailEvents", [email(clock)], at=clock.now - timedelta(minutes=10))
    assert make_detector().run(only_due=False).ok
    assert "DNS now (looked up by kqlwatch when alerting)" not in card_texts(hook.cards()[0])
    assert dns_standin.queries() == []


def test_evidence_cards_stay_valid_and_small() -> None:
    from tests.workbench.test_card_render import seed_rule
    from tests.workbench.test_card_schema import schema_errors

    rule = seed_rule()
    lines = ("DMARC: " + "x" * 5000, "SPF: <b>[a](https://evil.example)</b>", "Meaning: " + de.FAILING)
    evidence = tuple((f"d{i}.example", lines) for i in range(8))
    rows = [email(Clock(), SenderMailFromDomain=f"d{i % 8}.example", Subject="é" * 3000) for i in range(25)]
    posts = build_posts(CardContext(rule, total=25, evidence=evidence), rows)
    assert sum(p.count for p in posts) == 25
    for post in posts:
        assert schema_errors(post.payload) == []
    assert "+3 more domains" in json.dumps(posts[0].payload)


def test_a_missing_domain_on_the_card_shows_no_evidence_block() -> None:
    assert de.evidence_blocks((("contoso.com", ("x",)),), [{"SenderMailFromDomain": "fabrikam.fr"}]) == []
    assert de.evidence_blocks((), [{"SenderMailFromDomain": "contoso.com"}]) == []
