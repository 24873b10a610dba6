"""Content hashes of every RAM page, kept current at the cost of the pages written.

Digests (divergence detection) and snapshots both need "what is in RAM now" by content. The
tracker asks the RAM for the pages written since the last look (cpu.ram), rehashes only those,
and keeps an order-independent hash of the whole RAM (XOR of per-page hashes that fold in the
page number, brought up to date when a digest asks) so a full-RAM digest costs what changed
since the last one. It also keeps the RAM's page tree (cpu.pagetree): a snapshot takes the
pages and tree nodes changed since the previous snapshot, and a restore compares trees and
rewrites only the pages that differ, so both cost what the guest wrote, not how much RAM it
uses."""
from __future__ import annotations

from typing import Callable, Optional

import xxhash

from cpu.pagetree import EMPTY, NodeSource, PageTree, build
from cpu.ram import ZERO_DIGEST, ZERO_PAGE, Ram, page_digest

__all__ = ["PageTracker", "page_digest"]


def _fold(index: int, digest: bytes) -> int:
    return xxhash.xxh3_64_intdigest(digest, seed=index)


class PageTracker:
    def __init__(self, ram: Ram) -> None:
        self.ram = ram
        self.hashes: dict[int, bytes] = {}  # non-zero pages only
        self.tree = PageTree(ram.pages)
        self._ram_hash = 0  # as of the last digest, before the changes in `_unfolded`
        # Pages written since the last digest -> the hash `_ram_hash` holds for them (None:
        # zero). Folding waits for the digest: a snapshot's update, ten times as frequent, skips it.
        self._unfolded: dict[int, Optional[bytes]] = {}
        # Pages changed since the last snapshot: page -> digest (None: now zero); kept only
        # while something takes snapshots (`for_snapshots`).
        self.for_snapshots = False
        self.since_snapshot: dict[int, Optional[bytes]] = {}

    def update(self) -> None:
        """Rehash the pages written since the last update."""
        unfolded, hashes = self._unfolded, self.hashes
        for index, digest in self.ram.sync():
            old = hashes.get(index)
            if index not in unfolded:  # written, whatever it wrote: the digest lists it
                unfolded[index] = old
            new = None if digest == ZERO_DIGEST else digest
            if old == new:
                continue
            if new is None:
                del hashes[index]
            else:
                hashes[index] = new
            self.tree.touch(index)
            if self.for_snapshots:
                self.since_snapshot[index] = new

    def take_digest(self) -> tuple[int, list[tuple[int, int]]]:
        """An order-independent 64-bit hash of all RAM as of the last update, and the (page,
        64-bit hash) of every page written since the last call (0 stands for a zero page),
        same-value writes included when the RAM tracks writes exactly (`Ram.exact`)."""
        h = self._ram_hash
        changes = []
        for index in sorted(self._unfolded):
            folded, now = self._unfolded[index], self.hashes.get(index)
            if folded != now:
                if folded is not None:
                    h ^= _fold(index, folded)
                if now is not None:
                    h ^= _fold(index, now)
            changes.append((index, self.hash64(index)))
        self._unfolded.clear()
        self._ram_hash = h
        return h, changes

    def take_snapshot_changes(self) -> tuple[dict[int, Optional[bytes]], bytes, dict[bytes, bytes]]:
        """Pages changed since the last call (page -> digest, None for a page now zero), up to
        the last update (their content is what the RAM holds now), the tree's root and the tree
        nodes made since the last call."""
        changes, self.since_snapshot = self.since_snapshot, {}
        made = self.tree.refresh(self.hashes)
        return changes, self.tree.root(), made

    def whole_tree(self) -> tuple[bytes, dict[bytes, bytes]]:
        """The root and every node of the tree now (after an update)."""
        self.tree.refresh(self.hashes)
        return self.tree.root(), self.tree.nodes()

    def root(self) -> bytes:
        """The tree's root now (after an update)."""
        self.tree.refresh(self.hashes)
        return self.tree.root()

    def hash64(self, index: int) -> int:
        h = self.hashes.get(index)
        return int.from_bytes(h[:8], "little") if h else 0

    def load_tree(self, root: bytes, node: NodeSource, blob: NodeSource,
                  blobs: Optional[Callable[[list[bytes]], dict[bytes, bytes]]] = None) -> int:
        """Make RAM the page tree `root` (nodes from `node`, page content from `blob`, or all
        at once from `blobs`), rewriting only the pages that differ from it now; how many did.
        The next snapshot's changes are counted from this tree."""
        self.update()
        self.tree.refresh(self.hashes)
        changed = self.tree.changed_pages(root, node)
        wanted = list({h for h in changed.values() if h != EMPTY})
        fetched = blobs(wanted) if blobs is not None else {h: blob(h) for h in wanted}
        fetched[EMPTY] = ZERO_PAGE
        self.ram.load_pages({index: fetched[h] for index, h in changed.items()})
        unfolded = self._unfolded
        for index, h in changed.items():
            old = self.hashes.get(index)
            if index not in unfolded:
                unfolded[index] = old
            if h == EMPTY:
                del self.hashes[index]
            else:
                self.hashes[index] = h
        self.since_snapshot = {}
        return len(changed)

    def load(self, pages: dict[int, bytes], contents: dict[bytes, bytes]) -> None:
        """Replace RAM with snapshot pages (page -> digest, digest -> content)."""
        root, nodes = build(pages, self.ram.pages)
        self.load_tree(root, nodes.__getitem__, contents.__getitem__)
