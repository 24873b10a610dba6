"""Disk images: a raw base opened read-only plus a copy-on-write overlay in memory.

Recording never modifies the base image: guest writes land in the overlay (as QEMU's blkreplay
overlay and Bochs's redo log do). In replay there is no base at all; the data the guest reads
comes from the event log."""
from __future__ import annotations

import hashlib
import os
import stat
from typing import Optional

SECTOR = 512


class DiskImage:
    """`DiskImage(path)` opens a raw image; `DiskImage.without_base(sectors)` is a replay disk."""

    def __init__(self, path: Optional[str], sectors: int = 0) -> None:
        self.path = path
        self.overlay: dict[int, bytes] = {}
        self.written: set[int] = set()  # sectors written since the last `take_written`
        self._sha256: Optional[str] = None
        self.fd: Optional[int] = None
        if path is None:
            self.size = sectors * SECTOR
        else:
            try:
                self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                st = os.fstat(self.fd)
            except OSError as e:
                raise ValueError(f"cannot open disk image {path}: {e.strerror}") from None
            if not stat.S_ISREG(st.st_mode):
                os.close(self.fd)
                raise ValueError(f"disk image {path} is not a regular file")
            if st.st_size < SECTOR:
                os.close(self.fd)
                raise ValueError(f"disk image {path} is smaller than one sector")
            self.size = st.st_size
        self.sectors = self.size // SECTOR  # a partial last sector is not addressable

    @classmethod
    def without_base(cls, sectors: int) -> "DiskImage":
        """A disk of known size whose reads must come from elsewhere (the event log)."""
        return cls(None, sectors)

    def attach_base(self, image: "DiskImage") -> None:
        """Read unwritten sectors from `image`'s base from now on (a replay's disk going live)."""
        if image.sectors != self.sectors:
            raise ValueError(f"disk image {image.path} has {image.sectors} sectors, the disk {self.sectors}")
        self.path, self.fd, self._sha256 = image.path, image.fd, image._sha256

    def read(self, lba: int, count: int) -> bytes:
        """`count` sectors from `lba`: overlay first, then the base (zeros past its end)."""
        out = bytearray()
        for s in range(lba, lba + count):
            data = self.overlay.get(s)
            if data is None:
                if self.fd is None:
                    raise ValueError(f"sector {s} is neither written nor logged: a disk without its "
                                     "base image can only be read through the replay log")
                try:
                    data = os.pread(self.fd, SECTOR, s * SECTOR).ljust(SECTOR, b"\0")
                except OSError as e:
                    raise ValueError(f"cannot read disk image {self.path}: {e.strerror}") from None
            out += data
        return bytes(out)

    def write(self, lba: int, data: bytes) -> None:
        """Whole sectors into the overlay (a short last one is padded with zeros)."""
        for i in range(0, len(data), SECTOR):
            self.overlay[lba + i // SECTOR] = bytes(data[i:i + SECTOR]).ljust(SECTOR, b"\0")
            self.written.add(lba + i // SECTOR)

    def identity(self) -> dict:
        """What names the base image: its path, size and content hash (computed once)."""
        if self.fd is not None and self._sha256 is None:
            h = hashlib.sha256()
            offset = 0
            while chunk := os.pread(self.fd, 1 << 20, offset):
                h.update(chunk)
                offset += len(chunk)
            self._sha256 = h.hexdigest()
        return {"path": self.path, "size": self.size, "sha256": self._sha256}

    def get_overlay(self) -> dict[int, bytes]:
        """The written sectors, in sector order (not write order, which a restore cannot know)."""
        return {s: self.overlay[s] for s in sorted(self.overlay)}

    def take_written(self) -> dict[int, bytes]:
        """The sectors written since the last call (snapshots store only those anew)."""
        out = {s: self.overlay[s] for s in sorted(self.written)}
        self.written = set()
        return out

    def set_overlay(self, overlay: dict[int, bytes]) -> None:
        self.overlay = dict(overlay)
        self.written = set()
