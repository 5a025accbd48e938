"""Summarise a py-spy raw (collapsed) profile: ``python -m benchmarks.pyspy_top FILE [N]``.

Prints the functions with the most samples on top of the stack (self) and anywhere in the
stack (inclusive), as percentages of all samples.
"""

from __future__ import annotations

import collections
import sys


def top(path: str, n: int = 25, grep: str = "") -> str:
    total = 0
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            if grep and grep not in stack:
                continue
            k = int(count)
            total += k
            frames = stack.split(";")
            own[frames[-1]] += k
            for frame in set(frames):
                incl[frame] += k
    out = [f"{path}: {total} samples" + (f" containing {grep!r}" if grep else "")]
    out.append("-- self")
    out += [f"{100 * c / total:5.1f}%  {f}" for f, c in own.most_common(n)]
    out.append("-- inclusive")
    out += [f"{100 * c / total:5.1f}%  {f}" for f, c in incl.most_common(n)]
    return "\n".join(out)


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args:
        sys.exit("usage: python -m benchmarks.pyspy_top FILE [N] [SUBSTRING]")
    print(top(args[0], int(args[1]) if len(args) > 1 else 25, args[2] if len(args) > 2 else ""))
