"""The snapshot catalog on real SQLite files: round trips, sharing, deletion and gc, refusals,
corruption, a writer killed mid-save, the background writer, speed, and urr-snap."""
from __future__ import annotations

import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from cpu import cpustate, pagetree
from snapshots import channel, writer as writer_module
from snapshots.catalog import Catalog, CatalogError, Snapshot, content_hash
from snapshots.snapshot import unpack_content
from snapshots.state import Capture
from snapshots.writer import CatalogWriter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REC = "5eed0000000000000000000000000001"


def page(seed: int, size: int = 4096) -> bytes:
    """Deterministic content, half of it compressible."""
    rng = random.Random(seed)
    return rng.randbytes(size // 2) + bytes([seed % 251]) * (size // 2)


def snapshot(name: str, icount: int, pages: dict[int, bytes], disk: dict[int, bytes] | None = None,
             kind: str = "periodic", ram_size: int = 16 << 20) -> tuple[Snapshot, dict[bytes, bytes]]:
    """A snapshot of the given page contents, and the content it refers to."""
    disk = disk or {}
    blobs = {content_hash(d): d for d in [*pages.values(), *disk.values()]}
    snap = Snapshot(name=name, kind=kind, icount=icount, vtime_ns=icount * 128,
                    cpu={"rip": 0x100000 + icount, "rflags": 0x202, "xmm0": [2**64 - 1, 7], "big": 2**127},
                    devices={"board": {"pit": {"mode": 2, "latch": [1, 2]}, "uart": {"ier": 0}},
                             "timers": {"pit": 1000 + icount}, "halted": False, "exit_status": None},
                    log_pos={"chunk": 252 + icount, "index": 3},
                    pages={n: content_hash(d) for n, d in pages.items()},
                    disk={n: content_hash(d) for n, d in disk.items()}, ram_size=ram_size)
    return snap, blobs


@pytest.fixture
def db(tmp_path) -> str:
    return str(tmp_path / "rec.rr.db")


@pytest.fixture
def catalog(db):
    with Catalog.open(db, REC, create=True) as c:
        yield c


def blob_count(path: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT count(*) FROM blobs").fetchone()[0]
    finally:
        conn.close()


def all_content(c: Catalog, name: str) -> dict[bytes, bytes]:
    """What a restore reads: the snapshot, then every page and sector it refers to."""
    snap = c.load(name)
    return {h: c.get_blob(h) for h in [*snap.pages.values(), *snap.disk.values()]}


# -- round trips and queries ----------------------------------------------------------------


def test_round_trip(catalog, db):
    pages = {0: page(1), 7: page(2), 4095: page(3)}
    snap, blobs = snapshot("here", 1234, pages, {3: page(4, 512)}, kind="named")
    catalog.save(snap, blobs)
    with Catalog.open(db, REC, create=False) as again:
        assert again.load("here") == snap
        assert all_content(again, "here") == blobs
        [info] = again.list()
        assert (info.name, info.kind, info.icount, info.vtime_ns, info.pages) == ("here", "named", 1234, 1234 * 128, 3)
        assert info.bytes > 0


def test_list_order_and_find_at_or_before(catalog):
    for name, icount in [("c", 300), ("a", 100), ("b", 200)]:
        catalog.save(*snapshot(name, icount, {0: page(icount)}))
    assert [i.name for i in catalog.list()] == ["a", "b", "c"]
    assert catalog.find_at_or_before(99) is None
    assert catalog.find_at_or_before(100).name == "a"
    assert catalog.find_at_or_before(299).name == "b"
    assert catalog.find_at_or_before(10**12).name == "c"


def test_save_replaces_a_same_named_snapshot(catalog):
    catalog.save(*snapshot("x", 10, {0: page(1)}))
    snap, blobs = snapshot("x", 20, {0: page(2), 1: page(3)})
    catalog.save(snap, blobs)
    assert [(i.name, i.icount, i.pages) for i in catalog.list()] == [("x", 20, 2)]
    assert catalog.load("x") == snap


def test_has_blobs(catalog):
    snap, blobs = snapshot("x", 1, {i: page(i) for i in range(1200)})  # more than one IN query
    catalog.save(snap, blobs)
    absent = content_hash(b"never stored")
    assert catalog.has_blobs([*blobs, absent]) == set(blobs)


# -- sharing, deletion, gc ------------------------------------------------------------------


def test_shared_content_is_stored_once(catalog, db):
    common = {i: page(i) for i in range(50)}
    a, blobs_a = snapshot("a", 1, common)
    catalog.save(a, blobs_a)
    b, blobs_b = snapshot("b", 2, {**common, 50: page(50), 51: page(51)})
    fresh = {h: d for h, d in blobs_b.items() if h not in catalog.has_blobs(blobs_b)}
    assert len(fresh) == 2
    catalog.save(b, fresh)  # only what is new needs sending
    catalog.save(*snapshot("c", 3, {**common, 9: page(50)}))  # same content at another page
    assert blob_count(db) == 52
    info = {i.name: i for i in catalog.list()}
    assert info["b"].bytes < info["a"].bytes / 10  # b brought two pages, a fifty
    stats = catalog.stats()
    assert (stats.blobs, stats.references, stats.referenced) == (52, 50 + 52 + 50, 52)
    assert stats.dedup_ratio == pytest.approx(152 / 52)
    assert all_content(catalog, "c")[content_hash(page(50))] == page(50)


def test_delete_and_gc_free_exactly_the_unreferenced_content(catalog, db):
    shared = {i: page(i) for i in range(10)}
    catalog.save(*snapshot("a", 1, {**shared, 10: page(100), 11: page(101)}))
    catalog.save(*snapshot("b", 2, {**shared, 10: page(200)}))
    catalog.save(*snapshot("c", 3, {0: page(100)}))  # shares page(100) with a
    assert catalog.gc() == (0, 0)
    assert catalog.delete("a") == 1
    assert catalog.delete("a", "nope") == 0
    only_a = content_hash(page(101))
    conn = sqlite3.connect(db)
    stored = conn.execute("SELECT length(data) FROM blobs WHERE hash = ?", (only_a,)).fetchone()[0]
    conn.close()
    assert catalog.gc() == (1, stored)
    assert catalog.has_blobs([only_a]) == set()
    assert blob_count(db) == 12
    for name in ("b", "c"):
        assert len(all_content(catalog, name)) == len(catalog.load(name).pages)


def test_gc_is_due_once_the_rows_stored_since_reach_half_of_what_it_left(catalog):
    """A gc reads every row: asked for every few snapshots, it runs only once the catalog grew
    by half what the last one left, so its cost is spread over the rows stored."""
    assert catalog.gc_due()  # nothing collected yet
    catalog.save(*snapshot("a", 1, {i: page(i) for i in range(40)}))
    catalog.gc()
    left = catalog.rows_after_gc
    assert left >= 40 and not catalog.gc_due()
    catalog.save(*snapshot("b", 2, {i: page(1000 + i) for i in range(left // 2 - 10)}))
    assert not catalog.gc_due()
    catalog.save(*snapshot("c", 3, {i: page(2000 + i) for i in range(20)}))
    assert catalog.gc_due()


def test_page_cache_is_given_in_bytes(catalog):
    """The writer's page cache (storing.PAGE_CACHE) reaches SQLite as KiB, its sign negative."""
    before = catalog.db.execute("PRAGMA cache_size").fetchone()[0]
    catalog.page_cache(64 << 20)
    assert catalog.db.execute("PRAGMA cache_size").fetchone()[0] == -(64 << 10) != before


def test_gc_keeps_what_the_caller_still_holds(catalog):
    snap, blobs = snapshot("a", 1, {0: page(1), 1: page(2)})
    catalog.save(snap, blobs)
    catalog.delete("a")
    held = content_hash(page(2))
    assert catalog.gc(keep={held})[0] == 1
    assert catalog.has_blobs(blobs) == {held}


def test_save_is_refused_without_its_content(catalog, db):
    catalog.save(*snapshot("ok", 1, {0: page(1)}))
    snap, blobs = snapshot("bad", 2, {0: page(1), 1: page(2), 2: page(3)})
    missing = content_hash(page(3))
    with pytest.raises(CatalogError, match=f"refers to 1 pages .*{missing.hex()}"):
        catalog.save(snap, {h: d for h, d in blobs.items() if h != missing})
    assert [i.name for i in catalog.list()] == ["ok"]
    assert blob_count(db) == 1  # nothing of the refused save was kept


def test_save_is_refused_for_content_under_the_wrong_hash(catalog):
    snap, blobs = snapshot("bad", 1, {0: page(1)})
    [h] = blobs
    with pytest.raises(CatalogError, match=f"page {h.hex()} does not match"):
        catalog.save(snap, {h: page(2)})
    assert catalog.list() == []


def test_unknown_kind_is_refused(catalog):
    snap, blobs = snapshot("x", 1, {0: page(1)}, kind="sometimes")
    with pytest.raises(CatalogError, match="unknown kind"):
        catalog.save(snap, blobs)


# -- opening: refusals -----------------------------------------------------------------------


def test_another_recordings_catalog_is_refused(catalog, db):
    catalog.save(*snapshot("a", 1, {0: page(1)}))
    for create in (False, True):
        with pytest.raises(CatalogError, match=f"catalog {db} belongs to another recording"):
            Catalog.open(db, "0ther", create=create)
    with Catalog.open_existing(db) as c:
        assert c.recording_id == REC and [i.name for i in c.list()] == ["a"]


def test_missing_file(tmp_path):
    path = str(tmp_path / "none.db")
    with pytest.raises(CatalogError, match="no snapshot catalog at"):
        Catalog.open(path, REC, create=False)
    with pytest.raises(CatalogError, match="no snapshot catalog at"):
        Catalog.open_existing(path)
    assert not os.path.exists(path)


def test_not_sqlite(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"not a database, just text\n" * 200)
    for create in (False, True):
        with pytest.raises(CatalogError, match="not a snapshot catalog \\(not an SQLite file\\)"):
            Catalog.open(str(path), REC, create=create)


def test_sqlite_of_something_else(tmp_path):
    path = str(tmp_path / "other.db")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE songs (title TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(CatalogError, match="not a snapshot catalog \\(no blobs, meta, snapshots table\\)"):
        Catalog.open_existing(path)
    before = open(path, "rb").read()
    with pytest.raises(CatalogError, match="not a snapshot catalog"):
        Catalog.open(path, REC, create=True)
    assert open(path, "rb").read() == before  # refused as it was: no WAL switch, no tables


def test_other_format_version(catalog, db):
    catalog.close()
    conn = sqlite3.connect(db)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'format'")
    conn.commit()
    conn.close()
    with pytest.raises(CatalogError, match="format 99; this urr reads format 2"):
        Catalog.open(db, REC, create=False)


# -- corruption ------------------------------------------------------------------------------


def tamper(db: str, sql: str, *params) -> None:
    conn = sqlite3.connect(db)
    conn.execute(sql, params)
    conn.commit()
    conn.close()


@pytest.mark.parametrize("how", ["flip a byte", "zero it", "wrong size", "empty"])
def test_corrupt_content_is_reported_not_returned(catalog, db, how):
    pages = {0: page(1), 1: page(2)}
    catalog.save(*snapshot("s", 1, pages))
    victim = content_hash(page(2))
    data = bytearray(sqlite3.connect(db).execute("SELECT data FROM blobs WHERE hash = ?", (victim,)).fetchone()[0])
    if how == "flip a byte":
        data[len(data) // 2] ^= 0x40
        tamper(db, "UPDATE blobs SET data = ? WHERE hash = ?", bytes(data), victim)
    elif how == "zero it":
        tamper(db, "UPDATE blobs SET data = ? WHERE hash = ?", bytes(len(data)), victim)
    elif how == "wrong size":
        tamper(db, "UPDATE blobs SET size = 4095 WHERE hash = ?", victim)
    else:
        tamper(db, "UPDATE blobs SET data = x'' WHERE hash = ?", victim)
    with Catalog.open(db, REC, create=False) as c:
        assert c.get_blob(content_hash(page(1))) == page(1)  # the rest still loads
        with pytest.raises(CatalogError, match=f"page {victim.hex()} in .* is corrupt"):
            c.get_blob(victim)
        with pytest.raises(CatalogError, match=f"page {victim.hex()}"):
            all_content(c, "s")


def test_missing_content_is_reported(catalog, db):
    catalog.save(*snapshot("s", 1, {0: page(1)}))
    tamper(db, "DELETE FROM blobs")
    with pytest.raises(CatalogError, match=f"page {content_hash(page(1)).hex()} is missing"):
        all_content(catalog, "s")


@pytest.mark.parametrize("column,value", [("ram_root", b"\x01\x02garbage"), ("disk_map", b"\x01\x02garbage"),
                                          ("cpu", "{not json")])
def test_corrupt_snapshot_row_is_reported(catalog, db, column, value):
    catalog.save(*snapshot("s", 1, {0: page(1)}))
    tamper(db, f"UPDATE snapshots SET {column} = ?", value)
    with pytest.raises(CatalogError, match="snapshot 's' in .* is corrupt"):
        catalog.load("s")


def test_corrupt_tree_node_is_reported_not_walked(catalog, db):
    catalog.save(*snapshot("s", 1, {0: page(1)}))
    tamper(db, "UPDATE nodes SET data = zeroblob(length(data))")
    catalog.close()
    with Catalog.open(db, REC, create=False) as c:
        with pytest.raises(CatalogError, match="page tree node .* is corrupt"):
            dict(c.load("s").pages)


def test_the_content_cache_is_bounded_and_optional(db):
    a, b = page(1), page(2)
    with Catalog.open(db, REC, create=True, cache_blobs=1) as c:
        c.save(*snapshot("s", 1, {0: a, 1: b}))
        assert c.get_blob(content_hash(a)) == a
        assert c.get_blob(content_hash(b)) == b  # evicts a
        tamper(db, "UPDATE blobs SET data = zeroblob(length(data))")
        assert c.get_blob(content_hash(b)) == b  # verified when read, served from memory since
        with pytest.raises(CatalogError, match="corrupt"):
            c.get_blob(content_hash(a))
    with Catalog.open(db, REC, create=False, cache_blobs=0) as c:
        with pytest.raises(CatalogError, match="corrupt"):
            c.get_blob(content_hash(b))


def test_unknown_snapshot(catalog):
    with pytest.raises(CatalogError, match="no snapshot named 'nope' in"):
        catalog.load("nope")


# -- a writer killed mid-save -----------------------------------------------------------------

KILLED_WRITER = """
import os, sys
from snapshots.catalog import Catalog, Snapshot, content_hash
c = Catalog.open(sys.argv[1], sys.argv[2], create=True)
batched = sys.argv[3] == "batched"  # as the catalog writer of a recording: unsynced batches
if batched:
    c.stream()
i = max((x.icount for x in c.list()), default=-1) + 1
while True:
    if batched and not c.in_batch:
        c.begin()
    contents = [os.urandom(2048) * 2 for _ in range(1500)]  # 6 MiB of new content per snapshot
    blobs = {content_hash(d): d for d in contents}
    c.save(Snapshot(f"s{i:05d}", "periodic", i, i, {"rip": i}, {}, {}, dict(enumerate(blobs)), {}, 1 << 24), blobs)
    if batched and i % 2:
        c.commit()
    if i % 3 == 2 and not c.in_batch:
        c.delete(min(x.name for x in c.list()))
        c.gc()
    print(i, flush=True)
    i += 1
"""


@pytest.mark.parametrize("mode", ["single", "batched"])
def test_killed_during_writes_leaves_a_consistent_catalog(db, mode):
    rng = random.Random(9)
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, db, REC, mode], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2):  # two saves: a batch committed, however loaded the machine
            assert proc.stdout.readline(), proc.stderr.read().decode()
        time.sleep(rng.uniform(0.0, 0.3))  # somewhere in a save, a delete or a gc
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with Catalog.open(db, REC, create=False, cache_blobs=0) as c:
        infos = c.list()
        assert len(infos) >= 2
        for info in infos:
            snap = c.load(info.name)
            assert len(snap.pages) == info.pages == 1500
            for h in snap.pages.values():
                assert len(c.get_blob(h)) == 4096  # present and verified against its hash


# -- the background writer ----------------------------------------------------------------------


def test_writer_applies_requests_in_order(db):
    writer = CatalogWriter(db, REC)
    for i in range(20):
        writer.submit_save(*snapshot(f"s{i:02d}", i, {0: page(i), 1: page(1000)}))
    writer.submit_delete([f"s{i:02d}" for i in range(0, 20, 2)])
    writer.submit_gc()
    writer.flush()
    with Catalog.open(db, REC, create=False) as c:
        assert [i.name for i in c.list()] == [f"s{i:02d}" for i in range(1, 20, 2)]
        assert blob_count(db) == 11
        assert all_content(c, "s19")[content_hash(page(19))] == page(19)
    writer.close()
    with pytest.raises(CatalogError, match="closed"):
        writer.submit_delete(["s01"])


def test_writer_reports_an_error_at_flush_then_goes_on(db):
    writer = CatalogWriter(db, REC)
    snap, blobs = snapshot("bad", 1, {0: page(1)})
    writer.submit_save(snap, {})  # refers to content it does not give
    writer.submit_save(*snapshot("skipped", 2, {0: page(2)}))  # may rely on the failed one
    with pytest.raises(CatalogError, match="writing snapshots to .* failed: .*'bad' refers to 1 pages"):
        writer.flush()
    writer.submit_save(*snapshot("good", 3, {0: page(3)}))
    writer.close()
    with Catalog.open(db, REC, create=False) as c:
        assert [i.name for i in c.list()] == ["good"]


def test_a_writer_that_died_is_reported_not_waited_for(db):
    writer = CatalogWriter(db, REC)
    os.kill(writer._process.pid, signal.SIGKILL)
    writer._process.join(timeout=30)
    with pytest.raises(CatalogError, match="stopped unexpectedly"):
        writer.submit_save(*snapshot("s", 1, {0: page(1)}))
        writer.flush()
    writer.close()  # nothing left to stop


def test_saves_waiting_together_share_a_transaction_and_a_bad_one_spoils_none(db, tmp_path, monkeypatch):
    """Saves queued behind a busy writer go in one transaction; when one of them is refused,
    those before it still land and those after it are skipped, as without grouping."""
    log = tmp_path / "calls.txt"  # the spies run in the writer's process
    for method, mark in (("save", "s"), ("commit", "c")):
        def spy(self, *args, real=getattr(Catalog, method), mark=mark):
            with open(log, "a") as f:
                f.write(mark)
            return real(self, *args)
        monkeypatch.setattr(Catalog, method, spy)
    writer = CatalogWriter(db, REC)
    blocker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # the writer's first transaction waits for this one
    release = threading.Timer(1.0, blocker.execute, ("ROLLBACK",))
    release.start()
    snaps = [snapshot(f"q{i:02d}", i, {0: page(i)}) for i in range(30)]
    bad, _ = snapshot("bad", 99, {0: page(99)})
    for item in snaps[:10]:
        writer.submit_save(*item)
    writer.submit_save(bad, {})  # refers to content it does not give
    for item in snaps[10:]:
        writer.submit_save(*item)
    release.join()
    blocker.close()
    with pytest.raises(CatalogError, match="'bad' refers to 1 pages"):
        writer.flush()
    writer.close()
    groups = [len(run) for run in log.read_text().split("c") if run]
    assert max(groups) > 1, groups  # the queued saves were committed together
    with Catalog.open(db, REC, create=False) as c:
        assert [i.name for i in c.list()] == [f"q{i:02d}" for i in range(10)]


def _capture(name: str, icount: int, changes: dict[int, bytes | None], tree: pagetree.PageTree,
             hashes: dict[int, bytes], full: bool = False) -> Capture:
    """A capture of page changes (None: the page became zero) to the RAM whose running tree and
    page hashes are `tree` and `hashes`, as the machine makes it; content as RAM-like views."""
    for n, d in changes.items():
        if d is None:
            hashes.pop(n, None)
        else:
            hashes[n] = content_hash(d)
        tree.set(n, hashes.get(n, pagetree.EMPTY))
    made = tree.refresh()
    return Capture(name=name, kind="periodic", icount=icount, vtime_ns=icount * 128,
                   registers=bytes(range(256)) * (cpustate.RAW_SIZE // 256) + bytes(cpustate.RAW_SIZE % 256),
                   devices={"board": {}, "timers": {}, "halted": False, "exit_status": None},
                   log_pos={"chunk": 0, "index": icount}, ram_size=16 << 20, full=full,
                   root=tree.root(), pages=len(hashes), nodes=tree.nodes() if full else made,
                   disk={}, blobs={content_hash(d): memoryview(bytearray(d)) for d in changes.values() if d})


def _apply(ram: dict[int, bytes], changes: dict[int, bytes | None]) -> None:
    """Page changes as a capture carries them (None: the page became zero) made to a RAM model."""
    for n, d in changes.items():
        if d is None:
            ram.pop(n, None)
        else:
            ram[n] = d


@pytest.mark.parametrize("feed_above, stride", [(None, 1), (3 * 4096, 1), (None, pagetree.FANOUT)])
def test_captures_are_made_whole_in_order_through_a_small_ring(db, monkeypatch, feed_above, stride):
    """Each stored snapshot is the whole RAM (its tree reaches every page) although a capture
    carries only the pages and tree nodes that changed. Content goes through shared memory: with a ring of a few
    pages it wraps many times and the emulator waits for room; a capture too big for the ring
    goes in pieces stored ahead of it, or (`feed_above`) is fed down a pipe by a forked copy of
    this process, as are the captures the ring has no room for. Tree nodes follow the content
    in the ring, or go in the request when they would take more than a quarter of it (`stride`:
    each page in a leaf of its own). The content was a view: changing it afterwards changes
    nothing stored."""
    monkeypatch.setattr(writer_module, "RING_BYTES", 5 * 4096)
    nodes_in_ring = []  # per capture put in the ring: whether its nodes went there too
    send = CatalogWriter._send
    monkeypatch.setattr(CatalogWriter, "_send", lambda self, request, push=True: (
        request[0] == "capture" and request[1][1] is not None and nodes_in_ring.append(request[1][2]))
        or send(self, request, push))
    fed = []
    if feed_above is not None:
        monkeypatch.setattr(writer_module, "FEED_ABOVE", feed_above)
        feed = CatalogWriter._feed
        monkeypatch.setattr(CatalogWriter, "_feed", lambda self, cap: fed.append(len(cap.all_blobs())) or feed(self, cap))
    writer = CatalogWriter(db, REC)
    ram = {n * stride: page(n) for n in range(8)}
    tree, hashes = pagetree.PageTree(4096), {}
    first = _capture("c000", 0, dict(ram), tree, hashes, full=True)  # 8 pages: more than half the ring
    writer.submit_capture(first)
    expected = {"c000": dict(ram)}
    rng = random.Random(7)
    for i in range(1, 60):
        changes: dict[int, bytes | None] = {}
        for n in rng.sample(range(12), 4 if i % 10 == 0 else 2):
            changes[n * stride] = None if rng.random() < 0.2 else page(1000 * i + n)
        cap = _capture(f"c{i:03d}", i, changes, tree, hashes)
        writer.submit_capture(cap)
        for view in cap.blobs.values():
            view[:8] = b"CHANGED!"  # the guest runs on: the writer must have copied already
        _apply(ram, changes)
        expected[cap.name] = dict(ram)
    writer.close()
    assert writer._feeders == []  # every feeder reaped
    # Pages a leaf apart: 4 changes make 4 leaves and a middle node, more than 5 KiB.
    assert any(nodes_in_ring) and all(nodes_in_ring) == (stride == 1), nodes_in_ring
    if feed_above is None:
        assert fed == []
    else:  # the first, and later ones of four pages (changes to zero pages carry no content)
        assert fed[0] == 8 and len(fed) >= 2 and set(fed[1:]) == {4}, fed
    with Catalog.open(db, REC, create=False) as c:
        assert [i.name for i in c.list()] == sorted(expected)
        for name, pages in expected.items():
            snap = c.load(name)
            assert snap.pages == {n: content_hash(d) for n, d in pages.items()}, name
            assert {n: c.get_blob(h) for n, h in snap.pages.items()} == pages, name
            assert snap.cpu == cpustate.decode(first.registers)


def test_writer_refuses_another_recordings_catalog(catalog, db):
    with pytest.raises(CatalogError, match="belongs to another recording"):
        CatalogWriter(db, "0ther")


# -- urr-snap ----------------------------------------------------------------------------------------


def urr_snap(*args: str, code: str = "from snapshots.cli import main; raise SystemExit(main())"):
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


@pytest.fixture
def rrfile(tmp_path) -> str:
    """A recording's catalog (no recording needed for all but verify)."""
    rr = str(tmp_path / "demo.rr")
    with Catalog.open(rr + ".db", REC, create=True) as c:
        common = {i: page(i) for i in range(20)}
        c.save(*snapshot("init", 0, common, kind="initial"))
        for n in range(1, 4):
            snap, blobs = snapshot(f"auto-{n * 10_000_000:015d}", n * 10_000_000, {**common, 99: page(100 + n)})
            c.save(snap, blobs)
        snap, blobs = snapshot("mine", 9_609_375, {**common, 30: page(77)}, kind="named")
        c.save(snap, blobs)
    return rr


def one_line_error(r: subprocess.CompletedProcess, text: str, code: int = 2) -> None:
    assert r.returncode == code, r
    assert text in r.stderr and r.stderr.startswith("urr-snap: ")
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_cli_list(rrfile):
    r = subprocess.run([sys.executable, "-m", "snapshots.cli", "list", rrfile], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["name", "icount", "virtual", "time", "kind", "pages", "bytes"]
    assert len({len(line) for line in lines}) == 1  # one width: aligned
    rows = [line.split() for line in lines[2:]]
    assert [row[0] for row in rows] == ["init", "mine", "auto-000000010000000", "auto-000000020000000",
                                        "auto-000000030000000"]
    assert rows[1][:6] == ["mine", "9609375", "1.230", "s", "named", "21"]  # 9609375 * 128 ns
    assert rows[0][-1] == "KiB" and rows[0][3:5] == ["s", "initial"]


def test_cli_info(rrfile):
    r = urr_snap("info", rrfile)
    assert r.returncode == 0, r.stderr
    assert f"recording     {REC}" in r.stdout
    assert "snapshots     5 (initial 1, named 1, periodic 3)" in r.stdout
    assert "dedup ratio   4.3x (104 references to 24 contents)" in r.stdout
    r = urr_snap("info", rrfile, "mine")
    assert r.returncode == 0, r.stderr
    assert "icount        9609375" in r.stdout and "kind          named" in r.stdout
    assert "RAM pages     21 non-zero of 4096" in r.stdout


def test_cli_delete_then_gc(rrfile):
    r = urr_snap("delete", rrfile, "mine")
    assert r.returncode == 0 and "deleted mine" in r.stdout
    assert "mine" not in urr_snap("list", rrfile).stdout
    assert "unreferenced  1 (" in urr_snap("info", rrfile).stdout
    r = urr_snap("gc", rrfile)
    assert r.returncode == 0 and r.stdout.startswith("removed 1 unreferenced pages, ")
    assert urr_snap("gc", rrfile).stdout.startswith("removed 0 unreferenced pages, 0 B")


def test_cli_db_option(rrfile, tmp_path):
    moved = str(tmp_path / "elsewhere.db")
    os.rename(rrfile + ".db", moved)
    r = urr_snap("--db", moved, "list", "whatever.rr")
    assert r.returncode == 0 and "mine" in r.stdout


def test_cli_errors_are_one_line(rrfile, tmp_path):
    one_line_error(urr_snap("list", str(tmp_path / "absent.rr")), "no snapshot catalog at")
    one_line_error(urr_snap("delete", rrfile, "nope"), "no snapshot named 'nope'")
    one_line_error(urr_snap("info", rrfile, "nope"), "no snapshot named 'nope'")
    junk = tmp_path / "junk.rr.db"
    junk.write_bytes(b"\x00junk" * 1000)
    one_line_error(urr_snap("info", str(tmp_path / "junk.rr")), "not a snapshot catalog")
    one_line_error(urr_snap("list", rrfile, "--db", str(tmp_path)), "is a directory")


def test_cli_verify_without_the_emulator(rrfile):
    no_verify = ("import sys; sys.modules['history.verify'] = None\n"
                 "from snapshots.cli import main; raise SystemExit(main())")
    one_line_error(urr_snap("verify", rrfile, code=no_verify), "verify needs the emulator")


def test_cli_verify_without_the_recording(rrfile):
    # The catalog is there, the recording is not: the replay cannot start.
    one_line_error(urr_snap("verify", rrfile), "demo.rr")


@pytest.mark.parametrize("ram_size", [16 << 20, 256 << 20, 4 << 30])
def test_bytes_a_snapshot_adds_follow_the_pages_changed_not_the_ram_size(db, ram_size):
    """k changed pages add at most k contents, k leaves, k middle nodes and a root (one entry
    per 16 MiB: 4 KiB at 4 GiB), whatever the RAM size and however much of it is in use."""
    rng = random.Random(ram_size)
    used = {p: page(p) for p in rng.sample(range(ram_size // 4096), 3000)}
    with Catalog.open(db, REC, create=True) as c:
        c.save(*snapshot("base", 1, used, ram_size=ram_size))
        for k in (1, 5, 20):
            changed = dict(used)
            for p in rng.sample(sorted(used), k):
                changed[p] = page(10**7 + p + k)
            c.save(*snapshot(f"k{k}", 2 + k, changed, ram_size=ram_size))
        added = {i.name: i.bytes for i in c.list()}
    state = 1024  # registers, devices and log position as JSON, and the sector map
    for k in (1, 5, 20):
        bound = k * (4096 + 16 + 2 * (pagetree.NODE_BYTES + 16)) + 4096 + state
        assert added[f"k{k}"] <= bound, (k, added)
    assert added["base"] > 3000 * 4096 / 4  # the base stored its content (compressible pages)


def _tracked_capture(tracker, ram, name: str, i: int, full: bool, tree: bool) -> Capture:
    """A capture of the tracker's RAM as snapshots.state makes one (RAM only)."""
    tracker.update()
    content, root, nodes = tracker.take_snapshot_changes(tree or full)
    if full:
        content = tracker.whole_content()
        root, nodes = tracker.whole_tree()
    return Capture(name=name, kind="periodic", icount=i, vtime_ns=i * 128,
                   registers=bytes(cpustate.RAW_SIZE),
                   devices={"board": {}, "timers": {}, "halted": False, "exit_status": None},
                   log_pos={"chunk": 0, "index": i}, root=root, pages=tracker.count, nodes=nodes,
                   disk={}, blobs={}, ram_size=ram.size, full=full, content=content,
                   changes=content.changes() if root is None else None)


def test_captures_given_as_changes_get_their_tree_from_the_writers_copy(db):
    """A recording's captures come as the pages changed and their hashes (the emulator makes no
    tree): the writer's copy of the page tree makes each root and its new nodes, so every
    snapshot loads as the RAM it was taken from, also after a restore (a `base`), whatever mix
    of captures with and without a tree came before."""
    from cpu.pagetrack import PageTracker
    from cpu.ram import Ram
    rng = random.Random(5)
    ram = Ram(16 << 20)
    tracker = PageTracker(ram)
    tracker.for_snapshots = True
    writer = CatalogWriter(db, REC)
    expected, roots = {}, {}
    try:
        for i in range(12):
            for _ in range(rng.randrange(1, 40)):
                n = rng.choice([rng.randrange(4096), rng.randrange(64)])
                ram.write(n * 4096, page(rng.randrange(10**6)) if rng.random() < 0.9 else bytes(4096))
            if i == 7:  # a restore of snapshot c3, then captures build on it
                writer.flush()
                with Catalog.open(db, REC, create=False) as c:
                    snap = c.load("c3")
                    tracker.load_tree(snap.pages.root, c.get_node, c.get_blob)
                writer.submit_base("c3")
                ram.write(5 * 4096, page(99))
            cap = _tracked_capture(tracker, ram, f"c{i}", i, full=i == 0, tree=i in (4, 5))
            writer.submit_capture(cap)
            expected[cap.name] = ram.read(0, ram.size)
            roots[cap.name] = tracker.root()
        writer.close()
        with Catalog.open(db, REC, create=False) as c:
            for name, image in expected.items():
                snap = c.load(name)
                assert snap.pages.root == roots[name], name
                got = bytearray(len(image))
                for n, h in snap.pages.items():
                    got[n * 4096:(n + 1) * 4096] = c.get_blob(h)
                assert bytes(got) == image, name
    finally:
        ram.close()


def test_a_capture_given_as_changes_with_no_tree_before_it_is_refused(db):
    """Changes need a tree to apply to: without a capture before (a broken sender), the writer
    stores nothing for it and says so at the next flush, in one line."""
    from cpu.pagetrack import PageTracker
    from cpu.ram import Ram
    ram = Ram(1 << 20)
    tracker = PageTracker(ram)
    tracker.for_snapshots = True
    writer = CatalogWriter(db, REC)
    try:
        ram.write(0, page(1))
        writer.submit_capture(_tracked_capture(tracker, ram, "lone", 0, full=False, tree=False))
        with pytest.raises(CatalogError, match="snapshot lone: .*none before it"):
            writer.flush()
        writer.close()
    finally:
        ram.close()
    with Catalog.open(db, REC, create=False) as c:
        assert [i.name for i in c.list()] == []


def test_a_fed_capture_stores_ram_as_it_was_when_taken(db, monkeypatch):
    """A big capture's pages are read by the forked copy that feeds them, not by the emulator
    (PageContent): the copy must see RAM and the page hashes as they were at the capture while
    the guest goes on writing the same pages and the tracker rehashes them."""
    from cpu.pagetrack import PageTracker
    from cpu.ram import Ram
    monkeypatch.setattr(writer_module, "FEED_ABOVE", 2 * 4096)
    fed = []
    feed = CatalogWriter._feed
    monkeypatch.setattr(CatalogWriter, "_feed", lambda self, cap: fed.append(cap.name) or feed(self, cap))
    ram = Ram(16 << 20)
    tracker = PageTracker(ram)
    tracker.for_snapshots = True
    writer = CatalogWriter(db, REC)
    expected = {}
    try:
        for i in range(6):
            for n in range(8):  # all of them, every time: big enough to be fed
                ram.write(n * 4096, page(100 * i + n))
            cap = _tracked_capture(tracker, ram, f"f{i}", i, full=i == 0, tree=True)
            writer.submit_capture(cap)
            expected[cap.name] = {n: page(100 * i + n) for n in range(8)}
            for n in range(8):  # the guest goes on at once
                ram.write(n * 4096, page(7777 + n))
            tracker.update()
        writer.close()
    finally:
        ram.close()
    assert fed == [f"f{i}" for i in range(6)]
    with Catalog.open(db, REC, create=False) as c:
        for name, pages in expected.items():
            snap = c.load(name)
            assert {n: c.get_blob(h) for n, h in snap.pages.items()} == pages, name


def test_fed_content_reads_back_as_written_and_a_cut_piece_is_dropped(tmp_path, monkeypatch):
    """A feeder's pieces (snapshots.channel) come out of the pipe as the rows the catalog
    stores, in order, each packed page unpacking to its page; a feeder that died mid-piece
    leaves the pieces before whole and the cut one out (the capture's store reports it)."""
    monkeypatch.setattr(channel, "FED_PIECE", 3 * 2048)  # pieces of a few pages
    pages = [page(n) for n in range(10)]
    fed = tmp_path / "fed"
    with open(fed, "wb") as pipe:
        channel.write_fed(pipe, ((content_hash(d), d) for d in pages))
    with open(fed, "rb") as f:
        pieces = list(channel.read_fed(os.dup(f.fileno())))
    assert len(pieces) > 2
    rows = [row for piece in pieces for row in piece]
    assert [(h, raw, unpack_content(raw, data)) for h, raw, data in rows] == \
        [(content_hash(d), len(d), d) for d in pages]
    os.truncate(fed, os.path.getsize(fed) - 1)
    with open(fed, "rb") as f:
        assert list(channel.read_fed(os.dup(f.fileno()))) == pieces[:-1]


def test_the_writer_holds_none_of_the_emulators_pipes_or_sockets(db):
    """What urr closes is closed, though the writer's process lives on: a pipe's write end
    open when the writer started (as a GDB socket or a serial pipe would be) reaches its
    reader as an end of file once urr closes it."""
    r, w = os.pipe()
    writer = CatalogWriter(db, REC)
    try:
        os.close(w)
        readable, _, _ = select.select([r], [], [], 5)
        assert readable and os.read(r, 1) == b""
        assert writer._process.is_alive()
    finally:
        os.close(r)
        writer.close()


def test_a_feeder_that_finds_content_unlike_its_hash_leaves_the_capture_unstored(db, monkeypatch):
    """The forked copy checks each page against the hash the tracker gave it before packing it
    (the writer no longer sees the raw page): on a mismatch it stops, and the capture is
    reported as missing content rather than stored with the wrong bytes."""
    monkeypatch.setattr(writer_module, "FEED_ABOVE", 2 * 4096)
    from snapshots import snapshot as snapshot_module
    monkeypatch.setattr(snapshot_module, "content_hash", lambda data: bytes(16))
    writer = CatalogWriter(db, REC)
    tree, hashes = pagetree.PageTree(4096), {}
    writer.submit_capture(_capture("bad", 0, {n: page(n) for n in range(4)}, tree, hashes, full=True))
    with pytest.raises(CatalogError, match="refers to .* pages or tree nodes neither in"):
        writer.close()
    with Catalog.open(db, REC, create=False) as c:
        assert [i.name for i in c.list()] == []


@pytest.mark.parametrize("seed, gc", [(1, False), (2, False), (3, True)])
def test_held_captures_store_whole_and_deleted_ones_never_reach_the_file(db, monkeypatch, seed, gc):
    """Provisional captures are held back (snapshots.held): one deleted while held never
    reaches the file (without a gc, content no capture stored is missing from it), and every
    other one, stored late (a bound, a flush, a gc) or never held, loads whole and exact
    although captures carry only what changed since the previous one."""
    from snapshots import held as held_module
    monkeypatch.setattr(held_module, "DEFER_MAX", 6)
    writer = CatalogWriter(db, REC)
    rng = random.Random(seed)
    tree, hashes, ram = pagetree.PageTree(4096), {}, {n: page(n) for n in range(4)}
    first = _capture("h000", 0, dict(ram), tree, hashes, full=True)
    writer.submit_capture(first)
    expected, carried = {"h000": dict(ram)}, set()
    for i in range(1, 80):
        changes = {n: None if rng.random() < 0.1 else page(1000 * i + n)
                   for n in rng.sample(range(200), rng.randint(1, 5))}
        cap = _capture(f"h{i:03d}", i, changes, tree, hashes)
        cap.provisional = rng.random() < 0.8
        carried.update(cap.blobs)
        writer.submit_capture(cap)
        _apply(ram, changes)
        expected[cap.name] = dict(ram)
        if i > 3 and rng.random() < 0.5:  # thinning: one of the recent ones goes
            doomed = rng.choice([n for n in expected if n != "h000"][-6:])
            writer.submit_delete([doomed])
            del expected[doomed]
        if rng.random() < 0.05:
            writer.flush()
        if gc and rng.random() < 0.05:
            writer.submit_gc()
    writer.close()
    with Catalog.open(db, REC, create=False) as c:
        assert [i.name for i in c.list()] == sorted(expected)
        for name, pages in expected.items():
            snap = c.load(name)
            assert {n: c.get_blob(h) for n, h in snap.pages.items()} == pages, name
        stored = {h for (h,) in c._rows("SELECT hash FROM blobs")}
    given = carried | {content_hash(d) for d in first.blobs.values()}
    assert stored < given if not gc else stored <= given


def test_a_gc_runs_only_when_a_stored_snapshot_was_deleted(db, monkeypatch, tmp_path):
    """Deleting held captures leaves nothing to collect (they never reached the file), so the
    writer does not read the whole catalog for a gc then; deleting a stored one does."""
    log = tmp_path / "gcs"
    gc = Catalog.gc
    monkeypatch.setattr(Catalog, "gc", lambda self, *a, **k: (log.open("a").write("gc\n"), gc(self, *a, **k))[1])
    writer = CatalogWriter(db, REC)
    tree, hashes = pagetree.PageTree(4096), {}
    writer.submit_capture(_capture("g000", 0, {0: page(0)}, tree, hashes, full=True))
    for i in range(1, 6):
        cap = _capture(f"g{i:03d}", i, {i: page(i)}, tree, hashes)
        cap.provisional = i != 3
        writer.submit_capture(cap)
    writer.submit_delete(["g001", "g002"])  # held
    writer.submit_gc()
    writer.flush()
    assert not log.exists()
    writer.submit_delete(["g003"])  # stored
    writer.submit_gc()
    writer.close()
    assert log.read_text() == "gc\n"
    with Catalog.open(db, REC, create=False) as c:
        assert [i.name for i in c.list()] == ["g000", "g004", "g005"]
        assert c.stats().garbage == []
