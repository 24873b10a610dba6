"""The snapshot catalog: one SQLite file per recording (callers put it at `<rrfile>.db`).

Why it is shaped this way:
- Content is stored by content. Each RAM page (4 KiB) or disk-overlay sector (512 B) is one
  lz4 blob keyed by the xxh3-128 hash of its raw bytes, so content that many snapshots share
  (most of it) is stored once.
- RAM is a tree of page hashes (cpu.pagetree): leaves of 64 page hashes, middle nodes of 64
  leaf hashes, stored once per distinct content in `nodes`, and a root per snapshot. A snapshot
  that changed k pages adds at most k leaves, k middle nodes and its root, whatever the RAM
  size; every snapshot still loads on its own (its root reaches all its pages): there are no
  diff chains to walk or to break. The disk overlay's sector map is one lz4 block of packed
  (u32 number, 16-byte hash) pairs per snapshot (overlays are small).
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
                            ram_root (the root's bytes), disk_map; pages (count) and bytes
                            (see SnapshotInfo)
  nodes(hash, data)         tree nodes, data the lz4 block of the node's NODE_BYTES
  blobs(hash, size, data)   size is the raw length, data the lz4 block without a size header
Format 1 (a whole page map per snapshot) is refused with a pointer to `urr-snap upgrade`
(snapshots.upgrade).
"""
from __future__ import annotations

import json
import os
import sqlite3
import sys
import urllib.parse
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Iterable, Iterator, Optional, Sequence


def _import_sqlite_utils() -> ModuleType:
    """sqlite-utils without numpy and pandas, which it imports when they are installed (for
    their types, which urr never hands it): numpy's import took ~0.1 s of every urr start, and
    the OpenBLAS threads it starts ~0.1 s of CPU beside the emulator. Others may still import
    them; only sqlite-utils's own import does without."""
    absent = [name for name in ("numpy", "pandas") if name not in sys.modules]
    for name in absent:
        sys.modules[name] = None  # type: ignore[assignment]  # "import numpy" fails at once
    try:
        import sqlite_utils
    finally:
        for name in absent:
            if sys.modules.get(name) is None:
                del sys.modules[name]
    return sqlite_utils


sqlite_utils = _import_sqlite_utils()

from cpu import pagetree  # noqa: E402  (after sqlite-utils: neither imports the other)
from cpu.pagemap import PAGE
from snapshots.snapshot import (CatalogError, Snapshot, SnapshotInfo, TreePages, check_content,
                                content_hash, pack_content, pack_map, unpack_content, unpack_map, tree_of)

FORMAT_VERSION = 2
KINDS = ("initial", "named", "periodic")
DEFAULT_CACHE_BLOBS = 8192  # decompressed blobs kept per open catalog: 32 MiB of pages
NODE_CACHE = 32768  # decompressed tree nodes kept per open catalog (32 MiB): a tree's upper
# levels are read by every restore and every gc
_IN_CHUNK = 500  # hashes per `IN (...)` query, well under SQLite's parameter limit
_INFO = "SELECT name, kind, icount, vtime_ns, pages, bytes FROM snapshots"


@dataclass
class StoredAhead:
    """Content of the next snapshot stored before it (`Catalog.add_blobs`: a big capture's, as
    it is fed): its bytes count in what that snapshot adds, and its hashes need no asking."""
    bytes: int = 0
    hashes: set[bytes] = field(default_factory=set)

    def add(self, hashes: Iterable[bytes], stored: int) -> None:
        self.bytes += stored
        self.hashes.update(hashes)


@dataclass
class _References:
    """What a catalog's snapshots reach (Catalog._references)."""
    nodes: set[bytes] = field(default_factory=set)
    blobs: set[bytes] = field(default_factory=set)
    mid_children: dict[bytes, int] = field(default_factory=dict)
    node_references: int = 0
    disk_references: int = 0


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
    nodes: int  # tree nodes stored
    node_bytes: int  # their compressed size
    node_references: int  # nodes all snapshots' trees name together (whole maps' cost)
    garbage_nodes: int  # nodes no snapshot's tree reaches

    @property
    def dedup_ratio(self) -> float:
        """References per stored content: how many times over sharing saves storing it."""
        return self.references / self.referenced if self.referenced else 1.0

    @property
    def tree_sharing(self) -> float:
        """Node references per stored node: how many snapshots share a node, on average."""
        return self.node_references / self.nodes if self.nodes else 1.0


def _chunks(items: Sequence, n: int = _IN_CHUNK) -> Iterator[Sequence]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _connect(path: str, create: bool, read_only: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, synchronous=NORMAL,
    freed pages reused without being zeroed; or one that only reads, and changes nothing."""
    if os.path.isdir(path):
        raise CatalogError(f"{path} is a directory, not a snapshot catalog")
    if not create and not os.path.exists(path):
        raise CatalogError(f"no snapshot catalog at {path}")
    mode = "ro" if read_only else "rwc" if create else "rw"
    uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode={mode}"
    conn = None
    try:
        # One thread at a time, not always the one that opened it (a debugger's runner thread).
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30, check_same_thread=False)
        if read_only:
            conn.execute("SELECT count(*) FROM sqlite_master")  # "not a database" shows here
            return conn
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
        self._nodes: OrderedDict[bytes, bytes] = OrderedDict()
        # Rows of content and nodes stored through this connection since its last gc, and the
        # rows that gc left: what `gc_due` weighs (a gc reads every row).
        self.rows_stored = 0
        self.rows_after_gc = 0

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str, recording_id: str, create: bool,
             cache_blobs: int = DEFAULT_CACHE_BLOBS, read_only: bool = False) -> Catalog:
        """Open the catalog of one recording (creating it if `create`); refuse another's.

        `cache_blobs` bounds the LRU of decompressed, verified content (0 turns it off);
        `read_only`: a connection that cannot change the file."""
        catalog = cls._open(path, create, recording_id, cache_blobs, read_only)
        if catalog.recording_id != recording_id:
            catalog.close()
            raise CatalogError(f"catalog {path} belongs to another recording "
                               f"({catalog.recording_id}, not {recording_id})")
        return catalog

    @classmethod
    def open_existing(cls, path: str, cache_blobs: int = DEFAULT_CACHE_BLOBS,
                      read_only: bool = False) -> Catalog:
        """Open a catalog whatever recording it belongs to (urr-snap); see `.recording_id`.
        `read_only`: a connection that cannot change the file."""
        return cls._open(path, False, None, cache_blobs, read_only)

    @classmethod
    def _open(cls, path: str, create: bool, recording_id: Optional[str], cache_blobs: int,
              read_only: bool = False) -> Catalog:
        if not read_only and os.path.exists(path):
            # Read-only first: a file that is no catalog (another program's SQLite, an empty
            # file) is refused as it is, not switched to WAL or given tables first.
            cls._open(path, False, None, 0, read_only=True).close()
        catalog = cls(path, _connect(path, create, read_only), cache_blobs)
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
            "cpu": str, "devices": str, "log_pos": str, "ram_root": bytes, "disk_map": bytes,
            "pages": int, "bytes": int,
        }, pk="name", not_null={"kind", "icount", "vtime_ns", "ram_size", "cpu", "devices", "log_pos",
                                "ram_root", "disk_map", "pages", "bytes"}, if_not_exists=True)
        db["snapshots"].create_index(["icount"], if_not_exists=True)
        db["nodes"].create({"hash": bytes, "data": bytes}, pk="hash", not_null={"data"},
                           if_not_exists=True)
        db["blobs"].create({"hash": bytes, "size": int, "data": bytes}, pk="hash",
                           not_null={"size", "data"}, if_not_exists=True)
        self._conn.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                               [("format", str(FORMAT_VERSION)), ("recording_id", recording_id)])

    def _read_recording_id_unchecked(self) -> str:
        """The recording id, whatever the format (for an upgrade)."""
        rows = self._rows("SELECT value FROM meta WHERE key = 'recording_id'")
        return rows[0][0] if rows else ""

    def _read_meta(self) -> str:
        """Check the schema and format; the recording id."""
        missing = {"meta", "snapshots", "blobs"} - self._tables()
        if missing:
            raise CatalogError(f"{self.path} is not a snapshot catalog "
                               f"(no {', '.join(sorted(missing))} table)")
        meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") == "1":
            raise CatalogError(f"{self.path} is snapshot catalog format 1 (a whole page map per "
                               f"snapshot); this urr reads format {FORMAT_VERSION}: "
                               f"`urr-snap upgrade --db {self.path} RRFILE` converts it in place")
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

    def has_nodes(self, hashes: Iterable[bytes]) -> set[bytes]:
        """Which of the tree nodes `hashes` the file holds."""
        found: set[bytes] = set()
        for part in _chunks(list(hashes)):
            found.update(h for (h,) in self._rows(
                f"SELECT hash FROM nodes WHERE hash IN ({','.join('?' * len(part))})", part))
        return found

    def save(self, snap: Snapshot, blobs: dict[bytes, bytes],
             nodes: Optional[dict[bytes, bytes]] = None, base: Optional[bytes] = None,
             ahead: Optional[StoredAhead] = None) -> None:
        """Store a snapshot (replacing a same-named one) in one transaction, or as one step of
        the open batch.

        `blobs` maps hash -> raw content, `nodes` hash -> tree node, for whatever the caller
        believes may be new; what is already stored is skipped. Every node and content the
        snapshot's tree reaches must then be in the file: checked for what the given nodes name,
        except what they have in common with the tree `base`, whose whole tree the caller knows
        to be stored (a snapshot of k changed pages is checked at the cost of k). `ahead`: its
        content stored before it (`add_blobs`)."""
        if snap.kind not in KINDS:
            raise CatalogError(f"snapshot '{snap.name}' has unknown kind '{snap.kind}'")
        with self._transaction():
            self._insert(snap, blobs, nodes or {}, base, ahead or StoredAhead())

    def _insert(self, snap: Snapshot, blobs: dict[bytes, bytes], nodes: dict[bytes, bytes],
                base: Optional[bytes], ahead: StoredAhead) -> None:
        """One snapshot's rows, new nodes and new content, inside the caller's transaction."""
        state = [json.dumps(x) for x in (snap.cpu, snap.devices, snap.log_pos)]
        root, built = tree_of(snap.pages, snap.ram_size)
        nodes = {**built, **nodes}
        if len(root) != pagetree.mids_for(snap.ram_size // PAGE) * pagetree.HASH:
            raise CatalogError(f"snapshot '{snap.name}' has a page tree that does not fit its RAM size")
        disk_map = pack_map(snap.disk)
        if base is not None and len(base) != len(root):
            base = None
        need_nodes, need_blobs = pagetree.named_below(root, nodes, base, self.get_node)
        need_blobs |= set(snap.disk.values())
        present_nodes = self.has_nodes(need_nodes | nodes.keys())
        present = self.has_blobs((need_blobs | blobs.keys()) - ahead.hashes) | ahead.hashes
        missing = (need_nodes - present_nodes) | (need_blobs - present - blobs.keys())
        if missing:
            raise CatalogError(f"snapshot '{snap.name}' refers to {len(missing)} pages or tree nodes "
                               f"neither in {self.path} nor given, e.g. {min(missing).hex()}")
        new_nodes = []
        for h, data in nodes.items():
            if h in present_nodes:
                continue
            if pagetree.node_hash(data) != h:
                raise CatalogError(f"tree node given for {h.hex()} does not match that hash")
            new_nodes.append((h, pack_content(data)))
            self._remember_node(h, data)
        self._many("INSERT OR IGNORE INTO nodes (hash, data) VALUES (?, ?)", new_nodes)
        self.rows_stored += len(new_nodes)
        added = (ahead.bytes + self._store_blobs(blobs, present) + sum(len(c) for _, c in new_nodes)
                 + sum(map(len, state)) + len(root) + len(disk_map))
        self._rows("INSERT OR REPLACE INTO snapshots (name, kind, icount, vtime_ns, ram_size, cpu, "
                   "devices, log_pos, ram_root, disk_map, pages, bytes) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (snap.name, snap.kind, snap.icount, snap.vtime_ns, snap.ram_size, *state,
                    root, disk_map, len(snap.pages), added))

    def add_blobs(self, blobs: dict[bytes, bytes]) -> int:
        """Store content ahead of the snapshot that will refer to it (until then, a gc frees
        it); the bytes it took (content already stored counts too: INSERT OR IGNORE, since
        asking first what is stored cost more)."""
        with self._transaction():
            return self._store_blobs(blobs, set())

    def add_packed(self, rows: list[tuple[bytes, int, bytes]]) -> int:
        """`add_blobs` for content its giver checked against its hash and packed
        (`pack_content`), as (hash, raw size, packed bytes): a big capture's, packed by the
        forked copy that feeds it so that the writer does not compress 256 MiB."""
        with self._transaction():
            return self._store_packed(rows)

    def _store_blobs(self, blobs: dict[bytes, bytes], present: set[bytes]) -> int:
        """Store the content not `present`, checked against its hash; the bytes it took."""
        new = []
        for h, data in blobs.items():
            if h in present:
                continue
            check_content(h, data)
            new.append((h, len(data), pack_content(data)))
        return self._store_packed(new)

    def _store_packed(self, rows: list[tuple[bytes, int, bytes]]) -> int:
        self._many("INSERT OR IGNORE INTO blobs (hash, size, data) VALUES (?, ?, ?)", rows)
        self.rows_stored += len(rows)
        return sum(len(c) for _, _, c in rows)

    def delete(self, *names: str) -> int:
        """Delete snapshots by name; how many existed. Their content stays until `gc`."""
        with self._transaction():
            return self._many("DELETE FROM snapshots WHERE name = ?", [(n,) for n in names])

    def gc(self, keep: Iterable[bytes] = (), keep_roots: Iterable[bytes] = (),
           node: Optional[pagetree.NodeSource] = None) -> tuple[int, int]:
        """Delete content and tree nodes no snapshot refers to, except content `keep` and the
        trees `keep_roots` (what the caller will still refer to; their nodes from `node`, which
        may know nodes the file does not hold); (contents removed, compressed bytes freed).
        SQLite reuses the freed pages."""
        with self._transaction():
            refs = self._references(keep_roots, node or self.get_node)
            doomed = self._garbage(refs.blobs | set(keep))
            freed = sum(self._stored_sizes(doomed).values())
            self._many("DELETE FROM blobs WHERE hash = ?", [(h,) for h in doomed])
            nodes = [h for (h,) in self._rows("SELECT hash FROM nodes")]
            dead_nodes = [h for h in nodes if h not in refs.nodes]
            self._many("DELETE FROM nodes WHERE hash = ?", [(h,) for h in dead_nodes])
        self.rows_stored = 0
        self.rows_after_gc = len(refs.blobs) + len(nodes) - len(dead_nodes)
        for h in doomed:
            self._cache.pop(h, None)
        for h in dead_nodes:
            self._nodes.pop(h, None)
        return len(doomed), freed

    def gc_due(self) -> bool:
        """Whether a gc now would cost no more than the rows stored since the last: it reads
        every row, so run every few snapshots it would make each cost what the catalog holds
        (bigmem: 65,536 pages of content, ~0.4 s a gc)."""
        return self.rows_stored * 2 >= self.rows_after_gc

    def _references(self, extra_roots: Iterable[bytes] = (),
                    node: Optional[pagetree.NodeSource] = None) -> _References:
        """What the snapshots' trees and sector maps (and `extra_roots`) reach, each distinct
        node read once (from `node`, else the file)."""
        get_node = node or self.get_node
        refs = _References()
        leaves_seen: set[bytes] = set()
        roots = [*((name, root) for name, root in self._rows("SELECT name, ram_root FROM snapshots")),
                 *(("(running)", r) for r in extra_roots)]
        for name, root in roots:
            for mid in pagetree.children(root):
                if mid not in refs.nodes:
                    refs.nodes.add(mid)
                    refs.mid_children[mid] = len(pagetree.children(get_node(mid)))
                    for leaf in pagetree.children(get_node(mid)):
                        refs.nodes.add(leaf)
                        if leaf not in leaves_seen:
                            leaves_seen.add(leaf)
                            refs.blobs.update(pagetree.children(get_node(leaf)))
                refs.node_references += 1 + refs.mid_children[mid]
        for name, disk_map in self._rows("SELECT name, disk_map FROM snapshots"):
            hashes = unpack_map(disk_map, f"snapshot '{name}' in {self.path}").values()
            refs.disk_references += len(hashes)
            refs.blobs.update(hashes)
        return refs

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
        """A snapshot's state, its page tree (nodes through `get_node`) and sector map; its
        content comes through `get_blob`."""
        rows = self._rows("SELECT kind, icount, vtime_ns, cpu, devices, log_pos, ram_root, disk_map, "
                          "ram_size, pages FROM snapshots WHERE name = ?", (name,))
        if not rows:
            raise CatalogError(f"no snapshot named '{name}' in {self.path}")
        kind, icount, vtime_ns, cpu, devices, log_pos, root, disk_map, ram_size, pages = rows[0]
        owner = f"snapshot '{name}' in {self.path}"
        try:
            cpu, devices, log_pos = json.loads(cpu), json.loads(devices), json.loads(log_pos)
        except (TypeError, ValueError):
            raise CatalogError(f"{owner} is corrupt (its state is not JSON)") from None
        if not isinstance(root, bytes) or len(root) % pagetree.HASH:
            raise CatalogError(f"{owner} is corrupt (its page tree cannot be read)")
        return Snapshot(name, kind, icount, vtime_ns, cpu, devices, log_pos,
                        TreePages(root, pages, self.get_node), unpack_map(disk_map, owner), ram_size)

    def get_node(self, h: bytes) -> bytes:
        """A tree node by hash, verified against it."""
        data = self._nodes.get(h)
        if data is not None:
            self._nodes.move_to_end(h)
            return data
        rows = self._rows("SELECT data FROM nodes WHERE hash = ?", (h,))
        if not rows:
            raise CatalogError(f"page tree node {h.hex()} is missing from {self.path}")
        data = unpack_content(pagetree.NODE_BYTES, rows[0][0])
        if data is None or pagetree.node_hash(data) != h:
            raise CatalogError(f"page tree node {h.hex()} in {self.path} is corrupt (its content "
                               "does not match its hash)")
        self._remember_node(h, data)
        return data

    def _remember_node(self, h: bytes, data: bytes) -> None:
        self._nodes[h] = data
        if len(self._nodes) > NODE_CACHE:
            self._nodes.popitem(last=False)

    def get_blob(self, h: bytes) -> bytes:
        """Content by hash, verified against it: corrupt content is reported, never returned."""
        return self.get_blobs([h])[h]

    def get_blobs(self, hashes: Iterable[bytes]) -> dict[bytes, bytes]:
        """Content by hash, verified, asked of the file in one query per few hundred (a restore
        wants tens at once: a query each cost ~0.15 ms)."""
        out: dict[bytes, bytes] = {}
        wanted = []
        for h in hashes:
            data = self._cache.get(h)
            if data is None:
                wanted.append(h)
            else:
                self._cache.move_to_end(h)
                out[h] = data
        if not wanted:
            return out
        for h, size, stored in self._blob_rows("hash, size, data", wanted):
            data = unpack_content(size, stored)
            if data is None or content_hash(data) != h:
                raise CatalogError(f"page {h.hex()} in {self.path} is corrupt (its content does not match its hash)")
            out[h] = data
            if self._cache_blobs:
                self._cache[h] = data
                if len(self._cache) > self._cache_blobs:
                    self._cache.popitem(last=False)
        for h in wanted:
            if h not in out:
                raise CatalogError(f"page {h.hex()} is missing from {self.path}")
        return out

    def stats(self) -> CatalogStats:
        """Counts and sizes of the whole catalog, sharing and garbage included."""
        refs = self._references()
        blobs, stored, raw = self._rows("SELECT count(*), coalesce(sum(length(data)), 0), "
                                        "coalesce(sum(size), 0) FROM blobs")[0]
        nodes, node_bytes = self._rows("SELECT count(*), coalesce(sum(length(data)), 0) FROM nodes")[0]
        page_refs = self._rows("SELECT coalesce(sum(pages), 0) FROM snapshots")[0][0]
        kinds = dict(self._rows("SELECT kind, count(*) FROM snapshots GROUP BY kind ORDER BY kind"))
        garbage = self._garbage(refs.blobs)
        sizes = self._stored_sizes(garbage)
        return CatalogStats(kinds, blobs, stored, raw, page_refs + refs.disk_references,
                            len(refs.blobs), [(h, sizes[h]) for h in garbage], nodes, node_bytes,
                            refs.node_references, nodes - len(refs.nodes))

    def checkpoint_every(self, pages: int) -> None:
        """Copy the write-ahead log into the file whenever it reaches `pages` (SQLite's default
        is 1000): the last connection to close copies what is left, so a small log keeps the end
        of a run short."""
        self._rows(f"PRAGMA wal_autocheckpoint={int(pages)}")

    def page_cache(self, size: int) -> None:
        """Let SQLite keep up to `size` bytes of the file's pages in memory (its default is
        2 MB): a writer inserting content all over the hash index finds its pages there."""
        self._rows(f"PRAGMA cache_size={-max(1, int(size) >> 10)}")

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
        self._nodes.clear()
        if self._streaming:  # the checkpoint the last connection makes as it closes: synced
            self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
