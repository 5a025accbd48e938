"""The README's mapping table ("Coming from Enterprise Gateway") is what `spec migrate` does.

Each row of the table has a case here, keyed by the row's first cell, and each case a row: a
row added to the README without a case, or a case whose row was removed, fails
:func:`test_the_readme_table_and_the_cases_name_the_same_fields`. A case holds small kernel.json
dicts (EG's ``metadata.process_proxy`` or GP's ``metadata.kernel_provisioner``) that exercise
the row, and what they must give: the row's kernelfleet option (its second cell) named in a
mapped finding on the row's field, the value in the plan's options, and for some the entry of
the kernel.json kernelfleet builds. A row whose kernelfleet cell is ``—`` must give an
unmappable finding.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kernelfleet.specs.builders import build_kernel_json
from kernelfleet.specs.migrate.model import BLOCKER, DROPPED, MAPPED, WARNING, Plan
from kernelfleet.specs.migrate.plan import plan
from kernelfleet.specs.options import SpecOptions

README = Path(__file__).resolve().parents[2] / "README.md"
HEADER = "| Their field (EG / GP) | kernelfleet | Notes |"
NONE = "—"


def readme_rows() -> dict[str, tuple[str, str]]:
    """First cell → (kernelfleet cell, notes cell) of each row of the table."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index(HEADER)
    assert set(lines[start + 1]) <= set("|-"), "the table's header is not followed by |---|"
    rows: dict[str, tuple[str, str]] = {}
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        cells = [c.strip() for c in line.strip().removeprefix("|").removesuffix("|").split("|")]
        assert len(cells) == 3, line
        assert cells[0] not in rows, f"row {cells[0]!r} twice"
        rows[cells[0]] = (cells[1], cells[2])
    return rows


ROWS = readme_rows()


def claimed(cell: str) -> list[str]:
    """The kernelfleet options a kernelfleet cell names: `--flag…` and `spec install KIND`."""
    return [t for t in re.findall(r"`([^`]+)`", cell) if t.startswith(("--", "spec install"))]


# -- their kernelspecs -----------------------------------------------------------------------------

EG_PACKAGE = "enterprise_gateway.services.processproxies"
EG_MODULES = {
    "LocalProcessProxy": "processproxy",
    "DistributedProcessProxy": "distributed",
    "YarnClusterProcessProxy": "yarn",
    "KubernetesProcessProxy": "k8s",
    "DockerProcessProxy": "docker_swarm",
    "DockerSwarmProcessProxy": "docker_swarm",
    "ConductorClusterProcessProxy": "conductor",
    "SparkOperatorProcessProxy": "spark_operator",
    "CustomResourceProcessProxy": "crd",
}
SOURCE = "/opt/eg/share/jupyter/kernels/spec"
IMAGE = "reg.example:5000/kernel-py:1.0"
TOREE_JAR = "lib/toree-assembly-0.5.0-incubating.jar"
CFG = "metadata/kernel_provisioner/config/"
PROVISIONER = "metadata/kernel_provisioner/provisioner_name"


def launcher_argv(
    script: str, *options: str, python: str = "python", gp: bool = False
) -> list[str]:
    """Their launcher's argv: EG's ``--RemoteProcessProxy.*`` options, or GP's plain ones."""
    prefix = "--" if gp else "--RemoteProcessProxy."
    head = [] if script == "bin/run.sh" else ["Rscript" if script.endswith(".R") else python]
    argv = [*head, f"{SOURCE}/{script}"]
    for opt, value in (
        ("kernel-id", "{kernel_id}"),
        ("response-address", "{response_address}"),
        ("public-key", "{public_key}"),
        ("port-range", "{port_range}"),
    ):
        argv += [prefix + opt, value]
    words = list(options)
    for i in range(0, len(words), 2):
        argv += [prefix + words[i], words[i + 1]]
    return argv


def _spec(
    stanza: dict[str, Any], argv: list[str], env: Mapping[str, str], language: str
) -> dict[str, Any]:
    return {
        "display_name": "Theirs",
        "language": language,
        "argv": argv,
        "env": dict(env),
        "metadata": stanza,
    }


def eg(
    proxy: str,
    config: Mapping[str, Any] | None = None,
    *,
    argv: list[str] | None = None,
    env: Mapping[str, str] | None = None,
    language: str = "python",
    class_name: str = "",
) -> dict[str, Any]:
    """An EG kernelspec with process proxy *proxy* (a short class name)."""
    stanza: dict[str, Any] = {
        "class_name": class_name or f"{EG_PACKAGE}.{EG_MODULES[proxy]}.{proxy}",
    }
    if config is not None:
        stanza["config"] = dict(config)
    if argv is None:
        argv = launcher_argv(CONTAINER.get(proxy, "scripts/launch_ipykernel.py"))
    return _spec({"process_proxy": stanza}, argv, env or {}, language)


def gp(
    provisioner: str,
    config: Mapping[str, Any] | None = None,
    *,
    argv: list[str] | None = None,
    env: Mapping[str, str] | None = None,
    language: str = "python",
) -> dict[str, Any]:
    """A GP kernelspec naming *provisioner*, argv with GP's plain launcher options."""
    if argv is None:
        argv = launcher_argv(CONTAINER.get(provisioner, "scripts/launch_ipykernel.py"), gp=True)
    stanza = {"kernel_provisioner": {"provisioner_name": provisioner, "config": dict(config or {})}}
    return _spec(stanza, argv, env or {}, language)


CONTAINER = {
    "KubernetesProcessProxy": "scripts/launch_kubernetes.py",
    "kubernetes-provisioner": "scripts/launch_kubernetes.py",
    "DockerProcessProxy": "scripts/launch_docker.py",
    "DockerSwarmProcessProxy": "scripts/launch_docker.py",
    "docker-provisioner": "scripts/launch_docker.py",
    "docker-swarm-provisioner": "scripts/launch_docker.py",
}


def ssh(config: Mapping[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    return eg("DistributedProcessProxy", config, **kw)


def spark_ssh(
    env: Mapping[str, str] | None = None, *, mode: str = "lazy", language: str = "python"
) -> dict[str, Any]:
    """EG's Spark-on-SSH spec (bin/run.sh, client mode)."""
    argv = launcher_argv("bin/run.sh", "spark-context-initialization-mode", mode)
    return ssh(argv=argv, env={"SPARK_HOME": "/opt/spark", **(env or {})}, language=language)


def spark_opts_ssh(opts: str) -> dict[str, Any]:
    return spark_ssh({"SPARK_OPTS": f"--master spark://m:7077 --deploy-mode client {opts}"})


def yarn(
    config: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    mode: str = "eager",
) -> dict[str, Any]:
    """EG's YARN cluster-mode spec (bin/run.sh)."""
    argv = launcher_argv("bin/run.sh", "spark-context-initialization-mode", mode)
    return eg("YarnClusterProcessProxy", config, argv=argv, env=env)


def spark_opts_yarn(opts: str) -> dict[str, Any]:
    return yarn(env={"SPARK_OPTS": f"--master yarn --deploy-mode cluster {opts}"})


def k8s(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return eg("KubernetesProcessProxy", {"image_name": IMAGE, **(config or {})})


# -- the cases -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Maps:
    """A kernelspec that maps: the options and kernel.json entries it must give."""

    spec: dict[str, Any]
    #: Option → value in the plan's options (``kind_options.NAME`` for a kind's own).
    expect: Mapping[str, Any] = field(default_factory=dict)
    #: ``a/b/0`` path into the kernel.json built from the options → value.
    built: Mapping[str, Any] = field(default_factory=dict)
    #: The original's files (relative paths), for the Toree jar.
    files: tuple[str, ...] = ()
    #: What a mapped finding says instead of the row's option (a variant in the Notes).
    says: str = ""


@dataclass(frozen=True)
class Case:
    """One row: a regex matching the findings' field, and kernelspecs that exercise it."""

    field: str
    maps: tuple[Maps, ...] = ()
    #: Kernelspecs whose field is unmappable.
    blocked: tuple[dict[str, Any], ...] = ()
    #: Kernelspecs whose field is dropped (kernelfleet does it itself).
    dropped: tuple[dict[str, Any], ...] = ()
    #: Kernelspecs whose field gets a warning.
    warned: tuple[dict[str, Any], ...] = ()
    #: What a mapped finding says, for a row whose kernelfleet cell names no option.
    says: str = ""


def ssh_kind(provisioner: str = "kernelfleet-ssh") -> dict[str, Any]:
    return {PROVISIONER: provisioner}


CASES: dict[str, Case] = {
    "`DistributedProcessProxy` / `distributed-provisioner`": Case(
        "DistributedProcessProxy|distributed-provisioner",
        maps=(
            Maps(ssh(), {"kind": "ssh"}, ssh_kind()),
            Maps(gp("distributed-provisioner"), {"kind": "ssh"}, ssh_kind()),
        ),
    ),
    "`YarnClusterProcessProxy` / `yarn-provisioner`": Case(
        "YarnClusterProcessProxy|yarn-provisioner",
        maps=(
            Maps(yarn(), {"kind": "yarn", "spark": True}, {PROVISIONER: "kernelfleet-yarn"}),
            Maps(
                gp("yarn-provisioner", argv=launcher_argv("bin/run.sh", gp=True)),
                {"kind": "yarn", "spark": True},
                {PROVISIONER: "kernelfleet-yarn"},
            ),
        ),
    ),
    "`KubernetesProcessProxy` / `kubernetes-provisioner`": Case(
        "KubernetesProcessProxy|kubernetes-provisioner",
        maps=(
            Maps(k8s(), {"kind": "k8s"}, {PROVISIONER: "kernelfleet-k8s"}),
            Maps(
                gp("kubernetes-provisioner", {"image_name": IMAGE}),
                {"kind": "k8s"},
                {PROVISIONER: "kernelfleet-k8s"},
            ),
        ),
    ),
    "`DockerProcessProxy` / `docker-provisioner`": Case(
        "DockerProcessProxy|docker-provisioner",
        maps=(
            Maps(
                eg("DockerProcessProxy", {"image_name": IMAGE}),
                {"kind": "docker"},
                {PROVISIONER: "kernelfleet-docker", f"{CFG}image": IMAGE},
            ),
            Maps(
                gp("docker-provisioner", {"image_name": IMAGE}),
                {"kind": "docker"},
                {PROVISIONER: "kernelfleet-docker"},
            ),
        ),
    ),
    "`DockerSwarmProcessProxy` / `docker-swarm-provisioner`": Case(
        "DockerSwarmProcessProxy|docker-swarm-provisioner",
        maps=tuple(
            Maps(
                spec,
                {"kind": "docker", "kind_options.swarm": True},
                {PROVISIONER: "kernelfleet-docker", f"{CFG}swarm": True},
            )
            for spec in (
                eg("DockerSwarmProcessProxy", {"image_name": IMAGE}),
                gp("docker-swarm-provisioner", {"image_name": IMAGE}),
            )
        ),
    ),
    "`LocalProcessProxy`": Case(
        "LocalProcessProxy",
        maps=(
            Maps(eg("LocalProcessProxy"), {"kind": "local"}, {PROVISIONER: "kernelfleet-local"}),
        ),
    ),
    "`ConductorClusterProcessProxy`, `SparkOperatorProcessProxy`, `CustomResourceProcessProxy`, "
    "`spark-operator-provisioner`, `custom-resource-provisioner`, any other class": Case(
        "metadata",
        blocked=(
            eg("ConductorClusterProcessProxy"),
            eg("SparkOperatorProcessProxy"),
            eg("CustomResourceProcessProxy"),
            gp("spark-operator-provisioner"),
            gp("custom-resource-provisioner"),
            eg("DistributedProcessProxy", class_name="my.pkg.MyProxy"),
        ),
    ),
    "`config.remote_hosts`": Case(
        "config.remote_hosts",
        maps=(
            Maps(
                ssh({"remote_hosts": "h1, h2"}),
                {"kind_options.remote_hosts": ("h1", "h2")},
                {f"{CFG}remote_hosts": ["h1", "h2"]},
            ),
            Maps(
                gp("distributed-provisioner", {"remote_hosts": ["h1,h2", "h3"]}),
                {"kind_options.remote_hosts": ("h1", "h2", "h3")},
            ),
        ),
    ),
    "`config.load_balancing_algorithm`": Case(
        "config.load_balancing_algorithm",
        maps=(
            Maps(
                ssh({"load_balancing_algorithm": "least-connection"}),
                {"kind_options.load_balancing_algorithm": "least-connection"},
                {f"{CFG}load_balancing_algorithm": "least-connection"},
            ),
        ),
    ),
    "`config.authorized_users`": Case(
        "config.authorized_users",
        maps=(
            Maps(
                ssh({"authorized_users": "alice,bob"}),
                {"authorized_users": ("alice", "bob")},
                {f"{CFG}authorized_users": ["alice", "bob"]},
            ),
            # GP's installer writes its --authorized-users as a list of one comma string
            Maps(
                gp("distributed-provisioner", {"authorized_users": ["alice,bob", "carol"]}),
                {"authorized_users": ("alice", "bob", "carol")},
            ),
        ),
    ),
    "`config.unauthorized_users`": Case(
        "config.unauthorized_users",
        maps=(
            Maps(
                ssh({"unauthorized_users": ["root"]}),
                {"unauthorized_users": ("root",)},
                {f"{CFG}unauthorized_users": ["root"]},
            ),
        ),
    ),
    "`config.launch_timeout`": Case(
        "config.launch_timeout",
        maps=(
            Maps(
                ssh({"launch_timeout": 90}),
                {"launch_timeout": 90.0},
                {f"{CFG}launch_timeout": 90},
            ),
            Maps(yarn({"launch_timeout": "200"}), {"launch_timeout": 200.0}),
        ),
        warned=(ssh({"launch_timeout": 30}), yarn({"launch_timeout": 90})),
    ),
    "`config.port_range`": Case(
        "config.port_range",
        maps=(
            Maps(
                ssh({"port_range": "40000..40999"}),
                {"kind_options.port_range": "40000..40999"},
                {f"{CFG}port_range": "40000..40999"},
            ),
        ),
        dropped=(k8s({"port_range": "40000..40999"}), ssh({"port_range": "0..0"})),
        blocked=(yarn({"port_range": "40000..40999"}),),
    ),
    "`config.yarn_endpoint`": Case(
        "config.yarn_endpoint",
        maps=(
            Maps(
                yarn({"yarn_endpoint": "http://rm1:8088/ws/v1/cluster"}),
                {"kind_options.yarn_endpoints": ("http://rm1:8088",)},
                {f"{CFG}yarn_endpoints": ["http://rm1:8088"]},
            ),
        ),
    ),
    "`config.alt_yarn_endpoint`": Case(
        "config.alt_yarn_endpoint",
        maps=(
            # the second ResourceManager comes second, whichever key the JSON has first
            Maps(
                yarn(
                    {
                        "alt_yarn_endpoint": "http://rm2:8088/ws/v1/cluster/",
                        "yarn_endpoint": "http://rm1:8088/ws/v1/cluster",
                    }
                ),
                {"kind_options.yarn_endpoints": ("http://rm1:8088", "http://rm2:8088")},
                {f"{CFG}yarn_endpoints": ["http://rm1:8088", "http://rm2:8088"]},
            ),
        ),
    ),
    "`config.impersonation_enabled`": Case(
        "config.impersonation_enabled",
        maps=(
            Maps(
                yarn({"impersonation_enabled": True}),
                {"kind_options.impersonation": True},
                {f"{CFG}impersonation_enabled": True},
            ),
            Maps(
                gp(
                    "yarn-provisioner",
                    {"impersonation_enabled": "True"},
                    argv=launcher_argv("bin/run.sh", gp=True),
                ),
                {"kind_options.impersonation": True},
            ),
        ),
    ),
    "`config.yarn_endpoint_security_enabled`": Case(
        "config.yarn_endpoint_security_enabled",
        maps=(Maps(yarn({"yarn_endpoint_security_enabled": False})),),
        dropped=(yarn({"yarn_endpoint_security_enabled": False}),),
        blocked=(
            yarn({"yarn_endpoint_security_enabled": True}),
            yarn({"yarn_endpoint_security_enabled": "true"}),
        ),
    ),
    "`config.image_name`": Case(
        "config.image_name",
        maps=(
            Maps(k8s(), {"kind_options.image": IMAGE}, {f"{CFG}image": IMAGE}),
            Maps(gp("docker-provisioner", {"image_name": IMAGE}), {"kind_options.image": IMAGE}),
        ),
        warned=(k8s({"image_name": "elyra/kernel-py:3.2.3"}),),
        blocked=(eg("KubernetesProcessProxy"), gp("docker-provisioner", {"image_name": ""})),
    ),
    "`config.executor_image_name`": Case(
        "config.executor_image_name",
        blocked=(k8s({"executor_image_name": "reg.example/spark-executor:3.5"}),),
    ),
    "argv `launch_ipykernel.py`": Case(
        r"argv\[0\]",
        maps=(
            Maps(ssh(), {"python": "python3"}, {"argv/0": "python3"}),
            Maps(
                ssh(argv=launcher_argv("scripts/launch_ipykernel.py", python="/opt/py/bin/python")),
                {"python": "/opt/py/bin/python", "language": "python"},
                {
                    "argv": [
                        "/opt/py/bin/python",
                        "-m",
                        "ipykernel_launcher",
                        "-f",
                        "{connection_file}",
                    ]
                },
            ),
        ),
    ),
    "argv `launch_IRkernel.R`": Case(
        "argv",
        maps=(
            Maps(
                ssh(argv=launcher_argv("scripts/launch_IRkernel.R"), language="R"),
                {"language": "r"},
                {"argv/0": "R", "language": "R", f"{CFG}transport_encryption": False},
            ),
            # GP's R spec, its language unrendered
            Maps(
                gp(
                    "distributed-provisioner",
                    argv=launcher_argv("scripts/launch_IRkernel.R", gp=True),
                    language="${language}",
                ),
                {"language": "r"},
            ),
        ),
    ),
    "argv `bin/run.sh`": Case(
        "argv",
        maps=(
            Maps(
                spark_ssh(),
                {"spark": True, "language": "python"},
                {"argv/0": "/x/spec/bin/run.sh", "env/SPARK_HOME": "/opt/spark"},
            ),
            Maps(
                spark_ssh(language="scala"),
                {"spark": True, "language": "scala"},
                {"argv/0": "/x/spec/bin/run.sh", "language": "scala"},
                files=(TOREE_JAR,),
            ),
        ),
    ),
    "argv `launch_kubernetes.py`, `launch_docker.py`": Case(
        "argv",
        says="container launcher",
        maps=(
            Maps(
                k8s(),
                {"language": "python"},
                {"argv": ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"]},
            ),
            Maps(
                eg("DockerProcessProxy", {"image_name": IMAGE}, language="R"),
                {"language": "r"},
                {"argv/0": "R"},
            ),
        ),
        blocked=(k8s() | {"argv": launcher_argv("bin/run.sh")},),
    ),
    "argv `--kernel-class-name`": Case(
        "argv --kernel-class-name",
        maps=(
            Maps(
                ssh(
                    argv=launcher_argv(
                        "scripts/launch_ipykernel.py", "kernel-class-name", "my_kernels.MyKernel"
                    )
                ),
                {"ipykernel_subclass_name": "my_kernels.MyKernel"},
                {"argv/5": "--IPKernelApp.kernel_class=my_kernels.MyKernel"},
            ),
        ),
    ),
    "argv `--spark-context-initialization-mode`": Case(
        "argv --spark-context-initialization-mode",
        maps=(
            Maps(
                spark_ssh(mode="eager"),
                {"spark_init_mode": "eager"},
                {"argv/4": "eager", "metadata/kernelfleet/spark/init_mode": "eager"},
            ),
            Maps(spark_ssh(mode="none"), {"spark_init_mode": "none"}),
        ),
        dropped=(yarn(mode="lazy"),),
    ),
    "argv `--cluster-type`": Case(
        "argv --cluster-type",
        maps=(
            Maps(ssh(argv=launcher_argv("scripts/launch_ipykernel.py", "cluster-type", "spark"))),
        ),
        blocked=(ssh(argv=launcher_argv("scripts/launch_ipykernel.py", "cluster-type", "dask")),),
    ),
    "`env.SPARK_HOME`": Case(
        "env.SPARK_HOME",
        maps=(
            Maps(
                spark_ssh({"SPARK_HOME": "/usr/lib/spark"}),
                {"spark_home": "/usr/lib/spark"},
                {"env/SPARK_HOME": "/usr/lib/spark"},
            ),
            Maps(
                yarn(env={"SPARK_HOME": "/usr/lib/spark"}),
                {"spark_home": "/usr/lib/spark"},
                {f"{CFG}spark_home": "/usr/lib/spark"},
            ),
        ),
    ),
    "`env.PYSPARK_PYTHON`": Case(
        "env.PYSPARK_PYTHON",
        maps=(
            Maps(
                spark_ssh({"PYSPARK_PYTHON": "/opt/conda/bin/python"}),
                {"python": "/opt/conda/bin/python"},
                {"env/PYSPARK_PYTHON": "/opt/conda/bin/python"},
            ),
        ),
    ),
    "`env.HADOOP_CONF_DIR`": Case(
        "env.HADOOP_CONF_DIR",
        maps=(
            Maps(
                spark_ssh(
                    {
                        "SPARK_OPTS": "--master yarn --deploy-mode client",
                        "HADOOP_CONF_DIR": "/etc/hadoop/conf",
                    }
                ),
                {"kind_options.hadoop_conf_dir": "/etc/hadoop/conf", "spark_master": "yarn"},
                {"env/HADOOP_CONF_DIR": "/etc/hadoop/conf"},
            ),
            Maps(
                yarn(env={"HADOOP_CONF_DIR": "/etc/hadoop/conf"}),
                {"kind_options.hadoop_conf_dir": "/etc/hadoop/conf"},
                {f"{CFG}hadoop_conf_dir": "/etc/hadoop/conf"},
            ),
        ),
    ),
    "`env.SPARK_OPTS --master`": Case(
        "env.SPARK_OPTS --master",
        maps=(
            Maps(
                spark_ssh({"SPARK_OPTS": "--master spark://m:7077"}),
                {"spark_master": "spark://m:7077"},
                {"env/SPARK_OPTS": "--master spark://m:7077 --deploy-mode client"},
            ),
        ),
        blocked=(spark_opts_yarn("--master local[2]"),),
    ),
    "`env.SPARK_OPTS --deploy-mode`": Case(
        "env.SPARK_OPTS --deploy-mode",
        maps=(
            Maps(spark_ssh({"SPARK_OPTS": "--master yarn --deploy-mode client"})),
            Maps(spark_opts_yarn("")),
            Maps(yarn(env={"SPARK_OPTS": "--deploy-mode=cluster"})),
        ),
        blocked=(
            spark_ssh({"SPARK_OPTS": "--master yarn --deploy-mode cluster"}),
            yarn(env={"SPARK_OPTS": "--master yarn --deploy-mode client"}),
        ),
    ),
    "`env.SPARK_OPTS --proxy-user`": Case(
        "env.SPARK_OPTS --proxy-user",
        maps=(
            Maps(
                spark_opts_yarn("--proxy-user ${KERNEL_USERNAME}"),
                {"kind_options.impersonation": True},
                {f"{CFG}impersonation_enabled": True},
            ),
        ),
        blocked=(
            spark_opts_yarn("--proxy-user bob"),
            spark_opts_ssh("--proxy-user ${KERNEL_USERNAME}"),
        ),
    ),
    "`env.SPARK_OPTS --queue`": Case(
        r"env.SPARK_OPTS --(queue|conf spark\.yarn\.queue)",
        maps=(
            Maps(
                spark_opts_yarn("--queue analytics"),
                {"kind_options.queue": "analytics"},
                {f"{CFG}queue": "analytics"},
            ),
            Maps(
                spark_opts_yarn("--conf spark.yarn.queue=analytics"),
                {"kind_options.queue": "analytics"},
            ),
        ),
    ),
    "`env.SPARK_OPTS --driver-memory`": Case(
        r"env.SPARK_OPTS --(driver-memory|conf spark\.driver\.memory)",
        maps=(
            Maps(
                spark_opts_yarn("--driver-memory 2g"),
                {"kind_options.driver_memory": "2g"},
                {f"{CFG}spark_conf": {"spark.driver.memory": "2048m"}},
            ),
            Maps(
                spark_opts_yarn("--conf spark.driver.memory=2g"),
                {"kind_options.driver_memory": "2g"},
            ),
            Maps(
                spark_opts_yarn(
                    "--driver-memory=1g --driver-cores 2 --executor-memory 4g --executor-cores 3 "
                    "--conf spark.executor.instances=5"
                ),
                {
                    "kind_options.driver_memory": "1g",
                    "kind_options.driver_cores": "2",
                    "kind_options.executor_memory": "4g",
                    "kind_options.executor_cores": "3",
                    "kind_options.num_executors": "5",
                },
            ),
        ),
    ),
    "`env.SPARK_OPTS --conf`": Case(
        r"env.SPARK_OPTS( --conf|$)",  # SSH: the remaining words, as one finding
        maps=(
            Maps(
                spark_opts_yarn("--conf spark.sql.shuffle.partitions=8"),
                {"kind_options.spark_conf": {"spark.sql.shuffle.partitions": "8"}},
                {f"{CFG}spark_conf": {"spark.sql.shuffle.partitions": "8"}},
            ),
            Maps(
                spark_opts_ssh("--conf spark.sql.shuffle.partitions=8"),
                {"extra_spark_opts": "--conf spark.sql.shuffle.partitions=8"},
                says="--extra-spark-opts=--conf spark.sql.shuffle.partitions=8",
            ),
        ),
        blocked=(spark_opts_yarn("--conf spark.driver.extraJavaOptions=-Duser=${USER}"),),
    ),
    "`env.SPARK_OPTS --jars`": Case(
        r"env.SPARK_OPTS --(jars|packages)",
        maps=(
            Maps(
                spark_opts_yarn("--jars /opt/jars/a.jar,/opt/jars/b.jar"),
                {"kind_options.spark_conf": {"spark.jars": "/opt/jars/a.jar,/opt/jars/b.jar"}},
                {f"{CFG}spark_conf": {"spark.jars": "/opt/jars/a.jar,/opt/jars/b.jar"}},
            ),
            Maps(
                spark_opts_yarn("--packages org.example:lib:1.0"),
                {"kind_options.spark_conf": {"spark.jars.packages": "org.example:lib:1.0"}},
                says="--spark-conf spark.jars.packages=org.example:lib:1.0",
            ),
        ),
    ),
    "`env.SPARK_OPTS` other words": Case(
        "env.SPARK_OPTS",
        maps=(
            Maps(
                spark_opts_ssh("--verbose --driver-java-options -Dlog=1"),
                {"extra_spark_opts": "--verbose --driver-java-options -Dlog=1"},
                {
                    "env/SPARK_OPTS": "--master spark://m:7077 --deploy-mode client --verbose "
                    "--driver-java-options -Dlog=1"
                },
            ),
        ),
        blocked=(spark_opts_yarn("--verbose"),),
    ),
    "`env.__TOREE_SPARK_OPTS__`": Case(
        "env.__TOREE_SPARK_OPTS__",
        says="--spark-master=spark://m:7077",
        maps=(
            Maps(
                spark_ssh(
                    {"__TOREE_SPARK_OPTS__": "--master spark://m:7077 --conf spark.x=1"},
                    language="scala",
                ),
                {"spark_master": "spark://m:7077", "extra_spark_opts": "--conf spark.x=1"},
                files=(TOREE_JAR,),
            ),
        ),
    ),
    "`lib/toree-assembly-*.jar`": Case(
        "lib/",
        maps=(
            Maps(
                spark_ssh(language="scala"),
                {"toree_jar": f"{SOURCE}/{TOREE_JAR}", "language": "scala"},
                {"env/TOREE_JAR": f"{SOURCE}/{TOREE_JAR}"},
                files=("bin/run.sh", TOREE_JAR),
            ),
        ),
        blocked=(spark_ssh(language="scala"),),
    ),
    "`env.*` (any other)": Case(
        r"env\.(TZ|LANG)",
        says="carried over as it is",
        maps=(
            Maps(
                ssh(env={"TZ": "UTC", "LANG": "C.UTF-8"}),
                {"extra_env": (("LANG", "C.UTF-8"), ("TZ", "UTC"))},
                {"env": {"LANG": "C.UTF-8", "TZ": "UTC"}},
            ),
        ),
        blocked=(ssh(env={"TZ": "${KERNEL_TZ}"}),),
    ),
}


# -- the checks ------------------------------------------------------------------------------------


def option(options: SpecOptions, path: str) -> Any:
    attr, _, key = path.partition(".")
    value = getattr(options, attr)
    return value[key] if key else value


def entry(kernel_json: Mapping[str, Any], path: str) -> Any:
    value: Any = kernel_json
    for part in path.split("/"):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def planned(spec: Mapping[str, Any], files: tuple[str, ...] = ()) -> Plan:
    return plan("spec", spec, SOURCE, files)


def on(p: Plan, level: str, field_re: str) -> list[str]:
    """The texts of *p*'s findings of *level* whose field matches *field_re*."""
    return [f.text for f in p.findings if f.level == level and re.search(field_re, f.field)]


def _id(row: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.*-]+", "_", row).strip("_")[:60]


def test_the_readme_table_and_the_cases_name_the_same_fields() -> None:
    assert len(ROWS) >= 30
    assert sorted(set(ROWS) - set(CASES)) == [], "README rows without a case here"
    assert sorted(set(CASES) - set(ROWS)) == [], "cases whose row is not in the README"


@pytest.mark.parametrize("row", list(ROWS), ids=[_id(r) for r in ROWS])
def test_each_row_of_the_readme_table_holds(row: str) -> None:
    ours, _notes = ROWS[row]
    case = CASES[row]
    flags = claimed(ours)
    if ours == NONE:
        assert case.blocked, f"{row}: the README says unmappable; the case has no spec for it"
    else:
        assert case.maps, f"{row}: no kernelspec that maps"
        assert bool(flags) != bool(case.says), (
            f"{row}: a row naming an option ({flags}) is checked against it, one naming none "
            "needs the case's says="
        )
    for m in case.maps:
        p = planned(m.spec, m.files)
        assert p.options is not None and p.writable(force=False), (row, p.findings)
        if ours == NONE:
            # a value that fits maps silently (or is dropped): nothing to map it to
            assert not on(p, MAPPED, case.field) and not on(p, BLOCKER, case.field), p.findings
        else:
            texts = on(p, MAPPED, case.field)
            for says in [m.says] if m.says else flags or [case.says]:
                assert any(says in t for t in texts), (row, says, p.findings)
        for path, value in m.expect.items():
            assert option(p.options, path) == value, (row, path)
        built = build_kernel_json(p.options, "/x/spec")
        assert entry(built, "metadata/kernelfleet/migrated_from/path") == SOURCE
        for path, value in m.built.items():
            assert entry(built, path) == value, (row, path, built)
    for spec in case.blocked:
        p = planned(spec)
        assert not p.writable(force=False), (row, p.findings)
        assert on(p, BLOCKER, case.field), (row, p.findings)
    for spec in case.dropped:
        p = planned(spec)
        assert on(p, DROPPED, case.field) and p.writable(force=False), (row, p.findings)
    for spec in case.warned:
        p = planned(spec)
        assert on(p, WARNING, case.field) and p.writable(force=False), (row, p.findings)


@pytest.mark.parametrize(
    ("spec", "fits"),
    [
        (spark_ssh({"SPARK_OPTS": "--master yarn --deploy-mode client"}), True),
        (spark_ssh({"SPARK_OPTS": "--master spark://m:7077"}), True),  # client, spark-submit's
        (spark_opts_yarn(""), True),
        (yarn(env={"SPARK_OPTS": "--master yarn"}), True),  # cluster, a YARN spec's
        (spark_ssh({"SPARK_OPTS": "--master yarn --deploy-mode cluster"}), False),
        (yarn(env={"SPARK_OPTS": "--deploy-mode=client"}), False),
    ],
)
def test_deploy_mode_maps_silently_when_it_fits_the_kind_and_is_unmappable_when_not(
    spec: dict[str, Any], fits: bool
) -> None:
    p = planned(spec)
    about = [f for f in p.findings if "--deploy-mode" in f.field]
    if fits:
        assert about == [] and p.writable(force=False), p.findings
    else:
        assert [f.level for f in about] == [BLOCKER] and not p.writable(force=False)
        assert "does not fit" in about[0].text
