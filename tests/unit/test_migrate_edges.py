"""`spec migrate` on the edges a review found: what a spec may not carry (the gateway's own
per-kernel variables, non-strings, nulls), what kernelfleet's own spec overrides, options whose
value their installer never rendered, files the YARN submission passes itself, and the parts
of a kernel.json kernelfleet writes for the kind."""

from __future__ import annotations

from typing import Any

import pytest

from kernelfleet.specs import builders
from kernelfleet.specs.migrate.model import BLOCKER, DROPPED, Plan
from kernelfleet.specs.migrate.plan import plan
from kernelfleet.specs.options import SpecOptions
from tests.unit.test_migrate_table import (
    SOURCE,
    eg,
    k8s,
    launcher_argv,
    spark_opts_ssh,
    spark_opts_yarn,
    spark_ssh,
    ssh,
)


def planned(spec: dict[str, Any]) -> Plan:
    return plan("spec", spec, SOURCE)


def levels(p: Plan, field: str) -> set[str]:
    return {f.level for f in p.findings if f.field == field}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (ssh(env={"KERNEL_USERNAME": "root"}), "env.KERNEL_USERNAME"),
        (ssh(env={"KF_TOKEN": "x"}), "env.KF_TOKEN"),
        (ssh(env={"JPY_SESSION_NAME": "x"}), "env.JPY_SESSION_NAME"),
        (ssh(env={"N": 5}), "env.N"),  # type: ignore[dict-item]
        (ssh({"remote_hosts": None}), "process_proxy.config.remote_hosts"),
        (ssh({"authorized_users": 3}), "process_proxy.config.authorized_users"),
        (spark_opts_ssh("--master ${MASTER}"), "env.SPARK_OPTS --master"),
        (spark_opts_yarn("--py-files /a.zip"), "env.SPARK_OPTS --py-files"),
        (spark_opts_yarn("--conf spark.files=/a.txt"), "env.SPARK_OPTS --conf spark.files"),
        (
            eg(
                "KubernetesProcessProxy",
                {"image_name": "reg/k:1"},
                argv=launcher_argv(
                    "scripts/launch_kubernetes.py", "spark-context-initialization-mode", "lazy"
                ),
            ),
            "argv --spark-context-initialization-mode",
        ),
    ],
)
def test_what_a_spec_may_not_carry_is_unmappable_and_blocks_the_write(
    spec: dict[str, Any], field: str
) -> None:
    p = planned(spec)
    assert BLOCKER in levels(p, field), p.findings
    assert not p.writable(force=False)


def test_the_kind_s_own_env_wins_and_the_carried_copy_is_reported_dropped() -> None:
    p = planned(spark_ssh({"PYSPARK_DRIVER_PYTHON": "/opt/py/bin/python", "OTHER": "1"}))
    assert p.options is not None and not p.blockers, p.findings
    assert levels(p, "env.PYSPARK_DRIVER_PYTHON") == {DROPPED}
    assert dict(p.options.extra_env) == {"OTHER": "1"}


def test_spark_opts_and_toree_spark_opts_are_mapped_together_not_one_over_the_other() -> None:
    p = planned(
        spark_ssh(
            {
                "SPARK_OPTS": "--master spark://m:7077 --conf spark.a=1",
                "__TOREE_SPARK_OPTS__": "--conf spark.b=2",
            }
        )
    )
    assert p.options is not None and not p.blockers, p.findings
    assert p.options.extra_spark_opts == "--conf spark.a=1 --conf spark.b=2"


def test_an_option_whose_value_was_never_rendered_is_left_out_with_its_value() -> None:
    p = planned(spark_opts_yarn("--queue ${queue} --driver-memory 2g"))
    assert p.options is not None and not p.blockers, p.findings
    own = p.options.kind_options
    assert own.get("driver_memory") == "2g"
    assert "queue" not in own
    assert levels(p, "env.SPARK_OPTS --queue") == {DROPPED}


def test_interrupt_mode_and_other_metadata_are_reported_as_written_for_the_kind() -> None:
    spec = k8s()
    spec["interrupt_mode"] = "signal"
    spec["metadata"]["debugger"] = True
    p = planned(spec)
    assert levels(p, "interrupt_mode") == {DROPPED}
    assert levels(p, "metadata.debugger") == {DROPPED}


def test_an_ssh_python_spec_warns_that_curve_needs_a_recent_ipykernel() -> None:
    p = planned(ssh({"remote_hosts": "h1"}))
    assert any("ipykernel >= 7.4" in f.text for f in p.findings if f.field == "kernelfleet")


def test_the_builders_refuse_an_env_entry_the_gateway_sets_per_kernel() -> None:
    opts = SpecOptions(kind="local", kernel_name="x", extra_env=(("KERNEL_ID", "1"),))
    with pytest.raises(builders.SpecError, match="KERNEL_"):
        builders.validate(opts)
