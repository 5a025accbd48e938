"""``kernelfleet spec install yarn``: Spark kernels in YARN cluster mode (``kernelfleet-yarn``).

The kernel is the Spark driver's program, in a container on a NodeManager; nothing runs on the
gateway but ``spark-submit`` (the provisioner's). The provisioner ships every file of the spec's
``scripts/`` with the application (``--files``: they land in the container's working
directory) and runs kernelfleet's ``kernel_launcher.py`` as the driver's main program; the
launcher starts the kernelspec's argv as the kernel. So:

- **Python**: ``<python on the nodes> spark_kernel.py --connection-file {connection_file}
  --spark-init-mode eager`` (``scripts/spark_kernel.py`` copied into the spec; the relative
  name is on purpose). The kernel creates the SparkSession on the driver's JVM before it
  answers. The init mode is always ``eager`` (the default here): YARN's application master
  waits for the driver's SparkContext (``spark.yarn.am.waitTime``), which a ``lazy`` kernel
  would create only after it answered and ``none`` never; both are refused, naming
  ``--spark-init-mode``.
- **R**: IRkernel's own argv, without SparkR (Spark's R package is not on PyPI's pyspark nor
  on CRAN; a cluster that has it on every node can use it from the kernel). The launcher holds
  the application's SparkContext (``spark_context_in_launcher``), which asks for no executors.
- **Scala** (Apache Toree) is refused: Toree must be the driver's main class itself, which the
  launcher cannot wrap.

No ``bin/run.sh`` and no ``env``: the provisioner builds the ``spark-submit``. Interrupts are
messages (no signal reaches a container). The launch timeout defaults to 180 s: cluster mode
takes 20-40 s from submit to a ready kernel, more when the queue is busy.

The common ``--python`` is the Python on the nodes; the common ``--spark-home`` is the Spark
whose ``spark-submit`` the *gateway* runs (default: the provisioner's: ``$SPARK_HOME``, else
pyspark's). Every value is checked here with the provisioner's own parsers
(:mod:`kernelfleet.provisioners.yarn_submit`, pure), so a spec that installs also submits.
``kernelfleet hosts check --spec NAME`` checks the cluster (:mod:`kernelfleet.specs.yarncheck`)
with the provisioner's settings, read through :func:`provisioner_settings`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from textwrap import dedent
from typing import Any

from traitlets import Bool, Dict, Float, Unicode
from traitlets import List as TList

from kernelfleet.config import option
from kernelfleet.errors import BadRequest
from kernelfleet.specs.kinds.base import KindDefault, SpecKind
from kernelfleet.specs.options import DEFAULT_KERNEL_CLASS, SpecError, SpecOptions

#: The provisioner's defaults: not written to kernel.json.
DEFAULT_QUEUE = "default"
DEFAULT_ACCEPTED_TIMEOUT = 45.0
DEFAULT_LAUNCH_TIMEOUT = 180.0
PYTHON_LAUNCHER = "spark_kernel.py"
#: ResourceManager web endpoints: scheme, host (name, IPv4 or [IPv6]), port, an optional path
#: (a proxy's prefix); no user, query or fragment.
ENDPOINT_RE = re.compile(
    r"^https?://(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9][A-Za-z0-9.-]{0,252})(:(\d{1,5}))?"
    r"(/[A-Za-z0-9._~/-]{0,200})?$"
)
SPARK_CONF_KEY_RE = re.compile(r"^spark\.[A-Za-z0-9_.-]{1,250}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Spark properties the provisioner sets itself for every kernel: the option that says it.
PROVISIONER_CONF = {
    "spark.master": "nothing (always yarn)",
    "spark.submit.deployMode": "nothing (always cluster)",
    "spark.app.name": "nothing (the kernel id)",
    "spark.yarn.queue": "--queue",
    "spark.yarn.tags": "nothing (the kernel's tags)",
    "spark.yarn.maxAppAttempts": "nothing (always 1)",
    "spark.yarn.submit.waitAppCompletion": "nothing (always false)",
    "spark.pyspark.python": "--python",
    "spark.pyspark.driver.python": "--python",
    "spark.yarn.appMasterEnv.PYSPARK_PYTHON": "--python",
    "spark.executorEnv.PYSPARK_PYTHON": "--python",
    "spark.redaction.regex": "nothing (it hides the launch key)",
}
#: --spark-conf keys whose values land in a container's launch script (a shell script the
#: NodeManager writes, values unescaped): only the provisioner's safe characters.
CONTAINER_ENV_PREFIXES = ("spark.yarn.appMasterEnv.", "spark.executorEnv.")
#: The resource options, each a Spark property: (property, kind of value).
RESOURCES = {
    "driver_memory": ("spark.driver.memory", "memory"),
    "driver_cores": ("spark.driver.cores", "cores"),
    "executor_memory": ("spark.executor.memory", "memory"),
    "executor_cores": ("spark.executor.cores", "cores"),
    "num_executors": ("spark.executor.instances", "executors"),
}
MAX_CORES = 1024
MAX_MEMORY_MB = 1 << 20
MAX_EXECUTORS = 100_000


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def resource_value(key: str, kind: str, text: str, what: str) -> str:
    """A resource setting as Spark reads it (memory in MiB: ``2g`` → ``2048m``), checked by
    the provisioner's own parsers; :class:`SpecError` naming *what*."""
    from kernelfleet.provisioners import yarn_submit  # pure: the provisioner's own rules

    try:
        if kind == "memory":
            mb = yarn_submit.memory_mb(text, what)
            if mb > MAX_MEMORY_MB:
                raise SpecError(f"{what} {text.strip()[:40]!r} is more than 1 TiB")
            return f"{mb}m"
        if kind == "cores":
            return str(yarn_submit.count(text, what, 1, MAX_CORES))
        return str(yarn_submit.count(text, what, 0, MAX_EXECUTORS))
    except BadRequest as exc:
        raise SpecError(exc.message) from None


def parse_spark_conf(conf: Mapping[str, str]) -> dict[str, str]:
    """The admin's ``--spark-conf`` properties, checked: a ``spark.*`` key the provisioner
    does not set itself; a value of one line without ``$`` (Spark substitutes ``${…}``);
    container variables only of the characters a launch script may hold. Resource keys are
    normalised as their options are. :class:`SpecError` naming the key."""
    from kernelfleet.provisioners import yarn_submit

    out: dict[str, str] = {}
    by_key = {key: (name, kind) for name, (key, kind) in RESOURCES.items()}
    for raw_key, raw_value in conf.items():
        key, value = str(raw_key).strip(), str(raw_value).strip()
        what = f"--spark-conf {key[:100]!r}"
        if not SPARK_CONF_KEY_RE.match(key):
            raise SpecError(f"{what} is not a Spark property name (spark.x.y)")
        if key in PROVISIONER_CONF:
            raise SpecError(
                f"{what} is set by the provisioner for every kernel; set it with "
                f"{PROVISIONER_CONF[key]}"
            )
        if key.startswith("spark.yarn.appMasterEnv.KF_"):
            raise SpecError(f"{what}: KF_* variables of the driver are the provisioner's")
        if _CONTROL.search(value) or len(value) > 4096:
            raise SpecError(f"{what}: the value must be one line of at most 4096 characters")
        if "$" in value:
            raise SpecError(f"{what}: the value must not contain '$' (Spark substitutes ${{…}})")
        if key.startswith(CONTAINER_ENV_PREFIXES) and not yarn_submit.SAFE_VALUE.match(value):
            raise SpecError(
                f"{what}: {value[:60]!r} has characters a YARN container variable may not have "
                "(it is written into the container's launch script)"
            )
        if key in by_key:
            value = resource_value(key, by_key[key][1], value, what)
        out[key] = value
    return out


class YarnKind(SpecKind):
    kind = "yarn"
    provisioner_name = "kernelfleet-yarn"
    where = "on YARN"
    description = (
        "Install a kernelspec whose kernels run as Spark drivers in YARN cluster mode "
        "(kernelfleet-yarn)."
    )
    examples = dedent("""
        kernelfleet spec install yarn --python=/opt/py/bin/python3 --queue=notebooks \\
            --yarn-endpoints=http://rm1:8088,http://rm2:8088 --hadoop-conf-dir=/etc/hadoop/conf
        kernelfleet spec install yarn --driver-memory=2g --num-executors=2 \\
            --spark-conf spark.yarn.jars=local:/opt/spark/jars/* --dry-run
        kernelfleet spec install yarn --language=r --kernel-name=yarn_r
        """)
    hosts_when_none = "(YARN)"
    implies_spark = True
    common_defaults = {
        "launch_timeout": KindDefault(
            DEFAULT_LAUNCH_TIMEOUT,
            "Seconds a kernel of this spec may take to start (written to the spec): YARN "
            "cluster mode takes 20-40 s, more when the queue is busy. Notebooks send their "
            "own KERNEL_LAUNCH_TIMEOUT (40 s unless raised), which outranks it. Default: 180.",
        ),
        "spark_home": KindDefault(
            "",
            "Spark installation whose bin/spark-submit the gateway runs to submit kernels (on "
            "the gateway, not the nodes). Default: the gateway's $SPARK_HOME, else the pyspark "
            "package's.",
        ),
        "spark_init_mode": KindDefault(
            "eager",
            "eager: the only mode of YARN cluster mode (YARN waits for the driver's Spark "
            "session); lazy and none are refused. Default: eager.",
        ),
    }

    yarn_endpoints = option(
        TList(
            Unicode(),
            help="Web addresses of the ResourceManagers, http(s)://host:8088, every RM of an HA "
            "pair (repeatable or comma list). Default: read from yarn-site.xml in "
            "--hadoop-conf-dir.",
        ),
        "KF_SPEC_YARN_ENDPOINTS",
    )
    hadoop_conf_dir = option(
        Unicode(
            "",
            help="Directory of the cluster's client configuration (yarn-site.xml, "
            "core-site.xml) on the gateway, for spark-submit. Default: the gateway's "
            "$HADOOP_CONF_DIR, else /etc/hadoop/conf.",
        ),
        "KF_SPEC_YARN_HADOOP_CONF_DIR",
    )
    pyspark_archives = option(
        TList(
            Unicode(),
            help="Where the nodes find pyspark.zip and py4j (PYSPARK_ARCHIVES_PATH), e.g. "
            "local:/opt/spark/python/lib/pyspark.zip (repeatable or comma list). Default: "
            "uploaded from the gateway's Spark with each kernel.",
        ),
        "KF_SPEC_YARN_PYSPARK_ARCHIVES",
    )
    queue = option(
        Unicode(DEFAULT_QUEUE, help="YARN queue of the kernels (a leaf queue). Default: default."),
        "KF_SPEC_YARN_QUEUE",
    )
    allowed_queues = option(
        TList(
            Unicode(),
            help="Queues a start request may choose with KERNEL_YARN_QUEUE (repeatable or "
            "comma list; must include --queue). Default: only --queue.",
        ),
        "KF_SPEC_YARN_ALLOWED_QUEUES",
    )
    driver_memory = option(
        Unicode("", help="Memory of the driver (the kernel), e.g. 2g. Default: Spark's (1g)."),
        "KF_SPEC_YARN_DRIVER_MEMORY",
    )
    driver_cores = option(
        Unicode("", help="Cores of the driver (the kernel). Default: Spark's (1)."),
        "KF_SPEC_YARN_DRIVER_CORES",
    )
    executor_memory = option(
        Unicode("", help="Memory of each executor, e.g. 4g. Default: Spark's (1g)."),
        "KF_SPEC_YARN_EXECUTOR_MEMORY",
    )
    executor_cores = option(
        Unicode("", help="Cores of each executor. Default: Spark's (1)."),
        "KF_SPEC_YARN_EXECUTOR_CORES",
    )
    num_executors = option(
        Unicode(
            "", help="Executors of each kernel (spark.executor.instances). Default: Spark's (2)."
        ),
        "KF_SPEC_YARN_NUM_EXECUTORS",
    )
    spark_conf = option(
        Dict(
            value_trait=Unicode(),
            key_trait=Unicode(),
            help="More Spark properties of every kernel, key=value (repeatable), e.g. "
            "spark.yarn.jars=local:/opt/spark/jars/*; as a variable, a JSON object. "
            "Default: none.",
        ),
        "KF_SPEC_YARN_SPARK_CONF",
    )
    impersonation = option(
        Bool(
            False,
            help="Run each kernel's application as the requesting user (KERNEL_USERNAME, "
            "spark-submit --proxy-user; the cluster must let the gateway's user proxy). "
            "Default: off (the gateway's user).",
        ),
        "KF_SPEC_YARN_IMPERSONATION",
    )
    accepted_timeout = option(
        Float(
            DEFAULT_ACCEPTED_TIMEOUT,
            help="Seconds an application may wait in ACCEPTED (for room in its queue) before "
            "its launch fails with the queue's state. Default: 45.",
        ),
        "KF_SPEC_YARN_ACCEPTED_TIMEOUT",
    )

    # -- checks -----------------------------------------------------------------------------

    def validate(self, spec: SpecOptions) -> None:
        from kernelfleet.provisioners import yarn_submit

        if spec.lang == "scala":
            raise SpecError(
                "Scala kernels in YARN cluster mode are not supported yet: Apache Toree must be "
                "the driver's main class (spark-submit --class org.apache.toree.Main), which "
                "kernelfleet's launcher cannot wrap. Use 'spec install ssh --language=scala' "
                "(client mode) instead."
            )
        if spec.spark_init_mode != "eager":
            raise SpecError(
                f"--spark-init-mode {spec.spark_init_mode}: YARN cluster mode needs eager (its "
                "default): YARN's application master waits for the driver's SparkContext, which "
                "a lazy kernel creates only after it answered and 'none' never creates. Leave "
                "--spark-init-mode out."
            )
        if spec.spark_master != "yarn":
            raise SpecError(
                f"--spark-master {spec.spark_master[:100]!r}: 'spec install yarn' always submits "
                "to YARN in cluster mode; leave --spark-master out"
            )
        if spec.extra_spark_opts.strip():
            raise SpecError(
                "--extra-spark-opts does not apply to 'spec install yarn' (the provisioner "
                "builds the spark-submit): set Spark properties with --spark-conf key=value, "
                "and resources with --driver-memory, --executor-memory, --num-executors, ..."
            )
        if not yarn_submit.SAFE_VALUE.match(spec.python):
            raise SpecError(
                f"--python {spec.python[:100]!r}: a YARN container's interpreter path may only "
                "hold letters, digits and ._:/,=@%+*-"
            )
        for endpoint in self.yarn_endpoints:
            self._check_endpoint(endpoint)
        if self.hadoop_conf_dir and (
            not self.hadoop_conf_dir.startswith("/")
            or _CONTROL.search(self.hadoop_conf_dir)
            or "$" in self.hadoop_conf_dir
        ):
            raise SpecError(
                f"--hadoop-conf-dir must be an absolute path, not {self.hadoop_conf_dir[:200]!r}"
            )
        for archive in self.pyspark_archives:
            if not archive or not yarn_submit.SAFE_VALUE.match(archive):
                raise SpecError(
                    f"--pyspark-archives: {archive[:100]!r} has characters a YARN path may not "
                    "have (letters, digits and ._:/=@%+*- only)"
                )
        for flag, queue in (
            ("--queue", self.queue),
            *(("--allowed-queues", q) for q in self.allowed_queues),
        ):
            if not yarn_submit.QUEUE.match(queue):
                raise SpecError(
                    f"{flag}: {queue[:100]!r} is not a queue name (letters, digits, '_', '.', '-')"
                )
        if self.allowed_queues and self.queue not in self.allowed_queues:
            raise SpecError(
                f"--allowed-queues must include --queue {self.queue!r} (a request naming the "
                "default queue would be refused)"
            )
        resources = self._resources()
        conf = parse_spark_conf(self.spark_conf)
        for key in resources.keys() & conf.keys():
            flag = next(_flag(n) for n, (k, _) in RESOURCES.items() if k == key)
            raise SpecError(f"{flag} and --spark-conf {key} both set {key}: keep one")
        if not (math.isfinite(self.accepted_timeout) and self.accepted_timeout > 0):
            raise SpecError(
                f"--accepted-timeout must be a positive number of seconds, not "
                f"{self.accepted_timeout}"
            )

    @staticmethod
    def _check_endpoint(endpoint: str) -> None:
        match = ENDPOINT_RE.match(endpoint)
        port = match.group(3) if match else None
        if match is None or (port is not None and not 0 < int(port) < 65536):
            raise SpecError(
                f"--yarn-endpoints: {endpoint[:200]!r} is not a ResourceManager web address "
                "like http://rm1:8088 (no user, query or fragment)"
            )

    def _resources(self) -> dict[str, str]:
        out = {}
        for name, (key, kind) in RESOURCES.items():
            text = str(getattr(self, name)).strip()
            if text:
                out[key] = resource_value(key, kind, text, _flag(name))
        return out

    # -- kernel.json ------------------------------------------------------------------------

    @classmethod
    def default_display_name(cls, spec: SpecOptions) -> str:
        """``Spark - Python on YARN (cluster mode)``; an R kernel has no Spark of its own:
        ``R on YARN (cluster mode)``."""
        lang = {"python": "Spark - Python", "r": "R"}.get(spec.lang, spec.lang)
        return f"{lang} {cls.where} (cluster mode)"

    def provisioner_config(self, spec: SpecOptions) -> dict[str, Any]:
        cfg: dict[str, Any] = {}
        if self.yarn_endpoints:
            cfg["yarn_endpoints"] = list(self.yarn_endpoints)
        if self.hadoop_conf_dir:
            cfg["hadoop_conf_dir"] = self.hadoop_conf_dir
        if spec.spark_home:
            cfg["spark_home"] = spec.spark_home
        # the provisioner's default is argv[0] when it is an absolute path: R's argv starts
        # with R, and a relative python would become "python3"
        if spec.lang != "python" or not spec.python.startswith("/"):
            cfg["python"] = spec.python
        if self.pyspark_archives:
            cfg["pyspark_archives"] = ",".join(self.pyspark_archives)
        if spec.lang != "python":
            cfg["spark_context_in_launcher"] = True  # the kernel starts no Spark itself
        if self.queue != DEFAULT_QUEUE:
            cfg["queue"] = self.queue
        if self.allowed_queues:
            cfg["allowed_queues"] = list(self.allowed_queues)
        spark_conf = {**self._resources(), **parse_spark_conf(self.spark_conf)}
        if spark_conf:
            cfg["spark_conf"] = spark_conf
        if self.accepted_timeout != DEFAULT_ACCEPTED_TIMEOUT:
            seconds = self.accepted_timeout
            cfg["accepted_timeout"] = int(seconds) if float(seconds).is_integer() else seconds
        if self.impersonation:
            cfg["impersonation_enabled"] = True
        return cfg

    def build_argv(self, spec: SpecOptions, resource_dir: str) -> list[str]:
        if spec.lang == "r":
            return ["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"]
        from kernelfleet.provisioners import yarn_submit

        shipped = f"{resource_dir.rstrip('/')}/scripts/{PYTHON_LAUNCHER}"
        if not yarn_submit.SAFE_VALUE.match(shipped):
            # spark-submit --files takes it: the provisioner refuses such a path at launch
            raise SpecError(
                f"the kernelspec's directory {resource_dir[:200]!r} has characters YARN's "
                "--files may not have: install it elsewhere (--user, --sys-prefix, --prefix)"
            )
        argv = [spec.python, PYTHON_LAUNCHER, "--connection-file", "{connection_file}"]
        argv += ["--spark-init-mode", "eager"]
        if spec.ipykernel_subclass_name != DEFAULT_KERNEL_CLASS:
            argv += ["--kernel-class", spec.ipykernel_subclass_name]
        return argv

    def build_env(self, spec: SpecOptions) -> dict[str, str]:
        return {}

    def interrupt_mode(self, spec: SpecOptions) -> str:
        return "message"

    def writes_run_sh(self, spec: SpecOptions) -> bool:
        return False

    def launchers(self, spec: SpecOptions) -> dict[str, str]:
        if spec.lang == "python":
            return {f"scripts/{PYTHON_LAUNCHER}": PYTHON_LAUNCHER}
        return {}

    @classmethod
    def next_steps(cls, name: str) -> str:
        return (
            f"Next: 'kernelfleet hosts check --spec {name}' checks the ResourceManagers, the "
            "NodeManagers, the queue and spark-submit on this machine.\n"
            "A kernel takes 20-40 s to start in YARN cluster mode, and a notebook gives up "
            "after 40 s unless told otherwise: start it with 'jupyter lab "
            "--GatewayClient.request_timeout=200 --GatewayClient.connect_timeout=200' "
            "(KERNEL_LAUNCH_TIMEOUT follows, 198 s) or KERNEL_LAUNCH_TIMEOUT=180 in its "
            "environment; the gateway allows up to KF_MAX_LAUNCH_TIMEOUT (300 s)."
        )


# -- the provisioner's settings, for `hosts check` -------------------------------------------------


def provisioner_class() -> type[Any]:
    """The ``kernelfleet-yarn`` provisioner class, imported only when a command checks the
    cluster (its options: ``--YarnProvisioner.*``, ``KF_YARN_*``)."""
    from kernelfleet.provisioners.yarn import YarnProvisioner

    return YarnProvisioner


def provisioner_settings(config: Any, spec_config: dict[str, Any] | None = None) -> Any:
    """The YARN provisioner's settings (app config < ``KF_YARN_*`` environment < kernelspec
    config) as a kernel of the spec would get them: an unstarted provisioner whose
    ``endpoints()``, ``conf_dir()``, ``queue``, … say where and how it submits. Kernelspec
    entries it does not know are ignored."""
    cls = provisioner_class()
    traits = cls.class_traits()
    known = {k: v for k, v in (spec_config or {}).items() if k in traits}
    return cls(config=config, **known)
