"""A separate process that writes to the catalog, so compression and SQLite run beside Unicorn.

A thread was tried first: Unicorn and SQLite both release the GIL, but the Python work around
each save (packing maps, JSON, lz4 calls) still contended for it and nearly doubled the run time
of a recording with 10 ms snapshots. A forked child with its own SQLite connection takes the
requests over a pipe, in order; an error in it is reported at the next flush()."""
from __future__ import annotations

import multiprocessing
import os
from multiprocessing.connection import Connection
from typing import Optional

from snapshots.catalog import Catalog, CatalogError, Snapshot


def _serve(conn: Connection, path: str, recording_id: str) -> None:
    """The child: apply requests until told to close; remember the first error."""
    error: Optional[str] = None
    catalog: Optional[Catalog] = None
    try:
        catalog = Catalog.open(path, recording_id, create=True)
    except Exception as e:  # reported at the next flush
        error = str(e)
    while True:
        try:
            op, *args = conn.recv()
        except EOFError:
            break
        if op in ("flush", "close"):
            conn.send(error)
            error = None
            if op == "close":
                break
            continue
        if error is not None or catalog is None:
            continue
        try:
            getattr(catalog, op)(*args)
        except Exception as e:
            error = str(e)
    if catalog is not None:
        catalog.close()
    os._exit(0)


class CatalogWriter:
    """`submit_*` return at once; `flush()` waits until everything submitted is in the file."""

    def __init__(self, path: str, recording_id: str) -> None:
        self.path = path
        ctx = multiprocessing.get_context("fork")
        self.conn, child_end = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child_end, path, recording_id),
                                   name="urr-catalog-writer", daemon=True)
        self.process.start()
        child_end.close()

    def _send(self, *request) -> None:
        try:
            self.conn.send(request)
        except (BrokenPipeError, OSError):
            raise CatalogError(f"the snapshot writer for {self.path} has stopped") from None

    def submit_save(self, snap: Snapshot, blobs: dict[bytes, bytes]) -> None:
        self._send("save", snap, blobs)

    def submit_delete(self, names: list[str]) -> None:
        self._send("delete", names)

    def submit_gc(self, keep: set[bytes] = frozenset()) -> None:
        self._send("gc", keep)

    def _round_trip(self, op: str) -> None:
        self._send(op)
        try:
            error = self.conn.recv()
        except EOFError:
            raise CatalogError(f"the snapshot writer for {self.path} has stopped") from None
        if error is not None:
            raise CatalogError(f"writing snapshots to {self.path} failed: {error}")

    def flush(self) -> None:
        """Wait for every submitted request; raise the first error one of them hit."""
        self._round_trip("flush")

    def close(self) -> None:
        try:
            self._round_trip("close")
        finally:
            self.conn.close()
            self.process.join(timeout=30)
