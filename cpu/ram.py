"""Guest RAM on anonymous memory, with exact tracking of the pages written (cpu.pagemap).

The kernel tracks writes with asynchronous userfaultfd write protection, so finding the pages
written since the last look costs a page-table walk, never a hash of all RAM, and a page only
read stays cheap however much of it there is. The mapping asks for transparent huge pages, and
every 2 MiB is first read, so untouched RAM is the kernel's huge zero page: the scan steps over
it one huge page at a time, and no page tables are spent on it. Unicorn reaches the RAM through
the same host addresses throughout (`mem_map_ptr`), so none of this is visible to the guest.

A look reports every page written, same-value writes included: cpu.pagetrack hashes each in
place (~0.4 us), the state digests list them all (docs/replay.md), and a snapshot keeps only
those whose hash changed."""
from __future__ import annotations

import ctypes
import mmap

import xxhash

from cpu.pagemap import PAGE, WrittenPages

HUGE_PAGE = 2 << 20


# The 16-byte content hash used everywhere a page is named by content: the library's function
# itself, since a wrapper's call costs about what hashing a page does.
page_digest = xxhash.xxh3_128_digest


ZERO_PAGE = bytes(PAGE)
ZERO_DIGEST = page_digest(ZERO_PAGE)


class Ram:
    """`size` bytes of guest RAM at guest physical address 0."""

    def __init__(self, size: int) -> None:
        if size <= 0 or size % PAGE:
            raise ValueError(f"RAM size {size} is not a positive multiple of {PAGE}")
        self.size = size
        self.pages = size // PAGE
        self.mm = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                            prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self._cbuf = (ctypes.c_char * size).from_buffer(self.mm)
        self.address = ctypes.addressof(self._cbuf)
        self.view = memoryview(self.mm)
        if hasattr(mmap, "MADV_HUGEPAGE"):
            self.mm.madvise(mmap.MADV_HUGEPAGE)
        for offset in range(0, size, HUGE_PAGE):  # map the (huge) zero page everywhere
            self.view[offset]
        self._written = WrittenPages(self.address, self.pages)
        self._written.scan()  # the zero pages just mapped: nothing written yet
        self.exact = self._written.exact  # False: every present page counts as written

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
        """Pages written since the last look (or load), in ascending order."""
        return self._written.scan()

    def load_pages(self, pages: dict[int, bytes]) -> None:
        """Give the listed pages this content (others keep theirs), and forget those writes:
        the caller knows what it put there. Look first (`dirty_pages`), or the guest's own
        writes since the last look are forgotten too."""
        view = self.view
        for i, data in pages.items():
            view[i * PAGE:(i + 1) * PAGE] = data
        self._written.scan()

    def close(self) -> None:
        self.view.release()
        self._written.close()
