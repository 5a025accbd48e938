"""What ``kernelfleet hosts check`` and ``kernelfleet spec sync`` need to know about one host.

This file runs on the host (standard library only, Python 3.9+ like the agent), started over
SSH with a fixed command line; its parameters arrive as one JSON object on stdin (never on the
command line) and its answer is one JSON object on stdout. It changes nothing on the host.

Input keys (all optional): ``spec_dir`` (manifest of that directory), ``spec_dirs`` (a list:
manifests of each), ``spark_home``,
``master`` (``[[host, port], ...]`` to try to connect to), ``port_range`` (``[lo, hi]``),
``ip`` (the address kernels bind), ``r`` (true: check R and IRkernel), ``paths`` (files whose
existence to report, e.g. Apache Toree's jar).
"""

import hashlib
import json
import os
import socket
import subprocess
import sys
import time

MAX_PORTS_TRIED = 4096


def manifest(root):
    """{relative path: [sha256, mode]} of the regular files under *root*, or None."""
    if not os.path.isdir(root):
        return None
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".kf-"))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            rel = os.path.relpath(path, root)
            out[rel] = [digest.hexdigest(), os.stat(path).st_mode & 0o777]
    return out


def free_ports(ip, lo, hi):
    """How many ports of lo..hi can be bound on *ip* now (a sample for very large ranges)."""
    ports = list(range(lo, hi + 1))
    step = max(1, len(ports) // MAX_PORTS_TRIED)
    tried = ports[::step]
    free = 0
    for port in tried:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((ip, port))
            free += 1
        except OSError:
            pass
        finally:
            sock.close()
    return {"tried": len(tried), "free": free, "size": len(ports)}


def reach(host, port, timeout=3.0):
    started = time.monotonic()
    try:
        with socket.create_connection((host, int(port)), timeout):
            return {"ok": True, "seconds": round(time.monotonic() - started, 3)}
    except OSError as exc:
        return {"ok": False, "error": exc.strerror or str(exc)}


def check_r():
    code = 'cat(R.version.string, "\\n"); cat(as.character(packageVersion("IRkernel")), "\\n")'
    try:
        res = subprocess.run(
            ["R", "--slave", "--no-restore", "-e", code],
            capture_output=True,
            check=False,
            timeout=60,
        )
    except OSError as exc:
        return {"runs": False, "error": str(exc)}
    except subprocess.TimeoutExpired:
        return {"runs": False, "error": "R did not answer within 60 s"}
    lines = res.stdout.decode("utf-8", "replace").strip().splitlines()
    if res.returncode != 0 or len(lines) < 2:
        err = res.stderr.decode("utf-8", "replace").strip()[-300:]
        return {"runs": bool(lines), "version": lines[0] if lines else None, "error": err}
    return {"runs": True, "version": lines[0].strip(), "irkernel": lines[1].strip()}


def main():
    request = json.loads(sys.stdin.readline() or "{}")
    answer = {"hostname": socket.gethostname(), "python": sys.version.split()[0]}
    parts = os.environ.get("SSH_CONNECTION", "").split()
    answer["ssh_ip"] = parts[2] if len(parts) == 4 else None
    if request.get("spec_dir"):
        answer["manifest"] = manifest(request["spec_dir"])
    if request.get("spec_dirs"):
        answer["manifests"] = {d: manifest(d) for d in request["spec_dirs"]}
    spark_home = request.get("spark_home")
    if spark_home:
        submit = os.path.join(spark_home, "bin", "spark-submit")
        answer["spark_submit"] = {"path": submit, "ok": os.access(submit, os.X_OK)}
    if request.get("master"):
        answer["master"] = [dict(reach(h, p), address=f"{h}:{p}") for h, p in request["master"]]
    if request.get("port_range"):
        lo, hi = request["port_range"]
        ip = request.get("ip") or answer["ssh_ip"] or "0.0.0.0"
        answer["ports"] = free_ports(ip, int(lo), int(hi))
    if request.get("paths"):
        answer["paths"] = {p: os.path.isfile(p) for p in request["paths"]}
    if request.get("r"):
        answer["r"] = check_r()
    answer["time"] = time.time()
    sys.stdout.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
