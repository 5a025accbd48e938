"""The gateway: wiring of the tornado app, the HTTP server and the kernel services.

:class:`Gateway` is what ``kernelfleet serve`` runs and what tests boot in-process
(``async with Gateway(config=...) as gw``); it holds no global state, so several can run in one
process.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any

from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from jupyter_core.paths import jupyter_data_dir
from tornado import httpserver, netutil, web
from traitlets import Bool, Enum, Int, Unicode
from traitlets.config import Config, LoggingConfigurable

from kernelfleet import __version__
from kernelfleet.config import option
from kernelfleet.gateway import health, metrics, rest
from kernelfleet.gateway.audit import AuditLog
from kernelfleet.gateway.auth import Authenticator
from kernelfleet.gateway.base import CorsSettings, NotFoundHandler, Services
from kernelfleet.gateway.bridge import BridgeSettings, Traffic
from kernelfleet.gateway.limits import RequestLimits
from kernelfleet.gateway.reload import ConfigReloader, Generation
from kernelfleet.gateway.websocket import KernelWebsocketHandler
from kernelfleet.kernels.catalog import KernelSpecCatalog
from kernelfleet.kernels.culler import Culler
from kernelfleet.kernels.persistence import Persister
from kernelfleet.kernels.pool import KernelPool
from kernelfleet.kernels.record import KernelRecord
from kernelfleet.kernels.registry import KernelRegistry
from kernelfleet.kernels.replicas import Replicas, ReplicaSettings
from kernelfleet.kernels.secrets import SecretBox
from kernelfleet.kernels.sessions import SessionStore
from kernelfleet.kernels.stores import KernelStore, open_store
from kernelfleet.provisioners.base import (
    KernelfleetProvisioner,
    close_backends,
    kernels_outlive_gateway,
)
from kernelfleet.provisioners.factory import provisioner_class


def normalize_base_url(base_url: str) -> str:
    base = "/" + base_url.strip("/")
    return base if base.endswith("/") else base + "/"


class Gateway(LoggingConfigurable):
    """The kernel gateway server (see module docstring)."""

    ip = option(
        Unicode("127.0.0.1", help="Address the gateway listens on. Default: 127.0.0.1."),
        "KF_IP",
        "EG_IP",
    )
    port = option(
        Int(8888, help="TCP port the gateway listens on (0: any free port). Default: 8888."),
        "KF_PORT",
        "EG_PORT",
    )
    port_retries = option(
        Int(
            50,
            help="""How many following ports to try when the port is in use (0: fail at once).
            Default: 50.""",
        ),
        "KF_PORT_RETRIES",
        "EG_PORT_RETRIES",
    )
    base_url = option(
        Unicode(
            "/",
            help="""URL prefix of every endpoint, e.g. /gateway/. Keep it lower case: Jupyter's
            gateway client lower-cases websocket URLs. Default: /.""",
        ),
        "KF_BASE_URL",
        "EG_BASE_URL",
    )
    certfile = option(
        Unicode("", help="TLS certificate file (PEM); enables HTTPS. Default: none."),
        "KF_CERTFILE",
        "EG_CERTFILE",
    )
    keyfile = option(
        Unicode("", help="TLS private key file (PEM) for certfile. Default: none."),
        "KF_KEYFILE",
        "EG_KEYFILE",
    )
    client_ca = option(
        Unicode(
            "",
            help="""CA bundle (PEM) to verify client certificates; when set, clients must
            present one. Default: none.""",
        ),
        "KF_CLIENT_CA",
        "EG_CLIENT_CA",
    )
    trust_xheaders = option(
        Bool(
            False,
            help="""Trust X-Real-Ip / X-Forwarded-For from a reverse proxy for client addresses
            in logs. Default: false.""",
        ),
        "KF_TRUST_XHEADERS",
        "EG_TRUST_XHEADERS",
    )
    allow_origin = option(
        Unicode("", help="CORS Access-Control-Allow-Origin ('*' or an origin). Default: none."),
        "KF_ALLOW_ORIGIN",
        "EG_ALLOW_ORIGIN",
    )
    allow_credentials = option(
        Unicode("", help="CORS Access-Control-Allow-Credentials. Default: none."),
        "KF_ALLOW_CREDENTIALS",
        "EG_ALLOW_CREDENTIALS",
    )
    allow_headers = option(
        Unicode("", help="CORS Access-Control-Allow-Headers. Default: none."),
        "KF_ALLOW_HEADERS",
        "EG_ALLOW_HEADERS",
    )
    allow_methods = option(
        Unicode("", help="CORS Access-Control-Allow-Methods. Default: none."),
        "KF_ALLOW_METHODS",
        "EG_ALLOW_METHODS",
    )
    expose_headers = option(
        Unicode("", help="CORS Access-Control-Expose-Headers. Default: none."),
        "KF_EXPOSE_HEADERS",
        "EG_EXPOSE_HEADERS",
    )
    max_age = option(
        Unicode("", help="CORS Access-Control-Max-Age, in seconds. Default: none."),
        "KF_MAX_AGE",
        "EG_MAX_AGE",
    )
    data_dir = option(
        Unicode(
            "",
            help="""Directory for the gateway's state: the SQLite kernel store, local kernel
            logs, the store's key file (unless secret_key_file says otherwise).
            Default: <Jupyter data dir>/kernelfleet.""",
        ),
        "KF_DATA_DIR",
    )
    stop_mode = option(
        Enum(
            ["auto", "shutdown", "leave"],
            default_value="auto",
            help="""What happens to kernels when the gateway stops (SIGTERM/SIGINT). 'shutdown':
            every kernel is shut down. 'leave': every kernel keeps running and the next gateway
            on the same store reattaches it (needs persistence). 'auto' (default): with
            persistence, remote kernels are left running and local kernels shut down; without
            persistence, all are shut down.""",
        ),
        "KF_STOP_MODE",
    )
    persistence = option(
        Bool(
            True,
            help="""Keep kernel records in a store so a restarted gateway reattaches to the
            kernels still running. Default: true.""",
        ),
        "KF_PERSISTENCE",
    )
    kernel_store = option(
        Unicode(
            "",
            help="""Where kernel records are kept: empty (default) for SQLite in the data
            directory; sqlite:////abs/path.sqlite; or postgresql://user@host/db (several
            gateways on one database serve the same kernels).""",
        ),
        "KF_KERNEL_STORE",
    )
    secret_key_file = option(
        Unicode(
            "",
            help="""File holding the key that encrypts kernel secrets in the store (created
            with mode 0600 if missing). Keep it out of database backups; gateways sharing a
            store need the same file. Default: <data_dir>/secret/store.key.""",
        ),
        "KF_SECRET_KEY_FILE",
    )
    gateway_id = option(
        Unicode(
            "",
            help="""Name of this gateway in kernel records (for several gateways on one
            store). Default: <hostname>:<pid>.""",
        ),
        "KF_GATEWAY_ID",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not self.data_dir:
            self.data_dir = os.path.join(jupyter_data_dir(), "kernelfleet")
        self.auth = Authenticator(parent=self)
        self.catalog = KernelSpecCatalog(parent=self)
        self.store: KernelStore | None = None
        persister = None
        if self.persistence:
            self.store = open_store(self.kernel_store, self.data_dir)
            key_file = self.secret_key_file or os.path.join(self.data_dir, "secret", "store.key")
            persister = Persister(
                self.store,
                SecretBox.from_file(key_file),
                self.gateway_id or f"{socket.gethostname()}:{os.getpid()}",
            )
        self.registry = KernelRegistry(self.catalog, self.data_dir, persister, parent=self)
        self.culler = Culler(self.registry, parent=self)
        self.replica_settings = ReplicaSettings(parent=self)
        self.replicas: Replicas | None = None
        self.pool = KernelPool(self.registry, parent=self)
        self.registry.pool = self.pool
        self.bridge = BridgeSettings(parent=self)
        self.limits = RequestLimits(parent=self)
        self.traffic = Traffic()
        self.audit = AuditLog(self.data_dir, parent=self)
        self.metrics = metrics.Metrics(self.registry, self.traffic, parent=self)
        self.sessions = SessionStore(self.registry)
        self.services: Services | None = None
        self.ssl_context: ssl.SSLContext | None = None
        self.generation = Generation()
        self.reloader: ConfigReloader | None = None
        self.server: httpserver.HTTPServer | None = None
        self.bound_port: int | None = None
        self.generated_token = self.auth.ensure_token()
        #: More routes for the app, each list made from the normalized base URL, and what to
        #: await when the gateway stops: how a layer above (the dashboard) plugs in without
        #: the gateway importing it (kernelfleet.dashboard.app.install).
        self.route_providers: list[Callable[[str], Sequence[Any]]] = []
        self.stop_hooks: list[Callable[[], Awaitable[None]]] = []

    # -- app ------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        base = normalize_base_url(self.base_url)
        services = Services(
            registry=self.registry,
            catalog=self.catalog,
            sessions=self.sessions,
            auth=self.auth,
            bridge=self.bridge,
            limits=self.limits,
            traffic=self.traffic,
            base_url=base,
            cors=self._cors(),
            generation=lambda: self.generation,
        )
        self.services = services
        kid = r"(?P<kernel_id>\w+-\w+-\w+-\w+-\w+)"
        handlers: list[Any] = [
            (rf"(?i){base}api/kernels/{kid}/channels/?", KernelWebsocketHandler),
            *rest.routes(base),
            *health.routes(base),
            *metrics.routes(base, self.metrics),
            *(route for provide in self.route_providers for route in provide(base)),
        ]
        ping = self.bridge.ping_interval or None
        return web.Application(
            handlers,
            kf=services,
            default_handler_class=NotFoundHandler,
            websocket_ping_interval=ping,
            websocket_ping_timeout=ping,
            log_function=_log_request,
        )

    def _cors(self) -> CorsSettings:
        return CorsSettings(
            allow_origin=self.allow_origin,
            allow_credentials=self.allow_credentials,
            allow_headers=self.allow_headers,
            allow_methods=self.allow_methods,
            expose_headers=self.expose_headers,
            max_age=self.max_age,
        )

    def configurables(self) -> list[LoggingConfigurable]:
        """Every object whose options a config reload may change."""
        return [
            self,
            self.auth,
            self.catalog,
            self.registry,
            self.registry.monitor,
            self.culler,
            self.replica_settings,
            self.pool,
            self.bridge,
            self.limits,
            self.audit,
            self.registry.profiles,
            self.metrics,
        ]

    def enable_reload(
        self, load: Callable[[], Config], watch: Sequence[str] = ()
    ) -> ConfigReloader:
        """Reload the configuration *load* returns on :meth:`ConfigReloader.reload`, when a
        *watch* file changes, and (if one changed) before any kernel start."""
        reloader = self.reloader = ConfigReloader(self, load, watch)
        if watch:
            self.registry.before_start = reloader.ensure_current
        reloader.start()
        return reloader

    def refresh_services(self) -> None:
        """After a config reload: what handlers were given that copies options."""
        if self.services is not None:
            self.services.cors = self._cors()

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.certfile:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.certfile, self.keyfile or None)
        if self.client_ca:
            ctx.load_verify_locations(self.client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def _bind(self) -> list[socket.socket]:
        last: OSError | None = None
        tries = 1 if self.port == 0 else self.port_retries + 1
        for offset in range(tries):
            port = self.port + offset if self.port else 0
            try:
                return netutil.bind_sockets(port, self.ip)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                last = exc
        raise OSError(
            errno.EADDRINUSE,
            f"Ports {self.port}-{self.port + tries - 1} on {self.ip} are all in use "
            f"({last}); choose another --port.",
        )

    async def start(self) -> None:
        self.audit.open(self.registry.events)
        if self.store is not None:
            await self.store.open()
            began = time.monotonic()
            report = await self.registry.reattach()
            if report.reattached or report.gone or report.orphans_stopped or report.failed:
                self.log.info(
                    "kernels from the store: %d reattached, %d gone, %d unfinished launches "
                    "stopped, %d failed, in %.3f s",
                    report.reattached,
                    report.gone,
                    report.orphans_stopped,
                    report.failed,
                    time.monotonic() - began,
                )
        app = self.make_app()
        services: Services = app.settings["kf"]
        self.ssl_context = self._ssl_context()
        self.server = httpserver.HTTPServer(
            app,
            ssl_options=self.ssl_context,
            xheaders=self.trust_xheaders,
            **self.limits.server_options(),
        )
        sockets = self._bind()
        self.server.add_sockets(sockets)
        self.bound_port = sockets[0].getsockname()[1]
        if self.store is not None and self.store.shared:
            self.replicas = Replicas(self.registry, self.replica_settings, self.url, __version__)
            await self.replicas.start()
        self.registry.monitor.start()
        self.culler.start()
        await self._warm_up_provisioners()
        await self.pool.start()
        services.ready = True

    async def _warm_up_provisioners(self) -> None:
        """Warm up the backend of every kernelspec's provisioner (SSH: open the host
        connections), so the first kernel does not pay for an SSH login."""
        for entry in (await self.catalog.all()).values():
            klass = provisioner_class(entry.spec, self.registry)
            if klass is None or not issubclass(klass, KernelfleetProvisioner):
                continue
            try:
                await klass.warm_up(entry.spec, parent=self.registry)
            except Exception as exc:
                self.log.warning("could not warm up kernelspec %s: %s", entry.name, exc)

    @property
    def url(self) -> str:
        scheme = "https" if self.certfile else "http"
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        if host in {"0.0.0.0", "[::]", ""}:
            host = "127.0.0.1"
        return f"{scheme}://{host}:{self.bound_port}{normalize_base_url(self.base_url)}"

    def _doomed_on_stop(self, mode: str) -> bool | Callable[[KernelRecord], bool]:
        if mode == "shutdown" or self.store is None:
            return True
        if mode == "leave":
            return False
        return lambda record: not kernels_outlive_gateway(provisioner_of(record))

    async def stop(self, *, mode: str | None = None) -> None:
        """Stop accepting requests, then shut kernels down or leave them running (stop_mode)."""
        if self.services is not None:
            self.services.ready = False  # readiness fails first: proxies stop sending
        if self.reloader is not None:
            await self.reloader.stop()
        if self.server is not None:
            self.server.stop()
        for hook in self.stop_hooks:
            await hook()
        self.registry.closing = True  # requests on open connections get a 503
        await self.culler.stop()
        await self.pool.stop()
        if self.replicas is not None:
            await self.replicas.stop()
        await self.registry.close(shutdown_kernels=self._doomed_on_stop(mode or self.stop_mode))
        if self.store is not None:
            await self.store.close()
        await close_backends()
        if self.server is not None:
            await asyncio.wait_for(self.server.close_all_connections(), 5)
            self.server = None
        self.audit.close()

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _log_request(handler: web.RequestHandler) -> None:
    status = handler.get_status()
    log = handler.application.settings.get("kf_logger")
    if log is None:
        import logging

        log = logging.getLogger("kernelfleet.access")
    level = 20 if status < 400 else 30
    if (
        status < 400
        and handler.request.method == "GET"
        and handler.request.path.endswith(("/api/kernels", "/metrics"))
    ):
        level = 10  # JupyterLab polls the kernel list, Prometheus the metrics: keep it readable
    log.log(
        level,
        "%d %s %s %.1fms",
        status,
        handler.request.method,
        handler.request.uri.split("?")[0] if handler.request.uri else "",
        1000.0 * handler.request.request_time(),
    )


def provisioner_of(record: KernelRecord) -> type[KernelProvisionerBase] | None:
    """The provisioner class of *record*'s kernel (from its kernelspec if it has none yet)."""
    prov = record.manager.provisioner if record.manager is not None else None
    return type(prov) if prov is not None else provisioner_class(record.spec)
