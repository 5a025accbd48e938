"""``python -m kernelfleet`` is the ``kernelfleet`` command."""

from kernelfleet.cli import main

if __name__ == "__main__":
    main()
