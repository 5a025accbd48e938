"""``kernelfleet spec migrate``: Enterprise Gateway and Gateway Provisioners kernelspecs into
kernelfleet ones.

- :mod:`.model`: what a migration found (:class:`~.model.Finding`) and decided
  (:class:`~.model.Plan`);
- :mod:`.spark`: their ``SPARK_OPTS`` into our Spark options;
- :mod:`.plan`: one kernelspec's mapping (pure);
- :mod:`.apply`: finding their kernelspecs on disk and writing ours (I/O).
"""
