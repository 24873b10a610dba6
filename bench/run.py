"""urr's benchmark: every figure is a ratio or a median measured in this one run, on this machine.

    python bench/run.py          # a readable table
    python bench/run.py --json   # one JSON object with the same figures

Figures (targets in docs/replay.md):
  raw_mips, urr_mips, urr_vs_raw      bare Unicorn slices vs urr, same CPU-bound guest (spin)
  record_vs_plain, replay_vs_record   PIT-driven CPU-bound guest (cpuloop), 1 kHz, shift=7
  log_bytes_per_kinstr                event log size of that recording
  snapshot_overhead_record            record with the default snapshot policy (100 ms) vs without
  snapshot_overhead_record_coarse     record with the coarsest tier only (-snapshots 100ms) vs without
  snapshot_overhead_record_dense      record with -snapshots 10ms:1s,100ms vs without
  snapshot_overhead_replay            replay with dense snapshots vs without
  restore_ms_median                   restoring a snapshot
  catalog_bytes_per_snapshot          median catalog growth per periodic snapshot
  reverse_stepi_ms_median/_max        reverse-stepi at random positions of a >=100M-instruction replay
  reverse_continue_vs_forward         reverse-continue across N instructions / replaying them forward
  gdb_stepi/next_ms_median, gdb_ignore_crossing_ms, gdb_conditional_break_vs_forward
                                      through real GDB (bench/gdb_speed.py), --only gdb
  gdb_reverse_*, forward_seek_ms, reverse_continue_watch_vs_forward, last_write_ms
                                      reverse debugging through real GDB on a 535M-instruction
                                      replay (bench/reverse_speed.py), --only revgdb
  verify_speedup_jobs2, ...           the segment runner (bench/segments.py), --only segments
  catalog_save/load_ms_median         the snapshot catalog alone (bench/catalog_speed.py), --only catalog
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import io
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from unicorn import UC_ARCH_X86, UC_HOOK_INSN, UC_MODE_64, UC_PROT_ALL, Uc  # noqa: E402
from unicorn import x86_const as X  # noqa: E402

from cpu.icount import SliceCounter  # noqa: E402
from cpu.loader import load_kernel  # noqa: E402
from cpu.machine import MAX_SLICE  # noqa: E402
from urr.options import parse_args  # noqa: E402
from urr.session import Session  # noqa: E402

GUESTS = os.path.join(ROOT, "guests", "build")
DENSE = "10ms:1000s,100ms"  # keep every 10 ms snapshot
# The fewest runs per timing behind a snapshot overhead with a target. On this shared machine
# the same code's medians of 7 spread 1.00-1.21 (bigmem, default policy) and 1.16-1.38 (its
# dense recording) between bench runs, one pair of runs straying 0.1-0.2: more runs, a median
# nearer the machine's own.
HEADLINE_RUNS = 11


def build_guests() -> None:
    subprocess.run(["make", "-s", "-C", os.path.join(ROOT, "guests")], check=True)


def guest(name: str) -> str:
    return os.path.join(GUESTS, f"{name}.elf")


def raw_unicorn(path: str) -> tuple[int, float]:
    """The bare loop urr is compared with: load the ELF, run count-limited slices as long as urr's
    longest, stop at 0xF4."""
    kernel = load_kernel(path, 16 << 20)
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    buf = (ctypes.c_char * (16 << 20))()
    uc.mem_map_ptr(0, 16 << 20, UC_PROT_ALL, ctypes.addressof(buf))
    for seg in kernel.segments:
        uc.mem_write(seg.paddr, seg.data)
    uc.reg_write(X.UC_X86_REG_RSP, 16 << 20)
    uc.reg_write(X.UC_X86_REG_RDI, 16 << 20)
    done = [False]

    def out(uc, port, size, value, ud):
        if port == 0xF4:
            done[0] = True
            uc.emu_stop()
    uc.hook_add(UC_HOOK_INSN, out, None, 1, 0, X.UC_X86_INS_OUT)
    uc.hook_add(UC_HOOK_INSN, lambda uc, port, size, ud: 0, None, 1, 0, X.UC_X86_INS_IN)
    counter = SliceCounter(uc)
    rip, total = kernel.entry, 0
    t0 = time.perf_counter()
    while not done[0]:
        uc.emu_start(rip, (1 << 64) - 1, 0, MAX_SLICE)
        total += counter.executed()
        rip = uc.reg_read(X.UC_X86_REG_RIP)
    return total, time.perf_counter() - t0


def run_urr(path: str, *options: str, until: int | None = None) -> tuple[Session, float]:
    """One run; the time counts the run and its close (the log's last chunk, the catalog writer
    storing what it has not yet), not the set-up both sides share."""
    session, wall, _ = run_urr_timed(path, *options, until=until)
    return session, wall


def run_urr_timed(path: str, *options: str, until: int | None = None) -> tuple[Session, float, float]:
    """One run timed as `run_urr` times it: the session, the wall time and this process's CPU
    time (the emulator's; the writer's and feeders' excluded). The runs before it are
    collected first: a session is freed only by Python's cyclic collector, which runs rarely
    once the heap is big, so a bench's earlier machines lingered (24 GB of them when the
    1 GiB guest came, which the kernel killed the bench for) and each fork of a later run
    (the catalog writer's, a feeder's) copied their page tables too."""
    gc.collect()
    opts = parse_args(["-kernel", path, "-serial", "none", "-display", "none", *options])
    session = Session(opts, out=io.BytesIO(), stdin_fd=None)
    t0, c0 = time.perf_counter(), time.process_time()
    stop = session.run(until)
    session.close(stop.status, stop.reason)
    return session, time.perf_counter() - t0, time.process_time() - c0


def run_urr_fresh(path: str, *options: str) -> tuple[float, float]:
    """One run in a process of its own, as users run urr, timed as `run_urr_timed` times it:
    (wall, CPU). Run after others in one process, a run of bigmem without snapshots took 17%
    less time than in a fresh process (a warm allocator) while the runs with snapshots did not
    gain as much, so the ratios of in-process runs overstated the cost users see."""
    out = subprocess.run([sys.executable, "-m", "bench.fresh", path, *options], cwd=ROOT,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"bench.fresh {path} {' '.join(options)} failed: {out.stderr.strip()[-500:]}")
    wall, cpu = json.loads(out.stdout.splitlines()[-1])
    return wall, cpu


def interleaved(runs: int, **timings: Callable[[], float]) -> dict[str, list[float]]:
    """Each timing's times, their runs interleaved (a, b, a, b, ...) so that drift in a shared
    machine's speed falls on all of them alike, not on whichever ran last."""
    times: dict[str, list[float]] = {name: [] for name in timings}
    for _ in range(runs):
        for name, fn in timings.items():
            times[name].append(fn())
    return times


def medians_of(times: dict[str, list[float]]) -> dict[str, float]:
    """The median of each timing's times."""
    return {name: statistics.median(t) for name, t in times.items()}


def medians(runs: int, **timings: Callable[[], float]) -> dict[str, float]:
    """The median time of each timing, their runs interleaved (`interleaved`)."""
    return medians_of(interleaved(runs, **timings))


def pair_quartiles(base: list[float], other: list[float]) -> list[float]:
    """The first and third quartiles of other[i] / base[i] over interleaved runs: how far the
    ratio of one pair of runs strays on this machine, beside the ratio of the medians."""
    ratios = [o / b for b, o in zip(base, other)]
    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return [round(q1, 3), round(q3, 3)]


def bench_cpu(runs: int) -> dict:
    path = guest("spin")
    raw_n, _ = raw_unicorn(path)
    session, _ = run_urr(path)
    urr_n = session.machine.icount
    t = medians(runs, raw=lambda: raw_unicorn(path)[1], ours=lambda: run_urr(path)[1])
    raw, ours = t["raw"], t["ours"]
    raw_mips, urr_mips = raw_n / raw / 1e6, urr_n / ours / 1e6
    return {"raw_mips": round(raw_mips, 2), "urr_mips": round(urr_mips, 2),
            "urr_vs_raw": round(urr_mips / raw_mips, 3)}


def bench_record_replay(runs: int, tmp: str) -> dict:
    path = guest("cpuloop")
    rr = os.path.join(tmp, "cpuloop.rr")
    session, _ = run_urr(path, "-icount", f"shift=7,rr=record,rrfile={rr}", "-snapshots", "off")
    icount = session.machine.icount
    log_bytes = os.path.getsize(rr)
    t = medians(runs,
                plain=lambda: run_urr(path, "-icount", "shift=7")[1],
                record=lambda: run_urr(path, "-icount", f"shift=7,rr=record,rrfile={rr}", "-snapshots", "off")[1],
                replay=lambda: run_urr(path, "-icount", f"shift=7,rr=replay,rrfile={rr}", "-snapshots", "off")[1])
    return {"guest_instructions": icount, "record_vs_plain": round(t["record"] / t["plain"], 3),
            "replay_vs_record": round(t["replay"] / t["record"], 3),
            "log_bytes_per_kinstr": round(log_bytes / (icount / 1000), 4)}


def bench_snapshots(runs: int, tmp: str) -> dict:
    runs = max(runs, HEADLINE_RUNS)
    path = guest("cpuloop")
    rr = os.path.join(tmp, "snap.rr")
    rec = ["-icount", f"shift=7,rr=record,rrfile={rr},rrsnapshot=init"]
    rep = ["-icount", f"shift=7,rr=replay,rrfile={rr},rrsnapshot=init"]
    record = medians(runs, without=lambda: run_urr(path, *rec, "-snapshots", "off")[1],
                     default=lambda: run_urr(path, *rec)[1],
                     coarse=lambda: run_urr(path, *rec, "-snapshots", "100ms")[1],
                     dense=lambda: run_urr(path, *rec, "-snapshots", "10ms:1s,100ms")[1])

    def dense_replay() -> float:
        run_urr(path, *rec, "-snapshots", "off")  # a catalog holding only the initial snapshot
        return run_urr(path, *rep, "-snapshots", DENSE)[1]
    replay = medians(runs, plain=lambda: run_urr(path, *rep, "-snapshots", "off")[1], dense=dense_replay)
    # A dense recording keeps every periodic snapshot: what each one added to the catalog.
    run_urr(path, *rec, "-snapshots", DENSE)
    db = sqlite3.connect(f"{rr}.db")
    added = [r[0] for r in db.execute("SELECT bytes FROM snapshots WHERE kind = 'periodic'")]
    db.close()
    restore_ms = _restore_times(path, rr)
    return {"snapshot_overhead_record": round(record["default"] / record["without"], 3),
            "snapshot_overhead_record_coarse": round(record["coarse"] / record["without"], 3),
            "snapshot_overhead_record_dense": round(record["dense"] / record["without"], 3),
            "snapshot_overhead_replay": round(replay["dense"] / replay["plain"], 3),
            "snapshots_dense": len(added),
            "restore_ms_median": round(statistics.median(restore_ms), 3),
            "catalog_bytes_per_snapshot": int(statistics.median(added))}


def _restore_times(path: str, rr: str, samples: int = 25) -> list[float]:
    opts = parse_args(["-kernel", path, "-serial", "none", "-icount",
                       f"shift=7,rr=replay,rrfile={rr},rrsnapshot=init", "-snapshots", "off",
                       "-debugger"])  # restores as a debugger's (SnapshotManager.expect_restores)
    session = Session(opts, out=io.BytesIO(), stdin_fd=None)
    names = sorted(session.snapshots.infos)
    rng = random.Random(7)
    times = []
    for name in rng.sample(names, min(samples, len(names))):
        t0 = time.perf_counter()
        session.snapshots.restore(name)
        times.append((time.perf_counter() - t0) * 1000)
    session.close(None, "bench")
    return times


def bench_reverse(tmp: str) -> dict:
    from debugger.timeline import Timeline
    path = guest("longloop")
    rr = os.path.join(tmp, "long.rr")
    run_urr(path, "-icount", f"shift=7,rr=record,rrfile={rr},rrsnapshot=init")
    opts = parse_args(["-kernel", path, "-serial", "none", "-icount",
                       f"shift=7,rr=replay,rrfile={rr},rrsnapshot=init"])
    session = Session(opts, out=io.BytesIO(), stdin_fd=None)
    tl = Timeline(session.machine, session.snapshots, True)
    t0 = time.perf_counter()
    end = tl.cont()
    forward_all = time.perf_counter() - t0
    total = end.icount
    rng = random.Random(11)
    times = []
    for _ in range(30):
        tl.seek(rng.randrange(total // 10, total))
        t0 = time.perf_counter()
        tl.reverse_stepi()
        times.append((time.perf_counter() - t0) * 1000)
    # reverse-continue from the end to a breakpoint hit once, near the start (pit_init), vs the
    # forward replay of the same span
    from debugger.console import load_symbols
    tl.add_breakpoint(load_symbols(path)["pit_init"])
    tl.seek(total)
    t0 = time.perf_counter()
    stop = tl.reverse_cont()
    back = time.perf_counter() - t0
    assert stop.reason == "breakpoint", stop
    crossed = total - stop.icount
    forward = forward_all * crossed / total
    session.close(None, "bench")
    return {"reverse_replay_instructions": total,
            "reverse_stepi_ms_median": round(statistics.median(times), 2),
            "reverse_stepi_ms_max": round(max(times), 2),
            "reverse_continue_vs_forward": round(back / forward, 3) if forward else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--runs", type=int, default=5, help="runs per timing (median)")
    ap.add_argument("--only", help="comma list: cpu,rr,snapshots,reverse,gdb,revgdb,bigmem,segments,catalog")
    args = ap.parse_args()
    build_guests()
    parts = set((args.only or "cpu,rr,snapshots,reverse,gdb,revgdb,bigmem,segments,catalog").split(","))
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        if "cpu" in parts:
            result.update(bench_cpu(args.runs))
        if "rr" in parts:
            result.update(bench_record_replay(args.runs, tmp))
        if "snapshots" in parts:
            result.update(bench_snapshots(args.runs, tmp))
        if "reverse" in parts:
            result.update(bench_reverse(tmp))
        if "gdb" in parts:
            from bench.gdb_speed import bench_gdb
            result.update(bench_gdb(tmp, args.runs))
        if "revgdb" in parts:
            from bench.reverse_speed import bench_reverse_gdb
            result.update(bench_reverse_gdb(tmp))
        if "bigmem" in parts:
            from bench import bigmem
            result.update(bigmem.bench(args.runs, tmp))
        if "segments" in parts:
            from bench.segments import bench_segments
            result.update(bench_segments(args.runs, tmp))
        if "catalog" in parts:
            from bench import catalog_speed
            result.update(catalog_speed.bench(args.runs, tmp))
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        width = max(map(len, result))
        for k, v in result.items():
            print(f"{k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
