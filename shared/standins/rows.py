"""Realistic EmailEvents rows for the stand-ins, tests and benchmarks: one the seed rule matches by default."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any


def email_row(when: datetime, **fields: Any) -> dict[str, Any]:
    """An inbound EmailEvents row from an accepted domain with DMARC temperror; `fields` override any column."""
    row: dict[str, Any] = {
        "TimeGenerated": when,
        "EmailDirection": "Inbound",
        "SenderMailFromDomain": "contoso.com",
        "SenderFromDomain": "contoso.com",
        "SenderMailFromAddress": "ceo@contoso.com",
        "SenderFromAddress": "ceo@contoso.com",
        "SenderDisplayName": "The CEO",
        "SenderIPv4": "203.0.113.7",
        "RecipientEmailAddress": "alice@contoso.com",
        "Subject": "Quarterly numbers",
        "NetworkMessageId": str(uuid.uuid4()),
        "AuthenticationDetails": '{"SPF":"pass","DKIM":"none","DMARC":"temperror","CompAuth":"fail"}',
        "DeliveryAction": "Delivered",
        "DeliveryLocation": "Inbox/folder",
    }
    row.update(fields)
    return row
