"""Which enrichments a rule asks for (`kqlwatch.enrich`), and the names they may look up (issue 16). Pure.

DNS evidence looks up only the domains the rule itself lists as accepted (its `SenderDomains` binding, after
parameters), never a name taken from a row: a row's domain only selects among those, so an attacker cannot make
kqlwatch query their name server. The lookups and the card text are in shared.runtime.dnsevidence.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from shared.errors import RuleError
from shared.rules.kql import string_value, top_level_lets

MAIL_AUTH_DNS = "mail-auth-dns"
ENRICHMENTS = (MAIL_AUTH_DNS,)
DOMAINS_PARAM = "SenderDomains"  # the binding that lists the domains a rule accepts


def parse_enrich(value: Any, query: str, where: str) -> tuple[str, ...]:
    """`kqlwatch.enrich: [mail-auth-dns]` -> ("mail-auth-dns",); a clear RuleError for anything else."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise RuleError(where, f"kqlwatch.enrich must be a list of names ({', '.join(ENRICHMENTS)})", key="kqlwatch")
    names = tuple(dict.fromkeys(i.strip().lower() for i in items))
    unknown = [n for n in names if n not in ENRICHMENTS]
    if unknown:
        raise RuleError(
            where,
            f"kqlwatch.enrich: unknown {', '.join(map(repr, unknown))} (known: {', '.join(ENRICHMENTS)})",
            key="kqlwatch",
        )
    if MAIL_AUTH_DNS in names and DOMAINS_PARAM not in _lets(query):
        raise RuleError(
            where,
            f"kqlwatch.enrich: {MAIL_AUTH_DNS} looks up only the domains the rule accepts, "
            f"and the query has no top-level `let {DOMAINS_PARAM} = ...;`",
            key="kqlwatch",
        )
    return names


def accepted_domains(query: str) -> frozenset[str]:
    """The domains in the rule's `let SenderDomains = ...;` (parameters applied), lower case."""
    binding = _lets(query).get(DOMAINS_PARAM)
    if binding is None:
        return frozenset()
    values = (string_value(t.text) for t in binding.value_tokens if t.kind == "string")
    return frozenset(v.strip().lower().rstrip(".") for v in values if v and v.strip())


def domains_on(rows: Iterable[Mapping[str, Any]], accepted: frozenset[str]) -> list[str]:
    """Distinct sender domains of these rows (MAIL FROM, then header From) that the rule accepts, in first-seen
    order. A row's own text only ever selects from `accepted`: the name looked up is always the rule's."""
    found: dict[str, None] = {}
    for row in rows:
        for domain in row_domains(row):
            if domain in accepted:
                found[domain] = None
    return list(found)


def row_domains(row: Mapping[str, Any]) -> tuple[str, ...]:
    """The row's MAIL FROM (envelope, SPF's) domain and its header From (DMARC's) domain, lower case."""
    return tuple(
        dict.fromkeys(
            d
            for d in (
                _domain(row, "SenderMailFromDomain", "SenderMailFromAddress"),
                _domain(row, "SenderFromDomain", "SenderFromAddress"),
            )
            if d
        )
    )


def _domain(row: Mapping[str, Any], domain_column: str, address_column: str) -> str:
    value = row.get(domain_column)
    if not isinstance(value, str) or not value:
        address = row.get(address_column)
        value = address.rpartition("@")[2] if isinstance(address, str) else ""
    return value.strip().lower().rstrip(".")


def _lets(query: str) -> Mapping[str, Any]:
    try:
        return top_level_lets(query)
    except ValueError:  # KqlLexError: the loader reports an unreadable query itself
        return {}
