"""Who is asking: the identity every registry call is made for."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    """An authenticated caller. Admins see and act on every kernel, and may start kernels for
    another user through ``KERNEL_USERNAME`` (a notebook server acting for its users)."""

    user: str
    admin: bool = False

    def may_access(self, owner: str) -> bool:
        return self.admin or self.user == owner
