"""The snapshot catalog: one SQLite file per recording (callers put it at `<rrfile>.db`).

Why it is shaped this way:
- Content is stored by content. Each RAM page (4 KiB) or disk-overlay sector (512 B) is one
  lz4 blob keyed by the xxh3-128 hash of its raw bytes, so content that many snapshots share
  (most of it) is stored once.
- A snapshot is one row. Its page and sector maps are each one lz4 block of packed
  (u32 number, 16-byte hash) pairs, so thousands of snapshots of thousands of pages stay small,
  and every snapshot loads on its own: there are no diff chains to walk or to break.
- Every save, delete and gc is all or nothing: one SQLite transaction, or a savepoint in a
  batch (`begin`) that commits many saves at once (WAL, synchronous=NORMAL; the writer of a
  recording streams unsynced until it closes, see `stream`). A process killed at any moment
  leaves the last committed consistent catalog, and a save is refused rather than stored if it
  refers to content the file does not hold.
- Content is checked against its hash whenever it is read: corrupt content is reported, never
  loaded.

Tables (made with sqlite-utils; a writable open re-runs the idempotent creation, which also
completes a file whose creation was interrupted):
  meta(key, value)          'format' (FORMAT_VERSION) and 'recording_id' (from the log header)
  snapshots(name, ...)      kind, icount, vtime_ns, ram_size; cpu, devices, log_pos as JSON;
                            page_map, disk_map; pages (count) and bytes (see SnapshotInfo)
  blobs(hash, size, data)   size is the raw length, data the lz4 block without a size header
"""
from __future__ import annotations

import json
import os
import sqlite3
import struct
import urllib.parse
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Sequence

import lz4.block
import sqlite_utils

from cpu.ram import page_digest

FORMAT_VERSION = 1
KINDS = ("initial", "named", "periodic")
DEFAULT_CACHE_BLOBS = 8192  # decompressed blobs kept per open catalog: 32 MiB of pages
_ENTRY = struct.Struct("<I16s")
_IN_CHUNK = 500  # hashes per `IN (...)` query, well under SQLite's parameter limit
_INFO = "SELECT name, kind, icount, vtime_ns, pages, bytes FROM snapshots"


class CatalogError(ValueError):
    """The catalog cannot be used as asked; the message is one line for the user."""


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
    pages: dict[int, bytes]  # 4 KiB page number -> content hash, non-zero pages only
    disk: dict[int, bytes]  # overlay sector number -> content hash
    ram_size: int

    def references(self) -> set[bytes]:
        """Every content hash the snapshot needs: its pages' and its sectors'."""
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


@dataclass
class CatalogStats:
    """What `urr-snap info` reports about a whole catalog."""
    kinds: dict[str, int]  # snapshots of each kind
    blobs: int  # distinct contents stored
    stored_bytes: int  # their compressed size
    raw_bytes: int  # their raw size
    references: int  # page and sector references of all snapshots together
    referenced: int  # distinct contents those references name
    garbage: list[tuple[bytes, int]]  # (hash, stored bytes) of content nothing refers to

    @property
    def dedup_ratio(self) -> float:
        """References per stored content: how many times over sharing saves storing it."""
        return self.references / self.referenced if self.referenced else 1.0


def content_hash(data: bytes) -> bytes:
    """The key content is stored under: the hash the machine names its pages by."""
    return page_digest(data)


def _pack_map(entries: dict[int, bytes]) -> bytes:
    keys = sorted(entries)
    return lz4.block.compress(b"".join(map(_ENTRY.pack, keys, map(entries.__getitem__, keys))))


def _unpack_map(blob: bytes, owner: str) -> dict[int, bytes]:
    try:
        raw = lz4.block.decompress(blob)
    except (lz4.block.LZ4BlockError, TypeError, ValueError):
        raw = None
    if raw is None or len(raw) % _ENTRY.size:
        raise CatalogError(f"{owner} is corrupt (its page map cannot be read)")
    return dict(_ENTRY.iter_unpack(raw))


def _decompress(size: int, data: bytes) -> Optional[bytes]:
    try:
        return lz4.block.decompress(data, uncompressed_size=size)
    except (lz4.block.LZ4BlockError, TypeError, ValueError):
        return None


def _chunks(items: Sequence, n: int = _IN_CHUNK) -> Iterator[Sequence]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _connect(path: str, create: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, synchronous=NORMAL,
    freed pages reused without being zeroed."""
    if os.path.isdir(path):
        raise CatalogError(f"{path} is a directory, not a snapshot catalog")
    if not create and not os.path.exists(path):
        raise CatalogError(f"no snapshot catalog at {path}")
    uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode={'rwc' if create else 'rw'}"
    conn = None
    try:
        # One thread at a time, not always the one that opened it (a debugger's runner thread).
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        # Deleted content is guest memory anyone holding the file may read anyway; zeroing it
        # (some SQLite builds do by default) tripled the cost of thinning.
        conn.execute("PRAGMA secure_delete=OFF")
        return conn
    except sqlite3.DatabaseError as e:
        if conn is not None:
            conn.close()
        if "not a database" in str(e):
            raise CatalogError(f"{path} is not a snapshot catalog (not an SQLite file)") from None
        raise CatalogError(f"cannot open snapshot catalog {path}: {e}") from None


class Catalog:
    """One open catalog: a single SQLite connection, used from one thread at a time."""

    def __init__(self, path: str, conn: sqlite3.Connection, cache_blobs: int) -> None:
        self.path = path
        self._conn = conn
        self.db = sqlite_utils.Database(conn)
        self.recording_id = ""
        self._cache_blobs = cache_blobs
        self._streaming = False
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str, recording_id: str, create: bool,
             cache_blobs: int = DEFAULT_CACHE_BLOBS) -> Catalog:
        """Open the catalog of one recording (creating it if `create`); refuse another's.

        `cache_blobs` bounds the LRU of decompressed, verified content (0 turns it off)."""
        catalog = cls._open(path, create, recording_id, cache_blobs)
        if catalog.recording_id != recording_id:
            catalog.close()
            raise CatalogError(f"catalog {path} belongs to another recording "
                               f"({catalog.recording_id}, not {recording_id})")
        return catalog

    @classmethod
    def open_existing(cls, path: str, cache_blobs: int = DEFAULT_CACHE_BLOBS) -> Catalog:
        """Open a catalog whatever recording it belongs to (urr-snap); see `.recording_id`."""
        return cls._open(path, False, None, cache_blobs)

    @classmethod
    def _open(cls, path: str, create: bool, recording_id: Optional[str], cache_blobs: int) -> Catalog:
        catalog = cls(path, _connect(path, create), cache_blobs)
        try:
            if create:
                catalog._create_schema(recording_id or "")
            catalog.recording_id = catalog._read_meta()
        except sqlite3.DatabaseError as e:
            catalog.close()
            raise CatalogError(f"{path} is not a snapshot catalog ({e})") from None
        except BaseException:
            catalog.close()
            raise
        return catalog

    def _tables(self) -> set[str]:
        return {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _create_schema(self, recording_id: str) -> None:
        """Create what is missing; `meta` first, so a file with tables but no `meta` is foreign."""
        tables = self._tables()
        if tables and "meta" not in tables:
            raise CatalogError(f"{self.path} is an SQLite file of something else, not a snapshot catalog")
        db = self.db
        db["meta"].create({"key": str, "value": str}, pk="key", not_null={"value"}, if_not_exists=True)
        db["snapshots"].create({
            "name": str, "kind": str, "icount": int, "vtime_ns": int, "ram_size": int,
            "cpu": str, "devices": str, "log_pos": str, "page_map": bytes, "disk_map": bytes,
            "pages": int, "bytes": int,
        }, pk="name", not_null={"kind", "icount", "vtime_ns", "ram_size", "cpu", "devices", "log_pos",
                                "page_map", "disk_map", "pages", "bytes"}, if_not_exists=True)
        db["snapshots"].create_index(["icount"], if_not_exists=True)
        db["blobs"].create({"hash": bytes, "size": int, "data": bytes}, pk="hash",
                           not_null={"size", "data"}, if_not_exists=True)
        self._conn.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                               [("format", str(FORMAT_VERSION)), ("recording_id", recording_id)])

    def _read_meta(self) -> str:
        """Check the schema and format; the recording id."""
        missing = {"meta", "snapshots", "blobs"} - self._tables()
        if missing:
            raise CatalogError(f"{self.path} is not a snapshot catalog "
                               f"(no {', '.join(sorted(missing))} table)")
        meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") != str(FORMAT_VERSION):
            raise CatalogError(f"{self.path} is snapshot catalog format {meta.get('format')}; "
                               f"this urr reads format {FORMAT_VERSION}")
        if not meta.get("recording_id"):
            raise CatalogError(f"{self.path} is not a snapshot catalog (it names no recording)")
        return meta["recording_id"]

    # -- SQL ----------------------------------------------------------------------------------

    def _rows(self, sql: str, params: Sequence = ()) -> list[tuple]:
        """Run one statement; SQLite's errors become CatalogError naming the file."""
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise CatalogError(f"{self.path}: {e}") from None

    def _many(self, sql: str, rows: Iterable[Sequence]) -> int:
        """Run one statement per row; how many rows it changed."""
        before = self._conn.total_changes
        try:
            self._conn.executemany(sql, rows)
        except sqlite3.Error as e:
            raise CatalogError(f"{self.path}: {e}") from None
        return self._conn.total_changes - before

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction: all of the body lands, or none of it. Inside a batch
        (`begin`) it is a savepoint: the body is undone alone, and lands with the batch."""
        nested = self._conn.in_transaction
        try:
            self._conn.execute("SAVEPOINT body" if nested else "BEGIN IMMEDIATE")
            yield
            self._conn.execute("RELEASE body" if nested else "COMMIT")
        except BaseException as e:
            if nested:
                self._conn.execute("ROLLBACK TO body")
                self._conn.execute("RELEASE body")
            elif self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise CatalogError(f"{self.path}: {e}") from None
            raise

    def begin(self) -> None:
        """Start a batch: the writes until `commit()` land together, each one still all or
        nothing on its own. A commit costs more than a small snapshot's rows, so a writer with
        a stream of snapshots stores each as it comes and commits now and then."""
        self._rows("BEGIN IMMEDIATE")

    def commit(self) -> None:
        """End the batch: everything written in it lands (or, if this fails, none of it)."""
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as e:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise CatalogError(f"{self.path}: {e}") from None

    @property
    def in_batch(self) -> bool:
        return self._conn.in_transaction

    # -- writing ------------------------------------------------------------------------------

    def _blob_rows(self, columns: str, hashes: Iterable[bytes]) -> list[tuple]:
        """`columns` of the stored content named in `hashes`, asked in chunks under SQLite's
        parameter limit."""
        rows: list[tuple] = []
        for part in _chunks(list(hashes)):
            rows += self._rows(f"SELECT {columns} FROM blobs WHERE hash IN ({','.join('?' * len(part))})", part)
        return rows

    def has_blobs(self, hashes: Iterable[bytes]) -> set[bytes]:
        """Which of `hashes` the file holds, so callers need not resend that content."""
        return {h for (h,) in self._blob_rows("hash", hashes)}

    def save(self, snap: Snapshot, blobs: dict[bytes, bytes]) -> None:
        """Store a snapshot (replacing a same-named one) in one transaction, or as one step of
        the open batch.

        `blobs` maps hash -> raw content for whatever the caller believes may be new; content
        already stored is skipped. Every hash the snapshot refers to must then be in the file."""
        if snap.kind not in KINDS:
            raise CatalogError(f"snapshot '{snap.name}' has unknown kind '{snap.kind}'")
        with self._transaction():
            self._insert(snap, blobs)

    def _insert(self, snap: Snapshot, blobs: dict[bytes, bytes]) -> None:
        """One snapshot's rows and new content, inside the caller's transaction."""
        state = [json.dumps(x) for x in (snap.cpu, snap.devices, snap.log_pos)]
        page_map, disk_map = _pack_map(snap.pages), _pack_map(snap.disk)
        referenced = snap.references()
        present = self.has_blobs(referenced | blobs.keys())
        missing = referenced - present - blobs.keys()
        if missing:
            raise CatalogError(f"snapshot '{snap.name}' refers to {len(missing)} pages neither in "
                               f"{self.path} nor given, e.g. {min(missing).hex()}")
        new = []
        for h, data in blobs.items():
            if h in present:
                continue
            if content_hash(data) != h:
                raise CatalogError(f"content given for page {h.hex()} does not match that hash")
            new.append((h, len(data), lz4.block.compress(data, store_size=False)))
        self._many("INSERT OR IGNORE INTO blobs (hash, size, data) VALUES (?, ?, ?)", new)
        added = sum(len(c) for _, _, c in new) + sum(map(len, state)) + len(page_map) + len(disk_map)
        self._rows("INSERT OR REPLACE INTO snapshots (name, kind, icount, vtime_ns, ram_size, cpu, "
                   "devices, log_pos, page_map, disk_map, pages, bytes) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (snap.name, snap.kind, snap.icount, snap.vtime_ns, snap.ram_size, *state,
                    page_map, disk_map, len(snap.pages), added))

    def delete(self, *names: str) -> int:
        """Delete snapshots by name; how many existed. Their content stays until `gc`."""
        with self._transaction():
            return self._many("DELETE FROM snapshots WHERE name = ?", [(n,) for n in names])

    def gc(self, keep: Iterable[bytes] = ()) -> tuple[int, int]:
        """Delete content no snapshot refers to, except `keep` (content the caller will still
        refer to); (blobs removed, compressed bytes freed). SQLite reuses the freed pages."""
        with self._transaction():
            referenced, _ = self._references()
            doomed = self._garbage(referenced | set(keep))
            freed = sum(self._stored_sizes(doomed).values())
            self._many("DELETE FROM blobs WHERE hash = ?", [(h,) for h in doomed])
        for h in doomed:
            self._cache.pop(h, None)
        return len(doomed), freed

    def _references(self) -> tuple[set[bytes], int]:
        """Every hash the snapshots refer to, and how many references there are."""
        referenced: set[bytes] = set()
        count = 0
        for name, page_map, disk_map in self._rows("SELECT name, page_map, disk_map FROM snapshots"):
            for m in (page_map, disk_map):
                hashes = _unpack_map(m, f"snapshot '{name}' in {self.path}").values()
                count += len(hashes)
                referenced.update(hashes)
        return referenced, count

    def _garbage(self, referenced: set[bytes]) -> list[bytes]:
        """Stored content none of `referenced` names, from the hash index alone (reading every
        content's page to learn its size cost more than the collection)."""
        return [h for (h,) in self._rows("SELECT hash FROM blobs") if h not in referenced]

    def _stored_sizes(self, hashes: Iterable[bytes]) -> dict[bytes, int]:
        """Compressed bytes of each of `hashes` the file holds."""
        return dict(self._blob_rows("hash, length(data)", hashes))

    # -- reading ------------------------------------------------------------------------------

    def list(self) -> list[SnapshotInfo]:
        """Every snapshot, by icount."""
        return [SnapshotInfo(*r) for r in self._rows(f"{_INFO} ORDER BY icount, name")]

    def find_at_or_before(self, icount: int) -> Optional[SnapshotInfo]:
        """The latest snapshot at or before `icount`: where a seek starts replaying from."""
        rows = self._rows(f"{_INFO} WHERE icount <= ? ORDER BY icount DESC, name LIMIT 1", (icount,))
        return SnapshotInfo(*rows[0]) if rows else None

    def load(self, name: str) -> Snapshot:
        """A snapshot's state and maps; its content comes through `get_blob`."""
        rows = self._rows("SELECT kind, icount, vtime_ns, cpu, devices, log_pos, page_map, disk_map, "
                          "ram_size FROM snapshots WHERE name = ?", (name,))
        if not rows:
            raise CatalogError(f"no snapshot named '{name}' in {self.path}")
        kind, icount, vtime_ns, cpu, devices, log_pos, page_map, disk_map, ram_size = rows[0]
        owner = f"snapshot '{name}' in {self.path}"
        try:
            cpu, devices, log_pos = json.loads(cpu), json.loads(devices), json.loads(log_pos)
        except (TypeError, ValueError):
            raise CatalogError(f"{owner} is corrupt (its state is not JSON)") from None
        return Snapshot(name, kind, icount, vtime_ns, cpu, devices, log_pos,
                        _unpack_map(page_map, owner), _unpack_map(disk_map, owner), ram_size)

    def get_blob(self, h: bytes) -> bytes:
        """Content by hash, verified against it: corrupt content is reported, never returned."""
        data = self._cache.get(h)
        if data is not None:
            self._cache.move_to_end(h)
            return data
        rows = self._rows("SELECT size, data FROM blobs WHERE hash = ?", (h,))
        if not rows:
            raise CatalogError(f"page {h.hex()} is missing from {self.path}")
        data = _decompress(*rows[0])
        if data is None or content_hash(data) != h:
            raise CatalogError(f"page {h.hex()} in {self.path} is corrupt (its content does not match its hash)")
        if self._cache_blobs:
            self._cache[h] = data
            if len(self._cache) > self._cache_blobs:
                self._cache.popitem(last=False)
        return data

    def stats(self) -> CatalogStats:
        """Counts and sizes of the whole catalog, sharing and garbage included."""
        referenced, references = self._references()
        blobs, stored, raw = self._rows("SELECT count(*), coalesce(sum(length(data)), 0), "
                                        "coalesce(sum(size), 0) FROM blobs")[0]
        kinds = dict(self._rows("SELECT kind, count(*) FROM snapshots GROUP BY kind ORDER BY kind"))
        garbage = self._garbage(referenced)
        sizes = self._stored_sizes(garbage)
        return CatalogStats(kinds, blobs, stored, raw, references, len(referenced),
                            [(h, sizes[h]) for h in garbage])

    def checkpoint_every(self, pages: int) -> None:
        """Copy the write-ahead log into the file whenever it reaches `pages` (SQLite's default
        is 1000): the last connection to close copies what is left, so a small log keeps the end
        of a run short."""
        self._rows(f"PRAGMA wal_autocheckpoint={int(pages)}")

    def stream(self) -> None:
        """Stop syncing writes to the disk until `close`, which syncs the whole file.

        Syncing at every checkpoint cost a recording ~2.5% of its speed (the disk writes back
        content that thinning deletes a second later). A process killed at any moment still
        leaves a consistent file, since the system holds every write; an OS crash or power loss
        before the close may not, as it may cost the recording's log its unsynced end too."""
        self._rows("PRAGMA synchronous=OFF")
        self._streaming = True

    def close(self) -> None:
        self._cache.clear()
        if self._streaming:  # the checkpoint the last connection makes as it closes: synced
            self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
