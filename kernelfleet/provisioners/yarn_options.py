"""The settings of the ``kernelfleet-yarn`` provisioner, and the pure decisions made from them.

Each option is a kernelspec ``config`` key, a ``--YarnProvisioner.<name>`` flag and a
``KF_YARN_*`` variable. Where the ResourceManagers are comes from ``yarn_endpoints`` or,
when empty, from the ``yarn-site.xml`` in ``hadoop_conf_dir`` (:func:`endpoints_from_site`),
the file ``spark-submit`` reads too: one place to configure HA.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping

from traitlets import Bool, Dict, Float, Int, List, Unicode
from traitlets.config import Configurable

from kernelfleet.config import option
from kernelfleet.errors import BadRequest, Forbidden
from kernelfleet.provisioners.base import USERNAME
from kernelfleet.provisioners.yarn_submit import Limits, memory_mb

DEFAULT_PROHIBITED_USERS = ["root", "hdfs", "yarn", "mapred", "hadoop", "spark"]


class YarnOptions(Configurable):
    """The options of YARN kernelspecs (a mixin of
    :class:`~kernelfleet.provisioners.yarn.YarnProvisioner`)."""

    yarn_endpoints = option(
        List(
            Unicode(),
            help="Web addresses of the ResourceManagers (http(s)://host:8088), all of an HA "
            "pair; the active one is found by its HA state. Default: read from yarn-site.xml "
            "in hadoop_conf_dir.",
        ),
        "KF_YARN_ENDPOINTS",
        "EG_YARN_ENDPOINT",
    )
    hadoop_conf_dir = option(
        Unicode(
            "",
            help="Directory of the cluster's client configuration (yarn-site.xml, "
            "core-site.xml) given to spark-submit. Default: $HADOOP_CONF_DIR, else "
            "/etc/hadoop/conf.",
        ),
        "KF_YARN_HADOOP_CONF_DIR",
    )
    spark_home = option(
        Unicode(
            "",
            help="Spark installation whose bin/spark-submit submits kernels (on the "
            "gateway). Default: $SPARK_HOME, else the pyspark package's.",
        ),
        "KF_YARN_SPARK_HOME",
    )
    python = option(
        Unicode(
            "",
            help="Python on the cluster's nodes that runs the launcher and the kernel "
            "(PYSPARK_PYTHON). Default: the kernelspec's argv[0].",
        ),
        "KF_YARN_PYTHON",
    )
    pyspark_archives = option(
        Unicode(
            "",
            help="PYSPARK_ARCHIVES_PATH of spark-submit: where the nodes find pyspark.zip and "
            "py4j (e.g. 'local:/opt/spark/python/lib/pyspark.zip,local:/opt/spark/python/lib/"
            "py4j-0.10.9.9-src.zip' when Spark is installed on every node). Default: uploaded "
            "from spark_home with each kernel.",
        ),
        "KF_YARN_PYSPARK_ARCHIVES",
    )
    spark_context_in_launcher = option(
        Bool(
            False,
            help="The launcher holds the application's SparkContext, for kernels that start no "
            "Spark themselves (R without SparkR, plain ipykernel): YARN's Spark AM waits for "
            "one. Their application asks for no executors unless spark_conf does.",
        ),
        "KF_YARN_SPARK_CONTEXT_IN_LAUNCHER",
    )
    queue = option(Unicode("default", help="YARN queue of the kernels."), "KF_YARN_QUEUE")
    allowed_queues = option(
        List(
            Unicode(),
            help="Queues a start request may choose with KERNEL_YARN_QUEUE. Default: only 'queue'.",
        ),
        "KF_YARN_ALLOWED_QUEUES",
    )
    spark_conf = option(
        Dict(
            per_key_traits=None,
            help="Spark properties of every kernel (admin's; e.g. spark.driver.memory, "
            "spark.yarn.jars, spark.yarn.stagingDir), as a JSON object.",
        ),
        "KF_YARN_SPARK_CONF",
    )
    max_memory = option(
        Unicode("8g", help="Most memory a request may ask for the driver or an executor."),
        "KF_YARN_MAX_MEMORY",
    )
    max_cores = option(
        Int(8, help="Most cores a request may ask per process."), "KF_YARN_MAX_CORES"
    )
    max_executors = option(
        Int(32, help="Most executors a request may ask for."), "KF_YARN_MAX_EXECUTORS"
    )
    accepted_timeout = option(
        Float(
            45.0,
            help="Seconds an application may wait in ACCEPTED (for room in its queue) before "
            "the launch fails with the queue's state. Default: 45.",
        ),
        "KF_YARN_ACCEPTED_TIMEOUT",
    )
    poll_interval = option(
        Float(
            2.0,
            help="Seconds between the ResourceManager queries that watch all kernels of this "
            "cluster (one query each time); 0.5 s while a kernel is starting. Default: 2.",
        ),
        "KF_YARN_POLL_INTERVAL",
    )
    rest_user = option(
        Unicode(
            "",
            help="user.name for the ResourceManager's REST API (pseudo authentication). "
            "Default: none (anonymous).",
        ),
        "KF_YARN_REST_USER",
    )
    ca_bundle = option(
        Unicode("", help="CA certificates (PEM) for https ResourceManager endpoints."),
        "KF_YARN_CA_BUNDLE",
    )
    impersonation_enabled = option(
        Bool(
            False,
            help="Run each kernel's application as the user KERNEL_USERNAME "
            "(spark-submit --proxy-user; the cluster's hadoop.proxyuser.<gateway user>.* "
            "must allow it). The container's OS user stays the NodeManager's unless the "
            "cluster uses the LinuxContainerExecutor.",
        ),
        "KF_IMPERSONATION_ENABLED",
        "EG_IMPERSONATION_ENABLED",
    )
    prohibited_users = option(
        List(
            Unicode(),
            default_value=DEFAULT_PROHIBITED_USERS,
            help="Users an application may never run as (impersonation).",
        ),
        "KF_YARN_PROHIBITED_USERS",
    )
    transport_encryption = option(
        Bool(False, help="Encrypt kernel traffic with CurveZMQ (needs ipykernel >= 7.4)."),
        "KF_YARN_TRANSPORT_ENCRYPTION",
    )

    # -- decisions --------------------------------------------------------------------------
    def spark_home_dir(self) -> str:
        """The gateway's Spark home: spark_home, $SPARK_HOME, else the pyspark package's."""
        return self.spark_home or os.environ.get("SPARK_HOME") or pyspark_home()

    def conf_dir(self) -> str:
        return self.hadoop_conf_dir or os.environ.get("HADOOP_CONF_DIR") or "/etc/hadoop/conf"

    def endpoints(self) -> list[str]:
        """The ResourceManagers' web endpoints (setting, else yarn-site.xml)."""
        found = [e.strip() for e in self.yarn_endpoints if e.strip()]
        if found:
            return found
        return list(_site_endpoints(os.path.join(self.conf_dir(), "yarn-site.xml")))

    def limits(self) -> Limits:
        return Limits(
            queue=self.queue,
            allowed_queues=tuple(self.allowed_queues),
            max_memory_mb=memory_mb(self.max_memory, "max_memory"),
            max_cores=self.max_cores,
            max_executors=self.max_executors,
        )

    def proxy_user(self, env: Mapping[str, str]) -> str | None:
        if not self.impersonation_enabled:
            return None
        name = env.get("KERNEL_USERNAME", "")
        if not USERNAME.match(name):
            raise BadRequest(
                f"impersonation is enabled: KERNEL_USERNAME must name a user (got {name[:64]!r})"
            )
        if name in self.prohibited_users:
            raise Forbidden(f"kernels may not run as the privileged user {name!r}")
        return name


@functools.lru_cache(maxsize=32)
def _site_endpoints(path: str) -> tuple[str, ...]:
    """The endpoints of the yarn-site.xml at *path*, read once per process (a small local
    file; a changed file takes a gateway restart)."""
    try:
        with open(path, encoding="utf-8") as f:
            return tuple(endpoints_from_site(parse_site(f.read())))
    except OSError:
        return ()


def pyspark_home() -> str:
    """The pyspark package's directory (a Spark home with bin/spark-submit), found without
    importing it."""
    found = importlib.util.find_spec("pyspark")
    if found is None or not found.origin:
        return os.path.join(sys.prefix, "spark")
    return os.path.dirname(os.path.abspath(found.origin))


def parse_site(text: str) -> dict[str, str]:
    """The properties of a Hadoop ``*-site.xml`` (empty for a file that does not parse)."""
    try:
        root = ET.fromstring(text)  # noqa: S314 - the admin's own configuration file
    except ET.ParseError:
        return {}
    out: dict[str, str] = {}
    for prop in root.iter("property"):
        name, value = prop.findtext("name"), prop.findtext("value")
        if name and value is not None:
            out[name.strip()] = value.strip()
    return out


def endpoints_from_site(site: Mapping[str, str]) -> list[str]:
    """The RM web endpoints a ``yarn-site.xml`` names (every rm-id under HA)."""
    https = site.get("yarn.http.policy", "HTTP_ONLY").upper() == "HTTPS_ONLY"
    scheme, key, port = (
        ("https", "webapp.https.address", 8090) if https else ("http", "webapp.address", 8088)
    )
    prefix = "yarn.resourcemanager."
    ha = site.get(prefix + "ha.enabled", "false").lower() == "true"
    ids = [i.strip() for i in site.get(prefix + "ha.rm-ids", "").split(",") if i.strip()]
    suffixes = [f".{i}" for i in ids] if ha and ids else [""]
    out = []
    for suffix in suffixes:
        address = site.get(prefix + key + suffix) or site.get(prefix + key, "")
        host = site.get(prefix + "hostname" + suffix) or site.get(prefix + "hostname", "")
        if address and not address.startswith("${"):
            hostpart, _, p = address.rpartition(":")
            if hostpart in ("0.0.0.0", "") and host:
                address = f"{host}:{p}"
        elif host:
            address = f"{host}:{port}"
        else:
            continue
        if re.fullmatch(r"[A-Za-z0-9._\-\[\]]+:\d{1,5}", address):
            out.append(f"{scheme}://{address}")
    return out
