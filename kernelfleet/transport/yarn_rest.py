"""The YARN ResourceManager's REST API, as the YARN provisioner uses it (async, no polling here).

:class:`YarnRest` talks to a list of ResourceManager web endpoints (``http(s)://rm:8088``).
The **active** one is found by its HA state (``GET /ws/v1/cluster/info``: ``haState`` is
``ACTIVE``; a non-HA RM says so too) and remembered; a request that finds it gone (connection
refused, a 307 from an RM that became standby, a 5xx) resolves it again, once, and retries.
So a failover is followed while kernels run, not once per launch. Redirects are never
followed: a standby answers with a 307 to the active one, which says nothing about which is
active when the active one is down (a 307 without ``Location``).

Answers are parsed by pure functions (:func:`parse_app`, :func:`parse_apps`,
:func:`parse_queues`, :func:`describe_queue`) that accept any JSON and never raise on odd
values: an RM is trusted, but a proxy in front of it, a version we did not test or a bug must
give a clear error rather than a traceback.

Authentication: Hadoop's pseudo authentication (``?user.name=``, :attr:`YarnRest.user`) or none.
Kerberos/SPNEGO is not supported (README). HTTPS endpoints are verified against the system's
CAs or :attr:`YarnRest.ca_certs`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse

log = logging.getLogger(__name__)

#: States of an application that has not ended.
LIVE_STATES = ("NEW", "NEW_SAVING", "SUBMITTED", "ACCEPTED", "RUNNING")
FINAL_STATES = ("FINISHED", "FAILED", "KILLED")
APP_ID = re.compile(r"^application_\d{1,20}_\d{1,10}$")
CONTAINER_ID = re.compile(r"^container(_e\d+)?_\d{1,20}_\d{1,10}_\d{1,10}_\d{1,12}$")
_HOST_PORT = re.compile(r"^[A-Za-z0-9._\-\[\]:]{1,300}$")


class RMError(Exception):
    """The ResourceManager could not be asked, or said no. :attr:`status` is the HTTP status
    (0 when no answer came)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.message = message
        self.status = status


class NoActiveRM(RMError):
    """No endpoint is the active ResourceManager (all down, or all standby)."""


# -- answers, parsed ---------------------------------------------------------------------------


def _text(value: Any, limit: int = 4000) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    number = float(value)
    return 0.0 if math.isnan(number) else number


@dataclass(frozen=True)
class AppReport:
    """What the RM says about one application (fields it left out are empty)."""

    id: str
    state: str = ""
    final_status: str = ""
    name: str = ""
    user: str = ""
    queue: str = ""
    diagnostics: str = ""
    tags: tuple[str, ...] = ()
    am_host: str = ""  # the AM's (the Spark driver's) host, from amHostHttpAddress
    am_container_logs: str = ""
    tracking_url: str = ""
    started_ms: int = 0
    allocated_mb: int = 0

    @property
    def live(self) -> bool:
        return self.state not in FINAL_STATES

    @property
    def exit_code(self) -> int | None:
        """None while it runs; 0 when it finished successfully, 1 when it failed, -9 killed."""
        if self.live:
            return None
        if self.state == "KILLED" or self.final_status == "KILLED":
            return -9
        return 0 if self.final_status == "SUCCEEDED" else 1

    @property
    def am_container(self) -> tuple[str, str] | None:
        """(NodeManager web address, AM container id), from ``amContainerLogs``."""
        parts = urlsplit(self.am_container_logs) if self.am_container_logs else None
        if parts is None or not parts.netloc:
            return None
        for piece in parts.path.split("/"):
            if CONTAINER_ID.match(piece):
                return f"{parts.scheme or 'http'}://{parts.netloc}", piece
        return None


def parse_app(obj: Any) -> AppReport | None:
    """One ``app`` object of the RM's answers; None when it has no valid id."""
    if not isinstance(obj, Mapping):
        return None
    app_id = obj.get("id")
    if not isinstance(app_id, str) or not APP_ID.match(app_id):
        return None
    tags_raw = obj.get("applicationTags")
    tags = tuple(t for t in tags_raw.split(",") if t) if isinstance(tags_raw, str) else ()
    am = _text(obj.get("amHostHttpAddress"), 300)
    am_host = am.rsplit(":", 1)[0] if am and _HOST_PORT.match(am) else ""
    return AppReport(
        id=app_id,
        state=_text(obj.get("state"), 40),
        final_status=_text(obj.get("finalStatus"), 40),
        name=_text(obj.get("name"), 300),
        user=_text(obj.get("user"), 300),
        queue=_text(obj.get("queue"), 300),
        diagnostics=_text(obj.get("diagnostics")),
        tags=tags,
        am_host=am_host.strip("[]"),
        am_container_logs=_text(obj.get("amContainerLogs"), 1000),
        tracking_url=_text(obj.get("trackingUrl"), 1000),
        started_ms=_int(obj.get("startedTime")),
        allocated_mb=_int(obj.get("allocatedMB")),
    )


def parse_apps(body: Any) -> list[AppReport]:
    """The apps of ``GET /ws/v1/cluster/apps`` (``{"apps": {"app": [...]}}``, or
    ``{"apps": null}`` when there are none)."""
    apps = body.get("apps") if isinstance(body, Mapping) else None
    items = apps.get("app") if isinstance(apps, Mapping) else None
    if not isinstance(items, list):
        return []
    return [report for report in map(parse_app, items) if report is not None]


@dataclass(frozen=True)
class QueueInfo:
    """One queue of the capacity scheduler, as far as a user needs to know."""

    name: str
    state: str = ""
    capacity: float = 0.0  # percent of the parent
    max_capacity: float = 0.0
    used_capacity: float = 0.0  # percent of its own capacity
    active_apps: int = 0
    pending_apps: int = 0
    am_limit_mb: int = 0
    am_used_mb: int = 0
    children: tuple[str, ...] = field(default_factory=tuple)


def parse_queues(body: Any) -> dict[str, QueueInfo]:
    """Every queue of ``GET /ws/v1/cluster/scheduler`` by its short name (and its full path)."""
    out: dict[str, QueueInfo] = {}
    info = body.get("scheduler") if isinstance(body, Mapping) else None
    root = info.get("schedulerInfo") if isinstance(info, Mapping) else None

    def walk(node: Any, depth: int) -> None:
        if not isinstance(node, Mapping) or depth > 20:
            return
        queues = node.get("queues")
        items = queues.get("queue") if isinstance(queues, Mapping) else None
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, Mapping) or not isinstance(item.get("queueName"), str):
                continue
            name = _text(item["queueName"], 200)
            am_limit = item.get("AMResourceLimit")
            am_used = item.get("usedAMResource")
            sub = item.get("queues")
            kids = sub.get("queue") if isinstance(sub, Mapping) else None
            queue = QueueInfo(
                name=name,
                state=_text(item.get("state"), 40),
                capacity=_num(item.get("capacity")),
                max_capacity=_num(item.get("maxCapacity")),
                used_capacity=_num(item.get("usedCapacity")),
                active_apps=_int(item.get("numActiveApplications")),
                pending_apps=_int(item.get("numPendingApplications")),
                am_limit_mb=_int(am_limit.get("memory")) if isinstance(am_limit, Mapping) else 0,
                am_used_mb=_int(am_used.get("memory")) if isinstance(am_used, Mapping) else 0,
                children=tuple(
                    _text(k.get("queueName"), 200)
                    for k in (kids if isinstance(kids, list) else [])
                    if isinstance(k, Mapping)
                ),
            )
            out.setdefault(name, queue)
            path = _text(item.get("queuePath"), 400)
            if path:
                out.setdefault(path, queue)
            walk(item, depth + 1)

    walk(root, 0)
    return out


def describe_queue(queue: QueueInfo | None, name: str) -> str:
    """One line about *queue* for an error message (*name* when the RM has no such queue)."""
    if queue is None:
        return f"the ResourceManager has no queue {name!r}"
    text = (
        f"queue {queue.name!r} is {queue.state or 'in an unknown state'}, "
        f"{queue.used_capacity:.0f}% of its {queue.capacity:.0f}% capacity in use "
        f"(max {queue.max_capacity:.0f}%), {queue.active_apps} running and "
        f"{queue.pending_apps} waiting applications"
    )
    if queue.am_limit_mb:
        text += f"; AM memory {queue.am_used_mb} of {queue.am_limit_mb} MB used"
    return text


# -- the client --------------------------------------------------------------------------------


class YarnRest:
    """An async client of one YARN cluster's ResourceManagers (see the module docstring)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        user: str = "",
        ca_certs: str = "",
        request_timeout: float = 10.0,
    ) -> None:
        self.endpoints = [e.rstrip("/") for e in endpoints if e.strip()]
        if not self.endpoints:
            raise ValueError("no ResourceManager endpoint is configured")
        self.user = user
        self.ca_certs = ca_certs
        self.request_timeout = request_timeout
        self.active: str | None = None
        self._resolving: asyncio.Future[str] | None = None
        self._client = AsyncHTTPClient(force_instance=True)

    def close(self) -> None:
        self._client.close()

    # -- requests -------------------------------------------------------------------------------
    def _request(
        self, url: str, method: str, body: Any, timeout: float | None, accept: str
    ) -> HTTPRequest:
        headers = {"Accept": accept}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        t = self.request_timeout if timeout is None else timeout
        return HTTPRequest(
            url,
            method=method,
            body=data,
            headers=headers,
            follow_redirects=False,
            connect_timeout=min(t, 5.0),
            request_timeout=t,
            ca_certs=self.ca_certs or None,
            validate_cert=True,
        )

    def _url(self, base: str, path: str, params: Mapping[str, str] | None) -> str:
        query = dict(params or {})
        if self.user:
            query["user.name"] = self.user
        return f"{base}{path}" + (f"?{urlencode(query)}" if query else "")

    async def _fetch(
        self,
        base: str,
        path: str,
        *,
        method: str = "GET",
        params: Mapping[str, str] | None = None,
        body: Any = None,
        wait: float | None = None,
        accept: str = "application/json",
    ) -> HTTPResponse:
        url = self._url(base, path, params)
        try:
            return await self._client.fetch(
                self._request(url, method, body, wait, accept), raise_error=False
            )
        except (TimeoutError, OSError, HTTPClientError) as exc:
            raise RMError(f"{base} cannot be reached: {exc}") from None

    async def cluster_info(self, base: str, wait: float | None = None) -> dict[str, Any]:
        """``/ws/v1/cluster/info`` of one endpoint (served by a standby too)."""
        resp = await self._fetch(base, "/ws/v1/cluster/info", wait=wait)
        if resp.code != 200:
            raise RMError(f"{base} answered {resp.code} to /ws/v1/cluster/info", resp.code)
        info = _json(resp).get("clusterInfo")
        return dict(info) if isinstance(info, Mapping) else {}

    async def states(self) -> dict[str, str]:
        """Every endpoint's HA state (``ACTIVE``, ``STANDBY``, ...) or why it has none."""

        async def one(base: str) -> str:
            try:
                info = await self.cluster_info(base, wait=min(self.request_timeout, 5.0))
            except RMError as exc:
                return f"unreachable ({exc.message})"
            state = info.get("haState")
            started = info.get("state")
            if started != "STARTED":
                return f"{state or '?'} (not started: {started})"
            return str(state or "?")

        answers = await asyncio.gather(*(one(b) for b in self.endpoints))
        return dict(zip(self.endpoints, answers, strict=True))

    async def resolve(self) -> str:
        """Find the active ResourceManager now (concurrent callers share one lookup)."""
        if self._resolving is not None:
            return await asyncio.shield(self._resolving)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._resolving = future
        try:
            states = await self.states()
            active = [base for base, state in states.items() if state == "ACTIVE"]
            if not active:
                said = "; ".join(f"{b}: {s}" for b, s in states.items())
                raise NoActiveRM(f"no active YARN ResourceManager ({said})")
            if active[0] != self.active:
                log.info("YARN ResourceManager %s is active", active[0])
            self.active = active[0]
            future.set_result(active[0])
            return active[0]
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: the callers got it
            raise
        finally:
            self._resolving = None

    async def call(
        self,
        path: str,
        *,
        method: str = "GET",
        params: Mapping[str, str] | None = None,
        body: Any = None,
        ok: tuple[int, ...] = (200,),
    ) -> tuple[int, Any]:
        """One request to the active RM (found again once if it moved): (status, JSON)."""
        for attempt in (0, 1):
            base = self.active if self.active and attempt == 0 else await self.resolve()
            try:
                resp = await self._fetch(base, path, method=method, params=params, body=body)
            except RMError:
                if attempt:
                    raise
                self.active = None
                continue
            if resp.code in ok:
                return resp.code, _json(resp)
            if resp.code in (307, 502, 503, 599) and not attempt:
                self.active = None  # a standby, or an RM going down: find the active one
                continue
            raise RMError(_error_text(base, path, resp), resp.code)
        raise AssertionError("unreachable")

    # -- what the provisioner asks ----------------------------------------------------------------
    async def apps(
        self, *, tags: Sequence[str] = (), states: Sequence[str] = ()
    ) -> list[AppReport]:
        params = {}
        if tags:
            params["applicationTags"] = ",".join(tags)
        if states:
            params["states"] = ",".join(states)
        _, body = await self.call("/ws/v1/cluster/apps", params=params)
        return parse_apps(body)

    async def app(self, app_id: str) -> AppReport | None:
        """One application; None when the RM does not know it."""
        if not APP_ID.match(app_id):
            raise ValueError(f"{app_id!r} is not an application id")
        status, body = await self.call(f"/ws/v1/cluster/apps/{app_id}", ok=(200, 404))
        if status == 404:
            return None
        return parse_app(body.get("app") if isinstance(body, Mapping) else None)

    async def kill(self, app_id: str) -> bool:
        """Ask the RM to kill *app_id*; True when it accepted (or the app had ended)."""
        if not APP_ID.match(app_id):
            raise ValueError(f"{app_id!r} is not an application id")
        status, _ = await self.call(
            f"/ws/v1/cluster/apps/{app_id}/state",
            method="PUT",
            body={"state": "KILLED"},
            ok=(200, 202, 404),
        )
        return status != 404

    async def queues(self) -> dict[str, QueueInfo]:
        _, body = await self.call("/ws/v1/cluster/scheduler")
        return parse_queues(body)

    async def nodes(self) -> list[dict[str, Any]]:
        _, body = await self.call("/ws/v1/cluster/nodes")
        nodes = body.get("nodes") if isinstance(body, Mapping) else None
        items = nodes.get("node") if isinstance(nodes, Mapping) else None
        return [dict(n) for n in items if isinstance(n, Mapping)] if isinstance(items, list) else []

    async def container_log(
        self, node_web: str, container_id: str, name: str, max_bytes: int
    ) -> str | None:
        """The end of a container's log file *name* (stdout, stderr) from its NodeManager,
        or None when it is gone."""
        if not CONTAINER_ID.match(container_id) or not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", name):
            raise ValueError("not a container id or log name")
        params = {"size": str(-int(max_bytes))} if max_bytes > 0 else None
        resp = await self._fetch(
            node_web,
            f"/ws/v1/node/containerlogs/{container_id}/{name}",
            params=params,
            accept="text/plain",  # the NodeManager answers 406 to application/json here
        )
        if resp.code != 200:
            return None
        text = (resp.body or b"")[-max_bytes:] if max_bytes > 0 else (resp.body or b"")
        return text.decode("utf-8", "replace")


def _json(resp: HTTPResponse) -> dict[str, Any]:
    try:
        value = json.loads(resp.body or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _error_text(base: str, path: str, resp: HTTPResponse) -> str:
    body = _json(resp)
    exc = body.get("RemoteException") if isinstance(body, Mapping) else None
    message = _text(exc.get("message"), 300) if isinstance(exc, Mapping) else ""
    return f"{base}{path} answered {resp.code}" + (f": {message}" if message else "")
