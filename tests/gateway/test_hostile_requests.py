"""Requests an attacker with a valid user token sends: each one answered with a JSON error
naming what to change, nothing learned about other users' kernels, the gateway still serving."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import client_for, temp_gateway

USERS = {
    "Authenticator": {
        "user_tokens": {"tok-alice": "alice", "tok-bob": "bob"},
        "admin_users": {"ops"},
    }
}


async def test_a_kernel_id_of_another_user_cannot_be_probed_by_a_start(
    kernelspec_dir: Path,
) -> None:
    async with temp_gateway(**USERS) as gw:
        alice = client_for(gw, token="tok-alice")
        bob = client_for(gw, token="tok-bob")
        theirs = (await alice.start_kernel())["id"]
        unused = "6e7d2293-b825-464e-8d0f-a0e77d9e48b4"
        answers = []
        for kid in (theirs, unused):
            status, body = await bob.request(
                "POST", "/api/kernels", {"name": "python3", "env": {"KERNEL_ID": kid}}
            )
            answers.append((status, body))
        assert answers[0] == answers[1]  # the same answer for a live id and a free one
        assert answers[0][0] == 403 and "KERNEL_ID" in answers[0][1]["message"]
        status, _ = await bob.request("GET", f"/api/kernels/{theirs}")
        assert status == 404
        # the notebook server's shared (admin) token may still choose ids
        admin = client_for(gw)
        model = await admin.start_kernel(env={"KERNEL_ID": unused})
        assert model["id"] == unused
        status, body = await admin.request(
            "POST", "/api/kernels", {"name": "python3", "env": {"KERNEL_ID": unused}}
        )
        assert status == 409 and unused in body["message"]
        await admin.shutdown_kernel(unused)
        await alice.shutdown_kernel(theirs)
