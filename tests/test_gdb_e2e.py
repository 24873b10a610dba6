"""Debian's GDB against `urr -gdb` replaying (or recording) the example guests built with -g.

Each test starts urr with `-gdb tcp::0` (the kernel picks a free port on 127.0.0.1, urr prints
it), runs `gdb -batch` with a list of commands, and asserts on what GDB printed: names, lines and
values from the guest's DWARF, `$pc`, and urr's `monitor info replay` positions. Probes print
`@pc=...` lines; expected values come from the ELF, the C source or an in-process replay.
Last, malformed packets from a raw client, since GDB never sends them."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Optional

import pytest

from debugger.tdesc import G_PACKET_SIZE
from debugger.timeline import Timeline
from tests.conftest import ROOT, run_urr
from tests.test_gdbstub import Client, Served
from tests.replays import Recording, recorded, source_line  # noqa: F401  (recorded is a fixture)

GDB = shutil.which("gdb")
pytestmark = pytest.mark.skipif(GDB is None, reason="gdb is not installed")

PC = 'printf "@pc=%#lx\\n", $pc'  # a probe: the PC as one parseable line
WHERE = "monitor info replay"  # prints "Recording position: icount N"
NO_HISTORY = "No more reverse-execution history."
STARTUP = 60  # seconds for urr to start listening, on a slow machine
SESSION = 300  # seconds for one GDB session
DEBUGCON_C = os.path.join(ROOT, "sdk", "debugcon.c")


@dataclass
class GdbRun:
    out: str  # GDB's stdout and stderr, in order
    status: int  # urr's exit status once GDB has gone
    urr_err: str  # urr's standard error

    def pcs(self) -> list[int]:
        return [int(v, 16) for v in re.findall(r"^@pc=(0x[0-9a-f]+)$", self.out, re.M)]

    def icounts(self) -> list[int]:
        return [int(v) for v in re.findall(r"^Recording position: icount (\d+)$", self.out, re.M)]

    def lines(self, source: str) -> list[int]:
        """Line numbers of `source` (a file name) in GDB's frame lines, in order."""
        return [int(n) for n in re.findall(rf" at (?:\S*/)?{re.escape(source)}:(\d+)$", self.out, re.M)]

    def listed(self) -> list[int]:
        """The numbers of the source lines GDB listed at each stop after connecting, in order."""
        return [int(n) for n in re.findall(r"^(\d+)\t", self.out, re.M)][1:]


def _listening_port(proc: subprocess.Popen, err_path: str) -> int:
    deadline = time.monotonic() + STARTUP
    while time.monotonic() < deadline:
        with open(err_path) as f:
            m = re.search(r"^urr: waiting for gdb on 127\.0\.0\.1:(\d+)$", f.read(), re.M)
        if m:
            return int(m.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    with open(err_path) as f:
        raise AssertionError(f"urr did not start listening on 127.0.0.1:\n{f.read()}")


def run_gdb(rec: Recording, commands: list[str], tmp_path, mode: str = "replay",
            rrfile: Optional[str] = None, freeze: bool = True) -> GdbRun:
    """GDB with `commands` against urr serving `rec` (`rrfile` instead of rec's for a new
    recording), from its start (-S) or not; urr is killed if it has not ended by itself after
    GDB detached."""
    args = rec.urr_args(mode) if rrfile is None else ["-kernel", rec.kernel, "-icount",
                                                      f"shift=7,rr={mode},rrfile={rrfile},rrsnapshot=init"]
    urr_args = ("-S",) if freeze else ()
    err_path = str(tmp_path / f"urr-{time.monotonic_ns()}.err")
    with open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "urr", "-display", "none", "-serial", "none", *args,
                                 "-gdb", "tcp::0", *urr_args], cwd=ROOT, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        port = _listening_port(proc, err_path)
        argv = [GDB, "-nx", "-batch", "-ex", f"file {rec.kernel}", "-ex", f"target remote 127.0.0.1:{port}"]
        for command in commands:  # "{port}": urr's (for a `target remote` again)
            argv += ["-ex", command.replace("{port}", str(port))]
        gdb = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=SESSION)
        status = proc.wait(timeout=SESSION)  # a detach runs the guest on to its end
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with open(err_path) as f:
        return GdbRun(gdb.stdout, status, f.read())


def value(out: str, expression: str) -> str:
    """What GDB printed for `print EXPRESSION` (it echoes nothing, so the commands are tagged
    with echo lines `@EXPRESSION`)."""
    m = re.search(rf"^@{re.escape(expression)}\n\$\d+ = (.*)$", out, re.M)
    assert m, f"no value for {expression} in:\n{out}"
    return m.group(1)


def show(expression: str) -> list[str]:
    return [f"echo @{expression}\\n", f"print {expression}"]


@pytest.fixture(scope="module")
def corrupt(recorded) -> Recording:  # noqa: F811
    return recorded("corrupt")


@pytest.fixture(scope="module")
def hello(recorded) -> Recording:  # noqa: F811
    return recorded("hello")


def test_break_continue_show_dwarf_names_lines_and_values(corrupt, tmp_path):
    """The first transfer: GDB names the function and its arguments, the source line, the
    caller; the globals it prints are what the replay has in RAM there; a detach runs on to the
    guest's exit."""
    run = run_gdb(corrupt, ["break transfer", "continue", PC, "bt", WHERE, *show("transfers"),
                            *show("journal_next"), *show("accounts[1].balance")], tmp_path)
    transfer_line = corrupt.source_line("if (from == to || accounts[from].balance < amount)")
    assert re.search(rf"^Breakpoint 1, transfer \(from=.*\) at corrupt\.c:{transfer_line}$", run.out, re.M), run.out
    assert run.pcs() == [corrupt.elf.addr("transfer")]
    call_line = corrupt.source_line("transfer(r % NACCOUNTS")
    assert re.search(rf"^#1  0x[0-9a-f]+ in kmain \(.*\) at corrupt\.c:{call_line}$", run.out, re.M), run.out
    (icount,) = run.icounts()
    with Timeline.for_replay(corrupt.rrfile, corrupt.kernel, snapshot="init") as tl:
        tl.seek(icount)
        for name, size in (("transfers", 8), ("journal_next", 4)):
            assert value(run.out, name) == str(int.from_bytes(tl.read_memory(corrupt.elf.addr(name), size), "little"))
        balance = tl.read_memory(corrupt.elf.addr("accounts") + 24 + 16, 8)  # struct account: name[16], balance
    assert value(run.out, "accounts[1].balance") == str(int.from_bytes(balance, "little", signed=True))
    assert run.status == corrupt.status  # detached: replayed to the end


def test_stepi_and_reverse_stepi_retrace_the_same_instructions(corrupt, tmp_path):
    run = run_gdb(corrupt, ["break journal_append", "continue", PC, WHERE,
                            *[c for _ in range(3) for c in ("stepi", PC, WHERE)],
                            *[c for _ in range(3) for c in ("reverse-stepi", PC, WHERE)]], tmp_path)
    pcs, icounts = run.pcs(), run.icounts()
    assert pcs[:4] == [i.address for i in corrupt.elf.code("journal_append")[:4]]
    assert pcs[4:] == pcs[2::-1] and icounts[4:] == icounts[2::-1]
    assert icounts[:4] == list(range(icounts[0], icounts[0] + 4))


def test_reverse_step_goes_to_the_previous_source_line(corrupt, tmp_path):
    """journal_append's three lines: step forward twice, then back line by line."""
    run = run_gdb(corrupt, ["break journal_append", "continue", "step", "step", "reverse-step",
                            "reverse-step", PC], tmp_path)
    store, increment, compare = (corrupt.source_line(t) for t in (
        "journal[journal_next] = entry;", "journal_next++;", "if (journal_next > JOURNAL_LEN)"))
    assert run.listed() == [store, increment, compare, increment, store], run.out
    assert run.pcs() == [corrupt.elf.addr("journal_append")]


def test_reverse_step_enters_the_call_it_goes_back_over(hello, tmp_path):
    """From the line after `debugcon_puts(...)`, reverse-step stops inside debugcon_puts, at its
    last line, then at the line before."""
    after = hello.source_line('printf("goodbye\\n")')
    run = run_gdb(hello, [f"break hello.c:{after}", "continue", "reverse-step", PC, "bt", "reverse-step", PC],
                  tmp_path)
    assert [hello.elf.function_at(pc) for pc in run.pcs()] == ["debugcon_puts", "debugcon_puts"]
    loop = source_line(DEBUGCON_C, "while (*s) debugcon_putc(*s++);")
    assert run.listed() == [after, loop + 1, loop], run.out  # "}" then the loop
    assert re.search(rf"^#1  0x[0-9a-f]+ in kmain \(.*\) at hello\.c:{after - 1}$", run.out, re.M), run.out


def test_reverse_next_steps_back_over_calls(hello, tmp_path):
    goodbye = hello.source_line('printf("goodbye\\n")')
    debugcon = hello.source_line("debugcon_puts(")
    check = hello.source_line('printf("printf check')
    run = run_gdb(hello, [f"break hello.c:{goodbye}", "continue", WHERE, "reverse-next", PC, WHERE,
                          "reverse-next", PC, WHERE], tmp_path)
    assert run.listed() == [goodbye, debugcon, check], run.out
    assert all(hello.elf.function_at(pc) == "kmain" for pc in run.pcs())
    (call,) = hello.elf.calls("kmain", "debugcon_puts")
    insns = [i.address for i in hello.elf.code("kmain")]
    assert run.pcs()[0] == insns[insns.index(call.address) - 1]  # the line's first instruction
    icounts = run.icounts()
    assert icounts[0] - icounts[1] > 2 * len(b"hello from urr on debugcon\n")  # the loop was replayed


def test_reverse_nexti_steps_back_over_a_call(hello, tmp_path):
    (call,) = hello.elf.calls("kmain", "debugcon_puts")
    ret = call.address + call.size
    run = run_gdb(hello, [f"break *{ret:#x}", "continue", WHERE, "reverse-stepi", PC, "stepi", PC,
                          "reverse-nexti", PC, WHERE], tmp_path)
    into, back, over = run.pcs()
    assert hello.elf.function_at(into) == "debugcon_puts" and back == ret
    assert over == call.address
    at_ret, at_call = run.icounts()
    assert at_ret - at_call > 2


def test_reverse_finish_returns_to_the_call_site(hello, tmp_path):
    """From inside the first printf() (two lines in), back to kmain's `call printf`. (The
    breakpoint goes first: GDB would stop at a user breakpoint on the function's entry.)"""
    run = run_gdb(hello, ["break printf", "continue", "delete", "next", "next", PC, "reverse-finish", PC, "bt"],
                  tmp_path)
    inside, back = run.pcs()
    call = hello.elf.calls("kmain", "printf")[0]
    assert hello.elf.function_at(inside) == "printf" and inside != hello.elf.addr("printf")
    assert back == call.address, run.out
    line = hello.source_line('printf("Hello from urr')
    assert re.search(rf"^#0  {call.address:#018x} in kmain \(.*\) at hello\.c:{line}$", run.out, re.M), run.out


def test_reverse_continue_to_earlier_breakpoints_then_the_start(corrupt, tmp_path):
    run = run_gdb(corrupt, ["break kmain", "break transfer", "continue", WHERE, "continue", WHERE,
                            "continue", WHERE, "continue", WHERE,
                            "reverse-continue", WHERE, "delete 2", "reverse-continue", WHERE, PC,
                            "reverse-continue", WHERE, PC], tmp_path)
    forward, back = run.icounts()[:4], run.icounts()[4:]
    assert back == [forward[2], forward[0], 0]
    assert re.findall(r"^Breakpoint (\d), (\w+)", run.out, re.M) == [
        ("1", "kmain"), ("2", "transfer"), ("2", "transfer"), ("2", "transfer"), ("2", "transfer"), ("1", "kmain")]
    assert run.out.count(NO_HISTORY) == 1
    assert run.pcs() == [corrupt.elf.addr("kmain"), corrupt.elf.entry]


def test_watch_then_reverse_continue_finds_the_corrupting_store(corrupt, tmp_path):
    """The demo: from report_corruption, `watch total_checks` and reverse-continue stop at the
    store in journal_append that wrote past the end of journal[]."""
    run = run_gdb(corrupt, ["break report_corruption", "continue", *show("checks_made"), "watch total_checks",
                            "reverse-continue", PC, "bt", *show("journal_next"),
                            *show("&journal[journal_next] == &total_checks"), *show("total_checks"), "stepi",
                            *show("total_checks")], tmp_path)
    found, expected = re.search(r"^Breakpoint 1, report_corruption \(found=(\d+), expected=(\d+)\)",
                                run.out, re.M).groups()
    assert value(run.out, "checks_made") == expected != found
    assert re.search(rf"^Hardware watchpoint 2: total_checks\n\nOld value = {found}\nNew value = {expected}\n"
                     r"journal_append \(entry=.*\) at corrupt\.c:(\d+)$", run.out, re.M), run.out
    line = run.lines("corrupt.c")[-1]
    with open(os.path.join(ROOT, "guests", "corrupt.c")) as f:
        assert "BUG" in f.readlines()[line - 1]
    (pc,) = run.pcs()
    assert corrupt.elf.function_at(pc) == "journal_append"
    assert re.search(r"^#1  0x[0-9a-f]+ in transfer \(", run.out, re.M), run.out
    journal_len = re.search(r"#define JOURNAL_LEN (\d+)", open(os.path.join(ROOT, "guests", "corrupt.c")).read())
    assert value(run.out, "journal_next") == journal_len.group(1)
    assert value(run.out, "&journal[journal_next] == &total_checks") == "1"
    assert re.findall(r"^@total_checks\n\$\d+ = (\d+)$", run.out, re.M) == [expected, found]


def test_watch_forward_stops_after_the_write(corrupt, tmp_path):
    run = run_gdb(corrupt, ["break kmain", "continue", "watch total_checks", "continue", PC], tmp_path)
    old, new = map(int, re.search(r"^Hardware watchpoint 2: total_checks\n\nOld value = (\d+)\nNew value = (\d+)$",
                                  run.out, re.M).groups())
    assert new == old + 1
    assert corrupt.elf.function_at(run.pcs()[0]) == "check_books"


def test_start_and_end_of_the_recording(hello, tmp_path):
    """-S: GDB finds the machine at its first instruction; going back from there, and forward
    from the end, GDB says there is no more history; from the end one can go back."""
    run = run_gdb(hello, [PC, WHERE, "reverse-stepi", PC, WHERE, "continue", WHERE, "reverse-stepi", WHERE,
                          "continue", WHERE], tmp_path)
    assert run.pcs() == [hello.elf.entry, hello.elf.entry]
    assert run.icounts() == [0, 0, hello.icount, hello.icount - 1, hello.icount]
    assert run.out.count(NO_HISTORY) == 3, run.out
    assert "exited" not in run.out
    assert run.status == hello.status


def test_without_S_the_replay_runs_until_gdb_comes(hello, tmp_path):
    """hello's replay ends long before GDB can connect (a run notices a connection only every
    2M instructions): GDB finds it at the end, one step back is the guest's exit `out`."""
    run = run_gdb(hello, [WHERE, "reverse-stepi", WHERE, PC], tmp_path, freeze=False)
    assert run.icounts() == [hello.icount, hello.icount - 1]
    (pc,) = run.pcs()
    assert next(i for i in hello.elf.code("_start") if i.address == pc).mnemonic == "out"
    assert run.status == hello.status  # the detach replayed the exit again


def test_without_S_a_recording_that_ends_before_gdb_comes_ends_urr(hello, tmp_path):
    rrfile = str(tmp_path / "alone.rr")
    r = run_urr("-kernel", hello.kernel, "-serial", "none", "-icount", f"shift=7,rr=record,rrfile={rrfile}",
                "-gdb", "tcp::0")
    assert r.status == hello.status and re.match(r"urr: waiting for gdb on 127\.0\.0\.1:\d+\n", r.err), r.err
    replay = run_urr("-kernel", hello.kernel, "-serial", "none", "-icount", f"shift=7,rr=replay,rrfile={rrfile}")
    assert replay.status == hello.status and f"replayed {hello.icount} instructions" in replay.note("replayed")


def test_monitor_commands(corrupt, tmp_path):
    with Timeline.for_replay(corrupt.rrfile, corrupt.kernel, snapshot="init") as tl:
        stop = tl.cont()  # the end, for a position to seek to
        seek_to, seek_pc = stop.icount // 3, tl.seek(stop.icount // 3).pc
    forward, backward = 100_000, 20_000
    run = run_gdb(corrupt, [WHERE, f"monitor replay_break {forward}", "continue", WHERE,
                            f"monitor replay_seek {seek_to}", "maintenance flush register-cache", PC, WHERE,
                            "monitor info snapshots", f"monitor replay_break {backward}", "reverse-continue", WHERE,
                            "monitor replay_delete_break", "reverse-continue", WHERE,
                            "monitor replay_seek abc", "monitor replay_break", "monitor frobnicate",
                            "maintenance packet m zz,4", PC], tmp_path)
    assert run.icounts() == [0, forward, seek_to, backward, 0]
    assert f"urr: replay breakpoint: icount {forward}" in run.out
    assert f"urr: replay breakpoint: icount {backward}" in run.out
    assert f"at icount {seek_to}, pc {seek_pc:#x}" in run.out
    assert run.pcs() == [seek_pc, corrupt.elf.entry]
    assert re.search(rf"^\d+ snapshots; position icount {seek_to}\n  init +icount +0 ", run.out, re.M), run.out
    assert "error: bad icount 'abc'" in run.out and "error: usage: replay_break ICOUNT" in run.out
    assert "unknown monitor command 'frobnicate'" in run.out
    assert 'received: "E01"' in run.out  # a malformed packet, and the session goes on


def test_record_mode_debugs_forward_and_refuses_reverse(hello, tmp_path):
    """In a recording GDB is not offered reverse execution; the recording made under GDB replays."""
    rrfile = str(tmp_path / "under-gdb.rr")
    run = run_gdb(hello, ["break kmain", "continue", PC, WHERE, "reverse-stepi", "stepi", PC, WHERE,
                          "monitor replay_seek 1"], tmp_path, mode="record", rrfile=rrfile)
    assert re.search(r"^Breakpoint 1, kmain \(", run.out, re.M), run.out
    assert "Target remote does not support this command." in run.out
    kmain = hello.elf.code("kmain")
    assert run.pcs() == [kmain[0].address, kmain[1].address]
    first, second = run.icounts()
    assert second == first + 1
    assert "error: reverse execution needs a replay" in run.out
    assert run.status == hello.status
    replay = run_urr("-kernel", hello.kernel, "-serial", "none", "-icount",
                     f"shift=7,rr=replay,rrfile={rrfile},rrsnapshot=init")
    assert replay.status == hello.status, replay.err
    assert f"replayed {hello.icount} instructions" in replay.note("replayed")


@pytest.mark.parametrize("packet, reply", [
    ("m zz,4", "E01"), ("mffffffffffffffff,8", "E14"), ("m-1,4", "E01"), ("M100000,4:zz", "E01"),
    ("M7fffffff,1:00", "E14"), ("X100000,4:", "E01"), ("P10=zz", "E01"), ("Pff=00", "E01"), ("p1000", "E01"),
    ("G00", "E01"), ("qRcmd,zz", "E01"), ("vCont;q", "E01"), ("s zz", "E01"), ("Z9,0,0", ""), ("Z2,-1,8", "E01"),
    ("qXfer:features:read:foo.xml:0,10", "E00"),
])
def test_stub_answers_bad_packets_on_a_real_replay(hello, packet, reply, caplog):
    """An error reply, nothing logged (the stub logs unexpected exceptions), and the session goes on."""
    with Timeline.for_replay(hello.rrfile, hello.kernel, snapshot="init") as tl:
        served = Served(tl)
        client = Client(served.server.port)
        try:
            assert client.ask(packet) == reply
            assert len(client.ask("g")) == 2 * G_PACKET_SIZE
            assert client.ask("s") == "T05thread:01;" and tl.icount == 1
            client.send("D")
            assert client.reply() == "OK" and served.ended() == "detach"
        finally:
            client.close()
            served.server.close()
    assert not [r.getMessage() for r in caplog.records if r.name == "debugger.gdbstub"]
