"""urr-snap: the catalog tool, run as users run it."""
from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_urr


def snap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snapshots.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


@pytest.fixture(scope="module")
def recording(guests, tmp_path_factory):
    rr = str(tmp_path_factory.mktemp("snap") / "ticks.rr")
    rec = run_urr("-kernel", guests["ticks"], "-icount", f"shift=7,rr=record,rrfile={rr},rrsnapshot=init",
                  "-snapshots", "10ms:1s,100ms")
    assert rec.status == 33, rec.err
    return rr


def test_list_is_an_aligned_table(recording):
    r = snap("list", recording)
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["name", "icount", "virtual", "time", "kind", "pages", "bytes"]
    rows = [l.split() for l in lines[2:]]
    assert rows[0][0] == "init" and rows[0][1] == "0" and "initial" in rows[0]
    assert len({len(l) for l in lines[2:]}) == 1  # aligned columns
    icounts = [int(r[1]) for r in rows]
    assert icounts == sorted(icounts) and len(rows) > 5


def test_info_summary_and_one_snapshot(recording):
    r = snap("info", recording)
    assert r.returncode == 0 and "dedup ratio" in r.stdout and "initial 1" in r.stdout
    r = snap("info", recording, "init")
    assert r.returncode == 0 and "icount        0" in r.stdout


def test_verify_passes_then_catches_a_tampered_snapshot(recording, tmp_path):
    r = snap("verify", recording)
    assert r.returncode == 0, r.stderr
    assert "all snapshots match" in r.stdout
    db = sqlite3.connect(recording + ".db")
    name, devices = db.execute("SELECT name, devices FROM snapshots WHERE kind='periodic' "
                               "ORDER BY icount LIMIT 1 OFFSET 2").fetchone()
    db.execute("UPDATE snapshots SET devices = ? WHERE name = ?",
               (devices.replace('"ier": 0', '"ier": 5', 1) if '"ier": 0' in devices
                else devices.replace('"imr": ', '"imr": 1', 1), name))
    db.commit()
    db.close()
    r = snap("verify", recording)
    assert r.returncode == 1
    assert f"snapshot {name}" in r.stderr and "does not match its replay" in r.stderr


def test_delete_and_gc(recording):
    before = snap("list", recording).stdout
    victim = before.splitlines()[-1].split()[0]
    assert snap("delete", recording, victim).returncode == 0
    assert victim not in snap("list", recording).stdout
    r = snap("gc", recording)
    assert r.returncode == 0 and "unreferenced pages" in r.stdout


@pytest.mark.parametrize("args,message", [
    (["list", "/nonexistent.rr"], "no snapshot catalog"),
    (["delete", "{rr}", "no-such-snapshot"], "no snapshot named"),
])
def test_errors_are_one_line(recording, args, message):
    r = snap(*[a.format(rr=recording) for a in args])
    assert r.returncode == 2 and message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_not_a_catalog(tmp_path):
    bogus = tmp_path / "x.rr.db"
    bogus.write_bytes(b"this is not sqlite" * 100)
    r = snap("list", str(tmp_path / "x.rr"))
    assert r.returncode == 2 and "not a snapshot catalog" in r.stderr


def test_list_into_a_reader_that_stops_early_ends_quietly(tmp_path):
    """`urr-snap list X | head` closes the pipe while the list is still coming: no error, as
    with other tools' output."""
    from snapshots.catalog import Catalog
    from tests.test_catalog import REC, page, snapshot

    rr = str(tmp_path / "many.rr")
    with Catalog.open(rr + ".db", REC, create=True) as c:
        for i in range(1500):  # a listing well over a pipe's 64 KiB
            c.save(*snapshot(f"periodic-snapshot-with-a-long-name-{i:05d}", i, {0: page(i % 3)}))
    proc = subprocess.Popen([sys.executable, "-m", "snapshots.cli", "list", rr], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().split()[0] == b"name"
    proc.stdout.close()
    assert proc.wait(timeout=60) == 141
    assert proc.stderr.read() == b""


def _format1_catalog(path: str, pages: dict[int, bytes]) -> None:
    """A catalog as format 1 wrote it: a whole page map per snapshot."""
    import json
    import struct

    import lz4.block

    from cpu.ram import page_digest

    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE snapshots (name TEXT PRIMARY KEY, kind TEXT NOT NULL, icount INTEGER NOT NULL,
            vtime_ns INTEGER NOT NULL, ram_size INTEGER NOT NULL, cpu TEXT NOT NULL,
            devices TEXT NOT NULL, log_pos TEXT NOT NULL, page_map BLOB NOT NULL,
            disk_map BLOB NOT NULL, pages INTEGER NOT NULL, bytes INTEGER NOT NULL);
        CREATE INDEX idx_snapshots_icount ON snapshots (icount);
        CREATE TABLE blobs (hash BLOB PRIMARY KEY, size INTEGER NOT NULL, data BLOB NOT NULL);
        INSERT INTO meta VALUES ('format', '1'), ('recording_id', 'r1');""")
    for i in range(3):
        snap_pages = {**pages, 5: bytes([100 + i]) * 4096} if i else pages
        hashes = {p: page_digest(d) for p, d in snap_pages.items()}
        conn.executemany("INSERT OR IGNORE INTO blobs VALUES (?, ?, ?)",
                         [(h, 4096, lz4.block.compress(snap_pages[p], store_size=False)) for p, h in hashes.items()])
        page_map = lz4.block.compress(b"".join(struct.pack("<I16s", p, hashes[p]) for p in sorted(hashes)))
        conn.execute("INSERT INTO snapshots VALUES (?, 'periodic', ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                     (f"s{i}", i, i * 128, 16 << 20, json.dumps({"rip": i}), json.dumps({"board": {}}),
                      json.dumps({"chunk": 0, "index": i}), page_map, lz4.block.compress(b""), len(hashes)))
    conn.commit()
    conn.close()


def test_old_format_is_refused_in_one_line_then_upgraded_in_place(tmp_path):
    from snapshots.catalog import Catalog

    rr = str(tmp_path / "old.rr")
    pages = {p: bytes([p % 251 + 1]) * 4096 for p in (0, 5, 64, 4000, 4095)}
    _format1_catalog(rr + ".db", pages)
    r = snap("info", rr)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and "format 1" in r.stderr and "urr-snap upgrade" in r.stderr
    r = snap("upgrade", rr)
    assert r.returncode == 0 and "3 snapshots" in r.stdout, r.stderr
    r = snap("info", rr)
    assert r.returncode == 0 and "page trees" in r.stdout, r.stderr
    with Catalog.open(rr + ".db", "r1", create=False) as c:
        for i in range(3):
            got = {p: c.get_blob(h)[:1] for p, h in c.load(f"s{i}").pages.items()}
            assert got == {p: (bytes([100 + i]) if i and p == 5 else d[:1]) for p, d in pages.items()}
    assert snap("upgrade", rr).stdout.endswith("already in the current format\n")
