"""Catalog writes on a background thread, so the emulator thread does not wait for SQLite.

The thread owns its own connection and applies save/delete/gc requests in the order they were
submitted. Unicorn, SQLite and lz4 all release the GIL, so the two threads mostly run side by
side. The queue is bounded: an emulator that outruns the disk waits instead of piling snapshots
up in memory. Submitted snapshots and blob dicts belong to the writer from then on: the caller
must not change them. The first error is kept and raised by the next `flush()`; requests after
it are skipped until then, since they may rely on the one that failed."""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Optional

from snapshots.catalog import Catalog, CatalogError, Snapshot

QUEUE_DEPTH = 64  # requests in flight before submit_* waits


class CatalogWriter:
    """`submit_*` return at once; `flush()` waits until everything submitted is in the file."""

    def __init__(self, path: str, recording_id: str) -> None:
        self.path = path
        self._requests: queue.Queue[Optional[Callable[[Catalog], object]]] = queue.Queue(QUEUE_DEPTH)
        self._error: Optional[str] = None
        opened: queue.Queue[Optional[BaseException]] = queue.Queue(1)
        self._thread = threading.Thread(target=self._serve, args=(recording_id, opened),
                                        name="urr-catalog-writer", daemon=True)
        self._thread.start()
        failure = opened.get()
        if failure is not None:
            self._thread.join()
            raise failure

    def _serve(self, recording_id: str, opened: queue.Queue) -> None:
        """The thread: open the catalog (reporting the outcome), then apply requests until None."""
        try:
            catalog = Catalog.open(self.path, recording_id, create=True)
        except Exception as e:  # raised in the constructor
            opened.put(e)
            return
        opened.put(None)
        try:
            while (request := self._requests.get()) is not None:
                try:
                    if self._error is None:
                        request(catalog)
                except Exception as e:  # kept for flush(): this thread has no one to tell
                    self._error = str(e)
                finally:
                    self._requests.task_done()
        finally:
            catalog.close()

    def _submit(self, request: Optional[Callable[[Catalog], object]]) -> None:
        if not self._thread.is_alive():
            raise CatalogError(f"the snapshot writer for {self.path} is closed")
        self._requests.put(request)

    def submit_save(self, snap: Snapshot, blobs: dict[bytes, bytes]) -> None:
        self._submit(lambda c: c.save(snap, blobs))

    def submit_delete(self, names: Iterable[str]) -> None:
        names = list(names)
        self._submit(lambda c: c.delete(*names))

    def submit_gc(self, keep: Iterable[bytes] = ()) -> None:
        """Collect unreferenced content, except `keep` (content of snapshots not yet submitted)."""
        keep = set(keep)
        self._submit(lambda c: c.gc(keep))

    def flush(self) -> None:
        """Wait for every submitted request; raise the first error one of them hit."""
        self._requests.join()
        error, self._error = self._error, None
        if error is not None:
            raise CatalogError(f"writing snapshots to {self.path} failed: {error}")

    def close(self) -> None:
        """Flush, then stop the thread (also when the flush raises)."""
        if not self._thread.is_alive():
            return
        try:
            self.flush()
        finally:
            self._requests.put(None)
            self._thread.join()
