"""Kernel environments: Python environments built from a package list (with uv, in a sandbox
that runs as an unprivileged user and reaches only the package index through an allow-list
proxy), archived, shipped to the hosts and clusters kernels run on, and offered as kernelspecs.
This package sits between :mod:`kernelfleet.dashboard` and the gateway, specs and images
layers."""
