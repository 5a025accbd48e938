"""One EG or GP kernelspec → the ``spec install`` options of its kernelfleet equivalent (pure).

:func:`plan` reads the original's stanza (``metadata.process_proxy`` of Enterprise Gateway,
``metadata.kernel_provisioner`` of Gateway Provisioners), its argv (their launcher, its
language and options) and its env (``SPARK_HOME``, ``SPARK_OPTS``, the rest carried as data),
and returns a :class:`~.model.Plan`: the :class:`~kernelfleet.specs.options.SpecOptions` that
``kernelfleet spec install <kind>`` would take, and a finding for every field: mapped (and to
what), dropped (kernelfleet does it itself), a warning, or unmappable (with what to do). The
options are checked by the same builders as an install, so a plan without unmappable findings
installs. The README's table "Coming from Enterprise Gateway" lists the same mapping; a test
checks one against the other.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from kernelfleet.errors import PublicError
from kernelfleet.foreign import EG, Foreign, foreign_of
from kernelfleet.specs import builders
from kernelfleet.specs.kinds import kind_class
from kernelfleet.specs.migrate.model import BLOCKER, DROPPED, MAPPED, WARNING, Finding, Plan
from kernelfleet.specs.migrate.spark import INSTALLER_PLACEHOLDER, SparkMapping, map_spark_opts
from kernelfleet.specs.options import DEFAULT_KERNEL_CLASS, KIND_DEFAULTED, SpecOptions

#: Their launchers' options whose value kernelfleet gives its own launchers itself.
PLUMBING = frozenset(
    {"kernel-id", "response-address", "public-key", "port-range", "transport-encryption"}
)
#: Their launchers' options kernelfleet has no use for (its interrupts are messages).
IGNORED = frozenset({"customAppName", "alternate-sigint"})
#: Env entries their run.sh reads, kernelfleet's do not.
THEIR_RUN_SH_ENV = ("LAUNCH_OPTS", "__TOREE_OPTS__", "DEFAULT_INTERPRETER", "EG_ALTERNATE_SIGINT")
KEYS_SSH = ("remote_hosts", "load_balancing_algorithm")
KEYS_YARN = (
    "yarn_endpoint",
    "alt_yarn_endpoint",
    "yarn_endpoint_security_enabled",
    "impersonation_enabled",
)
KEYS_IMAGE = ("image_name", "executor_image_name")
#: Env entries of a Spark spec that are install options here: name → (option, a common option
#: (else the kind's own), the kinds that have it).
SPARK_ENV_OPTIONS = {
    "SPARK_HOME": ("spark_home", True, ("ssh", "yarn")),
    "PYSPARK_PYTHON": ("python", True, ("ssh", "yarn")),
    "HADOOP_CONF_DIR": ("hadoop_conf_dir", False, ("ssh", "yarn")),
}
#: Which of their launchers each kind can take the place of.
LAUNCHERS_OF = {
    "ssh": {"python", "r", "run.sh", "ipykernel", "irkernel"},
    "local": {"python", "ipykernel", "irkernel"},
    "yarn": {"run.sh"},
    "k8s": {"container"},
    "docker": {"container"},
}


class _Work:
    """The state of one plan: findings so far and the options built."""

    def __init__(self, name: str, foreign: Foreign) -> None:
        self.foreign = foreign
        self.findings: list[Finding] = []
        self.common: dict[str, Any] = {"kernel_name": name}
        self.own: dict[str, Any] = {}
        self.env: dict[str, str] = {}

    def add(self, level: str, field: str, text: str) -> None:
        self.findings.append(Finding(level, field, text))


def _unset(value: Any) -> bool:
    return (
        not isinstance(value, str) or not value.strip() or bool(INSTALLER_PLACEHOLDER.search(value))
    )


def _words(value: Any) -> list[str] | None:
    """A user or host list as they write it: a comma string, or a list of (comma) strings;
    None for anything else (a number, null, an object)."""
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, str) for item in items):
        return None
    return [p.strip() for item in items for p in item.split(",") if p.strip()]


# -- argv ---------------------------------------------------------------------------------------


def _launcher(argv: list[str]) -> tuple[str | None, str | None, list[str]]:
    """(launcher kind, interpreter, the launcher's own arguments) of their argv."""
    for i, word in enumerate(argv):
        base = word.rsplit("/", 1)[-1]
        if base == "launch_ipykernel.py":
            return "python", (argv[0] if i >= 1 else None), argv[i + 1 :]
        if base == "launch_IRkernel.R":
            return "r", None, argv[i + 1 :]
        if base in ("launch_kubernetes.py", "launch_docker.py"):
            return "container", None, argv[i + 1 :]
        if base == "run.sh" and i == 0:
            return "run.sh", None, argv[1:]
    if len(argv) >= 3 and argv[1:3] == ["-m", "ipykernel_launcher"]:
        return "ipykernel", argv[0], []
    if any("IRkernel::main" in w for w in argv):
        return "irkernel", None, []
    return None, None, []


def _launcher_options(work: _Work, args: list[str]) -> dict[str, str]:
    """Their launcher's ``--name value`` options (``--RemoteProcessProxy.name`` too)."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        word = args[i]
        key = word.removeprefix("--").removeprefix("RemoteProcessProxy.")
        value = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else ""
        i += 2 if value else 1
        if not word.startswith("--"):
            continue  # EG's deprecated positional connection file
        if key in PLUMBING or key in IGNORED:
            continue
        if key in ("spark-context-initialization-mode", "kernel-class-name", "cluster-type"):
            out[key] = value
        else:
            work.add(
                BLOCKER,
                f"argv {word}",
                "is an option kernelfleet's launchers do not "
                "have: remove it from the original and migrate again",
            )
    return out


def _language(spec: Mapping[str, Any], launcher: str | None) -> str | None:
    lang = spec.get("language")
    if not _unset(lang):
        return str(lang).strip().lower()
    if launcher in ("r", "irkernel"):
        return "r"
    env = spec.get("env") if isinstance(spec.get("env"), Mapping) else {}
    return "scala" if "__TOREE_OPTS__" in (env or {}) else "python"


def _map_argv(work: _Work, spec: Mapping[str, Any], kind: str) -> str | None:
    """Language, interpreter, kernel class and Spark mode from their argv; the launcher."""
    raw = spec.get("argv")
    argv = [str(w) for w in raw] if isinstance(raw, list) else []
    launcher, interpreter, args = _launcher(argv)
    if launcher is None or launcher not in LAUNCHERS_OF[kind]:
        what = argv[0] if argv else "nothing"
        text = f"runs {what[:120]!r}, a launcher kernelfleet does not know"
        if launcher is not None:
            text = f"runs their {launcher} launcher, which does not fit a {kind} spec"
        work.add(
            BLOCKER, "argv", f"{text}: install the kernel with 'kernelfleet spec install {kind}'"
        )
        return None
    lang = _language(spec, launcher)
    work.common["language"] = lang
    if lang == "scala" or launcher == "run.sh":
        work.common["spark"] = True
    opts = _launcher_options(work, args)
    if kind not in ("k8s", "docker") and interpreter and not _unset(interpreter):
        python = "python3" if interpreter == "python" else interpreter
        work.common["python"] = python
        work.add(MAPPED, "argv[0]", f"--python={python}")
    cls = opts.get("kernel-class-name", "")
    if cls and not _unset(cls) and cls != DEFAULT_KERNEL_CLASS:
        work.common["ipykernel_subclass_name"] = cls
        work.add(MAPPED, "argv --kernel-class-name", f"--ipykernel-subclass-name={cls}")
    if opts.get("cluster-type", "spark") not in ("spark", "none", ""):
        work.add(
            BLOCKER,
            "argv --cluster-type",
            f"{opts['cluster-type']!r}: kernelfleet starts Spark sessions only (no Dask cluster)",
        )
    mode = opts.get("spark-context-initialization-mode", "")
    if mode in ("lazy", "eager") and launcher in ("python", "r") and kind != "local":
        work.common["spark"] = True
    elif mode in ("lazy", "eager") and not work.common.get("spark"):
        work.add(
            BLOCKER,
            "argv --spark-context-initialization-mode",
            f"{mode}: kernelfleet's {kind} kernels of this launcher have no Spark session; "
            "use 'kernelfleet spec install ssh --spark' or 'spec install yarn'",
        )
    if mode in ("lazy", "eager", "none") and work.common.get("spark"):
        if kind == "yarn" and mode != "eager":
            work.add(
                DROPPED,
                "argv --spark-context-initialization-mode",
                f"{mode}: YARN cluster mode always creates the session at start (eager)",
            )
        else:
            work.common["spark_init_mode"] = mode
            work.add(
                MAPPED, "argv --spark-context-initialization-mode", f"--spark-init-mode={mode}"
            )
    work.add(
        MAPPED,
        "argv",
        f"their {launcher} launcher → kernelfleet's {lang} kernel "
        f"({'Spark, ' if work.common.get('spark') else ''}{kind}): --language={lang}"
        f"{' --spark' if work.common.get('spark') else ''}",
    )
    return launcher


# -- config ---------------------------------------------------------------------------------------


def _map_config(work: _Work, kind: str, stanza: str) -> None:
    for key, value in work.foreign.config.items():
        field = f"{stanza}.config.{key}"
        if key in ("authorized_users", "unauthorized_users", "remote_hosts") and (
            _words(value) is None
        ):
            work.add(BLOCKER, field, "is neither a comma list nor a list of names: fix it")
        elif key in ("authorized_users", "unauthorized_users"):
            users = tuple(_words(value) or ())
            work.common[key] = users
            work.add(MAPPED, field, f"--{key.replace('_', '-')}={','.join(users)}")
        elif key == "launch_timeout":
            _launch_timeout(work, field, value, kind)
        elif key == "port_range":
            _port_range(work, field, str(value), kind)
        elif key in KEYS_SSH and kind == "ssh":
            _ssh_key(work, field, key, value)
        elif key in KEYS_YARN and kind == "yarn":
            _yarn_key(work, field, key, value)
        elif key in KEYS_IMAGE and kind in ("k8s", "docker"):
            _image_key(work, field, key, value)
        else:
            work.add(
                BLOCKER,
                field,
                f"has no equivalent for {kind} kernels: remove it from the "
                "original (or use --force to migrate without it)",
            )


def _launch_timeout(work: _Work, field: str, value: Any, kind: str) -> None:
    try:
        seconds = float(value)
    except (TypeError, ValueError, OverflowError):
        work.add(BLOCKER, field, f"{str(value)[:40]!r} is not a number of seconds: write one")
        return
    work.common["launch_timeout"] = seconds
    work.add(MAPPED, field, f"--launch-timeout={seconds:g}")
    own = kind_class(kind).common_defaults.get("launch_timeout")
    floor = own.value if own is not None else KIND_DEFAULTED["launch_timeout"]
    if seconds < floor:
        work.add(
            WARNING,
            field,
            f"{seconds:g} s is less than kernelfleet's default for {kind} "
            f"kernels ({floor:g} s); clients' KERNEL_LAUNCH_TIMEOUT still outranks it",
        )


def _port_range(work: _Work, field: str, value: str, kind: str) -> None:
    if value.strip() in ("", "0..0"):
        work.add(DROPPED, field, "0..0 is any port, kernelfleet's default")
    elif kind == "ssh":
        work.own["port_range"] = value.strip()
        work.add(MAPPED, field, f"--port-range={value.strip()}")
    elif kind in ("k8s", "docker"):
        work.add(
            DROPPED,
            field,
            "a container has ports of its own; the gateway reaches them on its address",
        )
    else:
        work.add(
            BLOCKER,
            field,
            f"{kind} kernels listen on any free port of their node: open "
            "those to the gateway, then migrate with --force",
        )


def _ssh_key(work: _Work, field: str, key: str, value: Any) -> None:
    if key == "remote_hosts":
        hosts = tuple(_words(value) or ())
        work.own["remote_hosts"] = hosts
        work.add(MAPPED, field, f"--remote-hosts={','.join(hosts)}")
    else:
        work.own["load_balancing_algorithm"] = str(value)
        work.add(MAPPED, field, f"--load-balancing-algorithm={value}")


def _endpoint(value: str) -> str:
    """``http://rm:8088/ws/v1/cluster`` (their form) → ``http://rm:8088`` (ours)."""
    return re.sub(r"/ws/v1/cluster/?$", "", value.strip().rstrip("/"))


def _yarn_key(work: _Work, field: str, key: str, value: Any) -> None:
    if key in ("yarn_endpoint", "alt_yarn_endpoint"):
        if _unset(value):
            return
        endpoints = list(work.own.get("yarn_endpoints", ()))
        # the ResourceManager of yarn_endpoint first, whichever key the JSON names first
        endpoints.insert(0 if key == "yarn_endpoint" else len(endpoints), _endpoint(str(value)))
        work.own["yarn_endpoints"] = tuple(endpoints)
        work.add(MAPPED, field, f"--yarn-endpoints={_endpoint(str(value))}")
    elif key == "impersonation_enabled":
        on = value is True or str(value).lower() == "true"
        work.own["impersonation"] = on or work.own.get("impersonation", False)
        work.add(MAPPED, field, f"--impersonation{'' if on else ' off'}")
    elif value is True or str(value).lower() == "true":  # yarn_endpoint_security_enabled
        work.add(
            BLOCKER,
            field,
            "Kerberos (SPNEGO) to the ResourceManager is not supported: "
            "kernelfleet reaches the REST API without it",
        )
    else:
        work.add(DROPPED, field, "off, as kernelfleet")


def _image_key(work: _Work, field: str, key: str, value: Any) -> None:
    if _unset(value):
        return
    if key == "executor_image_name":
        work.add(
            BLOCKER,
            field,
            "Spark executors in pods are not supported: kernelfleet's "
            "container kernels are plain ipykernel or IRkernel",
        )
        return
    image = str(value).strip()
    work.own["image"] = image
    work.add(MAPPED, field, f"--image={image}")
    if image.startswith("elyra/"):
        work.add(
            WARNING,
            field,
            f"{image} holds their launchers, not kernelfleet's: build a "
            "kernel image with 'kernelfleet image build' and reinstall with --image",
        )


# -- env ------------------------------------------------------------------------------------------


def _map_env(work: _Work, spec: Mapping[str, Any], kind: str) -> None:
    raw = spec.get("env")
    env: dict[str, str] = {}
    for key, value in raw.items() if isinstance(raw, Mapping) else ():
        if isinstance(value, str):
            env[str(key)] = value
        else:
            work.add(BLOCKER, f"env.{key}", "is not a string: write it as one")
    spark = bool(work.common.get("spark"))
    for key in THEIR_RUN_SH_ENV:
        if key in env:
            value = env.pop(key)
            if key == "LAUNCH_OPTS" and value.strip():
                work.add(
                    BLOCKER,
                    f"env.{key}",
                    "passes options to their launcher, which "
                    "kernelfleet does not run: remove it and migrate again",
                )
            else:
                work.add(
                    DROPPED,
                    f"env.{key}",
                    "read by their run.sh only (kernelfleet "
                    "interrupts Spark kernels with messages)",
                )
    for key, (option, common, kinds) in SPARK_ENV_OPTIONS.items():
        # an empty value, or one with their installer's placeholder, stays in env: reported
        # with the others below
        if spark and kind in kinds and not _unset(env.get(key)):
            value = env.pop(key)
            (work.common if common else work.own)[option] = value
            work.add(MAPPED, f"env.{key}", f"--{option.replace('_', '-')}={value}")
    texts = [(k, env.pop(k)) for k in ("SPARK_OPTS", "__TOREE_SPARK_OPTS__") if k in env and spark]
    if texts:  # both, in one: neither may replace what the other set
        field = " + ".join(f"env.{k}" for k, _ in texts)
        _map_spark(work, kind, field, " ".join(t for _, t in texts))
    if spark and "PYTHONPATH" in env:
        env.pop("PYTHONPATH")
        work.add(DROPPED, "env.PYTHONPATH", "kernelfleet puts pyspark and py4j on the path itself")
    placeholders = []
    for key, value in sorted(env.items()):
        if INSTALLER_PLACEHOLDER.search(value):
            placeholders.append(key)
        elif "$" in value:
            work.add(
                BLOCKER,
                f"env.{key}",
                "uses '$' substitution, which a start request "
                "could steer under kernelfleet: write the value out and migrate again",
            )
        elif key.startswith(builders.RESERVED_ENV):
            work.add(
                BLOCKER,
                f"env.{key}",
                "is set by the gateway for each kernel (or a request): a kernelspec may not "
                "fix it; remove it and migrate again",
            )
        else:
            work.env[key] = value
            work.add(MAPPED, f"env.{key}", "carried over as it is")
    if placeholders:
        work.add(
            DROPPED,
            "env",
            f"{', '.join(placeholders)} still held their installer's "
            "placeholders (never rendered): left out",
        )


def _map_spark(work: _Work, kind: str, field: str, text: str) -> None:
    if kind not in ("ssh", "yarn"):
        work.add(BLOCKER, field, f"Spark kernels are not supported by 'spec install {kind}'")
        return
    got: SparkMapping = map_spark_opts(text, kind=kind, source=field)
    work.findings += got.findings
    mode = got.deploy_mode or ("cluster" if kind == "yarn" else "client")
    if (kind == "yarn") != (mode == "cluster"):
        work.add(
            BLOCKER,
            f"{field} --deploy-mode",
            f"{mode} does not fit a {kind} spec ({'cluster' if kind == 'yarn' else 'client'} mode)",
        )
    if kind == "ssh":
        if got.master and "$" in got.master:
            work.add(BLOCKER, f"{field} --master", "relies on the shell ('$'): write it out")
        elif got.master:
            work.common["spark_master"] = got.master
            work.add(MAPPED, f"{field} --master", f"--spark-master={got.master}")
        if got.extra:
            work.common["extra_spark_opts"] = " ".join(_quoted(got.extra))
        return
    if got.master not in (None, "yarn"):
        work.add(BLOCKER, f"{field} --master", f"{got.master!r}: a YARN spec submits to YARN")
    work.own.update(got.yarn)
    if got.impersonation:
        work.own["impersonation"] = True


def _quoted(words: list[str]) -> list[str]:
    return [shlex.quote(w) for w in words]


# -- the whole spec -----------------------------------------------------------------------------


def _scala_jar(work: _Work, source_dir: str, files: Iterable[str]) -> None:
    jars = sorted(f for f in files if re.fullmatch(r"lib/toree-assembly[^/]*\.jar", f))
    if jars:
        path = f"{source_dir.rstrip('/')}/{jars[-1]}"
        work.common["toree_jar"] = path
        work.add(MAPPED, jars[-1], f"--toree-jar={path} (keep the original's lib/ on the hosts)")
    else:
        work.add(
            BLOCKER,
            "lib/",
            "holds no Apache Toree assembly jar (toree-assembly-*.jar): "
            "put one there and migrate again",
        )


def _dropped_shape(work: _Work, spec: Mapping[str, Any]) -> None:
    """Report the fields kernelfleet writes itself for the kind: interrupt_mode, metadata."""
    if "interrupt_mode" in spec:
        work.add(DROPPED, "interrupt_mode", "kernelfleet sets it for the kind (message for Spark)")
    meta = spec.get("metadata")
    extra = sorted(
        str(k)
        for k in (meta if isinstance(meta, Mapping) else {})
        if k not in ("process_proxy", "kernel_provisioner")
    )
    if extra:
        work.add(
            DROPPED,
            ", ".join(f"metadata.{k}" for k in extra),
            "not carried: kernels announce the debugger in their kernel_info themselves",
        )


def _placeholders(spec: Mapping[str, Any]) -> list[str]:
    """The fields outside env that still hold their installer's ``${…}`` placeholders."""
    out = [
        key
        for key in ("language", "display_name")
        if isinstance(spec.get(key), str) and INSTALLER_PLACEHOLDER.search(spec[key])
    ]
    raw = spec.get("argv")
    argv: list[Any] = raw if isinstance(raw, list) else []
    for i, word in enumerate(argv):
        if isinstance(word, str) and INSTALLER_PLACEHOLDER.search(word):
            before = argv[i - 1] if i else ""
            flag = isinstance(before, str) and before.startswith("--")
            out.append(f"argv {before}" if flag else f"argv[{i}]")
    return out


def _without_env_we_set(work: _Work, options: SpecOptions, resource_dir: str) -> SpecOptions:
    """*options* without the carried env entries the kind's own env sets (they would be
    ignored), each reported."""
    ours = builders.build_kernel_json(replace(options, extra_env=()), resource_dir)["env"]
    clash = sorted(set(ours) & set(work.env))
    if not clash:
        return options
    for key in clash:
        work.findings = [f for f in work.findings if f.field != f"env.{key}"]
        work.add(DROPPED, f"env.{key}", f"kernelfleet sets it for the kind ({ours[key][:60]!r})")
    kept = tuple((k, v) for k, v in options.extra_env if k not in clash)
    return replace(options, extra_env=kept)


def plan(name: str, spec: Mapping[str, Any], source_dir: str, files: Iterable[str] = ()) -> Plan:
    """The migration of kernel.json dict *spec*, kernelspec *name* in *source_dir*, whose
    files (relative paths) are *files*."""
    foreign = foreign_of(spec)
    if foreign is None:
        note = Finding(
            BLOCKER,
            "metadata",
            "is not an Enterprise Gateway or Gateway Provisioners kernelspec: nothing to migrate",
        )
        return Plan(name, source_dir, None, None, (note,))
    kind = foreign.kind
    if kind is None:
        what = foreign.name or "a launcher of theirs without a process proxy or provisioner"
        note = Finding(
            BLOCKER,
            "metadata",
            f"{what} has no kernelfleet equivalent (kernels "
            "run on SSH hosts, YARN, Kubernetes or Docker)",
        )
        return Plan(name, source_dir, foreign, None, (note,))
    work = _Work(name, foreign)
    stanza = "process_proxy" if foreign.origin == EG else "kernel_provisioner"
    work.add(MAPPED, f"{stanza} {foreign.written}", f"kernelfleet spec install {kind}")
    if foreign.swarm:
        work.own["swarm"] = True
        work.add(MAPPED, foreign.written, "--swarm")
    unrendered = _placeholders(spec)
    if unrendered:
        work.add(
            DROPPED,
            ", ".join(unrendered),
            "still held their installer's placeholders (never rendered): kernelfleet's "
            "defaults are used",
        )
    launcher = _map_argv(work, spec, kind)
    _map_config(work, kind, stanza)
    _map_env(work, spec, kind)
    display = spec.get("display_name")
    if not _unset(display):
        work.common["display_name"] = str(display)
    _dropped_shape(work, spec)
    if work.common.get("language") == "scala" and launcher is not None:
        _scala_jar(work, source_dir, files)
    if kind == "k8s" and "scripts/kernel-pod.yaml.j2" in set(files):
        work.add(
            WARNING,
            "scripts/kernel-pod.yaml.j2",
            "their pod template is not carried: port your changes to the new spec's pod template",
        )
    if kind == "ssh" and work.common.get("language") == "python":
        work.add(
            WARNING,
            "kernelfleet",
            "SSH Python kernels encrypt with CurveZMQ, which needs ipykernel >= 7.4 on the "
            "hosts' --python (or KF_TRANSPORT_ENCRYPTION=false)",
        )
    if kind in ("k8s", "docker") and "image" not in work.own:
        work.add(BLOCKER, f"{stanza}.config.image_name", "is missing: name the kernel image")
    work.common["extra_env"] = tuple(sorted(work.env.items()))
    work.common["migrated_from"] = (
        ("origin", foreign.origin),
        ("stanza", foreign.written),
        ("path", source_dir),
    )
    options = SpecOptions(kind=kind, **work.common, kind_options=work.own)
    if launcher is not None and not any(f.level == BLOCKER for f in work.findings):
        try:
            builders.validate(options)
        except PublicError as exc:
            work.add(BLOCKER, "kernelfleet", exc.message)
        else:
            options = _without_env_we_set(work, options, source_dir)
    return Plan(name, source_dir, foreign, options, tuple(work.findings))
