"""A background thread that writes to the catalog, so SQLite runs while Unicorn runs.

Unicorn releases the GIL inside emu_start and sqlite3 releases it inside SQLite, so the second
core does the compression and the database work. Requests run in order; an error in the thread
is re-raised at the next flush()."""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Optional

from snapshots.catalog import Catalog, CatalogError, Snapshot


class CatalogWriter:
    def __init__(self, path: str, recording_id: str) -> None:
        self.path = path
        self.recording_id = recording_id
        self.requests: "queue.Queue[Optional[Callable[[Catalog], Any]]]" = queue.Queue()
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._work, name="urr-catalog-writer", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        catalog: Optional[Catalog] = None
        try:
            catalog = Catalog.open(self.path, self.recording_id, create=True)
        except BaseException as e:  # reported at the next flush
            self.error = e
        while True:
            request = self.requests.get()
            try:
                if request is None:
                    return
                if catalog is not None and self.error is None:
                    request(catalog)
            except BaseException as e:
                self.error = e
            finally:
                self.requests.task_done()
                if request is None and catalog is not None:
                    catalog.close()

    def submit_save(self, snap: Snapshot, blobs: dict[bytes, bytes]) -> None:
        self.requests.put(lambda c: c.save(snap, blobs))

    def submit_delete(self, names: list[str]) -> None:
        self.requests.put(lambda c: c.delete(names))

    def submit_gc(self) -> None:
        self.requests.put(lambda c: c.gc())

    def flush(self) -> None:
        """Wait for every submitted request; raise the first error one of them hit."""
        self.requests.join()
        if self.error is not None:
            e, self.error = self.error, None
            raise CatalogError(f"writing snapshots to {self.path} failed: {e}") from None

    def close(self) -> None:
        self.flush()
        self.requests.put(None)
        self.thread.join()
