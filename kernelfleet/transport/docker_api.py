"""The Docker Engine API (v1.41, Debian 12's docker.io 20.10 and later), as the Docker
provisioner uses it: JSON requests, one events stream, container and service logs.

:class:`DockerApi` speaks HTTP over the engine's unix socket (``unix:///run/docker.sock``) or
TCP (``tcp://host:2376``, with TLS when CA or client certificate files are given), through one
aiohttp session. Engine errors become :class:`DockerError` with the engine's own message; a
socket that is missing or refuses becomes a DockerError with status 0 and a hint.

Answers that come as byte streams are parsed by pure functions that accept any bytes and never
raise: :func:`demux_log` (the 8-byte frame headers of a non-TTY container's log) and
:func:`split_events` (the events stream's concatenated JSON objects).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

API_VERSION = "v1.41"
#: The engine a setting of '' means (Docker's own default).
DEFAULT_HOST = "unix:///var/run/docker.sock"


class DockerError(Exception):
    """The engine said no (``status`` is its HTTP status) or could not be reached (0)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Endpoint:
    """Where the engine listens, and the TLS files for a TCP engine."""

    host: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""

    @property
    def url(self) -> str:
        return self.host or DEFAULT_HOST

    def describe(self) -> str:
        return self.url


def parse_host(host: str) -> tuple[str, str]:
    """``unix:///path`` → ("unix", "/path"); ``tcp://h:p`` → ("tcp", "h:p"). Raises
    ValueError for anything else."""
    scheme, sep, rest = host.partition("://")
    if not sep or not rest:
        raise ValueError(f"{host[:80]!r} is not unix:///path or tcp://host:port")
    if scheme == "unix" and rest.startswith("/"):
        return scheme, rest
    if scheme in ("tcp", "http", "https") and "/" not in rest:
        return "tcp", rest
    raise ValueError(f"{host[:80]!r} is not unix:///path or tcp://host:port")


def demux_log(data: bytes) -> str:
    """The text of a log answer: frames of ``[stream, 0, 0, 0, size (4 bytes, big endian)]``
    then *size* bytes (a container without a TTY). Bytes that do not look like frames (a TTY
    container's raw log) are taken as they are; a truncated last frame keeps what arrived."""
    out = bytearray()
    i = 0
    while i < len(data):
        head = data[i : i + 8]
        if len(head) < 8 or head[0] not in (0, 1, 2) or head[1:4] != b"\0\0\0":
            out += data[i:]  # not a frame: the rest is raw
            break
        size = int.from_bytes(head[4:8], "big")
        out += data[i + 8 : i + 8 + size]
        i += 8 + size
    return out.decode("utf-8", errors="replace")


def split_events(buffer: bytes) -> tuple[list[dict[str, Any]], bytes]:
    """The whole JSON objects at the front of *buffer* (the events stream writes one per line)
    and what is left of it. Lines that are not JSON objects are dropped."""
    events: list[dict[str, Any]] = []
    *lines, rest = buffer.split(b"\n")
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            events.append(value)
    if len(rest) > 1 << 20:  # a runaway line without an end: drop it
        rest = b""
    return events, rest


def filters(**values: list[str]) -> str:
    """The ``filters`` query parameter (a JSON object of lists)."""
    return json.dumps({k: v for k, v in values.items() if v})


class DockerApi:
    """One engine's API (see the module docstring)."""

    def __init__(self, endpoint: Endpoint, timeout: float = 30.0):
        self.endpoint = endpoint
        self.timeout = timeout
        scheme, where = parse_host(endpoint.url)
        self._unix = where if scheme == "unix" else ""
        tls = bool(endpoint.tls_ca or endpoint.tls_cert) or endpoint.url.startswith("https")
        self._base = "http://docker" if self._unix else f"{'https' if tls else 'http'}://{where}"
        self._ssl: ssl.SSLContext | None = None
        self._tls_error = ""
        if tls:
            try:
                self._ssl = ssl.create_default_context(cafile=endpoint.tls_ca or None)
                if endpoint.tls_cert:
                    self._ssl.load_cert_chain(endpoint.tls_cert, endpoint.tls_key or None)
            except (OSError, ssl.SSLError) as exc:  # raised at the first request, as JSON
                files = ", ".join(
                    f for f in (endpoint.tls_ca, endpoint.tls_cert, endpoint.tls_key) if f
                )
                self._tls_error = (
                    f"the TLS files of the Docker engine {endpoint.url} ({files}) cannot be "
                    f"used ({exc}): fix tls_ca, tls_cert and tls_key (KF_DOCKER_TLS_*)"
                )
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._tls_error:
            raise DockerError(0, self._tls_error)
        if self._session is None or self._session.closed:
            connector: aiohttp.BaseConnector
            if self._unix:
                connector = aiohttp.UnixConnector(path=self._unix)
            else:
                connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl else False)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _url(self, path: str) -> str:
        return f"{self._base}/{API_VERSION}{path}"

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        seconds: float | None = None,
    ) -> Any:
        """One request; the JSON answer (None when empty). Raises DockerError."""
        data = await self._raw(method, path, body, params, seconds)
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return data.decode(errors="replace")

    async def _raw(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        seconds: float | None = None,
    ) -> bytes:
        limit = aiohttp.ClientTimeout(total=seconds or self.timeout)
        try:
            async with self._client().request(
                method, self._url(path), json=body, params=params, timeout=limit
            ) as resp:
                data = await resp.read()
                if resp.status >= 400:
                    raise DockerError(resp.status, _message(data))
                return data
        except aiohttp.ClientConnectorCertificateError as exc:
            raise DockerError(0, self.untrusted(exc)) from None
        except aiohttp.ClientConnectorError as exc:
            raise DockerError(0, self.unreachable(exc)) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            where = self.endpoint.url
            raise DockerError(0, f"the Docker engine at {where} failed: {exc!r}") from None

    def untrusted(self, exc: BaseException) -> str:
        return (
            f"the Docker engine at {self.endpoint.url} has a certificate we do not trust "
            f"({str(exc)[:160]}): fix tls_ca (KF_DOCKER_TLS_CA)"
        )

    def unreachable(self, exc: BaseException) -> str:
        return (
            f"the Docker engine at {self.endpoint.url} cannot be reached ({exc.__class__.__name__}"
            f": {str(exc)[:120]}): start it, or fix the engine's address (KF_DOCKER_HOST)"
        )

    async def get(self, path: str, **params: str) -> Any:
        return await self.request("GET", path, params=params or None)

    async def post(self, path: str, body: Any = None, **params: str) -> Any:
        return await self.request("POST", path, body, params=params or None)

    async def delete(self, path: str, **params: str) -> Any:
        return await self.request("DELETE", path, params=params or None)

    async def log(self, path: str, tail: int, seconds: float = 10.0) -> str:
        """The end of a container's or service's log (*path* ends in ``/logs``)."""
        params = {"stdout": "1", "stderr": "1", "tail": str(tail)}
        return demux_log(await self._raw("GET", path, params=params, seconds=seconds))

    async def events(
        self,
        on_open: Callable[[], None] | None = None,
        since: float | None = None,
        **filter_values: list[str],
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The engine's events, as they come (ends when the engine closes the stream; raises
        DockerError when it cannot be opened). *on_open* is called once the engine answered;
        the engine subscribes a moment later, so *since* (a Unix time on the engine's clock)
        replays what happened from then on: pass a time before the caller last looked."""
        limit = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout)
        params = {"filters": filters(**filter_values)}
        if since is not None:
            params["since"] = f"{since:.9f}"
        try:
            async with self._client().get(
                self._url("/events"), params=params, timeout=limit
            ) as resp:
                if resp.status >= 400:
                    raise DockerError(resp.status, _message(await resp.read()))
                if on_open is not None:
                    on_open()
                buffer = b""
                async for chunk in resp.content.iter_any():
                    found, buffer = split_events(buffer + chunk)
                    for event in found:
                        yield event
        except aiohttp.ClientConnectorCertificateError as exc:
            raise DockerError(0, self.untrusted(exc)) from None
        except aiohttp.ClientConnectorError as exc:
            raise DockerError(0, self.unreachable(exc)) from None
        except aiohttp.ClientError as exc:
            where = self.endpoint.url
            raise DockerError(0, f"the events stream of {where} broke: {exc!r}") from None


def _message(data: bytes) -> str:
    try:
        value = json.loads(data)
    except ValueError:
        return data.decode(errors="replace")[:500]
    if isinstance(value, dict) and isinstance(value.get("message"), str):
        return str(value["message"])[:500]
    return str(value)[:500]


def path_id(name: str) -> str:
    """A container, service or image name as one path segment."""
    return quote(name, safe="")


__all__ = [
    "API_VERSION",
    "DockerApi",
    "DockerError",
    "Endpoint",
    "demux_log",
    "filters",
    "parse_host",
    "path_id",
    "split_events",
]
