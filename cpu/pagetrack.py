"""Content hashes of every RAM page, kept current at the cost of the pages that changed.

Digests (divergence detection) and snapshots both need "what is in RAM now" by content. The
tracker asks the RAM for the pages written since the last look (cpu.ram's pagemap tracking),
rehashes only those, and keeps an order-independent hash of the whole RAM (XOR of per-page
hashes that fold in the page number, brought up to date when a digest asks) so a full-RAM digest
costs what changed since the last one. Snapshots take
what changed since the previous snapshot (`take_snapshot_changes`), so their cost too follows
what the guest wrote, not how much RAM it uses."""
from __future__ import annotations

from typing import Optional

import xxhash

from cpu.ram import ZERO_DIGEST, Ram, page_digest

__all__ = ["PageTracker", "page_digest"]


def _fold(index: int, digest: bytes) -> int:
    return xxhash.xxh3_64_intdigest(digest, seed=index)


class PageTracker:
    def __init__(self, ram: Ram) -> None:
        self.ram = ram
        self.hashes: dict[int, bytes] = {}  # non-zero pages only
        self._ram_hash = 0  # as of the last digest, before the changes in `_unfolded`
        # Pages changed since the last digest -> the hash `_ram_hash` holds for them (None:
        # zero). Folding waits for the digest: a snapshot's update, ten times as frequent, skips it.
        self._unfolded: dict[int, Optional[bytes]] = {}
        # Pages that may have been written since the last digest, content changed or not: a
        # digest lists them all, so a search for writes can trust a page it does not list.
        self._written: set[int] = set()
        # Pages changed since the last snapshot: page -> digest (None: now zero); kept only
        # while something takes snapshots (`for_snapshots`).
        self.for_snapshots = False
        self.since_snapshot: dict[int, Optional[bytes]] = {}

    def update(self) -> None:
        """Rehash the pages written since the last update."""
        for index, digest in self.ram.sync(self._written):
            old = self.hashes.get(index)
            new = None if digest == ZERO_DIGEST else digest
            if old == new:
                continue
            if new is None:
                del self.hashes[index]
            else:
                self.hashes[index] = new
            self._unfolded.setdefault(index, old)
            if self.for_snapshots:
                self.since_snapshot[index] = new

    def take_digest(self) -> tuple[int, list[tuple[int, int]]]:
        """An order-independent 64-bit hash of all RAM as of the last update, and the (page,
        64-bit hash) of every page that may have been written since the last call, same-value
        writes included (0 stands for a zero page)."""
        h = self._ram_hash
        for index, folded in self._unfolded.items():
            now = self.hashes.get(index)
            if folded != now:
                if folded is not None:
                    h ^= _fold(index, folded)
                if now is not None:
                    h ^= _fold(index, now)
        changes = [(index, self.hash64(index)) for index in sorted(self._written.union(self._unfolded))]
        self._unfolded.clear()
        self._written.clear()
        self._ram_hash = h
        return h, changes

    def take_snapshot_changes(self) -> dict[int, Optional[bytes]]:
        """Pages changed since the last call (page -> digest, None for a page now zero), up to
        the last update: their content is what the RAM holds now."""
        changes, self.since_snapshot = self.since_snapshot, {}
        return changes

    def hash64(self, index: int) -> int:
        h = self.hashes.get(index)
        return int.from_bytes(h[:8], "little") if h else 0

    def load(self, pages: dict[int, bytes], contents: dict[bytes, bytes]) -> None:
        """Replace RAM with snapshot pages (page -> digest, digest -> content) and rebuild hashes."""
        self.ram.load_pages({i: contents[h] for i, h in pages.items()})
        self.hashes = dict(pages)
        self._ram_hash = 0
        for i, h in pages.items():
            self._ram_hash ^= _fold(i, h)
        self._unfolded.clear()
        self._written.clear()
        self.since_snapshot.clear()
