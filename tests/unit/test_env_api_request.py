"""The body of ``POST /api/envs`` from any client: an environment request, or a 400 naming
the field — never another exception."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernelfleet.envs.api import request_from_json
from kernelfleet.errors import BadRequest

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
KEYS = st.sampled_from(["name", "packages", "python", "kind", "spec", "owner", "allow_source"])


@given(st.dictionaries(KEYS, JSON, max_size=7))
def test_any_body_is_a_request_or_a_clear_400(body: dict[str, Any]) -> None:
    try:
        request = request_from_json(body)
    except BadRequest as exc:
        assert exc.message and exc.status == 400
    else:
        assert isinstance(request.name, str) and all(isinstance(p, str) for p in request.packages)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "kernel_name",
                "authorized_users",
                "authorized_groups",
                "launch_timeout",
                "remote_hosts",
                "port_range",
                "nope",
            ]
        ),
        JSON,
        max_size=5,
    )
)
def test_any_spec_object_is_checked_field_by_field(spec: dict[str, Any]) -> None:
    try:
        request_from_json({"name": "e", "kind": "ssh", "spec": spec})
    except BadRequest as exc:
        assert "spec" in exc.message


def test_a_request_carries_the_kind_options_and_the_shared_ones() -> None:
    request = request_from_json(
        {
            "name": "e",
            "packages": "six\ntoolz",
            "kind": "ssh",
            "spec": {"remote_hosts": ["h1", "h2"], "authorized_groups": ["ds"]},
        }
    )
    assert request.packages == ("six", "toolz")
    assert request.spec.kind_options["remote_hosts"] == ("h1", "h2")
    assert request.spec.authorized_groups == ("ds",)
    assert request.spec.launch_timeout == 60.0
    with pytest.raises(BadRequest, match=r"'spec.nope' is not an option of 'ssh'"):
        request_from_json({"name": "e", "kind": "ssh", "spec": {"nope": 1}})
