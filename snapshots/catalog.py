"""The snapshot catalog: an SQLite file beside the rrfile, schema made with sqlite-utils.

Tables:
  meta(key, value)         format version and the recording id the catalog belongs to
  snapshots(name, ...)     one row per snapshot: kind, icount, virtual time, registers, device
                           state and log position as JSON, and compact page/sector maps
  blobs(hash, size, data)  page and sector content, lz4-compressed, keyed by xxh3-128 of the
                           raw content: stored once however many snapshots share it

A page map is an lz4 block of packed (u32 page number, 16-byte hash) pairs for every non-zero
page, so every snapshot loads on its own. Each save is one transaction."""
from __future__ import annotations

import json
import sqlite3
import struct
from dataclasses import dataclass
from typing import Iterable, Optional

import lz4.block
import sqlite_utils
import xxhash

FORMAT_VERSION = 1
_ENTRY = struct.Struct("<I16s")


class CatalogError(ValueError):
    """The catalog cannot be used as asked; one line for the user."""


@dataclass
class Snapshot:
    name: str
    kind: str  # "initial" | "named" | "periodic"
    icount: int
    vtime_ns: int
    cpu: dict
    devices: dict
    log_pos: dict
    pages: dict[int, bytes]  # page number -> content hash, non-zero pages only
    disk: dict[int, bytes]  # overlay sector -> content hash
    ram_size: int


@dataclass
class SnapshotInfo:
    name: str
    kind: str
    icount: int
    vtime_ns: int
    pages: int
    bytes: int  # what this snapshot added to the file: its row and maps plus the new blobs it brought


def pack_map(entries: dict[int, bytes]) -> bytes:
    raw = b"".join(_ENTRY.pack(i, h) for i, h in sorted(entries.items()))
    return lz4.block.compress(raw)


def unpack_map(blob: bytes) -> dict[int, bytes]:
    try:
        raw = lz4.block.decompress(blob)
    except lz4.block.LZ4BlockError:
        raise CatalogError("a page map in the catalog is corrupt") from None
    if len(raw) % _ENTRY.size:
        raise CatalogError("a page map in the catalog is corrupt")
    return {i: h for i, h in _ENTRY.iter_unpack(raw)}


def content_hash(data: bytes) -> bytes:
    return xxhash.xxh3_128_digest(data)


class Catalog:
    def __init__(self, path: str, db: sqlite_utils.Database, recording_id: str) -> None:
        self.path = path
        self.db = db
        self.recording_id = recording_id
        self._cache: dict[bytes, bytes] = {}

    @classmethod
    def _connect(cls, path: str) -> sqlite_utils.Database:
        try:
            conn = sqlite3.connect(path, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as e:
            raise CatalogError(f"{path} is not a snapshot catalog ({e})") from None
        return sqlite_utils.Database(conn)

    @classmethod
    def open(cls, path: str, recording_id: str, create: bool) -> "Catalog":
        """Open (or create) the catalog of one recording; refuse one of another recording."""
        import os
        if not create and not os.path.exists(path):
            raise CatalogError(f"no snapshot catalog at {path}")
        db = cls._connect(path)
        try:
            if "meta" not in db.table_names():
                if not create:
                    raise CatalogError(f"{path} is not a snapshot catalog")
                cls._create_schema(db, recording_id)
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as e:
            raise CatalogError(f"{path} is not a snapshot catalog ({e})") from None
        if meta.get("format") != str(FORMAT_VERSION):
            raise CatalogError(f"{path} is catalog format {meta.get('format')}; this urr reads {FORMAT_VERSION}")
        if meta.get("recording_id") != recording_id:
            raise CatalogError(f"catalog {path} belongs to another recording "
                               f"({meta.get('recording_id')}, not {recording_id})")
        return cls(path, db, recording_id)

    @classmethod
    def open_existing(cls, path: str) -> "Catalog":
        """Open a catalog whatever recording it belongs to (for urr-snap)."""
        import os
        if not os.path.exists(path):
            raise CatalogError(f"no snapshot catalog at {path}")
        db = cls._connect(path)
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError:
            raise CatalogError(f"{path} is not a snapshot catalog") from None
        if "recording_id" not in meta:
            raise CatalogError(f"{path} is not a snapshot catalog")
        return cls.open(path, meta["recording_id"], create=False)

    @staticmethod
    def _create_schema(db: sqlite_utils.Database, recording_id: str) -> None:
        with db.conn:
            db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
            db["snapshots"].create({
                "name": str, "kind": str, "icount": int, "vtime_ns": int, "ram_size": int,
                "cpu": str, "devices": str, "log_pos": str, "page_map": bytes, "disk_map": bytes,
                "pages": int, "bytes": int,
            }, pk="name", not_null={"kind", "icount", "vtime_ns"}, if_not_exists=True)
            db["snapshots"].create_index(["icount"], if_not_exists=True)
            db["blobs"].create({"hash": bytes, "size": int, "data": bytes}, pk="hash", if_not_exists=True)
            db["meta"].insert_all([{"key": "format", "value": str(FORMAT_VERSION)},
                                   {"key": "recording_id", "value": recording_id}], replace=True)

    # -- writing ------------------------------------------------------------------------------

    def has_blobs(self, hashes: Iterable[bytes]) -> set[bytes]:
        hashes = list(hashes)
        found: set[bytes] = set()
        for i in range(0, len(hashes), 500):
            part = hashes[i:i + 500]
            q = f"SELECT hash FROM blobs WHERE hash IN ({','.join('?' * len(part))})"
            found.update(r[0] for r in self.db.execute(q, part))
        return found

    def save(self, snap: Snapshot, blobs: dict[bytes, bytes]) -> None:
        """Store a snapshot and its new content in one transaction (replacing a same-named one)."""
        page_map, disk_map = pack_map(snap.pages), pack_map(snap.disk)
        row = {"name": snap.name, "kind": snap.kind, "icount": snap.icount, "vtime_ns": snap.vtime_ns,
               "ram_size": snap.ram_size, "cpu": json.dumps(snap.cpu), "devices": json.dumps(snap.devices),
               "log_pos": json.dumps(snap.log_pos), "page_map": page_map, "disk_map": disk_map,
               "pages": len(snap.pages)}
        conn = self.db.conn
        with conn:
            present = self.has_blobs(blobs)
            new = [(h, len(d), lz4.block.compress(d, store_size=False)) for h, d in blobs.items() if h not in present]
            conn.executemany("INSERT OR IGNORE INTO blobs (hash, size, data) VALUES (?, ?, ?)", new)
            added = sum(len(c) for _, _, c in new) + len(page_map) + len(disk_map) + len(row["cpu"]) \
                + len(row["devices"])
            row["bytes"] = added
            conn.execute(f"INSERT OR REPLACE INTO snapshots ({', '.join(row)}) VALUES "
                         f"({', '.join('?' * len(row))})", list(row.values()))

    def delete(self, names: Iterable[str]) -> None:
        with self.db.conn:
            self.db.conn.executemany("DELETE FROM snapshots WHERE name = ?", [(n,) for n in names])

    def gc(self, keep: Iterable[bytes] = ()) -> tuple[int, int]:
        """Delete content no snapshot refers to (nor `keep`, content the caller still holds a
        reference to); returns (blobs removed, compressed bytes freed)."""
        with self.db.conn:
            referenced: set[bytes] = set(keep)
            for page_map, disk_map in self.db.execute("SELECT page_map, disk_map FROM snapshots"):
                referenced.update(unpack_map(page_map).values())
                referenced.update(unpack_map(disk_map).values())
            doomed = [(h, n) for h, n in self.db.execute("SELECT hash, length(data) FROM blobs")
                      if h not in referenced]
            self.db.conn.executemany("DELETE FROM blobs WHERE hash = ?", [(h,) for h, _ in doomed])
        for h, _ in doomed:
            self._cache.pop(h, None)
        return len(doomed), sum(n for _, n in doomed)

    # -- reading ------------------------------------------------------------------------------

    def list(self) -> list[SnapshotInfo]:
        rows = self.db.execute("SELECT name, kind, icount, vtime_ns, pages, bytes FROM snapshots "
                               "ORDER BY icount, name").fetchall()
        return [SnapshotInfo(*r) for r in rows]

    def find_at_or_before(self, icount: int) -> Optional[SnapshotInfo]:
        r = self.db.execute("SELECT name, kind, icount, vtime_ns, pages, bytes FROM snapshots "
                            "WHERE icount <= ? ORDER BY icount DESC LIMIT 1", [icount]).fetchone()
        return SnapshotInfo(*r) if r else None

    def load(self, name: str) -> Snapshot:
        r = self.db.execute("SELECT name, kind, icount, vtime_ns, cpu, devices, log_pos, page_map, "
                            "disk_map, ram_size FROM snapshots WHERE name = ?", [name]).fetchone()
        if r is None:
            raise CatalogError(f"no snapshot named '{name}' in {self.path}")
        try:
            cpu, devices, log_pos = json.loads(r[4]), json.loads(r[5]), json.loads(r[6])
        except ValueError:
            raise CatalogError(f"snapshot '{name}' in {self.path} is corrupt") from None
        return Snapshot(r[0], r[1], r[2], r[3], cpu, devices, log_pos, unpack_map(r[7]),
                        unpack_map(r[8]), r[9])

    def get_blob(self, h: bytes) -> bytes:
        """Content by hash, verified: corrupt content is reported, never returned."""
        data = self._cache.get(h)
        if data is not None:
            return data
        r = self.db.execute("SELECT size, data FROM blobs WHERE hash = ?", [h]).fetchone()
        if r is None:
            raise CatalogError(f"page {h.hex()} is missing from {self.path}")
        try:
            data = lz4.block.decompress(r[1], uncompressed_size=r[0]) if r[0] else b""
        except lz4.block.LZ4BlockError:
            data = None
        if data is None or content_hash(data) != h:
            raise CatalogError(f"page {h.hex()} in {self.path} is corrupt (content does not match its hash)")
        if len(self._cache) > 8192:
            self._cache.clear()
        self._cache[h] = data
        return data

    def close(self) -> None:
        self.db.conn.close()
