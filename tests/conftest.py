"""Real stand-ins, started by the tests themselves: Azurite (Table Storage), an HTTPS Log Analytics query API
served to the real LogsQueryClient, and a Teams webhook receiver."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.runtime.detector import Detector
from shared.runtime.loganalytics import StaticTokenCredential
from shared.runtime.settings import Settings, load_settings
from shared.runtime.wiring import Tuning, build_detector, clients_for
from shared.standins.azurite import Azurite
from shared.standins.clock import Clock
from shared.standins.dns import DnsStandIn
from shared.standins.loganalytics import LogAnalyticsStandIn
from shared.standins.rows import email_row
from shared.standins.teams import WebhookReceiver
from tests.paths import ROOT, SEED_RULE, WORKSPACE

__all__ = ["ROOT", "SEED_RULE", "WORKSPACE"]  # re-exported for the integration and workbench tiers


_real_getaddrinfo = socket.getaddrinfo


def _is_loopback(host: object) -> bool:
    if host is None or host in ("localhost", b"localhost"):
        return True
    try:
        return ipaddress.ip_address(host.decode() if isinstance(host, bytes) else str(host)).is_loopback
    except ValueError:
        return False


def _loopback_only_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    """Tests never send traffic off this machine, not even a DNS query to the system resolver: any other name
    fails here as it would on an offline resolver (EAI_NONAME), so a test about an unresolvable host is local."""
    if not _is_loopback(host):
        raise socket.gaierror(socket.EAI_NONAME, f"Name or service not known ({host}: tests resolve loopback only)")
    return _real_getaddrinfo(host, *args, **kwargs)


def pytest_configure(config: pytest.Config) -> None:
    socket.getaddrinfo = _loopback_only_getaddrinfo
    # hunt and preview keep translations in the user's cache folder: tests (and the commands they start) keep
    # theirs in a folder of this run, so they neither read a developer's entries nor leave any behind.
    if not os.environ.get("KQLWATCH_CACHE_DIR"):
        folder = tempfile.mkdtemp(prefix="kqlwatch-test-cache-")
        os.environ["KQLWATCH_CACHE_DIR"] = folder
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    with Azurite() as server:
        yield server


@pytest.fixture(scope="session")
def azurite_queue() -> Iterator[Azurite]:
    """Issue 14: Azurite's queue service, for the fan-out (kqlwatch-runs)."""
    with Azurite(service="queue") as server:
        yield server


@pytest.fixture(scope="session")
def la_server() -> Iterator[LogAnalyticsStandIn]:
    with LogAnalyticsStandIn() as server:
        old = os.environ.get("REQUESTS_CA_BUNDLE")
        os.environ["REQUESTS_CA_BUNDLE"] = server.ca_file  # how users trust a custom CA, too
        yield server
        if old is None:
            os.environ.pop("REQUESTS_CA_BUNDLE", None)
        else:
            os.environ["REQUESTS_CA_BUNDLE"] = old


@pytest.fixture(scope="session")
def hook_server() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


@pytest.fixture(scope="session")
def dns_server() -> Iterator[DnsStandIn]:
    """Issue 16: the seed rule looks up DNS evidence; every test run of the detector asks this server only."""
    with DnsStandIn() as server:
        yield server


@pytest.fixture
def dns_standin(dns_server: DnsStandIn) -> Iterator[DnsStandIn]:
    dns_server.reset()
    yield dns_server
    dns_server.reset()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def la(la_server: LogAnalyticsStandIn, clock: Clock) -> Iterator[LogAnalyticsStandIn]:
    la_server.reset()
    la_server.clock = clock
    yield la_server
    la_server.reset()


@pytest.fixture
def hook(hook_server: WebhookReceiver) -> Iterator[WebhookReceiver]:
    hook_server.reset()
    yield hook_server
    hook_server.reset()


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "rules"
    directory.mkdir()
    shutil.copy(SEED_RULE, directory / SEED_RULE.name)
    return directory


@pytest.fixture
def cli_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The process environment a `kqlwatch` command sees: the test's settings, none of the machine's KQLWATCH_*."""
    for key in list(os.environ):
        if key.startswith("KQLWATCH_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def env(
    azurite: Azurite, la: LogAnalyticsStandIn, hook: WebhookReceiver, rules_dir: Path, dns_standin: DnsStandIn
) -> dict[str, str]:
    """Settings for one test: its own state table, the stand-ins, the seed rule."""
    return {
        "KQLWATCH_WORKSPACE_ID": WORKSPACE,
        "KQLWATCH_LOGS_ENDPOINT": la.endpoint,
        "KQLWATCH_ACCESS_TOKEN": la.token,
        "KQLWATCH_STATE_CONNECTION": azurite.connection_string,
        "KQLWATCH_STATE_TABLE": "t" + uuid.uuid4().hex[:20],
        "KQLWATCH_TEAMS_WEBHOOK_URL": hook.url("soc"),
        "KQLWATCH_RULES_DIR": str(rules_dir),
        "KQLWATCH_DNS_SERVERS": dns_standin.server,  # issue 16: never the platform resolver in tests
    }


MakeDetector = Callable[..., Detector]


def fast_tuning(settings: Settings, read_timeout: float = 5) -> Tuning:
    """The real clients with fast retries, the stand-ins' token (never a real Azure credential)."""
    return Tuning(
        logs={"retry_total": 1, "retry_backoff_factor": 0.01, "read_timeout": read_timeout},
        state_retry_total=1,
        teams={"retries": 1, "backoff": 0.01, "min_interval": 0.0, "timeout": (2.0, 2.0)},
        credential=StaticTokenCredential(settings.access_token or ""),
    )


@pytest.fixture
def make_detector(env: dict[str, str], clock: Clock) -> Iterator[MakeDetector]:
    """Build a Detector wired to the real SDK clients and the stand-ins (fast retries for tests)."""
    opened: list[Any] = []

    def make(settings: Settings | None = None, *, read_timeout: float = 5, **overrides: str) -> Detector:
        settings = settings or load_settings({**env, **overrides})
        clients = clients_for(settings, fast_tuning(settings, read_timeout))
        opened.extend([clients.logs, clients.store, clients.teams, clients.leases])
        return build_detector(settings, clients, clock)

    yield make
    for client in opened:
        client.close()


def email(clock: Clock, **fields: Any) -> dict[str, Any]:
    """An EmailEvents row from 15 minutes ago that the seed rule matches unless fields say otherwise."""
    return email_row(clock.now - timedelta(minutes=15), **fields)


def delivered_ids(hook: WebhookReceiver, name: str = "soc") -> list[str]:
    """NetworkMessageIds shown in the cards posted to `name`, in order (one entry per appearance)."""
    ids: list[str] = []
    for card in hook.cards(name):
        for block in card["body"]:
            for run in block.get("inlines", []):
                ids.extend(re.findall(r"NetworkMessageId: ([^\s·\u00a0]+)", run.get("text", "")))
    return ids
