"""What `hosts check` concludes from host answers (pure): one check per row, a fix per failure."""

from __future__ import annotations

from typing import Any

from kernelfleet.specs.installer import row_for
from kernelfleet.specs.verdicts import (
    CheckSettings,
    HostReport,
    failure_lines,
    master_addresses,
    record_clock,
    record_ports,
    record_probe,
    record_spec,
    spec_facts,
    summary_rows,
)
from kernelfleet.transport.agent_client import SSHTarget
from kernelfleet.transport.protocol import PortRange


def test_facts_of_a_foreign_spec_and_of_ours() -> None:
    foreign = row_for(
        "py",
        "/k/py",
        {
            "argv": [
                "/opt/py/bin/python",
                "-m",
                "ipykernel_launcher",
                "-f",
                "{connection_file}",
                "--IPKernelApp.kernel_class=my.kernels.K",
            ],
            "language": "python",
        },
    )
    facts = spec_facts(foreign, {})
    assert facts.python == "/opt/py/bin/python"
    assert facts.modules == ("ipykernel", "my.kernels")
    assert facts.spark_home is None and not facts.r
    r = spec_facts(row_for("r", "/k/r", {"argv": ["R"], "language": "R"}), {})
    assert r.r and r.python is None and r.modules == ()


def test_master_addresses() -> None:
    assert master_addresses("spark://a:7077,b:7078") == [("a", 7077), ("b", 7078)]
    assert master_addresses("yarn") == []
    assert master_addresses(None) == []


def test_clock_skew_beyond_the_limit_fails_with_a_fix() -> None:
    rep = HostReport("h")
    record_clock(rep, CheckSettings(max_clock_skew=2.0), (100.0, 100.2, (0, "110.1\n", "")))
    (check,) = rep.checks
    assert check.status == "fail" and "+10.00 s" in check.detail and "chrony" in check.fix
    rep = HostReport("h")
    record_clock(rep, CheckSettings(), (100.0, 100.2, (0, "100.3\n", "")))
    assert rep.checks[0].status == "ok"


def test_ports_and_a_failing_probe() -> None:
    rep = HostReport("h")
    settings = CheckSettings(port_range=PortRange(40000, 40049))
    record_ports(rep, settings, {"ports": {"free": 3, "tried": 50, "size": 50}})
    assert rep.checks[0].status == "fail" and "widen port_range" in rep.checks[0].fix
    rep = HostReport("h")
    answer = record_probe(rep, SSHTarget("h"), (127, "", "python3: not found"))
    assert answer is None
    assert rep.checks[0].status == "fail" and "KF_AGENT_PYTHON" in rep.checks[0].fix


def test_spec_differences_are_named_and_the_table_and_fix_lines_show_them() -> None:
    facts = spec_facts(
        row_for("k", "/k/k", {"argv": ["py"], "language": "python"}),
        {"kernel.json": ["aa", 0o644], "bin/run.sh": ["bb", 0o755]},
    )
    rep = HostReport("h1")
    answer: dict[str, Any] = {"manifest": {"kernel.json": ["zz", 0o644], "x": ["cc", 0o644]}}
    record_spec(rep, facts, answer)
    check = rep.checks[0]
    assert check.status == "fail"
    assert "differs: kernel.json" in check.detail and "missing: bin/run.sh" in check.detail
    assert "extra: x" in check.detail
    assert check.fix == "kernelfleet spec sync k --hosts h1"
    assert summary_rows([rep])[0][:2] == ["h1", "NOT READY"]
    assert failure_lines([rep])[1] == "    fix: kernelfleet spec sync k --hosts h1"
