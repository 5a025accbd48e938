"""``kernelfleet spec install ssh``: kernels on SSH hosts (provisioner ``kernelfleet-ssh``).

Its own install options keep the names of ``jupyter ssh-spec install``. The commands that
connect to the hosts (``kernelfleet spec sync``, ``kernelfleet hosts check``) connect with the
provisioner's own settings, read here too (:func:`provisioner_settings`): the SSH provisioner is
imported only then, by name, and only its ``remote_hosts``, ``target_for(host)`` and
``ports()`` are used; its option names are read from the class, never repeated here.

A Spark spec with ``--spark-master yarn`` is **YARN client mode**: the kernel (the Spark
driver) runs on the SSH host and its executors in YARN containers. spark-submit on the host
refuses master ``yarn`` unless ``HADOOP_CONF_DIR`` (or ``YARN_CONF_DIR``) is set there:
``--hadoop-conf-dir`` writes it into the kernelspec's ``env``. It is not required, because
the hosts may set it themselves (Spark's place for it is ``$SPARK_HOME/conf/spark-env.sh``,
which spark-submit reads) and ``yarn`` is the default master of every ``--spark`` spec; the
install command warns instead (:meth:`SSHKind.install_warnings`).
"""

from __future__ import annotations

import re
from textwrap import dedent
from typing import Any

from traitlets import List as TList
from traitlets import Unicode

from kernelfleet.config import option
from kernelfleet.placement.policies import ALGORITHMS as LOAD_BALANCING
from kernelfleet.specs.kinds.base import SpecKind
from kernelfleet.specs.options import SpecError, SpecOptions
from kernelfleet.transport.protocol import PORT_NAMES, parse_port_range

HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:_-]{0,252}$")
_UNSAFE_PATH = re.compile(r"[\x00-\x1f\x7f]")
MAX_PATH = 1024
#: The provisioner's own default: not written to kernel.json.
DEFAULT_LOAD_BALANCING = "round-robin"


class SSHKind(SpecKind):
    kind = "ssh"
    provisioner_name = "kernelfleet-ssh"
    where = "on SSH hosts"
    description = "Install a kernelspec whose kernels run on SSH hosts (kernelfleet-ssh)."
    examples = dedent("""
        kernelfleet spec install ssh --remote-hosts=host1 --remote-hosts=host2 --user
        kernelfleet spec install ssh --spark --spark-master=spark://master:7077 --remote-hosts=h1,h2
        kernelfleet spec install ssh --spark --spark-master=yarn --hadoop-conf-dir=/etc/hadoop/conf
        kernelfleet spec install ssh --language=r --kernel-name=ssh_r --dry-run
        """)
    hosts_when_none = "(KF_REMOTE_HOSTS)"

    remote_hosts = option(
        TList(
            Unicode(),
            help="Hosts the kernels may run on (repeatable or comma list). "
            "Default: the gateway's KF_REMOTE_HOSTS.",
        ),
        "KF_SPEC_REMOTE_HOSTS",
    )
    port_range = option(
        Unicode("", help="Ports the kernels may listen on, 'lo..hi'. Default: any free port."),
        "KF_SPEC_PORT_RANGE",
    )
    load_balancing_algorithm = option(
        Unicode(
            "", help="round-robin, least-connection or load. Default: the gateway's (round-robin)."
        ),
        "KF_SPEC_LOAD_BALANCING_ALGORITHM",
    )
    hadoop_conf_dir = option(
        Unicode(
            "",
            help="Spark with --spark-master yarn (client mode: the kernel is the Spark driver "
            "on the host, its executors run in YARN containers): the Hadoop client "
            "configuration directory on the hosts (yarn-site.xml naming the "
            "ResourceManager(s), core-site.xml), an absolute path written to the kernelspec's "
            "env as HADOOP_CONF_DIR; spark-submit refuses master yarn without it. Refused "
            "without --spark-master yarn. Default: none (the hosts' own HADOOP_CONF_DIR or "
            "YARN_CONF_DIR, e.g. from $SPARK_HOME/conf/spark-env.sh).",
        ),
        "KF_SPEC_HADOOP_CONF_DIR",
    )

    def validate(self, spec: SpecOptions) -> None:
        for host in self.remote_hosts:
            if not HOST_RE.match(host):
                raise SpecError(f"--remote-hosts: {host[:100]!r} is not a host name or address")
        algorithm = self.load_balancing_algorithm
        if algorithm and algorithm not in LOAD_BALANCING:
            raise SpecError(
                f"--load-balancing-algorithm {algorithm!r}: use one of {', '.join(LOAD_BALANCING)}"
            )
        if self.port_range:
            parse_port_range(self.port_range, len(PORT_NAMES))  # raises BadRequest with the cause
        if self.hadoop_conf_dir:
            self._check_hadoop_conf_dir(spec)

    def _check_hadoop_conf_dir(self, spec: SpecOptions) -> None:
        path = self.hadoop_conf_dir
        if not _on_yarn(spec):
            raise SpecError(
                "--hadoop-conf-dir applies to Spark kernels on YARN only (client mode): pass "
                "--spark (or --language=scala) with --spark-master yarn, or leave it out"
            )
        if (
            not path.startswith("/")
            or _UNSAFE_PATH.search(path)
            or "$" in path
            or len(path) > MAX_PATH
            or not _is_utf8(path)
        ):
            raise SpecError(
                "--hadoop-conf-dir must be an absolute path on the hosts, without '$' or "
                f"control characters, not {path[:200]!r}"
            )

    def extra_env(self, spec: SpecOptions) -> dict[str, str]:
        """``HADOOP_CONF_DIR`` for spark-submit on the host (YARN client mode)."""
        if self.hadoop_conf_dir and _on_yarn(spec):
            return {"HADOOP_CONF_DIR": self.hadoop_conf_dir}
        return {}

    def install_warnings(self, spec: SpecOptions) -> list[str]:
        if _on_yarn(spec) and not self.hadoop_conf_dir:
            return [
                "this Spark kernelspec runs spark-submit on the hosts with --spark-master yarn "
                "(client mode) but names no --hadoop-conf-dir: spark-submit refuses master yarn "
                "unless HADOOP_CONF_DIR or YARN_CONF_DIR is set on the host (e.g. in "
                "$SPARK_HOME/conf/spark-env.sh). Pass --hadoop-conf-dir=DIR (with --replace) "
                "to write it into the kernelspec, or --spark-master for another master."
            ]
        return []

    def provisioner_config(self, spec: SpecOptions) -> dict[str, Any]:
        cfg: dict[str, Any] = {}
        if self.remote_hosts:
            cfg["remote_hosts"] = list(self.remote_hosts)
        algorithm = self.load_balancing_algorithm
        if algorithm and algorithm != DEFAULT_LOAD_BALANCING:
            cfg["load_balancing_algorithm"] = algorithm
        if self.port_range:
            cfg["port_range"] = self.port_range
        if not spec.curve_capable:
            cfg["transport_encryption"] = False
        return cfg

    @classmethod
    def next_steps(cls, name: str) -> str:
        return (
            f"Next: 'kernelfleet spec sync {name}' copies it to the hosts at the same "
            f"path, then 'kernelfleet hosts check --spec {name}' checks they can run it."
        )


def _on_yarn(spec: SpecOptions) -> bool:
    """A Spark spec whose driver (the kernel, on the host) submits to YARN: client mode."""
    return spec.uses_spark and spec.spark_master == "yarn"


def _is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a byte that is not UTF-8, as a lone surrogate
        return False
    return True


# -- the provisioner's settings, for the commands that connect -----------------------------------


def provisioner_class() -> type[Any]:
    """The ``kernelfleet-ssh`` provisioner class: its options (``--SSHProvisioner.*``,
    ``KF_SSH_*``) are options of the commands that connect to the hosts."""
    from kernelfleet.provisioners.ssh import SSHProvisioner  # asyncssh: only when connecting

    return SSHProvisioner  # type: ignore[no-any-return]


def provisioner_settings(config: Any, spec_config: dict[str, Any] | None = None) -> Any:
    """The SSH provisioner's settings (app config < environment < kernelspec config): an
    unstarted provisioner whose ``remote_hosts``, ``target_for(host)`` and ``ports()`` say
    where and how the gateway connects. Kernelspec entries it does not know are ignored."""
    cls = provisioner_class()
    traits = cls.class_traits()
    known = {k: v for k, v in (spec_config or {}).items() if k in traits}
    return cls(config=config, **known)
