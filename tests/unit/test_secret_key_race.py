"""Replicas starting at the same moment share one secret key file: the first one written wins,
the others read it, and nobody sees half a key (tests/ha once failed on 'File exists')."""

from __future__ import annotations

import threading
from pathlib import Path

from kernelfleet.kernels.secrets import SecretBox


def test_concurrent_first_starts_all_end_with_the_same_whole_key(tmp_path: Path) -> None:
    path = str(tmp_path / "ha" / "shared-store.key")
    start = threading.Barrier(8)
    sealed: list[str] = []
    errors: list[BaseException] = []

    def replica() -> None:
        start.wait()
        try:
            sealed.append(SecretBox.from_file(path).seal({"n": 1}, context="k"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    box = SecretBox.from_file(path)
    assert [box.open(token, context="k") for token in sealed] == [{"n": 1}] * 8
    assert [p.name for p in (tmp_path / "ha").iterdir()] == ["shared-store.key"]
