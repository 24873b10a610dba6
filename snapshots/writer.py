"""Catalog writes in a forked child process, so SQLite and compression run beside Unicorn.

The Python work around each save (JSON, packing maps, hashing and compressing pages) would hold
the GIL in a writer thread, which the emulator thread takes back thousands of times a second
between slices; in a child it cannot. Measured side by side, a thread and a child cost a dense
replay the same within this machine's noise (1.37 vs 1.37, then 1.39 vs 1.33 with the buffer
below), so the child is kept for that isolation, not for a measured gain. It costs the emulator
pickling each request (~20 us).

The child opens its own SQLite connection (never the parent's) and applies save/delete/gc
requests in the order they were submitted; saves that wait in the pipe together are stored in
one transaction (a commit costs more than a small snapshot). The emulator waits only when
BUFFERED requests are queued ahead of the pipe. The first error is kept and raised by the next
`flush()`; requests after it are skipped until then, since they may rely on the one that
failed. A child that died is reported by the next call, never waited for."""
from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import signal
import threading
from multiprocessing.connection import Connection
from typing import Any, Iterable, Optional

from snapshots.catalog import Catalog, CatalogError, Snapshot

# ("save", (snapshot, blobs)) | ("delete", names) | ("gc", hashes to keep) | ("flush", None)
Request = tuple[str, Any]
BUFFERED = 256  # requests waiting for the pipe at most (about 11 MB of 10 ms snapshots)


def _serve(conn: Connection, path: str, recording_id: str) -> None:
    """The child: open the catalog (reporting the outcome), then apply requests until "close"."""
    # Ctrl-C reaches the whole process group: the parent handles it and closes the catalog
    # through this child, which must still be there to do it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        catalog = Catalog.open(path, recording_id, create=True)
    except Exception as e:  # raised by the parent's constructor
        conn.send(str(e))
        os._exit(0)
    conn.send(None)
    error: Optional[str] = None
    pending: Optional[Request] = None
    try:
        while True:
            op, args = pending if pending is not None else conn.recv()
            pending = None
            if op in ("flush", "close"):
                conn.send(error)
                error = None
                if op == "close":
                    break
                continue
            batch = [args]
            while op == "save" and conn.poll():  # saves waiting behind a save share its transaction
                pending = conn.recv()
                if pending[0] != "save":
                    break
                batch.append(pending[1])
                pending = None
            if error is None:
                try:
                    _apply(catalog, op, batch)
                except Exception as e:  # kept for the next flush
                    error = str(e)
    except EOFError:  # the parent went away
        pass
    finally:
        catalog.close()
        os._exit(0)


def _apply(catalog: Catalog, op: str, batch: list) -> None:
    """Saves go in one transaction; if that fails, one by one, so those before the bad one
    still land (and the first error is the one reported)."""
    if op == "save" and len(batch) > 1:
        try:
            catalog.save_many(batch)
            return
        except CatalogError:
            pass
    for args in batch:
        if op == "save":
            catalog.save(*args)
        elif op == "delete":
            catalog.delete(*args)
        else:
            catalog.gc(args)


class CatalogWriter:
    """`submit_*` return at once; `flush()` waits until everything submitted is in the file.

    Submitted snapshots and blob dicts are copied into the pipe: the caller may keep them."""

    def __init__(self, path: str, recording_id: str) -> None:
        self.path = path
        ctx = multiprocessing.get_context("fork")
        self._conn, child_end = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child_end, path, recording_id),
                                    name="urr-catalog-writer", daemon=True)
        self._process.start()
        child_end.close()
        failure = self._receive()
        if failure is not None:
            self._process.join()
            raise CatalogError(failure)
        # The child stalls now and then (a WAL checkpoint takes ~15 ms) and a socket holds only a
        # few snapshots: requests wait here, pickled, and a thread feeds them to the pipe, so
        # the emulator blocks only when BUFFERED requests are waiting.
        self._outbox: queue.Queue[Optional[bytes]] = queue.Queue(BUFFERED)
        self._send_failed = False
        self._unflushed = False  # requests sent since the last flush
        self._sender = threading.Thread(target=self._feed, name="urr-catalog-sender", daemon=True)
        self._sender.start()

    def _stopped(self) -> CatalogError:
        """The error for a child that is gone (reaped first, so its exit status is known)."""
        self._process.join(timeout=5)
        return CatalogError(f"the snapshot writer for {self.path} stopped unexpectedly "
                            f"(exit status {self._process.exitcode})")

    def _feed(self) -> None:
        """The sender thread: requests to the pipe, in order, until None."""
        while (payload := self._outbox.get()) is not None:
            try:
                self._conn.send_bytes(payload)
            except (BrokenPipeError, ConnectionResetError, OSError):
                self._send_failed = True  # reported by the next round trip
            finally:
                self._outbox.task_done()
        self._outbox.task_done()

    def _send(self, request: Request) -> None:
        if self._conn.closed:
            raise CatalogError(f"the snapshot writer for {self.path} is closed")
        if self._send_failed or not self._process.is_alive():
            raise self._stopped()
        self._outbox.put(pickle.dumps(request, pickle.HIGHEST_PROTOCOL))
        self._unflushed = request[0] != "flush"

    def _receive(self) -> Optional[str]:
        try:
            return self._conn.recv()
        except (EOFError, ConnectionResetError, OSError):
            raise self._stopped() from None

    def submit_save(self, snap: Snapshot, blobs: dict[bytes, bytes]) -> None:
        self._send(("save", (snap, blobs)))

    def submit_delete(self, names: Iterable[str]) -> None:
        self._send(("delete", tuple(names)))

    def submit_gc(self, keep: Iterable[bytes] = ()) -> None:
        """Collect unreferenced content, except `keep` (content of snapshots not yet submitted)."""
        self._send(("gc", set(keep)))

    def _round_trip(self, op: str) -> None:
        self._send((op, None))
        self._outbox.join()
        if self._send_failed:
            raise self._stopped()
        error = self._receive()
        if error is not None:
            raise CatalogError(f"writing snapshots to {self.path} failed: {error}")

    def flush(self) -> None:
        """Wait for every submitted request; raise the first error one of them hit."""
        if self._unflushed:  # restores flush first: with nothing new, no round trip
            self._round_trip("flush")

    def close(self) -> None:
        """Flush, then stop the child (also when the flush raises)."""
        if self._conn.closed:
            return
        try:
            if self._process.is_alive():
                self._round_trip("close")
        finally:
            self._outbox.put(None)
            self._sender.join()
            self._conn.close()
            self._process.join(timeout=30)
