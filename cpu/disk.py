"""Disk images: a raw base opened read-only plus a copy-on-write overlay in memory.

Recording never modifies the base image: guest writes land in the overlay (as QEMU's blkreplay
overlay and Bochs's redo log do). In replay there is no base at all; the data the guest reads
comes from the event log."""
from __future__ import annotations

import hashlib
import os
from typing import Optional

SECTOR = 512


class DiskImage:
    def __init__(self, path: Optional[str], sectors: Optional[int] = None) -> None:
        self.path = path
        self.overlay: dict[int, bytes] = {}
        self._sha256: Optional[str] = None
        self.fd: Optional[int] = None
        if path is not None:
            try:
                self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                size = os.fstat(self.fd).st_size
            except OSError as e:
                raise ValueError(f"cannot open disk image {path}: {e.strerror}") from None
            if size < SECTOR:
                raise ValueError(f"disk image {path} is smaller than one sector")
            self.sectors = size // SECTOR
        else:
            self.sectors = sectors or 0

    @classmethod
    def without_base(cls, sectors: int) -> "DiskImage":
        """A disk of known size whose reads must come from elsewhere (the event log)."""
        return cls(None, sectors)

    def read(self, lba: int, count: int) -> bytes:
        out = bytearray()
        for s in range(lba, lba + count):
            data = self.overlay.get(s)
            if data is None:
                if self.fd is None:
                    raise ValueError(f"sector {s} is not available without the disk image")
                data = os.pread(self.fd, SECTOR, s * SECTOR).ljust(SECTOR, b"\0")
            out += data
        return bytes(out)

    def write(self, lba: int, data: bytes) -> None:
        for i in range(0, len(data), SECTOR):
            self.overlay[lba + i // SECTOR] = bytes(data[i:i + SECTOR]).ljust(SECTOR, b"\0")

    def identity(self) -> dict:
        """What names the base image: its path, size and content hash (computed once)."""
        if self.fd is not None and self._sha256 is None:
            h = hashlib.sha256()
            offset = 0
            while chunk := os.pread(self.fd, 1 << 20, offset):
                h.update(chunk)
                offset += len(chunk)
            self._sha256 = h.hexdigest()
        return {"path": self.path, "size": self.sectors * SECTOR, "sha256": self._sha256}

    def get_overlay(self) -> dict[int, bytes]:
        return dict(self.overlay)

    def set_overlay(self, overlay: dict[int, bytes]) -> None:
        self.overlay = dict(overlay)
