"""Wire the real clients to the detector: the one place they are built. The Function builds them once per process
(Functions reuses the worker between runs); tests, the bench and the demo pass a Tuning."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from shared.runtime.defender import DefenderClient
from shared.runtime.detector import Detector, RunReport
from shared.runtime.loganalytics import LogsClient, make_credential
from shared.runtime.runlease import RunLeases
from shared.runtime.settings import Settings, load_settings
from shared.runtime.store import StateStore, connect
from shared.runtime.teams import TeamsClient

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

log = logging.getLogger("kqlwatch")


@dataclass(frozen=True)
class Tuning:
    """How tests, the bench and the demo tune the real clients; the Function uses the defaults. The one place
    clients are built (build_clients), so every caller gets the same SDK retry and timeout wiring."""

    logs: Mapping[str, Any] = field(default_factory=dict)  # LogsClient keyword arguments (retries, timeouts)
    state_retry_total: int = 3
    teams: Mapping[str, Any] = field(default_factory=dict)  # TeamsClient keyword arguments
    credential: TokenCredential | None = None  # default: make_credential(KQLWATCH_ACCESS_TOKEN)
    defender: Mapping[str, Any] = field(default_factory=dict)  # DefenderClient keyword arguments (issue 15)


DEFAULT_TUNING = Tuning()


@dataclass(frozen=True)
class Clients:
    logs: LogsClient
    store: StateStore
    teams: TeamsClient  # one per process: its rate limiter spaces every rule's posts to a webhook (issue 14)
    leases: RunLeases  # issue 14: rule-run leases, in the state table
    defender: DefenderClient | None = None  # issue 15: Defender XDR advanced hunting on Microsoft Graph

    def close(self) -> None:
        for client in (self.logs, self.store, self.teams, self.leases, self.defender):
            if client is not None:
                client.close()


def state_store(state_connection: str, state_table: str, tuning: Tuning = DEFAULT_TUNING) -> StateStore:
    """The state table's client: the detector's, and the offline `kqlwatch status`'s (same retries and timeouts)."""
    return StateStore(connect(state_connection, state_table, retry_total=tuning.state_retry_total))


def build_clients(
    logs_endpoint: str,
    access_token: str | None,
    state_connection: str,
    state_table: str,
    tuning: Tuning = DEFAULT_TUNING,
    graph_endpoint: str | None = None,
) -> Clients:
    credential = tuning.credential or make_credential(access_token)
    return Clients(
        LogsClient(logs_endpoint, credential, **tuning.logs),
        state_store(state_connection, state_table, tuning),
        TeamsClient(**tuning.teams),
        RunLeases(connect(state_connection, state_table, retry_total=tuning.state_retry_total)),
        DefenderClient(graph_endpoint, credential, **tuning.defender) if graph_endpoint else None,
    )


def clients_for(settings: Settings, tuning: Tuning = DEFAULT_TUNING) -> Clients:
    return build_clients(
        settings.logs_endpoint,
        settings.access_token,
        settings.state_connection,
        settings.state_table,
        tuning,
        settings.graph_endpoint,
    )


def build_detector(settings: Settings, clients: Clients, clock: Callable[[], datetime] | None = None) -> Detector:
    made = Detector(
        settings,
        logs=clients.logs,
        store=clients.store,
        teams=clients.teams,
        leases=clients.leases,
        defender=clients.defender,
    )
    if clock is not None:
        made.clock = clock
    return made


@lru_cache(maxsize=4)
def _clients(
    logs_endpoint: str, access_token: str | None, state_connection: str, state_table: str, graph_endpoint: str
) -> Clients:
    return build_clients(logs_endpoint, access_token, state_connection, state_table, graph_endpoint=graph_endpoint)


def warm_clients(settings: Settings) -> Clients:
    """The process's clients, built on first use and kept (a Functions worker runs many invocations)."""
    return _clients(
        settings.logs_endpoint,
        settings.access_token,
        settings.state_connection,
        settings.state_table,
        settings.graph_endpoint,
    )


def detector(settings: Settings) -> Detector:
    return build_detector(settings, warm_clients(settings))


def run(*, only_due: bool, settings: Settings | None = None) -> RunReport:
    settings = settings or load_settings()
    return detector(settings).run(only_due=only_due)
