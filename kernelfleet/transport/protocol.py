"""The host agent protocol, seen from the gateway: pure builders and constants, no I/O.

The agent (``kernelfleet/launchers/agent.py``) is started over SSH with :data:`BOOTSTRAP`, a
fixed command line that contains no request value; its source follows as the first stdin line.
Everything that depends on a request (argv, environment, user, secrets) travels afterwards as
JSON data in a ``launch`` request and is never interpreted by a shell.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import zmq

from kernelfleet.errors import BadRequest

#: The agent version this gateway speaks; the agent reports its own in ``hello``.
AGENT_VERSION = "kernelfleet-agent/1"

#: Placeholder in kernelspec argv that the agent replaces with the remote connection file path.
CONNECTION_FILE_TOKEN = "{connection_file}"  # noqa: S105 - a placeholder, not a secret

PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")

#: Reads one JSON line {"modules": [[name, source], ...], "main": source}: installs each
#: helper module under its name, then runs the agent's ``main()``. The line is read with the
#: buffered reader; nothing else is sent before the agent's hello, so nothing is read ahead.
_BOOTSTRAP_CODE = (
    "import sys,json,types;d=json.loads(sys.stdin.buffer.readline())\n"
    "for n,s in d['modules']:\n"
    " m=types.ModuleType(n);m.__source__=s;sys.modules[n]=m;exec(compile(s,n,'exec'),m.__dict__)\n"
    "g={'__name__':'kernelfleet_agent'};exec(compile(d['main'],'kernelfleet-agent','exec'),g)\n"
    "g['main']()"
)

#: Helper modules shipped with the agent: (module name on the host, file in launchers/).
_AGENT_MODULES = (("kernelfleet_hostlib", "hostlib.py"), ("kernelfleet_cgroups", "cgroups.py"))

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def bootstrap_command(python: str) -> str:
    """The remote command that starts the agent with interpreter *python* (admin setting).

    sshd always runs commands through the login shell, so this is a shell string; it holds
    only the configured interpreter (quoted) and a constant program.
    """
    return f"exec {shlex.quote(python)} -I -u -c {shlex.quote(_BOOTSTRAP_CODE)}"


def _launcher(name: str) -> str:
    return resources.files("kernelfleet.launchers").joinpath(name).read_text("utf-8")


def agent_source() -> str:
    """The agent's main source code."""
    return _launcher("agent.py")


def source_line() -> bytes:
    """The first stdin line for :data:`_BOOTSTRAP_CODE`: the agent and its helpers."""
    payload = {
        "modules": [[name, _launcher(file)] for name, file in _AGENT_MODULES],
        "main": agent_source(),
    }
    return (json.dumps(payload) + "\n").encode()


@dataclass(frozen=True)
class PortRange:
    """An inclusive port range; ``PortRange(0, 0)`` means any free port."""

    lo: int
    hi: int

    @property
    def unrestricted(self) -> bool:
        return self.lo == 0 and self.hi == 0

    def as_list(self) -> list[int] | None:
        return None if self.unrestricted else [self.lo, self.hi]


def parse_port_range(text: str, min_size: int) -> PortRange:
    """Parse ``"lo..hi"`` (``""`` or ``"0..0"``: any port) and validate it.

    Raises :class:`BadRequest` saying what is wrong: a range must start at 1024 or above, end
    at 65535 or below, and hold at least *min_size* ports.
    """
    text = (text or "").strip()
    if text in ("", "0..0"):
        return PortRange(0, 0)
    lo_text, sep, hi_text = text.partition("..")
    try:
        if not sep:
            raise ValueError
        lo, hi = int(lo_text), int(hi_text)
    except ValueError:
        raise BadRequest(f"port_range {text!r} is not of the form 'lo..hi'") from None
    if lo < 1024:
        raise BadRequest(f"port_range {text!r} starts below 1024")
    if hi > 65535 or hi < lo:
        raise BadRequest(f"port_range {text!r} must end between its start and 65535")
    size = hi - lo + 1
    if size < max(min_size, len(PORT_NAMES)):
        raise BadRequest(
            f"port_range {text!r} holds {size} ports; at least {max(min_size, len(PORT_NAMES))} "
            "are required"
        )
    return PortRange(lo, hi)


@dataclass(frozen=True)
class ConnectionSecrets:
    """The per-launch secrets: HMAC key and (optionally) the CurveZMQ server keypair."""

    key: str
    curve_publickey: str | None = None
    curve_secretkey: str | None = None

    @classmethod
    def fresh(cls, curve: bool) -> ConnectionSecrets:
        if not curve:
            return cls(key=secrets.token_hex(32))
        public, secret = zmq.curve_keypair()
        return cls(secrets.token_hex(32), public.decode("ascii"), secret.decode("ascii"))

    def as_payload(self) -> dict[str, str]:
        payload = {"key": self.key, "signature_scheme": "hmac-sha256"}
        if self.curve_publickey and self.curve_secretkey:
            payload["curve_publickey"] = self.curve_publickey
            payload["curve_secretkey"] = self.curve_secretkey
        return payload

    def __repr__(self) -> str:  # never show secrets in logs or tracebacks
        return f"ConnectionSecrets(curve={self.curve_publickey is not None})"


def kernel_env(
    env: Mapping[str, str], spec_env_names: Iterable[str], inherited: Iterable[str]
) -> dict[str, str]:
    """The environment a remote kernel gets: a filtered copy of the launch *env*.

    Kept: ``KERNEL_*`` and ``JPY_*`` variables, the kernelspec's own ``env`` entries and the
    admin's *inherited* names. Everything else of the gateway's environment stays home (in
    library mode jupyter_client hands over the whole process environment).
    """
    keep = set(spec_env_names) | set(inherited)
    out: dict[str, str] = {}
    for name, value in env.items():
        if not ENV_NAME.match(name) or not isinstance(value, str):
            continue
        if name in keep or name.startswith(("KERNEL_", "JPY_")):
            out[name] = value
    return out


def build_argv(argv: list[str], kernel_id: str, extra: Iterable[str] = ()) -> list[str]:
    """Kernelspec argv for the host: ``{connection_file}`` is left for the agent to fill."""
    out = []
    for arg in [*argv, *extra]:
        out.append(arg.replace("{kernel_id}", kernel_id))
    return out


def build_launch_request(
    *,
    kernel_id: str,
    kernel_name: str,
    argv: list[str],
    env: Mapping[str, str],
    connection: ConnectionSecrets,
    port_range: PortRange,
    timeout: float,
    user: str | None,
    prohibited_uids: Iterable[int],
    log_dir: str | None,
    cwd: str | None,
    ip: str | None,
    ports: Mapping[str, int] | None = None,
    limits: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The fields of the ``launch`` request for the agent.

    It holds the secrets: it only ever travels inside the SSH channel.
    """
    return {
        "kernel_id": kernel_id,
        "kernel_name": kernel_name,
        "argv": list(argv),
        "env": dict(env),
        "connection": connection.as_payload(),
        "port_range": port_range.as_list(),
        "timeout": timeout,
        "user": user,
        "prohibited_uids": sorted(set(prohibited_uids)),
        "log_dir": log_dir or None,
        "cwd": cwd,
        "ip": ip,
        "ports": dict(ports) if ports else None,
        "limits": dict(limits) if limits else None,
    }


def connection_info(
    reply: Mapping[str, Any], connect_ip: str, kernel_name: str, secrets_: ConnectionSecrets
) -> dict[str, Any]:
    """The gateway-side connection info for a launched kernel (``key`` as bytes, as
    jupyter_client's ``KernelManager`` compares it)."""
    ports = reply["ports"]
    info: dict[str, Any] = {name: int(ports[name]) for name in PORT_NAMES}
    info.update(
        ip=connect_ip,
        transport="tcp",
        key=secrets_.key.encode(),
        signature_scheme="hmac-sha256",
        kernel_name=kernel_name,
    )
    if secrets_.curve_publickey and secrets_.curve_secretkey:
        info["curve_publickey"] = secrets_.curve_publickey
        info["curve_secretkey"] = secrets_.curve_secretkey
    return info
