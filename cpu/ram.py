"""Guest RAM on a private mapping of a memfd, with dirty-page tracking by the host kernel.

The memfd holds the RAM as it was when pages were last cleaned; the guest runs on a MAP_PRIVATE
mapping of it, so the first store to a page makes the kernel give that page an anonymous copy.
The kernel tells anonymous pages from file pages (cpu.pagemap), so finding the pages that may
have changed costs a page-table walk, not a hash of all RAM. Unicorn reaches the RAM through the
same host addresses throughout (`mem_map_ptr`), so none of this is visible to the guest, and the
cost of a snapshot or a digest grows with what the guest writes.

Once written, a page stays private while the guest keeps writing it: each sync hashes it in
place (~0.4 us) and reports it only if its content changed. Cleaning it instead (write back to
the memfd, MADV_DONTNEED) costs two system calls and the guest's next store a page fault, ~7 us
in all, which pages written every few intervals (stacks, buffers, hot globals) would pay again
and again. A page unchanged for IDLE_SYNCS syncs running is cleaned, and so are the longest idle
ones beyond MAX_PRIVATE, which bounds the cost of a sync."""
from __future__ import annotations

import ctypes
import mmap
import os
from typing import Optional

import xxhash

from cpu.pagemap import PAGE, WrittenPages

IDLE_SYNCS = 4  # syncs a private page may go unchanged before it is cleaned
MAX_PRIVATE = 1024  # private pages (4 MiB) kept at most between syncs


# The 16-byte content hash used everywhere a page is named by content: the library's function
# itself, since a wrapper's call costs about what hashing a page does.
page_digest = xxhash.xxh3_128_digest


ZERO_DIGEST = page_digest(bytes(PAGE))


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
        self._written = WrittenPages(self.address, self.pages)
        # Private pages: index -> [digest at the last sync, syncs since it last changed, a view
        # of the page (made once: a slice per page per sync costs more than the hash)].
        self._private: dict[int, list] = {}

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

    def page_view(self, index: int) -> memoryview:
        """A page without copying it: valid until the guest writes it."""
        return self.view[index * PAGE:(index + 1) * PAGE]

    def dirty_pages(self) -> list[int]:
        """Pages written since the last sync, in ascending order."""
        return self._written.scan()

    def sync(self, written: Optional[set[int]] = None) -> list[tuple[int, bytes]]:
        """(index, content digest) of every page whose content changed since the last sync.

        `written`, if given, gets every page that may have been written since the last sync,
        content changed or not (a superset: all private pages), for the digests' written lists."""
        changed: list[tuple[int, bytes]] = []
        clean: list[int] = []
        private = self._private
        dirty = self.dirty_pages()
        if written is not None:
            written.update(dirty)
        for i in dirty:
            entry = private.get(i)
            if entry is None:
                entry = private[i] = [None, 0, self.page_view(i)]
            digest = page_digest(entry[2])
            if entry[0] != digest:
                changed.append((i, digest))
                entry[0], entry[1] = digest, 0
            else:
                entry[1] += 1
                if entry[1] >= IDLE_SYNCS:
                    clean.append(i)
        if len(private) - len(clean) > MAX_PRIVATE:
            idle = sorted((e[1], i) for i, e in private.items() if e[1] < IDLE_SYNCS)
            clean += [i for _, i in idle[len(idle) - (len(private) - len(clean) - MAX_PRIVATE):]]
        for i in clean:
            private.pop(i)[2].release()
        for start, count in _ranges(sorted(clean)):  # one write and one madvise per run of pages
            os.pwrite(self.fd, self.view[start * PAGE:(start + count) * PAGE], start * PAGE)
            self.mm.madvise(mmap.MADV_DONTNEED, start * PAGE, count * PAGE)
        return changed

    def load_pages(self, pages: dict[int, bytes]) -> None:
        """Replace the whole RAM: listed pages get their content, all others become zero."""
        os.ftruncate(self.fd, 0)
        os.ftruncate(self.fd, self.size)
        for i in sorted(pages):
            os.pwrite(self.fd, pages[i], i * PAGE)
        self.mm.madvise(mmap.MADV_DONTNEED, 0, self.size)
        self._forget_private()

    def _forget_private(self) -> None:
        for entry in self._private.values():
            entry[2].release()
        self._private = {}

    def close(self) -> None:
        self._forget_private()
        self.view.release()
        self._written.close()
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
