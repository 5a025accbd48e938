"""How `spec migrate` plans one kernelspec: what is unmappable and why, what is not theirs at
all, GP's unrendered placeholders, the gateway's refusal message, and (property-based) that no
kernel.json, however odd, makes the planner raise or hand over options that do not install."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from kernelfleet.foreign import (
    EG,
    GP,
    GP_PROVISIONERS,
    NotMigrated,
    foreign_of,
    not_migrated,
)
from kernelfleet.specs import builders
from kernelfleet.specs.migrate.model import DROPPED, LEVELS, Plan
from kernelfleet.specs.migrate.plan import plan
from kernelfleet.specs.migrate.spark import map_spark_opts
from kernelfleet.specs.options import SpecOptions
from tests.fuzz.strategies import fuzz_settings, hostile_text, json_scalars, json_values
from tests.unit.test_migrate_table import (
    EG_MODULES,
    EG_PACKAGE,
    IMAGE,
    SOURCE,
    TOREE_JAR,
    eg,
    gp,
    k8s,
    launcher_argv,
    spark_ssh,
    ssh,
    yarn,
)

README = Path(__file__).resolve().parents[2] / "README.md"


def planned(spec: dict[str, Any], files: tuple[str, ...] = ()) -> Plan:
    return plan("spec", spec, SOURCE, files)


def blockers_on(p: Plan, field_re: str) -> list[str]:
    return [f.text for f in p.blockers if re.fullmatch(field_re, f.field)]


# -- unmappable: each its own message --------------------------------------------------------------

#: id → (kernelspec, the unmappable finding's field (regex), a piece of its message).
UNMAPPABLE: dict[str, tuple[dict[str, Any], str, str]] = {
    "custom process proxy class": (
        eg("DistributedProcessProxy", class_name="my.pkg.MyProxy"),
        "metadata",
        "MyProxy has no kernelfleet equivalent",
    ),
    "ConductorClusterProcessProxy": (
        eg("ConductorClusterProcessProxy"),
        "metadata",
        "ConductorClusterProcessProxy has no kernelfleet equivalent",
    ),
    "spark-operator-provisioner": (
        gp("spark-operator-provisioner"),
        "metadata",
        "spark-operator-provisioner has no kernelfleet equivalent",
    ),
    "their launcher without a stanza": (
        {"argv": launcher_argv("scripts/launch_ipykernel.py"), "metadata": {}},
        "metadata",
        "a launcher of theirs without a process proxy or provisioner",
    ),
    "unknown launcher argv": (
        ssh(argv=["/usr/local/bin/start-kernel", "--addr", "{response_address}"]),
        "argv",
        "runs '/usr/local/bin/start-kernel', a launcher kernelfleet does not know",
    ),
    "a launcher of another kind": (
        eg("KubernetesProcessProxy", {"image_name": IMAGE}, argv=launcher_argv("bin/run.sh")),
        "argv",
        "their run.sh launcher, which does not fit a k8s spec",
    ),
    "unknown launcher option": (
        ssh(argv=launcher_argv("scripts/launch_ipykernel.py", "ip", "0.0.0.0")),
        r"argv --RemoteProcessProxy\.ip",
        "is an option kernelfleet's launchers do not have",
    ),
    "--cluster-type dask": (
        ssh(argv=launcher_argv("scripts/launch_ipykernel.py", "cluster-type", "dask")),
        "argv --cluster-type",
        "kernelfleet starts Spark sessions only",
    ),
    "non-empty LAUNCH_OPTS": (
        spark_ssh({"LAUNCH_OPTS": "--RemoteProcessProxy.alternate-sigint=SIGUSR2"}),
        r"env\.LAUNCH_OPTS",
        "passes options to their launcher",
    ),
    "$ in a carried env value": (
        ssh(env={"DATA_DIR": "${HOME}/data"}),
        r"env\.DATA_DIR",
        "uses '$' substitution",
    ),
    "$ in a SPARK_OPTS word": (
        spark_ssh({"SPARK_OPTS": "--master spark://m:7077 --driver-java-options -Du=$USER"}),
        r"env\.SPARK_OPTS --driver-java-options",
        "relies on the shell ('$')",
    ),
    "SPARK_OPTS that no shell could read": (
        spark_ssh({"SPARK_OPTS": "--conf 'spark.x=1"}),
        r"env\.SPARK_OPTS",
        "cannot be read",
    ),
    "a config key of another kind": (
        ssh({"yarn_endpoint": "http://rm:8088"}),
        r"process_proxy\.config\.yarn_endpoint",
        "has no equivalent for ssh kernels",
    ),
    "yarn_endpoint_security_enabled": (
        yarn({"yarn_endpoint_security_enabled": True}),
        r"process_proxy\.config\.yarn_endpoint_security_enabled",
        "Kerberos (SPNEGO)",
    ),
    "executor_image_name": (
        k8s({"executor_image_name": "reg.example/spark-executor:3.5"}),
        r"process_proxy\.config\.executor_image_name",
        "Spark executors in pods are not supported",
    ),
    "port_range for yarn": (
        yarn({"port_range": "40000..40999"}),
        r"process_proxy\.config\.port_range",
        "listen on any free port of their node",
    ),
    "no image (k8s)": (
        eg("KubernetesProcessProxy"),
        r"process_proxy\.config\.image_name",
        "is missing: name the kernel image",
    ),
    "no image (docker)": (
        gp("docker-provisioner", {"launch_timeout": 60}),
        r"kernel_provisioner\.config\.image_name",
        "is missing: name the kernel image",
    ),
    "Scala without a Toree jar": (
        spark_ssh(language="scala"),
        "lib/",
        "holds no Apache Toree assembly jar",
    ),
    "Scala on YARN": (
        yarn() | {"language": "scala"},
        "kernelfleet",
        "Scala kernels in YARN cluster mode are not supported",
    ),
}


def planned_case(case: str) -> Plan:
    spec = UNMAPPABLE[case][0]
    return planned(spec, (TOREE_JAR,) if spec.get("language") == "scala" and case != NO_JAR else ())


NO_JAR = "Scala without a Toree jar"


@pytest.mark.parametrize("case", list(UNMAPPABLE))
def test_an_unmappable_field_is_reported_with_its_fix_and_blocks_the_write(case: str) -> None:
    _, field_re, message = UNMAPPABLE[case]
    p = planned_case(case)
    assert any(message in text for text in blockers_on(p, field_re)), p.findings
    assert not p.writable(force=False)
    # --force writes what could be mapped, when anything could
    assert p.writable(force=True) == (p.options is not None)


def test_each_unmappable_case_has_a_message_of_its_own() -> None:
    texts = {case: [f.text for f in planned_case(case).blockers] for case in UNMAPPABLE}
    for case, (_, _, message) in UNMAPPABLE.items():
        shared = {c for c, (_, _, m) in UNMAPPABLE.items() if m == message}
        others = [c for c in UNMAPPABLE if c not in shared and any(message in t for t in texts[c])]
        assert others == [], f"{case}'s message also comes for {others}"


# -- what is not theirs, and their placeholders ----------------------------------------------------


def test_an_eg_local_spec_running_plain_ipykernel_is_not_foreign() -> None:
    spec = eg(
        "LocalProcessProxy",
        argv=["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
    )
    assert foreign_of(spec) is None
    p = planned(spec)
    assert p.options is None and not p.writable(force=True)
    assert "nothing to migrate" in p.blockers[0].text
    # the same proxy running their launcher is theirs
    assert foreign_of(eg("LocalProcessProxy")) is not None


def test_a_kernelfleet_spec_is_never_foreign() -> None:
    for options in (
        SpecOptions(kind="ssh", remote_hosts=("h1",)),
        SpecOptions(kind="yarn", yarn_endpoints=("http://rm:8088",)),
        SpecOptions(kind="k8s", image=IMAGE),
    ):
        built = builders.build_kernel_json(options, "/x/ours")
        assert foreign_of(built) is None
        # even with an EG stanza left over next to ours
        built["metadata"]["process_proxy"] = {"class_name": "x.DistributedProcessProxy"}
        assert foreign_of(built) is None


def test_every_gp_provisioner_and_eg_class_is_foreign_with_its_kind() -> None:
    for name, kind in GP_PROVISIONERS.items():
        found = foreign_of(gp(name))
        assert found is not None and (found.origin, found.name, found.kind) == (GP, name, kind)
    for short in EG_MODULES:
        found = foreign_of(eg(short))
        assert found is not None and (found.origin, found.name) == (EG, short)
        assert found.written == f"{EG_PACKAGE}.{EG_MODULES[short]}.{short}"


#: GP 0.5.0's `jupyter yarn-spec install` for Python: its template, never rendered.
GP_YARN_UNRENDERED: dict[str, Any] = {
    "language": "${language}",
    "display_name": "${display_name}",
    "metadata": {
        "supported_encryption": ["curve"],
        "kernel_provisioner": {"provisioner_name": "yarn-provisioner", "config": {}},
    },
    "env": {
        "SPARK_HOME": "${spark_home}",
        "PYSPARK_PYTHON": "${python_root}/bin/python",
        "PYTHONPATH": "${HOME}/.local/lib/python3.7/site-packages:${spark_home}/python${py4j_path}",
        "SPARK_OPTS": "--master yarn --deploy-mode cluster --name "
        "${KERNEL_ID:-ERROR__NO__KERNEL_ID} --conf spark.yarn.submit.waitAppCompletion=false "
        "--conf "
        "spark.yarn.appMasterEnv.PYTHONUSERBASE=/home/${KERNEL_USERNAME}/.local --conf "
        "spark.yarn.appMasterEnv.PYTHONPATH=${HOME}/.local/lib/python3.7/site-packages:"
        "${spark_home}/python${py4j_path} --conf "
        "spark.yarn.appMasterEnv.PATH=${python_root}/bin:$PATH ${extra_spark_opts} "
        "${KERNEL_EXTRA_SPARK_OPTS}",
        "LAUNCH_OPTS": "",
        "PYARROW_IGNORE_TIMEZONE": "${pyarrow_tz}",
    },
    "argv": [
        "${install_dir}/bin/run.sh",
        *("--kernel-id", "{kernel_id}", "--port-range", "{port_range}"),
        *("--response-address", "{response_address}", "--public-key", "{public_key}"),
        *("--transport-encryption", "{transport_encryption}"),
        *("--spark-context-initialization-mode", "${spark_init_mode}"),
        *("--kernel-class-name", "${ipykernel_subclass_name}"),
    ],
}


def test_gp_installer_placeholders_are_treated_as_unset_and_reported() -> None:
    p = planned(GP_YARN_UNRENDERED)
    assert p.writable(force=False), p.findings
    assert p.options is not None
    opts = p.options
    assert (opts.kind, opts.language, opts.display_name) == ("yarn", "python", "")
    assert (opts.spark_home, opts.python, opts.extra_env) == (None, "python3", ())
    assert opts.ipykernel_subclass_name == "ipykernel.ipkernel.IPythonKernel"
    unrendered = {
        f.field
        for f in p.findings
        if f.level == DROPPED and f.field.startswith("env.SPARK_OPTS") and "unrendered" in f.text
    }
    assert "env.SPARK_OPTS ${extra_spark_opts}" in unrendered, p.findings
    dropped = {f.field: f.text for f in p.findings if f.level == DROPPED}
    for key in ("PYARROW_IGNORE_TIMEZONE", "PYSPARK_PYTHON", "SPARK_HOME"):
        assert key in dropped["env"], dropped
    built = builders.build_kernel_json(opts, "/x/spec")
    assert "${" not in json.dumps(built)
    assert built["display_name"] == "Spark - Python on YARN (cluster mode)"


# -- the gateway's refusal -------------------------------------------------------------------------


def _readme_refusal() -> str:
    text = " ".join(README.read_text(encoding="utf-8").split())
    found = re.search(
        r"Starting one fails at once \(500, `Kernelspec Not Migrated`\) with `([^`]+)`", text
    )
    assert found is not None, "the README no longer quotes the refusal"
    return " ".join(found.group(1).split()).removesuffix("…")


def test_the_refusal_names_the_fix_first_as_the_readme_quotes_it() -> None:
    foreign = foreign_of(ssh({"remote_hosts": "h1"}))
    assert foreign is not None
    err = not_migrated("NAME", foreign)
    assert isinstance(err, NotMigrated)
    assert (err.status, err.reason) == (500, "Kernelspec Not Migrated")
    assert err.message.startswith(_readme_refusal())
    assert err.message.startswith("Kernelspec 'NAME' needs 'kernelfleet spec migrate NAME'")
    assert "kernelfleet spec migrate NAME" in err.message[:110]


@pytest.mark.parametrize(
    ("spec", "whose"),
    [
        (yarn(), "it is an Enterprise Gateway spec (YarnClusterProcessProxy), "),
        (
            gp("distributed-provisioner"),
            "it is a Gateway Provisioners spec (distributed-provisioner), ",
        ),
        (
            {"argv": launcher_argv("scripts/launch_ipykernel.py")},
            "it is an Enterprise Gateway spec, ",
        ),
    ],
)
def test_the_refusal_says_whose_spec_it_is(spec: dict[str, Any], whose: str) -> None:
    foreign = foreign_of(spec)
    assert foreign is not None
    message = not_migrated("NAME", foreign).message
    assert message.startswith("Kernelspec 'NAME' needs 'kernelfleet spec migrate NAME' (an admin")
    assert whose in message


# -- properties ------------------------------------------------------------------------------------

SPARK_WORDS = (
    "--master",
    "yarn",
    "spark://m:7077",
    "local[2]",
    "--deploy-mode",
    "client",
    "cluster",
    "--deploy-mode=cluster",
    "--conf",
    "spark.x=1",
    "spark.yarn.queue=q1",
    "spark.driver.memory=2g",
    "spark.executor.instances=x",
    "spark.yarn.appMasterEnv.PYTHONPATH=$X",
    "spark.yarn.appMasterEnv.PYTHONUSERBASE=/home/${KERNEL_USERNAME}",
    "spark.app.name=n",
    "--conf=spark.a=b",
    "--queue",
    "--queue=",
    "--driver-memory",
    "--num-executors",
    "--jars",
    "--packages",
    "--proxy-user",
    "${KERNEL_USERNAME}",
    "${KERNEL_EXTRA_SPARK_OPTS}",
    "$KERNEL_EXTRA_SPARK_OPTS",
    "--name",
    "${KERNEL_ID:-x}",
    "${spark_home}",
    "--verbose",
    "--class",
    "-v",
    "=",
    "$",
    "'",
    '"',
    "\\",
)
spark_text = st.text(max_size=40) | st.lists(
    st.sampled_from(SPARK_WORDS) | hostile_text, max_size=10
).map(" ".join)


@fuzz_settings(400)
@given(text=spark_text, kind=st.sampled_from(["ssh", "yarn"]))
def test_map_spark_opts_never_raises(text: str, kind: str) -> None:
    got = map_spark_opts(text, kind=kind, source="env.SPARK_OPTS")
    assert all(f.level in LEVELS and f.field.startswith("env.SPARK_OPTS") for f in got.findings)
    if kind == "ssh":
        assert not (set(got.yarn) - {"spark_conf"}) and not got.impersonation


CLASS_NAMES = [f"{EG_PACKAGE}.{m}.{c}" for c, m in EG_MODULES.items()] + ["my.pkg.MyProxy", ""]
PROVISIONER_NAMES = [*GP_PROVISIONERS, "kernelfleet-ssh", "local-provisioner"]
CONFIG_KEYS = (
    "remote_hosts",
    "load_balancing_algorithm",
    "authorized_users",
    "unauthorized_users",
    "launch_timeout",
    "port_range",
    "yarn_endpoint",
    "alt_yarn_endpoint",
    "yarn_endpoint_security_enabled",
    "impersonation_enabled",
    "image_name",
    "executor_image_name",
)
CONFIG_VALUES = (
    "h1,h2",
    ["h1", "h2,h3"],
    "round-robin",
    "alice,bob",
    30,
    10**400,
    "1e999",
    "40000..40999",
    "0..0",
    "http://rm:8088/ws/v1/cluster",
    True,
    "true",
    IMAGE,
    "elyra/kernel-py:3.2.3",
    "${x}",
)
ENV_KEYS = (
    "SPARK_HOME",
    "SPARK_OPTS",
    "__TOREE_SPARK_OPTS__",
    "__TOREE_OPTS__",
    "LAUNCH_OPTS",
    "PYSPARK_PYTHON",
    "PYTHONPATH",
    "HADOOP_CONF_DIR",
    "DEFAULT_INTERPRETER",
    "TZ",
)
ARGV_WORDS = (
    "python",
    "/opt/py/bin/python",
    f"{SOURCE}/scripts/launch_ipykernel.py",
    f"{SOURCE}/scripts/launch_IRkernel.R",
    f"{SOURCE}/bin/run.sh",
    "${install_dir}/bin/run.sh",
    f"{SOURCE}/scripts/launch_kubernetes.py",
    f"{SOURCE}/scripts/launch_docker.py",
    "-m",
    "ipykernel_launcher",
    "IRkernel::main()",
    "--RemoteProcessProxy.kernel-id",
    "{kernel_id}",
    "--response-address",
    "{response_address}",
    "--public-key",
    "{public_key}",
    "--kernel-class-name",
    "my_kernels.K",
    "--RemoteProcessProxy.spark-context-initialization-mode",
    "lazy",
    "eager",
    "none",
    "--cluster-type",
    "dask",
    "--foo",
)

config_values = st.sampled_from(CONFIG_VALUES) | json_values
configs = st.dictionaries(
    st.sampled_from(CONFIG_KEYS), config_values, max_size=6
) | st.dictionaries(hostile_text, json_values, max_size=3)
stanzas = st.one_of(
    st.fixed_dictionaries(
        {
            "process_proxy": st.fixed_dictionaries(
                {"class_name": st.sampled_from(CLASS_NAMES) | json_scalars},
                optional={"config": configs},
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "kernel_provisioner": st.fixed_dictionaries(
                {"provisioner_name": st.sampled_from(PROVISIONER_NAMES) | json_scalars},
                optional={"config": configs},
            )
        }
    ),
    json_values,
)
argvs = st.lists(st.sampled_from(ARGV_WORDS) | json_scalars, max_size=10) | json_values
envs = (
    st.dictionaries(
        st.sampled_from(ENV_KEYS) | hostile_text,
        spark_text | st.sampled_from(["/opt/spark", "", "${spark_home}"]) | json_scalars,
        max_size=5,
    )
    | json_values
)
languages = st.sampled_from(["python", "R", "scala", "${language}"]) | json_scalars
kernel_jsons = st.fixed_dictionaries(
    {},
    optional={
        "metadata": stanzas,
        "argv": argvs,
        "env": envs,
        "language": languages,
        "display_name": json_scalars,
    },
) | st.dictionaries(hostile_text, json_values, max_size=4)
names = st.sampled_from(["spec", "python_distributed"]) | hostile_text
files = st.lists(
    st.sampled_from([TOREE_JAR, "scripts/kernel-pod.yaml.j2", "bin/run.sh"]) | hostile_text,
    max_size=3,
)


@fuzz_settings(600)
@given(name=names, spec=kernel_jsons, files=files)
@example(name="spec", spec=ssh({"launch_timeout": 10**400}), files=[])  # float() overflowed
def test_plan_never_raises_and_hands_over_only_options_that_install(
    name: str, spec: dict[str, Any], files: list[str]
) -> None:
    p = plan(name, spec, SOURCE, files)
    assert all(f.level in LEVELS for f in p.findings)
    assert p.writable(force=False) == (p.options is not None and not p.blockers)
    if p.options is not None and not p.blockers:
        # the same checks as an install: a plan without an unmappable finding installs
        builders.validate(p.options)
        builders.build_kernel_json(p.options, "/x/spec")
