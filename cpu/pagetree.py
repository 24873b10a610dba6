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

import struct
from typing import Callable, Iterator

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
    leaves whose pages changed (`touch`, then `refresh`)."""

    def __init__(self, pages: int) -> None:
        self.pages = pages
        self.leaves = [EMPTY] * (mids_for(pages) * FANOUT)
        self.mids = [EMPTY] * mids_for(pages)
        self.dirty: set[int] = set()  # leaves whose pages changed since the last refresh

    def touch(self, page: int) -> None:
        self.dirty.add(page // FANOUT)

    def refresh(self, hashes: dict[int, bytes]) -> dict[bytes, bytes]:
        """Rehash the dirty leaves and their middle nodes from `hashes` (page -> hash of the
        non-zero pages); the nodes made (hash -> bytes), EMPTY ones left out."""
        made: dict[bytes, bytes] = {}
        mids = set()
        get = hashes.get
        for leaf in self.dirty:
            base = leaf * FANOUT
            node = b"".join([get(p, EMPTY) for p in range(base, base + FANOUT)])
            h = node_hash(node)
            if h != self.leaves[leaf]:
                self.leaves[leaf] = h
                mids.add(leaf // FANOUT)
                if h != EMPTY:
                    made[h] = node
        self.dirty.clear()
        for mid in mids:
            node = b"".join(self.leaves[mid * FANOUT:(mid + 1) * FANOUT])
            h = self.mids[mid] = node_hash(node)
            if h != EMPTY:
                made[h] = node
        return made

    def root(self) -> bytes:
        """The root as of the last refresh."""
        return b"".join(self.mids)

    def nodes(self, hashes: dict[int, bytes]) -> dict[bytes, bytes]:
        """Every non-empty node of the tree as of the last refresh (a whole snapshot's)."""
        out: dict[bytes, bytes] = {}
        get = hashes.get
        for leaf, h in enumerate(self.leaves):
            if h != EMPTY:
                out[h] = b"".join([get(p, EMPTY) for p in range(leaf * FANOUT, (leaf + 1) * FANOUT)])
        for mid, h in enumerate(self.mids):
            if h != EMPTY:
                out[h] = b"".join(self.leaves[mid * FANOUT:(mid + 1) * FANOUT])
        return out

    def changed_pages(self, hashes: dict[int, bytes], root: bytes,
                      node: NodeSource) -> dict[int, bytes]:
        """The pages whose hash in the tree `root` differs from `hashes` (as of the last
        refresh), page -> the tree's hash (EMPTY: zero), found top-down; this tree then
        becomes that one's."""
        if len(root) != len(self.mids) * HASH:
            raise ValueError(f"a tree of {len(root) // HASH} middle nodes does not fit RAM of "
                             f"{len(self.mids)}")
        out: dict[int, bytes] = {}
        for mid, target in enumerate(entries(root)):
            if target == self.mids[mid]:
                continue
            self.mids[mid] = target
            leaves = entries(node(target)) if target != EMPTY else [EMPTY] * FANOUT
            for j, leaf_target in enumerate(leaves):
                leaf = mid * FANOUT + j
                if leaf_target == self.leaves[leaf]:
                    continue
                self.leaves[leaf] = leaf_target
                page_hashes = entries(node(leaf_target)) if leaf_target != EMPTY else [EMPTY] * FANOUT
                for k, h in enumerate(page_hashes):
                    page = leaf * FANOUT + k
                    if hashes.get(page, EMPTY) != h:
                        out[page] = h
        return out


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
    for p in pages:
        tree.touch(p)
    tree.refresh(pages)
    return tree.root(), tree.nodes(pages)

