"""Their ``SPARK_OPTS`` (and Toree's ``__TOREE_SPARK_OPTS__``) into kernelfleet's Spark options.

EG's and GP's ``run.sh`` pass ``SPARK_OPTS`` to ``spark-submit`` through ``eval``, so their
specs hold shell text: ``--name ${KERNEL_ID:-…}``, ``${KERNEL_EXTRA_SPARK_OPTS}``,
``--proxy-user ${KERNEL_USERNAME}``. kernelfleet never evaluates Spark options; what those
words did, it does itself (it names the application after the kernel, appends the request's
checked ``KERNEL_EXTRA_SPARK_OPTS``, impersonates with ``--impersonation``), so they are
dropped with a note. Any other word that relies on the shell is unmappable: the admin writes
the value out.

For an SSH spec (client mode) the remaining words become ``--extra-spark-opts``; for a YARN
spec (cluster mode, where kernelfleet builds the spark-submit) each becomes the matching
``spec install yarn`` option or a Spark property of ``--spark-conf``.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from kernelfleet.specs.migrate.model import BLOCKER, DROPPED, MAPPED, WARNING, Finding

#: spark-submit options with a ``spec install yarn`` option of their own.
YARN_OPTIONS = {
    "--queue": "queue",
    "--driver-memory": "driver_memory",
    "--driver-cores": "driver_cores",
    "--executor-memory": "executor_memory",
    "--executor-cores": "executor_cores",
    "--num-executors": "num_executors",
}
#: The same settings as Spark properties.
YARN_PROPERTIES = {
    "spark.yarn.queue": "queue",
    "spark.driver.memory": "driver_memory",
    "spark.driver.cores": "driver_cores",
    "spark.executor.memory": "executor_memory",
    "spark.executor.cores": "executor_cores",
    "spark.executor.instances": "num_executors",
}
#: spark-submit options that are a Spark property under another name.
AS_PROPERTY = {
    "--jars": "spark.jars",
    "--packages": "spark.jars.packages",
    "--exclude-packages": "spark.jars.excludes",
    "--repositories": "spark.jars.repositories",
    "--archives": "spark.yarn.dist.archives",
}
#: spark-submit options kernelfleet's YARN submission passes itself (its launcher's files):
#: theirs would be overridden, so they cannot be carried.
SUBMITTED_BY_US = frozenset({"--py-files", "--files", "spark.submit.pyFiles", "spark.files"})
#: A placeholder their installers substitute (``${install_dir}``); one left in a spec means the
#: installer did not finish (GP 0.5.0's ``yarn-spec install`` leaves Python specs so).
INSTALLER_PLACEHOLDER = re.compile(r"\$\{([a-z][a-z0-9_]*)\}")
#: Properties kernelfleet's YARN provisioner sets itself.
OURS = frozenset({"spark.yarn.submit.waitAppCompletion", "spark.app.name"})
#: Application-master environment their specs set for PySpark; kernelfleet ships pyspark and
#: py4j with each kernel and runs the spec's --python.
SUPERSEDED_AM_ENV = frozenset(
    {
        "spark.yarn.appMasterEnv.PYTHONPATH",
        "spark.yarn.appMasterEnv.PATH",
        "spark.yarn.appMasterEnv.PYTHONUSERBASE",
    }
)
#: spark-submit options that take a value.
WITH_VALUE = frozenset(
    {
        "--master",
        "--deploy-mode",
        "--name",
        "--proxy-user",
        "--conf",
        "--class",
        "--principal",
        "--keytab",
        "--driver-java-options",
        "--driver-library-path",
        "--driver-class-path",
        "--total-executor-cores",
        "--properties-file",
        "--py-files",
        "--files",
        *YARN_OPTIONS,
        *AS_PROPERTY,
    }
)
#: Their run.sh's own variable for the request's options.
EXTRA_VARS = frozenset({"${KERNEL_EXTRA_SPARK_OPTS}", "$KERNEL_EXTRA_SPARK_OPTS"})


@dataclass
class SparkMapping:
    """What a ``SPARK_OPTS`` said, in kernelfleet's terms."""

    master: str | None = None
    deploy_mode: str | None = None
    impersonation: bool = False
    #: ``spec install yarn`` options (trait name → value), ``spark_conf`` among them.
    yarn: dict[str, Any] = field(default_factory=dict)
    #: The words left for ``--extra-spark-opts`` (SSH specs).
    extra: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def _pairs(words: list[str]) -> list[tuple[str, str | None]]:
    """(option, value) pairs of spark-submit words; ``--opt=value`` is split; a word that is
    not an option is returned with value None."""
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("--") and "=" in word and word.split("=", 1)[0] in WITH_VALUE:
            opt, value = word.split("=", 1)
            out.append((opt, value))
        elif word in WITH_VALUE and i + 1 < len(words) and not words[i + 1].startswith("--"):
            out.append((word, words[i + 1]))
            i += 1
        else:
            out.append((word, None))
        i += 1
    return out


def map_spark_opts(text: str, *, kind: str, source: str = "env.SPARK_OPTS") -> SparkMapping:
    """The Spark options of *text* for a spec of *kind* (``ssh`` or ``yarn``)."""
    out = SparkMapping()
    try:
        words = shlex.split(text)
    except ValueError as exc:
        out.findings.append(
            Finding(BLOCKER, source, f"cannot be read ({exc}): fix its quoting by hand")
        )
        return out
    conf: dict[str, str] = {}
    for opt, value in _pairs(words):
        where = f"{source} {opt}"
        if INSTALLER_PLACEHOLDER.search(opt) or INSTALLER_PLACEHOLDER.search(value or ""):
            out.findings.append(
                Finding(DROPPED, where, "left unrendered by their installer (a ${…} "
                        "placeholder): left out")
            )  # fmt: skip
        elif opt in EXTRA_VARS:
            out.findings.append(
                Finding(
                    DROPPED,
                    where,
                    "kernelfleet appends a request's KERNEL_EXTRA_SPARK_OPTS "
                    "itself (checked, never evaluated)",
                )
            )
        elif opt == "--master":
            out.master = value
        elif opt == "--deploy-mode":
            out.deploy_mode = value
        elif opt == "--name":
            out.findings.append(
                Finding(DROPPED, where, "kernelfleet names each application after its kernel id")
            )
        elif opt == "--proxy-user":
            _proxy_user(out, where, value or "", kind)
        elif opt == "--conf":
            key, _, val = (value or "").partition("=")
            _property(out, conf, f"{where} {key}", key.strip(), val, kind=kind)
        elif kind == "yarn" and opt in YARN_OPTIONS and value is not None:
            _yarn_value(out, where, YARN_OPTIONS[opt], value)
        elif kind == "yarn" and opt in SUBMITTED_BY_US:
            out.findings.append(_ours(where))
        elif kind == "yarn" and opt in AS_PROPERTY and value is not None:
            _property(out, conf, where, AS_PROPERTY[opt], value, kind=kind)
        elif "$" in opt or (value is not None and "$" in value):
            out.findings.append(_shell(where))
        elif kind == "yarn":
            out.findings.append(
                Finding(
                    BLOCKER,
                    where,
                    "has no equivalent in YARN cluster mode (kernelfleet "
                    "builds the spark-submit): set it as a Spark property and migrate again",
                )
            )
        else:
            out.extra += [opt] if value is None else [opt, value]
    if conf:
        out.yarn["spark_conf"] = conf
    if out.extra:
        out.findings.append(Finding(MAPPED, source, f"--extra-spark-opts={shlex.join(out.extra)}"))
    return out


def _ours(where: str) -> Finding:
    return Finding(
        BLOCKER,
        where,
        "kernelfleet's YARN submission passes its launcher's own files there, which would "
        "override these: ship them in a kernel environment (kernelfleet env create yarn)",
    )


def _shell(where: str) -> Finding:
    return Finding(
        BLOCKER,
        where,
        "relies on the shell ('$'), and kernelfleet never evaluates Spark options: write the "
        "value out in the original and migrate again",
    )


def _proxy_user(out: SparkMapping, where: str, value: str, kind: str) -> None:
    if kind == "yarn" and "KERNEL_USERNAME" in value:
        out.impersonation = True
        out.findings.append(Finding(MAPPED, where, "--impersonation"))
    else:
        out.findings.append(
            Finding(
                BLOCKER,
                where,
                "kernelfleet impersonates only the requesting user, in "
                "YARN cluster mode (--impersonation): remove it and migrate again",
            )
        )


def _yarn_value(out: SparkMapping, where: str, option: str, value: str) -> None:
    if "$" in value:
        out.findings.append(_shell(where))
        return
    out.yarn[option] = value
    out.findings.append(Finding(MAPPED, where, f"--{option.replace('_', '-')}={value}"))


def _property(
    out: SparkMapping, conf: dict[str, str], where: str, key: str, value: str, *, kind: str
) -> None:
    if key in SUBMITTED_BY_US and kind == "yarn":
        out.findings.append(_ours(where))
    elif key in OURS:
        out.findings.append(Finding(DROPPED, where, "kernelfleet sets it itself"))
    elif key in SUPERSEDED_AM_ENV and "$" in value:
        text = "kernelfleet ships pyspark and py4j with each kernel and runs the spec's --python"
        if key.endswith("PYTHONUSERBASE"):
            text = (
                "per-user site packages are not carried: give the users a kernel environment "
                "(kernelfleet env create yarn) instead"
            )
        out.findings.append(Finding(WARNING if "USERBASE" in key else DROPPED, where, text))
    elif "$" in value or "$" in key:
        out.findings.append(_shell(where))
    elif kind != "yarn":
        out.extra += ["--conf", f"{key}={value}"]
    elif key in YARN_PROPERTIES:
        _yarn_value(out, where, YARN_PROPERTIES[key], value)
    else:
        conf[key] = value
        out.findings.append(Finding(MAPPED, where, f"--spark-conf {key}={value}"))
