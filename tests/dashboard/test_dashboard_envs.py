"""The dashboard's kernel environment pages through the real gateway (tornado's HTTP client, an
environment built for real from PyPI, real kernels): the list and the form render, the API's
refusals are shown beside the field they are about with what was typed kept, the new actions
need the CSRF token and the dashboard's own origin, a build's progress streams every line
exactly once, and a remove is refused while a kernel uses the environment.

The form's pure parts (which field an API message is about, the body a form makes) are tested
at the end without a gateway.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from kernelfleet.client import stdout_of
from kernelfleet.dashboard import envform
from kernelfleet.gateway.app import Gateway
from tests.conftest import client_for
from tests.dashboard.harness import ADMIN, ADMIN_TOKEN, envs_gateway
from tests.envs.conftest import EnvDirs, env_dirs  # noqa: F401 - the fixture
from tests.gateway.test_dashboard_http import Browser as WebClient
from tests.gateway.test_dashboard_http import dashboard_gateway

pytestmark = pytest.mark.timeout(300)


def text_of(body: bytes, element_id: str) -> str:
    """The text of the element with *element_id* in a page (tags dropped), or ""."""
    found = re.search(rf'id="{element_id}"[^>]*>(.*?)</(?:p|div|section|td)>', body.decode(), re.S)
    if found is None:
        return ""
    return html.unescape(re.sub(r"<[^>]+>", "", found.group(1))).strip()


def python_311(form: bytes) -> str:
    """The value of the form's Python 3.11 option (an interpreter's path)."""
    found = re.search(rb'<option value="([^"]+)"[^>]*>Python 3\.11', form)
    assert found is not None, "no Python 3.11 on the form"
    return found.group(1).decode()


async def logged_in(gw: Gateway) -> tuple[WebClient, str]:
    """A browser-like client logged in as the admin, and its CSRF token."""
    web = WebClient(gw)
    assert (await web.login(ADMIN_TOKEN)).code == 303
    return web, await web.csrf()


async def post_form(web: WebClient, path: str, fields: dict[str, str], csrf: str) -> HTTPResponse:
    body = urlencode({"_csrf": csrf, **fields})
    return await web.fetch(
        path,
        "POST",
        body,
        Origin=web.origin,
        Sec_Fetch_Site="same-origin",
        Content_Type="application/x-www-form-urlencoded",
    )


async def job_events(web: WebClient, job_id: str) -> list[tuple[str, Any]]:
    """Every event of a job's stream, read until the stream ends (with the job)."""
    resp = await AsyncHTTPClient().fetch(
        f"{web.base}/admin/api/envs/jobs/{job_id}/events",
        headers={"Cookie": "; ".join(f"{k}={v}" for k, v in web.cookies.items())},
        request_timeout=240,
    )
    assert resp.code == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    events = []
    for block in resp.body.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


def nothing_created(dirs: EnvDirs) -> bool:
    records = list(dirs.root.glob("*/env.json"))
    return not records and not any(dirs.kernels.iterdir())


async def test_the_environments_page_and_the_form_render_with_the_installed_pythons(
    env_dirs: EnvDirs,  # noqa: F811
) -> None:
    async with envs_gateway(env_dirs) as (gw, _):
        web, _csrf = await logged_in(gw)
        page = await web.fetch("/admin/envs")
        assert page.code == 200, page.body
        assert b'href="/admin/envs" aria-current="page">Environments</a>' in page.body
        assert b"No environments yet" in page.body and b"Nobody owns an environment" in page.body
        assert b'id="env-jobs"' in page.body
        form = await web.fetch("/admin/envs/new")
        assert form.code == 200, form.body
        assert python_311(form.body).startswith("/")
        for kind in ("local", "ssh", "yarn"):
            assert f'data-kind="{kind}"'.encode() in form.body
            assert f'<option value="{kind}"'.encode() in form.body
        assert b'name="ssh__remote_hosts"' in form.body
        assert b'name="packages"' in form.body and b'name="owner"' in form.body
        assert b'name="allow_source"' not in form.body  # source builds are off
        assert b"https://pypi.org/simple" in form.body


async def test_without_environments_the_dashboard_has_no_such_pages(kernelspec_dir: Path) -> None:
    async with dashboard_gateway() as (gw, dash):
        assert dash.envs is None
        web = WebClient(gw)
        assert (await web.login("tok-carol")).code == 303
        page = await web.fetch("/admin/kernels")
        assert b"Environments</a>" not in page.body
        assert (await web.fetch("/admin/envs")).code == 404
        assert (await web.fetch("/admin/envs/new")).code == 404


async def test_the_apis_refusals_are_shown_beside_their_field_with_the_values_kept(
    env_dirs: EnvDirs,  # noqa: F811
) -> None:
    async with envs_gateway(env_dirs) as (gw, _):
        web, csrf = await logged_in(gw)
        python = python_311((await web.fetch("/admin/envs/new")).body)
        good = {
            "name": "tools",
            "python": python,
            "packages": "six\ntoolz",
            "kind": "local",
            "display_name": "Python with tools",
        }
        cases = [
            ({"name": "Bad Name"}, "name", "Environment name 'Bad Name' is not valid"),
            (
                {"packages": "six\nsix @ https://evil.example/six.whl"},
                "packages",
                "packages come from the package index only; a URL or path is not accepted",
            ),
            ({"packages": "--index-url=https://evil.example"}, "packages", "pip options"),
            ({"python": "3.99"}, "python", "Python 3.99 is not installed on the gateway"),
            (
                {"kind": "ssh", "ssh__remote_hosts": "bad host!"},
                "ssh__remote_hosts",
                "'Remote hosts': 'bad host!' is not a host name",
            ),
            (
                {"kernel_name": "no spaces please"},
                "kernel_name",
                "'Kernel name' 'no spaces please' is not valid",
            ),
        ]
        for change, field, says in cases:
            resp = await post_form(web, "/admin/envs/new", {**good, **change}, csrf)
            assert resp.code == 400, (change, resp.code)
            error = text_of(resp.body, f"err-{field}")
            assert says in error, (change, error or resp.body.decode())
            assert "The environment was not created" in text_of(resp.body, "form-errors")
            page = resp.body.decode()
            # what was typed is kept
            assert 'value="Python with tools"' in page
            shown_packages = html.escape(change.get("packages", good["packages"]), quote=False)
            assert f">{shown_packages}</textarea>" in page
        assert nothing_created(env_dirs)


async def test_the_new_actions_need_the_csrf_token_and_the_dashboards_own_origin(
    env_dirs: EnvDirs,  # noqa: F811
) -> None:
    async with envs_gateway(env_dirs) as (gw, _):
        web, csrf = await logged_in(gw)
        fields = {"name": "tools", "packages": "six", "kind": "local", "python": "3.11"}
        for path in ("/admin/envs/new", "/admin/envs/tools/remove", "/admin/envs/tools/rebuild"):
            body = urlencode(fields)
            no_token = await web.fetch(path, "POST", body, Origin=web.origin)
            assert no_token.code == 403, path
            assert "CSRF Check Failed" in no_token.body.decode()
            elsewhere = await web.fetch(
                path, "POST", urlencode({"_csrf": csrf, **fields}), Origin="http://evil.example"
            )
            assert elsewhere.code == 403 and b"Cross-Origin Request" in elsewhere.body, path
            logged_out = WebClient(gw)
            assert (await logged_out.fetch(path, "POST", body)).code == 401
        assert nothing_created(env_dirs)


async def test_a_build_streams_each_line_once_and_remove_is_refused_while_a_kernel_uses_it(
    env_dirs: EnvDirs,  # noqa: F811
) -> None:
    async with envs_gateway(env_dirs) as (gw, dash):
        assert dash.envs is not None
        web, csrf = await logged_in(gw)
        python = python_311((await web.fetch("/admin/envs/new")).body)
        fields = {"name": "sixer", "python": python, "packages": "six", "kind": "local"}
        created = await post_form(web, "/admin/envs/new", fields, csrf)
        assert created.code == 303, created.body
        match = re.fullmatch(r"/admin/envs/jobs/([0-9a-f]{16})", created.headers["Location"])
        assert match is not None, created.headers["Location"]
        job_id = match.group(1)
        progress = await web.fetch(created.headers["Location"])
        assert progress.code == 200
        assert f'data-events="/admin/api/envs/jobs/{job_id}/events"'.encode() in progress.body

        events = await job_events(web, job_id)  # opened while it builds: replay, then live
        api = client_for(gw)
        model = await api.call("GET", f"/api/envs/jobs/{job_id}")
        assert events[-1] == ("done", {"ok": True, "error": ""}), events[-3:]
        assert [data for kind, data in events if kind == "line"] == model["lines"]
        texts = [line["text"] for line in model["lines"]]
        assert any(t.startswith("resolving 2 packages") for t in texts), texts
        assert texts[-1].startswith("environment sixer is ready")
        assert await job_events(web, job_id) == events  # a finished job's stream: the same
        done_page = await web.fetch(f"/admin/envs/jobs/{job_id}")
        assert text_of(done_page.body, "job-status") == "ready"

        listing = await web.fetch("/admin/envs")
        row = re.search(rb'<tr data-env="sixer">(.*?)</tr>', listing.body, re.S)
        assert row is not None
        assert b"ready" in row.group(1) and ADMIN.encode() in row.group(1)
        assert b'href="/admin/specs/sixer"' in row.group(1)
        usage = re.search(rb'<tr data-owner="carol"[^>]*>(.*?)</tr>', listing.body, re.S)
        assert usage is not None and b"1 of 5" in usage.group(1)

        forged = await web.fetch("/admin/envs/sixer/remove", "POST", "", Origin=web.origin)
        assert forged.code == 403 and b"CSRF Check Failed" in forged.body  # no token: kept
        assert (env_dirs.kernels / "sixer" / "kernel.json").is_file()

        kernel = await api.start_kernel("sixer")
        ws = await api.connect(kernel["id"])
        _, iopub = await ws.execute("import six; print(six.__name__)")
        assert stdout_of(iopub).strip() == "six"
        ws.close()
        refused = await post_form(web, "/admin/envs/sixer/remove", {}, csrf)
        assert refused.code == 409
        error = text_of(refused.body, "env-error")
        assert error.startswith("Environment 'sixer' is in use by 1 kernel(s)"), error
        assert "Shut them down first" in error
        assert b'<tr data-env="sixer">' in refused.body  # still listed
        assert (env_dirs.kernels / "sixer" / "kernel.json").is_file()

        await api.shutdown_kernel(kernel["id"])
        removed = await post_form(web, "/admin/envs/sixer/remove", {}, csrf)
        assert removed.code == 303 and removed.headers["Location"] == "/admin/envs?removed=sixer"
        after = await web.fetch(removed.headers["Location"])
        assert text_of(after.body, "env-notice") == "Environment 'sixer' was removed."
        assert b'data-env="sixer"' not in after.body
        assert not (env_dirs.kernels / "sixer").exists()
        assert (await api.call("GET", "/api/envs"))["envs"] == []


async def test_rebuild_starts_a_job_and_refusals_show_on_the_environments_page(
    env_dirs: EnvDirs,  # noqa: F811
) -> None:
    async with envs_gateway(env_dirs) as (gw, _):
        web, csrf = await logged_in(gw)
        missing = await post_form(web, "/admin/envs/nosuch/rebuild", {}, csrf)
        assert missing.code == 404
        assert "No environment named 'nosuch'" in text_of(missing.body, "env-error")
        python = python_311((await web.fetch("/admin/envs/new")).body)
        fields = {"name": "again", "python": python, "packages": "six", "kind": "local"}
        created = await post_form(web, "/admin/envs/new", fields, csrf)
        assert created.code == 303
        first = created.headers["Location"].rsplit("/", 1)[1]
        busy = await post_form(web, "/admin/envs/again/remove", {}, csrf)  # while it builds
        assert busy.code == 409
        assert "Environment 'again' is being built" in text_of(busy.body, "env-error")
        again = await post_form(web, "/admin/envs/new", fields, csrf)
        assert again.code == 409
        assert "is being built" in text_of(again.body, "err-name")
        assert (await job_events(web, first))[-1][1]["ok"]

        rebuilt = await post_form(web, "/admin/envs/again/rebuild", {}, csrf)
        assert rebuilt.code == 303
        job_id = rebuilt.headers["Location"].rsplit("/", 1)[1]
        events = await job_events(web, job_id)
        assert events[-1] == ("done", {"ok": True, "error": ""})
        texts = [data["text"] for kind, data in events if kind == "line"]
        assert texts[0].startswith("rebuilding environment again from its lock")


# -- the form's pure parts --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "kind", "field", "shown"),
    [
        ("Environment name 'A B' is not valid: use lower-case letters", "local", "name", None),
        ("An environment named 'x' exists. Pick another name", "local", "name", None),
        ("'six @ https://e/x.whl': packages come from the package index only", "local",
         "packages", None),
        ("Package 'six' is listed twice: list it once.", "local", "packages", None),
        ("Python 3.99 is not installed on the gateway (installed: 3.11.7)", "local", "python",
         None),
        ("--python '3.x' must be a version like 3.11, or a path.", "local", "python",
         "'Python' '3.x' must be a version like 3.11, or a path."),
        ("--kernel-name 'a b' is not valid: use letters", "ssh", "kernel_name",
         "'Kernel name' 'a b' is not valid: use letters."),
        ("--remote-hosts: 'x y' is not a host name", "ssh", "ssh__remote_hosts",
         "'Remote hosts': 'x y' is not a host name."),
        ("A kernelspec named 'x' exists. Pick another name, or give the environment's "
         "kernelspec another with --kernel-name.", "local", "kernel_name",
         "A kernelspec named 'x' exists. Pick another name, or give the environment's "
         "kernelspec another with 'Kernel name'."),
        ("'spec.queue' must be a string.", "yarn", "yarn__queue", None),
        ("'kind' must be one of local, ssh, yarn, docker, not 'k8s'.", "local", "kind", None),
        ("Only an admin may create an environment for another user.", "local", "owner", None),
        ("User 'ann' has 1 environments, the limit per user (max_envs_per_user = 1).", "local",
         "", None),
    ],
)  # fmt: skip
def test_an_api_message_is_placed_beside_the_field_it_is_about(
    message: str, kind: str, field: str, shown: str | None
) -> None:
    assert envform.error_field(message, kind) == (field, shown or message)


def test_a_form_becomes_the_apis_body_with_empty_options_left_to_their_defaults() -> None:
    raw = {
        "name": " tools ",
        "python": "/usr/bin/python3.11",
        "packages": "six\n\n toolz==1.0.* \n",
        "kind": "ssh",
        "kernel_name": "",
        "display_name": "Tools",
        "authorized_users": "carol, alice\nbob",
        "authorized_groups": "",
        "owner": "",
        "ssh__remote_hosts": "h1\nh2",
        "ssh__port_range": "",
        "allow_source": "on",
    }
    form = envform.parse_form(raw)
    assert form.errors == {}
    assert form.body == {
        "name": "tools",
        "python": "/usr/bin/python3.11",
        "packages": ["six", "toolz==1.0.*"],
        "kind": "ssh",
        "owner": "",
        "spec": {
            "display_name": "Tools",
            "authorized_users": ["carol", "alice", "bob"],
            "remote_hosts": ["h1", "h2"],
        },
        "allow_source": False,  # the form did not offer it
    }
    offered = envform.parse_form(raw, source_allowed=True).body
    assert offered is not None and offered["allow_source"] is True


def test_a_form_field_that_is_not_a_number_is_refused_before_the_api() -> None:
    form = envform.parse_form({"name": "y", "kind": "yarn", "yarn__accepted_timeout": "soon"})
    assert form.body is None
    assert form.errors == {
        "yarn__accepted_timeout": "Accepted timeout must be a number, not 'soon'"
    }
    assert form.values["yarn__accepted_timeout"] == "soon"
    unknown = envform.parse_form({"name": "y", "kind": "mainframe"})
    assert unknown.body is None and "Choose where its kernels run" in unknown.errors["kind"]
