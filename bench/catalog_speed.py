"""The snapshot catalog's own speed (`python bench/run.py --only catalog`), without a guest:
snapshots of ~100 pages, ~10 of them new each time, saved one by one, then loaded with all their
content, as a restore reads them. (A timed assertion in tests/test_catalog.py before: a test must
not fail because the machine is busy.)

Figures (targets in docs/replay.md):
  catalog_save_ms_median   saving one snapshot (its new content included)
  catalog_load_ms_median   loading one snapshot and every page it refers to
"""
from __future__ import annotations

import os
import random
import statistics
import time

from snapshots.catalog import Catalog, Snapshot, content_hash

PAGES = 100
NEW_PER_SNAPSHOT = 10
SNAPSHOTS = 60
LOADS = 30
RECORDING = "bench"


def _page(seed: int) -> bytes:
    """Deterministic content, half of it compressible (as guest pages often are)."""
    rng = random.Random(seed)
    return rng.randbytes(2048) + bytes([seed % 251]) * 2048


def _snapshot(n: int, pages: dict[int, bytes]) -> tuple[Snapshot, dict[bytes, bytes]]:
    blobs = {content_hash(d): d for d in pages.values()}
    snap = Snapshot(name=f"auto-{n:015d}", kind="periodic", icount=n * 1000, vtime_ns=n * 128_000,
                    cpu={"rip": 0x100000 + n, "rflags": 0x202}, devices={"timers": {}},
                    log_pos={"chunk": 252 + n, "index": 0},
                    pages={i: content_hash(d) for i, d in pages.items()}, disk={}, ram_size=16 << 20)
    return snap, blobs


def _one_run(path: str, seed: int) -> tuple[float, float]:
    """(median save, median load) in seconds over one fresh catalog."""
    rng = random.Random(seed)
    pages = {i: _page(i) for i in range(PAGES)}
    saves, loads = [], []
    with Catalog.open(path, RECORDING, create=True, cache_blobs=0) as c:
        for n in range(SNAPSHOTS):
            for k in rng.sample(range(PAGES), NEW_PER_SNAPSHOT):
                pages[k] = _page(1000 * n + k)
            snap, blobs = _snapshot(n, pages)
            fresh = {h: d for h, d in blobs.items() if h not in c.has_blobs(blobs)}
            t0 = time.perf_counter()
            c.save(snap, fresh)
            saves.append(time.perf_counter() - t0)
        for info in rng.sample(c.list(), LOADS):
            t0 = time.perf_counter()
            snap = c.load(info.name)
            for h in snap.pages.values():
                c.get_blob(h)
            loads.append(time.perf_counter() - t0)
    return statistics.median(saves), statistics.median(loads)


def bench(runs: int, tmp: str) -> dict[str, float]:
    saves, loads = [], []
    for run in range(runs):
        path = os.path.join(tmp, f"catalog-speed-{run}.db")
        save, load = _one_run(path, run)
        saves.append(save)
        loads.append(load)
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
    return {"catalog_save_ms_median": round(statistics.median(saves) * 1000, 3),
            "catalog_load_ms_median": round(statistics.median(loads) * 1000, 3)}
