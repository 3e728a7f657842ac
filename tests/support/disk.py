"""A real full disk for tests: a small tmpfs, filled and freed at will (mounting needs root)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


class TinyDisk:
    """A 4 MiB tmpfs mounted for one test."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._filler = path / "filler"

    def fill(self) -> None:
        """Take every free byte."""
        with contextlib.suppress(OSError), self._filler.open("ab") as out:
            while True:
                out.write(b"\0" * 4096)
                out.flush()

    def free(self) -> None:
        """Give the bytes back."""
        self._filler.unlink(missing_ok=True)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[TinyDisk]:
    """A small tmpfs under the test's directory; the test is skipped where none can be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode:
        pytest.skip(f"a tmpfs cannot be mounted here ({done.stderr.decode().strip()})")
    try:
        yield TinyDisk(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
