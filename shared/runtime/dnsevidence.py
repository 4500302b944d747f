"""DNS evidence for mail-authentication alerts (issue 16): what `_dmarc.<domain>` and the domain's SPF record
say *now*, for the accepted domains on a card, so the analyst need not run `dig` by hand.

A DMARC/SPF temperror is a transient DNS failure (RFC 7208 2.6.6, RFC 7489). If the records resolve now, from
another resolver than Microsoft's filter used, the failure was transient (consistent with it, not proof); if
they do not, the domain's DNS is failing and more such mail will come. Only names the rule itself lists as
accepted (its `SenderDomains` binding, after parameters) are looked up, never a name taken from a row: an
attacker must not be able to make kqlwatch query their name server. Record text is attacker-adjacent data and
is shown only through shared.runtime.sanitize.clean. Which rules and names: shared.rules.enrich.

Lookups are short (2 s each, 5 s for a whole run) and never raise: DNS trouble is shown on the card and the
alert goes out. dnspython is imported only when a lookup is made, off function_app's import path.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.rules.enrich import accepted_domains, domains_on, row_domains
from shared.runtime.sanitize import clean, truncate

log = logging.getLogger("kqlwatch")

LOOKUP_TIMEOUT = 2.0  # seconds per lookup
RUN_BUDGET = 5.0  # seconds of DNS per run, all rules together
MAX_DOMAINS_PER_CARD = 5  # evidence blocks on one card; the rest is counted
RECORD_CHARS = 160  # how much of a record a card shows

# Lookup outcomes
FOUND = "found"  # TXT records came back (maybe none of the kind we want)
NO_DATA = "nodata"  # the name exists, no TXT records
NXDOMAIN = "nxdomain"
SERVFAIL = "servfail"
TIMEOUT = "timeout"
ERROR = "error"  # any other DNS failure (refused, malformed reply, ...)
SKIPPED = "skipped"  # the run's DNS budget was spent before this lookup
_ANSWERED = (FOUND, NO_DATA, NXDOMAIN)

TRANSIENT = (
    "records resolve now: the failure was transient \u2014 if the message also failed DKIM/CompAuth, "
    "treat it as a spoofing attempt"
)
FAILING = "records do not resolve now: this domain's DNS is failing \u2014 expect more of these"
UNKNOWN = "not looked up: the run's DNS time budget was spent; the alert went out without it"


# --- settings ---


def parse_servers(raw: str) -> tuple[tuple[str, int], ...]:
    """KQLWATCH_DNS_SERVERS: `host:port[,host:port]` (IPv6 as `[::1]:5353`; port defaults to 53).
    Raises ValueError with the reason. Addresses only: a resolver's own name cannot be resolved without one."""
    servers: list[tuple[str, int]] = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        host, port = _split_host_port(item)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{item[:60]!r} is not an IP address with an optional :port") from None
        servers.append((host, port))
    if not servers:
        raise ValueError("is empty: list host:port servers, or unset it to use the platform resolver")
    return tuple(servers)


def _split_host_port(item: str) -> tuple[str, int]:
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port_text = rest.removeprefix(":") if rest else "53"
    elif item.count(":") == 1:
        host, port_text = item.split(":")
    else:
        host, port_text = item, "53"  # a bare IPv4 or IPv6 address
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{item[:60]!r} has no valid port (1-65535)")
    return host, int(port_text)


# --- which domains ---


# --- lookups ---


@dataclass(frozen=True)
class Lookup:
    status: str  # FOUND, NO_DATA, NXDOMAIN, SERVFAIL, TIMEOUT, ERROR, SKIPPED
    records: tuple[str, ...] = ()  # each TXT record, its strings joined (RFC 7208 3.3)
    detail: str = ""


@dataclass(frozen=True)
class DomainEvidence:
    domain: str
    dmarc: Lookup
    spf: Lookup

    def lines(self) -> tuple[str, ...]:
        return (describe_dmarc(self.dmarc), describe_spf(self.spf), meaning(self))


Resolve = Callable[[str, float], Lookup]


@dataclass
class RunLookups:
    """The DNS lookups of one run: cached by name, each at most LOOKUP_TIMEOUT, all at most RUN_BUDGET."""

    servers: tuple[tuple[str, int], ...] = ()
    lookup_timeout: float = LOOKUP_TIMEOUT
    budget: float = RUN_BUDGET
    clock: Callable[[], float] = time.monotonic
    resolve: Resolve | None = None  # default: dnspython against `servers`, else the platform resolver
    _cache: dict[str, Lookup] = field(default_factory=dict)
    _deadline: float | None = None

    def txt(self, name: str) -> Lookup:
        if name in self._cache:
            return self._cache[name]
        now = self.clock()
        if self._deadline is None:
            self._deadline = now + self.budget
        left = min(self.lookup_timeout, self._deadline - now)
        if left <= 0.05:
            return Lookup(SKIPPED)  # not cached: it was never asked
        resolve = self.resolve or _dnspython(self.servers)
        self.resolve = resolve
        result = resolve(name, left)
        self._cache[name] = result
        return result

    def evidence(self, domain: str) -> DomainEvidence:
        return DomainEvidence(domain, dmarc=self.txt(f"_dmarc.{domain}"), spf=self.txt(domain))


def _dnspython(servers: tuple[tuple[str, int], ...]) -> Resolve:
    import dns.exception
    import dns.nameserver
    import dns.resolver

    if servers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in servers]
    else:
        resolver = dns.resolver.Resolver()  # the platform's (in Azure: the VNet's or Azure DNS)
    resolver.timeout = LOOKUP_TIMEOUT

    def resolve(name: str, lifetime: float) -> Lookup:
        try:
            answer = resolver.resolve(name, "TXT", lifetime=lifetime, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return Lookup(NXDOMAIN)
        except dns.exception.Timeout:
            return Lookup(TIMEOUT, detail=f"no answer within {lifetime:.1f} s")
        except dns.resolver.NoNameservers:
            return Lookup(SERVFAIL)  # every server answered SERVFAIL (or refused)
        except dns.exception.DNSException as exc:
            return Lookup(ERROR, detail=type(exc).__name__)
        records = tuple(b"".join(r.strings).decode("utf-8", "replace") for r in answer.rrset or ())
        return Lookup(FOUND, records) if records else Lookup(NO_DATA)

    return resolve


def evidence_for(query: str, rows: Sequence[Mapping[str, Any]], lookups: RunLookups) -> list[DomainEvidence]:
    """The evidence for a rule's rows: one entry per accepted MAIL FROM domain among them. Never raises."""
    try:
        return [lookups.evidence(d) for d in domains_on(rows, accepted_domains(query))]
    except Exception:  # evidence is a courtesy: a bug here must never stop an alert
        log.warning("DNS evidence failed; the alert goes out without it", exc_info=True)
        return []


def card_evidence(evidence: Sequence[DomainEvidence]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """What CardContext.evidence holds: (domain, lines) pairs, plain text (sanitised when rendered)."""
    return tuple((e.domain, e.lines()) for e in evidence)


# --- interpretation (pure) ---


def dmarc_policy(records: Sequence[str]) -> str | None:
    """The p= tag of the DMARC record (RFC 7489 6.3), lower case; None if there is no v=DMARC1 record."""
    for record in records:
        tags = _tags(record)
        if tags.get("v", "").upper() == "DMARC1":
            return tags.get("p", "").lower() or "(no p= tag)"
    return None


def spf_record(records: Sequence[str]) -> str | None:
    """The domain's SPF record (RFC 7208 4.5: the TXT record starting with `v=spf1`)."""
    for record in records:
        if record.strip().lower() == "v=spf1" or record.strip().lower().startswith("v=spf1 "):
            return record.strip()
    return None


def describe_dmarc(lookup: Lookup) -> str:
    if lookup.status in (FOUND, NO_DATA):
        policy = dmarc_policy(lookup.records)
        if policy is None:
            return "DMARC: no record (no v=DMARC1 TXT at _dmarc)"
        record = next(r for r in lookup.records if dmarc_policy([r]) is not None)
        return f"DMARC: p={policy} ({_shown(record)})"
    if lookup.status == NXDOMAIN:
        return "DMARC: no record (_dmarc name does not exist)"
    return f"DMARC: {_failure(lookup)}"


def describe_spf(lookup: Lookup) -> str:
    if lookup.status in (FOUND, NO_DATA):
        record = spf_record(lookup.records)
        return f"SPF: record found ({_shown(record)})" if record else "SPF: no v=spf1 record"
    if lookup.status == NXDOMAIN:
        return "SPF: NXDOMAIN (the domain does not exist in DNS)"
    return f"SPF: {_failure(lookup)}"


def resolves(evidence: DomainEvidence) -> bool | None:
    """True: both lookups got a definite answer and the domain exists; False: DNS failed; None: not asked."""
    statuses = (evidence.dmarc.status, evidence.spf.status)
    if SKIPPED in statuses and all(s in (*_ANSWERED, SKIPPED) for s in statuses):
        return None
    return all(s in _ANSWERED for s in statuses) and evidence.spf.status != NXDOMAIN


def meaning(evidence: DomainEvidence) -> str:
    verdict = resolves(evidence)
    return "Meaning: " + (UNKNOWN if verdict is None else TRANSIENT if verdict else FAILING)


def _failure(lookup: Lookup) -> str:
    return {
        SERVFAIL: "SERVFAIL (the domain's name servers failed)",
        TIMEOUT: f"timeout ({lookup.detail or 'no answer'})",
        SKIPPED: "not looked up (the run's DNS time budget was spent)",
    }.get(lookup.status, f"lookup failed ({lookup.detail or lookup.status})")


def _tags(record: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in record.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags.setdefault(name.strip().lower(), value.strip())
    return tags


def _shown(record: str | None) -> str:
    return truncate(record or "", RECORD_CHARS)  # cleaned with the whole line when the card is built


# --- the card (plain TextRuns, never Markdown) ---


def evidence_blocks(
    evidence: Sequence[tuple[str, Sequence[str]]], hits: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """A Container under the hits with the evidence for the domains on this card; [] when there is none."""
    on_card = {d for h in hits for d in row_domains(h)}
    shown = [(d, lines) for d, lines in evidence if d in on_card]
    if not shown:
        return []
    items: list[dict[str, Any]] = [_rich([_run("DNS now (looked up by kqlwatch when alerting)", weight="Bolder")])]
    for domain, lines in shown[:MAX_DOMAINS_PER_CARD]:
        items.append(_rich([_run(clean(domain, 100), weight="Bolder")]))
        items.extend(_rich([_run(clean(line, 300))]) for line in lines)
    if len(shown) > MAX_DOMAINS_PER_CARD:
        items.append(_rich([_run(f"+{len(shown) - MAX_DOMAINS_PER_CARD} more domains", isSubtle=True)]))
    return [{"type": "Container", "separator": True, "spacing": "Medium", "items": items}]


def _run(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextRun", "text": text, **style}


def _rich(inlines: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "RichTextBlock", "inlines": inlines}
