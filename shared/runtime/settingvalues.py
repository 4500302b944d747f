"""How one setting's value is read and checked (a URL, a duration, a count, a webhook list): the readers
settings.py composes, each raising ConfigError naming the setting. Webhook URLs are secrets: only their
redacted form is ever shown."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from datetime import timedelta
from urllib.parse import urlsplit

from shared.errors import ConfigError
from shared.rules.durations import parse_duration
from shared.runtime.redact import redact_url


def required(env: Mapping[str, str], name: str) -> str:
    value = (env.get(name) or "").strip()
    if not value:
        raise ConfigError(name, "is not set")
    return value


def read_duration(env: Mapping[str, str], name: str, default: timedelta, maximum: timedelta) -> timedelta:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = parse_duration(raw, maximum=maximum)
    except ValueError as exc:
        raise ConfigError(name, str(exc)) from None
    if value <= timedelta(0):
        raise ConfigError(name, "must be positive")
    return value


def read_count(env: Mapping[str, str], name: str, default: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    # str.isdigit() accepts "²" and other digits int() refuses: only ASCII digits, and few of them.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4) or not 2 <= int(raw) <= 1000:
        raise ConfigError(name, f"must be a whole number from 2 to 1000, got {raw!r}")
    return int(raw)


def read_url(env: Mapping[str, str], name: str, value: str, *, secret: bool = False, what: str = "") -> str:
    shown = redact_url(value) if secret else value[:200]
    subject = f"{what} " if what else ""
    try:
        parts = urlsplit(value.strip())
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number from 0 to 65535
    except ValueError as exc:  # "https://[::1" (unclosed IPv6 bracket), "https://host:99999"
        raise ConfigError(name, f"{subject}is not a valid URL ({exc}), got {shown!r}") from None
    if parts.scheme == "https" and host:
        return value.strip()
    if parts.scheme == "http" and host and is_loopback(host):
        return value.strip()
    raise ConfigError(name, f"{subject}must be an https:// URL (http only for loopback), got {shown!r}")


def read_webhooks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = required(env, name)
    urls = tuple(u.strip() for u in raw.split(",") if u.strip())
    if not urls:
        raise ConfigError(name, "is empty")
    for url in urls:
        read_url(env, name, url, secret=True)
        refuse_retired_connector(name, url)
    return tuple(dict.fromkeys(urls))


def refuse_retired_connector(name: str, url: str) -> None:
    """Office 365 connector URLs answered 200 even when delivery failed (and keep their secret in the path):
    kqlwatch could never tell a lost alert from a delivered one."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    if host.endswith(".webhook.office.com") or (host == "outlook.office.com" and parts.path.startswith("/webhook")):
        raise ConfigError(
            name,
            f"is a retired Office 365 connector URL ({redact_url(url)}): create a Teams "
            'Workflows webhook ("When a Teams webhook request is received") and use its URL',
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
