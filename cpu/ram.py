"""Guest RAM on a private mapping of a memfd, with dirty-page tracking by the host kernel.

The memfd holds the RAM as of the last `sync()`; the guest runs on a MAP_PRIVATE mapping of it,
so the first store to a page makes the kernel give that page an anonymous copy. /proc/self/pagemap
tells anonymous pages (written since the last sync) from file pages (unchanged), so finding what
changed costs a 8-bytes-per-page read, not a hash of all RAM. `sync()` writes the changed pages
back to the memfd and drops the private copies (MADV_DONTNEED), making them clean again. Unicorn
reaches the RAM through the same host addresses throughout (`mem_map_ptr`), so none of this is
visible to the guest. The cost of a snapshot or a digest therefore grows with what changed.

Cleaning a page costs a write-back, and the guest's next store to it two page faults (map, then
copy). Pages that are written in every interval (the stack, hot globals) would pay that at
every sync, so a page written in two syncs running stays private ("hot"): each sync copies it and
compares it with what the last sync saw (a memcmp, no faults), and cleans it once it is found
unchanged."""
from __future__ import annotations

import ctypes
import mmap
import os

PAGE = 4096
ZERO_PAGE = bytes(PAGE)
# Top byte of a pagemap entry: bit 7 present, bit 6 swapped, bit 5 file-backed (clean here).
_DIRTY_TOP_BYTE = bytes(1 if (b & 0xC0) and not (b & 0x20) else 0 for b in range(256))


class Ram:
    """`size` bytes of guest RAM at guest physical address 0."""

    def __init__(self, size: int) -> None:
        if size <= 0 or size % PAGE:
            raise ValueError(f"RAM size {size} is not a positive multiple of {PAGE}")
        self.size = size
        self.pages = size // PAGE
        self.fd = os.memfd_create("urr-ram", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, size)
        self.mm = mmap.mmap(self.fd, size, flags=mmap.MAP_PRIVATE,
                            prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self._cbuf = (ctypes.c_char * size).from_buffer(self.mm)
        self.address = ctypes.addressof(self._cbuf)
        self.view = memoryview(self.mm)
        self._pagemap = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        self._hot: dict[int, bytes] = {}  # private pages kept so, with their content at the last sync
        self._reported: set[int] = set()  # pages the last sync reported as changed

    def read(self, addr: int, length: int) -> bytes:
        if addr < 0 or length < 0 or addr + length > self.size:
            raise ValueError(f"memory {addr:#x}+{length} is outside RAM")
        return self.mm[addr:addr + length]

    def write(self, addr: int, data: bytes) -> None:
        if addr < 0 or addr + len(data) > self.size:
            raise ValueError(f"memory {addr:#x}+{len(data)} is outside RAM")
        self.mm[addr:addr + len(data)] = data

    def page(self, index: int) -> bytes:
        return self.mm[index * PAGE:(index + 1) * PAGE]

    def dirty_pages(self) -> list[int]:
        """Pages written since the last sync, in ascending order."""
        raw = os.pread(self._pagemap, self.pages * 8, (self.address // PAGE) * 8)
        flags = raw[7::8].translate(_DIRTY_TOP_BYTE)
        out = []
        i = flags.find(1)
        while i >= 0:
            out.append(i)
            i = flags.find(1, i + 1)
        return out

    def sync(self) -> list[tuple[int, bytes]]:
        """The (index, content) of every page whose content changed since the last sync.

        Pages reported now that were also reported last time stay private (hot); every other
        written page is made clean again."""
        changed: list[tuple[int, bytes]] = []
        clean: list[int] = []
        hot: dict[int, bytes] = {}
        for i in self.dirty_pages():
            data = self.page(i)
            if self._hot.get(i) == data:  # hot, but not written since: clean it now
                clean.append(i)
                continue
            changed.append((i, data))
            if i in self._reported:
                hot[i] = data
            else:
                clean.append(i)
        for start, count in _ranges(clean):  # one write and one madvise per run of pages
            os.pwrite(self.fd, self.view[start * PAGE:(start + count) * PAGE], start * PAGE)
            self.mm.madvise(mmap.MADV_DONTNEED, start * PAGE, count * PAGE)
        self._hot = hot
        self._reported = {i for i, _ in changed}
        return changed

    def load_pages(self, pages: dict[int, bytes]) -> None:
        """Replace the whole RAM: listed pages get their content, all others become zero."""
        os.ftruncate(self.fd, 0)
        os.ftruncate(self.fd, self.size)
        for i in sorted(pages):
            os.pwrite(self.fd, pages[i], i * PAGE)
        self.mm.madvise(mmap.MADV_DONTNEED, 0, self.size)
        self._hot, self._reported = {}, set()

    def close(self) -> None:
        self.view.release()
        os.close(self._pagemap)
        os.close(self.fd)


def _ranges(indices: list[int]) -> list[tuple[int, int]]:
    """Group ascending page indices into (start, count) runs."""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs
