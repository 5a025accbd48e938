"""What a config reload would change, worked out before anything changes."""

from __future__ import annotations

import pytest
from traitlets import Dict, Int, Unicode
from traitlets.config import Config, LoggingConfigurable

from kernelfleet.gateway.reload import ConfigInvalid, describe_value, effective_values, plan


class Limits(LoggingConfigurable):
    max_kernels = Int(0).tag(config=True)
    sizes = Dict(value_trait=Int()).tag(config=True)
    token = Unicode("").tag(config=True)


class Gateway(LoggingConfigurable):  # named like the real one: its restart-only options
    port = Int(8888).tag(config=True)
    stop_mode = Unicode("auto").tag(config=True)


def config(**sections: dict[str, object]) -> Config:
    cfg = Config()
    for section, values in sections.items():
        for name, value in values.items():
            cfg[section][name] = value
    return cfg


def test_an_option_left_out_goes_back_to_its_default() -> None:
    limits = Limits(max_kernels=5, sizes={"py": 1})
    changes = plan([limits], config())
    assert sorted((c.name, c.old, c.new) for _, c in changes) == [
        ("max_kernels", 5, 0),
        ("sizes", {"py": 1}, {}),
    ]


def test_an_unchanged_value_is_no_change() -> None:
    limits = Limits(max_kernels=5)
    assert plan([limits], config(Limits={"max_kernels": 5})) == []


def test_a_value_its_option_refuses_names_the_option() -> None:
    with pytest.raises(ConfigInvalid, match=r"^Limits\.sizes: .*int"):
        effective_values(Limits(), config(Limits={"sizes": {"py": "two"}}))


def test_a_restart_only_option_the_file_does_not_set_keeps_its_value() -> None:
    gw = Gateway(port=9999)
    assert effective_values(gw, config()) == {"stop_mode": "auto"}
    assert [(c.name, c.new) for _, c in plan([gw], config(Gateway={"port": 1}))] == [("port", 1)]


def test_lazy_values_apply_to_the_default() -> None:
    cfg = config()
    cfg.Limits.sizes.update({"py": 2})
    assert effective_values(Limits(), cfg)["sizes"] == {"py": 2}


def test_secrets_never_reach_the_log() -> None:
    assert describe_value("token", "s3cret") == "(hidden)"
    assert describe_value("user_tokens", {"t": "u"}) == "(hidden)"
    assert describe_value("max_kernels", 3) == "3"
    assert len(describe_value("x", "y" * 500)) == 120
