"""The YARN backend's pure parts: request values, the spark-submit it builds, RM answers."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernelfleet.errors import BadRequest, Forbidden, PublicError
from kernelfleet.launchers.kernel_launcher import decode_kernel_env
from kernelfleet.provisioners.yarn_options import endpoints_from_site, parse_site
from kernelfleet.provisioners.yarn_submit import (
    SAFE_VALUE,
    Limits,
    Resources,
    encode_env,
    kernel_tags,
    memory_mb,
    properties_text,
    resources,
    submission,
    submitted_app_id,
)
from kernelfleet.transport.yarn_rest import (
    AppReport,
    describe_queue,
    parse_app,
    parse_apps,
    parse_queues,
)

KID = "0b6f9c1e-2a3b-4c5d-8e9f-0123456789ab"


def submit(**over: Any) -> Any:
    args: dict[str, Any] = {
        "spark_submit": "/opt/spark/bin/spark-submit",
        "kernel_id": KID,
        "launcher": "/x/kernel_launcher.py",
        "files": ["/spec/scripts/spark_kernel.py"],
        "py_files": ["/x/respond.py"],
        "kernel_argv": [
            "/usr/bin/python3",
            "spark_kernel.py",
            "--connection-file",
            "{connection_file}",
        ],
        "python": "/usr/bin/python3",
        "resources": Resources("default", {"spark.driver.memory": "512m"}),
        "spark_conf": {"spark.yarn.jars": "local:/opt/spark/jars/*"},
        "response_env": {
            "KF_RESPONSE_ADDRESS": "10.0.0.1:8877",
            "KF_RESPONSE_KEY": base64.b64encode(b"k" * 32).decode(),
            "KF_RESPONSE_KERNEL_ID": KID,
        },
        "kernel_env": {"KERNEL_USERNAME": "alice", "KERNEL_X": '$(touch /tmp/pwned)"; id'},
        "submit_env": {"HADOOP_CONF_DIR": "/etc/hadoop/conf"},
        "tags": kernel_tags(KID),
        "ready_timeout": 30.0,
    }
    args.update(over)
    return submission(**args)


def test_the_response_key_and_the_users_values_never_reach_the_argv() -> None:
    sub = submit()
    text = " ".join(sub.argv)
    assert "KF_RESPONSE_KEY" not in text and base64.b64encode(b"k" * 32).decode() not in text
    assert "pwned" not in text and "alice" not in text
    assert sub.argv[:5] == [
        "/opt/spark/bin/spark-submit",
        "--master",
        "yarn",
        "--deploy-mode",
        "cluster",
    ]
    assert sub.argv[sub.argv.index("--name") + 1] == KID
    assert "{properties_file}" in sub.argv


def test_every_container_variable_is_safe_inside_a_launch_scripts_double_quotes() -> None:
    sub = submit()
    env = {k: v for k, v in sub.properties.items() if k.startswith("spark.yarn.appMasterEnv.")}
    assert env, "the launcher needs its variables"
    for value in env.values():
        assert SAFE_VALUE.match(value), value
    blob = env["spark.yarn.appMasterEnv.KF_KERNEL_ENV"]
    assert decode_kernel_env(blob)["KERNEL_X"] == '$(touch /tmp/pwned)"; id'


def test_a_launcher_is_never_run_again_by_yarn_and_the_app_carries_the_kernel_tag() -> None:
    props = submit().properties
    assert props["spark.yarn.maxAppAttempts"] == "1"
    assert props["spark.yarn.submit.waitAppCompletion"] == "false"
    assert f"kf-kernel-{KID}" in props["spark.yarn.tags"].split(",")
    assert props["spark.yarn.jars"] == "local:/opt/spark/jars/*"


def test_a_proxy_user_is_given_to_spark_submit_and_must_be_a_user_name() -> None:
    assert "--proxy-user" in submit(proxy_user="alice").argv
    with pytest.raises(BadRequest):
        submit(proxy_user="alice;id")


def test_an_unsafe_python_path_is_refused() -> None:
    with pytest.raises(BadRequest, match="python"):
        submit(python='/usr/bin/python3"$(id)"')


@pytest.mark.parametrize(
    ("text", "mb"), [("512m", 512), ("2g", 2048), ("1024", 1024), ("1t", 1 << 20), ("2048k", 2)]
)
def test_memory_sizes_read_like_spark_reads_them(text: str, mb: int) -> None:
    assert memory_mb(text, "x") == mb


def test_request_values_override_the_kernelspecs_within_its_limits() -> None:
    limits = Limits(queue="default", allowed_queues=("default", "alt"), max_memory_mb=2048)
    env = {
        "KERNEL_YARN_QUEUE": "alt",
        "KERNEL_DRIVER_MEMORY": "1g",
        "KERNEL_NUM_EXECUTORS": "0",
        "KERNEL_EXTRA_SPARK_OPTS": "--conf spark.sql.shuffle.partitions=4 --executor-cores 2",
    }
    res = resources({"spark.driver.memory": "512m"}, limits, env)
    assert res.queue == "alt"
    assert res.conf == {
        "spark.driver.memory": "1024m",
        "spark.executor.instances": "0",
        "spark.sql.shuffle.partitions": "4",
        "spark.executor.cores": "2",
    }


@pytest.mark.parametrize(
    ("env", "error", "words"),
    [
        ({"KERNEL_YARN_QUEUE": "prod"}, Forbidden, "not allowed"),
        ({"KERNEL_YARN_QUEUE": "a;b"}, BadRequest, "queue name"),
        ({"KERNEL_DRIVER_MEMORY": "64g"}, Forbidden, "more than"),
        ({"KERNEL_DRIVER_MEMORY": "lots"}, BadRequest, "memory size"),
        ({"KERNEL_EXECUTOR_CORES": "99"}, BadRequest, "out of range"),
        (
            {"KERNEL_EXTRA_SPARK_OPTS": "--conf spark.driver.extraJavaOptions=-Dx"},
            Forbidden,
            "may not",
        ),
        ({"KERNEL_EXTRA_SPARK_OPTS": "--jars /etc/passwd"}, Forbidden, "may not"),
        ({"KERNEL_EXTRA_SPARK_OPTS": "--master local"}, BadRequest, "--master"),
        ({"KERNEL_EXTRA_SPARK_OPTS": "--conf spark.sql.x=$(id)"}, BadRequest, "characters"),
    ],
)
def test_bad_request_values_are_refused_with_the_cause_first(
    env: dict[str, str], error: type[PublicError], words: str
) -> None:
    with pytest.raises(error, match=re.escape(words)):
        resources({}, Limits(max_memory_mb=8192, max_cores=8), env)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "KERNEL_YARN_QUEUE",
                "KERNEL_DRIVER_MEMORY",
                "KERNEL_DRIVER_CORES",
                "KERNEL_EXECUTOR_MEMORY",
                "KERNEL_EXECUTOR_CORES",
                "KERNEL_NUM_EXECUTORS",
                "KERNEL_EXTRA_SPARK_OPTS",
            ]
        ),
        st.text(max_size=60),
    )
)
def test_any_request_values_give_safe_settings_or_a_clear_error(env: dict[str, str]) -> None:
    try:
        res = resources({}, Limits(allowed_queues=("default", "alt")), env)
    except PublicError as exc:
        assert exc.status in (400, 403) and str(exc)
        return
    assert res.queue in ("default", "alt")
    for key, value in res.conf.items():
        assert key.startswith("spark.") and SAFE_VALUE.match(value), (key, value)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1), st.text()))
def test_properties_text_round_trips_through_javas_format(props: dict[str, str]) -> None:
    assert _java_properties_load(properties_text(props)) == props


def _java_properties_load(text: str) -> dict[str, str]:
    """A reader of what properties_text writes (one logical line per entry, escapes)."""
    out: dict[str, str] = {}
    for line in text.split("\n")[:-1]:
        chars, i, key, value, in_key = line, 0, [], [], True
        while i < len(chars):
            ch = chars[i]
            if ch == "\\":
                nxt = chars[i + 1]
                if nxt == "u":
                    unit = int(chars[i + 2 : i + 6], 16)
                    (key if in_key else value).append(chr(unit))
                    i += 6
                    continue
                (key if in_key else value).append(
                    {"n": "\n", "r": "\r", "t": "\t", "f": "\f"}.get(nxt, nxt)
                )
                i += 2
                continue
            if ch == "=" and in_key:
                in_key = False
            else:
                (key if in_key else value).append(ch)
            i += 1
        k = "".join(key).encode("utf-16", "surrogatepass").decode("utf-16")
        v = "".join(value).encode("utf-16", "surrogatepass").decode("utf-16")
        out[k] = v
    return out


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1).filter(lambda k: "=" not in k and "\0" not in k),
        st.text().filter(lambda v: "\0" not in v),
    )
)
def test_the_kernel_env_blob_is_shell_safe_and_round_trips(env: dict[str, str]) -> None:
    blob = encode_env(env)
    assert SAFE_VALUE.match(blob) or len(blob) > 4096
    assert decode_kernel_env(blob) == env


@pytest.mark.parametrize(
    "blob", ["!!", base64.b64encode(b"[1]").decode(), base64.b64encode(b'{"A": 1}').decode()]
)
def test_a_bad_kernel_env_blob_is_an_error(blob: str) -> None:
    with pytest.raises(ValueError):
        decode_kernel_env(blob)


def test_the_application_id_is_read_from_spark_submits_output() -> None:
    line = "25/12/03 INFO Client: Submitted application application_1764770000000_0042"
    assert submitted_app_id(line) == "application_1764770000000_0042"
    assert submitted_app_id("INFO Client: Requesting a new application") is None


# -- RM answers -------------------------------------------------------------------------------

APP = {
    "id": "application_1764770000000_0042",
    "state": "RUNNING",
    "finalStatus": "UNDEFINED",
    "applicationTags": f"kernelfleet,kf-kernel-{KID}",
    "amHostHttpAddress": "10.91.0.11:8042",
    "amContainerLogs": "http://10.91.0.11:8042/node/containerlogs/container_1764770000000_0042_01_000001/root",
    "trackingUrl": "http://10.91.0.1:8088/proxy/application_1764770000000_0042/",
    "queue": "default",
    "user": "alice",
}


def test_an_app_report_names_its_driver_host_container_and_tags() -> None:
    report = parse_app(APP)
    assert report is not None and report.live and report.exit_code is None
    assert report.am_host == "10.91.0.11"
    assert report.am_container == (
        "http://10.91.0.11:8042",
        "container_1764770000000_0042_01_000001",
    )
    assert f"kf-kernel-{KID}" in report.tags
    assert parse_apps({"apps": {"app": [APP, {"id": "nope"}]}}) == [report]
    assert parse_apps({"apps": None}) == []


@pytest.mark.parametrize(
    ("state", "final", "code"),
    [
        ("FINISHED", "SUCCEEDED", 0),
        ("FAILED", "FAILED", 1),
        ("KILLED", "KILLED", -9),
        ("FINISHED", "FAILED", 1),
    ],
)
def test_an_ended_app_has_an_exit_code(state: str, final: str, code: int) -> None:
    assert AppReport(id="application_1_1", state=state, final_status=final).exit_code == code


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_parses_to_reports_or_nothing(body: Any) -> None:
    for wrapped in (body, {"apps": {"app": body}}, {"apps": {"app": [body]}}, {"app": body}):
        parse_apps(wrapped)
        parse_app(wrapped)
        queues = parse_queues({"scheduler": {"schedulerInfo": {"queues": {"queue": [body]}}}})
        for name, queue in queues.items():
            assert describe_queue(queue, name)


def test_queues_are_found_at_any_depth_and_described() -> None:
    body = {
        "scheduler": {
            "schedulerInfo": {
                "queues": {
                    "queue": [
                        {
                            "queueName": "alt",
                            "queuePath": "root.alt",
                            "state": "RUNNING",
                            "capacity": 30.0,
                            "maxCapacity": 30.0,
                            "usedCapacity": 99.5,
                            "numActiveApplications": 2,
                            "numPendingApplications": 1,
                            "AMResourceLimit": {"memory": 2048},
                            "usedAMResource": {"memory": 2048},
                        }
                    ]
                }
            }
        }
    }
    queues = parse_queues(body)
    assert queues["alt"] is queues["root.alt"]
    text = describe_queue(queues["alt"], "alt")
    assert "100% of its 30% capacity" in text and "1 waiting" in text and "2048 of 2048 MB" in text
    assert "no queue 'x'" in describe_queue(None, "x")


def test_endpoints_come_from_yarn_site_for_one_rm_and_for_ha() -> None:
    single = parse_site(
        "<configuration><property><name>yarn.resourcemanager.hostname</name>"
        "<value>rm.example</value></property></configuration>"
    )
    assert endpoints_from_site(single) == ["http://rm.example:8088"]
    ha = {
        "yarn.resourcemanager.ha.enabled": "true",
        "yarn.resourcemanager.ha.rm-ids": "rm1,rm2",
        "yarn.resourcemanager.hostname.rm1": "a",
        "yarn.resourcemanager.webapp.address.rm2": "b:18088",
    }
    assert endpoints_from_site(ha) == ["http://a:8088", "http://b:18088"]
    assert endpoints_from_site(
        {"yarn.http.policy": "HTTPS_ONLY", "yarn.resourcemanager.hostname": "a"}
    ) == ["https://a:8090"]
    assert parse_site("not xml") == {}
    assert json.dumps(endpoints_from_site({}))  # nothing configured: no endpoint


def test_a_drivers_log_is_cut_to_the_lines_that_say_what_went_wrong() -> None:
    from kernelfleet.provisioners.yarn import log_excerpt

    log = "\n".join(
        [
            "26/12/03 INFO ApplicationMaster: Registered",
            "kernelfleet launcher: the kernel exited with status 2 during startup",
            "Exception in thread main org.apache.spark.SparkUserAppException: exited with 4",
            "\tat org.apache.spark.deploy.PythonRunner$.main(PythonRunner.scala:127)",
            "26/12/03 INFO ApplicationMaster: Deleting staging directory",
        ]
    )
    text = log_excerpt(log)
    assert "exited with status 2" in text and "SparkUserAppException" in text
    assert "PythonRunner.scala" not in text  # stack frames say nothing to a user
    assert log_excerpt("just\nsome\nlines") == "just | some | lines"


@pytest.mark.parametrize(
    ("argv", "python"),
    [
        (["/opt/py/bin/python3", "spark_kernel.py"], "/opt/py/bin/python3"),
        (["python3.11", "-m", "ipykernel_launcher"], "python3.11"),
        (["R", "--slave"], "python3"),
        (["/bin/sh", "-c", "exec python -m ipykernel"], "python3"),
        ([], "python3"),
    ],
)
def test_the_drivers_python_is_the_kernels_when_the_kernel_is_python(
    argv: list[str], python: str
) -> None:
    from kernelfleet.provisioners.yarn import YarnProvisioner

    assert YarnProvisioner(kernel_id=KID)._python(argv) == python
    assert YarnProvisioner(kernel_id=KID, python="/x/py")._python(argv) == "/x/py"
