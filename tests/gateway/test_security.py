"""Authentication, ownership, authorization lists, limits and hostile input, through the server."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path

import pytest

from kernelfleet.client import GatewayClient, stdout_of
from tests.conftest import TOKEN, add_kernelspec, client_for, temp_gateway

USERS = {
    "Authenticator": {
        "user_tokens": {"tok-alice": "alice", "tok-bob": "bob"},
        "admin_users": {"carol"},
    }
}


async def test_requests_without_token_are_refused_with_401(client: GatewayClient) -> None:
    anonymous = GatewayClient(client.url, token="")
    for method, path in [
        ("GET", "/api/kernels"),
        ("GET", "/api/kernelspecs"),
        ("POST", "/api/kernels"),
        ("GET", "/api/sessions"),
    ]:
        status, body = await anonymous.request(method, path)
        assert status == 401, path
        assert body["reason"] == "Unauthorized"
    wrong = GatewayClient(client.url, token="nope")
    assert (await wrong.request("GET", "/api/kernels"))[0] == 401


async def test_token_in_query_and_basic_auth_are_accepted(client: GatewayClient) -> None:
    via_query = GatewayClient(client.url, headers={"Authorization": ""})
    assert (await via_query.request("GET", f"/api/kernels?token={TOKEN}"))[0] == 200
    basic = base64.b64encode(f"someone:{TOKEN}".encode()).decode()
    via_basic = GatewayClient(client.url, headers={"Authorization": f"Basic {basic}"})
    assert (await via_basic.request("GET", "/api/kernels"))[0] == 200


async def test_empty_token_header_is_accepted_when_auth_is_off(kernelspec_dir: Path) -> None:
    async with temp_gateway(Authenticator={"auth_enabled": False}) as gw:
        status, _ = await client_for(gw, token="").request("GET", "/api/kernelspecs")
        assert status == 200


async def test_a_user_cannot_see_or_touch_another_users_kernel(kernelspec_dir: Path) -> None:
    async with temp_gateway(**USERS) as gw:
        alice = client_for(gw, token="tok-alice")
        bob = client_for(gw, token="tok-bob")
        carol = client_for(gw, token="tok-carol")
        model = await alice.start_kernel()
        kid = model["id"]
        assert await bob.call("GET", "/api/kernels") == []
        for method, path in [
            ("GET", f"/api/kernels/{kid}"),
            ("DELETE", f"/api/kernels/{kid}"),
            ("POST", f"/api/kernels/{kid}/interrupt"),
            ("POST", f"/api/kernels/{kid}/restart"),
            ("GET", f"/api/kernels/{kid}/logs"),
        ]:
            status, _ = await bob.request(method, path)
            assert status == 404, (method, path)
        with pytest.raises(Exception):  # noqa: B017 - the upgrade is refused with 404
            await bob.connect(kid)
        assert [k["id"] for k in await alice.call("GET", "/api/kernels")] == [kid]
        # carol has no token in the map: refused outright
        assert (await carol.request("GET", "/api/kernels"))[0] == 401
        await alice.shutdown_kernel(kid)


async def test_admin_sees_every_kernel(kernelspec_dir: Path) -> None:
    cfg = {
        "Authenticator": {
            "user_tokens": {"tok-alice": "alice", "tok-carol": "carol"},
            "admin_users": {"carol"},
        }
    }
    async with temp_gateway(**cfg) as gw:
        alice = client_for(gw, token="tok-alice")
        carol = client_for(gw, token="tok-carol")
        model = await alice.start_kernel()
        assert [k["id"] for k in await carol.call("GET", "/api/kernels")] == [model["id"]]
        await carol.shutdown_kernel(model["id"])


async def test_kernel_username_must_match_the_identity_unless_admin(kernelspec_dir: Path) -> None:
    async with temp_gateway(**USERS) as gw:
        alice = client_for(gw, token="tok-alice")
        status, body = await alice.request(
            "POST", "/api/kernels", {"name": "python3", "env": {"KERNEL_USERNAME": "bob"}}
        )
        assert status == 403
        assert body["reason"] == "Identity Mismatch"
        # the shared token acts for users (a notebook server): the kernel belongs to bob
        shared = client_for(gw)
        model = await shared.start_kernel(env={"KERNEL_USERNAME": "bob"})
        bob = client_for(gw, token="tok-bob")
        assert [k["id"] for k in await bob.call("GET", "/api/kernels")] == [model["id"]]
        await bob.shutdown_kernel(model["id"])


async def test_unauthorized_users_get_403_with_the_reason(kernelspec_dir: Path) -> None:
    add_kernelspec(
        kernelspec_dir,
        "restricted",
        {
            "metadata": {
                "kernel_provisioner": {
                    "provisioner_name": "local-provisioner",
                    "config": {"authorized_users": ["alice"]},
                }
            }
        },
    )
    cfg = {**USERS, "KernelRegistry": {"unauthorized_users": {"root", "mallory"}}}
    async with temp_gateway(**cfg) as gw:
        shared = client_for(gw)
        status, body = await shared.request(
            "POST", "/api/kernels", {"name": "python3", "env": {"KERNEL_USERNAME": "root"}}
        )
        assert status == 403 and body["reason"] == "Unauthorized User"
        assert "root" in body["message"]
        status, body = await shared.request(
            "POST", "/api/kernels", {"name": "python3", "env": {"KERNEL_USERNAME": "mallory"}}
        )
        assert status == 403
        bob = client_for(gw, token="tok-bob")
        status, body = await bob.request("POST", "/api/kernels", {"name": "restricted"})
        assert status == 403 and "restricted" in body["message"]
        # the kernelspec list for ?user=bob hides what bob may not start
        specs = await bob.call("GET", "/api/kernelspecs?user=bob")
        assert "restricted" not in specs["kernelspecs"] and "python3" in specs["kernelspecs"]


@pytest.mark.timeout(240)
async def test_concurrent_starts_never_exceed_the_per_user_limit(kernelspec_dir: Path) -> None:
    cfg = {**USERS, "KernelRegistry": {"max_kernels_per_user": 3}}
    async with temp_gateway(**cfg) as gw:
        alice = client_for(gw, token="tok-alice")
        results = await asyncio.gather(
            *(alice.request("POST", "/api/kernels", {"name": "python3"}) for _ in range(50))
        )
        statuses = [s for s, _ in results]
        assert statuses.count(201) == 3
        assert statuses.count(403) == 47
        refused = next(body for s, body in results if s == 403)
        assert refused["reason"] == "Kernel Limit Reached"
        assert len(await alice.call("GET", "/api/kernels")) == 3
        assert len(gw.registry.records) == 3


async def test_global_limit_is_enforced(kernelspec_dir: Path) -> None:
    async with temp_gateway(KernelRegistry={"max_kernels": 1}) as gw:
        c = client_for(gw)
        await c.start_kernel()
        status, body = await c.request("POST", "/api/kernels", {"name": "python3"})
        assert status == 403 and "max_kernels" in body["message"]


HOSTILE = {
    "KERNEL_QUOTES": 'it\'s "quoted" `x`',
    "KERNEL_SUBST": "$(touch {marker}) ; touch {marker} && echo pwned",
    "KERNEL_NEWLINES": "line1\nline2\r\n--arg",
    "KERNEL_LONG": "A" * 100_000,
}


async def test_hostile_kernel_env_values_reach_the_kernel_as_plain_data(
    client: GatewayClient, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    env = {k: v.replace("{marker}", str(marker)) for k, v in HOSTILE.items()}
    model = await client.start_kernel(env=env)
    ws = await client.connect(model["id"])
    _, iopub = await ws.execute(
        "import os, json; print(json.dumps({k: v for k, v in os.environ.items()"
        " if k.startswith('KERNEL_')}))"
    )
    seen = json.loads(stdout_of(iopub))
    for key, value in env.items():
        assert seen[key] == value
    assert not marker.exists()
    ws.close()
    await client.shutdown_kernel(model["id"])


async def test_the_gateway_environment_does_not_leak_into_kernels(
    client: GatewayClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KF_SECRET_OF_THE_GATEWAY", "s3cret")
    model = await client.start_kernel(env={"KERNEL_OK": "1", "NOT_ALLOWED": "x"})
    ws = await client.connect(model["id"])
    _, iopub = await ws.execute(
        "import os; print(sorted(k for k in os.environ if k in "
        "('KF_SECRET_OF_THE_GATEWAY','NOT_ALLOWED','KERNEL_OK','KERNEL_ID','KERNEL_USERNAME')))"
    )
    assert stdout_of(iopub).strip() == "['KERNEL_ID', 'KERNEL_OK', 'KERNEL_USERNAME']"
    ws.close()
    await client.shutdown_kernel(model["id"])


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"name": "python3", "env": {"KERNEL_X": 5}}, "must be a string"),
        ({"name": "python3", "env": ["x"]}, "'env' must be"),
        ({"name": "python3", "env": {"BAD NAME": "x"}}, "not valid"),
        ({"name": "../../etc"}, "kernelspec name"),
        ({"name": "python3", "env": {"KERNEL_LAUNCH_TIMEOUT": "soon"}}, "KERNEL_LAUNCH_TIMEOUT"),
        ({"name": "python3", "env": {"KERNEL_ID": "not-a-uuid"}}, "not a UUID"),
    ],
)
async def test_bad_start_requests_get_a_400_naming_the_problem(
    client: GatewayClient, body: dict, fragment: str
) -> None:
    status, err = await client.request("POST", "/api/kernels", body)
    assert status == 400, err
    assert fragment in err["message"]
    assert await client.call("GET", "/api/kernels") == []


async def test_invalid_json_body_is_a_400(client: GatewayClient) -> None:
    from tornado.httpclient import AsyncHTTPClient

    resp = await AsyncHTTPClient().fetch(
        client.url + "api/kernels",
        method="POST",
        body="{not json",
        raise_error=False,
        headers={"Authorization": f"token {TOKEN}"},
    )
    assert resp.code == 400
    assert json.loads(resp.body)["reason"] == "Bad Request"


async def test_unknown_endpoints_and_kernels_are_json_404(client: GatewayClient) -> None:
    status, body = await client.request("GET", "/api/nothing-here")
    assert status == 404 and body["reason"] == "Not Found"
    status, body = await client.request("GET", "/api/kernels/00000000-0000-0000-0000-000000000000")
    assert status == 404 and body["reason"] == "No Such Kernel"


async def test_kernelspec_resource_paths_cannot_escape_the_spec_dir(client: GatewayClient) -> None:
    for path in (
        "/kernelspecs/python3/..%2F..%2F..%2Fetc%2Fpasswd",
        "/kernelspecs/python3/../../kernel.json",
    ):
        status, _ = await client.request("GET", path)
        assert status == 404


async def test_a_failing_launch_is_a_json_error_and_leaves_no_process(
    kernelspec_dir: Path,
) -> None:
    add_kernelspec(
        kernelspec_dir, "broken", {"argv": ["/nonexistent/python", "-f", "{connection_file}"]}
    )
    add_kernelspec(
        kernelspec_dir,
        "crashes",
        {"argv": ["/bin/sh", "-c", "echo boom >&2; exit 3", "{connection_file}"]},
    )
    async with temp_gateway() as gw:
        c = client_for(gw)
        status, body = await c.request("POST", "/api/kernels", {"name": "broken"})
        assert status == 500 and body["reason"] == "Kernel Launch Failed"
        assert "broken" in body["message"]
        status, body = await c.request(
            "POST", "/api/kernels", {"name": "crashes", "env": {"KERNEL_LAUNCH_TIMEOUT": "3"}}
        )
        assert status in (500, 504)
        assert await c.call("GET", "/api/kernels") == []
        assert gw.registry.records == {}


async def test_a_launch_timeout_kills_the_kernel(kernelspec_dir: Path, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    add_kernelspec(
        kernelspec_dir,
        "slow",
        {"argv": ["/bin/sh", "-c", f"echo $$ > {pidfile}; exec sleep 300", "{connection_file}"]},
    )
    async with temp_gateway() as gw:
        c = client_for(gw)
        status, body = await c.request(
            "POST", "/api/kernels", {"name": "slow", "env": {"KERNEL_LAUNCH_TIMEOUT": "1.5"}}
        )
        assert status == 504, body
        assert "1.5 s" in body["message"]
        pid = int(pidfile.read_text())
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"kernel process {pid} still runs after the launch timeout")


async def test_a_kernel_that_dies_while_starting_fails_fast_with_its_log(
    kernelspec_dir: Path,
) -> None:
    add_kernelspec(
        kernelspec_dir,
        "dies",
        {
            "argv": [
                "/bin/sh",
                "-c",
                "echo 'ImportError: no module named kernel_stuff' >&2; exit 7",
                "{connection_file}",
            ]
        },
    )
    async with temp_gateway() as gw:
        c = client_for(gw)
        loop = asyncio.get_running_loop()
        started = loop.time()
        status, body = await c.request(
            "POST", "/api/kernels", {"name": "dies", "env": {"KERNEL_LAUNCH_TIMEOUT": "60"}}
        )
        assert loop.time() - started < 30  # not the 60 s launch timeout
        assert status == 500 and body["reason"] == "Kernel Launch Failed"
        assert "status 7" in body["message"] and "kernel_stuff" in body["message"]
        assert gw.registry.records == {}
