"""The audit log: one JSON line per kernel start, refusal, action, death and reattach.

Each line says who (``actor``, ``admin``), what (``action``, ``outcome``, ``cause``,
``message``), on which kernel (``kernel_id``, ``kernelspec``, ``owner``, ``backend``, ``host``),
from where (``source``: the API, the dashboard, or the gateway itself) and when (``time``, UTC).
It is the :class:`~kernelfleet.kernels.events.KernelEvent` stream, written by a thread (the
event loop never waits for the disk) to a file opened with mode 0600 and reopened when
``logrotate`` moves it.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import queue
import sys
from typing import Any

from traitlets import Unicode
from traitlets.config import LoggingConfigurable

from kernelfleet.config import option
from kernelfleet.kernels.events import EventBus, KernelEvent

OFF = "off"


class AuditLog(LoggingConfigurable):
    """Writes the events of a bus as JSON lines (see the module docstring)."""

    audit_log = option(
        Unicode(
            "",
            help="""Where the audit log (JSON lines: who started, stopped, restarted or was
            refused which kernel, and when) is written: a file path, '-' for standard error,
            or 'off'. Default: <data_dir>/audit.jsonl.""",
        ),
        "KF_AUDIT_LOG",
    )

    def __init__(self, data_dir: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = self.audit_log or os.path.join(data_dir, "audit.jsonl")
        self._logger: logging.Logger | None = None
        self._listener: logging.handlers.QueueListener | None = None
        self._unsubscribe: Any = None

    def open(self, bus: EventBus) -> None:
        """Start writing the events of *bus*."""
        if self.path == OFF or self._listener is not None:
            return
        if self.path == "-":
            target: logging.Handler = logging.StreamHandler(sys.stderr)
        else:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.close(fd)  # created private; the handler appends to it
            target = logging.handlers.WatchedFileHandler(self.path, encoding="utf-8")
        target.setFormatter(logging.Formatter("%(message)s"))
        lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._listener = logging.handlers.QueueListener(lines, target)
        self._listener.start()
        logger = logging.getLogger(f"kernelfleet.audit.{id(self)}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        logger.addHandler(logging.handlers.QueueHandler(lines))
        self._logger = logger
        self._unsubscribe = bus.subscribe(self.write)
        self.log.info("audit log: %s", "standard error" if self.path == "-" else self.path)

    def write(self, event: KernelEvent) -> None:
        if self._logger is not None:
            self._logger.info(json.dumps(event.as_json()))

    def close(self) -> None:
        """Stop listening and write out what is queued."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._listener is not None:
            self._listener.stop()  # drains the queue
            for handler in self._listener.handlers:
                handler.close()
            self._listener = None
        if self._logger is not None:
            for handler in list(self._logger.handlers):
                self._logger.removeHandler(handler)
            self._logger = None
