"""The segment runner: a recording cut at its snapshots, replayed in this process or in worker
processes, gives what one straight replay gives; the queries agree with the debugger."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from debugger.symbols import Symbols
from history import Recording
from history.queries import Writes
from history.segments import Interval, plan
from tests.conftest import ROOT, run_urr
from tests.histories import make_case, queries, straight_results, worker_deaths
from tests.replays import Elf, recorded  # noqa: F401  (recorded is a fixture)
from urr.options import parse_args
from urr.session import Session

SEEDS = (0, 1, 2, 5)


@pytest.fixture(scope="module", params=SEEDS)
def case(request, guests, tmp_path_factory):
    return make_case(request.param, guests, str(tmp_path_factory.mktemp("history")))


@pytest.fixture(scope="module")
def straight(case):
    return straight_results(case)


def test_every_split_and_local_backend_gives_the_straight_results(case, straight):
    rec = case.recording()
    assert straight["verify"] == []  # a fresh recording's snapshots all match
    assert straight["sample"] and straight["sample"][0].icount == 0
    for backend in ({"jobs": 1}, {"jobs": 2}):
        assert queries(rec, case, **backend) == straight, backend
        if case.policy != "off":
            assert len(rec.last_run.segments) > 1  # the split was really exercised


def test_writes_and_samples_agree_with_the_debugger(case, straight):
    """The last write found equals the debugger's last-write from the end; samples equal the
    registers of a straight replay stopped at those icounts."""
    from debugger.timeline import Timeline

    symbol, length = case.watch
    rec = case.recording()
    addr = rec.address(symbol)
    writes = straight["writes"]
    for before, after in zip(writes, writes[1:]):
        assert before.icount < after.icount
    opts = parse_args(["-kernel", case.kernel, "-serial", "none", "-snapshots", "off", "-icount",
                       f"shift={rec.config['shift']},rr=replay,rrfile={case.rrfile}"])
    session = Session(opts, out=io.BytesIO(), stdin_fd=None)
    try:
        for s in straight["sample"][:20]:
            session.run(s.icount)
            assert session.machine.registers.read()["rsp"] == s.value
    finally:
        session.close(None, "test")
    if not case.initial:
        return  # the timeline's reverse search starts at the first snapshot
    with Timeline.for_replay(case.rrfile, case.kernel, snapshot="init") as tl:
        end = tl.cont()
        last = tl.last_write(addr, length)
        assert end.reason == "end"
    if last is None:
        assert writes == []
    else:
        w = writes[-1]
        assert (w.icount, w.rip, w.old, w.new) == last


def test_hits_agree_with_breakpoints(recorded):
    """Every stop of a forward `continue` with a breakpoint is a hit, at the same icount."""
    from debugger.timeline import Timeline

    r = recorded("ticks")
    rec = Recording(r.rrfile, r.kernel)
    rec.min_segment = 300_000
    addr = r.elf.addr("pic_eoi")
    hits = rec.hits("pic_eoi", jobs=2)
    assert len(rec.last_run.segments) > 1
    stops = []
    with Timeline.for_replay(r.rrfile, r.kernel, snapshot="init") as tl:
        tl.add_breakpoint(addr)
        while (stop := tl.cont()).reason == "breakpoint":
            stops.append(stop.icount)
    assert [h.icount for h in hits] == stops and len(stops) > 10


def test_writes_replaying_only_the_intervals_a_write_index_keeps(case, straight):
    """Given icount ranges that hold every write (here: the writes' own icounts, as a write index
    would give them coarser), the query replays only the snapshot intervals they overlap, each
    stretch from its own snapshot, and finds the same writes."""
    symbol, length = case.watch
    rec = case.recording()
    addr = rec.address(symbol)
    ranges = [(w.icount, w.icount + 1) for w in straight["writes"]]
    for jobs in (1, 2):
        assert rec.run(Writes(addr, length, ranges), jobs=jobs) == straight["writes"]
        replayed = [i for s in rec.last_run.segments for i in s.intervals]
        assert all(any(i.start_icount <= b < (i.end_icount if i.end else b + 1) for b, _ in ranges)
                   for i in replayed)
    everything = Writes(addr, length).intervals(rec.snapshots, rec.end_icount, True)
    if len(ranges) < len(everything) - 1:
        assert len(replayed) < len(everything)


def test_writes_include_the_frames_interrupts_push(recorded):
    """Watching the top of the stack finds the CPU's interrupt frames: each at the icount of an
    interrupt in the log, holding the interrupted RIP, as well as the instructions' writes."""
    from replay import log as L
    from replay.player import Player

    r = recorded("ticks")
    rec = Recording(r.rrfile, r.kernel)
    rec.min_segment = 300_000
    top = rec.config["ram_size"]
    writes = rec.writes(top - 4096, 4096, jobs=2)  # the whole stack of this guest
    irqs = {x.icount for x in Player(L.LogReader(r.rrfile)).records if x.kind == L.IRQ}
    frames = [w for w in writes if w.instruction.startswith("(interrupt 0x")]
    assert len(frames) > 10 and len(writes) > len(frames)
    for w in frames:
        assert w.icount in irqs
        assert w.rip.to_bytes(8, "little") in w.new
    assert writes == rec.writes(top - 4096, 4096, jobs=1)


def test_plan_merges_short_intervals():
    intervals = [Interval(f"s{i}", i * 1000, f"s{i + 1}", (i + 1) * 1000) for i in range(100)]
    segments = plan(intervals, workers=2, min_segment=5000)
    # 100 000 icounts for 2 workers x 4 segments: segments of >= 12 500, so 13 intervals each
    assert [len(s.intervals) for s in segments] == [13] * 7 + [9]
    assert [i for s in segments for i in s.intervals] == intervals
    # a larger minimum that still leaves no worker idle wins over 4 segments a worker
    assert [len(s.intervals) for s in plan(intervals, workers=2, min_segment=20_000)] == [20] * 5
    # 64 workers: segments of 5000 would leave 44 of them idle: one of 1562 (2 intervals) each
    assert [len(s.intervals) for s in plan(intervals, workers=64, min_segment=5000)] == [2] * 50


def test_a_worker_that_dies_once_is_replaced_and_its_segment_retried(recorded, tmp_path):
    worker_deaths(recorded("ticks"), str(tmp_path / "died"), r"its worker died twice \(killed by SIGKILL\)", jobs=2)


# -- urr-snap ----------------------------------------------------------------------------------


def snap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snapshots.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def one_line_error(r: subprocess.CompletedProcess, text: str) -> None:
    assert r.returncode == 2, r
    assert r.stderr.startswith("urr-snap: ") and text in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_cli_queries(recorded):
    r = recorded("corrupt")
    rec = Recording(r.rrfile, r.kernel)
    writes = rec.writes("total_checks", 8, jobs=1)
    out = snap("writes", r.rrfile, "total_checks:8", "--kernel", r.kernel, "--jobs", "2")
    assert out.returncode == 0, out.stderr
    last = writes[-1]
    assert f"icount {last.icount}  {rec.symbols.where(last.rip)}:  {last.instruction}" in out.stdout
    assert f"  old {last.old.hex(' ')}\n  new {last.new.hex(' ')}\n" in out.stdout
    assert out.stdout.endswith(f"{len(writes)} writes to {rec.symbols.where(rec.address('total_checks'))} (8 bytes)\n")
    out = snap("hits", r.rrfile, "report_corruption", "--kernel", r.kernel, "--registers", "--csv", "-j", "2")
    assert out.returncode == 0, out.stderr
    rows = out.stdout.splitlines()
    hits = rec.hits("report_corruption", registers=True, jobs=1)
    assert rows[0].startswith("icount,rax,rbx") and len(rows) == 1 + len(hits)
    assert rows[1].split(",")[:2] == [str(hits[0].icount), f"{hits[0].registers['rax']:#x}"]
    out = snap("sample", r.rrfile, "*total_checks", "--every", "5M", "--kernel", r.kernel, "--csv")
    samples = rec.sample("*total_checks", 5_000_000, jobs=1)
    assert out.stdout.splitlines() == ["icount,*total_checks"] + [f"{s.icount},{s.value:#x}" for s in samples]


def test_cli_verify_with_jobs_catches_a_tampered_snapshot(recorded, tmp_path):
    import shutil
    import sqlite3

    r = recorded("ticks")
    rr = str(tmp_path / "ticks.rr")
    shutil.copy(r.rrfile, rr)
    shutil.copy(r.rrfile + ".db", rr + ".db")
    out = snap("verify", rr, "--jobs", "2")
    assert out.returncode == 0 and out.stdout == "all snapshots match their replay\n", out.stderr
    db = sqlite3.connect(rr + ".db")
    names = [n for (n,) in db.execute("SELECT name FROM snapshots ORDER BY icount")]
    victim = names[len(names) * 2 // 3]
    cpu = db.execute("SELECT cpu FROM snapshots WHERE name = ?", (victim,)).fetchone()[0]
    db.execute("UPDATE snapshots SET cpu = ? WHERE name = ?", (cpu.replace('"rbx": ', '"rbx": 1', 1), victim))
    db.commit()
    db.close()
    serial, parallel = snap("verify", rr, "--jobs", "1"), snap("verify", rr, "--jobs", "2")
    assert serial.returncode == parallel.returncode == 1
    assert serial.stderr == parallel.stderr
    assert f"snapshot {victim} " in serial.stderr and "registers rbx" in serial.stderr


def test_cli_without_snapshots_replays_one_segment_and_says_so(guests, tmp_path):
    rr = str(tmp_path / "bare.rr")
    rec = run_urr("-kernel", guests["ticks"], "-snapshots", "off", "-icount", f"shift=7,rr=record,rrfile={rr}")
    assert rec.status == 33 and not os.path.exists(rr + ".db")
    one_line_error(snap("hits", rr, "0x100000"), "no snapshots to replay from: give the kernel")
    out = snap("hits", rr, "kmain", "--kernel", guests["ticks"], "-j", "2")
    assert out.returncode == 0, out.stderr
    assert out.stderr == f"urr-snap: {rr} has no snapshot catalog: replaying it as one segment from boot\n"
    kmain = Symbols(guests["ticks"]).where(Elf(guests["ticks"]).addr("kmain"))
    assert out.stdout.endswith(f"\n1 executions of {kmain}\n")
    out = snap("verify", rr, "--kernel", guests["ticks"])
    assert out.returncode == 0 and out.stdout == "the recording replays to its end as recorded\n"


@pytest.mark.parametrize("args,text", [
    (["writes", "{rr}", "no_such_symbol", "--kernel", "{kernel}"], "unknown address or symbol 'no_such_symbol'"),
    (["writes", "{rr}", "total_checks"], "symbol 'total_checks' needs the kernel ELF"),
    (["sample", "{rr}", "xyz", "--every", "1000"], "bad expression 'xyz'"),
    (["hits", "{rr}", "kmain", "--kernel", "{other}"], "is not the kernel"),
    (["verify", "{rr}", "--ray", "127.0.0.1:1"], "cannot reach the Ray cluster at 127.0.0.1:1"),
])
def test_cli_errors_are_one_line(recorded, guests, args, text):
    r = recorded("corrupt")
    one_line_error(snap(*[a.format(rr=r.rrfile, kernel=r.kernel, other=guests["ticks"]) for a in args]), text)
