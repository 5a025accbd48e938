"""``kernelfleet serve``: run the gateway until SIGTERM/SIGINT.

Configuration, lowest precedence first: defaults, ``KF_…`` environment variables, the config
file (``kernelfleet_config.py`` in the config directory, or ``--config``), the command line.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import signal
import sys
from textwrap import dedent
from typing import Any

from traitlets import Bool, Unicode, default
from traitlets.config import Application, Config, Configurable
from traitlets.config.loader import JSONFileConfigLoader, PyFileConfigLoader

from kernelfleet import __version__
from kernelfleet.aio import cancel_and_wait
from kernelfleet.cli import logsetup
from kernelfleet.cli.memory import return_freed_memory
from kernelfleet.config import EnvError, config_from_env
from kernelfleet.dashboard.app import install as install_dashboard
from kernelfleet.dashboard.settings import DashboardSettings
from kernelfleet.envs.api import install as install_envs
from kernelfleet.envs.settings import EnvSettings
from kernelfleet.gateway.app import Gateway
from kernelfleet.gateway.audit import AuditLog
from kernelfleet.gateway.auth import Authenticator
from kernelfleet.gateway.bridge import BridgeSettings
from kernelfleet.gateway.limits import RequestLimits
from kernelfleet.gateway.metrics import Metrics
from kernelfleet.kernels.catalog import KernelSpecCatalog
from kernelfleet.kernels.culler import Culler
from kernelfleet.kernels.liveness import KernelMonitor
from kernelfleet.kernels.pool import KernelPool
from kernelfleet.kernels.profiles import KernelProfiles
from kernelfleet.kernels.registry import KernelRegistry
from kernelfleet.kernels.replicas import ReplicaSettings


def configurable_classes() -> list[type[Configurable]]:
    """Every class with options, for --help-all, --generate-config and the environment."""
    classes: list[type[Configurable]] = [
        Gateway,
        Authenticator,
        KernelSpecCatalog,
        KernelRegistry,
        KernelMonitor,
        Culler,
        ReplicaSettings,
        KernelPool,
        BridgeSettings,
        RequestLimits,
        AuditLog,
        KernelProfiles,
        Metrics,
        DashboardSettings,
        EnvSettings,
    ]
    try:
        from kernelfleet.provisioners.ssh import SSHProvisioner
    except ImportError:
        pass
    else:
        classes.append(SSHProvisioner)
    return classes


def default_config_dir() -> str:
    return os.environ.get("KF_CONFIG_DIR") or os.path.join(os.path.expanduser("~"), ".kernelfleet")


class ServeApp(Application):
    name = "kernelfleet-serve"
    version = __version__
    description = "Start the kernelfleet gateway (the Jupyter Kernel Gateway API)."
    examples = dedent("""
        kernelfleet serve --ip=0.0.0.0 --port=8888
        kernelfleet serve --token=SECRET --KernelRegistry.max_kernels_per_user=3
        kernelfleet serve --generate-config
        """)

    config_file = Unicode(
        "", help="Path of a config file to load (default: <config dir>/kernelfleet_config.py)."
    ).tag(config=True)
    generate_config = Bool(False, help="Write a commented default config file and exit.").tag(
        config=True
    )
    answer_yes = Bool(False, help="Overwrite an existing file without asking.").tag(config=True)

    @default("log_level")
    def _default_log_level(self) -> int:
        return logging.INFO

    aliases = {
        "ip": "Gateway.ip",
        "port": "Gateway.port",
        "port-retries": "Gateway.port_retries",
        "base-url": "Gateway.base_url",
        "certfile": "Gateway.certfile",
        "keyfile": "Gateway.keyfile",
        "client-ca": "Gateway.client_ca",
        "allow-origin": "Gateway.allow_origin",
        "data-dir": "Gateway.data_dir",
        "token": "Authenticator.token",
        "default-kernel-name": "KernelSpecCatalog.default_kernel_name",
        "allowed-kernelspecs": "KernelSpecCatalog.allowed_kernelspecs",
        "max-kernels": "KernelRegistry.max_kernels",
        "max-kernels-per-user": "KernelRegistry.max_kernels_per_user",
        "launch-timeout": "KernelRegistry.launch_timeout",
        "cull-idle-timeout": "Culler.cull_idle_timeout",
        "config": "ServeApp.config_file",
        "log-level": "Application.log_level",
    }
    flags = {
        "generate-config": (
            {"ServeApp": {"generate_config": True}},
            "Write a commented default config file to the config directory and exit.",
        ),
        "y": ({"ServeApp": {"answer_yes": True}}, "Answer yes to any question."),
        "no-auth": (
            {"Authenticator": {"auth_enabled": False}},
            "Accept requests without a token (trusted networks only).",
        ),
        "debug": ({"Application": {"log_level": "DEBUG"}}, "Log at DEBUG level."),
        "leave-kernels-running": (
            {"Gateway": {"stop_mode": "leave"}},
            "On exit, leave kernels running instead of shutting them down.",
        ),
    }

    @property
    def classes(self) -> list[type[Configurable]]:  # type: ignore[override]
        return [ServeApp, *configurable_classes()]

    def initialize(self, argv: Any = None) -> None:
        self.parse_command_line(argv)
        cli_config = self._cli_config = copy.deepcopy(self.config)
        try:
            env_config = config_from_env(configurable_classes())
        except EnvError as exc:
            print(f"kernelfleet: {exc}", file=sys.stderr)
            self.exit(2)
        self.update_config(env_config)
        path = self.config_path = self.config_file or os.path.join(
            default_config_dir(), "kernelfleet_config.py"
        )
        if os.path.isfile(path):
            self.load_config_file(os.path.basename(path), os.path.dirname(path) or ".")
        elif self.config_file:
            print(f"kernelfleet: config file {path} does not exist", file=sys.stderr)
            self.exit(2)
        self.update_config(cli_config)  # the command line wins over file and environment

    def load_whole_config(self) -> Config:
        """The configuration anew, as at start: environment, then file, then command line (a
        config reload; raises on a file that does not load)."""
        config = Config()
        config.merge(config_from_env(configurable_classes()))
        if os.path.isfile(self.config_path):
            directory, name = os.path.split(os.path.abspath(self.config_path))
            loader: PyFileConfigLoader | JSONFileConfigLoader
            if name.endswith(".json"):
                loader = JSONFileConfigLoader(name, directory, log=self.log)
            else:
                loader = PyFileConfigLoader(name, directory, log=self.log)
            config.merge(loader.load_config())
        config.merge(self._cli_config)
        return config

    def write_default_config(self) -> None:
        path = self.config_file or os.path.join(default_config_dir(), "kernelfleet_config.py")
        if os.path.exists(path) and not self.answer_yes:
            print(f"{path} exists; pass -y to overwrite it.", file=sys.stderr)
            self.exit(1)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(self.generate_config_file())
        print(f"Wrote default config to {path}")

    def start(self) -> None:
        if self.generate_config:
            self.write_default_config()
            return
        logsetup.configure(self.log_level, self.log)
        return_freed_memory()
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        # Signals are handled from the first moment: the port accepts requests before start()
        # returns (reattach, warm-up, pools), and a SIGTERM then must still stop gracefully.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # SIGHUP reloads the configuration (kernelfleet.gateway.reload); one that comes while
        # the gateway starts is applied once it has started.
        hangup = asyncio.Event()
        loop.add_signal_handler(signal.SIGHUP, hangup.set)
        try:
            gateway = Gateway(parent=self)
            envs = install_envs(gateway)
            install_dashboard(gateway, envs=envs)
        except Exception as exc:  # a bad store URL, an unreadable key file, ...
            self.log.critical("cannot start: %s", exc)
            self.exit(1)
        try:
            await gateway.start()
        except Exception as exc:
            self.log.critical("cannot start: %s", exc)
            await gateway.stop(mode="leave")  # keep kernels for the next attempt
            self.exit(1)
        reloader = gateway.enable_reload(self.load_whole_config, [self.config_path])

        async def reload_on_hangup() -> None:
            while True:
                await hangup.wait()
                hangup.clear()
                try:
                    await reloader.reload("SIGHUP")
                except Exception:
                    self.log.exception("config reload failed")

        reloading = asyncio.create_task(reload_on_hangup(), name="sighup")
        self.log.info("kernelfleet %s listening on %s", __version__, gateway.url)
        if gateway.generated_token:
            self.log.info(
                "No token was configured; use this one (JUPYTER_GATEWAY_AUTH_TOKEN):\n    %s",
                gateway.generated_token,
            )
            print(f"    {gateway.url}?token={gateway.generated_token}", flush=True)
        specs = await gateway.catalog.all()
        self.log.info("kernelspecs: %s", ", ".join(sorted(specs)) or "(none found)")
        await stop.wait()
        for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal ends at once
            loop.remove_signal_handler(sig)
        await cancel_and_wait(reloading)
        self.log.info("stopping (stop_mode=%s)", gateway.stop_mode)
        await gateway.stop()
        self.log.info("stopped")
