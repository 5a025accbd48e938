"""The allow-list proxy a sandboxed build reaches the package index through.

A build sees the network only through this proxy (:mod:`kernelfleet.envs.sandbox` puts it in a
network namespace whose one way out is a forwarder to here). It understands two requests:

- ``CONNECT host:port`` (what pip and uv send for an ``https://`` index through an HTTP proxy):
  the proxy opens a TCP connection to *host* and splices bytes both ways;
- ``GET``/``HEAD http://host[:port]/path`` (for a plain-``http://`` index): forwarded as one
  request (``Connection: close``, hop-by-hop headers dropped, ``Host`` taken from the URL),
  and the response spliced back.

Anything else — another method, a host that is not allowed, a malformed head — is answered
``403`` with a one-line reason in the status line and the body, and the connection closed.

**Allowed hosts** are ``host`` or ``host:port`` (``[v6]:port`` for IPv6 literals). Without a
port, a pattern allows 443 for ``CONNECT`` and 80 for plain HTTP. Names compare
case-insensitively, with a trailing dot ignored; there are no wildcards.

**Not an open relay.** A name is resolved once and the proxy connects to the addresses it
checked (no second lookup a DNS answer could change). Loopback (127.0.0.0/8, ::1), link-local
(169.254.0.0/16 — cloud metadata —, fe80::/10), unspecified, multicast addresses and the
addresses of this machine's own interfaces are refused *unless the allowed pattern names them*:
an IP-literal pattern (``127.0.0.1:3141``) connects to exactly that address, and the pattern
``localhost`` may reach loopback. So an allowed name whose DNS answer points inside the
gateway (rebinding) reaches nothing. (An address is the gateway's own when a socket can be
bound to it; with ``net.ipv4.ip_nonlocal_bind=1`` every address would be, and every name
refused: allow addresses instead.)

The request-head parsers are pure and total: for any bytes they return a request or raise
:class:`ProxyRequestError` (property-tested). The connection handler never lets an exception
out: a failure is a ``403``/``502``/``504`` with a one-line reason, or a closed connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger("kernelfleet.envs")

#: The longest request head (request line and headers) the proxy reads.
MAX_HEAD = 16 * 1024
#: Seconds a client has to send its request head, and the proxy to connect upstream.
HEAD_TIMEOUT = 30.0
CONNECT_TIMEOUT = 30.0
#: Connections one proxy serves at once (uv opens up to 50 downloads in parallel).
MAX_CONNECTIONS = 256
CHUNK = 64 * 1024

Method = Literal["CONNECT", "GET", "HEAD"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``resolve(host, port)`` → the addresses to try, in order (a test seam; default: DNS).
Resolver = Callable[[str, int], Awaitable[list[str]]]

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_PORT = re.compile(r"[0-9]{1,5}")
#: Headers never forwarded: those about one connection, not the request (RFC 9110 §7.6.1),
#: the proxy's own, and ``Host`` (written from the URL).
DROPPED_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)


class ProxyRequestError(ValueError):
    """A request head the proxy does not serve; the message is the one-line reason."""


@dataclass(frozen=True)
class ProxyRequest:
    """A parsed request head. *host* is lower-case, without brackets or a trailing dot; an IP
    literal is in its canonical form. *target* is the origin-form (``/path?query``) to send
    upstream for GET/HEAD, ``""`` for CONNECT."""

    method: Method
    host: str
    port: int
    target: str
    headers: tuple[tuple[str, str], ...]

    @property
    def authority(self) -> str:
        return format_authority(self.host, self.port)


@dataclass(frozen=True)
class HostPattern:
    """One allowed host: *port* ``None`` means 443 for CONNECT and 80 for plain HTTP."""

    host: str
    port: int | None

    @property
    def literal(self) -> IPAddress | None:
        return _ip_or_none(self.host)

    def allows(self, request: ProxyRequest) -> bool:
        port = self.port if self.port is not None else default_port(request.method)
        return request.host == self.host and request.port == port

    def __str__(self) -> str:
        if self.port is None:
            return f"[{self.host}]" if ":" in self.host else self.host
        return format_authority(self.host, self.port)


def default_port(method: Method) -> int:
    return 443 if method == "CONNECT" else 80


def format_authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _ip_or_none(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def parse_host(text: str) -> str:
    """A host as a request or a pattern writes it → its canonical form; ProxyRequestError."""
    if text.startswith("["):
        if not text.endswith("]") or "%" in text:
            raise ProxyRequestError(f"{text[:80]!r} is not a valid IPv6 address in brackets")
        try:
            return str(ipaddress.IPv6Address(text[1:-1]))
        except ValueError:
            raise ProxyRequestError(
                f"{text[:80]!r} is not a valid IPv6 address in brackets"
            ) from None
    name = text.lower()
    if name.endswith(".") and len(name) > 1:
        name = name[:-1]
    literal = _ip_or_none(name)
    if isinstance(literal, ipaddress.IPv4Address):
        return str(literal)
    if len(name) > 253 or not _HOSTNAME.fullmatch(name) or name.rsplit(".", 1)[-1].isdigit():
        raise ProxyRequestError(f"{text[:80]!r} is not a valid host name")
    return name


def parse_port(text: str) -> int:
    if not _PORT.fullmatch(text) or not 0 < int(text) < 65536:
        raise ProxyRequestError(f"{text[:20]!r} is not a valid port")
    return int(text)


def split_authority(text: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` → (canonical host, port or None)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ProxyRequestError(f"{text[:80]!r} has no closing ']'")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ProxyRequestError(f"{text[:80]!r} is not host:port")
        port = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif ":" in text:
        raise ProxyRequestError(f"{text[:80]!r}: write an IPv6 address in brackets")
    else:
        host, port = text, None
    return parse_host(host), (parse_port(port) if port is not None else None)


def parse_allowed(text: str) -> HostPattern:
    """One allowed-host entry; ValueError (ProxyRequestError) names what is wrong."""
    host, port = split_authority(text.strip())
    return HostPattern(host, port)


def parse_absolute_http(uri: str) -> tuple[str, int, str]:
    """``http://host[:port][/path][?query]`` → (host, port, origin-form target)."""
    if uri[:7].lower() != "http://":
        if uri[:8].lower() == "https://":
            raise ProxyRequestError(
                "an https:// URL must be reached with CONNECT, not sent to the proxy"
            )
        raise ProxyRequestError("only absolute http:// URLs are forwarded (no origin-form)")
    rest = uri[7:]
    cut = len(rest)
    for sep in "/?#":
        pos = rest.find(sep)
        if 0 <= pos < cut:
            cut = pos
    authority, target = rest[:cut], rest[cut:]
    if "@" in authority:
        raise ProxyRequestError("a URL with user information is not forwarded")
    if not authority:
        raise ProxyRequestError("the URL has no host")
    host, port = split_authority(authority)
    target = target.split("#", 1)[0]
    if not target.startswith("/"):
        target = "/" + target
    return host, port if port is not None else 80, target


def split_head(buffer: bytes) -> tuple[bytes, bytes] | None:
    """(head with its blank line, bytes after it) once *buffer* holds a whole head, else
    ``None``; ProxyRequestError when no head ends within :data:`MAX_HEAD` bytes."""
    end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD)
    if end < 0:
        if len(buffer) >= MAX_HEAD:
            raise ProxyRequestError(f"the request head is longer than {MAX_HEAD} bytes")
        return None
    return buffer[: end + 4], buffer[end + 4 :]


def parse_request_head(head: bytes) -> ProxyRequest:
    """A request head (request line, header lines, blank line; CRLF line ends) → the
    request; :class:`ProxyRequestError` for anything the proxy does not serve."""
    if len(head) > MAX_HEAD:
        raise ProxyRequestError(f"the request head is longer than {MAX_HEAD} bytes")
    if not head.endswith(b"\r\n\r\n"):
        raise ProxyRequestError("the request head does not end with an empty line")
    lines = head[:-4].split(b"\r\n")
    for line in lines:
        if b"\r" in line or b"\n" in line or b"\0" in line:
            raise ProxyRequestError("the request head has a stray CR, LF or NUL")
    try:
        request_line = lines[0].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyRequestError("the request line is not ASCII") from None
    parts = request_line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise ProxyRequestError("the request line is not 'METHOD target HTTP/1.x'")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise ProxyRequestError(f"{version[:20]!r} is not HTTP/1.0 or HTTP/1.1")
    if any(not 0x21 <= ord(c) <= 0x7E for c in target):
        raise ProxyRequestError("the request target has control characters")
    headers = tuple(_parse_header(line) for line in lines[1:])
    if method == "CONNECT":
        host, port = split_authority(target)
        return ProxyRequest("CONNECT", host, port if port is not None else 443, "", headers)
    if method not in ("GET", "HEAD"):
        shown = method[:20] if _TOKEN.fullmatch(method) else "this method"
        raise ProxyRequestError(f"{shown} is not allowed: only CONNECT, GET and HEAD")
    for name, value in headers:
        lowered = name.lower()
        if lowered == "transfer-encoding" or (lowered == "content-length" and value != "0"):
            raise ProxyRequestError(f"a {method} with a body is not forwarded")
    host, port, origin = parse_absolute_http(target)
    return ProxyRequest("GET" if method == "GET" else "HEAD", host, port, origin, headers)


def _parse_header(line: bytes) -> tuple[str, str]:
    if line[:1] in (b" ", b"\t"):
        raise ProxyRequestError("folded header lines are not accepted")
    name, sep, value = line.partition(b":")
    text_name = name.decode("latin-1")
    if not sep or not _TOKEN.fullmatch(text_name):
        raise ProxyRequestError("a header line is not 'Name: value'")
    return text_name, value.strip(b" \t").decode("latin-1")


def forwarded_head(request: ProxyRequest) -> bytes:
    """The head sent upstream for a GET/HEAD: origin-form, ``Host`` from the URL, no hop-by-hop
    header (nor one the client's ``Connection`` names), ``Connection: close``."""
    named: set[str] = set()
    for name, value in request.headers:
        if name.lower() in ("connection", "proxy-connection"):
            named.update(part.strip().lower() for part in value.split(","))
    lines = [f"{request.method} {request.target} HTTP/1.1"]
    host = request.authority
    if request.port == 80:
        host = f"[{request.host}]" if ":" in request.host else request.host
    lines.append(f"Host: {host}")
    for name, value in request.headers:
        lowered = name.lower()
        if lowered not in DROPPED_HEADERS and lowered not in named:
            lines.append(f"{name}: {value}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def one_line(text: str, limit: int = 300) -> str:
    """*text* as printable ASCII on one line (a status line's reason phrase)."""
    flat = "".join(c if 0x20 <= ord(c) < 0x7F else "?" for c in " ".join(text.split()))
    return flat[:limit]


def error_response(status: int, reason: str) -> bytes:
    """A complete ``HTTP/1.1`` response whose status line and body carry *reason*."""
    phrase = one_line(reason)
    body = (phrase + "\n").encode("ascii")
    return (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode("ascii") + body


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def forbidden_address(address: IPAddress) -> str | None:
    """Why the proxy must not connect to *address* on a name's say-so, else ``None``."""
    address = _unmapped(address)
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_multicast:
        return "a multicast address"
    return None


def is_own_address(address: IPAddress) -> bool:
    """Whether *address* belongs to one of this machine's interfaces (it can be bound)."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(address), 0))
    except OSError:
        return False
    return True


async def resolve_dns(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class Refused(Exception):
    """A request answered with *status* and a one-line reason instead of being served."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class AllowListProxy:
    """An HTTP proxy that connects only to *allowed* hosts (``host`` / ``host:port``
    entries; ValueError names a bad one). *on_refusal* receives the one-line reason of each
    request refused or not served (the sandbox shows them in the build's output). Serve with
    :meth:`serve_unix` or :meth:`serve_tcp`, stop with :meth:`close` (which also ends open
    tunnels)."""

    def __init__(
        self,
        allowed: Iterable[str],
        *,
        on_refusal: Callable[[str], None] | None = None,
        resolve: Resolver = resolve_dns,
        connect_timeout: float = CONNECT_TIMEOUT,
    ):
        self.patterns = tuple(parse_allowed(entry) for entry in allowed if entry.strip())
        self.on_refusal = on_refusal
        self.resolve = resolve
        self.connect_timeout = connect_timeout
        #: One lookup per (host, port) for the proxy's life (one build): uv opens up to 50
        #: connections at once, and 50 simultaneous lookups took this machine's resolver
        #: 5-10 s (one: under 1 ms). Concurrent askers share the lookup in flight.
        self._resolved: dict[tuple[str, int], asyncio.Future[list[str]]] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def describe_allowed(self) -> str:
        return ", ".join(str(p) for p in self.patterns) or "none"

    async def serve_unix(self, path: str) -> None:
        self._server = await asyncio.start_unix_server(self._handle, path=path)

    async def serve_tcp(self, host: str = "127.0.0.1") -> int:
        """Listen on *host* (port chosen by the kernel); the port."""
        self._server = await asyncio.start_server(self._handle, host=host, port=0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A task of our own (not the server's): close() may cancel it without asyncio logging
        # the cancellation as an error of the connection callback.
        task = asyncio.create_task(self._connection(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if len(self._tasks) > MAX_CONNECTIONS:
                raise Refused(503, f"the build has more than {MAX_CONNECTIONS} connections open")
            await self._serve(reader, writer)
        except Refused as exc:
            if self.on_refusal is not None:
                self.on_refusal(exc.reason)
            with contextlib.suppress(OSError):
                writer.write(error_response(exc.status, exc.reason))
                await writer.drain()
        except asyncio.CancelledError:
            raise
        except OSError:
            pass  # a client or upstream that went away
        except Exception:
            log.exception("the build proxy failed on a connection")
        finally:
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, early = await self._read_head(reader)
        try:
            request = parse_request_head(head)
        except ProxyRequestError as exc:
            raise Refused(403, f"refused: {exc}") from None
        pattern = next((p for p in self.patterns if p.allows(request)), None)
        verb = "CONNECT" if request.method == "CONNECT" else f"{request.method} http://"
        if pattern is None:
            raise Refused(
                403,
                f"{verb} {request.authority} refused: not an allowed host of builds "
                f"(allowed: {self.describe_allowed()}; KF_ENV_ALLOWED_HOSTS adds one)",
            )
        up_reader, up_writer = await self._connect(request, pattern)
        try:
            if request.method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if early:
                    up_writer.write(early)
                await writer.drain()
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            else:
                up_writer.write(forwarded_head(request))
                await _pipe(up_reader, writer)
        finally:
            up_writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await up_writer.wait_closed()

    async def _read_head(self, reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
        buffer = b""
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                while True:
                    try:
                        parts = split_head(buffer)
                    except ProxyRequestError as exc:
                        raise Refused(403, f"refused: {exc}") from None
                    if parts is not None:
                        return parts
                    chunk = await reader.read(4096)
                    if not chunk:
                        raise OSError("the client closed before sending a request")
                    buffer += chunk
        except TimeoutError:
            raise Refused(403, f"refused: no request head within {HEAD_TIMEOUT:g} s") from None

    async def _lookup(self, host: str, port: int) -> list[str]:
        key = (host.lower(), port)
        pending = self._resolved.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self.resolve(host, port))
            self._resolved[key] = pending
        try:
            return list(await asyncio.shield(pending))
        except OSError:
            if self._resolved.get(key) is pending:
                del self._resolved[key]  # a failure is asked again by the next connection
            raise

    async def addresses(self, request: ProxyRequest, pattern: HostPattern) -> list[str]:
        """The addresses the proxy may connect to for *request* (allowed by *pattern*)."""
        if pattern.literal is not None:
            return [str(pattern.literal)]
        try:
            found = await self._lookup(request.host, request.port)
        except OSError as exc:
            raise Refused(502, f"{request.host} does not resolve from the gateway: {exc}") from None
        allowed: list[str] = []
        reasons: list[str] = []
        for text in found:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            why = forbidden_address(address)
            if why is None and is_own_address(address):
                why = "an address of the gateway itself"
            if pattern.host == "localhost" and _unmapped(address).is_loopback:
                why = None  # the pattern names loopback itself
            if why is None:
                allowed.append(text)
            else:
                reasons.append(f"{address} is {why}")
        if not allowed:
            raise Refused(
                403,
                f"{request.authority} refused: {'; '.join(reasons) or 'no address'} (allow "
                "the address itself, e.g. 127.0.0.1:3141, to reach it)",
            )
        return allowed

    async def _connect(
        self, request: ProxyRequest, pattern: HostPattern
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        last: Exception | None = None
        for address in await self.addresses(request, pattern):
            try:
                async with asyncio.timeout(self.connect_timeout):
                    return await asyncio.open_connection(address, request.port)
            except (OSError, TimeoutError) as exc:
                last = exc
        if isinstance(last, TimeoutError):
            raise Refused(
                504, f"{request.authority} did not answer within {self.connect_timeout:g} s"
            )
        raise Refused(502, f"{request.authority} refused the connection: {last}")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy *reader* to *writer* until end of file, then half-close *writer*."""
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()
