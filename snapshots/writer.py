"""Catalog writes on a background thread, so the emulator thread does not wait for SQLite.

The thread owns its own connection and applies save/delete/gc requests in the order they were
submitted; saves that wait in the queue together are stored in one transaction (a commit costs
more than a small snapshot). Unicorn, SQLite and lz4 all release the GIL, so the two threads mostly run side by
side. The queue is bounded: an emulator that outruns the disk waits instead of piling snapshots
up in memory. Submitted snapshots and blob dicts belong to the writer from then on: the caller
must not change them. The first error is kept and raised by the next `flush()`; requests after
it are skipped until then, since they may rely on the one that failed."""
from __future__ import annotations

import queue
import threading
from typing import Any, Iterable, Optional, Union

from snapshots.catalog import Catalog, CatalogError, Snapshot

QUEUE_DEPTH = 64  # requests in flight before submit_* waits
# ("save", (snapshot, blobs)) | ("delete", names) | ("gc", hashes to keep)
Request = tuple[str, Any]


class CatalogWriter:
    """`submit_*` return at once; `flush()` waits until everything submitted is in the file."""

    def __init__(self, path: str, recording_id: str) -> None:
        self.path = path
        self._requests: queue.Queue[Optional[Request]] = queue.Queue(QUEUE_DEPTH)
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
            request = self._requests.get()
            while request is not None:
                batch = [request]
                request = self._next_if_waiting()
                while batch[0][0] == "save" and isinstance(request, tuple) and request[0] == "save":
                    batch.append(request)  # saves waiting behind a save share its transaction
                    request = self._next_if_waiting()
                try:
                    if self._error is None:
                        self._apply(catalog, batch)
                except Exception as e:  # kept for flush(): this thread has no one to tell
                    self._error = str(e)
                finally:
                    for _ in batch:
                        self._requests.task_done()
                if request is False:
                    request = self._requests.get()
            self._requests.task_done()
        finally:
            catalog.close()

    def _next_if_waiting(self) -> Union[Request, None, bool]:
        """The next request if one is queued (None: stop), or False if none is."""
        try:
            return self._requests.get_nowait()
        except queue.Empty:
            return False

    @staticmethod
    def _apply(catalog: Catalog, batch: list[Request]) -> None:
        """Saves go in one transaction; if that fails, one by one, so those before the bad one
        still land (and the first error is the one reported)."""
        kind = batch[0][0]
        if kind == "save" and len(batch) > 1:
            try:
                catalog.save_many([args for _, args in batch])
                return
            except CatalogError:
                pass
        for _, args in batch:
            if kind == "save":
                catalog.save(*args)
            elif kind == "delete":
                catalog.delete(*args)
            else:
                catalog.gc(args)

    def _submit(self, request: Optional[Request]) -> None:
        if not self._thread.is_alive():
            raise CatalogError(f"the snapshot writer for {self.path} is closed")
        self._requests.put(request)

    def submit_save(self, snap: Snapshot, blobs: dict[bytes, bytes]) -> None:
        self._submit(("save", (snap, blobs)))

    def submit_delete(self, names: Iterable[str]) -> None:
        self._submit(("delete", tuple(names)))

    def submit_gc(self, keep: Iterable[bytes] = ()) -> None:
        """Collect unreferenced content, except `keep` (content of snapshots not yet submitted)."""
        self._submit(("gc", set(keep)))

    def flush(self) -> None:
        """Wait for every submitted request; raise the first error one of them hit.

        A writer thread that died (a bug, not a catalog error) is reported, not waited for."""
        done = self._requests.all_tasks_done
        with done:
            while self._requests.unfinished_tasks:
                if not self._thread.is_alive():
                    raise CatalogError(f"the snapshot writer for {self.path} stopped unexpectedly")
                done.wait(0.2)
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
