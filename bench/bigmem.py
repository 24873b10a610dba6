"""Snapshots against RAM size (`python bench/run.py --only bigmem`): the bigmem guest, which
touches 256 MiB of -m 512M once and then reads all over it, writing a few pages per tick, and
the same guest touching 16 MiB (-m 64M) and 960 MiB (-m 1G, a shorter run) for the growth with
RAM touched; also cpuloop recorded beside a process spinning on the other core.

Figures (targets in docs/replay.md):
  snapshot_overhead_record_bigmem          record, default policy (100 ms) / -snapshots off
  snapshot_overhead_record_bigmem_dense    record, -snapshots 10ms:1s,100ms / off
  snapshot_overhead_replay_bigmem          replay keeping every 10 ms snapshot / off
  snapshot_overhead_replay_bigmem_default_policy  a plain replay (default policy, 10ms:1s,100ms:
                                           the dense tier kept in its last second) / off
  catalog_bytes_per_snapshot_bigmem        median catalog growth per periodic snapshot (dense)
  restore_ms_median_bigmem                 restoring the snapshot a seek to a random place starts
                                           from, at that place
  reverse_stepi_ms_median_bigmem           reverse-stepi at random positions of its replay
                                           (Timeline API)
  gdb_reverse_stepi_ms_median_bigmem       the same as a GDB user steps: real GDB against
                                           `urr -gdb` replaying it, the first reverse-stepi
                                           after a `monitor replay_seek` to a random place
                                           (bench.gdb_speed.REVERSE_STEPS; _p99: the largest)
  snapshot_overhead_record_busy_neighbour  cpuloop, default policy / off, another process
                                           spinning throughout (a median of at least 11 pairs)
  snapshot_overhead_bigmem_pairs           the first and third quartiles of the ratios of the
  snapshot_overhead_record_busy_neighbour_pairs  single interleaved pairs behind the four
                                           overheads above (record_default, record_dense,
                                           replay_dense, replay_default) and the busy
                                           neighbour's: how far one pair strays on this machine
  bigmem_growth                            per size touched (16M, 256M, 1G): the record and
                                           replay overheads (wall, and _cpu: the emulator's own
                                           CPU time; _pairs as above), bytes per snapshot,
                                           restore ms

The overheads and the busy neighbour's runs each run in a process of their own, as users run
urr (bench.run.run_urr_fresh); restores and reverse steps in this one.
"""
from __future__ import annotations

import gc
import io
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

from bench.gdb_speed import REVERSE_STEPS, run_gdb_script
from bench.run import DENSE, HEADLINE_RUNS, guest, interleaved, medians_of, pair_quartiles, run_urr_fresh
from urr.options import parse_args
from urr.session import Session

DENSE_RECORD = "10ms:1s,100ms"
SIZES = (("256M", "bigmem", "512M"), ("16M", "bigmem16", "64M"), ("1G", "bigmem1g", "1G"))


def _overheads(runs: int, path: str, ram: str, rr: str) -> dict[str, Any]:
    rec = ["-m", ram, "-icount", f"shift=7,rr=record,rrfile={rr},rrsnapshot=init"]
    rep = ["-m", ram, "-icount", f"shift=7,rr=replay,rrfile={rr},rrsnapshot=init"]
    cpu: dict[str, list[float]] = {}

    def timed(name: str, *options: str) -> Callable[[], float]:
        """A run's wall time, in a process of its own as users run urr (bench.run.run_urr_fresh
        says why); its CPU time (the emulator's, the writer's excluded) goes to `cpu[name]`,
        which says more than the wall time on a busy machine."""
        def run() -> float:
            wall, used = run_urr_fresh(path, *options)
            cpu.setdefault(name, []).append(used)
            return wall
        return run
    record_runs = interleaved(runs, off=timed("record_off", *rec, "-snapshots", "off"),
                              default=timed("record_default", *rec),
                              dense=timed("record_dense", *rec, "-snapshots", DENSE_RECORD))

    def over_fresh_catalog(replay: Callable[[], float]) -> Callable[[], float]:
        def run() -> float:
            run_urr_fresh(path, *rec, "-snapshots", "off")  # a catalog holding only the initial snapshot
            return replay()
        return run
    # The dense replay last: the bytes per snapshot are read from its catalog.
    replay_runs = interleaved(runs, off=timed("replay_off", *rep, "-snapshots", "off"),
                              default=over_fresh_catalog(timed("replay_default", *rep)),
                              dense=over_fresh_catalog(timed("replay_dense", *rep, "-snapshots", DENSE)))
    record, replay, cpu_median = medians_of(record_runs), medians_of(replay_runs), medians_of(cpu)
    db = sqlite3.connect(f"{rr}.db")  # the dense replay's catalog: every 10 ms snapshot kept
    added = [r[0] for r in db.execute("SELECT bytes FROM snapshots WHERE kind = 'periodic'")]
    db.close()
    return {"record_default": record["default"] / record["off"],
            "record_dense": record["dense"] / record["off"],
            "replay_dense": replay["dense"] / replay["off"],
            "replay_default": replay["default"] / replay["off"],
            "record_default_cpu": cpu_median["record_default"] / cpu_median["record_off"],
            "record_dense_cpu": cpu_median["record_dense"] / cpu_median["record_off"],
            "replay_dense_cpu": cpu_median["replay_dense"] / cpu_median["replay_off"],
            "replay_default_cpu": cpu_median["replay_default"] / cpu_median["replay_off"],
            "record_default_pairs": pair_quartiles(record_runs["off"], record_runs["default"]),
            "record_dense_pairs": pair_quartiles(record_runs["off"], record_runs["dense"]),
            "replay_dense_pairs": pair_quartiles(replay_runs["off"], replay_runs["dense"]),
            "replay_default_pairs": pair_quartiles(replay_runs["off"], replay_runs["default"]),
            "bytes_per_snapshot": statistics.median(added) if added else 0,
            "snapshots": len(added)}


def _replay_session(path: str, ram: str, rr: str) -> Session:
    gc.collect()  # the runs before it freed (bench.run.run_urr_timed says why)
    opts = parse_args(["-kernel", path, "-m", ram, "-serial", "none", "-icount",
                       f"shift=7,rr=replay,rrfile={rr},rrsnapshot=init", "-snapshots", DENSE,
                       "-debugger"])  # restores as a debugger's (SnapshotManager.expect_restores)
    return Session(opts, out=io.BytesIO(), stdin_fd=None)


def _restore_ms(path: str, ram: str, rr: str, samples: int = 25) -> float:
    """Restoring the snapshot a seek to a random position starts from (the latest at or before
    it), from that position: what seeks and reverse steps pay. The cost follows the pages that
    differ, so restoring a snapshot seconds away from the machine's state costs more."""
    session = _replay_session(path, ram, rr)
    snaps = session.snapshots
    end = max(i.icount for i in snaps.infos.values())
    rng = random.Random(7)
    times = []
    for _ in range(samples):
        target = rng.randrange(end // 10, end)
        nearest = snaps.nearest(target)
        if session.machine.icount > target or session.machine.icount < nearest.icount:
            snaps.restore(nearest.name)
        session.run(target)
        t0 = time.perf_counter()
        snaps.restore(snaps.nearest(target).name)
        times.append((time.perf_counter() - t0) * 1000)
    session.close(None, "bench")
    return statistics.median(times)


def _reverse_stepi_ms(path: str, ram: str, rr: str, samples: int = 20) -> float:
    from debugger.timeline import Timeline
    session = _replay_session(path, ram, rr)
    tl = Timeline(session.machine, session.snapshots, True)
    total = tl.cont().icount
    rng = random.Random(11)
    times = []
    for _ in range(samples):
        tl.seek(rng.randrange(total // 10, total))
        t0 = time.perf_counter()
        tl.reverse_stepi()
        times.append((time.perf_counter() - t0) * 1000)
    session.close(None, "bench")
    return statistics.median(times)


def _gdb_reverse_stepi_ms(path: str, ram: str, rr: str, samples: int = 20) -> tuple[float, float]:
    """Reverse-stepi through real GDB at random places of the replay: (median, largest) ms."""
    r = run_gdb_script(rr, path, REVERSE_STEPS.replace("SAMPLES", str(samples)),
                       urr_options=("-m", ram))
    steps = sorted(r["reverse_stepi_s"])
    return statistics.median(steps) * 1000, steps[-1] * 1000


def _busy_neighbour(runs: int, tmp: str) -> tuple[float, list[float]]:
    """The ratio of medians of at least HEADLINE_RUNS interleaved pairs, and the quartiles of
    the pairs' ratios: single pairs gave 0.96 and 1.31 in two runs of the same code, medians of 3
    1.04-1.14 (a run is ~1.2 s)."""
    runs = max(runs, HEADLINE_RUNS)
    path = guest("cpuloop")
    rr = os.path.join(tmp, "neighbour.rr")
    rec = ["-icount", f"shift=7,rr=record,rrfile={rr},rrsnapshot=init"]
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        t = interleaved(runs, off=lambda: run_urr_fresh(path, *rec, "-snapshots", "off")[0],
                        default=lambda: run_urr_fresh(path, *rec)[0])
    finally:
        spinner.kill()
        spinner.wait()
    m = medians_of(t)
    return m["default"] / m["off"], pair_quartiles(t["off"], t["default"])


def bench(runs: int, tmp: str) -> dict:
    """The figures; each part is also printed to stderr as it is done (the part takes long)."""
    result: dict = {}
    growth: dict = {}
    neighbour, spread = _busy_neighbour(runs, tmp)
    result["snapshot_overhead_record_busy_neighbour"] = round(neighbour, 3)
    result["snapshot_overhead_record_busy_neighbour_pairs"] = spread
    print(json.dumps(result), file=sys.stderr, flush=True)
    for touched, name, ram in SIZES:
        path = guest(name)
        rr = os.path.join(tmp, f"{name}.rr")
        o = _overheads(max(runs, HEADLINE_RUNS) if name == "bigmem" else runs, path, ram, rr)
        o["restore_ms"] = _restore_ms(path, ram, rr)
        growth[touched] = {k: v if isinstance(v, list) else round(v, 3) for k, v in o.items()}
        if name == "bigmem":
            result.update({
                "snapshot_overhead_record_bigmem": round(o["record_default"], 3),
                "snapshot_overhead_record_bigmem_dense": round(o["record_dense"], 3),
                "snapshot_overhead_replay_bigmem": round(o["replay_dense"], 3),
                "snapshot_overhead_replay_bigmem_default_policy": round(o["replay_default"], 3),
                "snapshot_overhead_bigmem_pairs": {k: o[f"{k}_pairs"] for k in
                                                   ("record_default", "record_dense", "replay_dense",
                                                    "replay_default")},
                "catalog_bytes_per_snapshot_bigmem": int(o["bytes_per_snapshot"]),
                "restore_ms_median_bigmem": round(o["restore_ms"], 3),
                "reverse_stepi_ms_median_bigmem": round(_reverse_stepi_ms(path, ram, rr), 2)})
            gdb_median, gdb_largest = _gdb_reverse_stepi_ms(path, ram, rr)
            result["gdb_reverse_stepi_ms_median_bigmem"] = round(gdb_median, 2)
            result["gdb_reverse_stepi_ms_p99_bigmem"] = round(gdb_largest, 2)
        print(json.dumps({touched: growth[touched], **result}), file=sys.stderr, flush=True)
    result["bigmem_growth"] = growth
    return result
