"""Start Azurite's Table service, and on request its Queue service (issue 14), from node_modules (pinned in
package.json), each on a free loopback port, in memory."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from shared.errors import KqlwatchError

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented): not a secret.
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Azurite:
    """`service` "table" (the state) or "queue" (kqlwatch-runs: Functions' queue trigger reads base64 text, so
    clients use the TextBase64 policies; azure-storage-queue 12.18 needs --skipApiVersionCheck)."""

    def __init__(self, port: int | None = None, *, service: str = "table") -> None:
        if service not in ("table", "queue"):
            raise ValueError(f"Azurite service {service!r}: table or queue")
        self.port = port or free_port()
        self.service = service
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        endpoint = "TableEndpoint" if self.service == "table" else "QueueEndpoint"
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"{endpoint}=http://127.0.0.1:{self.port}/{ACCOUNT};"
        )

    def start(self, timeout: float = 20.0) -> Azurite:
        binary = ROOT / "node_modules" / ".bin" / f"azurite-{self.service}"
        if not binary.exists():
            raise KqlwatchError(f"Azurite is not installed ({binary} missing): run `npm ci` in {ROOT}")
        self._proc = subprocess.Popen(
            [
                str(binary),
                f"--{self.service}Host",
                "127.0.0.1",
                f"--{self.service}Port",
                str(self.port),
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--silent",
                "--skipApiVersionCheck",
                # Azure's front ends keep an idle connection for minutes (4 min load-balancer idle timeout);
                # Azurite's default of 5 s closes pooled connections mid-run, and a batch POST sent on one that
                # is closing is reset (the SDK does not retry POST): a fault the real service does not show.
                *(["--tableKeepAliveTimeout", "240"] if self.service == "table" else []),  # azurite-queue has none
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise KqlwatchError(f"Azurite exited at start (code {self._proc.returncode}): {err[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise KqlwatchError(f"Azurite did not open port {self.port} within {timeout:.0f} s")

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc and self._proc.stderr:
            self._proc.stderr.close()
        self._proc = None

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
