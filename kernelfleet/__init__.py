"""kernelfleet: a Jupyter kernel gateway that starts kernels on a fleet of hosts."""

__version__ = "0.1.0"
