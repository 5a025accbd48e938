"""What migrating one kernelspec found and decided: :class:`Finding`, :class:`Plan`."""

from __future__ import annotations

from dataclasses import dataclass

from kernelfleet.foreign import Foreign
from kernelfleet.specs.options import SpecOptions

#: A field of theirs that became one of ours.
MAPPED = "mapped"
#: A field of theirs that kernelfleet does not need (it does the same itself): left out.
DROPPED = "dropped"
#: Something the admin should check; the spec is written.
WARNING = "warning"
#: A field with no kernelfleet equivalent: the spec is written only with ``--force``, without it.
BLOCKER = "unmappable"

LEVELS = (MAPPED, DROPPED, WARNING, BLOCKER)


@dataclass(frozen=True)
class Finding:
    """One field of their kernelspec and what became of it."""

    level: str
    #: Their field: ``process_proxy.config.remote_hosts``, ``env.SPARK_OPTS --queue``, ``argv``.
    field: str
    #: What it became (``--remote-hosts=h1,h2``), or why it was left out and what to do.
    text: str

    def as_json(self) -> dict[str, str]:
        return {"level": self.level, "field": self.field, "text": self.text}


@dataclass(frozen=True)
class Plan:
    """The migration of one kernelspec: the kernelfleet install options it maps to (None when
    nothing could be mapped at all), and every finding on the way."""

    name: str
    source_dir: str
    foreign: Foreign | None
    options: SpecOptions | None
    findings: tuple[Finding, ...] = ()

    @property
    def kind(self) -> str | None:
        return self.options.kind if self.options is not None else None

    @property
    def blockers(self) -> list[Finding]:
        return [f for f in self.findings if f.level == BLOCKER]

    def writable(self, *, force: bool) -> bool:
        """Whether the spec may be written: no blocker, or ``--force`` and options to write."""
        return self.options is not None and (force or not self.blockers)
