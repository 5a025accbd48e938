"""The spec kinds' pure parts: each kind's options, checks and ``kernel_provisioner.config``,
the registry, and how :class:`SpecOptions` carries a kind's options (no I/O)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from importlib.metadata import entry_points
from typing import Any

import pytest
from traitlets import Bool, Unicode
from traitlets import List as TList

from kernelfleet.config import env_names, option
from kernelfleet.errors import BadRequest
from kernelfleet.specs import builders, kinds
from kernelfleet.specs.kinds import KINDS, SpecKind
from kernelfleet.specs.kinds.local import LocalKind
from kernelfleet.specs.kinds.ssh import SSHKind
from kernelfleet.specs.options import SpecError, SpecOptions

DIR = "/srv/kernels/k"
PY = "/opt/py/bin/python3"


class ToyKind(SpecKind):
    """A kind defined outside the package: what adding ``yarn`` or ``k8s`` looks like."""

    kind = "toy"
    provisioner_name = "toy-provisioner"
    where = "in a toy box"
    description = "Install a kernelspec whose kernels run in a toy box."
    examples = "kernelfleet spec install toy --flavour=mint"

    flavour = option(
        Unicode("vanilla", help="What the toy tastes of: vanilla or mint. Default: vanilla."),
        "KF_SPEC_TOY_FLAVOUR",
    )
    toys = option(
        TList(Unicode(), help="Toys in the box (repeatable or comma list)."), "KF_SPEC_TOY_TOYS"
    )
    loud = option(Bool(False, help="Squeak when a kernel starts."), "KF_SPEC_TOY_LOUD")

    def validate(self, spec: SpecOptions) -> None:
        if self.flavour not in ("vanilla", "mint"):
            raise SpecError(f"--flavour {self.flavour!r}: use vanilla or mint")

    def provisioner_config(self, spec: SpecOptions) -> dict[str, Any]:
        cfg: dict[str, Any] = {}
        if self.flavour != "vanilla":
            cfg["flavour"] = self.flavour
        if self.toys:
            cfg["toys"] = list(self.toys)
        if self.loud:
            cfg["loud"] = True
        return cfg

    @classmethod
    def next_steps(cls, name: str) -> str:
        return f"Next: put {name} in the toy box."


@pytest.fixture
def toy() -> Any:
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(KINDS, "toy", ToyKind)
        yield ToyKind


def kj(**kw: Any) -> dict[str, Any]:
    kw.setdefault("python", PY)
    return builders.build_kernel_json(SpecOptions(**kw), DIR)


def cfg(**kw: Any) -> dict[str, Any]:
    config: dict[str, Any] = kj(**kw)["metadata"]["kernel_provisioner"]["config"]
    return config


# -- the built-in kinds -------------------------------------------------------------------------


def test_registry_lists_ssh_local_yarn_k8s_then_docker() -> None:
    assert list(KINDS) == ["ssh", "local", "yarn", "k8s", "docker"]
    assert kinds.kind_class("local") is LocalKind
    assert kinds.by_provisioner("kernelfleet-ssh") is SSHKind
    assert kinds.by_provisioner("kernelfleet-local") is LocalKind
    assert kinds.by_provisioner("local-provisioner") is None
    with pytest.raises(
        SpecError, match=r"unknown spec kind 'SSH' \(use one of: ssh, local, yarn, k8s, docker\)"
    ):
        kinds.kind_class("SSH")


def test_ssh_options_are_declared_once_with_flags_and_env() -> None:
    options = ["remote_hosts", "port_range", "load_balancing_algorithm", "hadoop_conf_dir"]
    assert list(SSHKind.option_traits()) == options  # in --help in this order
    assert env_names(SSHKind) == {
        "remote_hosts": "KF_SPEC_REMOTE_HOSTS",
        "port_range": "KF_SPEC_PORT_RANGE",
        "load_balancing_algorithm": "KF_SPEC_LOAD_BALANCING_ALGORITHM",
        "hadoop_conf_dir": "KF_SPEC_HADOOP_CONF_DIR",
    }
    assert LocalKind.option_traits() == {}
    assert SSHKind.command_name() == "SSHInstallApp"
    assert LocalKind.command_name() == "LocalInstallApp"


def test_ssh_provisioner_config_is_only_what_differs() -> None:
    def config(language: str = "python", **values: Any) -> dict[str, Any]:
        spec = SpecOptions(language=language, kind_options=values)
        kind = SSHKind.from_options(spec)
        kind.validate(spec)
        return kind.provisioner_config(spec)

    assert config() == {}
    assert config(load_balancing_algorithm="round-robin") == {}
    assert config(remote_hosts=("h1", "10.0.0.2"), load_balancing_algorithm="load") == {
        "remote_hosts": ["h1", "10.0.0.2"],
        "load_balancing_algorithm": "load",
    }
    # the key order is the kernel.json's
    assert list(config("r", port_range="40000..40100", remote_hosts=("h",))) == [
        "remote_hosts",
        "port_range",
        "transport_encryption",
    ]
    assert config("scala") == {"transport_encryption": False}


def test_ssh_checks_name_the_flag() -> None:
    for values, match in (
        ({"remote_hosts": ("h1; rm -rf /",)}, "--remote-hosts: 'h1; rm -rf /'"),
        ({"load_balancing_algorithm": "random"}, "--load-balancing-algorithm 'random'"),
    ):
        spec = SpecOptions(kind_options=values)
        with pytest.raises(SpecError, match=match):
            SSHKind.from_options(spec).validate(spec)
    spec = SpecOptions(port_range="80..200")
    with pytest.raises(BadRequest, match="below 1024"):
        SSHKind.from_options(spec).validate(spec)
    with pytest.raises(SpecError, match="--remote-hosts: "):
        SSHKind.from_options(SpecOptions(remote_hosts=5))
    with pytest.raises(SpecError, match="--flavour is not an option of 'spec install ssh'"):
        SSHKind.from_options(SpecOptions(flavour="mint"))


def test_local_writes_only_the_common_config() -> None:
    spec = SpecOptions(kind="local", authorized_users=("alice",), launch_timeout=30)
    assert LocalKind.from_options(spec).provisioner_config(spec) == {}
    assert cfg(kind="local", authorized_users=("alice",), launch_timeout=30) == {
        "authorized_users": ["alice"],
        "launch_timeout": 30,
    }


def test_an_option_of_another_kind_is_refused_unless_empty() -> None:
    assert cfg(kind="local", remote_hosts=(), port_range="") == {"launch_timeout": 60}
    for name, value in (("port_range", "40000..40100"), ("load_balancing_algorithm", "load")):
        flag = "--" + name.replace("_", "-")
        with pytest.raises(SpecError, match=f"{flag} only applies to 'spec install ssh'"):
            kj(kind="local", **{name: value})
    with pytest.raises(SpecError, match="--nonsense is not an option of 'spec install local'"):
        kj(kind="local", nonsense="x")


def test_display_name_says_where_the_kind_runs_kernels() -> None:
    assert builders.display_name(SpecOptions(), SSHKind) == "Python on SSH hosts"
    assert builders.display_name(SpecOptions(language="r"), LocalKind) == "R (local)"
    spark = SpecOptions(spark=True, spark_master="local[2]")
    assert builders.display_name(spark, ToyKind) == "Spark - Python in a toy box (local[2])"
    assert builders.display_name(SpecOptions(display_name="Mine"), ToyKind) == "Mine"


@pytest.mark.parametrize("kind", [SSHKind, LocalKind])
def test_every_config_key_a_builtin_kind_writes_is_a_setting_of_its_provisioner(
    kind: type[SpecKind],
) -> None:
    """The provisioner named by the kernelspec must know every entry of its config (it refuses
    unknown ones); its settings are read from the class as it is now, never listed here."""
    (entry,) = entry_points(group="jupyter_client.kernel_provisioners", name=kind.provisioner_name)
    settings = set(entry.load().class_traits())
    spec = SpecOptions(
        kind=kind.kind,
        language="r",
        authorized_users=("a",),
        unauthorized_users=("b",),
        kind_options={
            "remote_hosts": ("h1",),
            "port_range": "40000..40100",
            "load_balancing_algorithm": "load",
        }
        if kind is SSHKind
        else {},
    )
    written = builders.build_kernel_json(spec, DIR)["metadata"]["kernel_provisioner"]["config"]
    assert set(written) <= settings, set(written) - settings


# -- SpecOptions --------------------------------------------------------------------------------


def test_a_kinds_options_travel_by_name_in_spec_options() -> None:
    opts = SpecOptions(kind="toy", kernel_name="k", flavour="mint", toys=("a",))
    assert opts.kind_options == {"flavour": "mint", "toys": ("a",)}
    assert opts == SpecOptions(kind="toy", kernel_name="k", kind_options=opts.kind_options)
    changed = dataclasses.replace(opts, flavour="vanilla", spark=True)
    assert changed.kind_options == {"flavour": "vanilla", "toys": ("a",)} and changed.spark
    assert dataclasses.replace(opts, kind_options={}).kind_options == {}
    assert hash(opts) == hash(SpecOptions(kind="toy", kernel_name="k", flavour="mint", toys=("a",)))
    with pytest.raises(TypeError):
        opts.kind_options["flavour"] = "x"  # type: ignore[index]
    assert SpecOptions(language="R").curve_capable is False
    assert SpecOptions().curve_capable is True


# -- a kind defined elsewhere -------------------------------------------------------------------


def test_a_registered_kind_builds_its_config_through_the_shared_builders(toy: Any) -> None:
    spec = kj(kind="toy", flavour="mint", toys=("a", "b"), loud=True, spark=True)
    assert spec["metadata"]["kernel_provisioner"] == {
        "provisioner_name": "toy-provisioner",
        "config": {"flavour": "mint", "toys": ["a", "b"], "loud": True, "launch_timeout": 60},
    }
    assert spec["metadata"]["kernelfleet"]["kind"] == "toy"
    assert spec["display_name"] == "Spark - Python in a toy box (yarn)"
    assert spec["argv"][0] == f"{DIR}/bin/run.sh"  # Spark is the shared launcher's business
    assert SpecOptions(kind="toy").name == "toy_python"
    assert cfg(kind="toy") == {"launch_timeout": 60}
    with pytest.raises(SpecError, match="--flavour 'chocolate'"):
        kj(kind="toy", flavour="chocolate")
    with pytest.raises(SpecError, match="--remote-hosts only applies to 'spec install ssh'"):
        kj(kind="toy", remote_hosts=("h1",))
    with pytest.raises(SpecError, match="--flavour only applies to 'spec install toy'"):
        kj(kind="ssh", flavour="mint")
    files = builders.build_spec(SpecOptions(kind="toy", python=PY, spark=True), DIR)
    assert set(files.files) == {"bin/run.sh"}


def test_spec_install_imports_no_provisioner_kernels_or_gateway_module() -> None:
    """cli → specs → (provisioners, transport, launchers): building a spec needs none of the
    gateway's modules, and the SSH provisioner (asyncssh) only when a command connects."""
    code = (
        "import sys, kernelfleet.cli.spec, kernelfleet.specs.builders; "
        "print(sorted(m for m in sys.modules if m.startswith(("
        "'kernelfleet.kernels', 'kernelfleet.gateway', 'kernelfleet.provisioners', 'asyncssh'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
