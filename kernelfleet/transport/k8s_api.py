"""The Kubernetes API as JSON, over ``kubernetes_asyncio``'s configuration and HTTP client.

``kubernetes_asyncio`` (the maintained asyncio port of Kubernetes' own Python client) loads the
credentials — a kubeconfig, the in-cluster service account (its token re-read as it rotates), or
an explicit server, token and CA — and owns the TLS connection pool. Objects travel as plain
``dict``s in their JSON form (``metadata.resourceVersion``, not ``metadata.resource_version``):
the provisioner reads a few fields of each pod, so building typed models for every watch event
would only cost CPU. Errors become :class:`KubeError` with the API's own ``Status`` message.

One :class:`KubeApi` per backend and event loop; :meth:`KubeApi.close` releases its pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

log = logging.getLogger(__name__)

#: Seconds a plain request (not a watch or a log) may take.
REQUEST_TIMEOUT = 30.0
#: Seconds the API server keeps one watch open before we renew it.
WATCH_SECONDS = 240
IN_CLUSTER_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105


class KubeError(Exception):
    """A failed API call: *status* (HTTP, 0 when the server was not reached), the API's
    *reason* (``Forbidden``, ``NotFound``, ``AlreadyExists``, ``Expired``, …) and *message*."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Connection:
    """Where the API is and who we are there; every field empty means: the in-cluster service
    account when running in a pod, else the default kubeconfig ($KUBECONFIG, ~/.kube/config)."""

    kubeconfig: str = ""
    context: str = ""
    server: str = ""
    token_file: str = ""
    ca_file: str = ""

    def describe(self) -> str:
        if self.server:
            return self.server
        if self.kubeconfig:
            return f"kubeconfig {self.kubeconfig}"
        return "the in-cluster service account or the default kubeconfig"


async def _configuration(conn: Connection) -> Any:
    from kubernetes_asyncio import client, config

    cfg = client.Configuration()
    if conn.server:
        cfg.host = conn.server.rstrip("/")
        if conn.ca_file:
            cfg.ssl_ca_cert = conn.ca_file
        if conn.token_file:
            token = await asyncio.to_thread(_read_text, conn.token_file)
            cfg.api_key = {"BearerToken": f"Bearer {token.strip()}"}
        return cfg
    in_cluster = await asyncio.to_thread(os.path.exists, IN_CLUSTER_TOKEN)
    if conn.kubeconfig or not in_cluster:
        await config.load_kube_config(
            config_file=conn.kubeconfig or None,
            context=conn.context or None,
            client_configuration=cfg,
        )
    else:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    return cfg


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


class KubeApi:
    """JSON calls to one API server (see the module docstring)."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self._client: Any = None
        self._lock = asyncio.Lock()

    async def client(self) -> Any:
        async with self._lock:
            if self._client is None:
                from kubernetes_asyncio.client import ApiClient

                try:
                    cfg = await _configuration(self.conn)
                except Exception as exc:  # a missing or broken kubeconfig, a bad token file
                    raise KubeError(0, "Config", f"{self.conn.describe()}: {exc}") from None
                self._client = ApiClient(configuration=cfg)
            return self._client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    async def _call(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        *,
        seconds: float | tuple[float, float] | None = REQUEST_TIMEOUT,
        accept: str = "application/json",
    ) -> Any:
        client = await self.client()
        params = [(k, _query_value(v)) for k, v in (query or {}).items() if v is not None]
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            resp = await client.call_api(
                path,
                method,
                query_params=params,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                response_types_map={},
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=seconds,
            )
        except (TimeoutError, OSError) as exc:
            raise KubeError(0, "Unreachable", f"{self.conn.describe()}: {exc}") from None
        except Exception as exc:  # aiohttp's ClientError and kubernetes_asyncio's own
            raise KubeError(0, "Unreachable", f"{self.conn.describe()}: {exc}") from None
        if resp.status == 401 and self.conn.token_file:
            await self.close()  # a rotated token file: read it again on the next call
        return resp

    async def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> dict[str, Any]:
        """One call; the response's JSON object. Raises :class:`KubeError`."""
        resp = await self._call(method, path, query, body)
        try:
            data = await resp.read()
        finally:
            resp.release()
        return _checked(resp.status, data)

    async def text(self, path: str, query: Mapping[str, Any] | None = None) -> str:
        """A plain-text resource (a pod's log)."""
        resp = await self._call("GET", path, query, accept="*/*")
        try:
            data = await resp.read()
        finally:
            resp.release()
        if not 200 <= resp.status <= 299:
            _checked(resp.status, data)
        return bytes(data).decode("utf-8", "replace")

    async def get(self, path: str, **query: Any) -> dict[str, Any]:
        return await self.request("GET", path, query)

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("POST", path, None, dict(body))

    async def delete(
        self, path: str, grace: int | None = None, missing_ok: bool = True, **query: Any
    ) -> dict[str, Any] | None:
        body: dict[str, Any] = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "propagationPolicy": "Background",
        }
        if grace is not None:
            body["gracePeriodSeconds"] = grace
        try:
            return await self.request("DELETE", path, query, body)
        except KubeError as exc:
            if exc.status == 404 and missing_ok:
                return None
            raise

    async def watch(
        self, path: str, resource_version: str, **query: Any
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(type, object) of each event of one watch request from *resource_version* until
        the server closes it (after about :data:`WATCH_SECONDS`). An ``ERROR`` event (e.g.
        410 Expired) raises :class:`KubeError`; ``BOOKMARK`` events are yielded too."""
        params = {
            **query,
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": WATCH_SECONDS,
        }
        # no total timeout, but a read timeout: a connection dropped silently (a NAT or load
        # balancer) must not freeze every kernel's liveness
        resp = await self._call("GET", path, params, seconds=(10, WATCH_SECONDS + 30))
        try:
            if not 200 <= resp.status <= 299:
                _checked(resp.status, await resp.read())
            while True:
                line = await resp.content.readline()
                if not line:
                    return
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                kind, obj = event.get("type"), event.get("object")
                if not isinstance(kind, str) or not isinstance(obj, dict):
                    continue
                if kind == "ERROR":
                    raise KubeError(
                        int(obj.get("code") or 500),
                        str(obj.get("reason") or "Error"),
                        str(obj.get("message") or ""),
                    )
                yield kind, obj
        finally:
            resp.release()

    async def can_i(
        self, verb: str, resource: str, namespace: str = "", group: str = "", sub: str = ""
    ) -> tuple[bool, str]:
        """A SelfSubjectAccessReview: (allowed, the API's reason when it says why)."""
        attrs: dict[str, Any] = {"verb": verb, "resource": resource, "group": group}
        if namespace:
            attrs["namespace"] = namespace
        if sub:
            attrs["subresource"] = sub
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attrs},
        }
        out = await self.create("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", review)
        status = out.get("status") or {}
        return bool(status.get("allowed")), str(status.get("reason") or "")


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _checked(status: int, data: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(data) if data else {}
    except ValueError:
        obj = {"message": bytes(data[:300]).decode("utf-8", "replace")}
    if not isinstance(obj, dict):
        obj = {}
    if 200 <= status <= 299:
        return obj
    raise KubeError(status, str(obj.get("reason") or "Error"), str(obj.get("message") or ""))


def ns_path(namespace: str, resource: str, name: str = "", sub: str = "") -> str:
    """``/api/v1/namespaces/{ns}/{resource}[/{name}[/{sub}]]`` (core group), quoted."""
    path = f"/api/v1/namespaces/{quote(namespace, safe='')}/{resource}"
    if name:
        path += "/" + quote(name, safe="")
    if sub:
        path += "/" + sub
    return path


def label_selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
