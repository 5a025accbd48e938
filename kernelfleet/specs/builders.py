"""Pure builders of kernelspecs: ``kernel.json`` and ``bin/run.sh`` from install options.

Nothing here does I/O. :func:`build_spec` turns a validated :class:`SpecOptions` and the final
resource directory into the files of a kernelspec; :mod:`kernelfleet.specs.installer` writes
them. Every option's effect is unit-tested in ``tests/specs/test_builders.py``.

What is built here is the same for every spec kind; what differs per kind (the provisioner
named, the kind's own options and their part of ``kernel_provisioner.config``, where the default
display name says kernels run, the defaults of a few shared options, and a kernel shape of its
own where the shared one does not fit, as YARN's cluster mode) comes from the spec's
:class:`~kernelfleet.specs.kinds.SpecKind` (:mod:`kernelfleet.specs.kinds`): no branch here
names a kind.

Shapes (``<dir>`` is the kernelspec's resource directory, the same path on every host):

- Python: ``python -m ipykernel_launcher -f {connection_file}`` (plus
  ``--IPKernelApp.kernel_class=…`` for an ipykernel subclass).
- R: IRkernel's own argv (``R --slave -e IRkernel::main() --args {connection_file}``).
  IRkernel (like Apache Toree) has no CurveZMQ support, so kinds whose provisioner encrypts
  (ssh) switch ``transport_encryption`` off for R and Scala specs: their traffic is HMAC-signed
  but not encrypted.
- Spark (``--spark``, always for Scala): ``<dir>/bin/run.sh`` runs ``spark-submit`` in client
  mode with the application named after the kernel id; the app is kernelfleet's launcher
  (``<dir>/scripts/spark_kernel.py`` for Python, ``spark_kernel.R`` for R) or Apache Toree's jar
  for Scala. ``SPARK_OPTS`` (kernel.json ``env``, the admin's) and ``KERNEL_EXTRA_SPARK_OPTS``
  (the start request's) are split into words by the launcher's ``--split-spark-opts`` mode
  (shell-like quoting, nothing evaluated) and read back by bash as NUL-separated data: no
  ``eval``, no word splitting of untrusted text by the shell. A Python kernel in ``lazy``
  mode is started directly, so it answers before any JVM exists; PySpark then runs the same
  spark-submit (same name and options, handed over re-quoted in ``PYSPARK_SUBMIT_ARGS``)
  when the session is created in the background. Spark kernels use ``interrupt_mode:
  message``: a SIGINT to the process group would stop spark-submit's JVM. run.sh exports the
  kernel's address as ``SPARK_LOCAL_IP`` (executors must reach the driver; host names need
  not resolve). With ``--spark-master yarn`` this is YARN client mode (the driver on the
  host, executors in YARN containers): a kind may add ``HADOOP_CONF_DIR`` to the env
  (:meth:`SpecKind.extra_env`; ``spec install ssh --hadoop-conf-dir``).

``metadata.kernel_provisioner.config`` holds only settings that differ from the provisioner's
defaults (the kind's first, then ``authorized_users`` / ``unauthorized_users``), plus
``launch_timeout`` (always, as admins expect from ``jupyter ssh-spec``).
``metadata.kernelfleet`` records how the spec was made (used by ``spec list`` and
``hosts check``).
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, replace
from typing import Any

from kernelfleet import __version__
from kernelfleet.launchers import spark_kernel
from kernelfleet.specs import kinds
from kernelfleet.specs.kinds import SpecKind
from kernelfleet.specs.options import (
    DEFAULT_INIT_MODE,
    DEFAULT_KERNEL_CLASS,
    DEFAULT_LAUNCH_TIMEOUT,
    DEFAULT_SPARK_HOME,
    DEFAULT_SPARK_MASTER,
    INIT_MODES,
    KIND_DEFAULTED,
    LANGUAGES,
    SpecError,
    SpecOptions,
)

RUN_SH = "bin/run.sh"
PYTHON_LAUNCHER = "scripts/spark_kernel.py"
R_LAUNCHER = "scripts/spark_kernel.R"
TOREE_MAIN_CLASS = "org.apache.toree.Main"

#: spark-submit options a start request may not set: they would rename the application (it
#: must stay findable by kernel id), move the driver, change the user, or name another app.
#: Enforced by the launcher's splitter (the same list), at install time and on the host.
FORBIDDEN_REQUEST_SPARK_OPTS: tuple[str, ...] = spark_kernel.SPLITTER_FORBIDDEN

#: Env names the gateway sets per kernel (KERNEL_USERNAME, KERNEL_ID, …) or reads as its own
#: settings: a kernelspec's value would override them, so ``extra_env`` may not name them.
RESERVED_ENV = ("KERNEL_", "KF_", "KERNELFLEET_", "JPY_")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
KERNEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")
DOTTED_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
SPARK_MASTER_RE = re.compile(
    r"^(yarn|local(\[(\d+|\*)(,\d+)?\])?|(spark|k8s|mesos)://[A-Za-z0-9.:,/\[\]_-]+)$"
)
_UNSAFE_TEXT = re.compile(r"[\x00-\x1f\x7f]")
_UNSAFE_PATH = re.compile(r"[\x00-\x1f\x7f]")
_LANGUAGE_NAMES = {"python": "Python", "r": "R", "scala": "Scala"}


def display_name(opts: SpecOptions, kind: type[SpecKind]) -> str:
    """The display name: as given, else from language, Spark and where the kind runs kernels."""
    if opts.display_name:
        return opts.display_name
    own = kind.default_display_name(opts)
    if own is not None:
        return own
    lang = _LANGUAGE_NAMES.get(opts.lang, opts.lang)
    if opts.uses_spark or kind.implies_spark:
        return f"Spark - {lang} {kind.where} ({opts.spark_master})"
    return f"{lang} {kind.where}"


def with_kind_defaults(opts: SpecOptions) -> SpecOptions:
    """*opts* with its kind's defaults (:attr:`SpecKind.common_defaults`, else the shared
    ones) for the options left unset, and ``spark`` on for a kind that implies it (the kernel
    name, when not given, stays the one *opts* had: ``yarn_python``)."""
    kind = kinds.kind_class(opts.kind)
    opts = opts.with_defaults({k: d.value for k, d in kind.common_defaults.items()})
    if kind.implies_spark and not opts.spark:
        opts = replace(opts, spark=True, kernel_name=opts.name)
    return opts


def _str(value: str | None) -> str:
    """A kind-defaulted text option after :func:`with_kind_defaults` (never None then)."""
    assert value is not None, "options used before with_kind_defaults()"
    return value


def _is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_text(what: str, value: str, limit: int = 4096) -> None:
    if _UNSAFE_TEXT.search(value) or len(value) > limit:
        raise SpecError(f"{what} must be one line of at most {limit} characters")


def validate(opts: SpecOptions) -> SpecKind:
    """Raise :class:`SpecError` naming the first option whose value is not usable; return
    the spec's kind with its own options, checked (:meth:`SpecKind.validate`)."""
    return _checked(opts)[1]


def _checked(opts: SpecOptions) -> tuple[SpecOptions, SpecKind]:
    """*opts* with its kind's defaults (:func:`with_kind_defaults`), checked, and its kind."""
    opts = with_kind_defaults(opts)
    spark_home, init_mode = _str(opts.spark_home), _str(opts.spark_init_mode)
    for flag, value in (
        ("--display-name", opts.display_name),
        ("--python", opts.python),
        ("--spark-home", spark_home),
        ("--extra-spark-opts", opts.extra_spark_opts),
        ("--toree-jar", opts.toree_jar),
    ):
        # a byte that is not UTF-8 arrives as a lone surrogate (surrogateescape); run.sh and
        # kernel.json are UTF-8 text, so it could be written to neither
        if not _is_utf8(value):
            raise SpecError(f"{flag} must be UTF-8 text: {value[:200]!r} is not")
    kind_class = kinds.kind_class(opts.kind)
    if opts.lang not in LANGUAGES:
        raise SpecError(
            f"--language {opts.language!r} is not supported (use one of: {', '.join(LANGUAGES)})"
        )
    if not KERNEL_NAME_RE.match(opts.name):
        raise SpecError(
            f"--kernel-name {opts.name!r} is not valid: use letters, digits, '.', '_' and '-' "
            "(at most 64 characters, starting with a letter or digit)"
        )
    _check_text("--display-name", display_name(opts, kind_class), 200)
    if not opts.python.strip():
        raise SpecError("--python must name the interpreter to run on the hosts")
    if _UNSAFE_PATH.search(opts.python) or len(opts.python) > 1024:
        raise SpecError("--python must be a path without control characters")
    kind = kinds.kind_for(opts)
    kind.validate(opts)
    for flag, users in (
        ("--authorized-users", opts.authorized_users),
        ("--unauthorized-users", opts.unauthorized_users),
        ("--authorized-groups", opts.authorized_groups),
    ):
        for user in users:
            if not USER_RE.match(user):
                raise SpecError(f"{flag}: {user[:64]!r} is not a user name")
    timeout = opts.launch_timeout
    if timeout is None or not (math.isfinite(timeout) and timeout > 0):
        raise SpecError(f"--launch-timeout must be a positive number of seconds, not {timeout}")
    if not DOTTED_RE.match(opts.ipykernel_subclass_name):
        raise SpecError(
            f"--ipykernel-subclass-name {opts.ipykernel_subclass_name!r} must be a dotted "
            "'module.Class' name"
        )
    if opts.ipykernel_subclass_name != DEFAULT_KERNEL_CLASS and opts.lang != "python":
        raise SpecError("--ipykernel-subclass-name applies to Python kernels only")
    if init_mode not in INIT_MODES:
        raise SpecError(f"--spark-init-mode must be one of {', '.join(INIT_MODES)}")
    if not SPARK_MASTER_RE.match(opts.spark_master):
        raise SpecError(
            f"--spark-master {opts.spark_master[:200]!r} is not a Spark master URL "
            "(yarn, local[N], spark://host:port, k8s://…)"
        )
    # '' is "the provisioner's choice", for a kind whose default it is
    optional = kind_class.common_defaults.get("spark_home")
    if not (spark_home == "" and optional is not None and optional.value == "") and (
        not spark_home.startswith("/") or _UNSAFE_PATH.search(spark_home)
    ):
        raise SpecError(f"--spark-home must be an absolute path, not {spark_home[:200]!r}")
    _check_text("--extra-spark-opts", opts.extra_spark_opts)
    for flag, value in (
        ("--python", opts.python),
        ("--spark-home", spark_home),
        ("--extra-spark-opts", opts.extra_spark_opts),
        ("--toree-jar", opts.toree_jar),
    ):
        # kernel.json env values are templates for jupyter_client (${VAR} is substituted
        # from the start request's env): a '$' would let a request edit them
        if "$" in value:
            raise SpecError(f"{flag} must not contain '$'")
    split_spark_opts(opts.extra_spark_opts, what="--extra-spark-opts", trusted=True)
    for name, value in opts.extra_env:
        if not ENV_NAME_RE.match(name) or name.startswith(RESERVED_ENV):
            raise SpecError(
                f"env: {name[:100]!r} is not an environment variable name a kernelspec may set "
                f"(not {', '.join(p + '*' for p in RESERVED_ENV)})"
            )
        if "$" in value or "\0" in value or not _is_utf8(value) or len(value) > 4096:
            raise SpecError(
                f"env {name}: the value must be UTF-8 text without '$' or NUL, at most 4096 "
                "characters"
            )
    if opts.toree_jar and (
        not opts.toree_jar.startswith("/") or _UNSAFE_PATH.search(opts.toree_jar)
    ):
        raise SpecError("--toree-jar must be an absolute path")
    if opts.lang == "scala" and not opts.toree_jar:
        raise SpecError(
            "Scala kernels run Apache Toree: pass --toree-jar with the path of its assembly jar "
            "on the hosts (pip install apache-toree puts it under site-packages/toree/lib/)"
        )
    return opts, kind


def install_warnings(opts: SpecOptions) -> list[str]:
    """What may keep kernels of the (valid) spec for *opts* from starting, for the install
    command to print (:meth:`SpecKind.install_warnings`); :class:`SpecError` as
    :func:`validate`."""
    opts, kind = _checked(opts)
    return kind.install_warnings(opts)


def split_spark_opts(text: str, *, what: str, trusted: bool) -> list[str]:
    """Split spark-submit options like a POSIX shell would, evaluating nothing.

    Every word must be an option (``--x``, ``--x=v``, ``-v``) or the value after one: a bare
    word in option position would become spark-submit's application. *trusted* (the admin's
    options) lifts the ban on :data:`FORBIDDEN_REQUEST_SPARK_OPTS`. The rules are the
    launcher's own (it applies them again on the host, ``spark_kernel.py
    --split-spark-opts``): one implementation, so installer and host cannot disagree.
    """
    try:
        words: list[str] = spark_kernel.split_opts(text, what, trusted)  # type: ignore[no-untyped-call]
    except spark_kernel.OptionsRefused as exc:
        raise SpecError(str(exc)) from None
    return words


# -- kernel.json -------------------------------------------------------------------------------


def provisioner_config(opts: SpecOptions, kind: SpecKind) -> dict[str, Any]:
    """The kind's non-default provisioner settings, then the common ones, plus
    ``launch_timeout`` (always, as admins expect from ``jupyter ssh-spec``)."""
    cfg = dict(kind.provisioner_config(opts))
    if opts.authorized_users:
        cfg["authorized_users"] = list(opts.authorized_users)
    if opts.unauthorized_users:
        cfg["unauthorized_users"] = list(opts.unauthorized_users)
    if opts.authorized_groups:
        cfg["authorized_groups"] = list(opts.authorized_groups)
    timeout = opts.launch_timeout
    cfg["launch_timeout"] = _number(
        KIND_DEFAULTED["launch_timeout"] if timeout is None else timeout
    )
    return cfg


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def spark_opts(opts: SpecOptions) -> str:
    """The admin's spark-submit options (``SPARK_OPTS``): master, client mode, extras.

    ``--name`` is added by run.sh from ``KERNEL_ID`` so it cannot go stale.
    """
    words = ["--master", opts.spark_master, "--deploy-mode", "client"]
    words += split_spark_opts(opts.extra_spark_opts, what="--extra-spark-opts", trusted=True)
    return shlex.join(words)


def build_argv(opts: SpecOptions, resource_dir: str, kind: SpecKind | None = None) -> list[str]:
    """The kernel's argv: *kind*'s own (:meth:`SpecKind.build_argv`), else the shared one."""
    own = kind.build_argv(opts, resource_dir) if kind is not None else None
    if own is not None:
        return own
    if opts.uses_spark:
        run_sh = f"{resource_dir.rstrip('/')}/{RUN_SH}"
        init_mode = opts.spark_init_mode or DEFAULT_INIT_MODE
        if opts.lang == "scala":
            return [run_sh, "--profile", "{connection_file}"]
        if opts.lang == "r":
            return [run_sh, "{connection_file}", init_mode]
        argv = [run_sh, "--connection-file", "{connection_file}"]
        argv += ["--spark-init-mode", init_mode]
        if opts.ipykernel_subclass_name != DEFAULT_KERNEL_CLASS:
            argv += ["--kernel-class", opts.ipykernel_subclass_name]
        return argv
    if opts.lang == "r":
        return ["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"]
    argv = [opts.python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    if opts.ipykernel_subclass_name != DEFAULT_KERNEL_CLASS:
        argv.append(f"--IPKernelApp.kernel_class={opts.ipykernel_subclass_name}")
    return argv


def build_env(opts: SpecOptions, kind: SpecKind | None = None) -> dict[str, str]:
    """The kernel's env: *kind*'s own (:meth:`SpecKind.build_env`), else the shared one; then
    :attr:`SpecOptions.extra_env` where neither set the name."""
    own = kind.build_env(opts) if kind is not None else None
    env = dict(own) if own is not None else _shared_env(opts, kind)
    for name, value in opts.extra_env:
        env.setdefault(name, value)
    return env


def _shared_env(opts: SpecOptions, kind: SpecKind | None) -> dict[str, str]:
    env: dict[str, str] = {}
    if opts.uses_spark:
        env["SPARK_HOME"] = DEFAULT_SPARK_HOME if opts.spark_home is None else opts.spark_home
        env["SPARK_OPTS"] = spark_opts(opts)
        env["KERNELFLEET_PYTHON"] = opts.python
        if opts.lang == "python":
            env["PYSPARK_PYTHON"] = opts.python
            env["PYSPARK_DRIVER_PYTHON"] = opts.python
        if opts.lang == "scala":
            env["TOREE_JAR"] = opts.toree_jar
    if kind is not None:
        env.update(kind.extra_env(opts))
    return env


def build_kernel_json(opts: SpecOptions, resource_dir: str) -> dict[str, Any]:
    """The kernel.json dict for *opts*, installed at *resource_dir* (absolute path)."""
    return _kernel_json(*_checked(opts), resource_dir)


def _kernel_json(opts: SpecOptions, kind: SpecKind, resource_dir: str) -> dict[str, Any]:
    interrupt_mode = kind.interrupt_mode(opts) or ("message" if opts.uses_spark else "signal")
    return {
        "argv": build_argv(opts, resource_dir, kind),
        "display_name": display_name(opts, type(kind)),
        "language": {"python": "python", "r": "R", "scala": "scala"}[opts.lang],
        "interrupt_mode": interrupt_mode,
        "env": build_env(opts, kind),
        "metadata": {
            "kernel_provisioner": {
                "provisioner_name": kind.provisioner_name,
                "config": provisioner_config(opts, kind),
            },
            "kernelfleet": {
                "installer": f"kernelfleet {__version__}",
                "kind": kind.kind,
                "language": opts.lang,
                "python": opts.python,
                **({"env": opts.env_name} if opts.env_name else {}),
                **({"migrated_from": dict(opts.migrated_from)} if opts.migrated_from else {}),
                "spark": (
                    {
                        "master": opts.spark_master,
                        "home": opts.spark_home,
                        "init_mode": opts.spark_init_mode,
                    }
                    if opts.uses_spark
                    else None
                ),
            },
        },
    }


# -- bin/run.sh ----------------------------------------------------------------------------------

_RUN_SH_HEAD = """\
#!/usr/bin/env bash
# Starts kernel '{name}' through spark-submit (client mode). Written by `kernelfleet spec install`;
# `kernelfleet spec install --replace` rewrites it.
#
# Options come from two places, both split into words by the launcher (shell-like quoting,
# nothing evaluated) and read back here as NUL-separated data -- never through eval:
#   SPARK_OPTS               the admin's options (kernel.json "env")
#   KERNEL_EXTRA_SPARK_OPTS  the start request's options (checked: options only, and none of
#                            --name/--master/--deploy-mode/--class/--proxy-user/...)
set -euo pipefail

: "${{KERNEL_ID:?KERNEL_ID is not set (kernels are started by the kernelfleet host agent)}}"
: "${{SPARK_HOME:?SPARK_HOME is not set (kernel.json env)}}"
here="$(cd "$(dirname "${{BASH_SOURCE[0]}}")/.." && pwd)"
python="${{KERNELFLEET_PYTHON:-{python}}}"

spark_submit="$SPARK_HOME/bin/spark-submit"
if [[ ! -x "$spark_submit" ]]; then
  echo "kernelfleet: $spark_submit not found:" \
    "install Spark there or fix SPARK_HOME in $here/kernel.json" >&2
  exit 127
fi

# The driver advertises the address the kernel listens on (from the connection file): the
# executors must reach it, and the host's own name need not resolve.
if [[ -z "${{SPARK_LOCAL_IP:-}}" ]]; then
  SPARK_LOCAL_IP="$("$python" -I "$here/{splitter}" --local-ip "$@")" || SPARK_LOCAL_IP=""
  if [[ -n "$SPARK_LOCAL_IP" ]]; then export SPARK_LOCAL_IP; else unset SPARK_LOCAL_IP; fi
fi

opts=()
mapfile -d '' -t opts < <("$python" -I "$here/{splitter}" --split-spark-opts)
if ! wait "$!"; then
  echo "kernelfleet: refusing to start: the Spark options above are not acceptable" >&2
  exit 2
fi
"""

_RUN_SH_PYTHON = """
launcher="$here/{launcher}"
if [[ " $* " == *" --spark-init-mode lazy "* ]]; then
  # lazy: the kernel starts now, without waiting for a JVM; when the session is created in the
  # background, PySpark runs the same spark-submit (the launcher passes these options to it
  # in PYSPARK_SUBMIT_ARGS, re-quoted, never evaluated).
  pypath=""
  for zip in "$SPARK_HOME"/python/lib/pyspark.zip "$SPARK_HOME"/python/lib/py4j-*-src.zip; do
    if [[ -f "$zip" ]]; then pypath="$pypath${{pypath:+:}}$zip"; fi
  done
  export PYTHONPATH="$pypath${{PYTHONPATH:+:$PYTHONPATH}}"
  exec "$python" "$launcher" "$@"
fi
exec "$spark_submit" --name "$KERNEL_ID" "${{opts[@]}}" "$launcher" "$@"
"""

_RUN_SH_R = """
exec "$spark_submit" --name "$KERNEL_ID" "${{opts[@]}}" "$here/{launcher}" "$@"
"""

_RUN_SH_SCALA = """
: "${{TOREE_JAR:?TOREE_JAR is not set (kernel.json env)}}"
exec "$spark_submit" --name "$KERNEL_ID" "${{opts[@]}}" --class {main} "$TOREE_JAR" "$@"
"""


def build_run_sh(opts: SpecOptions) -> str | None:
    """The text of ``bin/run.sh`` for a Spark spec, or None when the spec needs none.

    Install-time values in the script are quoted with :func:`shlex.quote`; request values
    are only ever expanded inside double quotes or arrays.
    """
    return _run_sh(*_checked(opts))


def _run_sh(opts: SpecOptions, kind: SpecKind) -> str | None:
    if not opts.uses_spark or not kind.writes_run_sh(opts):
        return None
    head = _RUN_SH_HEAD.format(
        name=opts.name.replace("\n", " "),
        python=_quote_default(opts.python),
        splitter=PYTHON_LAUNCHER,
    )
    if opts.lang == "scala":
        return head + _RUN_SH_SCALA.format(main=TOREE_MAIN_CLASS)
    if opts.lang == "r":
        return head + _RUN_SH_R.format(launcher=R_LAUNCHER)
    return head + _RUN_SH_PYTHON.format(launcher=PYTHON_LAUNCHER)


def _quote_default(value: str) -> str:
    """*value* for use inside ``"${VAR:-…}"``: reject what double quotes would expand, and
    what bash reads as syntax there (a single quote opens a quote, ``}`` ends the default)."""
    if re.search(r'["\'$`\\}]', value):
        raise SpecError(f"--python {value[:200]!r} must not contain quotes, '$', '`', '\\' or '}}'")
    return value


@dataclass(frozen=True)
class SpecFiles:
    """A kernelspec to write: kernel.json plus generated files (relative path → text, mode)."""

    name: str
    kernel_json: dict[str, Any]
    files: dict[str, tuple[str, int]]
    #: package resources to copy: relative destination path → launcher module file name
    launchers: dict[str, str]


def build_spec(opts: SpecOptions, resource_dir: str) -> SpecFiles:
    """Every file of the kernelspec for *opts*, installed at *resource_dir*."""
    opts, kind = _checked(opts)
    kernel_json = _kernel_json(opts, kind, resource_dir)
    files: dict[str, tuple[str, int]] = {}
    launchers: dict[str, str] = {}
    run_sh = _run_sh(opts, kind)
    if run_sh is not None:
        files[RUN_SH] = (run_sh, 0o755)
        launchers[PYTHON_LAUNCHER] = "spark_kernel.py"
        if opts.lang == "r":
            launchers[R_LAUNCHER] = "spark_kernel.R"
    own = kind.launchers(opts)
    if own is not None:
        launchers = dict(own)
    files.update(kind.spec_files(opts))
    return SpecFiles(opts.name, kernel_json, files, launchers)


__all__ = [
    "DEFAULT_INIT_MODE",
    "DEFAULT_KERNEL_CLASS",
    "DEFAULT_LAUNCH_TIMEOUT",
    "DEFAULT_SPARK_HOME",
    "DEFAULT_SPARK_MASTER",
    "FORBIDDEN_REQUEST_SPARK_OPTS",
    "INIT_MODES",
    "LANGUAGES",
    "SpecError",
    "SpecFiles",
    "SpecOptions",
    "build_argv",
    "build_env",
    "build_kernel_json",
    "build_run_sh",
    "build_spec",
    "display_name",
    "install_warnings",
    "provisioner_config",
    "spark_opts",
    "split_spark_opts",
    "validate",
    "with_kind_defaults",
]
