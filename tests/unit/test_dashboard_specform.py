"""The dashboard's kernelspec form (pure): the fields follow the spec kinds, a valid form makes the
same options as ``kernelfleet spec install``, and each mistake gets a message on its own field
that says what to fix."""

from __future__ import annotations

import sys

import pytest

from kernelfleet.dashboard import specform
from kernelfleet.specs import builders
from kernelfleet.specs.kinds import KINDS


def form(**values: str) -> dict[str, str]:
    base = {"kind": "ssh", "language": "python", "python": sys.executable}
    base.update(values)
    return base


def test_every_kind_and_every_option_of_it_has_a_field() -> None:
    for kind, cls in KINDS.items():
        names = {f.option for f in specform.kind_fields(kind)}
        assert names == set(cls.option_traits()), kind
    ssh = {f.option: f for f in specform.kind_fields("ssh")}
    assert ssh["remote_hosts"].widget == "list"
    assert ssh["remote_hosts"].name == "ssh__remote_hosts"
    assert "Environment variable" not in ssh["remote_hosts"].help


def test_a_valid_form_makes_the_options_the_install_command_would() -> None:
    result = specform.parse_form(
        form(
            kernel_name="fleet_py",
            display_name="Python on the fleet",
            authorized_users="alice, bob\ncarol",
            launch_timeout="90",
            ssh__remote_hosts="host1\nhost2",
            ssh__load_balancing_algorithm="least-connection",
        )
    )
    assert result.ok, result.errors
    opts = result.options
    assert opts is not None
    assert (opts.kind, opts.name, opts.display_name) == ("ssh", "fleet_py", "Python on the fleet")
    assert opts.authorized_users == ("alice", "bob", "carol")
    assert opts.launch_timeout == 90.0
    assert opts.kind_options["remote_hosts"] == ("host1", "host2")
    kernel = builders.build_kernel_json(opts, "/k/fleet_py")
    config = kernel["metadata"]["kernel_provisioner"]["config"]
    assert config["remote_hosts"] == ["host1", "host2"]
    assert config["load_balancing_algorithm"] == "least-connection"


@pytest.mark.parametrize(
    ("values", "field", "says"),
    [
        ({"kernel_name": "bad name!"}, "kernel_name", "'Kernel name' 'bad name!' is not valid"),
        ({"ssh__remote_hosts": "ok-host\nno host!"}, "ssh__remote_hosts", "not a host name"),
        ({"launch_timeout": "soon"}, "launch_timeout", "must be a number"),
        ({"launch_timeout": "-5"}, "launch_timeout", "positive number of seconds"),
        ({"authorized_users": "alice, bad user"}, "authorized_users", "not a user name"),
        ({"language": "cobol"}, "language", "is not supported"),
        ({"python": ""}, "python", "must name the interpreter"),
        ({"ssh__port_range": "9000..8000"}, "ssh__port_range", "'Port range' '9000..8000'"),
        ({"kind": "mainframe"}, "kind", "Choose a backend"),
    ],
)
def test_each_mistake_gets_a_message_on_its_field(
    values: dict[str, str], field: str, says: str
) -> None:
    result = specform.parse_form(form(**values))
    assert not result.ok
    assert field in result.errors, result.errors
    assert says in result.errors[field]
    assert "--" not in result.errors[field]  # the form's labels, not the command's flags


def test_a_taken_name_is_refused_for_a_new_spec_only() -> None:
    taken = specform.parse_form(form(kernel_name="python3"), existing=frozenset({"python3"}))
    assert "already exists" in taken.errors["kernel_name"]
    assert specform.parse_form(form(kernel_name="python3")).ok


def test_the_values_typed_come_back_with_the_errors() -> None:
    result = specform.parse_form(
        form(kernel_name="bad name!", display_name="<b>mine</b>", ssh__remote_hosts="h1, h2")
    )
    assert result.values["display_name"] == "<b>mine</b>"  # the template escapes it
    assert result.values["ssh__remote_hosts"] == ["h1", "h2"]


def test_field_errors_name_the_first_flag_that_is_a_field() -> None:
    fields = specform.all_fields("ssh")
    name, text = specform.field_error(
        "--hadoop-conf-dir applies to Spark kernels on YARN only: pass --spark with "
        "--spark-master yarn",
        fields,
    )
    assert name == "ssh__hadoop_conf_dir"
    assert text.startswith("'Hadoop conf dir' applies") and "'Spark master' yarn" in text
    assert specform.field_error("something odd", fields) == ("", "Something odd.")


def test_an_installed_spec_fills_the_edit_form_and_round_trips() -> None:
    first = specform.parse_form(
        form(kernel_name="k1", ssh__remote_hosts="h1,h2", unauthorized_users="eve")
    )
    assert first.options is not None
    kernel_json = builders.build_kernel_json(first.options, "/k/k1")
    values = specform.values_from_spec(kernel_json)
    assert values is not None
    assert values["kind"] == "ssh" and values["ssh__remote_hosts"] == ["h1", "h2"]
    assert values["unauthorized_users"] == ["eve"]
    again = specform.parse_form(
        {
            k: "\n".join(v) if isinstance(v, list) else str(v)
            for k, v in values.items()
            if v not in (False, "", [])
        }
        | {"kernel_name": "k1"}
    )
    assert again.ok, again.errors
    assert builders.build_kernel_json(again.options, "/k/k1") == kernel_json  # type: ignore[arg-type]


def test_a_spec_not_written_by_the_installer_is_not_editable() -> None:
    stock = {"argv": ["python", "-m", "ipykernel_launcher"], "display_name": "Python 3"}
    assert specform.values_from_spec(stock) is None
