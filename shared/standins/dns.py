"""A local DNS server for the tests and the demo: UDP and TCP on one port on 127.0.0.1, as a real one behaves.

Names are configured in code: TXT records (several records, several strings in one record), NXDOMAIN,
SERVFAIL, no answer at all (the client times out), and answers too big for UDP. Those are served over UDP
truncated the way RFC 1035 4.2.1 / RFC 7766 say - the header with TC set, the question, no records - and in
full over TCP, so a real client (dnspython's resolver) has to retry over TCP exactly as it does against a real
server. (dnslib's own truncation drops the question, and dnspython rejects such a reply and then times out.)
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

UDP_LIMIT = 512  # without EDNS (dnspython's resolver sends none by default)
TTL = 300


@dataclass(frozen=True)
class Answer:
    """What the server does for one name: TXT records (each a sequence of strings), or a failure."""

    txt: tuple[tuple[str, ...], ...] = ()
    rcode: str = "NOERROR"  # NOERROR | NXDOMAIN | SERVFAIL
    silent: bool = False  # never answer: the client times out

    @staticmethod
    def records(*records: str | Sequence[str]) -> Answer:
        return Answer(txt=tuple((r,) if isinstance(r, str) else tuple(r) for r in records))


NXDOMAIN = Answer(rcode="NXDOMAIN")
SERVFAIL = Answer(rcode="SERVFAIL")
TIMEOUT = Answer(silent=True)

# A TXT record well over 512 bytes: only TCP can carry it (a long SPF include chain does this in real life).
BIG_SPF = (*(f"include:_spf{i:02d}.big.example " for i in range(60)), "-all")


def default_zones() -> dict[str, Answer]:
    """The names the tests and the demo use. contoso.com resolves; fabrikam.fr's servers fail."""
    return {
        "contoso.com": Answer.records(
            "v=spf1 include:spf.protection.outlook.com -all", "MS=ms12345678", "google-site-verification=abc"
        ),
        "_dmarc.contoso.com": Answer.records("v=DMARC1; p=reject; rua=mailto:dmarc@contoso.com"),
        "fabrikam.fr": SERVFAIL,
        "_dmarc.fabrikam.fr": SERVFAIL,
        # several strings in one record (RFC 7208 3.3: joined without spaces) and several records
        "split.example": Answer.records(
            ("v=spf1 ip4:192.0.2.0/24 ", "include:spf.protection.outlook.com ", "~all"), "other=record"
        ),
        "_dmarc.split.example": Answer.records(("v=DMARC1; ", "p=quarantine; ", "pct=100")),
        "nodmarc.example": Answer.records("v=spf1 -all"),
        "_dmarc.nodmarc.example": NXDOMAIN,
        "nx.example": NXDOMAIN,
        "_dmarc.nx.example": NXDOMAIN,
        "slow.example": TIMEOUT,
        "_dmarc.slow.example": TIMEOUT,
        "big.example": Answer.records(("v=spf1 ", *BIG_SPF)),
        "_dmarc.big.example": Answer.records("v=DMARC1; p=none"),
        "markup.example": Answer.records("v=spf1 include:[click](https://evil.example/x) <b>bold</b> {{Subject}} -all"),
        "_dmarc.markup.example": Answer.records("v=DMARC1; p=reject; ruf=mailto:**x**@evil.example <img src=x>"),
    }


@dataclass(frozen=True)
class Query:
    transport: str  # udp | tcp
    name: str
    rdtype: str


@dataclass
class _Zone:
    answers: dict[str, Answer] = field(default_factory=dict)
    queries: list[Query] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class DnsStandIn:
    """`with DnsStandIn() as dns: dns.server` -> "127.0.0.1:<port>" for KQLWATCH_DNS_SERVERS."""

    def __init__(self, zones: Mapping[str, Answer] | None = None) -> None:
        self._zone = _Zone(answers={_key(k): v for k, v in (zones or default_zones()).items()})
        self._udp: socketserver.ThreadingUDPServer | None = None
        self._tcp: socketserver.ThreadingTCPServer | None = None
        self._threads: list[threading.Thread] = []
        self.port = 0

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set(self, name: str, answer: Answer) -> None:
        with self._zone.lock:
            self._zone.answers[_key(name)] = answer

    def queries(self) -> list[Query]:
        with self._zone.lock:
            return list(self._zone.queries)

    def reset(self, zones: Mapping[str, Answer] | None = None) -> None:
        with self._zone.lock:
            self._zone.answers = {_key(k): v for k, v in (zones or default_zones()).items()}
            self._zone.queries.clear()

    def start(self) -> DnsStandIn:
        # UDP first on a free port, then TCP on the same number; another process may hold that TCP port.
        for _ in range(20):
            udp = _UdpServer(("127.0.0.1", 0), _UdpHandler, self._zone)
            port = udp.server_address[1]
            try:
                tcp = _TcpServer(("127.0.0.1", port), _TcpHandler, self._zone)
            except OSError:
                udp.server_close()
                continue
            self._udp, self._tcp, self.port = udp, tcp, port
            break
        else:
            raise OSError("no port free for both UDP and TCP on 127.0.0.1")
        for server in (self._udp, self._tcp):
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in (self._udp, self._tcp):
            if server is not None:
                server.shutdown()
                server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    def __enter__(self) -> DnsStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _key(name: str) -> str:
    return name.lower().rstrip(".")


class _UdpServer(socketserver.ThreadingUDPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[socketserver.BaseRequestHandler], zone: _Zone) -> None:
        self.zone = zone
        super().__init__(address, handler)


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[socketserver.BaseRequestHandler], zone: _Zone) -> None:
        self.zone = zone
        super().__init__(address, handler)


class _UdpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        reply = respond(self.server.zone, data, "udp")  # type: ignore[attr-defined]
        if reply is not None:
            sock.sendto(reply, self.client_address)


class _TcpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        conn: socket.socket = self.request
        conn.settimeout(10)
        try:
            while True:  # RFC 7766: several queries may share one connection
                head = _read(conn, 2)
                if head is None:
                    return
                data = _read(conn, struct.unpack("!H", head)[0])
                if data is None:
                    return
                reply = respond(self.server.zone, data, "tcp")  # type: ignore[attr-defined]
                if reply is None:
                    continue  # a silent name: no answer on TCP either
                conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            return


def _read(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def respond(zone: _Zone, data: bytes, transport: str) -> bytes | None:
    """The wire reply to one query, or None for no reply (malformed query or a silent name)."""
    try:
        query = dns.message.from_wire(data)
    except Exception:  # garbage on the port is dropped, as real servers do
        return None
    if not query.question:
        return None
    question = query.question[0]
    name = _key(question.name.to_text())
    with zone.lock:
        zone.queries.append(Query(transport, name, dns.rdatatype.to_text(question.rdtype)))
        answer = zone.answers.get(name, NXDOMAIN)
    if answer.silent:
        return None
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    response.set_rcode(dns.rcode.from_text(answer.rcode))
    if answer.rcode == "NOERROR" and question.rdtype == dns.rdatatype.TXT and answer.txt:
        response.answer.append(_txt_rrset(question.name, answer.txt))
    wire = response.to_wire()
    if transport == "udp" and len(wire) > UDP_LIMIT:
        return _truncated(query)
    return wire


def _txt_rrset(name: dns.name.Name, records: Iterable[tuple[str, ...]]) -> dns.rrset.RRset:
    texts = [" ".join(_quoted(s) for s in strings) for strings in records]
    return dns.rrset.from_text_list(name, TTL, dns.rdataclass.IN, dns.rdatatype.TXT, texts)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _truncated(query: dns.message.Message) -> bytes:
    """The header with TC set and the question, no records: what a server sends when the answer does not fit."""
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA | dns.flags.TC
    return response.to_wire()
