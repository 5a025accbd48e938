"""The Jupyter messaging protocol, checked the same way against every kernel backend.

Each test runs once per backend (``backends.py``: local kernels, kernels on SSH hosts, …) and
per websocket protocol (legacy JSON, as jupyter_server's gateway client speaks it, and the
``v1.kernel.websocket.jupyter.org`` binary subprotocol), through the real in-process gateway and
real kernels. A new backend joins by adding one entry to ``backends.BACKENDS``.
"""
