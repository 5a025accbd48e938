"""The build sandbox, for real: commands run as ``nobody`` in a network namespace whose only
way out is the allow-list proxy (root needed; the pure helpers are tested without).

Each build is a short Python program (the system's ``python3``, which ``nobody`` can run)
that prints ``RESULT <json>``; the tests assert on what it saw from the inside.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from kernelfleet.envs.sandbox import (
    FORWARD_PORT,
    LineSplitter,
    SandboxError,
    SandboxPolicy,
    SandboxTimeout,
    clean_line,
    proxied_env,
    run_sandboxed,
    sandbox_problem,
)

PYTHON = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or "python3"
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
NOBODY = "nobody"
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="the sandbox switches users and creates namespaces: root and util-linux",
)


def policy(*allowed: str, isolate: bool = True, user: str | None = NOBODY) -> SandboxPolicy:
    return SandboxPolicy(user=user, allowed_hosts=allowed, isolate_network=isolate)


@pytest.fixture
def build_dir() -> Iterator[Path]:
    """A directory of the build user's (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="kf-sandbox-test-", dir="/tmp"))
    entry = pwd.getpwnam(NOBODY)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def build(
    code: str,
    cwd: Path,
    sandbox: SandboxPolicy,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 30,  # noqa: ASYNC109
) -> tuple[int, list[str], Any]:
    """Run *code* with the system python in the sandbox: (status, lines, its RESULT)."""
    lines: list[str] = []
    status = await run_sandboxed(
        [PYTHON, "-c", textwrap.dedent(code), *args],
        cwd=cwd,
        env=env or ENV,
        policy=sandbox,
        on_line=lines.append,
        timeout=timeout,
    )
    results = [json.loads(x[len("RESULT ") :]) for x in lines if x.startswith("RESULT ")]
    return status, lines, results[-1] if results else None


@contextlib.asynccontextmanager
async def http_server(host: str = "127.0.0.1") -> AsyncIterator[tuple[int, list[bytes]]]:
    """An HTTP server in the gateway's namespace answering ``hello``; (port, request heads)."""
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, host, 0)
    try:
        yield server.sockets[0].getsockname()[1], heads
    finally:
        server.close()
        await server.wait_closed()


def own_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


# -- without root: the pure parts ----------------------------------------------------------


def test_output_lines_lose_escapes_and_split_at_any_line_break() -> None:
    lines: list[str] = []
    splitter = LineSplitter(lines.append, limit=8)
    for chunk in [
        b"\x1b[1;31mred\x1b[0m\r",
        b"\nsecond\rthird\n",
        b"caf\xc3",
        b"\xa9 \xff\n",
        b"x" * 20,
    ]:
        splitter.feed(chunk)
    splitter.close()
    assert lines == ["red", "second", "third", "café \ufffd", "xxxxxxxx", "xxxxxxxx", "xxxx"]
    assert clean_line("\x1b]0;title\x07ok\x00\x08\t \r") == "ok"


def test_the_build_environment_is_exactly_env_and_the_proxy() -> None:
    assert proxied_env({"PATH": "/bin"}, 3128) == {
        "PATH": "/bin",
        **{
            name: "http://127.0.0.1:3128"
            for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy")
        },
        "ALL_PROXY": "http://127.0.0.1:3128",
        "all_proxy": "http://127.0.0.1:3128",
        "NO_PROXY": "",
        "no_proxy": "",
    }


def test_problems_name_the_cause_and_the_fix() -> None:
    missing = sandbox_problem(policy(user="kf-no-such-user"))
    assert missing is not None and "does not exist" in missing and "KF_ENV_BUILD_USER" in missing
    root = sandbox_problem(policy(user="root"))
    assert root is not None and "is root" in root
    bad_host = sandbox_problem(policy("pypi.org:https"))
    assert bad_host is not None and "KF_ENV_ALLOWED_HOSTS" in bad_host


# -- as root: the sandbox for real ---------------------------------------------------------


@needs_root
def test_this_machine_can_run_the_sandbox() -> None:
    assert sandbox_problem(policy("pypi.org")) is None


@needs_root
async def test_the_build_cannot_connect_anywhere_but_through_the_proxy(build_dir: Path) -> None:
    own = own_address()
    server = await asyncio.start_server(lambda r, w: w.close(), "0.0.0.0", 0)
    port = server.sockets[0].getsockname()[1]
    targets = [("10.88.0.1", 80), ("127.0.0.1", port), ("1.1.1.1", 443)]
    if own is not None:
        targets.append((own, port))
        # from the gateway's side the server is reachable there: the test means something
        _, writer = await asyncio.open_connection(own, port)
        writer.close()
    try:
        code = """
            import errno, json, socket, sys
            seen = {}
            for target in json.loads(sys.argv[1]):
                try:
                    socket.create_connection(tuple(target), timeout=3).close()
                    seen[str(target)] = "connected"
                except OSError as exc:
                    seen[str(target)] = errno.errorcode.get(exc.errno or 0, repr(exc))
            print("RESULT", json.dumps(seen))
        """
        status, lines, seen = await build(code, build_dir, policy(), json.dumps(targets))
    finally:
        server.close()
        await server.wait_closed()
    assert status == 0, lines
    # refused at once (only lo exists in there), not merely slow to answer
    assert seen == {
        str(list(target)): "ECONNREFUSED" if target[0] == "127.0.0.1" else "ENETUNREACH"
        for target in targets
    }


@needs_root
async def test_the_build_reaches_an_allowed_host_through_the_proxy(build_dir: Path) -> None:
    async with http_server() as (port, heads):
        code = """
            import http.client, json, sys, urllib.request
            port = int(sys.argv[1])
            plain = urllib.request.urlopen(f"http://127.0.0.1:{port}/simple/", timeout=10).read()
            tunnel = http.client.HTTPConnection("127.0.0.1", 3128, timeout=10)
            tunnel.set_tunnel("127.0.0.1", port)
            tunnel.request("GET", "/through-connect")
            print("RESULT", json.dumps([plain.decode(), tunnel.getresponse().read().decode()]))
        """
        status, lines, result = await build(code, build_dir, policy(f"127.0.0.1:{port}"), str(port))
    assert status == 0, lines
    assert result == ["hello", "hello"]
    assert heads[0].startswith(b"GET /simple/ HTTP/1.1\r\nHost: 127.0.0.1:")
    assert heads[1].startswith(b"GET /through-connect HTTP/1.1\r\n")


@needs_root
async def test_a_connect_to_a_host_not_allowed_gets_403_with_the_reason(build_dir: Path) -> None:
    async with http_server() as (port, heads):
        code = """
            import json, socket, sys
            answers = []
            for target in sys.argv[1:]:
                with socket.create_connection(("127.0.0.1", 3128), timeout=10) as proxy:
                    proxy.sendall(f"CONNECT {target} HTTP/1.1\\r\\n\\r\\n".encode())
                    answers.append(proxy.recv(4096).decode().split("\\r\\n")[0])
            print("RESULT", json.dumps(answers))
        """
        status, lines, answers = await build(
            code, build_dir, policy("pypi.org"), "example.org:443", f"127.0.0.1:{port}"
        )
    assert status == 0, lines
    reason = (
        "refused: not an allowed host of builds (allowed: pypi.org; KF_ENV_ALLOWED_HOSTS adds one)"
    )
    assert answers == [
        f"HTTP/1.1 403 CONNECT example.org:443 {reason}",
        f"HTTP/1.1 403 CONNECT 127.0.0.1:{port} {reason}",
    ]
    assert f"sandbox proxy: CONNECT example.org:443 {reason}" in lines
    assert heads == []


@needs_root
async def test_the_build_runs_as_nobody_without_groups_or_privileges(build_dir: Path) -> None:
    code = """
        import json, os
        status = dict(line.split(":", 1) for line in open("/proc/self/status"))
        print("RESULT", json.dumps({
            "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid()],
            "groups": os.getgroups(),
            "no_new_privs": status["NoNewPrivs"].strip(),
            "cwd": os.getcwd(),
            "umask": os.umask(0),
        }))
    """
    status, lines, seen = await build(code, build_dir, policy())
    nobody = pwd.getpwnam(NOBODY)
    assert status == 0, lines
    assert seen == {
        "ids": [nobody.pw_uid, nobody.pw_uid, nobody.pw_gid, nobody.pw_gid],
        "groups": [],
        "no_new_privs": "1",
        "cwd": str(build_dir),
        "umask": 0o022,
    }


@needs_root
async def test_the_build_sees_only_the_environment_it_was_given(
    build_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KF_TOKEN", "gateway-secret")
    monkeypatch.setenv("KF_STORE_KEY", "/etc/kernelfleet/store.key")
    code = """
        import json, os
        print("RESULT", json.dumps(dict(os.environ)))
    """
    env = {**ENV, "HOME": str(build_dir), "UV_CACHE_DIR": str(build_dir / "cache")}
    status, lines, seen = await build(code, build_dir, policy(), env=env)
    assert status == 0, lines
    assert seen == proxied_env(env, FORWARD_PORT)
    assert not [name for name in seen if name.startswith("KF_")]


@needs_root
async def test_the_build_cannot_read_root_files_nor_the_gateways_process(
    build_dir: Path,
) -> None:
    public = Path(tempfile.mkdtemp(prefix="kf-sandbox-key-", dir="/tmp"))
    try:
        public.chmod(0o755)
        key = public / "store.key"
        key.write_text("secret")
        key.chmod(0o600)
        code = """
            import json, sys
            seen = {}
            for path in sys.argv[1:]:
                try:
                    open(path, "rb").read()
                    seen[path] = "read"
                except OSError as exc:
                    seen[path] = type(exc).__name__
            print("RESULT", json.dumps(seen))
        """
        environ = f"/proc/{os.getpid()}/environ"
        status, lines, seen = await build(code, build_dir, policy(), str(key), environ)
    finally:
        shutil.rmtree(public)
    assert status == 0, lines
    assert seen[str(key)] == "PermissionError"
    assert seen[environ] in ("PermissionError", "FileNotFoundError")


def leftovers(marker: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if marker in cmdline and "pytest" not in cmdline:
                found.append(f"{pid}: {cmdline}")
    return found


async def no_leftovers(marker: str) -> list[str]:
    """The processes still running with *marker* in their command line, after a short grace."""
    for _ in range(50):
        found = leftovers(marker)
        if not found:
            return []
        await asyncio.sleep(0.1)
    return leftovers(marker)


@needs_root
@pytest.mark.parametrize("isolate", [True, False], ids=["namespaces", "process-group"])
async def test_a_timeout_kills_the_build_and_everything_it_started(
    build_dir: Path, isolate: bool
) -> None:
    marker = f"77{os.getpid()}.{int(isolate)}"
    escape = "setsid sleep {m}3 &" if isolate else ""  # only a PID namespace catches setsid
    script = f"sleep {marker}1 & (sleep {marker}2 &) ; {escape.format(m=marker)} sleep {marker}4"
    started = time.monotonic()
    with pytest.raises(SandboxTimeout) as raised:
        await run_sandboxed(
            ["/bin/sh", "-c", script],
            cwd=build_dir,
            env=ENV,
            policy=policy(isolate=isolate),
            on_line=lambda line: None,
            timeout=1.5,
        )
    assert time.monotonic() - started < 10
    assert raised.value.message == (
        "The build took longer than 1.5 s and was stopped (with everything it started): an "
        "admin can raise the limit with KF_ENV_BUILD_TIMEOUT (seconds)."
    )
    assert raised.value.status == 504
    assert await no_leftovers(marker) == []


@needs_root
async def test_what_the_build_leaves_running_dies_with_it(build_dir: Path) -> None:
    marker = f"78{os.getpid()}"
    status = await run_sandboxed(
        ["/bin/sh", "-c", f"setsid sleep {marker}1 & sleep {marker}2 & exit 7"],
        cwd=build_dir,
        env=ENV,
        policy=policy(),
        on_line=lambda line: None,
        timeout=30,
    )
    assert status == 7
    assert await no_leftovers(marker) == []


@needs_root
async def test_output_and_exit_status_come_back(build_dir: Path) -> None:
    lines: list[str] = []
    status = await run_sandboxed(
        [
            "/bin/sh",
            "-c",
            "printf '\\033[32mok\\033[0m\\n'; echo err >&2; printf tail; kill -TERM $$",
        ],
        cwd=build_dir,
        env=ENV,
        policy=policy(),
        on_line=lines.append,
        timeout=30,
    )
    assert status == 128 + 15
    assert lines == ["ok", "err", "tail"]


@needs_root
async def test_the_build_runs_as_nobody_without_network_isolation(build_dir: Path) -> None:
    """``isolate_network=False``: another user still, and the proxy on the gateway's
    127.0.0.1 for programs that honour the proxy variables."""
    async with http_server() as (port, heads):
        code = """
            import json, os, sys, urllib.request
            body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/x", timeout=10).read()
            print("RESULT", json.dumps([os.getuid(), body.decode(), os.environ["HTTP_PROXY"]]))
        """
        sandbox = policy(f"127.0.0.1:{port}", isolate=False)
        status, lines, seen = await build(code, build_dir, sandbox, str(port))
    assert status == 0, lines
    uid, body, proxy = seen
    assert (uid, body) == (pwd.getpwnam(NOBODY).pw_uid, "hello")
    assert proxy.startswith("http://127.0.0.1:") and proxy != f"http://127.0.0.1:{port}"
    assert heads[0].startswith(b"GET /x HTTP/1.1\r\n")


@needs_root
async def test_set_up_failures_raise_with_the_cause_and_the_fix(build_dir: Path) -> None:
    with pytest.raises(SandboxError, match=r"'/nonexistent/uv' could not be started.*install it"):
        await run_sandboxed(
            ["/nonexistent/uv"],
            cwd=build_dir,
            env=ENV,
            policy=policy(),
            on_line=lambda line: None,
            timeout=30,
        )
    private = Path(tempfile.mkdtemp(prefix="kf-sandbox-private-", dir="/tmp"))
    try:
        with pytest.raises(SandboxError, match=rf"cannot enter {private} .*owned by it"):
            await run_sandboxed(
                ["true"], cwd=private, env=ENV, policy=policy(), on_line=print, timeout=30
            )
    finally:
        private.rmdir()
    with pytest.raises(SandboxError, match="does not exist"):
        await run_sandboxed(
            ["true"],
            cwd=build_dir,
            env=ENV,
            policy=policy(user="kf-no-such-user"),
            on_line=print,
            timeout=30,
        )


def nobody_can_import_kernelfleet() -> bool:
    repo = Path(__file__).resolve().parents[2]
    probe = subprocess.run(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            PYTHON,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(repo)!r}); import kernelfleet.envs.sandbox",
        ],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


@needs_root
def test_a_gateway_that_is_not_root_isolates_in_a_user_namespace(build_dir: Path) -> None:
    """Run as ``nobody`` (a gateway without root): no user switch possible — said so — but
    the network namespace (in a user namespace) still has only the proxy as a way out."""
    if shutil.which("setpriv") is None or not nobody_can_import_kernelfleet():
        pytest.skip("nobody cannot run this checkout's kernelfleet (setpriv, permissions)")
    repo = Path(__file__).resolve().parents[2]
    program = f"""
        import asyncio, json, sys
        sys.path.insert(0, {str(repo)!r})
        from pathlib import Path
        from kernelfleet.envs.sandbox import SandboxPolicy, run_sandboxed, sandbox_problem

        async def main():
            switch = sandbox_problem(SandboxPolicy("daemon", (), True))
            lines = []
            code = (
                "import socket\\n"
                "try:\\n"
                "    socket.create_connection(('1.1.1.1', 443), timeout=3)\\n"
                "    print('connected')\\n"
                "except OSError as exc:\\n"
                "    print(type(exc).__name__)\\n"
                "with socket.create_connection(('127.0.0.1', 3128), timeout=5) as s:\\n"
                "    s.sendall(b'CONNECT example.org:443 HTTP/1.1\\\\r\\\\n\\\\r\\\\n')\\n"
                "    print(s.recv(200).split(b'\\\\r\\\\n')[0].decode())\\n"
            )
            status = await run_sandboxed(
                [{PYTHON!r}, "-c", code], cwd=Path({str(build_dir)!r}),
                env={{"PATH": "/usr/bin:/bin"}}, policy=SandboxPolicy(None, ("pypi.org",), True),
                on_line=lines.append, timeout=30,
            )
            print(json.dumps([switch, status, lines]))

        asyncio.run(main())
    """
    done = subprocess.run(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            PYTHON,
            "-I",
            "-c",
            textwrap.dedent(program),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
    )
    if "does not let the gateway create namespaces" in done.stdout + done.stderr:
        pytest.skip("unprivileged user namespaces are off on this machine")
    assert done.returncode == 0, done.stderr
    switch, status, lines = json.loads(done.stdout.splitlines()[-1])
    assert "not root, so it cannot switch users" in switch
    assert status == 0, lines
    said = [line for line in lines if not line.startswith("sandbox proxy:")]
    assert said[0].endswith("Error"), lines  # no route out of the namespace
    assert said[1].startswith("HTTP/1.1 403 CONNECT example.org:443 refused"), lines


def pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
    except OSError:
        return False
    return True


@needs_root
async def test_uv_installs_from_pypi_through_the_sandbox(build_dir: Path) -> None:
    """uv (which sends CONNECT through an HTTPS proxy) gets a real wheel from PyPI when
    pypi.org and files.pythonhosted.org are allowed, and not when the second is missing."""
    uv = Path(sys.executable).parent / "uv"
    if not uv.exists() or not pypi_reachable():
        pytest.skip("needs uv beside this interpreter and pypi.org reachable from here")
    env = {**ENV, "HOME": str(build_dir), "UV_PYTHON_DOWNLOADS": "never", "NO_COLOR": "1"}
    # the machine's CA bundle, when it has its own (a TLS-inspecting egress)
    env.update({k: os.environ[k] for k in ("SSL_CERT_FILE", "SSL_CERT_DIR") if k in os.environ})
    argv = [str(uv), "pip", "install", "--no-cache", "--python", PYTHON, "--target"]
    lines: list[str] = []
    status = await run_sandboxed(
        [*argv, "site", "six"],
        cwd=build_dir,
        env=env,
        policy=policy("pypi.org", "files.pythonhosted.org"),
        on_line=lines.append,
        timeout=120,
    )
    assert status == 0, lines
    assert (build_dir / "site" / "six.py").is_file()
    assert (build_dir / "site" / "six.py").stat().st_uid == pwd.getpwnam(NOBODY).pw_uid
    refused: list[str] = []
    status = await run_sandboxed(
        [*argv, "site2", "six"],
        cwd=build_dir,
        env={**env, "UV_HTTP_RETRIES": "0"},
        policy=policy("pypi.org"),
        on_line=refused.append,
        timeout=120,
    )
    assert status != 0
    assert any(
        line.startswith("sandbox proxy: CONNECT files.pythonhosted.org:443 refused")
        for line in refused
    ), refused


def test_a_machine_without_unshare_is_told_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kernelfleet.envs import sandbox

    monkeypatch.setitem(sandbox.CHILD_ENV, "PATH", str(tmp_path))  # where unshare is looked up
    monkeypatch.setattr(sandbox, "_PROBED", {})
    problem = sandbox_problem(policy(user=None))
    assert problem == (
        "unshare (util-linux) is not installed, so builds cannot get a network namespace of "
        "their own: install util-linux."
    )
    # without network isolation, unshare is not needed
    assert sandbox_problem(policy(user=None, isolate=False)) is None
