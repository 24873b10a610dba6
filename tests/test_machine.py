"""The machine as guest programs see it: interrupts at exact icounts, the devices through their
ports, the boot contract, RDRAND/RDSEED, and guest faults and bad input as one line each.

Expected icounts come from the devices' documented timing (the PIT's period, the ATA busy time)
and from the guest's own code as its ELF has it (symbols and a disassembly), never from a run."""
from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Callable, Union

import capstone
import pytest
from elftools.elf.elffile import ELFFile

from cpu.devices.ata import BUSY_ICOUNTS
from cpu.devices.pit import PIT_HZ
from cpu.loader import load_kernel
from cpu.machine import GuestError, Machine
from replay import log as L
from replay.seam import Seam, SeamCore
from tests.conftest import ROOT, Result, run_urr
from urr.options import parse_size

RAM = 16 << 20  # the default -m
_DISASM = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


class GuestCode:
    """A guest ELF's symbols (every named one, labels in inline assembly too) and instructions."""

    def __init__(self, path: str) -> None:
        with open(path, "rb") as f:
            symtab = ELFFile(f).get_section_by_name(".symtab")
            self.symbols = {s.name: s["st_value"] for s in symtab.iter_symbols() if s.name}
        self.segments = load_kernel(path, RAM).segments

    def instructions(self, start: str, end: str) -> list[capstone.CsInsn]:
        """The instructions from label `start` up to label `end`."""
        first, stop = self.symbols[start], self.symbols[end]
        seg = next(s for s in self.segments if s.paddr <= first and stop <= s.paddr + len(s.data))
        code = list(_DISASM.disasm(seg.data[first - seg.paddr:stop - seg.paddr], first))
        assert sum(i.size for i in code) == stop - first, f"{start}..{end} does not disassemble"
        return code


def plain_machine(path: str) -> Machine:
    return Machine(load_kernel(path, RAM), RAM, 7, Seam(SeamCore("plain", lambda: 0)))


def record_and_replay(tmp_path: Path, shift: int, *args: str) -> tuple[Result, str]:
    """Record a run, replay it, check the replay repeats it; the recording's result and log."""
    rr = str(tmp_path / "run.rr")
    rec = run_urr(*args, "-snapshots", "off", "-icount", f"shift={shift},rr=record,rrfile={rr}",
                  stdin=b"")
    rep = run_urr(*args, "-snapshots", "off", "-icount", f"shift={shift},rr=replay,rrfile={rr}")
    assert (rep.status, rep.out, rep.state()) == (rec.status, rec.out, rec.state()), rep.err
    return rec, rr


def lines(result: Result) -> list[str]:
    return result.out.decode(errors="replace").splitlines()


# -- interrupts at exact icounts (guests/irqtime.c) -----------------------------------------------

MEASUREMENTS = {"pit-rate", "pit-rate-halt", "pit-square", "pit-oneshot", "unmask", "sti", "uart",
                "ata"}
HEADER = re.compile(r"irqtime (\S+) source (\S+) mode \d+ reload (\d+) halt ([01]) spin \d+ ticks (\d+)")
TICK = re.compile(r"irqtime (\S+) tick \d+ rip (0x[0-9a-f]+) rcx (\d+)")


def pit_period_end(k: int, reload: int, shift: int) -> int:
    """Icounts from a PIT count load to the end of its k-th period: k * reload clocks of 1/PIT_HZ
    s, in instructions of 2**shift ns, rounded up. (The PIT rounds to a whole ns first; the
    ceiling of a ceiling of a quotient is the ceiling of the whole quotient.)"""
    return -(-k * reload * 10**9 // (PIT_HZ << shift))


def expected_icounts(source: str, reload: int, shift: int, ticks: int, handler: int) -> list[int]:
    """Icounts from the trigger instruction's own icount to each interrupt, by the device's timing."""
    if source == "pit":
        return [pit_period_end(k, reload, shift) for k in range(1, ticks + 1)]
    if source == "ata":
        return [BUSY_ICOUNTS]  # the drive stays busy this long after the command, then interrupts
    # unmask, uart: deliverable right after the trigger; sti: the trigger is the instruction in
    # sti's shadow, taken right after it. A second one comes as the first one's handler returns.
    return [1 + k * handler for k in range(ticks)]


def measured_icounts(code: GuestCode, ticks: list[tuple[int, int]], handler: int) -> list[int]:
    """Icounts from the trigger to each interrupt the guest recorded (RIP, RCX), not counting a
    sleep in hlt: the trigger, then the jmp or hlt after it, the loop's instructions (RCX counts
    its passes) and the runs of the `handler` instructions long handler before this interrupt."""
    loop = [i.address for i in code.instructions("irqtime_loop", "irqtime_loop_end")]
    counts = []
    for k, (rip, rcx) in enumerate(ticks):
        if rip in loop:
            i = loop.index(rip)  # the loop's next instruction: this pass has run i of them
            ran = 1 + len(loop) * (rcx - (1 if i else 0)) + i
        else:  # before the trigger, or right after it
            ran = {code.symbols["irqtime_trigger"]: -1, code.symbols["irqtime_after_trigger"]: 0}[rip]
        counts.append(1 + ran + k * handler)
    return counts


@pytest.mark.parametrize("shift", [0, 7, 10])
def test_interrupts_land_at_the_icount_the_device_implies(guests, disk_image, tmp_path, shift):
    """Each interrupt of irqtime is taken at exactly the icount its device implies, seen from
    the interrupted code itself, and the replay takes them at the same places."""
    rec, _ = record_and_replay(tmp_path, shift, "-kernel", guests["irqtime"],
                               "-drive", f"file={disk_image},format=raw")
    assert rec.status == 33, rec.out.decode() + rec.err
    code = GuestCode(guests["irqtime"])
    handler = len(code.instructions("irqtime_isr", "irqtime_isr_end"))
    headers = {m[1]: m for m in map(HEADER.fullmatch, lines(rec)) if m}
    assert set(headers) == MEASUREMENTS
    for name, h in headers.items():
        ticks = [(int(m[2], 16), int(m[3])) for m in map(TICK.fullmatch, lines(rec)) if m and m[1] == name]
        want = expected_icounts(h[2], int(h[3]), shift, int(h[5]), handler)
        got = measured_icounts(code, ticks, handler)
        if h[4] == "1":
            # Woken from hlt by the first (the trigger and the hlt ran, then it slept); the later
            # ones, taken in the loop, show that it slept exactly until the first was due.
            assert got[0] == 2, name
            got = [g - got[0] + want[0] for g in got]
        assert got == want, f"{name}: interrupts at {got}, due at {want}"


# -- devices through their ports (guests/devices.c) -------------------------------------------------

DEVICE_CHECKS = ["pic-registers", "pic-cascade", "pit-latch", "pit-channel2", "uart-registers",
                 "uart-thre-irq", "rtc", "ata-errors", "ata-nien", "ata-reset", "debugcon", "unclaimed"]


def test_devices_behave_as_a_guest_sees_them(guests, disk_image, tmp_path):
    rec, _ = record_and_replay(tmp_path, 7, "-kernel", guests["devices"],
                               "-drive", f"file={disk_image},format=raw")
    checks = dict(re.fullmatch(r"check (\S+) (.*)", line).groups() for line in lines(rec)
                  if line.startswith("check "))
    assert checks == {name: "ok" for name in DEVICE_CHECKS}
    assert "devices: debugcon" in lines(rec)  # debugcon output reaches standard output
    assert rec.status == 33


# -- the boot contract (guests/boot.c) --------------------------------------------------------------

@pytest.mark.parametrize("size", ["16M", "64M"])
def test_boot_contract_seen_from_the_entry_point(guests, size):
    r = run_urr("-kernel", guests["boot"], "-m", size, stdin=b"")
    state = {k: int(v, 16) for k, v in re.findall(r"\b([a-z0-9]+) (0x[0-9a-f]+|0)\b", r.out.decode())}
    ram = parse_size(size)
    assert state["rdi"] == state["rsp"] == ram and ram % 16 == 0
    assert not state["rflags"] & (1 << 9)  # IF = 0
    assert (state["cs"], state["ss"], state["ds"], state["es"]) == (0x08, 0x10, 0x10, 0x10)
    assert state["efer"] & (1 << 10)  # LMA: long mode active
    assert state["cr0"] & 0x80000023 == 0x80000023 and not state["cr0"] & 4  # PE MP NE PG, EM clear
    assert state["cr4"] & 0x620 == 0x620  # PAE OSFXSR OSXMMEXCPT
    assert (state["mxcsr"], state["fpcw"]) == (0x1F80, 0x37F)
    assert "boot PASS" in lines(r) and r.status == 33, r.out.decode()


# -- RDRAND / RDSEED (guests/rdrand.c) --------------------------------------------------------------

def test_rdrand_values_are_logged_and_replayed(guests, tmp_path):
    rec, rr = record_and_replay(tmp_path, 7, "-kernel", guests["rdrand"])
    assert rec.status == 33, rec.out.decode()
    printed = [m.groups() for m in map(re.compile(r"(?:rdrand|rdseed) (r9|ecx|dx|rax) (0x[0-9a-f]+)").fullmatch,
                                       lines(rec)) if m]
    logged = [r.fields[0] for c in L.LogReader(rr).chunks() for r in c.records if r.kind == L.RANDOM]
    width = {"r9": 64, "ecx": 32, "dx": 16, "rax": 64}
    assert len(printed) == len(logged) == 4
    assert [int(v, 16) for _, v in printed] == [x & ((1 << width[reg]) - 1) for x, (reg, _) in zip(logged, printed)]
    again = run_urr("-kernel", guests["rdrand"], "-icount", f"shift=7,rr=record,rrfile={tmp_path / 'again.rr'}")
    assert again.out != rec.out  # the values come from the host generator, through the log


# -- guest faults (guests/faults.c) -----------------------------------------------------------------

FRAME = 5 * 8  # the 64-bit interrupt frame: RIP CS RFLAGS RSP SS
# fault name: (message, the reported RIP: the guest's label or an address)
FAULTS: dict[str, tuple[str, Union[str, int]]] = {
    "read": (f"guest read of unmapped memory at {RAM:#x}", "fault_rip_read"),
    "write": (f"guest write of unmapped memory at {RAM + 16:#x}", "fault_rip_write"),
    "fetch": (f"guest fetch of unmapped memory at {RAM + 256:#x}", RAM + 256),
    "ud2": ("unhandled exception #UD invalid opcode", "fault_rip_ud2"),
    "div0": ("unhandled exception #DE divide error", "fault_rip_div0"),
    "gp": ("unhandled exception #GP general protection", "fault_rip_gp"),
    "int3": ("unhandled exception #BP breakpoint (int3)", "fault_rip_int3"),
    "halt": ("the guest halted with interrupts disabled and nothing pending", "fault_rip_halt"),
    "sleep": ("the guest halted and nothing can wake it (no timer, no input)", "fault_rip_sleep"),
    "idt": ("interrupt vector 0x20 is beyond the IDT limit 0x0", "fault_rip_idt"),
    "gate": ("no present interrupt gate for vector 0x20", "fault_rip_gate"),
    "handler": (f"guest fetch of unmapped memory at {RAM + 0x2000:#x}", RAM + 0x2000),
    "stack": (f"interrupt stack at {RAM + 4096 - FRAME:#x} is outside RAM", "fault_rip_stack"),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_guest_fault_is_one_line_naming_it_with_icount_and_rip(guests, tmp_path, name):
    path = guests[f"fault-{name}"]
    message, where = FAULTS[name]
    rip = where if isinstance(where, int) else GuestCode(path).symbols[where]
    serial = tmp_path / "serial.txt"  # no host input: nothing could wake a halted guest
    r = run_urr("-kernel", path, "-serial", f"file:{serial}")
    assert r.status == 4 and len(r.err.splitlines()) == 1 and "Traceback" not in r.err, r.err
    m = re.fullmatch(rf"urr: guest fault: {re.escape(message)} \(icount (\d+), rip (0x[0-9a-f]+)\)\n", r.err)
    assert m, r.err
    icount = int(m[1])
    assert int(m[2], 16) == rip
    assert serial.read_bytes().startswith(f"fault: {name}".encode())
    # The icount is exact: a run gets to icount - 1 without the fault, and at icount it is at
    # the reported RIP, or meets the same fault there.
    assert plain_machine(path).run(until=icount - 1).reason == "limit"
    machine = plain_machine(path)
    try:
        stop = machine.run(until=icount)
    except GuestError as e:
        assert (e.icount, e.rip) == (icount, rip)
    else:
        assert (stop.reason, stop.icount, machine.rip()) == ("limit", icount, rip)


@pytest.mark.parametrize("name", list(FAULTS))
def test_replay_meets_the_recorded_fault_again(guests, tmp_path, name):
    """A recording that ended in a guest fault replays into the same fault, same line, same status."""
    path, rr = guests[f"fault-{name}"], str(tmp_path / "f.rr")
    serial = tmp_path / "serial.txt"
    rec = run_urr("-kernel", path, "-serial", f"file:{serial}", "-icount", f"shift=7,rr=record,rrfile={rr}")
    rep = run_urr("-kernel", path, "-serial", f"file:{serial}", "-icount", f"shift=7,rr=replay,rrfile={rr}")
    assert rec.status == 4 and rec.err.startswith("urr: guest fault: "), rec.err
    assert (rep.status, rep.err) == (rec.status, rec.err)


def test_halt_with_interrupts_disabled_does_not_wait_for_input(guests):
    """Input cannot wake `cli; hlt`: the run ends while standard input is still open."""
    p = subprocess.Popen([sys.executable, "-m", "urr", "-display", "none", "-kernel", guests["fault-halt"]],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        status = p.wait(timeout=60)  # stdin stays open; only a hang reaches the timeout
        err = p.stderr.read().decode()
    finally:
        p.kill()
        for stream in (p.stdin, p.stdout, p.stderr):
            stream.close()
    assert status == 4
    assert "interrupts disabled and nothing pending" in err


# -- bad input: one line, status 2 (tests/test_options.py has a missing file, a text file and an
#    unknown option) ------------------------------------------------------------------------------

def _elf32(guests: dict[str, str], tmp: Path) -> list[str]:
    path = tmp / "elf32.elf"  # an ELF32 i386 executable header, no segments
    path.write_bytes(b"\x7fELF\x01\x01\x01" + bytes(9)
                     + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, 0x100000, 0, 0, 0, 52, 32, 0, 40, 0, 0))
    return ["-kernel", str(path)]


def _patched_hello(offset: int, fmt: str, value: int) -> Callable[[dict[str, str], Path], list[str]]:
    def make(guests: dict[str, str], tmp: Path) -> list[str]:
        data = bytearray(Path(guests["hello"]).read_bytes())
        struct.pack_into(fmt, data, offset, value)
        path = tmp / "patched.elf"
        path.write_bytes(bytes(data))
        return ["-kernel", str(path)]
    return make


def _truncated_hello(guests: dict[str, str], tmp: Path) -> list[str]:
    path = tmp / "truncated.elf"
    path.write_bytes(Path(guests["hello"]).read_bytes()[:100])
    return ["-kernel", str(path)]


BAD_INPUT = {
    "elf32": (_elf32, "is a 32-bit or non-x86-64 ELF without a Multiboot header or PVH entry note"),
    "truncated": (_truncated_hello, "is not a valid ELF file"),
    "pie": (_patched_hello(16, "<H", 3), "is not a static executable (e_type ET_DYN)"),  # e_type
    "entry": (_patched_hello(24, "<Q", 0x10), "entry point 0x10 is not in a loaded segment"),  # e_entry
    "too-little-ram": (lambda g, t: ["-kernel", g["hello"], "-m", "1M"], "does not fit in 1048576 bytes of RAM"),
    "directory": (lambda g, t: ["-kernel", str(t)], "cannot read kernel"),
    "disk": (lambda g, t: ["-kernel", g["hello"], "-drive", f"file={t / 'none.img'}"], "cannot open disk image"),
    "serial": (lambda g, t: ["-kernel", g["hello"], "-serial", f"file:{t / 'no' / 'out'}"],
               "cannot open serial output"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line(guests, tmp_path, case):
    make, message = BAD_INPUT[case]
    r = run_urr(*make(guests, tmp_path), stdin=b"")
    assert r.status == 2 and "Traceback" not in r.err
    assert r.err.startswith("urr: ") and len(r.err.splitlines()) == 1 and message in r.err, r.err
