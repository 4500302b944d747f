"""Every setting kqlwatch reads, in one place, validated once per run.

A bad value raises ConfigError naming the setting; the CLI turns it into exit code 2.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from shared.errors import ConfigError
from shared.rules.fields import DEFENDER, LOG_ANALYTICS, SOURCES
from shared.rules.loader import DEFAULT_RULES_DIR as DEFAULT_RULES_DIR  # the default the Bicep template repeats
from shared.rules.loader import RULES_DIR_SETTING, is_guid, rules_folder
from shared.rules.params import PARAM_PREFIX
from shared.runtime.cron import read_schedule
from shared.runtime.redact import redact_url
from shared.runtime.settingvalues import read_count, read_duration, read_url, read_webhooks, required

__all__ = ["redact_url"]  # re-exported: callers read URLs' redacted form from here

WORKSPACE_ID = "KQLWATCH_WORKSPACE_ID"
WORKSPACE_RESOURCE_ID = "KQLWATCH_WORKSPACE_RESOURCE_ID"
LOGS_ENDPOINT = "KQLWATCH_LOGS_ENDPOINT"
STATE_CONNECTION = "KQLWATCH_STATE_CONNECTION"
STATE_TABLE = "KQLWATCH_STATE_TABLE"
TEAMS_WEBHOOK_URL = "KQLWATCH_TEAMS_WEBHOOK_URL"
RULES_DIR = RULES_DIR_SETTING
SCHEDULE = "KQLWATCH_SCHEDULE"
ACCESS_TOKEN = "KQLWATCH_ACCESS_TOKEN"  # noqa: S105 - a setting name, not a secret
MAX_CATCHUP = "KQLWATCH_MAX_CATCHUP"
MAX_LATENESS = "KQLWATCH_MAX_LATENESS"  # issue 13: how late a row may be ingested and still alert
LATE_SWEEP = "KQLWATCH_LATE_SWEEP"  # issue 13: how often a run reaches back over the whole MAX_LATENESS
DELIVERY_MAX_AGE = "KQLWATCH_DELIVERY_MAX_AGE"
MAX_CARDS_PER_RUN = "KQLWATCH_MAX_CARDS_PER_RUN"
OPS_WEBHOOK_URL = "KQLWATCH_OPS_WEBHOOK_URL"
ROUTE_PREFIX = "KQLWATCH_ROUTE_"
AZURE_CLIENT_ID = "AZURE_CLIENT_ID"
DNS_SERVERS = "KQLWATCH_DNS_SERVERS"  # issue 16: DNS evidence lookups; local stand-ins only, Azure uses its own
CONCURRENCY = "KQLWATCH_CONCURRENCY"  # issue 14: rules run at once in one process
QUEUE_CONNECTION = "KQLWATCH_QUEUE_CONNECTION"  # issue 14: the run queue (the Functions binding's connection)
QUEUE_SERVICE_URI = f"{QUEUE_CONNECTION}__queueServiceUri"  # ... in its identity form, as the host reads it
SOURCE = "KQLWATCH_SOURCE"  # issue 15: defender | loganalytics, for rules without kqlwatch.source
GRAPH_ENDPOINT = "KQLWATCH_GRAPH_ENDPOINT"  # issue 15: Microsoft Graph (sovereign clouds; local stand-in in tests)

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
    DNS_SERVERS,
    CONCURRENCY,
    SOURCE,
    GRAPH_ENDPOINT,
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
DEFAULT_GRAPH_ENDPOINT = "https://graph.microsoft.com"
DEFAULT_STATE_TABLE = "kqlwatch"
DEFAULT_SCHEDULE = "0 */5 * * * *"
DEFAULT_MAX_CATCHUP = timedelta(hours=24)
# Rows over 48 h late get TimeGenerated rewritten to their arrival (Sentinel's copy of Defender tables).
DEFAULT_MAX_LATENESS = timedelta(days=2)
DEFAULT_LATE_SWEEP = timedelta(hours=1)
DEFAULT_DELIVERY_MAX_AGE = timedelta(hours=24)
DEFAULT_MAX_CARDS_PER_RUN = 20
# Log Analytics runs 5 queries per identity at once and queues the rest (up to 3 min, then 429): more rules at
# once in one process would only wait there.
DEFAULT_CONCURRENCY = 5
MAX_CONCURRENCY = 5
MAX_MAX_CATCHUP = timedelta(days=30)  # reaching further back after downtime is a backfill, not a catch-up
MAX_DELIVERY_MAX_AGE = timedelta(days=365)
MAX_MAX_LATENESS = timedelta(days=14)  # beyond what a workspace query can usefully scan every sweep
MAX_LATE_SWEEP = timedelta(days=1)

_TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$")
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Settings:
    workspace_ids: tuple[str, ...]  # issue 15: KQLWATCH_WORKSPACE_ID, a comma list; the first is the default
    logs_endpoint: str
    state_connection: str
    state_table: str
    webhook_urls: tuple[str, ...]
    rules_dir: Path
    access_token: str | None = None
    workspace_resource_ids: Mapping[str, str] = field(default_factory=dict)  # workspace id -> ARM id (query links)
    max_catchup: timedelta = DEFAULT_MAX_CATCHUP
    max_lateness: timedelta = DEFAULT_MAX_LATENESS
    late_sweep: timedelta = DEFAULT_LATE_SWEEP
    delivery_max_age: timedelta = DEFAULT_DELIVERY_MAX_AGE
    max_cards_per_run: int = DEFAULT_MAX_CARDS_PER_RUN
    schedule: str = DEFAULT_SCHEDULE  # read by the Functions host itself; validated here so a typo is named
    params: Mapping[str, str] = field(default_factory=dict)
    routes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # route name (lower case) -> URLs
    ops_webhook_urls: tuple[str, ...] = ()  # kqlwatch's own notices; default: the default webhooks
    dns_servers: tuple[tuple[str, int], ...] = ()  # issue 16: () = the platform resolver
    concurrency: int = DEFAULT_CONCURRENCY  # issue 14: rules run at once by `run --once` / one worker
    source: str = LOG_ANALYTICS  # issue 15: where rules without kqlwatch.source run
    graph_endpoint: str = DEFAULT_GRAPH_ENDPOINT  # issue 15: Defender XDR advanced hunting

    @property
    def workspace_id(self) -> str:
        """The default workspace: the first of KQLWATCH_WORKSPACE_ID ("" when Defender is the only source)."""
        return self.workspace_ids[0] if self.workspace_ids else ""

    @property
    def workspace_resource_id(self) -> str | None:
        return self.workspace_resource_ids.get(self.workspace_id)

    def source_of(self, rule_source: str) -> str:
        """A rule's own kqlwatch.source, else KQLWATCH_SOURCE."""
        return rule_source or self.source

    def webhooks_for(self, route: str, severity: str) -> tuple[str, ...]:
        """A rule's own route, else its severity's route, else the default webhooks."""
        return self.routes.get(route) or self.routes.get(severity.lower()) or self.webhook_urls

    @property
    def ops_webhooks(self) -> tuple[str, ...]:
        return self.ops_webhook_urls or self.webhook_urls


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings; raise ConfigError naming the first bad one."""
    env = os.environ if env is None else env
    source = _source(env)
    return Settings(
        # Defender-only tenants have no workspace: then only rules with kqlwatch.source: loganalytics need one.
        workspace_ids=_workspaces(env) if source != DEFENDER or (env.get(WORKSPACE_ID) or "").strip() else (),
        source=source,
        graph_endpoint=read_url(env, GRAPH_ENDPOINT, env.get(GRAPH_ENDPOINT) or DEFAULT_GRAPH_ENDPOINT),
        logs_endpoint=read_url(env, LOGS_ENDPOINT, env.get(LOGS_ENDPOINT) or DEFAULT_LOGS_ENDPOINT),
        state_connection=_state_connection(env),
        state_table=_table_name(env),
        webhook_urls=read_webhooks(env, TEAMS_WEBHOOK_URL),
        ops_webhook_urls=read_webhooks(env, OPS_WEBHOOK_URL) if (env.get(OPS_WEBHOOK_URL) or "").strip() else (),
        routes=read_routes(env),
        rules_dir=_rules_dir(env),
        access_token=env.get(ACCESS_TOKEN) or None,
        workspace_resource_ids=_resource_ids(env, _workspaces(env) if (env.get(WORKSPACE_ID) or "").strip() else ()),
        max_catchup=read_duration(env, MAX_CATCHUP, DEFAULT_MAX_CATCHUP, MAX_MAX_CATCHUP),
        max_lateness=read_duration(env, MAX_LATENESS, DEFAULT_MAX_LATENESS, MAX_MAX_LATENESS),
        late_sweep=read_duration(env, LATE_SWEEP, DEFAULT_LATE_SWEEP, MAX_LATE_SWEEP),
        delivery_max_age=read_duration(env, DELIVERY_MAX_AGE, DEFAULT_DELIVERY_MAX_AGE, MAX_DELIVERY_MAX_AGE),
        max_cards_per_run=read_count(env, MAX_CARDS_PER_RUN, DEFAULT_MAX_CARDS_PER_RUN),
        schedule=read_schedule(env, SCHEDULE, DEFAULT_SCHEDULE),
        params=read_params(env),
        dns_servers=_dns_servers(env),
        concurrency=_concurrency(env),
    )


def _concurrency(env: Mapping[str, str]) -> int:
    raw = (env.get(CONCURRENCY) or "").strip()
    if not raw:
        return DEFAULT_CONCURRENCY
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 2) or not 1 <= int(raw) <= MAX_CONCURRENCY:
        raise ConfigError(
            CONCURRENCY,
            f"must be a whole number from 1 to {MAX_CONCURRENCY} (Log Analytics runs 5 queries per identity at once), "
            f"got {raw[:20]!r}",
        )
    return int(raw)


def _workspaces(env: Mapping[str, str]) -> tuple[str, ...]:
    """KQLWATCH_WORKSPACE_ID: one workspace GUID, or several comma-separated (issue 15: many workspaces)."""
    raw = required(env, WORKSPACE_ID)
    ids = [part.strip() for part in raw.split(",") if part.strip()]
    bad = next((i for i in ids if not is_guid(i)), None)
    if not ids or bad is not None:
        raise ConfigError(
            WORKSPACE_ID,
            "must be the workspace GUID (customerId), or several comma-separated, e.g. "
            f"00000000-0000-0000-0000-000000000000 (got {(bad or raw)[:60]!r})",
        )
    return tuple(dict.fromkeys(i.lower() for i in ids))


def _resource_ids(env: Mapping[str, str], workspaces: tuple[str, ...]) -> dict[str, str]:
    """KQLWATCH_WORKSPACE_RESOURCE_ID: the ARM ids for the query links, in KQLWATCH_WORKSPACE_ID's order."""
    ids = [part.strip() for part in (env.get(WORKSPACE_RESOURCE_ID) or "").split(",") if part.strip()]
    if ids and len(ids) != len(workspaces):
        raise ConfigError(
            WORKSPACE_RESOURCE_ID,
            f"lists {len(ids)} resource id(s) for {len(workspaces)} workspace(s) in {WORKSPACE_ID}: "
            "give one per workspace, in the same order, or none",
        )
    return dict(zip(workspaces, ids, strict=False))


def _source(env: Mapping[str, str]) -> str:
    raw = (env.get(SOURCE) or "").strip().lower() or LOG_ANALYTICS
    if raw not in SOURCES:
        raise ConfigError(SOURCE, f"must be one of {', '.join(SOURCES)}, got {raw[:40]!r}")
    return raw


def _dns_servers(env: Mapping[str, str]) -> tuple[tuple[str, int], ...]:
    """Issue 16: KQLWATCH_DNS_SERVERS=host:port[,...] for the DNS evidence; unset = the platform resolver."""
    from shared.runtime.dnsevidence import parse_servers

    raw = env.get(DNS_SERVERS) or ""
    if not raw.strip():
        return ()
    try:
        return parse_servers(raw)
    except ValueError as exc:
        raise ConfigError(DNS_SERVERS, str(exc)) from None


@dataclass(frozen=True)
class StateSettings:
    """What the offline `kqlwatch status` needs: the state table, and the rules (for their names)."""

    state_connection: str
    state_table: str
    rules_dir: Path


@dataclass(frozen=True)
class WorkspaceSettings:
    """Only what reading the workspace needs (`kqlwatch backtest --workspace`, `validate --workspace`)."""

    workspace_id: str
    logs_endpoint: str
    access_token: str | None = None


def load_workspace_settings(env: Mapping[str, str] | None = None) -> WorkspaceSettings:
    env = os.environ if env is None else env
    return WorkspaceSettings(
        workspace_id=_workspaces(env)[0],  # the default workspace (the first of the list)
        logs_endpoint=read_url(env, LOGS_ENDPOINT, env.get(LOGS_ENDPOINT) or DEFAULT_LOGS_ENDPOINT),
        access_token=env.get(ACCESS_TOKEN) or None,
    )


def load_state_settings(env: Mapping[str, str] | None = None) -> StateSettings:
    """Only the state settings, validated as load_settings does: no workspace or webhook required."""
    env = os.environ if env is None else env
    return StateSettings(_state_connection(env), _table_name(env), _rules_dir(env))


def read_params(env: Mapping[str, str]) -> dict[str, str]:
    params = {}
    for key, value in env.items():
        if key.startswith(PARAM_PREFIX):
            name = key[len(PARAM_PREFIX) :]
            if not _PARAM_NAME.match(name):
                raise ConfigError(key, "is not a valid parameter name (letters, digits, _)")
            if not value.replace(",", "").strip():
                # An empty list would silently turn the rule off (nothing matches an empty set).
                raise ConfigError(key, "is empty: give a value, or unset it to keep the rule's own default")
            params[name] = value
    return params


def _rules_dir(env: Mapping[str, str]) -> Path:
    """The rules folder as shared.rules.loader.rules_folder resolves it; it must exist and be a folder."""
    raw, path = rules_folder(env)
    try:
        if not path.exists():
            raise ConfigError(RULES_DIR, f"names {raw!r}, which does not exist")
        if not path.is_dir():
            raise ConfigError(RULES_DIR, f"names {raw!r}, which is not a folder")
    except OSError as exc:  # unreadable parent, name too long, ...
        raise ConfigError(RULES_DIR, f"names {raw!r}, which cannot be read ({exc.strerror or exc})") from None
    return path


def load_queue_connection(env: Mapping[str, str] | None = None) -> str:
    """Issue 14: the run queue for `kqlwatch dispatch` / `worker`: KQLWATCH_QUEUE_CONNECTION (a connection string,
    Azurite's locally, or a queue service URL used with the identity), else the identity form the Functions
    host reads (KQLWATCH_QUEUE_CONNECTION__queueServiceUri). Validated as the state connection is."""
    env = os.environ if env is None else env
    if not (env.get(QUEUE_CONNECTION) or "").strip() and (env.get(QUEUE_SERVICE_URI) or "").strip():
        return read_url(env, QUEUE_SERVICE_URI, env[QUEUE_SERVICE_URI])
    return _storage_connection(env, QUEUE_CONNECTION, "queueendpoint", "QueueEndpoint")


def _state_connection(env: Mapping[str, str]) -> str:
    return _storage_connection(env, STATE_CONNECTION, "tableendpoint", "TableEndpoint")


def _storage_connection(env: Mapping[str, str], name: str, endpoint_key: str, endpoint_name: str) -> str:
    """A Table service URL (https; http only for loopback such as Azurite) or a connection string whose
    table endpoint obeys the same rule: state, etags and leases never cross a network in clear text."""
    value = required(env, name)
    if value.lower().startswith(("https://", "http://")):
        read_url(env, name, value, secret=True)  # a SAS token would be in its query
        return value
    fields = {k.strip().lower(): v.strip() for k, _, v in (p.partition("=") for p in value.split(";")) if k.strip()}
    endpoint = fields.get(endpoint_key)
    if endpoint:
        read_url(env, name, endpoint, what=f"its {endpoint_name}")
    elif fields.get("defaultendpointsprotocol", "https").lower() != "https":
        raise ConfigError(name, f"uses DefaultEndpointsProtocol=http with no loopback {endpoint_name}: use https")
    return value


def _table_name(env: Mapping[str, str]) -> str:
    value = (env.get(STATE_TABLE) or DEFAULT_STATE_TABLE).strip()
    if not _TABLE_NAME.match(value):
        raise ConfigError(STATE_TABLE, "must be 3-63 letters or digits, starting with a letter")
    return value


def read_routes(env: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """KQLWATCH_ROUTE_<NAME>=url[,url]: webhooks for rules with `kqlwatch.route: <name>`, or for a severity
    (KQLWATCH_ROUTE_HIGH). Route names are case-insensitive."""
    routes = {}
    for key in env:
        if key.startswith(ROUTE_PREFIX) and (env.get(key) or "").strip():
            name = key[len(ROUTE_PREFIX) :]
            if not _PARAM_NAME.match(name):
                raise ConfigError(key, "is not a valid route name (letters, digits, _)")
            routes[name.lower()] = read_webhooks(env, key)
    return routes
