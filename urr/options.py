"""QEMU-style command-line options for the `urr` launcher."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional


class UsageError(ValueError):
    """A bad command line; the message is one line for the user."""


USAGE = """\
usage: urr -kernel GUEST.elf [options]

  -kernel FILE            the guest: ELF64 x86-64, Multiboot or ELF with a PVH note (see the boot
                          contract in docs/replay.md)
  -append CMDLINE         the guest's command line (after the kernel's file name)
  -initrd FILE[,FILE...]  Multiboot modules / the PVH initrd
  -m SIZE                 RAM size: 16M (default), 64M, 1G; a plain number means MiB
  -drive file=IMG[,format=raw][,if=ide]
                          raw disk image on the primary ATA channel (never modified: writes
                          go to an overlay)
  -serial stdio|file:PATH|none
                          COM1 output (and, for stdio, input from standard input)
  -icount shift=N[,sleep=on|off][,rr=record|replay,rrfile=FILE[,rrsnapshot=NAME]]
                          virtual time: each instruction is 2^N ns; record or replay
  -snapshots POLICY       periodic snapshots while recording/replaying: 'off', or tiers
                          like '10ms:1s,100ms' (default: '100ms' recording, that replaying)
  -loadvm NAME            replay: start from the named snapshot; with -branch-from: the
                          snapshot of the parent recording the branch starts from
  -branch-from OLD.rr     record a branch of OLD.rr from its snapshot -loadvm NAME
                          (rr=record,rrfile=NEW.rr; OLD.rr and OLD.rr.db are only read)
  -overwrite              a branch may replace an existing NEW.rr and NEW.rr.db
  -gdb tcp:[HOST]:PORT    GDB remote stub (127.0.0.1 unless HOST is given); -s = tcp::1234
  -S                      freeze the machine until the debugger continues
  -debugger               open the built-in debugger console
  -display none           accepted for QEMU compatibility
  -h, -help               this text

Exit status: the guest's (isa-debug-exit: (v<<1)|1, always odd), 0 when a replay reaches
the end record of a recording that did not end with an exit, or from urr: 2 bad command line or
input file, 4 guest fault, 6 replay divergence, 8 a replay reached the end of an incomplete
recording (no end record), 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP, 141 standard output closed."""


@dataclass
class Options:
    kernel: str = ""
    append: Optional[str] = None
    initrd: Optional[str] = None
    ram_size: int = 16 << 20
    drive: Optional[str] = None
    serial: str = "stdio"
    shift: int = 7
    sleep: bool = False
    rr: str = "plain"
    rrfile: Optional[str] = None
    rrsnapshot: Optional[str] = None
    snapshots: Optional[str] = None  # None: the default for the mode (snapshots.policy)
    loadvm: Optional[str] = None
    gdb: Optional[str] = None
    freeze: bool = False
    debugger: bool = False
    branch_from: Optional[str] = None
    overwrite: bool = False
    extra: dict = field(default_factory=dict)


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)([KMGkmg]?)[Bb]?", text.strip())
    if not m:
        raise UsageError(f"bad memory size '{text}' (use e.g. 16M or 1G)")
    n, unit = int(m.group(1)), m.group(2).upper() or "M"
    size = n << {"K": 10, "M": 20, "G": 30}[unit]
    if size < (1 << 20) or size % 4096:
        raise UsageError(f"memory size '{text}' must be at least 1M and a multiple of 4K")
    return size


def parse_suboptions(text: str, what: str) -> dict[str, str]:
    out = {}
    for part in text.split(","):
        if not part:
            continue
        key, eq, value = part.partition("=")
        if not eq:
            raise UsageError(f"bad {what} option '{part}' (expected key=value)")
        out[key] = value
    return out


def _icount(opts: Options, text: str) -> None:
    sub = parse_suboptions(text if "=" in text.split(",")[0] else f"shift={text}", "-icount")
    for key, value in sub.items():
        if key == "shift":
            if not value.isdigit() or not 0 <= int(value) <= 10:
                raise UsageError(f"-icount shift must be an integer from 0 to 10, not '{value}'")
            opts.shift = int(value)
        elif key == "sleep":
            if value not in ("on", "off"):
                raise UsageError(f"-icount sleep must be on or off, not '{value}'")
            opts.sleep = value == "on"
        elif key == "rr":
            if value not in ("record", "replay"):
                raise UsageError(f"-icount rr must be record or replay, not '{value}'")
            opts.rr = value
        elif key == "rrfile":
            opts.rrfile = value
        elif key == "rrsnapshot":
            opts.rrsnapshot = value
        elif key == "align":
            pass
        else:
            raise UsageError(f"unknown -icount option '{key}'")
    if opts.rr != "plain" and not opts.rrfile:
        raise UsageError("-icount rr=... needs rrfile=FILE")


# Options whose value is kept as given (checked later, with the rest of the command line).
STORED_AS_GIVEN = {"-kernel": "kernel", "-append": "append", "-initrd": "initrd", "-loadvm": "loadvm",
                   "-gdb": "gdb", "-snapshots": "snapshots", "-branch-from": "branch_from"}


def parse_args(argv: list[str]) -> Optional[Options]:
    """Options from argv, or None when help was asked for."""
    opts = Options()
    it = iter(argv)
    takes_value = {"-m", "-drive", "-serial", "-icount", "-display", *STORED_AS_GIVEN}
    for arg in it:
        if arg in ("-h", "-help", "--help"):
            return None
        if arg in takes_value:
            value = next(it, None)
            if value is None:
                raise UsageError(f"option {arg} needs a value")
            if arg in STORED_AS_GIVEN:
                setattr(opts, STORED_AS_GIVEN[arg], value)
            elif arg == "-m":
                opts.ram_size = parse_size(value.split(",")[0].removeprefix("size="))
            elif arg == "-drive":
                sub = parse_suboptions(value, "-drive")
                if "file" not in sub:
                    raise UsageError("-drive needs file=IMG")
                if sub.get("format", "raw") != "raw":
                    raise UsageError(f"-drive format '{sub['format']}' is not supported (only raw)")
                if sub.get("if", "ide") != "ide":
                    raise UsageError(f"-drive if='{sub['if']}' is not supported (only ide)")
                opts.drive = sub["file"]
            elif arg == "-serial":
                if value not in ("stdio", "none", "null") and not value.startswith("file:"):
                    raise UsageError(f"-serial '{value}' is not supported (stdio, file:PATH, none)")
                opts.serial = value
            elif arg == "-icount":
                _icount(opts, value)
            elif arg == "-display":
                if value != "none":
                    raise UsageError("only -display none is supported")
        elif arg == "-s":
            opts.gdb = "tcp::1234"
        elif arg == "-S":
            opts.freeze = True
        elif arg == "-debugger":
            opts.debugger = True
        elif arg == "-overwrite":
            opts.overwrite = True
        else:
            raise UsageError(f"unknown option '{arg}' (see urr -h)")
    if not opts.kernel:
        raise UsageError("no guest given: use -kernel GUEST.elf (see urr -h)")
    if opts.branch_from is not None:
        if opts.rr != "record" or not opts.loadvm:
            raise UsageError("-branch-from OLD.rr needs -icount ...,rr=record,rrfile=NEW.rr and -loadvm NAME")
        if opts.rrsnapshot:
            raise UsageError("a branch's first snapshot is named 'branch': rrsnapshot= does not go with -branch-from")
    elif opts.loadvm and opts.rr != "replay":
        raise UsageError("-loadvm needs -icount ...,rr=replay (or -branch-from OLD.rr)")
    if opts.overwrite and opts.branch_from is None:
        raise UsageError("-overwrite goes with -branch-from (a plain recording always replaces its rrfile)")
    return opts
