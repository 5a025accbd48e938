"""Kernel images built without a registry: Debian root filesystems (``mmdebstrap``) written
as OCI archives that ``ctr images import`` and ``docker load`` accept.

- :mod:`kernelfleet.images.oci`: the OCI archive writer and reader (pure but for file I/O).
- :mod:`kernelfleet.images.recipes`: what each image holds, and the hash that keys the cache.
- :mod:`kernelfleet.images.build`: running ``mmdebstrap``, the cache, importing into runtimes.
- :mod:`kernelfleet.cli.image`: ``kernelfleet image build|import|list``.
"""
