"""The ``kernelfleet`` command: argument parsing only; every subcommand calls into the package.

Subcommands are traitlets applications (``kernelfleet serve``, ``kernelfleet spec …``,
``kernelfleet hosts …``), so each has ``--help``, ``--help-all`` and config-file support.
"""

from __future__ import annotations

import sys
from textwrap import dedent

from kernelfleet.cli.base import KernelfleetCommand


class KernelFleetApp(KernelfleetCommand):
    """``kernelfleet``: dispatches to a subcommand, else prints help (exit 2) as they do."""

    name = "kernelfleet"
    description = "kernelfleet: run Jupyter kernels on a fleet of hosts."
    examples = dedent("""
        kernelfleet serve --ip=0.0.0.0 --port=8888     # start the gateway
        kernelfleet spec install ssh --help            # write a kernelspec for SSH hosts
        kernelfleet spec list                          # the installed kernelspecs
        kernelfleet hosts check                        # can every host run its kernelspecs?
        """)
    subcommands = {
        "serve": ("kernelfleet.cli.serve.ServeApp", "Start the kernel gateway."),
        "spec": ("kernelfleet.cli.spec.SpecApp", "Manage kernelspecs for the fleet."),
        "hosts": ("kernelfleet.cli.hosts.HostsApp", "Check the hosts of the fleet."),
        "image": ("kernelfleet.cli.image.ImageApp", "Build kernel images without a registry."),
        "env": ("kernelfleet.cli.env.EnvApp", "Build Python environments offered as kernels."),
    }


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``kernelfleet`` console script."""
    args = sys.argv[1:] if argv is None else argv
    KernelFleetApp.launch_instance(args)
