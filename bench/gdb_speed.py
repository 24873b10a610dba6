"""urr's speed as a GDB user sees it: real `gdb -batch` against `urr -gdb tcp::0` on a replay.

GDB runs a Python script inside itself that times its own commands with time.perf_counter and
hands back one JSON object, so a figure includes everything the user waits for: GDB's packets,
the stub, the timeline, and what GDB reads after each stop.

    result = run_gdb_script(rrfile, kernel, '''
    run("break mix")
    result["stepi_s"] = timed("stepi")
    ''')

The script's globals: `run(command) -> str` (GDB's output), `timed(command) -> float` (seconds),
`position() -> int` (the replay's icount), `result` (a dict, printed as JSON at the end). urr is
started with -S (at the recording's first instruction) and killed when the script ends.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GDB = shutil.which("gdb") or "/usr/bin/gdb"
STARTUP_S = 60  # for urr to start listening on a loaded machine
RESULT_TAG = "@urr-bench-json "

_PRELUDE = """\
import gdb, json, re, time
result = {}
def run(command):
    return gdb.execute(command, to_string=True)
def timed(command):
    t0 = time.perf_counter()
    gdb.execute(command, to_string=True)
    return time.perf_counter() - t0
def position():
    return int(re.search(r"icount (\\d+)", run("monitor info replay")).group(1))
"""
# A script's start for reverse-stepi at random places (bench.reverse_speed, bench.bigmem): run to
# the end of the replay, then SAMPLES times seek to a random place past the first tenth, flush
# GDB's register cache and time the first reverse-stepi there (GDB then reads the registers and
# the stack around the new pc). Defines `go(icount)` and `end`; times in result["reverse_stepi_s"].
REVERSE_STEPS = """
import random
rng = random.Random(11)
t0 = time.perf_counter()
run("continue")                       # to the end of the replay
forward_all = time.perf_counter() - t0
end = position()
result["end"], result["forward_all_s"] = end, forward_all

def go(icount):
    run("monitor replay_seek %d" % icount)
    run("maintenance flush register-cache")

steps = []
for _ in range(SAMPLES):
    go(rng.randrange(end // 10, end))
    steps.append(timed("reverse-stepi"))
result["reverse_stepi_s"] = steps
"""
_EPILOGUE = f"""
gdb.write({RESULT_TAG!r} + json.dumps(result) + "\\n")
gdb.execute("kill")
"""


def start_urr(rrfile: str, kernel: str, *extra: str) -> tuple[subprocess.Popen, int, str]:
    """urr replaying `rrfile` from its snapshot `init` under -S, listening on a free port:
    (process, port, path of its stderr)."""
    err_path = tempfile.mktemp(prefix="urr-gdb-bench-", suffix=".err")
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "urr", "-kernel", kernel, "-display", "none", "-serial", "none",
             "-icount", f"shift=7,rr=replay,rrfile={rrfile},rrsnapshot=init", *extra, "-gdb", "tcp::0", "-S"],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline and proc.poll() is None:
        with open(err_path) as f:
            m = re.search(r"^urr: waiting for gdb on 127\.0\.0\.1:(\d+)$", f.read(), re.M)
        if m:
            return proc, int(m.group(1)), err_path
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    with open(err_path) as f:
        raise RuntimeError(f"urr did not start listening:\n{f.read()}")


def run_gdb_script(rrfile: str, kernel: str, python_body: str, timeout: float = 1800,
                   urr_options: tuple[str, ...] = ()) -> dict:
    """Run `python_body` inside GDB connected to urr replaying `rrfile` (with `urr_options`, such
    as the recording's -m); the script's `result`."""
    proc, port, err_path = start_urr(rrfile, kernel, *urr_options)
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as script:
        script.write(_PRELUDE + textwrap.dedent(python_body) + _EPILOGUE)
    try:
        gdb = subprocess.run([GDB, "-nx", "-batch", "-ex", "set confirm off", "-ex", f"file {kernel}",
                              "-ex", f"target remote 127.0.0.1:{port}", "-x", script.name],
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        proc.wait(timeout=60)
    finally:
        os.unlink(script.name)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        with open(err_path) as f:
            urr_err = f.read()
        os.unlink(err_path)
    for line in gdb.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    raise RuntimeError(f"the GDB script gave no result:\n{gdb.stdout}\n{gdb.stderr}\nurr: {urr_err}")


def record(kernel: str, rrfile: str) -> None:
    """Record `kernel` into `rrfile` (snapshot `init` at the start). urr exits with the guest's
    status, always odd; an even one is urr's own error."""
    r = subprocess.run([sys.executable, "-m", "urr", "-kernel", kernel, "-display", "none", "-serial", "none",
                        "-icount", f"shift=7,rr=record,rrfile={rrfile},rrsnapshot=init"], cwd=ROOT,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode % 2 == 0:
        raise RuntimeError(f"recording {kernel} failed ({r.returncode}): {r.stderr}")


# Steps at a point past the start, with two breakpoints inserted (GDB removes and reinserts them
# around every step): STEPS stepi and STEPS next (range steps over the lines of mix's loop); then
# IGNORES crossings of the breakpoint on mix that GDB's ignore count passes over, each a stop and
# a resume (and the ~5,000 instructions of a call of mix).
_STEPS = """
run("break mix")
run("break kmain")
run("continue")
run("continue")
result["stepi_s"] = [timed("stepi") for _ in range(STEPS)]
result["next_s"] = [timed("next") for _ in range(STEPS)]
run("delete 2")
run("ignore 1 IGNORES")
result["ignore_s"] = timed("continue")
"""

# A condition true once in CROSSINGS crossings of a breakpoint on mix, continue to that hit, vs
# the same span run without a breakpoint (a replay breakpoint at the hit's icount), interleaved.
_CONDITIONAL = """
run("break mix")
run("continue")
run("delete")
start = position()
first_call = int(gdb.parse_and_eval("call"))
conditional, plain = [], []
for _ in range(RUNS):
    run("break mix if call == %d" % (first_call + CROSSINGS))
    t0 = time.perf_counter()
    run("continue")
    conditional.append(time.perf_counter() - t0)
    hit = position()
    assert int(gdb.parse_and_eval("call")) == first_call + CROSSINGS
    run("delete")
    run("monitor replay_seek %d" % start)
    run("maintenance flush register-cache")
    run("monitor replay_break %d" % hit)
    t0 = time.perf_counter()
    run("continue")
    plain.append(time.perf_counter() - t0)
    assert position() == hit
    run("monitor replay_delete_break")
    run("monitor replay_seek %d" % start)
    run("maintenance flush register-cache")
result["conditional_s"], result["plain_s"], result["span"] = conditional, plain, hit - start
"""


def bench_gdb(tmp: str, runs: int = 5, steps: int = 50, crossings: int = 10_000, ignores: int = 2000) -> dict:
    """The GDB figures on a replay of longcalls (~520 M instructions, 1 kHz timer)."""
    kernel = os.path.join(ROOT, "guests", "build", "longcalls.elf")
    rrfile = os.path.join(tmp, "longcalls.rr")
    record(kernel, rrfile)
    stepping = run_gdb_script(rrfile, kernel, _STEPS.replace("STEPS", str(steps)).replace("IGNORES", str(ignores)))
    cond = run_gdb_script(rrfile, kernel, _CONDITIONAL.replace("RUNS", str(runs))
                          .replace("CROSSINGS", str(crossings)))
    return {"gdb_stepi_ms_median": round(statistics.median(stepping["stepi_s"]) * 1000, 2),
            "gdb_next_ms_median": round(statistics.median(stepping["next_s"]) * 1000, 2),
            "gdb_ignore_crossing_ms": round(stepping["ignore_s"] / ignores * 1000, 2),
            "gdb_conditional_break_vs_forward": round(statistics.median(cond["conditional_s"])
                                                      / statistics.median(cond["plain_s"]), 3),
            "gdb_conditional_span_instructions": cond["span"]}


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(bench_gdb(d)))
