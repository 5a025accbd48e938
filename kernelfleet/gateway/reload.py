"""Live config reload: new limits, users, tokens, pools, culling and certificates, no restart.

A reload (SIGHUP, a change of the config file, or :meth:`ConfigReloader.reload`) reads the whole
configuration again — environment, file, command line, in that order of precedence — and checks
every value against its option before changing anything. An invalid configuration is refused
with a log line naming the option and the error, and the one in force stays. A valid one is
applied at once, with no ``await`` between the first and the last option, so no start decision
sees half of it; kernels and websockets are not touched. An option removed from the file goes
back to its environment value or its default.

Some options describe what the gateway was started with — its address, port, base URL, data
directory, kernel store, audit-log file, client CA — and change only with a restart: a reload
logs that they differ and keeps them. TLS files are read again on every reload (a renewed
certificate at the same path is served to new connections), but TLS is neither turned on nor
off.

Several gateways on one shared store each read their own copy of the configuration. Limits
and allowances live in that file, and each gateway looks at the file before every kernel start
(:meth:`ConfigReloader.ensure_current`), so every replica applies a change before its next start
decision once the file it reads has changed. Each reload is a new *generation*, shown by
``GET /api``.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime as dt
import os
import ssl
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from traitlets import TraitError
from traitlets.config import Config, Configurable
from traitlets.config.loader import LazyConfigValue

from kernelfleet.aio import cancel_and_wait
from kernelfleet.kernels.timestamps import utcnow

if TYPE_CHECKING:
    import logging

    from kernelfleet.kernels.catalog import KernelSpecCatalog
    from kernelfleet.kernels.pool import KernelPool
    from kernelfleet.kernels.registry import KernelRegistry


class Gateway(Protocol):
    """What a reload reads and changes of the gateway (kernelfleet.gateway.app.Gateway)."""

    log: logging.Logger | logging.LoggerAdapter[Any]
    certfile: str
    keyfile: str
    generated_token: str | None
    registry: KernelRegistry
    catalog: KernelSpecCatalog
    pool: KernelPool
    ssl_context: ssl.SSLContext | None
    generation: Generation

    def configurables(self) -> Sequence[Configurable]: ...

    def refresh_services(self) -> None: ...


#: (section, option) pairs that only a restart changes.
RESTART_ONLY = frozenset(
    {
        ("Gateway", "ip"),
        ("Gateway", "port"),
        ("Gateway", "port_retries"),
        ("Gateway", "base_url"),
        ("Gateway", "client_ca"),
        ("Gateway", "trust_xheaders"),
        ("Gateway", "data_dir"),
        ("Gateway", "persistence"),
        ("Gateway", "kernel_store"),
        ("Gateway", "secret_key_file"),
        ("Gateway", "gateway_id"),
        ("AuditLog", "audit_log"),
        # every kernel's failover ring is sized when the replica starts (kernels.replicas)
        ("ReplicaSettings", "failover_seconds"),
        ("ReplicaSettings", "failover_buffer_mb"),
        ("ReplicaSettings", "failover_messages"),
        ("ReplicaSettings", "failover_total_mb"),
    }
)
#: TLS files: read again on every reload, but TLS is not turned on or off by one.
TLS_FILES = frozenset({("Gateway", "certfile"), ("Gateway", "keyfile")})


class ConfigInvalid(ValueError):
    """A new configuration that cannot be applied; the message names the option."""


@dataclasses.dataclass(frozen=True)
class Generation:
    """The configuration in force: its number (1 at start), when and why it was loaded."""

    number: int = 1
    loaded: dt.datetime = dataclasses.field(default_factory=utcnow)
    trigger: str = "start"

    def model(self) -> dict[str, Any]:
        return {
            "generation": self.number,
            "loaded": self.loaded.isoformat(timespec="seconds"),
            "trigger": self.trigger,
        }


@dataclasses.dataclass(frozen=True)
class Change:
    section: str
    name: str
    old: Any
    new: Any


def effective_values(obj: Configurable, config: Config) -> dict[str, Any]:
    """Every option of *obj* as *config* sets it, or as its default where *config* does not
    (restart-only options it does not set are left out: their value is what the gateway was
    started with); raises :class:`ConfigInvalid` naming the first value its option refuses."""
    traits = obj.traits(config=True)
    given: dict[str, Any] = {}
    for section in obj.section_names():  # base classes first: the most derived one wins
        if section in config:
            for name, value in config[section].items():
                if name in traits:
                    given[name] = (section, value)
    out: dict[str, Any] = {}
    for name, trait in traits.items():
        if name not in given:
            if (type(obj).__name__, name) not in RESTART_ONLY:
                out[name] = obj.trait_defaults(name)
            continue
        section, value = given[name]
        if isinstance(value, LazyConfigValue):
            value = value.get_value(copy.deepcopy(obj.trait_defaults(name)))
        try:
            out[name] = trait._validate(obj, value)
        except TraitError as exc:
            raise ConfigInvalid(f"{section}.{name}: {' '.join(str(exc).split())}") from None
    return out


def plan(objects: Iterable[Configurable], config: Config) -> list[tuple[Configurable, Change]]:
    """What applying *config* changes, option by option (nothing is changed here)."""
    changes: list[tuple[Configurable, Change]] = []
    for obj in objects:
        section = type(obj).__name__
        for name, new in effective_values(obj, config).items():
            old = getattr(obj, name)
            if old != new:
                changes.append((obj, Change(section, name, old, new)))
    return changes


def check_tls(gateway: Gateway, changes: list[tuple[Configurable, Change]]) -> None:
    """With TLS on, the (new or renewed) certificate and key must load; else refuse."""
    if not gateway.certfile:
        return
    files = {"certfile": gateway.certfile, "keyfile": gateway.keyfile}
    for _obj, change in changes:
        if (change.section, change.name) in TLS_FILES:
            files[change.name] = change.new
    if not files["certfile"]:
        raise ConfigInvalid(
            "Gateway.certfile: TLS is on; an empty certfile turns it off only at a restart"
        )
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            files["certfile"], files["keyfile"] or None
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigInvalid(f"Gateway.certfile/keyfile {files['certfile']}: {exc}") from None


def describe_value(name: str, value: Any) -> str:
    """A value for the log, secrets hidden."""
    if "token" in name or "secret" in name or "password" in name:
        return "(hidden)"
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


class ConfigReloader:
    """Reloads a gateway's configuration (see the module docstring)."""

    def __init__(
        self,
        gateway: Gateway,
        load: Callable[[], Config],
        watch: Sequence[str] = (),
        *,
        interval: float = 2.0,
    ) -> None:
        self.gateway = gateway
        self.load = load
        self.watch_paths = list(watch)
        self.interval = interval
        self.generation = Generation()
        self._seen = self._signature()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        gateway.generation = self.generation

    # -- triggers -------------------------------------------------------------------------

    def start(self) -> None:
        """Watch the config file(s) for changes (polling their size, time and inode)."""
        if self.watch_paths and self._task is None:
            self._task = asyncio.create_task(self._watch(), name="config-watch")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.ensure_current()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.gateway.log.exception("watching the config file failed")

    async def ensure_current(self) -> None:
        """Reload if a watched file changed since the last look (before a start decision)."""
        if not self.watch_paths:
            return
        if await asyncio.to_thread(self._signature) != self._seen:
            await self.reload("file changed")

    def _signature(self) -> tuple[tuple[int, int, int, int], ...]:
        out = []
        for path in self.watch_paths:
            try:
                st = os.stat(path)
                out.append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
            except OSError:
                out.append((0, 0, 0, 0))
        return tuple(out)

    # -- reload ---------------------------------------------------------------------------

    async def reload(self, trigger: str = "reload") -> bool:
        """Read and apply the configuration; False (and the old one kept) if it is invalid."""
        log = self.gateway.log
        async with self._lock:
            seen = await asyncio.to_thread(self._signature)
            try:
                config = await asyncio.to_thread(self.load)
                changes = plan(self.gateway.configurables(), config)
                await asyncio.to_thread(check_tls, self.gateway, changes)
            except Exception as exc:  # a syntax error in the file, a value its option refuses
                self._seen = seen  # judged: not tried again until the file changes again
                if isinstance(exc, ConfigInvalid):
                    why = str(exc)
                else:
                    where = ", ".join(self.watch_paths) or "the configuration"
                    why = f"{where} does not load: {type(exc).__name__}: {exc}"
                log.error(
                    "config reload (%s) refused, the configuration in force (generation %d) "
                    "stays: %s",
                    trigger,
                    self.generation.number,
                    " ".join(why.split()),
                )
                return False
            self._seen = seen
            applied = self._apply(config, changes)
            self.generation = Generation(self.generation.number + 1, trigger=trigger)
            self.gateway.generation = self.generation
            log.info(
                "config reloaded (%s): generation %d, %s",
                trigger,
                self.generation.number,
                ", ".join(f"{c.section}.{c.name}={describe_value(c.name, c.new)}" for c in applied)
                or "no option changed",
            )
            await self._after(applied)
            return True

    def _apply(self, config: Config, changes: list[tuple[Configurable, Change]]) -> list[Change]:
        """Set every changed option at once (no await: no start decision sees half of it)."""
        gw = self.gateway
        applied = []
        for obj, change in changes:
            key = (change.section, change.name)
            if key in RESTART_ONLY or (key in TLS_FILES and not gw.certfile):
                gw.log.warning(
                    "config reload: %s.%s changed to %s; it takes effect at the next restart",
                    change.section,
                    change.name,
                    describe_value(change.name, change.new),
                )
                continue
            if key == ("Authenticator", "token") and not change.new and gw.generated_token:
                continue  # no token configured: the one generated at start stays
            setattr(obj, change.name, change.new)
            applied.append(change)
        # kernels started from now on (their managers and provisioners) read the new config
        gw.registry.config = copy.deepcopy(config)
        return applied

    async def _after(self, applied: list[Change]) -> None:
        gw = self.gateway
        gw.catalog.invalidate()  # kernelspecs (host lists) are read again
        gw.refresh_services()
        if gw.certfile:
            try:
                await asyncio.to_thread(self._reload_tls)
            except (OSError, ssl.SSLError) as exc:  # changed since check_tls read it
                gw.log.error("config reload: the TLS files could not be read again: %s", exc)
        if any(c.section == "KernelPool" for c in applied):
            try:
                await gw.pool.resize()
            except Exception:
                gw.log.exception("config reload: resizing the warm pools failed")

    def _reload_tls(self) -> None:
        gw = self.gateway
        if gw.ssl_context is not None:
            gw.ssl_context.load_cert_chain(gw.certfile, gw.keyfile or None)
