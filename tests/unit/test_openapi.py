"""The OpenAPI document (kernelfleet/gateway/openapi.yaml) matches the routes the gateway serves."""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import pytest
import yaml
from tornado import web
from tornado.httpclient import AsyncHTTPClient

from kernelfleet.dashboard.app import install as install_dashboard
from kernelfleet.gateway import rest
from kernelfleet.gateway.app import Gateway
from kernelfleet.gateway.websocket import KernelWebsocketHandler
from tests.conftest import TOKEN, make_config

HTTP_METHODS = ("get", "head", "post", "put", "patch", "delete", "options")
_LITERAL_ALTERNATION = re.compile(r"^\w+(\|\w+)*$")
DASHBOARD = "/admin"


def load_document() -> dict[str, Any]:
    text = resources.files("kernelfleet.gateway").joinpath("openapi.yaml").read_text("utf-8")
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    return doc


def regex_to_paths(pattern: str) -> list[str]:
    """OpenAPI paths for a tornado route regex rooted at base_url '/'.

    ``(?P<kernel_id>...)`` becomes ``{kernel_id}``; a group that is a plain alternation of
    words (``(?P<action>interrupt|restart)``) becomes one path per word. A trailing ``/?``
    (optional slash), ``$`` and a leading ``(?i)`` flag are dropped.
    """
    pattern = pattern.removeprefix("(?i)").removesuffix("$").removesuffix("/?")
    paths = [""]
    i = 0
    while i < len(pattern):
        if pattern.startswith("(?P<", i):
            name_end = pattern.index(">", i)
            name = pattern[i + 4 : name_end]
            depth, j = 1, name_end + 1
            while depth:
                if pattern[j] == "\\":
                    j += 2
                    continue
                depth += {"(": 1, ")": -1}.get(pattern[j], 0)
                j += 1
            body = pattern[name_end + 1 : j - 1]
            if _LITERAL_ALTERNATION.match(body):
                paths = [p + word for p in paths for word in body.split("|")]
            else:
                paths = [p + "{" + name + "}" for p in paths]
            i = j
        else:
            paths = [p + pattern[i] for p in paths]
            i += 1
    for path in paths:
        assert not re.search(r"[()\[\]\\?*+|^$]", path), f"unmapped regex in {pattern!r}"
    return paths


def test_regex_to_paths() -> None:
    kid = r"(?P<kernel_id>\w+-\w+-\w+-\w+-\w+)"
    assert regex_to_paths(rf"/api/kernels/{kid}/(?P<action>interrupt|restart)/?") == [
        "/api/kernels/{kernel_id}/interrupt",
        "/api/kernels/{kernel_id}/restart",
    ]
    assert regex_to_paths(r"/kernelspecs/(?P<name>[\w.\-%]+)/(?P<path>.+)") == [
        "/kernelspecs/{name}/{path}"
    ]
    assert regex_to_paths(rf"(?i)/api/kernels/{kid}/channels/?$") == [
        "/api/kernels/{kernel_id}/channels"
    ]


def implemented_methods(handler: type[web.RequestHandler]) -> set[str]:
    return {m for m in HTTP_METHODS if getattr(handler, m) is not getattr(web.RequestHandler, m)}


@pytest.fixture
def served_routes() -> dict[str, type[web.RequestHandler]]:
    """Every route of the real tornado app (REST + websocket) as {OpenAPI path: handler}."""
    gw = Gateway(config=make_config())
    install_dashboard(gw)
    try:
        app = gw.make_app()
    finally:
        gw.registry.context.destroy(linger=0)
    out: dict[str, type[web.RequestHandler]] = {}
    for rule in app.wildcard_router.rules:
        pattern = rule.matcher.regex.pattern  # type: ignore[attr-defined]
        if pattern.startswith(DASHBOARD):
            # The admin dashboard's pages and its JSON/event-stream endpoints are not the Kernel
            # Gateway API: they serve the dashboard's own pages (cookie session + CSRF token),
            # change with them, and are documented in the README ("Admin dashboard").
            continue
        for path in regex_to_paths(pattern):
            assert path not in out, f"two routes map to {path}"
            out[path] = rule.target
    return out


def test_document_parses_and_is_openapi_3_1() -> None:
    doc = load_document()
    assert doc["openapi"].startswith("3.1.")
    assert doc["paths"]


def test_document_is_valid_openapi() -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(load_document())


def test_served_routes_include_rest_and_websocket(
    served_routes: dict[str, type[web.RequestHandler]],
) -> None:
    for pattern, handler in rest.routes("/"):
        for path in regex_to_paths(pattern):
            assert served_routes[path] is handler
    assert served_routes["/api/kernels/{kernel_id}/channels"] is KernelWebsocketHandler


def test_every_route_is_documented_and_every_documented_path_is_served(
    served_routes: dict[str, type[web.RequestHandler]],
) -> None:
    documented = set(load_document()["paths"])
    assert sorted(set(served_routes) - documented) == [], "routes missing from openapi.yaml"
    assert sorted(documented - set(served_routes)) == [], "documented paths nobody serves"


def test_documented_methods_are_the_implemented_ones(
    served_routes: dict[str, type[web.RequestHandler]],
) -> None:
    doc = load_document()
    for path, handler in served_routes.items():
        documented = {m for m in doc["paths"][path] if m in HTTP_METHODS}
        assert documented == implemented_methods(handler), path


def test_path_parameters_are_declared() -> None:
    doc = load_document()
    for path, item in doc["paths"].items():
        in_path = set(re.findall(r"{(\w+)}", path))
        declared = {
            p["name"] if "$ref" not in p else resolve(doc, p["$ref"])["name"]
            for p in item.get("parameters", [])
            if ("$ref" in p and resolve(doc, p["$ref"])["in"] == "path") or p.get("in") == "path"
        }
        assert declared == in_path, path


def resolve(doc: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return dict(node)


async def test_gateway_serves_the_document(gateway: Gateway) -> None:
    resp = await AsyncHTTPClient().fetch(
        gateway.url + "api/spec.yaml",
        headers={"Authorization": f"token {TOKEN}"},
        raise_error=False,
    )
    assert resp.code == 200
    assert resp.headers["Content-Type"].startswith("text/x-yaml")
    assert yaml.safe_load(resp.body) == load_document()
