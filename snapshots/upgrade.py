"""`urr-snap upgrade`: convert a format-1 catalog (a whole page map per snapshot) to the page
trees of format 2 in place, in one transaction: a conversion that fails or is killed leaves the
format-1 file as it was."""
from __future__ import annotations

import lz4.block

from cpu import pagetree
from cpu.pagemap import PAGE
from snapshots.catalog import FORMAT_VERSION, Catalog, CatalogError, _connect
from snapshots.snapshot import unpack_map


def upgrade(path: str) -> tuple[int, int]:
    """Convert the catalog at `path`; (snapshots converted, tree nodes stored). A catalog of
    the current format is left alone: (0, 0)."""
    catalog = Catalog(path, _connect(path, create=False), cache_blobs=0)
    conn = catalog._conn
    try:
        tables = catalog._tables()
        if "meta" not in tables or "snapshots" not in tables:
            raise CatalogError(f"{path} is not a snapshot catalog")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") == str(FORMAT_VERSION):
            return 0, 0
        if meta.get("format") != "1":
            raise CatalogError(f"{path} is snapshot catalog format {meta.get('format')}; "
                               f"upgrade converts format 1 to {FORMAT_VERSION}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            converted, nodes = _convert(catalog)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return converted, nodes
    finally:
        catalog.close()


def _convert(catalog: Catalog) -> tuple[int, int]:
    conn = catalog._conn
    conn.execute("DROP INDEX IF EXISTS idx_snapshots_icount")
    conn.execute("ALTER TABLE snapshots RENAME TO snapshots_format1")
    catalog._create_schema(catalog._read_recording_id_unchecked())
    converted, stored = 0, 0
    rows = conn.execute("SELECT name, kind, icount, vtime_ns, ram_size, cpu, devices, log_pos, "
                        "page_map, disk_map, pages, bytes FROM snapshots_format1").fetchall()
    for (name, kind, icount, vtime_ns, ram_size, cpu, devices, log_pos, page_map, disk_map,
         pages, added) in rows:
        page_hashes = unpack_map(page_map, f"snapshot '{name}' in {catalog.path}")
        root, nodes = pagetree.build(page_hashes, ram_size // PAGE)
        before = conn.total_changes
        conn.executemany("INSERT OR IGNORE INTO nodes (hash, data) VALUES (?, ?)",
                         [(h, lz4.block.compress(d, store_size=False)) for h, d in nodes.items()])
        stored += conn.total_changes - before
        conn.execute("INSERT INTO snapshots (name, kind, icount, vtime_ns, ram_size, cpu, devices, "
                     "log_pos, ram_root, disk_map, pages, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (name, kind, icount, vtime_ns, ram_size, cpu, devices, log_pos, root, disk_map,
                      pages, added))
        converted += 1
    conn.execute("DROP TABLE snapshots_format1")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'format'", (str(FORMAT_VERSION),))
    return converted, stored
