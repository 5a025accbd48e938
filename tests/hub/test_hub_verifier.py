"""JupyterHub token verification (kernelfleet/gateway/hub.py, auth.py): the pure parts, the
cache and its expiry, one Hub call per new token, and a Hub that is down or slow, against an
in-process stand-in for the Hub's ``/user`` endpoint (tests/hub/fakehub.py)."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest
from traitlets import TraitError

from kernelfleet.config import config_from_env
from kernelfleet.errors import PublicError
from kernelfleet.gateway import hub as hubmod
from kernelfleet.gateway.auth import Authenticator
from kernelfleet.gateway.hub import HubSettings, HubVerifier, identity_from_model
from kernelfleet.kernels import policy as pol
from kernelfleet.kernels.identity import JUPYTERHUB, Identity
from tests.hub.fakehub import FakeHub, fake_hub

log = logging.getLogger("test.hub")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def verifier(
    hub: FakeHub,
    clock: Clock | None = None,
    *,
    cache_seconds: float = 300,
    refused_cache_seconds: float = 10,
    timeout: float = 5,
) -> HubVerifier:
    settings = HubSettings(hub.api_url, cache_seconds, refused_cache_seconds, timeout)
    return HubVerifier(settings, log, clock=clock or Clock())


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- pure ---------------------------------------------------------------------------------


def test_a_hub_user_model_is_a_fixed_identity_with_groups() -> None:
    model = {"kind": "user", "name": "alice", "admin": True, "groups": ["ds", 7, "ml"]}
    who = identity_from_model(model, admins_are_admins=False)
    assert who == Identity("alice", groups=frozenset({"ds", "ml"}), authority=JUPYTERHUB)
    assert who.name_fixed and not who.admin
    assert identity_from_model(model, admins_are_admins=True).admin
    assert not identity_from_model({**model, "admin": "yes"}, admins_are_admins=True).admin
    # no groups in the model (a Hub that withholds them): none
    assert identity_from_model({"name": "bo"}, admins_are_admins=False).groups == frozenset()


def test_what_is_not_a_usable_hub_user_is_refused() -> None:
    with pytest.raises(PublicError) as err:
        identity_from_model({"kind": "service", "name": "cull"}, admins_are_admins=True)
    assert err.value.status == 401 and "service 'cull', not to a user" in err.value.message
    with pytest.raises(PublicError) as err:
        identity_from_model({"kind": "user", "name": "a b"}, admins_are_admins=True)
    assert err.value.status == 403 and err.value.reason == "Invalid User Name"
    assert "not a valid user name" in err.value.message
    junk: object
    for junk in ([], {"name": 3}, None):
        with pytest.raises(ValueError, match="no user name"):
            identity_from_model(junk, admins_are_admins=False)


def test_a_fixed_name_ignores_kernel_username_even_for_an_admin() -> None:
    env = {"KERNEL_USERNAME": "bob"}
    assert pol.resolve_owner("alice", False, env, name_fixed=True) == "alice"
    assert pol.resolve_owner("alice", True, env, name_fixed=True) == "alice"
    assert pol.resolve_owner("alice", True, {"KERNEL_USERNAME": "$(x)"}, name_fixed=True) == (
        "alice"
    )
    assert pol.resolve_owner("hub", True, env) == "bob"  # today's rule for other credentials


def test_hub_options_are_checked_at_load(tmp_path: Path) -> None:
    auth = Authenticator(hub_api_url="http://hub:8081/hub/api/")
    assert auth.hub_api_url == "http://hub:8081/hub/api"
    with pytest.raises(TraitError, match="not an http"):
        Authenticator(hub_api_url="hub:8081")
    with pytest.raises(TraitError, match="is not a file"):
        Authenticator(hub_ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(TraitError):
        Authenticator(hub_cache_seconds=-1)
    env = {
        "KF_HUB_API_URL": "https://hub.example.org/hub/api",
        "KF_HUB_CACHE_SECONDS": "60",
        "KF_HUB_REFUSED_CACHE_SECONDS": "0",
        "KF_HUB_TIMEOUT": "3",
        "KF_HUB_ADMINS_ARE_ADMINS": "true",
    }
    auth = Authenticator(config=config_from_env([Authenticator], env))
    hub = auth.hub()
    assert hub is not None
    assert hub.settings == HubSettings("https://hub.example.org/hub/api", 60, 0, 3, "", True)
    assert auth.hub() is hub  # the same options: the same verifier and cache
    assert Authenticator().hub() is None


# -- the cache ----------------------------------------------------------------------------


async def test_a_verified_token_is_cached_until_it_expires() -> None:
    async with fake_hub() as hub:
        hub.add_user("tok-a", "alice", groups=("ds",))
        clock = Clock()
        v = verifier(hub, clock)
        first = await v.identify("tok-a")
        assert first.user == "alice" and first.groups == {"ds"} and first.authority == JUPYTERHUB
        clock.now += 299
        assert await v.identify("tok-a") == first
        assert hub.calls == 1
        hub.users["tok-a"]["groups"] = ["ml"]  # the Hub changed the groups: seen after expiry
        clock.now += 2
        assert (await v.identify("tok-a")).groups == {"ml"}
        assert hub.calls == 2


async def test_a_refused_token_is_remembered_briefly() -> None:
    async with fake_hub() as hub:
        clock = Clock()
        v = verifier(hub, clock, refused_cache_seconds=10)
        for _ in range(3):
            with pytest.raises(PublicError) as err:
                await v.identify("forged")
            assert err.value.status == 401 and "JupyterHub does not accept it" in err.value.message
        assert hub.calls == 1
        hub.add_user("forged", "alice")  # now valid: accepted once the refusal expired
        clock.now += 11
        assert (await v.identify("forged")).user == "alice"
        assert hub.calls == 2


async def test_zero_cache_seconds_asks_every_time() -> None:
    async with fake_hub() as hub:
        hub.add_user("tok-a", "alice")
        v = verifier(hub, cache_seconds=0, refused_cache_seconds=0)
        for _ in range(3):
            await v.identify("tok-a")
            with pytest.raises(PublicError):
                await v.identify("nope")
        assert hub.calls == 6 and not v._cache


async def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hubmod, "MAX_ENTRIES", 3)
    async with fake_hub() as hub:
        v = verifier(hub)
        for i in range(5):
            with pytest.raises(PublicError):
                await v.identify(f"junk-{i}")
        assert len(v._cache) == 3
        assert v.digest("junk-0") not in v._cache and v.digest("junk-4") in v._cache


async def test_concurrent_requests_with_a_new_token_share_one_hub_call() -> None:
    async with fake_hub() as hub:
        hub.add_user("tok-a", "alice")
        hub.gate = asyncio.Event()
        v = verifier(hub)
        waiters = [asyncio.create_task(v.identify("tok-a")) for _ in range(8)]
        refused = [asyncio.create_task(v.identify("bad")) for _ in range(3)]
        while hub.calls < 2:
            await asyncio.sleep(0.01)
        waiters[0].cancel()  # a client that went away does not cancel the others' call
        await asyncio.sleep(0.05)
        hub.gate.set()
        who = await asyncio.gather(*waiters[1:])
        assert {w.user for w in who} == {"alice"}
        outcomes = await asyncio.gather(*refused, return_exceptions=True)
        assert all(isinstance(o, PublicError) and o.status == 401 for o in outcomes)
        assert hub.calls == 2 and v.hub_calls == 2
        assert waiters[0].cancelled()


async def test_tokens_never_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with fake_hub() as hub:
        hub.add_user("secret-token-a", "alice")
        v = verifier(hub)
        await v.identify("secret-token-a")
        with pytest.raises(PublicError):
            await v.identify("secret-token-b")
        hub.status = 500
        with pytest.raises(PublicError):
            await v.identify("secret-token-c")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "verified token" in text and "refused token" in text and "answered HTTP 500" in text
    assert "secret-token" not in text


# -- a Hub that is down -------------------------------------------------------------------


async def test_a_hub_that_is_down_is_a_503_and_nothing_is_cached() -> None:
    url = f"http://127.0.0.1:{closed_port()}/hub/api"
    v = HubVerifier(HubSettings(url, 300, 10, timeout=2), log)
    for _ in range(2):
        with pytest.raises(PublicError) as err:
            await v.identify("tok-a")
        assert err.value.status == 503 and err.value.reason == "JupyterHub Unavailable"
        msg = err.value.message
        assert msg.startswith("The gateway cannot verify this token with JupyterHub: ")
        assert "Connection refused" in msg and "KF_HUB_API_URL" in msg
    assert v.hub_calls == 2 and not v._cache


async def test_a_hub_that_does_not_answer_is_a_503_after_the_timeout() -> None:
    async with fake_hub() as hub:
        hub.add_user("tok-a", "alice")
        hub.gate = asyncio.Event()  # never set: the Hub hangs
        v = verifier(hub, timeout=0.5)
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(PublicError) as err:
            await v.identify("tok-a")
        assert loop.time() - began < 3
        assert err.value.status == 503 and "no answer within 0.5 s" in err.value.message


@pytest.mark.parametrize(
    ("status", "body", "cause"),
    [
        (404, b"<html>not found</html>", "it answered HTTP 404"),
        (500, b"{}", "it answered HTTP 500"),
        (200, b"<html>a login page</html>", "its answer is not a JupyterHub user"),
        (200, b'{"kind": "user"}', "its answer is not a JupyterHub user (the answer has no"),
    ],
)
async def test_a_hub_that_answers_nonsense_is_a_503(status: int, body: bytes, cause: str) -> None:
    async with fake_hub() as hub:
        hub.status, hub.body = status, body
        v = verifier(hub)
        with pytest.raises(PublicError) as err:
            await v.identify("tok-a")
        assert err.value.status == 503 and cause in err.value.message, err.value.message
        assert not v._cache


# -- the Authenticator --------------------------------------------------------------------


async def test_the_authenticator_asks_the_hub_only_about_tokens_it_does_not_know() -> None:
    async with fake_hub() as hub:
        hub.add_user("hub-a", "alice", groups=("ds",))
        hub.add_user("hub-root", "root", admin=True)
        hub.add_user("hub-ops", "ops")
        auth = Authenticator(
            token="shared",
            user_tokens={"tok-zoe": "zoe"},
            admin_users={"ops"},
            hub_api_url=hub.api_url,
        )

        async def who(token: str, **headers: str) -> Identity:
            return await auth.identify({"Authorization": f"token {token}", **headers}, None)

        assert (await who("shared")).admin
        assert (await who("tok-zoe")).user == "zoe"
        assert auth.authenticate({"Authorization": "token tok-zoe"}, None).user == "zoe"
        assert hub.calls == 0
        alice = await who("hub-a")
        assert (alice.user, alice.groups, alice.admin) == ("alice", frozenset({"ds"}), False)
        assert alice.name_fixed
        assert (await auth.identify({}, "hub-a")).user == "alice"  # ?token=
        assert not (await who("hub-root")).admin  # a Hub admin is not ours by default
        assert (await who("hub-ops")).admin  # admin_users, authenticated as themselves
        with pytest.raises(PublicError) as err:
            await who("nope")
        assert err.value.status == 401
        with pytest.raises(PublicError) as err:  # the sync check knows no Hub tokens
            auth.authenticate({"Authorization": "token hub-a"}, None)
        assert err.value.status == 401
        # a Basic user name with a Hub token is ignored, but must be a valid name
        import base64

        cred = base64.b64encode(b"bob:hub-a").decode()
        assert (await auth.identify({"Authorization": f"Basic {cred}"}, None)).user == "alice"
        cred = base64.b64encode(b"$(x):hub-a").decode()
        with pytest.raises(PublicError) as err:
            await auth.identify({"Authorization": f"Basic {cred}"}, None)
        assert err.value.status == 400

        # a changed option (a config reload) takes effect at once, with a fresh cache
        calls = hub.calls
        auth.hub_admins_are_admins = True
        assert (await who("hub-root")).admin
        assert hub.calls == calls + 1
        auth.hub_api_url = ""
        with pytest.raises(PublicError):
            await who("hub-a")
