"""RAM by content as a tree of page hashes, stored as git stores trees.

A leaf lists the hashes of FANOUT consecutive pages, a middle node the hashes of FANOUT
consecutive leaves (16 MiB of RAM), and the root the hashes of the middle nodes (256 of them
for 4 GiB, 32 for 512 MiB). Nodes are named by the hash of their bytes and stored once per
distinct content, so a snapshot that changed k pages adds at most k leaves, k middle nodes and a
root, whatever the RAM size, and unchanged runs are shared by every snapshot that has them.
EMPTY names a zero page and a node whose entries are all EMPTY: never stored, never loaded.

Comparing two trees top-down visits only the subtrees whose hashes differ, so a restore loads
only the pages that differ from the machine's current RAM (`changed_pages`)."""
from __future__ import annotations

import mmap
import struct
from typing import Callable, Iterator, Optional

from cpu.ram import page_digest

HASH = 16
EMPTY = bytes(HASH)
FANOUT = 64
NODE_BYTES = FANOUT * HASH
_EMPTY_NODE = bytes(NODE_BYTES)
MID_PAGES = FANOUT * FANOUT

NodeSource = Callable[[bytes], bytes]  # node hash -> its bytes (never asked for EMPTY)


_NODE = struct.Struct(f"{HASH}s" * FANOUT)


def entries(node: bytes) -> list[bytes]:
    """The hashes a node or a root lists (struct splits a node ~4x faster than slicing)."""
    if len(node) == NODE_BYTES:
        return list(_NODE.unpack(node))
    return [node[i:i + HASH] for i in range(0, len(node), HASH)]


def node_hash(node: bytes) -> bytes:
    return EMPTY if node == _EMPTY_NODE else page_digest(node)


def children(node_bytes: bytes) -> list[bytes]:
    """The non-empty hashes a node (or a root) names."""
    return [h for h in entries(node_bytes) if h != EMPTY]


def mids_for(pages: int) -> int:
    return -(-pages // MID_PAGES)


class PageTree:
    """The running tree of one RAM: leaf and middle hashes kept current at the cost of the
    pages whose hashes changed (`set` or the table and `dirty`, then `refresh`).

    Every page's hash sits in one flat table (16 bytes a page, zero for EMPTY), laid out as the
    leaves are, so a leaf's bytes are a slice of it: refreshing a leaf costs a slice and a hash,
    not a lookup per page, and a page costs a 16-byte store. It is the machine's only record of
    its pages' hashes (cpu.pagetrack): no Python object per page. The table is anonymous memory
    (untouched RAM costs none of it); the leaves' hashes sit in a second, 64 times smaller."""

    def __init__(self, pages: int) -> None:
        self.pages = pages
        mids = mids_for(pages)
        # Page -> its content hash (EMPTY: zero) at page * HASH: the running tracker writes it
        # directly (cpu.pagetrack) and says which pages it changed in `dirty`.
        # Private: a forked copy (a feeder, snapshots.writer) must keep the hashes of the fork.
        self.table = mmap.mmap(-1, mids * MID_PAGES * HASH, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._leaf_table = bytearray(mids * FANOUT * HASH)
        self.mids = [EMPTY] * mids
        self.dirty: set[int] = set()  # pages whose hash may have changed since the last refresh

    def set(self, page: int, h: bytes) -> None:
        """Give a page its hash (EMPTY: zero), from the next refresh on."""
        self.table[page * HASH:(page + 1) * HASH] = h
        self.dirty.add(page)

    def set_many(self, pages: list[int], hashes: bytes) -> None:
        """`set` for each page, its hash the next HASH bytes of `hashes` (`PageContent.changes`)."""
        if len(hashes) != len(pages) * HASH or (pages and not 0 <= min(pages) <= max(pages) < self.pages):
            raise ValueError(f"{len(hashes)} bytes of hashes for {len(pages)} pages, or a page outside RAM")
        table = self.table
        for at, page in enumerate(pages):
            table[page * HASH:(page + 1) * HASH] = hashes[at * HASH:(at + 1) * HASH]
        self.dirty.update(pages)

    def refresh(self) -> dict[bytes, bytes]:
        """Rehash the leaves and middle nodes above the dirty pages; the nodes made (hash ->
        bytes), EMPTY ones left out."""
        made: dict[bytes, bytes] = {}
        table, leaf_table = self.table, self._leaf_table
        leaves = {page // FANOUT for page in self.dirty}
        self.dirty.clear()
        mids = set()
        for leaf in leaves:
            node = table[leaf * NODE_BYTES:(leaf + 1) * NODE_BYTES]
            h = node_hash(node)
            at = leaf * HASH
            if leaf_table[at:at + HASH] != h:
                leaf_table[at:at + HASH] = h
                mids.add(leaf // FANOUT)
                if h != EMPTY:
                    made[h] = node
        for mid in mids:
            node = bytes(leaf_table[mid * NODE_BYTES:(mid + 1) * NODE_BYTES])
            h = self.mids[mid] = node_hash(node)
            if h != EMPTY:
                made[h] = node
        return made

    def nonzero(self) -> Iterator[tuple[int, bytes]]:
        """(page, hash) of every non-zero page as of the last refresh, ascending: a walk of
        the leaves that are not EMPTY."""
        table, leaf_table = self.table, self._leaf_table
        for leaf, h in enumerate(entries(bytes(leaf_table))):
            if h != EMPTY:
                base = leaf * FANOUT
                for k, ph in enumerate(entries(table[leaf * NODE_BYTES:(leaf + 1) * NODE_BYTES])):
                    if ph != EMPTY:
                        yield base + k, ph

    def root(self) -> bytes:
        """The root as of the last refresh."""
        return b"".join(self.mids)

    def nodes(self) -> dict[bytes, bytes]:
        """Every non-empty node of the tree as of the last refresh (a whole snapshot's)."""
        out: dict[bytes, bytes] = {}
        table, leaf_table = self.table, self._leaf_table
        for mid, mh in enumerate(self.mids):
            if mh == EMPTY:
                continue
            node = bytes(leaf_table[mid * NODE_BYTES:(mid + 1) * NODE_BYTES])
            out[mh] = node
            for j, h in enumerate(entries(node)):
                if h != EMPTY:
                    leaf = mid * FANOUT + j
                    out[h] = table[leaf * NODE_BYTES:(leaf + 1) * NODE_BYTES]
        return out

    def changed_pages(self, root: bytes, node: NodeSource) -> list[tuple[int, bytes, bytes]]:
        """The pages whose hash in the tree `root` differs from this tree's (as of the last
        refresh), as (page, this tree's hash, that tree's hash; EMPTY: zero), found top-down;
        this tree then becomes that one."""
        if len(root) != len(self.mids) * HASH:
            raise ValueError(f"a tree of {len(root) // HASH} middle nodes does not fit RAM of "
                             f"{len(self.mids)}")
        out: list[tuple[int, bytes, bytes]] = []
        table, leaf_table = self.table, self._leaf_table
        for mid, target in enumerate(entries(root)):
            if target == self.mids[mid]:
                continue
            self.mids[mid] = target
            target_bytes = node(target) if target != EMPTY else _EMPTY_NODE
            if len(target_bytes) != NODE_BYTES:
                raise ValueError(f"tree node {target.hex()} has {len(target_bytes)} bytes")
            at = mid * NODE_BYTES
            mine, theirs = entries(bytes(leaf_table[at:at + NODE_BYTES])), entries(target_bytes)
            leaf_table[at:at + NODE_BYTES] = target_bytes
            for j in [j for j in range(FANOUT) if mine[j] != theirs[j]]:
                leaf = mid * FANOUT + j
                leaf_bytes = node(theirs[j]) if theirs[j] != EMPTY else _EMPTY_NODE
                at = leaf * NODE_BYTES
                pages, targets = entries(table[at:at + NODE_BYTES]), entries(leaf_bytes)
                table[at:at + NODE_BYTES] = leaf_bytes
                base = leaf * FANOUT
                out.extend((base + k, pages[k], targets[k]) for k in range(FANOUT) if pages[k] != targets[k])
        return out


def named_below(root: bytes, nodes: dict[bytes, bytes], base: Optional[bytes],
                node: NodeSource) -> tuple[set[bytes], set[bytes]]:
    """What the tree `root` names below the given `nodes` and the root, apart from what it
    shares with the tree `base` (nodes from `node`) at the same place: the nodes not given, and
    the page hashes the given leaves name (but the base's leaf there does not). A store checks a new snapshot at the cost of what
    changed since `base`, whose whole tree it holds."""
    need_nodes: set[bytes] = set()
    need_pages: set[bytes] = set()
    base_mids = entries(base) if base is not None else None
    for m, mid in enumerate(entries(root)):
        if mid == EMPTY or (base_mids is not None and base_mids[m] == mid):
            continue
        if mid not in nodes:
            need_nodes.add(mid)
            continue
        base_leaves = _entries_below(base_mids, m, node)
        for j, leaf in enumerate(entries(nodes[mid])):
            if leaf == EMPTY or (base_leaves is not None and base_leaves[j] == leaf):
                continue
            if leaf not in nodes:
                need_nodes.add(leaf)
                continue
            # A hash the base's leaf names anywhere is stored: set operations, not a Python
            # comparison per page (bigmem's first pass: 65,536 pages, 0.4 s of the writer).
            need_pages.update(set(entries(nodes[leaf])).difference(_entries_below(base_leaves, j, node) or ()))
    need_pages.discard(EMPTY)
    return need_nodes, need_pages


def _entries_below(hashes: Optional[list[bytes]], i: int, node: NodeSource) -> Optional[list[bytes]]:
    """The entries of the node `hashes[i]` names (None where there is none)."""
    if hashes is None or hashes[i] == EMPTY:
        return None
    return entries(node(hashes[i]))


def walk(root: bytes, node: NodeSource) -> Iterator[tuple[int, bytes]]:
    """(page, hash) of every non-zero page of the tree `root`, ascending."""
    for mid, mh in enumerate(entries(root)):
        if mh == EMPTY:
            continue
        for j, lh in enumerate(entries(node(mh))):
            if lh == EMPTY:
                continue
            base = (mid * FANOUT + j) * FANOUT
            for k, h in enumerate(entries(node(lh))):
                if h != EMPTY:
                    yield base + k, h


def build(pages: dict[int, bytes], ram_pages: int) -> tuple[bytes, dict[bytes, bytes]]:
    """The root and nodes of a whole page map (page -> hash of its non-zero content)."""
    if pages and not 0 <= min(pages) <= max(pages) < ram_pages:
        raise ValueError(f"a page map with pages outside RAM of {ram_pages} pages")
    tree = PageTree(ram_pages)
    for p, h in pages.items():
        tree.set(p, h)
    tree.refresh()
    return tree.root(), tree.nodes()

