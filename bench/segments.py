"""The segment runner's speed-up: a 215 M-instruction recording (longloop, snapshots every
100 ms and every 10 ms in its last second, from an initial snapshot) verified and queried by 1 and 2 local processes and by a local
Ray instance of 2 CPUs, and a projection to more workers from its measured segment times.

    verify_speedup_jobs2          verify, 1 process / 2 processes (wall time)
    writes_query_speedup_jobs2    every write to `timer_ticks` (~27 000), 1 process / 2 processes
    *_cpu                         the same from CPU seconds: the serial run's / the busier worker's
    ray_overhead_vs_processes     that query on local Ray (2 CPUs, running) / 2 processes
    verify_segment_(cpu_)s_jobs2  a 2-process verify's segments: each one's seconds in its worker
    projected_speedup_W           verify on W workers, from the CPU seconds of each interval

On a machine shared with other work, wall-time speed-ups measure its load as much as urr: with
the kernel's autogroup scheduling, all processes of one session share one session's CPU, so two
workers there get about what one got. The CPU-second figures say what two idle cores would give.

The projection replays every snapshot interval as a segment of its own (so its time includes a
segment's fixed cost: a restore and code translated again), plans segments as the runner would
for W workers, hands them in order to whichever simulated worker is free, and divides the
serial CPU seconds by the last one's finishing time."""
from __future__ import annotations

import heapq
import os
import statistics
import sys
import time
from typing import Callable

from bench.run import guest, medians, run_urr
from history import Recording
from history.runner import Backend, Done, execute
from history.segments import FileSource, plan
from history.verify import Verify

WORKERS = (8, 64, 512)
POLICY = "10ms:1s,100ms"  # snapshots every 100 ms, every 10 ms in the last second


def makespan(times: list[float], workers: int) -> float:
    """When the last of `times`, handed out in order to the first free of `workers`, ends."""
    free = [0.0] * workers
    for t in times:
        heapq.heappush(free, heapq.heappop(free) + t)
    return max(free)


def cpu_speedup(one: list[Done], two: list[Done]) -> float:
    """What the 2-process run would gain on two otherwise idle cores: the serial run's CPU
    seconds over the busier worker's (on a shared machine, wall time measures the others' load)."""
    per_worker: dict[int, float] = {}
    for d in two:
        per_worker[d.worker] = per_worker.get(d.worker, 0.0) + d.cpu
    return sum(d.cpu for d in one) / max(per_worker.values())


def project(rec: Recording, serial_cpu: float) -> dict:
    """Speed-ups of verify at WORKERS workers, from the CPU seconds of each snapshot interval
    replayed alone."""
    query = Verify()
    intervals = query.intervals(rec.snapshots, rec.end_icount, rec.kernel is not None)
    each = plan(intervals, workers=10**9, min_segment=0)  # one interval per segment
    source = FileSource(rec.rrfile, rec.db, rec.kernel, rec.config["recording_id"])
    _, ran = execute(query, source, each, Backend(jobs=1))
    cpu = [d.cpu for d in ran]
    by_interval = dict(zip(intervals, cpu))
    out = {"intervals": len(intervals), "interval_cpu_s_max": round(max(cpu), 3),
           "interval_cpu_s_median": round(statistics.median(cpu), 4)}
    for w in WORKERS:
        segments = plan(intervals, w)
        times = [sum(by_interval[i] for i in s.intervals) for s in segments]
        out[f"projected_speedup_{w}"] = round(serial_cpu / makespan(times, w), 1)
        out[f"projected_segments_{w}"] = len(segments)
    return out


def bench_segments(runs: int, tmp: str) -> dict:
    path = guest("longloop")
    rr = os.path.join(tmp, "segments.rr")
    run_urr(path, "-icount", f"shift=7,rr=record,rrfile={rr},rrsnapshot=init", "-snapshots", POLICY)
    rec = Recording(rr, path)
    ran: dict[str, list[Done]] = {}

    def timed(name: str, query: Callable[[], object]) -> float:
        t0 = time.perf_counter()
        query()
        ran[name] = rec.last_run.ran
        return time.perf_counter() - t0

    verify = medians(runs, one=lambda: timed("v1", lambda: rec.verify(jobs=1)),
                     two=lambda: timed("v2", lambda: rec.verify(jobs=2)))
    print(f"segments: verify {verify}", file=sys.stderr)
    writes = medians(runs, one=lambda: timed("w1", lambda: rec.writes("timer_ticks", 8, jobs=1)),
                     two=lambda: timed("w2", lambda: rec.writes("timer_ticks", 8, jobs=2)))
    print(f"segments: writes {writes}", file=sys.stderr)
    found = len(rec.writes("timer_ticks", 8, jobs=2))
    from history.raybackend import connect

    import ray

    started = connect("")  # a local instance of this machine's 2 CPUs, running before it is timed
    try:
        rec.writes("timer_ticks", 8, ray="")  # its workers start (and import urr) once
        on_ray = medians(runs, processes=lambda: timed("p", lambda: rec.writes("timer_ticks", 8, jobs=2)),
                         ray=lambda: timed("r", lambda: rec.writes("timer_ticks", 8, ray="")))
    finally:
        if started:
            ray.shutdown()
    return {"segments_instructions": rec.end_icount, "segments_snapshots": len(rec.snapshots),
            "verify_s_jobs1": round(verify["one"], 2), "verify_s_jobs2": round(verify["two"], 2),
            "verify_speedup_jobs2": round(verify["one"] / verify["two"], 3),
            "verify_speedup_jobs2_cpu": round(cpu_speedup(ran["v1"], ran["v2"]), 3),
            "verify_segment_s_jobs2": [round(d.seconds, 2) for d in ran["v2"]],
            "verify_segment_cpu_s_jobs2": [round(d.cpu, 2) for d in ran["v2"]],
            "writes_found": found,
            "writes_s_jobs1": round(writes["one"], 2), "writes_s_jobs2": round(writes["two"], 2),
            "writes_query_speedup_jobs2": round(writes["one"] / writes["two"], 3),
            "writes_query_speedup_jobs2_cpu": round(cpu_speedup(ran["w1"], ran["w2"]), 3),
            "ray_overhead_vs_processes": round(on_ray["ray"] / on_ray["processes"], 3),
            **project(rec, sum(d.cpu for d in ran["v1"]))}
