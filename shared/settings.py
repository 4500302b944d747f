"""Every setting kqlwatch reads, in one place, validated once per run.

A bad value raises ConfigError naming the setting; the CLI turns it into exit code 2.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from shared.durations import parse_duration
from shared.errors import ConfigError

WORKSPACE_ID = "KQLWATCH_WORKSPACE_ID"
WORKSPACE_RESOURCE_ID = "KQLWATCH_WORKSPACE_RESOURCE_ID"
LOGS_ENDPOINT = "KQLWATCH_LOGS_ENDPOINT"
STATE_CONNECTION = "KQLWATCH_STATE_CONNECTION"
STATE_TABLE = "KQLWATCH_STATE_TABLE"
TEAMS_WEBHOOK_URL = "KQLWATCH_TEAMS_WEBHOOK_URL"
RULES_DIR = "KQLWATCH_RULES_DIR"
SCHEDULE = "KQLWATCH_SCHEDULE"
ACCESS_TOKEN = "KQLWATCH_ACCESS_TOKEN"  # noqa: S105 - a setting name, not a secret
MAX_CATCHUP = "KQLWATCH_MAX_CATCHUP"
MAX_LATENESS = "KQLWATCH_MAX_LATENESS"  # issue 13: how late a row may be ingested and still alert
LATE_SWEEP = "KQLWATCH_LATE_SWEEP"  # issue 13: how often a run reaches back over the whole MAX_LATENESS
DELIVERY_MAX_AGE = "KQLWATCH_DELIVERY_MAX_AGE"
MAX_CARDS_PER_RUN = "KQLWATCH_MAX_CARDS_PER_RUN"
OPS_WEBHOOK_URL = "KQLWATCH_OPS_WEBHOOK_URL"
PARAM_PREFIX = "KQLWATCH_PARAM_"
ROUTE_PREFIX = "KQLWATCH_ROUTE_"
AZURE_CLIENT_ID = "AZURE_CLIENT_ID"

# Read by the code; the infra tests check that the deployment sets each one it must.
SETTING_NAMES: tuple[str, ...] = (
    WORKSPACE_ID,
    WORKSPACE_RESOURCE_ID,
    LOGS_ENDPOINT,
    STATE_CONNECTION,
    STATE_TABLE,
    TEAMS_WEBHOOK_URL,
    OPS_WEBHOOK_URL,
    RULES_DIR,
    SCHEDULE,
    ACCESS_TOKEN,
    MAX_CATCHUP,
    DELIVERY_MAX_AGE,
    MAX_CARDS_PER_RUN,
    AZURE_CLIENT_ID,
    MAX_LATENESS,
    LATE_SWEEP,
)
# What a deployed app needs (ACCESS_TOKEN is for local use only and must never be deployed).
REQUIRED_IN_AZURE: tuple[str, ...] = (
    WORKSPACE_ID,
    STATE_CONNECTION,
    TEAMS_WEBHOOK_URL,
    SCHEDULE,
    AZURE_CLIENT_ID,
)

DEFAULT_LOGS_ENDPOINT = "https://api.loganalytics.io"
DEFAULT_STATE_TABLE = "kqlwatch"
DEFAULT_RULES_DIR = "rules"
DEFAULT_SCHEDULE = "0 */5 * * * *"
DEFAULT_MAX_CATCHUP = timedelta(hours=24)
# Rows over 48 h late get TimeGenerated rewritten to their arrival (Sentinel's copy of Defender tables).
DEFAULT_MAX_LATENESS = timedelta(days=2)
DEFAULT_LATE_SWEEP = timedelta(hours=1)
DEFAULT_DELIVERY_MAX_AGE = timedelta(hours=24)
DEFAULT_MAX_CARDS_PER_RUN = 20

APP_ROOT = Path(__file__).resolve().parents[1]
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$")
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Settings:
    workspace_id: str
    logs_endpoint: str
    state_connection: str
    state_table: str
    webhook_urls: tuple[str, ...]
    rules_dir: Path
    access_token: str | None = None
    workspace_resource_id: str | None = None
    max_catchup: timedelta = DEFAULT_MAX_CATCHUP
    max_lateness: timedelta = DEFAULT_MAX_LATENESS
    late_sweep: timedelta = DEFAULT_LATE_SWEEP
    delivery_max_age: timedelta = DEFAULT_DELIVERY_MAX_AGE
    max_cards_per_run: int = DEFAULT_MAX_CARDS_PER_RUN
    params: Mapping[str, str] = field(default_factory=dict)
    routes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # route name (lower case) -> URLs
    ops_webhook_urls: tuple[str, ...] = ()  # kqlwatch's own notices; default: the default webhooks

    def webhooks_for(self, route: str, severity: str) -> tuple[str, ...]:
        """A rule's own route, else its severity's route, else the default webhooks."""
        return self.routes.get(route) or self.routes.get(severity.lower()) or self.webhook_urls

    @property
    def ops_webhooks(self) -> tuple[str, ...]:
        return self.ops_webhook_urls or self.webhook_urls


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings; raise ConfigError naming the first bad one."""
    env = os.environ if env is None else env
    return Settings(
        workspace_id=_guid(env, WORKSPACE_ID),
        logs_endpoint=_url(env, LOGS_ENDPOINT, env.get(LOGS_ENDPOINT) or DEFAULT_LOGS_ENDPOINT),
        state_connection=_required(env, STATE_CONNECTION),
        state_table=_table_name(env),
        webhook_urls=_webhooks(env, TEAMS_WEBHOOK_URL),
        ops_webhook_urls=_webhooks(env, OPS_WEBHOOK_URL) if (env.get(OPS_WEBHOOK_URL) or "").strip() else (),
        routes=read_routes(env),
        rules_dir=_rules_dir(env.get(RULES_DIR) or DEFAULT_RULES_DIR),
        access_token=env.get(ACCESS_TOKEN) or None,
        workspace_resource_id=env.get(WORKSPACE_RESOURCE_ID) or None,
        max_catchup=_duration(env, MAX_CATCHUP, DEFAULT_MAX_CATCHUP),
        max_lateness=_duration(env, MAX_LATENESS, DEFAULT_MAX_LATENESS),
        late_sweep=_duration(env, LATE_SWEEP, DEFAULT_LATE_SWEEP),
        delivery_max_age=_duration(env, DELIVERY_MAX_AGE, DEFAULT_DELIVERY_MAX_AGE),
        max_cards_per_run=_count(env, MAX_CARDS_PER_RUN, DEFAULT_MAX_CARDS_PER_RUN),
        params=read_params(env),
    )


def read_params(env: Mapping[str, str]) -> dict[str, str]:
    params = {}
    for key, value in env.items():
        if key.startswith(PARAM_PREFIX):
            name = key[len(PARAM_PREFIX) :]
            if not _PARAM_NAME.match(name):
                raise ConfigError(key, "is not a valid parameter name (letters, digits, _)")
            params[name] = value
    return params


def _rules_dir(raw: str) -> Path:
    """A relative path is taken from the working directory when it exists there, else from the app's own folder
    (where function_app.py is): the Functions host's working directory is not guaranteed."""
    path = Path(raw)
    if path.is_absolute() or path.exists():
        return path
    return APP_ROOT / path


def _required(env: Mapping[str, str], name: str) -> str:
    value = (env.get(name) or "").strip()
    if not value:
        raise ConfigError(name, "is not set")
    return value


def _guid(env: Mapping[str, str], name: str) -> str:
    value = _required(env, name)
    if not _GUID.match(value):
        raise ConfigError(name, "must be the workspace GUID (customerId), e.g. 00000000-0000-0000-0000-000000000000")
    return value.lower()


def _table_name(env: Mapping[str, str]) -> str:
    value = (env.get(STATE_TABLE) or DEFAULT_STATE_TABLE).strip()
    if not _TABLE_NAME.match(value):
        raise ConfigError(STATE_TABLE, "must be 3-63 letters or digits, starting with a letter")
    return value


def _duration(env: Mapping[str, str], name: str, default: timedelta) -> timedelta:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = parse_duration(raw)
    except ValueError as exc:
        raise ConfigError(name, str(exc)) from None
    if value <= timedelta(0):
        raise ConfigError(name, "must be positive")
    return value


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 2 <= int(raw) <= 1000:
        raise ConfigError(name, f"must be a whole number from 2 to 1000, got {raw!r}")
    return int(raw)


def _url(env: Mapping[str, str], name: str, value: str, *, secret: bool = False) -> str:
    shown = redact_url(value) if secret else value
    parts = urlsplit(value.strip())
    if parts.scheme == "https" and parts.hostname:
        return value.strip()
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return value.strip()
    raise ConfigError(name, f"must be an https:// URL (http only for loopback), got {shown!r}")


def _webhooks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = _required(env, name)
    urls = tuple(u.strip() for u in raw.split(",") if u.strip())
    if not urls:
        raise ConfigError(name, "is empty")
    for url in urls:
        _url(env, name, url, secret=True)
    return tuple(dict.fromkeys(urls))


def read_routes(env: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """KQLWATCH_ROUTE_<NAME>=url[,url]: webhooks for rules with `kqlwatch.route: <name>`, or for a severity
    (KQLWATCH_ROUTE_HIGH). Route names are case-insensitive."""
    routes = {}
    for key in env:
        if key.startswith(ROUTE_PREFIX) and (env.get(key) or "").strip():
            name = key[len(ROUTE_PREFIX) :]
            if not _PARAM_NAME.match(name):
                raise ConfigError(key, "is not a valid route name (letters, digits, _)")
            routes[name.lower()] = _webhooks(env, key)
    return routes


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def redact_url(url: str) -> str:
    """Scheme, host and a short fingerprint: enough to tell webhooks apart, nothing to replay."""
    from shared.dedupe import short_hash

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}/…#{short_hash(url)}"
