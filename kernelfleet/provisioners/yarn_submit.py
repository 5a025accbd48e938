"""What a YARN cluster-mode kernel is submitted with: pure functions, no I/O.

:func:`resources` turns the kernelspec's settings and the start request's allowed ``KERNEL_*``
values into validated :class:`Resources`; :func:`submission` builds the ``spark-submit`` argv
(no secret on it), the Spark properties (written 0600 to a ``--properties-file``) and the
environment of the ``spark-submit`` process.

**Nothing a user sends reaches a shell.** A YARN container starts from a bash script the
NodeManager writes (``launch_container.sh``), with each environment variable as
``export NAME="value"``, unescaped: a ``$(...)`` in a value would run on the node. So the
kernel's whole environment (``KERNEL_*`` included) travels as one base64 JSON value,
``KF_KERNEL_ENV``, that the launcher decodes; the other variables the container gets are
base64, a kernel id, an address or an admin's path checked against :data:`SAFE_VALUE`. The
launcher's arguments go into the same script, quoted by Spark in a way that mangles ``$`` and
``"`` (backslashes inside single quotes): the kernel argv travels base64 too. Spark properties
from a request are limited to the keys of :data:`REQUEST_CONF_KEYS` and values of
:data:`SAFE_VALUE`.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kernelfleet.errors import BadRequest, Forbidden
from kernelfleet.launchers import spark_kernel
from kernelfleet.provisioners.base import USERNAME

#: Values that may be written into a container's launch script (inside double quotes).
SAFE_VALUE = re.compile(r"^[A-Za-z0-9._:/,=@%+*\-]{0,4096}$")
MEMORY = re.compile(r"^(\d{1,9})([kKmMgGtT]?)[bB]?$")
QUEUE = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")
#: Spark properties a start request may set (KERNEL_EXTRA_SPARK_OPTS ``--conf`` keys): how
#: much the kernel gets and how it runs, never what it is, where its files come from, or code.
REQUEST_CONF_KEYS = re.compile(
    r"^spark\.(executor\.(memory|cores|instances|memoryOverhead)"
    r"|driver\.(memory|cores|memoryOverhead|maxResultSize)"
    r"|dynamicAllocation\.(enabled|minExecutors|maxExecutors|initialExecutors)"
    r"|sql\.[A-Za-z0-9.]{1,100}|default\.parallelism|task\.cpus|ui\.showConsoleProgress)$"
)
#: spark-submit options a request's KERNEL_EXTRA_SPARK_OPTS may hold besides ``--conf``.
REQUEST_OPTIONS = {
    "--driver-memory": "spark.driver.memory",
    "--driver-cores": "spark.driver.cores",
    "--executor-memory": "spark.executor.memory",
    "--executor-cores": "spark.executor.cores",
    "--num-executors": "spark.executor.instances",
}
#: Start-request variables this backend reads (besides KERNEL_EXTRA_SPARK_OPTS).
REQUEST_VALUES = (
    "KERNEL_YARN_QUEUE",
    "KERNEL_DRIVER_MEMORY",
    "KERNEL_DRIVER_CORES",
    "KERNEL_EXECUTOR_MEMORY",
    "KERNEL_EXECUTOR_CORES",
    "KERNEL_NUM_EXECUTORS",
)
KERNEL_ENV = "KF_KERNEL_ENV"
_UNITS = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1 << 20}


def memory_mb(text: str, what: str) -> int:
    """MiB of a Spark memory size (``512m``, ``2g``; a bare number is MiB, as Spark reads
    ``spark.driver.memory``); BadRequest naming *what*."""
    match = MEMORY.match(text.strip())
    if not match:
        raise BadRequest(f"{what} {text[:40]!r} is not a memory size like 512m or 2g")
    number, unit = int(match.group(1)), match.group(2).lower()
    mb = number * (_UNITS[unit] if unit else 1)
    if mb < 1:
        raise BadRequest(f"{what} {text[:40]!r} is less than 1 MiB")
    return int(mb + 0.999)


def count(text: str, what: str, lo: int, hi: int) -> int:
    if not re.fullmatch(r"\d{1,6}", text.strip()):
        raise BadRequest(f"{what} {text[:40]!r} is not a whole number")
    value = int(text)
    if not lo <= value <= hi:
        raise BadRequest(f"{what} {value} is out of range: {lo}..{hi} allowed for this kernel")
    return value


@dataclass(frozen=True)
class Limits:
    """What the kernelspec allows a request to ask for."""

    queue: str = "default"
    allowed_queues: tuple[str, ...] = ()
    max_memory_mb: int = 8192
    max_cores: int = 8
    max_executors: int = 32


@dataclass(frozen=True)
class Resources:
    """Validated queue and Spark resources of one kernel."""

    queue: str
    conf: dict[str, str] = field(default_factory=dict)


def resources(defaults: Mapping[str, str], limits: Limits, env: Mapping[str, str]) -> Resources:
    """The queue and Spark properties of a kernel: *defaults* (the kernelspec's, trusted)
    overridden by the request's allowed values in *env*. BadRequest (the value, then the
    rule) for a malformed value, Forbidden for a queue or amount the kernelspec does not
    allow."""
    conf = dict(defaults)
    queue = limits.queue
    asked = (env.get("KERNEL_YARN_QUEUE") or "").strip()
    if asked:
        if not QUEUE.match(asked):
            raise BadRequest(f"KERNEL_YARN_QUEUE {asked[:60]!r} is not a queue name")
        allowed = limits.allowed_queues or (limits.queue,)
        if asked not in allowed:
            raise Forbidden(
                f"KERNEL_YARN_QUEUE {asked!r} is not allowed for this kernel "
                f"(allowed: {', '.join(allowed)})"
            )
        queue = asked
    named = {
        "KERNEL_DRIVER_MEMORY": "spark.driver.memory",
        "KERNEL_DRIVER_CORES": "spark.driver.cores",
        "KERNEL_EXECUTOR_MEMORY": "spark.executor.memory",
        "KERNEL_EXECUTOR_CORES": "spark.executor.cores",
        "KERNEL_NUM_EXECUTORS": "spark.executor.instances",
    }
    for var, key in named.items():
        value = (env.get(var) or "").strip()
        if value:
            conf[key] = _request_value(key, value, var, limits)
    extra = env.get("KERNEL_EXTRA_SPARK_OPTS") or ""
    if extra.strip():
        for key, value in _request_opts(extra).items():
            conf[key] = _request_value(key, value, f"KERNEL_EXTRA_SPARK_OPTS {key}", limits)
    return Resources(queue=queue, conf=conf)


def _request_value(key: str, value: str, what: str, limits: Limits) -> str:
    if key.endswith((".memory", ".memoryOverhead", ".maxResultSize")):
        mb = memory_mb(value, what)
        if mb > limits.max_memory_mb:
            raise Forbidden(
                f"{what} {value} is more than this kernel may have ({limits.max_memory_mb} MiB)"
            )
        return f"{mb}m"
    if key.endswith(".cores") or key == "spark.task.cpus":
        return str(count(value, what, 1, limits.max_cores))
    if key.endswith(("instances", "Executors")):
        return str(count(value, what, 0, limits.max_executors))
    if not SAFE_VALUE.match(value):
        raise BadRequest(f"{what}: {value[:60]!r} has characters a Spark setting may not have")
    return value


def _request_opts(text: str) -> dict[str, str]:
    """The Spark properties a request's KERNEL_EXTRA_SPARK_OPTS sets (see module docstring)."""
    what = "KERNEL_EXTRA_SPARK_OPTS"
    try:
        words: list[str] = spark_kernel.split_opts(text, what, False)  # type: ignore[no-untyped-call]
    except spark_kernel.OptionsRefused as exc:
        raise BadRequest(str(exc)) from None
    out: dict[str, str] = {}
    it = iter(words)
    for word in it:
        name, eq, inline = word.partition("=")
        value = inline if eq else next(it, "")
        if name == "--conf":
            key, has, conf_value = value.partition("=")
            key = key.strip()
            if not has or not REQUEST_CONF_KEYS.match(key):
                raise Forbidden(
                    f"{what}: --conf {key[:80]} may not be set by a request (allowed: executor "
                    "and driver memory/cores, dynamicAllocation.*, sql.*, default.parallelism)"
                )
            out[key] = conf_value
        elif name in REQUEST_OPTIONS:
            out[REQUEST_OPTIONS[name]] = value
        else:
            raise Forbidden(
                f"{what}: {name[:40]} may not be set by a request (allowed: --conf, "
                f"{', '.join(REQUEST_OPTIONS)})"
            )
    return out


# -- the submission ------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    """One ``spark-submit``: its argv (no secrets), its properties (secrets: 0600 file) and
    the variables of its own process."""

    argv: list[str]
    properties: dict[str, str]
    env: dict[str, str]


def encode_env(env: Mapping[str, str]) -> str:
    """The kernel's environment as one shell-safe value (base64 of a JSON object)."""
    return base64.b64encode(json.dumps(dict(env), sort_keys=True).encode()).decode("ascii")


def kernel_tags(kernel_id: str, extra: Sequence[str] = ()) -> list[str]:
    """The YARN tags of a kernel's application (YARN lower-cases tags)."""
    return ["kernelfleet", f"kf-kernel-{kernel_id.lower()}", *(t.lower() for t in extra)]


def submission(
    *,
    spark_submit: str,
    kernel_id: str,
    launcher: str,
    files: Sequence[str],
    py_files: Sequence[str],
    kernel_argv: Sequence[str],
    python: str,
    resources: Resources,
    spark_conf: Mapping[str, str],
    response_env: Mapping[str, str],
    kernel_env: Mapping[str, str],
    submit_env: Mapping[str, str],
    tags: Sequence[str],
    ready_timeout: float,
    proxy_user: str | None = None,
    curve: bool = False,
    launcher_spark_context: bool = False,
) -> Submission:
    """The spark-submit of a cluster-mode kernel (see the module docstring)."""
    for what, value in (("python", python), *((f"file {p}", p) for p in [*files, *py_files])):
        if not SAFE_VALUE.match(value):
            raise BadRequest(f"{what}: {value[:80]!r} has characters a YARN path may not have")
    if proxy_user is not None and not USERNAME.match(proxy_user):
        raise BadRequest(f"KERNEL_USERNAME {proxy_user[:64]!r} is not a user name")
    for key, value in spark_conf.items():
        if key.startswith(("spark.yarn.appMasterEnv.", "spark.executorEnv.")) and not (
            SAFE_VALUE.match(str(value))
        ):
            raise BadRequest(
                f"the kernelspec's spark_conf {key} has characters a container variable may "
                "not have (YARN writes it into a shell script): fix the kernelspec"
            )
    props: dict[str, str] = {}
    if launcher_spark_context:  # the kernel uses no Spark: no executor until asked for
        props.update(
            {
                "spark.dynamicAllocation.enabled": "true",
                "spark.dynamicAllocation.shuffleTracking.enabled": "true",
                "spark.dynamicAllocation.minExecutors": "0",
                "spark.dynamicAllocation.initialExecutors": "0",
            }
        )
    props.update({k: str(v) for k, v in spark_conf.items()})
    props.update(resources.conf)
    props.update(
        {
            "spark.yarn.maxAppAttempts": "1",  # YARN must never re-run a launcher we stopped
            "spark.yarn.submit.waitAppCompletion": "false",
            "spark.yarn.tags": ",".join(tags),
            "spark.yarn.queue": resources.queue,
            "spark.submit.deployMode": "cluster",
            "spark.master": "yarn",
            "spark.app.name": kernel_id,
            "spark.pyspark.python": python,
            "spark.pyspark.driver.python": python,
            "spark.yarn.appMasterEnv.PYSPARK_PYTHON": python,
            "spark.executorEnv.PYSPARK_PYTHON": python,
            # the response key in the driver's environment: hide it from the Spark UI
            "spark.redaction.regex": "(?i)secret|password|token|access[.]?key|kf_response_key",
        }
    )
    for name, value in response_env.items():
        if not SAFE_VALUE.match(value):
            raise BadRequest(f"{name} has characters a container variable may not have")
        props[f"spark.yarn.appMasterEnv.{name}"] = value
    props[f"spark.yarn.appMasterEnv.{KERNEL_ENV}"] = encode_env(kernel_env)
    args = [
        "--ready-timeout",
        f"{max(1.0, ready_timeout):.0f}",
        "--argv-b64",  # Spark backslash-escapes $ and " inside single quotes: JSON would break
        base64.b64encode(json.dumps(list(kernel_argv)).encode()).decode("ascii"),
    ]
    if curve:
        args.insert(0, "--curve")
    if launcher_spark_context:
        args.insert(0, "--spark-context")
    argv = [spark_submit, "--master", "yarn", "--deploy-mode", "cluster"]
    argv += ["--name", kernel_id, "--queue", resources.queue]
    if proxy_user:
        argv += ["--proxy-user", proxy_user]
    if py_files:  # on the PYTHONPATH of the driver (under __pyfiles__/): respond.py
        argv += ["--py-files", ",".join(py_files)]
    if files:  # into the container's working directory, where the kernel argv names them
        argv += ["--files", ",".join(files)]
    argv += ["--properties-file", "{properties_file}", launcher, *args]
    return Submission(argv=argv, properties=props, env=dict(submit_env))


def properties_text(props: Mapping[str, str]) -> str:
    """*props* in java.util.Properties' format (what ``--properties-file`` reads)."""

    def escape(text: str, key: bool) -> str:
        out = []
        for i, ch in enumerate(text):
            if ch in "\\=:#!":
                out.append("\\" + ch)
            elif ch == " " and (key or i == 0):
                out.append("\\ ")
            elif ch == "\n":
                out.append("\\n")
            elif ch == "\r":
                out.append("\\r")
            elif ch == "\t":
                out.append("\\t")
            elif ch == "\f":
                out.append("\\f")
            elif ord(ch) < 0x20 or ord(ch) > 0x7E:
                out.extend(f"\\u{unit:04x}" for unit in _utf16(ch))
            else:
                out.append(ch)
        return "".join(out)

    return "".join(f"{escape(k, True)}={escape(v, False)}\n" for k, v in props.items())


def _utf16(ch: str) -> list[int]:
    data = ch.encode("utf-16-be")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


SUBMITTED = re.compile(r"Submitted application (application_\d+_\d+)")


def submitted_app_id(line: str) -> str | None:
    """The application id in a line of spark-submit's output, if it says one was submitted."""
    match = SUBMITTED.search(line)
    return match.group(1) if match else None
