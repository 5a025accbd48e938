"""Which provisioner a kernelspec gets: ours for local kernels, else its entry point.

jupyter_client's ``KernelProvisionerFactory`` finds provisioners through the
``jupyter_client.kernel_provisioners`` entry-point group; kernelspecs without a
``kernel_provisioner`` stanza (or naming jupyter_client's ``local-provisioner``) get our
:class:`~kernelfleet.provisioners.local.LocalProvisioner`, which can reattach.
"""

from __future__ import annotations

from typing import Any

from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning.factory import KernelProvisionerFactory
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase

from kernelfleet.foreign import foreign_of, not_migrated
from kernelfleet.provisioners.base import LOCAL_NAMES, provisioner_config, provisioner_name
from kernelfleet.provisioners.local import LocalProvisioner


def provisioner_class(
    spec: dict[str, Any], parent: Any = None
) -> type[KernelProvisionerBase] | None:
    """The provisioner class of kernel.json dict *spec*, or None when its entry point is not
    installed (or does not load)."""
    name = provisioner_name(spec)
    if name in LOCAL_NAMES:
        return LocalProvisioner
    entry = KernelProvisionerFactory.instance(parent=parent).provisioners.get(name)
    if entry is None:
        return None
    try:
        loaded = entry.load()
    except Exception:
        return None
    return (
        loaded if isinstance(loaded, type) and issubclass(loaded, KernelProvisionerBase) else None
    )


def make_provisioner(
    km: AsyncKernelManager, spec: KernelSpec | None, kernel_id: str
) -> KernelProvisionerBase:
    """The provisioner for *spec*, child of kernel manager *km*.

    Raises :class:`~kernelfleet.foreign.NotMigrated` for a kernelspec written
    for Enterprise Gateway or Gateway Provisioners (``kernelfleet spec migrate`` converts it).
    """
    if spec is None:
        raise ValueError(f"kernel {kernel_id} has no kernelspec")
    as_dict = spec.to_dict()
    foreign = foreign_of(as_dict)
    if foreign is not None:
        raise not_migrated(km.kernel_name or "NAME", foreign)
    if provisioner_name(as_dict) in LOCAL_NAMES:
        return LocalProvisioner(
            kernel_id=kernel_id,
            kernel_spec=spec,
            parent=km,
            **provisioner_config(as_dict),
        )
    factory = KernelProvisionerFactory.instance(parent=km.parent)
    prov: KernelProvisionerBase = factory.create_provisioner_instance(kernel_id, spec, parent=km)
    return prov
