"""The gateway's clock and the one timestamp format of the Jupyter APIs.

Kernel models (``last_activity``), message headers made by the gateway and by
:mod:`kernelfleet.client` all carry their dates in the format jupyter_server's gateway client
parses, so it is written here once, below everything that renders a date.
"""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def format_timestamp(when: dt.datetime) -> str:
    """Render *when* exactly as jupyter_server's gateway client parses it.

    The client uses ``strptime("%Y-%m-%dT%H:%M:%S.%fZ")``: microseconds are always present (even
    when zero, which ``isoformat`` would drop) and the zone is a literal ``Z``.
    """
    utc = when.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}Z"
