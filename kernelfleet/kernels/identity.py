"""Who is asking: the identity every registry call is made for."""

from __future__ import annotations

from dataclasses import dataclass

#: The :attr:`Identity.authority` of a caller whose token JupyterHub verified.
JUPYTERHUB = "jupyterhub"


@dataclass(frozen=True)
class Identity:
    """An authenticated caller. Admins see and act on every kernel, and may start kernels for
    another user through ``KERNEL_USERNAME`` (a notebook server acting for its users), unless
    the name is fixed by an authority."""

    user: str
    admin: bool = False
    #: The user's groups, as the authority reports them (empty when it reports none); kernel
    #: profiles and allowances may be granted per group.
    groups: frozenset[str] = frozenset()
    #: Who vouches for :attr:`user` when it is not one of the gateway's own credentials, e.g.
    #: :data:`JUPYTERHUB`. Such a name is fixed: a ``KERNEL_USERNAME`` naming anyone else is
    #: ignored, even for an admin. Empty: the gateway's own token rules apply.
    authority: str = ""

    @property
    def name_fixed(self) -> bool:
        """Whether :attr:`user` is the only name this caller may act as."""
        return bool(self.authority)

    def may_access(self, owner: str) -> bool:
        return self.admin or self.user == owner
