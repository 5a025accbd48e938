"""Property tests for credentials (untrusted input) and the one identity rule of auth.py."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernelfleet.config import config_from_env
from kernelfleet.errors import BadRequest, Unauthorized
from kernelfleet.gateway.auth import Authenticator
from kernelfleet.gateway.bridge import BridgeSettings
from kernelfleet.kernels.policy import USER_NAME, check_user_name

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None)
TOKENS = {"tok-alice": "alice", "tok-ops": "ops"}


def _auth(admin_shared: bool, header: str = "") -> Authenticator:
    return Authenticator(
        token="shared",
        user_tokens=TOKENS,
        admin_users={"ops"},
        shared_token_is_admin=admin_shared,
        trusted_user_header=header,
    )


def _basic(user: str, password: str) -> dict[str, str]:
    cred = base64.b64encode(f"{user}:{password}".encode("utf-8", "surrogatepass")).decode()
    return {"Authorization": f"Basic {cred}"}


@FUZZ
@given(
    st.booleans(),
    st.text(max_size=80),
    st.sampled_from(["shared", "tok-alice", "tok-ops", "nope", ""]),
)
def test_basic_credentials_follow_the_one_rule(admin_shared: bool, user: str, token: str) -> None:
    auth = _auth(admin_shared)
    try:
        who = auth.authenticate(_basic(user, token), None)
    except Unauthorized:
        try:
            user.encode()
        except UnicodeEncodeError:
            return  # not UTF-8: no credentials at all
        assert token not in ("shared", "tok-alice", "tok-ops") or ":" in user
        return
    except BadRequest as exc:
        assert user and not USER_NAME.fullmatch(user)
        assert "Basic user name" in exc.message and len(exc.message) <= 110
        return
    if token == "shared" and admin_shared:
        assert who.admin and who.user == (user or "gateway")
    elif token == "shared":
        assert (who.user, who.admin) == ("gateway", False)  # names no one, never an admin
    else:
        assert (who.user, who.admin) == (TOKENS[token], token == "tok-ops")


headers = st.text(max_size=200) | st.builds(
    "{} {}".format,
    st.sampled_from(["token", "Bearer", "Basic", ""]),
    st.sampled_from(["shared", "tok-alice", "tok-ops"]) | st.text(max_size=60),
)


@FUZZ
@given(headers, st.sampled_from(["", "ops", "alice", "$(x)"]) | st.text(max_size=40))
def test_any_authorization_header_is_an_identity_or_a_public_error(
    header: str, forwarded: str
) -> None:
    auth = _auth(admin_shared=False, header="X-User")
    try:
        who = auth.authenticate({"Authorization": header, "X-User": forwarded}, None)
    except (Unauthorized, BadRequest):
        return
    assert USER_NAME.fullmatch(who.user)
    assert not who.admin or who.user == "ops"


@pytest.mark.parametrize(
    "name", ["", "-rf", ".hidden", "a b", "$(touch x)", "x" * 65, "a\nb", "\udc80", "é"]
)
def test_invalid_user_names_are_a_short_400(name: str) -> None:
    with pytest.raises(BadRequest) as err:
        check_user_name(name, "KERNEL_USERNAME")
    assert err.value.message.startswith("KERNEL_USERNAME ") and len(err.value.message) <= 110


def test_max_message_size_is_an_option_with_its_env_var() -> None:
    cfg = config_from_env([BridgeSettings], {"KF_WS_MAX_MESSAGE_MB": "2.5"})
    assert BridgeSettings(config=cfg).max_message_mb == 2.5
    assert BridgeSettings().max_message_mb == 10
    help_text = BridgeSettings.class_traits()["max_message_mb"].help
    assert "KF_WS_MAX_MESSAGE_MB" in help_text and "Default: 10" in help_text
