"""``kernelfleet spec install local``: kernels on the gateway's own machine (``kernelfleet-local``).

No options of its own: the common entries of ``kernel_provisioner.config`` (users, launch
timeout) are all it needs.
"""

from __future__ import annotations

from textwrap import dedent

from kernelfleet.specs.kinds.base import SpecKind


class LocalKind(SpecKind):
    kind = "local"
    #: our local provisioner: accepts the policy keys of the config
    provisioner_name = "kernelfleet-local"
    where = "(local)"
    description = "Install a kernelspec whose kernels run on the gateway's machine."
    examples = dedent("""
        kernelfleet spec install local --spark --spark-master=local[2] --user
        """)
