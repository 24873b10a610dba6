"""Refusals, divergence reports, killed recordings, damaged logs, host input timing."""
from __future__ import annotations

import io
import os
import random
import re
import signal
import struct
import subprocess
import sys
import time

import pytest

from cpu.machine import DIGEST_INTERVAL
from replay.player import Divergence
from snapshots.catalog import Catalog
from tests.conftest import ROOT, run_urr
from urr.options import parse_args
from urr.session import Session


@pytest.fixture(scope="module")
def ticks_recording(guests, tmp_path_factory):
    rr = str(tmp_path_factory.mktemp("rec") / "ticks.rr")
    rec = run_urr("-kernel", guests["ticks"], "-icount", f"shift=7,rr=record,rrfile={rr}", "-snapshots", "off")
    assert rec.status == 33, rec.err
    return rr, rec


@pytest.mark.parametrize("args,message", [
    (["-m", "32M"], "RAM size 32M differs from the recorded 16M"),
    (["-icount", "shift=6,rr=replay,rrfile={rr}"], "icount shift 6 differs from the recorded 7"),
])
def test_mismatched_configuration_is_refused(guests, ticks_recording, args, message):
    rr, _ = ticks_recording
    args = [a.format(rr=rr) for a in args]
    if "-icount" not in args:
        args += ["-icount", f"shift=7,rr=replay,rrfile={rr}"]
    r = run_urr("-kernel", guests["ticks"], "-snapshots", "off", *args)
    assert r.status == 2 and message in r.err and "Traceback" not in r.err


def test_modified_kernel_is_refused(guests, ticks_recording, tmp_path):
    rr, _ = ticks_recording
    patched = tmp_path / "ticks.elf"
    data = bytearray(open(guests["ticks"], "rb").read())
    data[-1] ^= 0xFF  # still a valid ELF (a byte of the section headers' padding or strings)
    patched.write_bytes(bytes(data))
    r = run_urr("-kernel", str(patched), "-icount", f"shift=7,rr=replay,rrfile={rr}", "-snapshots", "off")
    assert r.status == 2
    assert "kernel differs from the recorded ticks.elf" in r.err


def _replay_session(guest: str, rr: str) -> Session:
    opts = parse_args(["-kernel", guest, "-serial", "none", "-snapshots", "off",
                       "-icount", f"shift=7,rr=replay,rrfile={rr}"])
    return Session(opts, out=io.BytesIO(), stdin_fd=None)


def test_memory_divergence_reported_at_next_digest_with_page(guests, tmp_path):
    rr = str(tmp_path / "cpu.rr")
    run_urr("-kernel", guests["cpuloop"], "-icount", f"shift=7,rr=record,rrfile={rr}", "-snapshots", "off")
    session = _replay_session(guests["cpuloop"], rr)
    poke_at = DIGEST_INTERVAL * 3 + 12345
    session.run(poke_at)
    victim = 0x50_0000  # an untouched RAM page: the recording never wrote there
    session.machine.ram.write(victim, b"\x42")
    with pytest.raises(Divergence) as e:
        session.run()
    assert e.value.icount == DIGEST_INTERVAL * 4
    assert f"RAM pages {victim:#x}" in str(e.value)


def test_register_divergence_names_the_register(guests, tmp_path):
    from unicorn.x86_const import UC_X86_REG_R15
    rr = str(tmp_path / "cpu.rr")
    run_urr("-kernel", guests["cpuloop"], "-icount", f"shift=7,rr=record,rrfile={rr}", "-snapshots", "off")
    session = _replay_session(guests["cpuloop"], rr)
    session.run(DIGEST_INTERVAL + 1)
    session.machine.uc.reg_write(UC_X86_REG_R15, 0xDEAD0000)
    with pytest.raises(Divergence, match=r"replay diverged at icount \d+: .*r15 .* -> 0xdead0000"):
        session.run()


def test_divergence_exit_status_from_cli(guests, tmp_path):
    """A log whose recorded interrupt vector was changed: replay stops with a clear message."""
    from replay import log as L
    rr = str(tmp_path / "t.rr")
    run_urr("-kernel", guests["ticks"], "-icount", f"shift=7,rr=record,rrfile={rr}", "-snapshots", "off")
    reader = L.LogReader(rr)
    records = [r for c in reader.chunks() for r in c.records]
    bad = str(tmp_path / "bad.rr")
    w = L.LogWriter(bad, reader.config)
    changed = None
    for r in records:
        fields = r.fields
        if r.kind == L.IRQ and changed is None and r.icount > 100000:
            fields, changed = (0x21,), r.icount
        w.append(r.kind, r.icount, *fields)
    w.close(records[-1].icount)
    rep = run_urr("-kernel", guests["ticks"], "-icount", f"shift=7,rr=replay,rrfile={bad}", "-snapshots", "off")
    assert rep.status == 6
    assert f"replay diverged at icount {changed}: interrupt vector 0x20 where the recording delivered 0x21" in rep.err


def test_a_divergence_inside_rdtsc_is_one_line(guests, tmp_path):
    """The rdtsc hook is a raw callback: its divergence must surface like any other, with no
    extra noise on stderr."""
    from replay import log as L
    rr = str(tmp_path / "c.rr")
    run_urr("-kernel", guests["clock"], "-icount", f"shift=7,rr=record,rrfile={rr}", "-snapshots", "off")
    reader = L.LogReader(rr)
    records = [r for c in reader.chunks() for r in c.records]
    tsc = [r for r in records if r.kind == L.CLOCK and r.fields[0] == 0]
    dropped = tsc[len(tsc) // 2]
    forged = str(tmp_path / "forged.rr")
    w = L.LogWriter(forged, reader.config)
    for r in records:
        if r is not dropped:
            w.append(r.kind, r.icount, *r.fields)
    w.close(records[-1].icount)
    rep = run_urr("-kernel", guests["clock"], "-icount", f"shift=7,rr=replay,rrfile={forged}", "-snapshots", "off")
    assert rep.status == 6, rep.err
    assert len(rep.err.splitlines()) == 1 and rep.err.startswith(f"urr: replay diverged at icount {dropped.icount}"), rep.err


def test_a_recorded_fault_the_replay_does_not_meet_is_a_divergence(guests, tmp_path):
    """A log whose end says the guest faulted where the guest runs on: reported, not trusted."""
    from replay import log as L
    rr = str(tmp_path / "h.rr")
    run_urr("-kernel", guests["hello"], "-icount", f"shift=7,rr=record,rrfile={rr}", "-snapshots", "off")
    reader = L.LogReader(rr)
    records = [r for c in reader.chunks() for r in c.records]
    assert records[-1].kind == L.END and records[-2].kind == L.DIGEST  # and its final state's
    forged = str(tmp_path / "forged.rr")
    w = L.LogWriter(forged, reader.config)
    for r in records[:-2]:
        w.append(r.kind, r.icount, *r.fields)
    where = records[-1].icount - 5  # before the guest's own exit
    w.append(L.END, where, -1, b"guest fault: made up (icount 0, rip 0x0)")
    w.close(where)
    rep = run_urr("-kernel", guests["hello"], "-icount", f"shift=7,rr=replay,rrfile={forged}", "-snapshots", "off")
    assert rep.status == 6, rep.err
    assert f"replay diverged at icount {where}: the recording ended here with 'guest fault: made up" in rep.err


@pytest.mark.parametrize("damage,message", [
    ("truncate-header", "not an urr event log"),
    ("flip-payload", "checksum mismatch"),
    ("foreign", "not an urr event log"),
])
def test_damaged_logs_are_refused(guests, ticks_recording, tmp_path, damage, message):
    rr, _ = ticks_recording
    data = bytearray(open(rr, "rb").read())
    if damage == "truncate-header":
        data = data[:10]
    elif damage == "flip-payload":
        data[-2] ^= 0x55  # inside the last chunk's compressed payload
    else:
        data = bytearray(b"\x7fELF" + bytes(100))
    bad = tmp_path / "bad.rr"
    bad.write_bytes(bytes(data))
    r = run_urr("-kernel", guests["ticks"], "-icount", f"shift=7,rr=replay,rrfile={bad}", "-snapshots", "off")
    assert r.status == 2 and message in r.err
    assert len(r.err.strip().splitlines()) == 1


def test_missing_rrfile_and_unwritable_path(guests, tmp_path):
    r = run_urr("-kernel", guests["hello"], "-icount", f"shift=7,rr=replay,rrfile={tmp_path / 'none.rr'}")
    assert r.status == 2 and "cannot read rrfile" in r.err
    r = run_urr("-kernel", guests["hello"], "-icount", f"shift=7,rr=record,rrfile={tmp_path / 'no/such/dir.rr'}")
    assert r.status == 2 and "cannot write rrfile" in r.err


def _wait_for_first_chunk(rr: str, proc: subprocess.Popen) -> None:
    """Until the log holds more than its header (a chunk: at ~1 s of host time), however long
    the start-up takes on a loaded machine; a fixed sleep raced it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with open(rr, "rb") as f:
                head = f.read(16)
                size = os.fstat(f.fileno()).st_size
        except FileNotFoundError:
            head, size = b"", 0
        if len(head) == 16 and size > 16 + struct.unpack_from("<I", head, 12)[0] + 4:
            return
        time.sleep(0.05)
    raise AssertionError("the recording wrote no chunk (or ended) before it could be killed")


def test_killed_recording_replays_up_to_where_it_got(guests, tmp_path):
    rr = str(tmp_path / "long.rr")
    cmd = [sys.executable, "-m", "urr", "-display", "none", "-kernel", guests["longloop"],
           "-icount", f"shift=7,rr=record,rrfile={rr}", "-snapshots", "off"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_first_chunk(rr, proc)  # the ~3 s run (more on a loaded machine) has not finished
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rep = run_urr("-kernel", guests["longloop"], "-icount", f"shift=7,rr=replay,rrfile={rr}", "-snapshots", "off")
    assert rep.status == 8, rep.err  # not success: the recording is incomplete
    line = rep.note("replay reached the end of an incomplete recording at icount")
    assert int(line.split("icount ")[1].split(":")[0]) > 1_000_000
    assert "without an end record" in line


def _interrupt_recording(guests, rr: str, *extra: str) -> int:
    """Record longloop, send Ctrl-C (to the whole process group, the catalog writer included)
    once it runs (its log holds a chunk); check the one line and exit 130, and return the icount
    it names."""
    cmd = [sys.executable, "-m", "urr", "-display", "none", "-kernel", guests["longloop"],
           "-icount", f"shift=7,rr=record,rrfile={rr},rrsnapshot=init", *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        _wait_for_first_chunk(rr, proc)  # inside the ~3.5 s run, after the start-up
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    err = err.decode()
    assert proc.returncode == 130 and "Traceback" not in err, err
    m = re.search(r"^urr: interrupted at icount (\d+); state [0-9a-f]{32}\n\Z", err, re.M)
    assert m, err
    return int(m[1])


def _replays_to(guests, rr: str, where: int) -> None:
    rep = run_urr("-kernel", guests["longloop"], "-icount", f"shift=7,rr=replay,rrfile={rr},rrsnapshot=init")
    assert rep.status == 0, rep.err
    assert rep.note("replay reached the end of the recording at icount") == \
        f"urr: replay reached the end of the recording at icount {where}: interrupted"


def test_ctrl_c_ends_a_recording_cleanly_with_its_snapshots(guests, tmp_path):
    """Ctrl-C: one line, exit 130, a complete log and catalog, and a replay that gets exactly as
    far. The machine stops at a slice boundary (a Ctrl-C raised mid-event once cut a digest)."""
    rr = str(tmp_path / "long.rr")
    where = _interrupt_recording(guests, rr)
    _replays_to(guests, rr, where)
    with Catalog.open_existing(rr + ".db") as catalog:
        periodic = [i.icount for i in catalog.list() if i.kind == "periodic"]
    assert periodic and where - max(periodic) < 2 * 78_125  # snapshots up to the interruption


def test_ctrl_c_before_gdb_attaches_ends_the_recording_cleanly(guests, tmp_path):
    """With -gdb and no GDB yet, the run goes on (as QEMU's does); Ctrl-C ends it the same way."""
    rr = str(tmp_path / "long.rr")
    where = _interrupt_recording(guests, rr, "-gdb", "tcp::0")
    _replays_to(guests, rr, where)


def test_serial_input_with_random_host_timing_replays(guests, tmp_path):
    rr = str(tmp_path / "echo.rr")
    proc = subprocess.Popen([sys.executable, "-m", "urr", "-display", "none", "-kernel", guests["echo"],
                             "-icount", f"shift=7,rr=record,rrfile={rr}"],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    rng = random.Random()  # host timing is meant to be random: the recording must capture it
    ready = proc.stdout.readline()
    assert ready.startswith(b"echo ready")
    for word in ("alpha", "beta", "gamma delta", "quit"):
        for ch in word + "\n":
            time.sleep(rng.uniform(0, 0.03))
            proc.stdin.write(ch.encode())
            proc.stdin.flush()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 33, err
    recorded = ready + out
    assert b"GAMMA DELTA" in recorded
    rep = run_urr("-kernel", guests["echo"], "-icount", f"shift=7,rr=replay,rrfile={rr}", stdin=b"ignored\n")
    assert rep.status == 33
    assert rep.out == recorded
