"""Catalog writes in a forked child process, so SQLite, compression and the turning of captures
into whole snapshots run beside Unicorn, not in its way.

Every periodic snapshot goes to the child as soon as it is taken, as a `Capture`: its page
tree's root with the tree nodes and page contents changed since the previous one. The child
keeps the running sector map and the last root (what the next capture builds on, so a gc keeps
it), makes the whole snapshot and stores it: the emulator's cost of a snapshot, and the bytes
it adds, follow what changed. Most
dense snapshots are deleted again when the policy thins them a second later; storing them at
once anyway keeps the end of a run cheap (nothing is left to write) and a killed run complete.

Requests go down a pipe as length-prefixed pickles, gathered for PUSH_EVERY (the write and
the child's wake-up cost more than a small request) and written without blocking: what the
pipe cannot take yet waits in a backlog that the next request (or a flush) pushes on, so the
emulator waits only if the backlog outgrows MAX_BACKLOG. There is no sender thread to wake.
Host time decides only when bytes move, never what they say.
The content of captured pages goes through a ring of shared memory instead (`_Ring`): copying
45 KB into a pipe took ~75 us on these machines, into shared memory a few. A capture with more
content than a quarter of the ring (a guest that wrote much memory since the last one: the
first snapshot after bigmem touched 256 MiB) is not copied at all: a forked copy of the emulator
(copy-on-write, ~1 ms at any RAM size) writes it down a pipe passed to the child, so the
emulator goes on at once while the child stores it (`_feed`). Copying 256 MiB into the ring took
the emulator ~1 s, and it waited for the child to empty the 8 MiB ring ~30 times.
The child runs at SCHED_BATCH: it gets its share of a busy machine, and waking it (a write to
the pipe) never preempts the emulator. At SCHED_IDLE it never preempted either, but on a machine
whose cores were all busy it got almost no CPU and the emulator waited for room in the ring for
most of a run (bigmem: 37-45 s against 26-28 s at nice 0, under load); at nice 0 each wake-up
preempted the emulator (pipe writes took ~5 ms each in a dense cpuloop replay, under load). When the child falls far behind anyway, the manager skips periodic snapshots
(`behind`) rather than wait, so the emulator waits for it only to flush, to close, or to hand
over a capture bigger than the ring. It stores each snapshot as it comes, in a
transaction it commits COMMIT_EVERY (a commit costs more than a small snapshot's rows), so at
the end of a run little is left to do; any other request, a flush included, commits first.
A recording's child streams unsynced and syncs the file when it closes (`Catalog.stream`).
Requests are applied in the order they were submitted. The first error is kept and raised by
the next `flush()`; storing is skipped until then, since later snapshots may rely on the one
that failed. A child that died is reported by the next call, never waited for."""
from __future__ import annotations

import dataclasses
import fcntl
import mmap
import multiprocessing
import multiprocessing.reduction
import os
import pickle
import select
import signal
import struct
import time
from multiprocessing.connection import Connection
from typing import Any, Iterable, Iterator, Optional

from cpu.pagemap import PAGE
from snapshots.catalog import Catalog, CatalogError, Snapshot, StoredAhead
from snapshots.held import HeldCaptures
from snapshots.state import Capture

# ("capture", Capture) | ("content", blobs) | ("save", (snapshot, blobs)) | ("base", name)
# | ("delete", names) | ("gc", (hashes to keep, when due only)) | ("flush", None) | ("close", None)
Request = tuple[str, Any]
_CAPTURE_FIELDS = tuple(f.name for f in dataclasses.fields(Capture))
_STORES = ("capture", "save")  # requests that store a snapshot: they share commits
_WHOLE = ("flush", "base", "close")  # requests after which the file must hold every snapshot
COMMIT_EVERY = 0.02  # seconds a stored snapshot may wait for others to share its commit
MAX_GROUP = 256  # snapshots in one commit at most
PIPE_BYTES = 1 << 20  # asked of the kernel for the request pipe (about 20 snapshots)
PUSH_EVERY = 0.005  # seconds between writes to the pipe (each wakes the child: ~15 us)
MAX_BACKLOG = 64 << 20  # bytes of requests waiting for the pipe before the emulator waits too
_LENGTH = 8  # bytes of the length prefix
CHECKPOINT_PAGES = 256  # WAL pages (1 MiB) between checkpoints, done by the child as it goes
RING_BYTES = 8 << 20  # shared memory for page content on its way (~200 snapshots of 10 pages)
FEED_ABOVE = RING_BYTES // 4  # content bytes above which a forked copy may feed it (`_feed`)
FORK_PAGES_PER_COPY = 16  # a fork costs about what copying one page per 16 mapped ones does
_RECORD = struct.Struct("<16sI")  # a fed content's hash and size, before its bytes


class _Ring:
    """A circular buffer of content in memory shared with the child, made before the fork.

    The parent puts a capture's content at `head` in one piece (kept contiguous: a piece that
    would wrap starts over at the beginning); the request names each blob by hash and size and
    says where the piece ends. The child copies it out and publishes how far it has consumed in
    the header, which the parent never overtakes. The header
    also counts the snapshots the child has settled, so the parent can tell, without asking,
    whether one it wants to load is in the file yet."""

    HEADER = 4096

    def __init__(self, size: int) -> None:
        self.size = size
        self.mm = mmap.mmap(-1, self.HEADER + size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)
        self.view = memoryview(self.mm)
        # Aligned 8-byte words, each written by one side only and atomically: [0] bytes consumed,
        # [1] snapshots settled (both by the child).
        self.words = self.view[:16].cast("Q")
        self.head = 0  # bytes put in all (the parent's count)

    def put(self, items: list[bytes | memoryview], total: int) -> Optional[int]:
        """Copy `items` (`total` bytes) in, one after another: the position of the first, or
        None while the child has not made room."""
        pos = self.head
        if pos % self.size + total > self.size:
            pos += self.size - pos % self.size
        if pos + total - self.words[0] > self.size:
            return None
        at, view = self.HEADER + pos % self.size, self.view
        for data in items:
            end = at + len(data)
            view[at:end] = data
            at = end
        self.head = pos + total
        return pos

    def room(self) -> int:
        """Bytes the parent can put in now without waiting for the child."""
        return self.size - (self.head - self.words[0])

    def get(self, pos: int, sizes: Iterable[int]) -> Iterator[bytes]:
        """The items put at `pos`, given their sizes."""
        at = self.HEADER + pos % self.size
        for n in sizes:
            yield bytes(self.view[at:at + n])
            at += n

    def release(self, upto: int) -> None:
        """The child is done with everything before position `upto`."""
        self.words[0] = upto

    def close(self) -> None:
        self.words.release()
        self.view.release()
        self.mm.close()


class _Inbox:
    """The child's end of the request pipe: whole requests out of a byte stream."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray()
        self.pos = 0

    def _next(self) -> Optional[Request]:
        if len(self.buf) - self.pos < _LENGTH:
            return None
        size = int.from_bytes(self.buf[self.pos:self.pos + _LENGTH], "little")
        start = self.pos + _LENGTH
        if len(self.buf) - start < size:
            return None
        self.pos = start + size
        request = pickle.loads(self.buf[start:self.pos])
        if self.pos > PIPE_BYTES:
            del self.buf[:self.pos]
            self.pos = 0
        return request

    def get(self, timeout: Optional[float]) -> Optional[Request]:
        """The next request, or None if none came within `timeout` seconds (None: wait).
        EOFError once the parent has gone."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (request := self._next()) is None:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([self.fd], [], [], remaining)[0]:
                    return None
            data = os.read(self.fd, PIPE_BYTES)
            if not data:
                raise EOFError
            self.buf += data
        return request


class _Child:
    """The writer process's state: its catalog, the tree root and sector map as of the last
    capture, the captures held back (snapshots.held), the batch of snapshots not committed yet,
    and the first error not reported yet."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.root: Optional[bytes] = None  # the last capture's tree: what the next builds on
        # A tree wholly in the file: a capture's check skips what it shares with it.
        self.stored_root: Optional[bytes] = None
        self.ahead = StoredAhead()  # the next capture's content stored before it
        self.disk: dict[int, bytes] = {}
        self.held = HeldCaptures()
        self.number = 0  # snapshots submitted so far (captures and saves)
        self.batch: list[int] = []  # the numbers stored (or skipped) since the last commit
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
        snap, blobs, nodes = self.whole(args)
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
        if chained:
            pool_nodes, pool_blobs = self.held.reached(snap.pages.root, base, nodes or {})
            nodes = {**pool_nodes, **(nodes or {})}
            blobs = {**pool_blobs, **self.held.sector_blobs(snap.disk), **blobs}
        try:
            if not self.catalog.in_batch:
                self.catalog.begin()
            self.catalog.save(snap, blobs, nodes, base, ahead)
            if chained:
                self.stored_root = snap.pages.root
                self.held.stored(number, [*nodes, *blobs])
        except Exception as e:  # kept for the next flush
            self.error = str(e)

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
        if self.error is not None:
            return
        try:
            if not self.catalog.in_batch:
                self.catalog.begin()
            self.ahead.add(blobs, self.catalog.add_blobs(blobs))
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
        self.root = cap.root
        return cap.snapshot(self.disk, self.catalog.get_node), cap.blobs, cap.nodes

    def apply(self, op: str, args: Any) -> None:
        """A request other than a store; the batch is committed before it."""
        if op == "delete":  # those held are settled at once, whatever the error
            for name in args:
                self.held.release(name)
        if self.error is not None and op != "base":
            return
        try:
            if op == "base":  # the parent restored this snapshot: later captures build on it
                snap = self.catalog.load(args)
                self.root, self.disk = snap.pages.root, dict(snap.disk)
                self.stored_root = self.root
            elif op == "delete":
                self.catalog.delete(*args)
            elif not args[1] or self.catalog.gc_due():  # gc: the running tree and map are what
                # the next capture builds on; the held trees are still to be stored
                roots = [r for r in (self.root, self.stored_root) if r is not None]
                self.catalog.gc(args[0] | set(self.disk.values()) | self.held.sectors(),
                                roots + self.held.roots(),
                                lambda h: self.held.node(h) or self.catalog.get_node(h))
                self.held.lost()
        except Exception as e:  # kept for the next flush
            self.error = self.error or str(e)


def _out_of_ring(ring: _Ring, sizes: dict[bytes, int], end: int) -> dict[bytes, bytes]:
    """Content put in the ring before position `end`, named by hash and size."""
    blobs = dict(zip(sizes, ring.get(end - sum(sizes.values()), sizes.values())))
    ring.release(end)
    return blobs


def _fed(fd: int) -> Iterator[dict[bytes, bytes]]:
    """Content written down the pipe `fd` by a feeder (`CatalogWriter._feed`) as records of
    hash, size and bytes until the end of the pipe, in pieces of about a quarter ring. A feeder
    that died early leaves the rest missing, which the capture's store then reports."""
    with open(fd, "rb", buffering=PIPE_BYTES) as pipe:
        piece: dict[bytes, bytes] = {}
        size = 0
        while len(head := pipe.read(_RECORD.size)) == _RECORD.size:
            h, n = _RECORD.unpack(head)
            data = pipe.read(n)  # all n bytes, unless the feeder ended early
            if len(data) < n:
                break
            piece[h] = data
            size += n
            if size >= FEED_ABOVE:
                yield piece
                piece, size = {}, 0
        if piece:
            yield piece


def _serve(conn: Connection, requests: int, parent_end: int, ring: _Ring, path: str,
           recording_id: str, stream: bool) -> None:
    """The child: open the catalog (reporting the outcome), then apply requests until "close"."""
    os.close(parent_end)  # so that the parent's exit is an end of file here
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
        if stream:
            catalog.stream()
    except Exception as e:  # raised by the parent's constructor
        conn.send(str(e))
        os._exit(0)
    conn.send(None)
    child, inbox = _Child(catalog), _Inbox(requests)
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
                fields, end = args
                args = Capture(*fields)
                if end is None:  # fed down a pipe instead, stored ahead as it comes
                    fd = multiprocessing.reduction.recv_handle(conn)
                    for piece in _fed(fd):
                        child.store_content(piece)
                    args.blobs, args.provisional = {}, False  # its content is in the file
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


class CatalogWriter:
    """`submit_*` return at once; `flush()` waits until everything submitted is in the file."""

    def __init__(self, path: str, recording_id: str, stream: bool = False) -> None:
        """`stream`: sync the file to the disk only when closing (`Catalog.stream`)."""
        self.path = path
        ctx = multiprocessing.get_context("fork")
        self._conn, child_end = ctx.Pipe()  # replies
        read_end, self._fd = os.pipe2(os.O_CLOEXEC)  # requests
        try:
            fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:  # over the system's limit: the default size works, only more slowly
            pass
        self._ring = _Ring(RING_BYTES)
        self._process = ctx.Process(target=_serve, name="urr-catalog-writer", daemon=True,
                                    args=(child_end, read_end, self._fd, self._ring, path, recording_id, stream))
        self._process.start()
        child_end.close()
        os.close(read_end)
        os.set_blocking(self._fd, False)
        self._backlog = bytearray()
        self._pushed_at = 0.0  # host time of the last write to the pipe
        self.submitted = 0  # snapshots submitted (see `committed`)
        self._feeders: list[int] = []  # forked copies feeding content, until reaped
        self._unflushed = False  # requests sent since the last flush
        failure = self._receive()
        if failure is not None:
            self._process.join()
            self._close_pipes()
            raise CatalogError(failure)

    def _stopped(self) -> CatalogError:
        """The error for a child that is gone (reaped first, so its exit status is known)."""
        self._process.join(timeout=5)
        return CatalogError(f"the snapshot writer for {self.path} stopped unexpectedly "
                            f"(exit status {self._process.exitcode})")

    def _push(self) -> None:
        """Write the backlog as far as the pipe takes it without waiting."""
        try:
            written = os.write(self._fd, self._backlog)
        except BlockingIOError:
            return
        except OSError:  # the child is gone
            raise self._stopped() from None
        del self._backlog[:written]
        self._pushed_at = time.monotonic()

    def _drain(self) -> None:
        """Wait until the pipe has taken the whole backlog."""
        while self._backlog:
            self._push()
            if self._backlog:
                select.select([], [self._fd], [], 1.0)
                if not self._process.is_alive():
                    raise self._stopped()

    def _send(self, request: Request, push: bool = True) -> None:
        """Queue a request, written to the pipe now if the last write was PUSH_EVERY ago and
        `push` (else by the next request that is, or a flush)."""
        if self._conn.closed:
            raise CatalogError(f"the snapshot writer for {self.path} is closed")
        payload = pickle.dumps(request, pickle.HIGHEST_PROTOCOL)
        self._backlog += len(payload).to_bytes(_LENGTH, "little")
        self._backlog += payload
        if push and time.monotonic() - self._pushed_at >= PUSH_EVERY:
            self._push()
        if len(self._backlog) > MAX_BACKLOG:
            self._drain()
        self._unflushed = request[0] != "flush"

    def _receive(self) -> Optional[str]:
        try:
            return self._conn.recv()
        except (EOFError, ConnectionResetError, OSError):
            raise self._stopped() from None

    def behind(self) -> bool:
        """Whether the child has yet to take most of the ring, or requests pile up in the
        parent: a periodic snapshot now would likely make the emulator wait."""
        return (self._ring.head - self._ring.words[0] > self._ring.size * 3 // 4
                or len(self._backlog) > MAX_BACKLOG // 4)

    def committed(self) -> int:
        """How many of the snapshots submitted (captures and saves, counted from 1) are settled:
        in the file, or failed with an error the next `flush()` raises."""
        return self._ring.words[1]

    def submit_capture(self, cap: Capture) -> None:
        """Store a capture, made whole against the captures before it (or the `base`). Its
        content is copied before this returns (pages may be views of the live RAM): through the
        ring, or if it is big (a guest that wrote much memory) by a forked copy of this process,
        which also reads the pages (cap.content) in this one's stead."""
        self._reap(os.WNOHANG)
        if self._worth_feeding(cap.content_bytes(), cap.pages):
            self._feed(cap)
            self._send(("capture", (self._fields(cap, None), None)))
            self.submitted += 1
            return
        piece: list[tuple[bytes, bytes | memoryview]] = []
        size = 0
        for h, data in cap.all_blobs().items():
            if size + len(data) > self._ring.size // 4 and piece:
                self._send_content(piece, size)
                piece, size = [], 0
            piece.append((h, data))
            size += len(data)
        sizes = {h: len(data) for h, data in piece}
        end = self._into_ring([data for _, data in piece], size) + size
        self._send(("capture", (self._fields(cap, sizes), end)))
        self.submitted += 1

    @staticmethod
    def _fields(cap: Capture, sizes: Optional[dict[bytes, int]]) -> tuple:
        """The capture as the child gets it: a plain tuple (pickling a dataclass costs twice as
        much), content named by `sizes` (None: fed down a pipe), no PageContent (read here)."""
        return tuple(sizes if name == "blobs" else None if name == "content" else getattr(cap, name)
                     for name in _CAPTURE_FIELDS)

    def feeding(self) -> bool:
        """Whether a forked copy still feeds the child content (`_feed`)."""
        self._reap(os.WNOHANG)
        return bool(self._feeders)

    @staticmethod
    def big(size: int) -> bool:
        """Whether content of `size` bytes may be fed by a forked copy (`_worth_feeding`)."""
        return size > FEED_ABOVE

    def _worth_feeding(self, size: int, pages: int) -> bool:
        """Whether a capture of `size` bytes of content, of a RAM of `pages` non-zero pages, is
        cheaper fed by a forked copy than put in the ring. A fork costs page tables and a
        reference per mapped page (~1 ms at 256 MiB touched, ~15 ms at 1 GiB under load), the
        ring ~1 us a page copied, and a wait for the child if the ring has no room for it."""
        if not self.big(size):
            return False
        return size > self._ring.room() or size // PAGE > pages // FORK_PAGES_PER_COPY

    def _feed(self, cap: Capture) -> None:
        """Fork a copy of this process that writes the capture's content down a pipe whose read
        end goes to the child (before the request that stores the capture), as records of hash,
        size and bytes (`_fed`). The copy shares memory with this process copy-on-write, so it
        sees RAM and the page hashes as they are now whatever the guest writes next; this process
        pays page tables and a fault per page it writes while the copy lives."""
        read_end, write_end = os.pipe()
        try:
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass
        pid = os.fork()
        if pid == 0:  # the feeder: write, then go, running nothing of the parent's
            status = 0
            try:
                # Only the pipe stays open: a copy of the request pipe would keep the child from
                # seeing the end of file that tells it the emulator has gone.
                os.closerange(3, write_end)
                os.closerange(write_end + 1, os.sysconf("SC_OPEN_MAX"))
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                with open(write_end, "wb", buffering=PIPE_BYTES) as pipe:
                    for h, data in cap.all_blobs().items():
                        pipe.write(_RECORD.pack(h, len(data)))
                        pipe.write(data)
            except BaseException:  # the child went away (it reports the missing content)
                status = 1
            finally:
                os._exit(status)
        os.close(write_end)
        self._feeders.append(pid)
        try:
            multiprocessing.reduction.send_handle(self._conn, read_end, self._process.pid)
        except OSError:
            raise self._stopped() from None
        finally:
            os.close(read_end)

    def _reap(self, flags: int) -> None:
        """Collect the feeders that have exited (all of them, waiting, if `flags` is 0)."""
        for pid in list(self._feeders):
            try:
                done, _ = os.waitpid(pid, flags)
            except ChildProcessError:
                done = pid
            if done:
                self._feeders.remove(pid)

    def _send_content(self, piece: list[tuple[bytes, bytes | memoryview]], size: int) -> None:
        end = self._into_ring([data for _, data in piece], size) + size
        self._send(("content", ({h: len(data) for h, data in piece}, end)))

    def _into_ring(self, items: list[bytes | memoryview], total: int) -> int:
        while (pos := self._ring.put(items, total)) is None:  # the child is behind: wait
            self._drain()
            if not self._process.is_alive():
                raise self._stopped()
            time.sleep(0.001)
        return pos

    def submit_base(self, name: str) -> None:
        """The machine was restored to snapshot `name`: the next capture's changes are from it.
        Not written to the pipe yet: only that capture needs it, and the write (waking the
        child) took ~3 ms of a restore on a busy machine."""
        self._send(("base", name), push=False)

    def submit_save(self, snap: Snapshot, blobs: dict[bytes, bytes]) -> None:
        """Store a whole snapshot; `blobs` holds whatever content the catalog may lack."""
        self._send(("save", (snap, blobs)))
        self.submitted += 1

    def submit_delete(self, names: Iterable[str]) -> None:
        self._send(("delete", tuple(names)))

    def submit_gc(self, keep: Iterable[bytes] = (), when_due: bool = False) -> None:
        """Collect content nothing refers to, except `keep` and what the last capture refers to;
        if `when_due`, only once the catalog has grown enough since the last (`Catalog.gc_due`)."""
        self._send(("gc", (set(keep), when_due)))

    def _round_trip(self, op: str) -> None:
        self._send((op, None))
        self._drain()
        error = self._receive()
        if error is not None:
            raise CatalogError(f"writing snapshots to {self.path} failed: {error}")

    def flush(self) -> None:
        """Wait for every submitted request; raise the first error one of them hit."""
        if self._unflushed:  # restores flush first: with nothing new, no round trip
            self._round_trip("flush")

    def _close_pipes(self) -> None:
        self._reap(0)  # each has written all it had, or found the child gone
        self._conn.close()
        os.close(self._fd)
        self._ring.close()

    def close(self) -> None:
        """Flush, then stop the child (also when the flush raises). The child answers once the
        file is complete and closed; its exit (~5 ms, unmapping a copy of the emulator) is not
        waited for: multiprocessing reaps it later."""
        if self._conn.closed:
            return
        try:
            if self._process.is_alive():
                self._round_trip("close")
        finally:
            self._close_pipes()
