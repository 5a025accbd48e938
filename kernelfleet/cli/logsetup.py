"""How ``kernelfleet serve`` logs: one line format for every logger, quiet libraries.

Every line carries its level, a timestamp and the logger's name, the gateway's own lines (the
application's logger) as much as the libraries'. At the default INFO level the libraries that
narrate each step (asyncssh: every SSH session and the agent's bootstrap command per host) log
warnings only; ``--debug`` / ``--log-level=DEBUG`` lets them speak. An expected refusal (any
:class:`~kernelfleet.errors.PublicError`, e.g. a 503 when no host is reachable) is logged as one
line by the HTTP layer; the traceback jupyter_client logs for it again is dropped.
"""

from __future__ import annotations

import logging

from kernelfleet.errors import PublicError

FORMAT = "[%(levelname).1s %(asctime)s.%(msecs)03d %(name)s] %(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S"
#: Libraries that log each routine step at INFO.
CHATTY = ("asyncssh",)


class ExpectedRefusals(logging.Filter):
    """Drop ``log.exception(exc)`` records whose exception is a :class:`PublicError`: the
    request that caused it already logged one line, and its client got the message."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, PublicError) and record.msg is exc)


def level_number(level: object) -> int:
    """A traitlets ``log_level`` (a number or a level's name) as a number."""
    if isinstance(level, int):
        return level
    value = logging.getLevelName(str(level).upper())
    return value if isinstance(value, int) else logging.INFO


def configure(level: object, app_logger: logging.Logger) -> None:
    """Set up the root logger and *app_logger* (the traitlets application's) alike."""
    number = level_number(level)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    handler.addFilter(ExpectedRefusals())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)
    for old in list(app_logger.handlers):
        app_logger.removeHandler(old)
    app_logger.propagate = True
    app_logger.setLevel(number)
    for name in CHATTY:
        logging.getLogger(name).setLevel(
            logging.DEBUG if number <= logging.DEBUG else logging.WARNING
        )
