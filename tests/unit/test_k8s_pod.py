"""The Kubernetes backend's pure parts: request values, the pod template, manifests, pod status."""

from __future__ import annotations

import base64
import contextlib
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernelfleet.errors import BadRequest, Forbidden, LaunchFailed
from kernelfleet.provisioners import k8s_pod as kp
from kernelfleet.provisioners import k8s_status as ks
from kernelfleet.provisioners.k8s_pod import Limits, PodParams, Volume
from kernelfleet.provisioners.k8s_status import PodView

KID = "0b6f9c1e-2a3b-4c5d-8e9f-0123456789ab"
IMAGE = "kernelfleet.test/kernel-python:0.1.0"
OTHER = "kernelfleet.test/kernel-r:0.1.0"
LIMITS = Limits(max_cpus=4, max_memory="8Gi", max_gpus=2)
SECRET = {"KF_RESPONSE_KEY": ("kf-x-response", "key")}
# What a value must look like to be pasted anywhere in YAML, written independently of the module.
SAFE_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?[A-Za-z]{0,2}", re.ASCII)
SAFE_DIR = re.compile(r"/[A-Za-z0-9._@+=/-]*", re.ASCII)
LABEL = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
DNS = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def params(env: dict[str, str] | None = None, **over: Any) -> PodParams:
    args: dict[str, Any] = {
        "kernel_id": KID,
        "kernel_name": "python3",
        "pod_name": kp.pod_name(KID, 0),
        "namespace": "kernels",
        "image": IMAGE,
        "allowed_images": [OTHER],
        "uid": 2001,
        "gid": 2001,
        "limits": LIMITS,
        "gpu_resource": "nvidia.com/gpu",
        "volumes": (),
        "username": "alice",
    }
    return kp.request_params(env or {}, **(args | over))


def finished(p: PodParams, template: str = kp.DEFAULT_TEMPLATE, **env: str) -> dict[str, Any]:
    return kp.finish_pod(kp.render_template(template, p), p, ["python3", "/l.py"], env, SECRET)


def kernel(pod: dict[str, Any]) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in pod["spec"]["containers"] if c["name"] == "kernel"]
    (c,) = found
    return c


# -- request_params ------------------------------------------------------------------------------


def test_valid_request_values_reach_the_params_and_defaults_fill_the_rest() -> None:
    wd = "/srv/a.b@c+d=e-f/"
    env = {"KERNEL_CPUS": " 500m ", "KERNEL_MEMORY": "512Mi", "KERNEL_GPUS": "2"}
    p = params(env | {"KERNEL_WORKING_DIR": wd, "KERNEL_IMAGE": OTHER})
    assert (p.cpus, p.memory, p.gpus, p.working_dir, p.image) == ("500m", "512Mi", 2, wd, OTHER)
    p = params({"KERNEL_CPUS": "4", "KERNEL_MEMORY": "8Gi", "KERNEL_IMAGE": IMAGE})  # at the max
    assert (p.cpus, p.memory, p.image) == ("4", "8Gi", IMAGE)  # the default image needs no list
    p = params(limits=Limits(cpus="1", memory="1G"))
    assert (p.cpus, p.memory, p.gpus, p.working_dir, p.image) == ("1", "1G", 0, "", IMAGE)
    assert (p.uid, p.gid, p.username, p.namespace) == (2001, 2001, "alice", "kernels")


@pytest.mark.parametrize(
    ("var", "value", "error", "fix"),
    [
        ("KERNEL_CPUS", "two", BadRequest, "give e.g. 0.5"),
        ("KERNEL_CPUS", "1e3", BadRequest, "give e.g. 0.5"),
        ("KERNEL_CPUS", "-1", BadRequest, "give e.g. 0.5"),
        ("KERNEL_CPUS", "0", BadRequest, "at most 4"),
        ("KERNEL_CPUS", "4.5", BadRequest, "at most 4"),
        ("KERNEL_MEMORY", "2GB", BadRequest, "give e.g. 512Mi"),
        ("KERNEL_MEMORY", "9Gi", BadRequest, "from 1Mi to 8Gi"),
        ("KERNEL_MEMORY", "1Ki", BadRequest, "from 1Mi to 8Gi"),
        ("KERNEL_GPUS", "3", BadRequest, "allows (2)"),
        ("KERNEL_GPUS", "1.5", BadRequest, "give e.g. 1"),
        ("KERNEL_GPUS", "0001", BadRequest, "give e.g. 1"),
        ("KERNEL_GPUS", "\u00b2", BadRequest, "give e.g. 1"),  # a digit to isdigit, not to int
        ("KERNEL_GPUS", "\u0661", BadRequest, "give e.g. 1"),  # an Arabic-Indic one
        ("KERNEL_WORKING_DIR", "home/alice", BadRequest, "give an absolute path"),
        ("KERNEL_WORKING_DIR", "/home/../etc", BadRequest, "give an absolute path"),
        ("KERNEL_WORKING_DIR", "//etc", BadRequest, "give an absolute path"),
        ("KERNEL_WORKING_DIR", "/x\nspec: {}", BadRequest, "give an absolute path"),
        ("KERNEL_WORKING_DIR", "/x'y", BadRequest, "give an absolute path"),
        ("KERNEL_WORKING_DIR", "/x: y", BadRequest, "give an absolute path"),
        ("KERNEL_IMAGE", "evil.test/miner:latest", Forbidden, "choose one of"),
        # a long value leaves the cause and the fix in the first 110 characters
        ("KERNEL_CPUS", "9" * 500, BadRequest, "at most 4"),
        ("KERNEL_CPUS", "x" * 500, BadRequest, "give e.g."),
        ("KERNEL_MEMORY", "9" * 500, BadRequest, "from 1Mi"),
        ("KERNEL_MEMORY", "x" * 500, BadRequest, "give e.g."),
        ("KERNEL_GPUS", "x" * 500, BadRequest, "give e.g."),
        ("KERNEL_WORKING_DIR", "/" + "a" * 500, BadRequest, "give an absolute path"),
        ("KERNEL_IMAGE", "x" * 500, Forbidden, "choose one of"),
    ],
)
def test_a_bad_request_value_is_refused_naming_the_variable_cause_and_fix(
    var: str, value: str, error: type[Exception], fix: str
) -> None:
    with pytest.raises(error) as info:
        params({var: value})
    assert type(info.value) is error
    assert str(info.value).startswith(f"{var} ") and fix in str(info.value)[:110]


@pytest.mark.timeout(5)
def test_a_working_dir_built_to_make_the_regex_backtrack_is_refused_at_once() -> None:
    for n in (30, 60, 250):  # was 2**n steps in a nested-quantifier regex: a hung event loop
        with pytest.raises(BadRequest, match="KERNEL_WORKING_DIR"):
            params({"KERNEL_WORKING_DIR": "/" + "a" * n + "!"})


def test_no_gpu_and_no_other_image_where_the_admin_allows_none() -> None:
    with pytest.raises(BadRequest, match=r"KERNEL_GPUS 1 is more than .* allows \(0\)"):
        params({"KERNEL_GPUS": "1"}, limits=Limits())
    with pytest.raises(Forbidden, match=f"choose one of {IMAGE}"):
        params({"KERNEL_IMAGE": OTHER}, allowed_images=[])


def test_per_user_volumes_get_the_users_name_and_a_valid_claim_name() -> None:
    vols = (
        Volume("home", "/home/{username}", host_path="/srv/home/{username}"),
        Volume("data", "/data", claim="data-{username}", read_only=True),
    )
    assert params(volumes=vols, username="a_b.c").volumes == (
        Volume("home", "/home/a_b.c", host_path="/srv/home/a_b.c"),
        Volume("data", "/data", claim="data-a-b-c", read_only=True),
    )
    with pytest.raises(BadRequest, match=r"^the mount path needs KERNEL_USERNAME"):
        params(volumes=vols, username="")


VALUES = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"\s?[0-9]{1,4}(\.[0-9]{1,3})?(m|k|Mi|Gi|G|Ti|)\s?", fullmatch=True),
    st.from_regex(r"/[A-Za-z0-9._@+=/:'\"\n #{}-]{0,30}", fullmatch=True),
    st.sampled_from([IMAGE, OTHER, f" {OTHER}\n", "/a/../b", "0", "2", "1\n", "8Gi"]),
)
VARS = ("KERNEL_CPUS", "KERNEL_MEMORY", "KERNEL_GPUS", "KERNEL_WORKING_DIR", "KERNEL_IMAGE")


@settings(max_examples=500, deadline=None)
@given(st.fixed_dictionaries({}, optional=dict.fromkeys(VARS, VALUES)))
def test_any_request_values_are_refused_or_become_safe_params(env: dict[str, str]) -> None:
    try:
        p = params(env)
    except (BadRequest, Forbidden) as exc:
        assert str(exc).split(" ", 1)[0] in env
        return
    assert all(v == "" or SAFE_QUANTITY.fullmatch(v) for v in (p.cpus, p.memory))
    assert p.cpus == "" or 0 < kp.quantity(p.cpus) <= LIMITS.max_cpus
    assert p.memory == "" or 2**20 <= kp.quantity(p.memory) <= kp.quantity(LIMITS.max_memory)
    assert 0 <= p.gpus <= LIMITS.max_gpus and p.image in (IMAGE, OTHER)
    assert p.working_dir == "" or SAFE_DIR.fullmatch(p.working_dir)
    assert ".." not in p.working_dir.split("/") and len(p.working_dir) <= 255


# -- the template --------------------------------------------------------------------------------


def test_the_default_template_renders_a_pod_of_the_params() -> None:
    pod = kp.render_template(kp.DEFAULT_TEMPLATE, params())
    assert (pod["apiVersion"], pod["kind"]) == ("v1", "Pod")
    assert pod["metadata"]["annotations"] == {"kernelfleet.io/kernelspec": "python3"}
    (c,) = pod["spec"]["containers"]
    assert c["image"] == IMAGE and "workingDir" not in c
    pod = kp.render_template(kp.DEFAULT_TEMPLATE, params({"KERNEL_WORKING_DIR": "/w"}))
    assert pod["spec"]["containers"][0]["workingDir"] == "/w"


HOSTILE_TEMPLATE = """\
metadata: {labels: {who: {{ username }}}}
spec:
  containers:
    - name: kernel
      workingDir: {{ working_dir }}
      env: [{name: X, value: {{ kernel_name }}}]
"""


def assert_one_scalar(text: str, strict: bool = True) -> None:
    hostile = PodParams(KID, text, "p", "ns", IMAGE, username=text, working_dir=text)
    for template in (HOSTILE_TEMPLATE, kp.DEFAULT_TEMPLATE):
        pod = kp.render_template(template, hostile)
        assert set(pod) <= {"apiVersion", "kind", "metadata", "spec"}
        (c,) = pod["spec"]["containers"]
        assert set(c) <= {"name", "image", "imagePullPolicy", "env", "workingDir"}
        assert c["name"] == "kernel" and all(set(e) == {"name", "value"} for e in c["env"])
        if template is HOSTILE_TEMPLATE:
            assert set(pod["metadata"]) == {"labels"} and set(pod["metadata"]["labels"]) == {"who"}
            scalars = [c["workingDir"], c["env"][0]["value"], pod["metadata"]["labels"]["who"]]
            assert all(isinstance(s, str) for s in scalars)
            assert not strict or scalars == [text] * 3


def test_a_value_full_of_yaml_stays_one_scalar_in_the_template() -> None:
    assert_one_scalar('x\nspec:\n  hostNetwork: true\n"a": [b, {c: d}] # e\n- f: &g *h !!i |')
    assert_one_scalar("}}, privileged: true, x: {{")


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(codec="utf-8"), max_size=60))
def test_any_string_value_stays_one_scalar_in_the_template(text: str) -> None:
    # outside the BMP the JSON literal's surrogate pair comes back as two code points: the
    # structure holds, the value differs (no validated parameter can hold such a character)
    assert_one_scalar(text, strict=all(ord(ch) <= 0xFFFF for ch in text))


@pytest.mark.parametrize(
    "template",
    [
        "spec: {{ image",  # bad Jinja
        "spec: [a, {b",  # bad YAML
        "- a\n- b",  # not a mapping
        "spec: {{ no_such_value }}",  # undefined variable
        "spec: [1]",  # a spec that is not a mapping
        "spec: {{ image.__class__.__mro__[1].__subclasses__() }}",  # the sandbox
    ],
)
def test_a_broken_template_fails_the_launch_naming_the_template(template: str) -> None:
    with pytest.raises(LaunchFailed) as info:
        kp.render_template(template, params())
    assert str(info.value).startswith("Kernel 'python3' not started: its pod template")
    assert str(info.value).endswith("Fix the kernelspec's pod template.")


# -- finish_pod ----------------------------------------------------------------------------------


def test_the_finished_pod_has_everything_the_gateway_relies_on() -> None:
    env = {"KERNEL_CPUS": "2", "KERNEL_MEMORY": "1Gi", "KERNEL_GPUS": "1"}
    pod = finished(params(env), HOME="/home/alice", KERNEL_USERNAME="alice")
    meta, spec, c = pod["metadata"], pod["spec"], kernel(pod)
    assert (meta["name"], meta["namespace"]) == (f"kf-{KID}", "kernels")
    assert meta["labels"] == kp.OWNED | {
        kp.COMPONENT: "kernel",
        kp.LABEL_KERNEL: KID,
        kp.LABEL_SPEC: "python3",
        kp.LABEL_USER: "alice",
    }
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
    psc = {"runAsNonRoot": True, "runAsUser": 2001, "runAsGroup": 2001}
    assert spec["securityContext"] == psc | {"seccompProfile": {"type": "RuntimeDefault"}}
    csc = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert c["securityContext"] == csc and c["command"] == ["python3", "/l.py"]
    secret_ref = {"secretKeyRef": {"name": "kf-x-response", "key": "key"}}
    assert c["env"] == [
        {"name": "HOME", "value": "/home/alice"},  # ours, not the template's /tmp
        {"name": "KERNEL_USERNAME", "value": "alice"},
        {"name": "KF_RESPONSE_KEY", "valueFrom": secret_ref},
    ]
    both = {"cpu": "2", "memory": "1Gi"}
    assert c["resources"] == {"requests": both, "limits": both | {"nvidia.com/gpu": "1"}}


SLOPPY_TEMPLATE = """\
metadata: {name: mine, namespace: elsewhere, generateName: x-, labels: {team: ml}}
spec:
  restartPolicy: Always
  volumes:
  securityContext: {fsGroup: 100, runAsUser: 0}
  containers:
    - name: kernel
      image: latest-whatever
      args: [--oops]
      resources: {limits: {cpu: "1"}}
      env: [{name: TEAM, value: ml}, {name: HOME, value: /tmp}, oops]
      securityContext: {runAsUser: 0, readOnlyRootFilesystem: true}
"""


def test_the_template_keeps_its_extras_but_the_gateway_wins_on_what_it_relies_on() -> None:
    vols = (Volume("home", "/home/{username}", host_path="/srv/{username}", read_only=True),)
    pod = finished(params({"KERNEL_WORKING_DIR": "/w"}, volumes=vols), SLOPPY_TEMPLATE, HOME="/h")
    meta, spec, c = pod["metadata"], pod["spec"], kernel(pod)
    assert (meta["name"], meta["namespace"]) == (f"kf-{KID}", "kernels")
    assert "generateName" not in meta and meta["labels"]["team"] == "ml"
    assert spec["restartPolicy"] == "Never" and spec["securityContext"]["fsGroup"] == 100
    assert spec["securityContext"]["runAsUser"] == 2001  # the user map's uid wins over root
    csc = c["securityContext"]
    assert "runAsUser" not in csc and csc["readOnlyRootFilesystem"] is True
    assert (c["image"], c["workingDir"], "args" in c) == (IMAGE, "/w", False)
    assert c["resources"] == {"limits": {"cpu": "1"}}  # no request values: the template's
    assert [e["name"] for e in c["env"]] == ["TEAM", "HOME", "KF_RESPONSE_KEY"]
    host = {"path": "/srv/alice", "type": "Directory"}
    assert spec["volumes"] == [{"name": "home", "hostPath": host}]
    assert c["volumeMounts"] == [{"name": "home", "mountPath": "/home/alice", "readOnly": True}]
    pod = finished(params(volumes=(Volume("data", "/data", claim="data-{username}"),)))
    claim = {"claimName": "data-alice"}
    assert pod["spec"]["volumes"] == [{"name": "data", "persistentVolumeClaim": claim}]


@pytest.mark.parametrize(
    "template",
    [
        kp.DEFAULT_TEMPLATE,  # with a user map to uid 0
        "spec: {containers: [{name: kernel, securityContext: {privileged: true}}]}",
        "spec: {containers: [{name: kernel}, {name: side, securityContext: {runAsUser: 0}}]}",
        "spec: {containers: [{name: kernel}, {name: side, securityContext: {privileged: true}}]}",
        "spec: {initContainers: [{name: init, securityContext: {privileged: true}}]}",
        "spec: {initContainers: [{name: init, securityContext: {runAsUser: 0}}]}",
        "spec: {hostNetwork: true}",
        "spec: {hostPID: true}",
        "spec: {securityContext: {fsGroup: 0}}",
        "spec: {containers: [{name: kernel, securityContext: {allowPrivilegeEscalation: true}}]}",
        "spec: {containers: [{name: kernel, securityContext: {capabilities: {add: [NET_RAW]}}}]}",
    ],
)
def test_a_pod_that_leaves_the_kernels_sandbox_is_refused(template: str) -> None:
    uid = 0 if template is kp.DEFAULT_TEMPLATE else 2001
    with pytest.raises(LaunchFailed, match=r"'python3' not started: its pod would get .*never"):
        finished(params(uid=uid, gid=uid), template)


# -- the other pure helpers ----------------------------------------------------------------------


def test_parse_volumes_reads_the_admins_list_and_names_a_bad_entry() -> None:
    home = {"name": "home", "mount_path": "/home/{username}", "host_path": "/srv/{username}"}
    data = {"name": "data", "mount_path": "/data", "claim": "shared", "read_only": True}
    assert kp.parse_volumes([home, data]) == (
        Volume("home", "/home/{username}", host_path="/srv/{username}"),
        Volume("data", "/data", claim="shared", read_only=True),
    )
    for entry, why in [
        ("home", "is not an object"),
        ({"name": "Home", "mount_path": "/h", "claim": "c"}, "needs a name"),
        ({"name": "home", "mount_path": "h", "claim": "c"}, "absolute mount_path"),
        ({"name": "home", "mount_path": "/h", "claim": "c", "host_path": "/x"}, "one of"),
        ({"name": "home", "mount_path": "/h"}, "one of"),
    ]:
        with pytest.raises(ValueError, match=r"^volumes\[1\] .*" + why):
            kp.parse_volumes([home, entry])


def test_quantity_reads_the_kubernetes_forms_and_refuses_others() -> None:
    texts = ["500m", "2", " 1.5Gi ", "1k", "1Mi", "1T"]
    assert [kp.quantity(t) for t in texts] == [0.5, 2, 1.5 * 2**30, 1e3, 2**20, 1e12]
    for text in ["", "1e3", "-1", "1 Gi", "0x10", "1Gb", ".5", "\u0661", "1/2"]:
        with pytest.raises(ValueError):
            kp.quantity(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_quantity_of_any_text_is_a_non_negative_number_or_a_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        assert kp.quantity(text) >= 0


def test_label_value_replaces_what_a_label_cannot_hold() -> None:
    texts = ["alice", "alice@example.com", "", "-._", "a" * 70 + "."]
    assert [kp.label_value(t) for t in texts] == ["alice", "alice_example.com", "", "", "a" * 63]


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=100))
def test_label_value_of_any_text_is_a_valid_label_value(text: str) -> None:
    out = kp.label_value(text)
    assert len(out) <= 63 and LABEL.fullmatch(out)


def test_pod_name_is_a_dns_label_per_restart() -> None:
    names = [kp.pod_name(KID, n) for n in (-1, 0, 2, 99)]
    assert names == [f"kf-{KID}", f"kf-{KID}", f"kf-{KID}-r2", f"kf-{KID}-r99"]
    assert all(DNS.fullmatch(n) for n in names)


def pod(phase: str = "Pending", **state: Any) -> dict[str, Any]:
    side = {"name": "side", "state": {"terminated": {"exitCode": 9}}}  # not ours: ignored
    statuses = [{"name": "kernel", "state": state}, side]
    return {"spec": {"nodeName": "n1"}, "status": {"phase": phase, "containerStatuses": statuses}}


def test_an_unschedulable_pod_fails_with_the_schedulers_words() -> None:
    why = "0/3 nodes: Insufficient memory."
    cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": why}
    view = ks.pod_view({"status": {"phase": "Pending", "conditions": [cond]}})
    assert ks.launch_failure(view) == f"the pod cannot be scheduled: {why}"
    assert ks.phase_text(view) == "pending (not yet scheduled)"


@pytest.mark.parametrize(
    ("waiting", "failure"),
    [
        ({"reason": "ErrImagePull", "message": "not found"}, "ErrImagePull: not found"),
        ({"reason": "ErrImageNeverPull"}, "ErrImageNeverPull: no message"),
        ({"reason": "CrashLoopBackOff", "message": "back-off"}, "CrashLoopBackOff: back-off"),
        ({"reason": "ContainerCreating"}, None),
    ],
)
def test_a_waiting_reason_that_cannot_resolve_fails_the_launch(
    waiting: dict[str, str], failure: str | None
) -> None:
    view = ks.pod_view(pod(waiting=waiting))
    assert ks.launch_failure(view) == failure and view.exit_code is None
    assert ks.phase_text(view) == f"{waiting['reason']} on n1"


def test_an_exited_kernel_container_fails_with_its_status_and_message() -> None:
    view = ks.pod_view(pod("Failed", terminated={"exitCode": 3, "reason": "Error"}))
    assert view.ended and view.exit_code == 3
    assert ks.launch_failure(view) == "the kernel's container exited with status 3 (Error)"
    term = {"exitCode": 1, "reason": "Error", "message": "no module"}
    assert str(ks.launch_failure(ks.pod_view(pod("Failed", terminated=term)))).endswith(
        "status 1 (no module)"
    )


def test_a_pulling_running_and_deleted_pod_is_described() -> None:
    pulling = ks.phase_text(ks.pod_view(pod()), ["Scheduled: ok", "Pulling: image x"])
    assert pulling == "pulling its image on n1 (Pulling: image x)"
    running = pod("Running", running={})
    running["status"]["podIP"] = "10.1.2.3"
    view = ks.pod_view(running)
    assert (view.ip, view.node, ks.launch_failure(view)) == ("10.1.2.3", "n1", None)
    assert ks.phase_text(view) == "running on n1 (the kernel has not answered yet)"
    view = ks.pod_view({**running, "metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}})
    assert view.deleting and ks.phase_text(view) == "being deleted"
    assert ks.pod_view({}) == PodView() and ks.phase_text(PodView(node="n")) == "pending on n"


def test_the_namespace_quota_and_secret_carry_our_labels() -> None:
    p = params()
    ns = kp.namespace_manifest(f"kf-{KID}", p)
    assert (ns["kind"], ns["metadata"]["name"]) == ("Namespace", f"kf-{KID}")
    assert ns["metadata"]["labels"] == kp.labels(p) and kp.labels(p)[kp.LABEL_KERNEL] == KID
    hard = {"pods": "2"}
    quota = kp.quota_manifest("kf-x", hard, p)
    assert quota["spec"]["hard"] == hard and quota["spec"]["hard"] is not hard
    assert (quota["kind"], quota["metadata"]["namespace"]) == ("ResourceQuota", "kf-x")
    secret = kp.secret_manifest("s", {"key": "k\u00e9y"}, p)
    assert (secret["type"], secret["metadata"]["namespace"]) == ("Opaque", "kernels")
    assert base64.b64decode(secret["data"]["key"]).decode() == "k\u00e9y"
    assert secret["metadata"]["labels"] == kp.labels(p)


def test_a_late_secret_cache_is_waited_for_but_a_missing_secret_fails() -> None:
    late = PodView(
        waiting="CreateContainerConfigError",
        waiting_message="failed to sync secret cache: timed out waiting for the condition",
        node="n",
    )
    assert ks.launch_failure(late) is None
    missing = PodView(
        waiting="CreateContainerConfigError", waiting_message='secret "x" not found', node="n"
    )
    assert ks.launch_failure(missing) is not None
