"""Booting: the CPU state a guest starts in (floating point at the first instruction), the boot
formats QEMU's -kernel takes, and bad kernels as one line each.

Expected values are computed here (Python's IEEE doubles) or read from the guests' ELFs."""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys

import capstone
import pytest
from elftools.elf.elffile import ELFFile

from replay import log as L
from tests.conftest import ROOT, run_urr
from tests.test_machine import lines, record_and_replay


def _verify(rr: str) -> None:
    """urr-snap verify: every snapshot of the recording restores to the straight replay's state."""
    verify = subprocess.run([sys.executable, "-m", "snapshots.cli", "verify", rr], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def _bits(d: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", d))[0]


def test_sse_and_x87_work_from_the_first_instruction(guests, tmp_path):
    """guests/fpu.c is built with plain -O2 (SSE doubles, a vectorised loop) and uses the x87."""
    rec, _ = record_and_replay(tmp_path, 7, "-kernel", guests["fpu"])
    values = dict(re.fullmatch(r"fpu (\S+) (0x[0-9a-f]+)", line).groups() for line in lines(rec))
    basel = 0.0
    for k in range(1, 1001):
        basel += 1.0 / (float(k) * k)
    x = 1.0
    for _ in range(6):
        x = (x + 2.0 / x) / 2.0
    assert {k: int(v, 16) for k, v in values.items()} == {
        "basel": _bits(basel), "newton": _bits(x), "inf": _bits(float("inf")), "x87": _bits(1.0),
        "vec": sum(i * i for i in range(4096)) & 0xFFFFFFFF}
    assert rec.status == 33


def test_fpu_guest_snapshots_verify(guests, tmp_path):
    """Snapshots of a guest with live SSE/x87 state restore to the same state (urr-snap verify)."""
    rr = str(tmp_path / "fpu.rr")
    rec = run_urr("-kernel", guests["fpu"], "-snapshots", "1ms:1s,1ms",
                  "-icount", f"shift=7,rr=record,rrfile={rr},rrsnapshot=init")
    assert rec.status == 33, rec.err
    _verify(rr)


# -- Multiboot and PVH kernels (tests/kernels: entered in 32-bit protected mode, they switch to
#    long mode themselves) ---------------------------------------------------------------------

KERNELS = os.path.join(ROOT, "tests", "kernels")
KERNEL_FLAGS = ["-O2", "-g", "-ffreestanding", "-nostdlib", "-static", "-fno-pie", "-no-pie",
                "-mno-red-zone", "-mgeneral-regs-only", "-fno-asynchronous-unwind-tables",
                f"-Wl,-T,{os.path.join(ROOT, 'sdk', 'link.ld')}", "-Wl,-e,entry32", "-Wl,--build-id=none",
                "-Wl,-z,noexecstack"]
MODULE_TEXT = b"first module line\nsecond line\n"


@pytest.fixture(scope="module")
def kernels(tmp_path_factory) -> dict[str, str]:
    """The boot-format kernel built with gcc as a Multiboot (a.out kludge), a Multiboot 2 (ELF)
    and a PVH kernel, and a 32-bit ELF Multiboot kernel (tick32)."""
    out = tmp_path_factory.mktemp("kernels")
    built = {}
    for fmt in ("multiboot", "multiboot2", "pvh"):
        path = str(out / f"{fmt}.elf")
        subprocess.run(["gcc", *KERNEL_FLAGS, f"-D{fmt.upper()}", "-o", path,
                        os.path.join(KERNELS, "entry32.S"), os.path.join(KERNELS, "kernel.c")],
                       check=True, capture_output=True)
        built[fmt] = path
    built["tick32"] = str(out / "tick32.elf")  # ELF32, stays in 32-bit mode, takes interrupts
    subprocess.run(["gcc", "-m32", "-nostdlib", "-static", "-no-pie", "-Wl,-Ttext=0x100000", "-Wl,-e,start",
                    "-Wl,--build-id=none", "-o", built["tick32"], os.path.join(KERNELS, "tick32.S")],
                   check=True, capture_output=True)
    module = out / "module.txt"
    module.write_bytes(MODULE_TEXT)
    built["module"] = str(module)
    return built


def _symbol(path: str, name: str) -> int:
    with open(path, "rb") as f:
        return ELFFile(f).get_section_by_name(".symtab").get_symbol_by_name(name)[0]["st_value"]


@pytest.mark.parametrize("fmt", ["multiboot", "multiboot2", "pvh"])
def test_boot_format_kernel_gets_its_information_and_replays(kernels, tmp_path, fmt):
    """Entered in 32-bit protected mode with EAX/EBX as the format says; the command line, the
    memory map and the module reach the kernel; it switches to long mode itself; the replay
    ends in the same state."""
    args = ["-kernel", kernels[fmt], "-m", "32M", "-append", "one two",
            "-initrd", f"{kernels['module']} mod-arg"]
    rec, _ = record_and_replay(tmp_path, 7, *args)
    out = lines(rec)
    magic = {"multiboot": 0x2BADB002, "multiboot2": 0x36D76289, "pvh": 0}[fmt]  # PVH: nothing in EAX
    usable = 0x9FC00 + (32 << 20) - (1 << 20)  # the memory map: conventional memory and above 1 MiB
    assert out == [f"kernel magic {magic:#018x}", f"kernel cmdline {fmt}.elf one two",
                   f"kernel module {kernels['module']} mod-arg {MODULE_TEXT.splitlines()[0].decode()}",
                   f"kernel memory {usable:#018x}", "kernel long mode r15 0x1122334455667788"]
    assert rec.status == 33


@pytest.mark.parametrize("fmt", ["multiboot", "multiboot2", "pvh"])
def test_boot_format_snapshots_in_32_and_64_bit_mode_verify(kernels, tmp_path, fmt):
    """Snapshots taken before (32-bit protected mode) and after the guest's switch to long mode
    restore to the state a straight replay reaches (the mode with its hidden segment state)."""
    rr = str(tmp_path / "k.rr")
    rec = run_urr("-kernel", kernels[fmt], "-snapshots", "1ms:1s,1ms",
                  "-icount", f"shift=10,rr=record,rrfile={rr},rrsnapshot=init")
    assert rec.status == 33, rec.err
    _verify(rr)
    listed = subprocess.run([sys.executable, "-m", "snapshots.cli", "list", rr], cwd=ROOT,
                            capture_output=True, text=True, timeout=300).stdout
    assert len(re.findall(r"^auto-", listed, re.M)) >= 3  # some in each mode: the switch is at ~3.5k


def test_32_bit_kernel_takes_interrupts_records_replays_and_restores(kernels, tmp_path):
    """tick32 stays in 32-bit protected mode: the PIT's interrupts come through its 32-bit IDT
    gates (EFLAGS, CS, EIP pushed; iret returns); exactly its 5 ticks are logged, the replay ends
    in the same state, and snapshots taken between ticks restore to the straight replay's state."""
    rec, rr = record_and_replay(tmp_path, 7, "-kernel", kernels["tick32"])
    assert lines(rec) == ["tick32 ticks 5"] and rec.status == 33
    irqs = [r.fields[0] for c in L.LogReader(rr).chunks() for r in c.records if r.kind == L.IRQ]
    assert irqs == [0x20] * 5
    rr2 = str(tmp_path / "snap.rr")
    r = run_urr("-kernel", kernels["tick32"], "-snapshots", "1ms:1s,1ms",
                "-icount", f"shift=7,rr=record,rrfile={rr2},rrsnapshot=init")
    assert r.status == 33, r.err
    _verify(rr2)


def _multiboot_image(tmp_path, fields: tuple[int, ...], flags: int = 0x10003,
                     checksum: int | None = None) -> str:
    """A file with a Multiboot header at offset 0 (a.out kludge fields as given) and code after."""
    if checksum is None:
        checksum = -(0x1BADB002 + flags) & 0xFFFFFFFF
    path = tmp_path / "mb.bin"
    path.write_bytes(struct.pack("<III5I", 0x1BADB002, flags, checksum, *fields) + b"\xf4" * 64)
    return str(path)


def _multiboot2_image(tmp_path, tags: list[tuple[int, int, bytes]], checksum_delta: int = 0) -> str:
    """A file with a Multiboot 2 header at offset 8 (its tags as given, then the end tag) and
    HLTs after it: (type, flags, body) per tag."""
    body = b"".join(struct.pack("<HHI", kind, flags, 8 + len(data)) + data + bytes(-len(data) % 8)
                    for kind, flags, data in tags) + struct.pack("<HHI", 0, 0, 8)
    length = 16 + len(body)
    checksum = (-(0xE85250D6 + length) + checksum_delta) & 0xFFFFFFFF
    path = tmp_path / "mb2.bin"
    path.write_bytes(bytes(8) + struct.pack("<IIII", 0xE85250D6, 0, length, checksum) + body + b"\xf4" * 0x400)
    return str(path)


def _mb2_address(header: int, load: int, load_end: int, bss_end: int, entry: int) -> list[tuple[int, int, bytes]]:
    """Address and entry tags of a kernel loaded at 1 MiB."""
    return [(2, 0, struct.pack("<4I", header, load, load_end, bss_end)), (3, 0, struct.pack("<I", entry))]


MB2_AT_1M = _mb2_address(0x100008, 0x100000, 0, 0, 0x100200)

BAD_KERNELS = {
    "text file": (lambda k, t: ["-kernel", os.path.join(ROOT, "README.md")],
                  "is not a supported format"),
    "bad checksum": (lambda k, t: ["-kernel", _multiboot_image(t, (0x100000, 0x100000, 0, 0, 0x100020),
                                                               checksum=0x1234)],
                     "Multiboot header at offset 0x0 has a bad checksum"),
    "load above header": (lambda k, t: ["-kernel", _multiboot_image(t, (0x100000, 0x100010, 0, 0, 0x100020))],
                          "impossible Multiboot addresses: load_addr 0x100010 above header_addr"),
    "load end past file": (lambda k, t: ["-kernel", _multiboot_image(t, (0x100000, 0x100000, 0x200000, 0, 0x100020))],
                           "load_end_addr 0x200000 is not within the file"),
    "entry outside": (lambda k, t: ["-kernel", _multiboot_image(t, (0x100000, 0x100000, 0, 0, 0x300000))],
                      "Multiboot entry point 0x300000 is not in a loaded segment"),
    "unknown flags": (lambda k, t: ["-kernel", _multiboot_image(t, (0x100000, 0x100000, 0, 0, 0x100020),
                                                                flags=0x10010)],
                      "requires features urr does not know (flags 0x10)"),
    "mb2 bad checksum": (lambda k, t: ["-kernel", _multiboot2_image(t, MB2_AT_1M, checksum_delta=1)],
                         "Multiboot 2 header at offset 0x8 has a bad checksum"),
    "mb2 load above header": (lambda k, t: ["-kernel", _multiboot2_image(t, _mb2_address(0x100008, 0x100010, 0, 0, 0x100200))],
                              "impossible Multiboot addresses: load_addr 0x100010 above header_addr"),
    "mb2 bss below load end": (lambda k, t: ["-kernel", _multiboot2_image(t, _mb2_address(0x100008, 0x100000, 0, 0x100010, 0x100200))],
                               "bss_end_addr 0x100010 is below load_end_addr"),
    "mb2 entry outside": (lambda k, t: ["-kernel", _multiboot2_image(t, _mb2_address(0x100008, 0x100000, 0, 0, 0x400000))],
                          "Multiboot 2 entry point 0x400000 is not in a loaded segment"),
    "mb2 does not fit": (lambda k, t: ["-kernel", _multiboot2_image(t, _mb2_address(0x100008, 0x100000, 0, 0xF0000000, 0x100200))],
                         "does not fit in"),
    "mb2 unknown info": (lambda k, t: ["-kernel", _multiboot2_image(t, [(1, 0, struct.pack("<3I", 1, 6, 99))] + MB2_AT_1M)],
                         "requests information of unsupported type 99"),
    "mb2 framebuffer": (lambda k, t: ["-kernel", _multiboot2_image(t, [(5, 0, struct.pack("<3I", 640, 480, 32))] + MB2_AT_1M)],
                        "requires a framebuffer"),
    "mb2 console": (lambda k, t: ["-kernel", _multiboot2_image(t, [(4, 0, struct.pack("<I", 1))] + MB2_AT_1M)],
                    "requires a console"),
    "mb2 efi": (lambda k, t: ["-kernel", _multiboot2_image(t, [(7, 0, b"")] + MB2_AT_1M)],
                "requires EFI boot services"),
    "mb2 unknown tag": (lambda k, t: ["-kernel", _multiboot2_image(t, [(42, 0, b"")] + MB2_AT_1M)],
                        "has tag 42, which urr does not support"),
    "mb2 address without entry": (lambda k, t: ["-kernel", _multiboot2_image(t, MB2_AT_1M[:1])],
                                  "address tag but no entry address tag"),
    "mb2 not relocatable there": (lambda k, t: ["-kernel", _multiboot2_image(
                                      t, [(10, 0, struct.pack("<4I", 0x200000, 0x400000, 0x1000, 0))] + MB2_AT_1M)],
                                  "outside its range 0x200000-0x400000"),
    "mb2 not i386": (lambda k, t: ["-kernel", _mb2_arch(t)], "is for architecture 4, not i386"),
    "pvh note outside": (lambda k, t: ["-kernel", _patched_pvh_note(k, t)],
                         "PVH entry note 0x5000000 is not in a loaded segment"),
    "initrd too big": (lambda k, t: ["-kernel", k["multiboot"], "-m", "2M", "-initrd", _big_file(t)],
                       "does not fit in RAM"),
    "initrd plain elf64": (lambda k, t: ["-kernel", os.path.join(ROOT, "guests", "build", "hello.elf"),
                                         "-initrd", k["module"]], "-initrd needs a Multiboot or PVH kernel"),
}


def _mb2_arch(tmp) -> str:
    path = tmp / "mips.bin"
    path.write_bytes(struct.pack("<IIIIHHI", 0xE85250D6, 4, 24, -(0xE85250D6 + 4 + 24) & 0xFFFFFFFF, 0, 0, 8))
    return str(path)


def test_optional_multiboot2_tags_are_ignored_and_a_minimal_kernel_halts(tmp_path):
    """Optional tags urr cannot honour (a framebuffer, an unknown tag) do not stop the boot; the
    kernel (HLTs loaded at 1 MiB from the address tag) is entered at its entry tag's address."""
    image = _multiboot2_image(tmp_path, [(5, 1, struct.pack("<3I", 640, 480, 32)), (42, 1, b"")] + MB2_AT_1M)
    r = run_urr("-kernel", image, stdin=b"")
    assert "halted with interrupts disabled" in r.err and "rip 0x100201)" in r.err, r.err


def _patched_pvh_note(kernels: dict[str, str], tmp) -> str:
    raw = bytearray(open(kernels["pvh"], "rb").read())
    entry = _symbol(kernels["pvh"], "entry32")
    note = raw.index(b"Xen\0" + struct.pack("<I", entry))
    raw[note + 4:note + 8] = struct.pack("<I", 0x5000000)
    path = tmp / "pvh-bad.elf"
    path.write_bytes(bytes(raw))
    return str(path)


def _big_file(tmp) -> str:
    path = tmp / "big.img"
    path.write_bytes(bytes(2 << 20))
    return str(path)


@pytest.mark.parametrize("case", list(BAD_KERNELS))
def test_bad_kernel_is_one_line_and_exit_2(kernels, guests, tmp_path, case):
    make, message = BAD_KERNELS[case]
    r = run_urr(*make(kernels, tmp_path), stdin=b"")
    assert r.status == 2 and "Traceback" not in r.err
    assert r.err.startswith("urr: ") and len(r.err.splitlines()) == 1 and message in r.err, r.err


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
def test_gdb_in_32_bit_code_gets_the_i386_description_and_amd64_after_reconnecting(kernels, tmp_path):
    """GDB attached at the Multiboot entry (32-bit protected mode, -S) gets the i386 target
    description although the symbol file is an ELF64: `x/i` disassembles the 32-bit code as
    capstone does in 32-bit mode, EAX/EBX are as Multiboot passes them, CS is the 32-bit code
    selector; stepi and reverse-stepi move by the 32-bit instructions' lengths; a watchpoint
    stops after the instruction that writes its variable. At a breakpoint
    after the guest's switch to long mode urr says the connection keeps its registers; a
    `disconnect` and `target remote` again give the amd64 description, R15-sized registers and
    64-bit disassembly."""
    from tests.replays import Recording
    from tests.test_gdb_e2e import run_gdb

    rrfile = str(tmp_path / "mb.rr")
    rec = run_urr("-kernel", kernels["multiboot"], "-icount", f"shift=7,rr=record,rrfile={rrfile},rrsnapshot=init")
    assert rec.status == 33, rec.err
    recording = Recording("multiboot", kernels["multiboot"], rrfile, 0, rec.status, rec.out)
    regs = 'printf "@pc=%#lx eax=%#x cs=%#x\\n", $pc, $eax, $cs'
    run = run_gdb(recording, ["show architecture", "x/3i $pc", regs, "stepi", regs, "stepi", regs, "reverse-stepi",
                              regs, f"watch *(int *){_symbol(kernels['multiboot'], 'boot_info'):#x}", "continue", regs,
                              "delete",
                              "break entry64", "continue", "disconnect", "target remote 127.0.0.1:{port}",
                              "show architecture", "x/2i $pc", "stepi", 'printf "@rax=%#lx r15=%#lx\\n", $rax, $r15'],
                  tmp_path)
    entry = _symbol(kernels["multiboot"], "entry32")
    with open(kernels["multiboot"], "rb") as f:
        text = ELFFile(f).get_section_by_name(".text")
        base, data = text["sh_addr"], text.data()
    code32 = list(capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32).disasm(data[entry - base:entry - base + 32], entry))
    first, second, third = code32[:3]
    archs = re.findall(r'The target architecture is set to "auto" \(currently "([^"]+)"\)', run.out)
    assert archs == ["i386", "i386:x86-64"], run.out
    listed = re.findall(r"^(?:=>)?\s+(0x[0-9a-f]+) <[^>]+>:\t(\S+)", run.out, re.M)
    assert [(int(a, 16), m) for a, m in listed[:3]] == [(i.address, i.mnemonic) for i in code32[:3]], run.out
    entry64 = _symbol(kernels["multiboot"], "entry64")
    code64 = list(capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64).disasm(data[entry64 - base:entry64 - base + 16], entry64))
    assert [(int(a, 16), m) for a, m in listed[3:5]] == [(i.address, i.mnemonic) for i in code64[:2]], run.out
    stops = re.findall(r"^@pc=(0x[0-9a-f]+) eax=(0x[0-9a-f]+) cs=(0x[0-9a-f]+)$", run.out, re.M)
    assert [(int(pc, 16), int(cs, 16)) for pc, _, cs in stops] == [
        (first.address, 0x18), (second.address, 0x18), (third.address, 0x18), (second.address, 0x18),
        (third.address, 0x18)], run.out  # the last: the watchpoint on boot_info, written by the second
    assert re.search(r"^Hardware watchpoint \d+: \*\(int \*\)0x", run.out, re.M), run.out
    assert int(stops[0][1], 16) == 0x2BADB002
    assert "urr: the CPU is in 64-bit long mode now; this connection keeps its i386 registers" in run.out
    assert re.search(r"^@rax=0x10 r15=0$", run.out, re.M), run.out  # mov $0x10, %eax ran in 64-bit code; R15 readable


def test_segment_runner_replays_a_kernel_with_modules_from_boot(kernels, tmp_path):
    """urr-snap replays a recording of a Multiboot kernel with an -initrd module from boot: the
    module is found at its recorded path or given with --initrd, and must have the recorded
    content; what the guest saw (the module's command line) is the recorded one."""
    from tests.test_history import one_line_error, snap

    module = tmp_path / "mod.txt"
    shutil.copy(kernels["module"], module)
    rr = str(tmp_path / "mods.rr")
    rec = run_urr("-kernel", kernels["multiboot"], "-initrd", f"{module} arg", "-snapshots", "off",
                  "-icount", f"shift=7,rr=record,rrfile={rr}")
    assert rec.status == 33, rec.err
    found = snap("verify", rr, "--kernel", kernels["multiboot"])
    assert found.returncode == 0, found.stderr
    assert found.stdout == "the recording replays to its end as recorded\n"
    hits = snap("hits", rr, "module", "--kernel", kernels["multiboot"])
    assert hits.returncode == 0 and "\n1 executions of " in "\n" + hits.stdout, hits.stderr
    moved = tmp_path / "elsewhere.txt"
    module.rename(moved)
    one_line_error(snap("verify", rr, "--kernel", kernels["multiboot"]), "give the -initrd modules")
    given = snap("verify", rr, "--kernel", kernels["multiboot"], "--initrd", f"{moved} other-args")
    assert given.returncode == 0, given.stderr
    moved.write_bytes(b"changed\n")
    one_line_error(snap("verify", rr, "--kernel", kernels["multiboot"], "--initrd", str(moved)),
                   "the modules differ from those")
