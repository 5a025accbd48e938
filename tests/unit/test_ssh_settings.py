"""SSH provisioner settings: KF_* environment fallback, precedence, host pinning rules."""

from __future__ import annotations

import pytest
from traitlets.config import Config, LoggingConfigurable

from kernelfleet.errors import BadRequest, Forbidden, HostsUnavailable
from kernelfleet.provisioners.ssh import SSHProvisioner


class App(LoggingConfigurable):
    pass


def test_env_is_the_fallback_in_library_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KF_REMOTE_HOSTS", "a, b,c")
    monkeypatch.setenv("KF_SSH_USER", "svc")
    monkeypatch.setenv("KF_SSH_PORT", "2200")
    monkeypatch.setenv("KF_SSH_KEY", "/keys/id")
    monkeypatch.setenv("KF_SSH_KNOWN_HOSTS", "/keys/known")
    monkeypatch.setenv("EG_IMPERSONATION_ENABLED", "true")
    prov = SSHProvisioner(kernel_id="k")
    assert prov.remote_hosts == ["a", "b", "c"]
    assert (prov.ssh_user, prov.ssh_port, prov.ssh_key) == ("svc", 2200, "/keys/id")
    assert prov.impersonation_enabled is True
    target = prov.target_for("a")
    assert (target.user, target.port, target.key_file, target.known_hosts) == (
        "svc",
        2200,
        "/keys/id",
        "/keys/known",
    )


def test_kernelspec_config_beats_app_config_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KF_REMOTE_HOSTS", "env1")
    monkeypatch.setenv("KF_SSH_PORT", "2200")
    monkeypatch.setenv("KF_LOAD_BALANCING_ALGORITHM", "load")
    cfg = Config()
    cfg.SSHProvisioner.ssh_port = 2300
    cfg.SSHProvisioner.remote_hosts = ["app1"]
    parent = App(config=cfg)
    prov = SSHProvisioner(kernel_id="k", parent=parent, remote_hosts=["spec1", "spec2"])
    assert prov.remote_hosts == ["spec1", "spec2"]
    assert prov.ssh_port == 2300
    assert prov.load_balancing_algorithm == "load"


def test_bad_env_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KF_SSH_PORT", "twenty-two")
    with pytest.raises(ValueError, match="KF_SSH_PORT"):
        SSHProvisioner(kernel_id="k")


def test_pinning_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KF_REMOTE_HOSTS", raising=False)
    prov = SSHProvisioner(kernel_id="k", remote_hosts=["Host1", "host2"])
    assert prov.candidates({}) == ["Host1", "host2"]
    assert prov.candidates({"KERNEL_REMOTE_HOST": "host1"}) == ["Host1"]
    with pytest.raises(Forbidden, match="host3"):
        prov.candidates({"KERNEL_REMOTE_HOST": "host3"})
    prov.allow_any_remote_host = True
    assert prov.candidates({"KERNEL_REMOTE_HOST": "host3"}) == ["host3"]
    with pytest.raises(Forbidden):
        prov.candidates({"KERNEL_REMOTE_HOST": "h; touch /tmp/x"})
    with pytest.raises(HostsUnavailable, match="KF_REMOTE_HOSTS"):
        SSHProvisioner(kernel_id="k").candidates({})


def test_impersonated_user_rules() -> None:
    prov = SSHProvisioner(kernel_id="k")
    assert prov.kernel_user({"KERNEL_USERNAME": "alice"}) is None  # disabled
    prov.impersonation_enabled = True
    assert prov.kernel_user({"KERNEL_USERNAME": "alice"}) == "alice"
    with pytest.raises(Forbidden):
        prov.kernel_user({"KERNEL_USERNAME": "root"})
    for bad in ("", "Alice", "a b", "x;id", "../x", "a" * 40):
        with pytest.raises(BadRequest):
            prov.kernel_user({"KERNEL_USERNAME": bad})
