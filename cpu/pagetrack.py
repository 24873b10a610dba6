"""Content hashes of every RAM page, kept current at the cost of the pages written.

Digests (divergence detection) and snapshots both need "what is in RAM now" by content. The
tracker asks the RAM for the pages written since the last look (cpu.ram), rehashes only those,
and keeps an order-independent hash of the whole RAM (XOR of per-page hashes that fold in the
page number, brought up to date when a digest asks) so a full-RAM digest costs what changed
since the last one. The pages' hashes live in the RAM's page tree (cpu.pagetree), one flat
table of 16 bytes a page: a snapshot takes the pages and tree nodes changed since the previous
snapshot, and a restore compares trees and rewrites only the pages that differ, so both cost
what the guest wrote, not how much RAM it uses.

The work per written page is kept to a hash and a few operations on bytes (a page written was
~8 us of the emulator's time with a dictionary of hashes, a set per purpose and a tuple per page
handed from one to the next: the cost of bigmem's snapshots and of a 1 GiB guest's first pass)."""
from __future__ import annotations

import struct
from functools import cached_property
from typing import Callable, Iterator, Optional

import xxhash

from cpu.pagemap import PAGE
from cpu.pagetree import EMPTY, HASH, NodeSource, PageTree, build
from cpu.ram import ZERO_DIGEST, ZERO_PAGE, Ram, page_digest

__all__ = ["PageContent", "PageTracker", "page_digest"]

_DIGEST_INDEX = struct.Struct("<I")  # a digest's page entry: this, then the hash's first 8 bytes


def _fold(index: int, digest: bytes) -> int:
    return xxhash.xxh3_64_intdigest(digest, seed=index)


class PageTracker:
    def __init__(self, ram: Ram) -> None:
        self.ram = ram
        self.tree = PageTree(ram.pages)
        self.table = self.tree.table  # page -> its content hash at page * HASH (EMPTY: zero)
        self.count = 0  # non-zero pages
        self._ram_hash = 0  # as of the last digest, before the changes in `_unfolded`
        # Pages written since the last digest -> the hash `_ram_hash` holds for them (EMPTY:
        # zero). Folding waits for the digest: a snapshot's update, ten times as frequent, skips it.
        self._unfolded: dict[int, bytes] = {}
        # Pages whose hash changed since the last snapshot; kept only while something takes
        # snapshots (`for_snapshots`).
        self.for_snapshots = False
        self.since_snapshot: set[int] = set()

    def update(self) -> None:
        """Rehash the pages written since the last update."""
        view, table, keep_old = self.ram.view, self.table, self._unfolded.setdefault
        changed = []
        count = self.count
        for index in self.ram.dirty_pages():
            at = index * HASH
            new = page_digest(view[index * PAGE:(index + 1) * PAGE])
            old = table[at:at + HASH]
            keep_old(index, old)  # written, whatever it wrote: the digest lists it
            if new == ZERO_DIGEST:
                new = EMPTY
            if new != old:
                table[at:at + HASH] = new
                changed.append(index)
                if old == EMPTY:
                    count += 1
                elif new == EMPTY:
                    count -= 1
        self.count = count
        self.tree.dirty.update(changed)
        if self.for_snapshots:
            self.since_snapshot.update(changed)

    def take_digest(self) -> tuple[int, bytes]:
        """An order-independent 64-bit hash of all RAM as of the last update, and the pages
        written since the last call as a digest lists them (read by replay.digest.unpack_pages:
        the page number and the first 8 bytes of its hash, zero for a zero page, ascending),
        same-value writes included when the RAM tracks writes exactly (`Ram.exact`)."""
        h = self._ram_hash
        table, pack = self.table, _DIGEST_INDEX.pack
        listed = []
        for index, folded in sorted(self._unfolded.items()):
            at = index * HASH
            now = table[at:at + HASH]
            if folded != now:
                if folded != EMPTY:
                    h ^= _fold(index, folded)
                if now != EMPTY:
                    h ^= _fold(index, now)
            listed.append(pack(index))
            listed.append(now[:8])
        self._unfolded.clear()
        self._ram_hash = h
        return h, b"".join(listed)

    def take_snapshot_changes(self, tree: bool = True) -> tuple[PageContent, Optional[bytes], dict[bytes, bytes]]:
        """The content of the pages changed since the last call (as of the last update); the
        tree's root and the tree nodes made since the tree was last brought up to date, or
        (not `tree`) None and none: whoever keeps a copy of the tree makes them from
        `PageContent.changes`, and this one catches up when next asked for its root."""
        changed, self.since_snapshot = self.since_snapshot, set()
        if not tree:
            return PageContent(self, changed, len(changed)), None, {}
        made = self.tree.refresh()
        return PageContent(self, changed, len(changed)), self.tree.root(), made

    def whole_content(self) -> PageContent:
        """The content of every non-zero page (after an update)."""
        self.tree.refresh()
        return PageContent(self, None, self.count)

    def hashes(self) -> Iterator[tuple[int, bytes]]:
        """(page, hash) of every non-zero page (after an update), ascending: O(RAM touched)."""
        self.tree.refresh()
        return self.tree.nonzero()

    def whole_tree(self) -> tuple[bytes, dict[bytes, bytes]]:
        """The root and every node of the tree now (after an update)."""
        self.tree.refresh()
        return self.tree.root(), self.tree.nodes()

    def root(self) -> bytes:
        """The tree's root now (after an update)."""
        self.tree.refresh()
        return self.tree.root()

    def hash64(self, index: int) -> int:
        """The first 8 bytes of a page's hash as a digest lists them (0: a zero page)."""
        return int.from_bytes(self.table[index * HASH:index * HASH + 8], "little")

    def load_tree(self, root: bytes, node: NodeSource, blob: NodeSource,
                  blobs: Optional[Callable[[list[bytes]], dict[bytes, bytes]]] = None) -> int:
        """Make RAM the page tree `root` (nodes from `node`, page content from `blob`, or all
        at once from `blobs`), rewriting only the pages that differ from it now; how many did.
        The next snapshot's changes are counted from this tree."""
        self.update()
        self.tree.refresh()
        changed = self.tree.changed_pages(root, node)  # the table holds the new hashes now
        wanted = list({new for _, _, new in changed if new != EMPTY})
        fetched = blobs(wanted) if blobs is not None else {h: blob(h) for h in wanted}
        fetched[EMPTY] = ZERO_PAGE
        self.ram.load_pages({index: fetched[new] for index, _, new in changed})
        keep_old = self._unfolded.setdefault
        for index, old, new in changed:
            keep_old(index, old)
            self.count += (new != EMPTY) - (old != EMPTY)
        self.since_snapshot.clear()
        return len(changed)

    def load(self, pages: dict[int, bytes], contents: dict[bytes, bytes]) -> None:
        """Replace RAM with snapshot pages (page -> digest, digest -> content)."""
        root, nodes = build(pages, self.ram.pages)
        self.load_tree(root, nodes.__getitem__, contents.__getitem__)


class PageContent:
    """The RAM content a snapshot stores: the pages changed since the previous snapshot (or every
    non-zero page), named but not read yet, and valid until the guest runs again.

    Reading them by hash costs a table slice, a view and a dictionary entry per page in Python
    (~1.5 us: 100 ms of the emulator for bigmem's first 65,536 pages), so a capture big enough to
    be fed to the catalog writer by a forked copy of the emulator (snapshots.writer) leaves the
    reading to that copy, which sees RAM and the hash table as they were at the fork."""

    def __init__(self, tracker: PageTracker, pages: Optional[set[int]], count: int) -> None:
        self._tracker = tracker
        self._pages = pages  # None: every non-zero page
        self.count = count  # pages of content at most (changed pages may now be zero, or alike)

    @cached_property
    def blobs(self) -> dict[bytes, memoryview]:
        """The content of the pages that are not zero, by hash, as views of the live RAM."""
        view = self._tracker.ram.view
        return {h: view[index * PAGE:(index + 1) * PAGE] for index, h in self._hashes()}

    def changes(self) -> tuple[list[int], bytes]:
        """The changed pages and their hashes (EMPTY: zero), HASH bytes each in one string: what
        a copy of the page tree needs to follow RAM (`PageTree.set_many`)."""
        if self._pages is None:
            raise ValueError("a whole capture gives its tree, not changes")
        table = self._tracker.table
        pages = list(self._pages)
        return pages, b"".join([table[index * HASH:(index + 1) * HASH] for index in pages])

    def _hashes(self) -> Iterator[tuple[int, bytes]]:
        if self._pages is None:
            yield from self._tracker.tree.nonzero()
            return
        table = self._tracker.table
        for index in self._pages:
            h = table[index * HASH:(index + 1) * HASH]
            if h != EMPTY:
                yield index, h
