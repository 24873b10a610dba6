"""What a snapshot is, apart from where it is stored (snapshots.catalog stores them).

A snapshot is a machine state at an exact icount: registers and devices as JSON, RAM as a page
tree (cpu.pagetree) whose nodes come from the catalog when needed, and the disk overlay as a
map of sector numbers to content hashes. Content is named by the hash the machine names its
pages by."""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterator, Mapping, Optional

import lz4.block

from cpu import pagetree
from cpu.pagemap import PAGE
from cpu.ram import page_digest

_ENTRY = struct.Struct("<I16s")


class CatalogError(ValueError):
    """The catalog cannot be used as asked; the message is one line for the user."""


class TreePages(Mapping[int, bytes]):
    """A snapshot's pages as its tree: the root, and the nodes fetched when needed. Restores
    compare trees (`root`); reading it as a mapping walks the whole tree once (O(RAM))."""

    def __init__(self, root: bytes, count: int, node: pagetree.NodeSource) -> None:
        self.root, self.count, self.node = root, count, node
        self._map: Optional[dict[int, bytes]] = None

    def _pages(self) -> dict[int, bytes]:
        if self._map is None:
            self._map = dict(pagetree.walk(self.root, self.node))
        return self._map

    def __getitem__(self, page: int) -> bytes:
        return self._pages()[page]

    def __iter__(self) -> Iterator[int]:
        return iter(self._pages())

    def __len__(self) -> int:
        return self.count

    def __reduce__(self) -> tuple:
        """Pickled (to another process) as the plain map: its node source stays here."""
        return dict, (self._pages(),)


def tree_of(pages: Mapping[int, bytes], ram_size: int) -> tuple[bytes, dict[bytes, bytes]]:
    """The root of a page map and the nodes it needs that may not be stored: none for a tree,
    all of them for a plain map (a snapshot made by hand)."""
    if isinstance(pages, TreePages):
        return pages.root, {}
    try:
        return pagetree.build(dict(pages), ram_size // PAGE)
    except ValueError as e:
        raise CatalogError(str(e)) from None


@dataclass
class Snapshot:
    """A machine state at an exact icount, with RAM and disk by content hash."""
    name: str
    kind: str  # "initial" | "named" | "periodic"
    icount: int
    vtime_ns: int
    cpu: dict  # JSON-able
    devices: dict  # JSON-able
    log_pos: dict  # JSON-able
    pages: Mapping[int, bytes]  # 4 KiB page number -> content hash, non-zero pages only
    disk: dict[int, bytes]  # overlay sector number -> content hash
    ram_size: int

    def references(self) -> set[bytes]:
        """Every content hash the snapshot needs: its pages' and its sectors' (O(RAM) for a
        tree: for checks and tools, not for a running machine)."""
        return set(self.pages.values()) | set(self.disk.values())


@dataclass
class SnapshotInfo:
    """A snapshot's listing, without its state.

    `bytes` is what saving the snapshot added to the file: its row (state JSON and maps) plus
    the compressed size of the content it brought that the file did not hold yet. It is fixed
    when saved, so content shared by many snapshots counts once, in the first that stored it,
    and the column adds up to about the size of the catalog's content."""
    name: str
    kind: str
    icount: int
    vtime_ns: int
    pages: int
    bytes: int


def content_hash(data: bytes) -> bytes:
    """The key content is stored under: the hash the machine names its pages by."""
    return page_digest(data)


def check_content(h: bytes, data: bytes) -> None:
    """Refuse content that is not what the hash `h` names (given to the catalog, or fed)."""
    if content_hash(data) != h:
        raise CatalogError(f"content given for page {h.hex()} does not match that hash")


def pack_content(data: bytes) -> bytes:
    """Content as the catalog stores it: an lz4 block without a size header (the row keeps the
    raw size)."""
    return lz4.block.compress(data, store_size=False)


def unpack_content(size: int, data: bytes) -> Optional[bytes]:
    """Content as `pack_content` packed it, `size` bytes raw; None if it is not such a block
    (the caller names what is damaged)."""
    try:
        return lz4.block.decompress(data, uncompressed_size=size)
    except (lz4.block.LZ4BlockError, TypeError, ValueError):
        return None


def pack_map(entries: dict[int, bytes]) -> bytes:
    """A sector (or, in format 1, page) map as stored: lz4 of sorted (u32 number, hash) pairs."""
    keys = sorted(entries)
    return lz4.block.compress(b"".join(map(_ENTRY.pack, keys, map(entries.__getitem__, keys))))


def unpack_map(blob: bytes, owner: str) -> dict[int, bytes]:
    try:
        raw = lz4.block.decompress(blob)
    except (lz4.block.LZ4BlockError, TypeError, ValueError):
        raw = None
    if raw is None or len(raw) % _ENTRY.size:
        raise CatalogError(f"{owner} is corrupt (its page map cannot be read)")
    return dict(_ENTRY.iter_unpack(raw))
