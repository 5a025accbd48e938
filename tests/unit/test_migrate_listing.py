"""`kernelfleet spec list` tells an Enterprise Gateway or Gateway Provisioners kernelspec apart."""

from __future__ import annotations

from kernelfleet.specs.installer import row_for

EG_SPEC = {
    "display_name": "Python (distributed)",
    "language": "python",
    "metadata": {
        "process_proxy": {
            "class_name": "enterprise_gateway.services.processproxies.distributed."
            "DistributedProcessProxy",
            "config": {"remote_hosts": "h1,h2"},
        }
    },
    "argv": ["python", "/k/python_distributed/scripts/launch_ipykernel.py"],
}


def test_an_eg_spec_is_listed_as_not_migrated_with_its_hosts() -> None:
    row = row_for("python_distributed", "/k/python_distributed", EG_SPEC)
    assert row.provisioner == "DistributedProcessProxy (not migrated)"


def test_a_gp_spec_is_listed_as_not_migrated() -> None:
    spec = {
        "argv": ["python", "/k/ssh_python/scripts/launch_ipykernel.py"],
        "metadata": {"kernel_provisioner": {"provisioner_name": "distributed-provisioner"}},
    }
    row = row_for("ssh_python", "/k/ssh_python", spec)
    assert row.provisioner == "distributed-provisioner (not migrated)"


def test_a_kernelfleet_spec_keeps_its_provisioner_name() -> None:
    spec = {
        "argv": ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "metadata": {"kernel_provisioner": {"provisioner_name": "kernelfleet-ssh"}},
    }
    assert row_for("x", "/k/x", spec).provisioner == "kernelfleet-ssh"
