"""The catalog writer's process: requests applied in the order they were submitted.

It keeps the running sector map and the last root (what the next capture builds on, so a gc
keeps it), and a copy of the emulator's page tree, which makes the root and new nodes of a
capture that came as changed pages (the emulator's own tree catches up only when a restore needs
it: ~0.6 ms of each of bigmem's 100 ms snapshots moved off the emulator's core). It makes each
capture a whole snapshot and stores it in a transaction it commits COMMIT_EVERY (a commit costs
more than a small snapshot's rows), so at the end of a run little is left to do; any other
request, a flush included, commits first. A provisional capture (a dense snapshot the policy
will soon thin) is held back instead until it outlives that (snapshots.held). The process runs
at SCHED_BATCH (snapshots.writer says why). The first error is kept and reported by the next
flush; storing is skipped until then, since later snapshots may rely on the one that failed."""
from __future__ import annotations

import multiprocessing.reduction
import os
import signal
import time
from multiprocessing.connection import Connection
from typing import Any, Callable, Iterable, Optional

from cpu.pagemap import PAGE
from cpu.pagetree import NodeSource, PageTree
from snapshots.catalog import Catalog, CatalogError, Snapshot, StoredAhead
from snapshots.channel import Inbox, Ring, read_fed
from snapshots.held import HeldCaptures
from snapshots.state import Capture

_STORES = ("capture", "save")  # requests that store a snapshot: they share commits
_WHOLE = ("flush", "base", "close")  # requests after which the file must hold every snapshot
COMMIT_EVERY = 0.02  # seconds a stored snapshot may wait for others to share its commit
MAX_GROUP = 256  # snapshots in one commit at most
CHECKPOINT_PAGES = 256  # WAL pages (1 MiB) between checkpoints, done as it goes
# SQLite's page cache here: the content index of a 4 GiB guest's pages (~30 MB) fits. With the
# default 2 MB, storing bigmem1g's first pass (245,760 pages) kept the end of its recording
# waiting ~1.3 s against ~1.0 s.
PAGE_CACHE = 64 << 20


class Storer:
    """The writer process's state: its catalog, the tree root and sector map as of the last
    capture, the captures held back (snapshots.held), the batch of snapshots not committed yet,
    and the first error not reported yet."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.root: Optional[bytes] = None  # the last capture's tree: what the next builds on
        # A copy of the emulator's page tree at `root`, made at the first capture that comes as
        # changes (`Capture.changes`): it makes their roots and nodes in the emulator's stead.
        self.tree: Optional[PageTree] = None
        # A tree wholly in the file: a capture's check skips what it shares with it.
        self.stored_root: Optional[bytes] = None
        self.ahead = StoredAhead()  # the next capture's content stored before it
        self.disk: dict[int, bytes] = {}
        self.held = HeldCaptures()
        self.number = 0  # snapshots submitted so far (captures and saves)
        self.batch: list[int] = []  # the numbers stored (or skipped) since the last commit
        # Stored snapshots deleted since the last collection: without one, there is nothing
        # to collect (a held one deleted never reached the file).
        self.deleted_stored = 0
        self.error: Optional[str] = None

    @property
    def pending(self) -> int:
        return len(self.batch)

    def settled(self) -> int:
        """How many of the snapshots submitted (counted from 1) are settled, in order: in the
        file, failed, or deleted while held."""
        unsettled = self.held.numbers() + self.batch
        return min(unsettled) - 1 if unsettled else self.number

    def store(self, op: str, args: Any) -> None:
        """Store a snapshot in the open batch (each is a savepoint: a bad one spoils no other),
        or hold a provisional capture back. After an error nothing is stored until it is
        reported, since later snapshots may rely on the one that failed; captures still update
        the running maps, so those after it stay right."""
        self.number += 1
        if op != "capture":
            self._save(self.number, *args, None, None, chained=False)
            return
        try:
            snap, blobs, nodes = self.whole(args)
        except Exception as e:  # no tree to build on: later captures fail too, until a whole one
            self.root, self.tree = None, None
            self.batch.append(self.number)
            self.error = self.error or f"snapshot {args.name}: {e}"
            return
        if args.provisional and self.error is None:
            self.held.carry(self.number, nodes, blobs)
            self.held.hold(self.number, snap)
            while self.held.over(self.number):
                self._store_held(self.held.oldest())
            return
        ahead, self.ahead = self.ahead, StoredAhead()
        self._save(self.number, snap, blobs, nodes, ahead)

    def _save(self, number: int, snap: Snapshot, blobs: dict[bytes, bytes],
              nodes: Optional[dict[bytes, bytes]], ahead: Optional[StoredAhead], chained: bool = True) -> None:
        """Store a snapshot; a `chained` one (a capture) with what it reaches of the held
        captures' nodes and content, its check skipping what it shares with the stored tree."""
        self.batch.append(number)
        if self.error is not None:
            return
        base = self.stored_root if chained else None
        try:  # the walk of the held pool reads the stored tree's nodes from the file
            if chained:
                pool_nodes, pool_blobs = self.held.reached(snap.pages.root, base, nodes or {}, self._node)
                nodes = {**pool_nodes, **(nodes or {})}
                blobs = {**pool_blobs, **self.held.sector_blobs(snap.disk), **blobs}
            if not self.catalog.in_batch:
                self.catalog.begin()
            self.catalog.save(snap, blobs, nodes, base, ahead)
            if chained:
                self.stored_root = snap.pages.root
                self.held.stored(number, [*nodes, *blobs])
        except Exception as e:  # kept for the next flush
            self.error = str(e)

    def _node(self, h: bytes) -> bytes:
        """A tree node, held or in the file."""
        return self.held.node(h) or self.catalog.get_node(h)

    def _store_held(self, name: str) -> None:
        held = self.held.captures[name]
        self._save(held.number, held.snap, {}, {}, None)
        self.held.release(name)

    def store_held(self) -> None:
        """Store every capture held back: the file must hold them all now."""
        while self.held:
            self._store_held(self.held.oldest())

    def store_content(self, blobs: dict[bytes, bytes]) -> None:
        """Store content ahead of the capture that refers to it (a big capture's, in pieces)."""
        self._store_ahead(blobs, lambda: self.catalog.add_blobs(blobs))

    def store_packed(self, rows: list[tuple[bytes, int, bytes]]) -> None:
        """`store_content` for content a feeder checked and packed (hash, raw size, packed)."""
        self._store_ahead([h for h, _, _ in rows], lambda: self.catalog.add_packed(rows))

    def _store_ahead(self, hashes: Iterable[bytes], store: Callable[[], int]) -> None:
        if self.error is not None:
            return
        try:
            if not self.catalog.in_batch:
                self.catalog.begin()
            self.ahead.add(hashes, store())
        except Exception as e:  # kept for the next flush
            self.error = str(e)

    def commit(self) -> None:
        """Land the batch: its snapshots are settled (in the file, or failed)."""
        self.batch.clear()
        if self.catalog.in_batch:
            try:
                self.catalog.commit()
            except Exception as e:  # the batch is undone: its trees are not stored
                self.error = self.error or str(e)
                self.stored_root = None
                self.held.lost()

    def whole(self, cap: Capture) -> tuple[Snapshot, dict[bytes, bytes], dict[bytes, bytes]]:
        """The snapshot a capture makes with the captures before it, its content and new nodes."""
        if cap.root is None:
            self._grow(cap)
        elif self.tree is not None:  # made by the emulator (debugged, or big): follow it
            self._follow(cap.root, lambda h: cap.nodes.get(h) or self._node(h))
        self.root = cap.root
        return cap.snapshot(self.disk, self.catalog.get_node), cap.blobs, cap.nodes

    def _grow(self, cap: Capture) -> None:
        """Give a capture that came as changes its root and new nodes, made in the copy of the
        page tree (made first, from the file, at the last capture's tree)."""
        if cap.changes is None or self.root is None:
            raise ValueError("a capture without a tree, or none before it to build on")
        if self.tree is None or self.tree.pages != cap.ram_size // PAGE:
            tree = PageTree(cap.ram_size // PAGE)
            tree.changed_pages(self.root, self._node)
            self.tree = tree
        self.tree.set_many(*cap.changes)
        cap.nodes = self.tree.refresh()
        cap.root = self.tree.root()

    def _follow(self, root: bytes, node: NodeSource) -> None:
        """Bring the copy of the page tree to `root` (a restore, a capture made by the emulator);
        dropped if that fails, to be made again from the file by the next capture needing it."""
        assert self.tree is not None
        try:
            self.tree.changed_pages(root, node)
        except (CatalogError, ValueError):
            self.tree = None

    def apply(self, op: str, args: Any) -> None:
        """A request other than a store; the batch is committed before it."""
        if op == "delete":  # those held are settled at once, whatever the error
            self.deleted_stored += sum(not self.held.release(name) for name in args)
        if self.error is not None and op != "base":
            return
        try:
            if op == "base":  # the parent restored this snapshot: later captures build on it
                self.root = None  # until it is known
                snap = self.catalog.load(args)
                if self.tree is not None:
                    self._follow(snap.pages.root, self._node)
                self.root, self.disk = snap.pages.root, dict(snap.disk)
                self.stored_root = self.root
            elif op == "delete":
                self.catalog.delete(*args)
            elif self.deleted_stored and (not args[1] or self.catalog.gc_due()):
                # gc: the running tree and map are what the next capture builds on; the held
                # trees are still to be stored
                roots = [r for r in (self.root, self.stored_root) if r is not None]
                self.catalog.gc(args[0] | set(self.disk.values()) | self.held.sectors(),
                                roots + self.held.roots(), self._node)
                self.held.lost()
                self.deleted_stored = 0
        except Exception as e:  # kept for the next flush
            self.error = self.error or str(e)


def _out_of_ring(ring: Ring, sizes: dict[bytes, int], end: int) -> dict[bytes, bytes]:
    """Content put in the ring before position `end`, named by hash and size."""
    return _all_out_of_ring(ring, [sizes], end)[0]


def _all_out_of_ring(ring: Ring, named: list[dict[bytes, int]], end: int) -> list[dict[bytes, bytes]]:
    """`_out_of_ring` for several kinds put one after another (a capture's content, then its
    tree nodes)."""
    data = ring.get(end - sum(sum(sizes.values()) for sizes in named),
                    [n for sizes in named for n in sizes.values()])
    out = [dict(zip(sizes, data)) for sizes in named]  # zip takes from `data` in turn
    ring.release(end)
    return out


def _close_inherited(inherited: dict[int, tuple[int, int]]) -> None:
    """Close each descriptor that still names what it named in the parent: one the parent closed
    before the fork may have been reused since, for multiprocessing's own pipes among others."""
    for fd, ident in inherited.items():
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == ident:
            os.close(fd)


def serve(conn: Connection, requests: int, inherited: dict[int, tuple[int, int]], ring: Ring,
          path: str, recording_id: str, stream: bool) -> None:
    """The child: close the parent's pipes, sockets and terminals (`inherited`: descriptor ->
    device and inode; the request pipe's write end among them, so that the parent's exit is an
    end of file here), open the catalog (reporting the outcome), then apply requests until
    "close"."""
    _close_inherited(inherited)
    # Ctrl-C and a terminal's hangup reach the whole process group: the parent handles them
    # and closes the catalog through this child, which must still be there to do it. SIGTERM
    # keeps its default (not the parent's handler, inherited by the fork): it is how
    # multiprocessing ends a child its exiting parent did not close.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    try:
        catalog = Catalog.open(path, recording_id, create=True)
        catalog.checkpoint_every(CHECKPOINT_PAGES)
        catalog.page_cache(PAGE_CACHE)
        if stream:
            catalog.stream()
    except Exception as e:  # raised by the parent's constructor
        conn.send(str(e))
        os._exit(0)
    conn.send(None)
    child, inbox = Storer(catalog), Inbox(requests)
    first = 0.0  # when the batch's first snapshot came
    try:
        while True:
            timeout = None if not child.pending else max(0.0, first + COMMIT_EVERY - time.monotonic())
            request = inbox.get(timeout)
            if request is not None and request[0] in _WHOLE:
                child.store_held()
            if child.pending and (request is None or request[0] not in _STORES or child.pending >= MAX_GROUP):
                child.commit()
            ring.words[1] = child.settled()
            if request is None:
                continue
            op, args = request
            if op == "capture":  # its content, out of the ring at once to make room
                fields, end, nodes_in_ring = args
                args = Capture(*fields)
                if end is None:  # fed down a pipe instead, stored ahead as it comes
                    fd = multiprocessing.reduction.recv_handle(conn)
                    for piece in read_fed(fd):
                        child.store_packed(piece)
                    args.blobs, args.provisional = {}, False  # its content is in the file
                else:
                    if nodes_in_ring:
                        args.blobs, args.nodes = _all_out_of_ring(ring, [args.blobs, args.nodes], end)
                    else:
                        args.blobs = _out_of_ring(ring, args.blobs, end)
            if op == "content":  # a piece of a big capture's content, stored at once
                child.store_content(_out_of_ring(ring, *args))
            elif op in _STORES:
                if not child.pending:
                    first = time.monotonic()
                child.store(op, args)
            elif op == "flush":
                conn.send(child.error)
                child.error = None
            elif op == "close":  # the file complete and tidied up first: the parent will not wait
                catalog.close()  # for this process's exit, which takes a while
                conn.send(child.error)
                os._exit(0)
            else:
                child.apply(op, args)
    except EOFError:  # the parent went away: keep what came
        child.store_held()
        child.commit()
    finally:
        catalog.close()
        os._exit(0)
