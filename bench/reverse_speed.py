"""Reverse debugging as a GDB user drives it, on a long replay: `python bench/run.py --only revgdb`.

The guest is revloop-long (~535 M instructions of compute with a 1 kHz timer, shift 7). One real
`gdb -batch` session (bench/gdb_speed.py's harness: GDB times its own commands) measures

  gdb_reverse_stepi_ms_median/_p99   reverse-stepi at 30 random positions, each the first step there
                                     (restoring a snapshot and recording the stretch before it)
  gdb_reverse_finish_s               reverse-finish out of mix, inlined into the loop (~2,000 `bs`)
  forward_seek_ms                    `monitor replay_seek` 80 M instructions ahead
  gdb_reverse_continue_vs_forward    reverse-continue from the end to a breakpoint hit once near the
                                     start (pit_init) / `continue` from there over that span to the
                                     end: medians of 3 interleaved runs each
  reverse_continue_watch_vs_forward  the same to the last write of `seed_copy` (written once, near
                                     the start) with `watch seed_copy`
and, through the Timeline API (as the console's `last-write` does):
  last_write_ms                      last-write of seed_copy from the end

For the watchpoint ratio, the forward time of a span is that of the whole replay run forward
(`continue` from the start to the end) scaled by the span's share of it: the guest runs the same
loop throughout.
"""
from __future__ import annotations

import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import subprocess  # noqa: E402

from bench.gdb_speed import REVERSE_STEPS, run_gdb_script  # noqa: E402

SEEK_AHEAD = 80_000_000

_SESSION = REVERSE_STEPS + """
seeks = []
for start in (end // 10, end // 4, end // 2):
    go(start)
    seeks.append(timed("monitor replay_seek %d" % (start + SEEK_AHEAD)))
result["seek_s"] = seeks

finishes = []
for start in (end // 5, end // 2, 4 * end // 5):
    go(start)
    run("break revloop.c:MIX_END")
    run("continue")
    run("delete")
    finishes.append(timed("reverse-finish"))
result["reverse_finish_s"] = finishes

back, ahead = [], []
for _ in range(RUNS):
    go(end)
    run("break pit_init")
    t0 = time.perf_counter()
    run("reverse-continue")
    back.append(time.perf_counter() - t0)
    result["break_at"] = position()
    run("delete")
    t0 = time.perf_counter()
    run("continue")                   # the same span forwards, to the end
    ahead.append(time.perf_counter() - t0)
result["back_break_s"], result["ahead_break_s"] = back, ahead

go(end)
run("watch seed_copy")
t0 = time.perf_counter()
run("reverse-continue")
result["back_watch_s"], result["watch_at"] = time.perf_counter() - t0, position()
run("delete")
"""


def _last_write_ms(rrfile: str, kernel: str, end: int) -> float:
    from debugger.console import load_symbols
    from debugger.timeline import Timeline
    with Timeline.for_replay(rrfile, kernel, snapshot="init") as tl:
        tl.seek(end)
        t0 = time.perf_counter()
        found = tl.last_write(load_symbols(kernel)["seed_copy"], 8)
        elapsed = (time.perf_counter() - t0) * 1000
    assert found is not None and found[0] < end // 100, found
    return elapsed


def bench_reverse_gdb(tmp: str, samples: int = 30, runs: int = 3) -> dict:
    kernel = os.path.join(ROOT, "guests", "build", "revloop-long.elf")
    rrfile = os.path.join(tmp, "revloop-long.rr")
    done = subprocess.run([sys.executable, "-m", "urr", "-kernel", kernel, "-display", "none", "-serial", "none",
                           "-icount", f"shift=7,rr=record,rrfile={rrfile},rrsnapshot=init"], cwd=ROOT)
    assert done.returncode == 33, done  # revloop's URR_EXIT_PASS
    with open(os.path.join(ROOT, "guests", "revloop.c")) as f:
        mix_end = next(n for n, line in enumerate(f, 1) if "return x ^ salt;" in line)
    r = run_gdb_script(rrfile, kernel, _SESSION.replace("SAMPLES", str(samples)).replace("RUNS", str(runs))
                       .replace("SEEK_AHEAD", str(SEEK_AHEAD)).replace("MIX_END", str(mix_end)))
    end, forward_all = r["end"], r["forward_all_s"]
    steps = sorted(r["reverse_stepi_s"])

    def forward(span_start: int) -> float:
        return forward_all * (end - span_start) / end
    return {"revgdb_replay_instructions": end,
            "gdb_reverse_stepi_ms_median": round(statistics.median(steps) * 1000, 2),
            "gdb_reverse_stepi_ms_p99": round(steps[min(len(steps) - 1, int(len(steps) * 0.99))] * 1000, 2),
            "gdb_reverse_finish_s": round(statistics.median(r["reverse_finish_s"]), 3),
            "forward_seek_ms": round(statistics.median(r["seek_s"]) * 1000, 1),
            "gdb_reverse_continue_vs_forward": round(statistics.median(r["back_break_s"])
                                                     / statistics.median(r["ahead_break_s"]), 3),
            "reverse_continue_watch_vs_forward": round(r["back_watch_s"] / forward(r["watch_at"]), 3),
            "last_write_ms": round(_last_write_ms(rrfile, kernel, end), 1)}


if __name__ == "__main__":
    import json
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(bench_reverse_gdb(d)))
