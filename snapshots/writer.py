"""Catalog writes in a forked child process (snapshots.storing), so SQLite, compression and
the turning of captures into whole snapshots run beside Unicorn, not in its way.

Every periodic snapshot goes to the child as soon as it is taken, as a `Capture`: the pages
changed since the previous one, by hash, with their content (and, where a debugger expects
restores or the capture is big, its page tree's root and new nodes; else the child's copy of
the tree makes them: snapshots.storing). The child makes the whole snapshot and stores it: the
emulator's cost of a snapshot, and the bytes it adds, follow what changed. Dense snapshots the
policy thins a second later are held back by the child until then and never stored
(snapshots.held); the others are stored at once, which keeps the end of a run cheap (little is
left to write) and a killed run complete.

Requests go down a pipe (snapshots.channel), gathered for PUSH_EVERY (the write and the child's
wake-up cost more than a small request) and written without blocking: what the pipe cannot take
yet waits in a backlog that the next request (or a flush) pushes on, so the emulator waits only
if the backlog outgrows MAX_BACKLOG. There is no sender thread to wake. Host time decides only
when bytes move, never what they say. Page content goes through a ring of shared memory. A
capture with more content than a quarter of the ring (a guest that wrote much memory since the
last one: the first snapshot after bigmem touched 256 MiB) is not copied at all: a forked copy
of the emulator (copy-on-write, ~1 ms at any RAM size) reads the pages and writes them down a
pipe passed to the child, so the emulator goes on at once while the child stores them
(`_feed`). Copying 256 MiB into the ring took the emulator ~1 s, and it waited for the child to
empty the 8 MiB ring ~30 times; reading the pages by hash itself still cost it 100 ms.
The child runs at SCHED_BATCH: it gets its share of a busy machine, and waking it (a write to
the pipe) never preempts the emulator. At SCHED_IDLE it never preempted either, but on a machine
whose cores were all busy it got almost no CPU and the emulator waited for room in the ring for
most of a run (bigmem: 37-45 s against 26-28 s at nice 0, under load); at nice 0 each wake-up
preempted the emulator (pipe writes took ~5 ms each in a dense cpuloop replay, under load).
When the child falls far behind anyway, the manager skips periodic snapshots (`behind`) rather
than wait, so the emulator waits for it only to flush, to close, or to hand over a capture
bigger than the ring. A recording's child streams unsynced and syncs the file when it closes
(`Catalog.stream`). The first error is raised by the next `flush()`. A child that died is
reported by the next call, never waited for."""
from __future__ import annotations

import dataclasses
import fcntl
import multiprocessing
import multiprocessing.reduction
import os
import pickle
import select
import signal
import stat
import time
from typing import Iterable, Optional

from cpu.pagemap import PAGE
from snapshots.catalog import CatalogError, Snapshot
from snapshots.channel import LENGTH, PIPE_BYTES, Request, Ring, write_fed
from snapshots.state import Capture
from snapshots.storing import serve

_CAPTURE_FIELDS = tuple(f.name for f in dataclasses.fields(Capture))
PUSH_EVERY = 0.005  # seconds between writes to the pipe (each wakes the child: ~15 us)
MAX_BACKLOG = 64 << 20  # bytes of requests waiting for the pipe before the emulator waits too
RING_BYTES = 8 << 20  # shared memory for page content on its way (~200 snapshots of 10 pages)
FEED_ABOVE = RING_BYTES // 4  # content bytes above which a forked copy may feed it (`_feed`)
FEEDER_NICE = 10  # a feeder's CPU share beside the emulator: ~10% (weights 110 against 1024)
FORK_PAGES_PER_COPY = 16  # a fork costs about what copying one page per 16 mapped ones does


def _streams() -> dict[int, tuple[int, int]]:
    """This process's descriptors of pipes, sockets and terminals, those whose closing others
    see (an end of file, a hangup), with what each names (device, inode). Not regular files:
    SQLite keeps its files' descriptors per process, an open connection's copy in a fork too."""
    streams = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            st = os.fstat(int(name))
        except OSError:  # the listing's own descriptor, closed since
            continue
        if not stat.S_ISREG(st.st_mode):
            streams[int(name)] = (st.st_dev, st.st_ino)
    return streams


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
        self._ring = Ring(RING_BYTES)
        # The child closes the pipes, sockets and terminals it inherits but its own two pipe ends
        # (and multiprocessing's, made later by start()): those urr closes are closed for good.
        inherited = {fd: ident for fd, ident in _streams().items()
                     if fd not in (child_end.fileno(), read_end, 0, 1, 2)}
        self._process = ctx.Process(target=serve, name="urr-catalog-writer", daemon=True,
                                    args=(child_end, read_end, inherited, self._ring, path,
                                          recording_id, stream))
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
        self._backlog += len(payload).to_bytes(LENGTH, "little")
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
            self._send(("capture", (self._fields(cap, None), None, False)))
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
        items = [data for _, data in piece]
        node_sizes: Optional[dict[bytes, int]] = {h: len(data) for h, data in cap.nodes.items()}
        node_bytes = sum(node_sizes.values())
        if node_bytes <= self._ring.size // 4:  # else pickled (a whole tree of many alike pages)
            items += cap.nodes.values()
            size += node_bytes
        else:
            node_sizes = None
        end = self._into_ring(items, size) + size
        self._send(("capture", (self._fields(cap, sizes, node_sizes), end, node_sizes is not None)))
        self.submitted += 1

    @staticmethod
    def _fields(cap: Capture, sizes: Optional[dict[bytes, int]],
                node_sizes: Optional[dict[bytes, int]] = None) -> tuple:
        """The capture as the child gets it: a plain tuple (pickling a dataclass costs twice as
        much), content named by `sizes` (None: fed down a pipe), tree nodes by `node_sizes` if
        they follow the content in the ring (a dense snapshot of bigmem has ~60 KB of them,
        cheaper copied there than pickled into the pipe), no PageContent (read here)."""
        given = {"blobs": sizes, "content": None}
        if node_sizes is not None:
            given["nodes"] = node_sizes
        return tuple(given[name] if name in given else getattr(cap, name) for name in _CAPTURE_FIELDS)

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
        """Fork a copy of this process that checks and packs the capture's content and writes it
        down a pipe whose read end goes to the child (before the request that stores the
        capture), in pieces of checked and packed content (`write_fed`). The copy shares memory
        with this process copy-on-write, so it sees RAM and the page hashes as they are now
        whatever the guest writes next; this process pays page tables and a fault per page it
        writes while the copy lives."""
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
                # Below the emulator: with the writer also busy, three processes share two cores.
                os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
                os.nice(FEEDER_NICE)
                with open(write_end, "wb", buffering=PIPE_BYTES) as pipe:
                    # raises on content unlike its hash: the child reports the rest missing
                    write_fed(pipe, cap.all_blobs().items())
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
