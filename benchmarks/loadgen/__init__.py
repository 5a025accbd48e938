"""A load generator for kernel gateways that is not the bottleneck (issue 15).

Hundreds of websocket clients on shared kernels, run by several worker processes, each client
verifying every message it receives (no loss, no duplicates, no cross-talk; gateway loss reports
recognised), with latency, throughput and the CPU of the client and of the watched processes.

- :mod:`~benchmarks.loadgen.verify`: what a client expects of its websocket (pure);
- :mod:`~benchmarks.loadgen.client`: one client (round trips, reconnect mode);
- :mod:`~benchmarks.loadgen.worker`: one worker process's asyncio loop of clients;
- :mod:`~benchmarks.loadgen.runner`: the workers of a run and its summary;
- ``python -m benchmarks.loadgen --help``: the command line.
"""

from benchmarks.loadgen.client import V1, ClientSettings, LoadClient
from benchmarks.loadgen.runner import LoadConfig, LoadRunner, children, pin, run_load
from benchmarks.loadgen.verify import ClientVerifier, Counts, loss_report

__all__ = [
    "V1",
    "ClientSettings",
    "ClientVerifier",
    "Counts",
    "LoadClient",
    "LoadConfig",
    "LoadRunner",
    "children",
    "loss_report",
    "pin",
    "run_load",
]
