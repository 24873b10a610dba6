"""`urr-cc`: gcc for urr guests with a real C library (musl), like musl-gcc for Linux.

    urr-cc -O2 -g -o prog.elf prog.c -lm

Compiles against musl's headers and links musl's static libc.a with the SDK's entry code and
system-call layer (sdk/libc/) and the SDK's linker script (the image at 1 MiB): the result is an
ELF64 guest for the boot contract's long-mode entry. `main(argc, argv)` gets the command line
(-kernel's file name, then -append's words); its return value v ends the run with urr's exit
status (v << 1) | 1. The SDK objects are compiled once per SDK version and compiler, into a
cache directory ($XDG_CACHE_HOME/urr-cc, else ~/.cache/urr-cc)."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import sdk

SDK_DIR = Path(sdk.__file__).resolve().parent
# musl's Debian (musl-dev) layout first, then musl's own default prefix.
MUSL_LAYOUTS = (("/usr/include/x86_64-linux-musl", "/usr/lib/x86_64-linux-musl"),
                ("/usr/lib/musl/include", "/usr/lib/musl/lib"))
# Every guest object: static, not PIE, CFI in .debug_frame for GDB's unwinder. The red zone is
# gcc's default, as in musl's own code: interrupts go to the SDK's IST stack (sdk/idt.c), and
# the SYSCALL entry steps over it (sdk/libc/syscall_entry.S).
GUEST_FLAGS = ["-fno-pie", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables"]
# The SDK's own objects, as guests/Makefile builds the SDK: no SSE (the system-call layer must
# not touch the program's SSE state), no calls gcc would invent.
SDK_FLAGS = ["-O2", "-g", "-std=gnu11", "-ffreestanding", "-fno-builtin", "-mgeneral-regs-only",
             "-fno-stack-protector", "-fcf-protection=none", "-fno-tree-loop-distribute-patterns"]
SDK_SOURCES = ("crt0.S", "libc/syscall_entry.S", "libc/start.c", "libc/syscalls.c", "serial.c", "rtc.c",
               "idt.c", "ist.c", "isr.S", "pic.c", "pit.c")
LINK_FLAGS = ["-static", "-nostdlib", "-no-pie", "-Wl,--build-id=none", "-Wl,-z,noexecstack",
              "-Wl,-z,norelro", "-Wl,--no-dynamic-linker"]
NO_LINK = {"-c", "-S", "-E", "-M", "-MM"}


class CcError(RuntimeError):
    """Something urr-cc itself cannot do; one line for the user."""


def musl_paths() -> tuple[str, str]:
    for include, lib in MUSL_LAYOUTS:
        if os.path.exists(os.path.join(lib, "libc.a")) and os.path.isdir(include):
            return include, lib
    raise CcError("musl's C library is not installed (Debian: apt-get install musl-dev)")


def _gcc_output(gcc: str, *args: str) -> str:
    return subprocess.run([gcc, *args], capture_output=True, text=True, check=True).stdout.strip()


def compile_flags(gcc: str) -> list[str]:
    include, _ = musl_paths()
    return ["-nostdinc", "-isystem", include, "-isystem", _gcc_output(gcc, "-print-file-name=include"),
            *GUEST_FLAGS]


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "urr-cc"


def sdk_objects(gcc: str) -> list[str]:
    """The SDK's entry and system-call objects, compiled once per source version and compiler."""
    key = hashlib.sha256()
    key.update(_gcc_output(gcc, "--version").encode())
    key.update(" ".join(SDK_FLAGS + GUEST_FLAGS).encode())
    for name in sorted(SDK_SOURCES) + ["urr.h"]:
        key.update(name.encode() + (SDK_DIR / name).read_bytes())
    cache = _cache_root() / key.hexdigest()[:20]
    objects = [str(cache / (Path(name).name.replace(".", "_") + ".o")) for name in SDK_SOURCES]
    if all(os.path.exists(o) for o in objects):
        return objects
    cache.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=cache.parent))
    try:
        for name, obj in zip(SDK_SOURCES, objects):
            cmd = [gcc, *SDK_FLAGS, *GUEST_FLAGS, f"-I{SDK_DIR}", "-c", "-o",
                   str(scratch / Path(obj).name), str(SDK_DIR / name)]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode:
                raise CcError(f"building the SDK's {name} failed:\n{result.stderr}")
        try:
            os.rename(scratch, cache)  # atomic: a concurrent build of the same key may win
        except OSError:
            if not cache.exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return objects


def command(args: list[str], gcc: str = "gcc") -> list[str]:
    """The gcc command line urr-cc runs for `args` (gcc's own options)."""
    cmd = [gcc, *compile_flags(gcc)]
    if NO_LINK & set(args):
        return cmd + args
    _, lib = musl_paths()
    return (cmd + LINK_FLAGS + [f"-Wl,-T,{SDK_DIR / 'link.ld'}", *sdk_objects(gcc), f"{lib}/crti.o"]
            + args + [f"-L{lib}", "-Wl,--start-group", "-lc", "-lgcc", "-Wl,--end-group", f"{lib}/crtn.o"])


def main(argv: Optional[list[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: urr-cc [gcc options] -o GUEST.elf SOURCES... [-lm]  (see docs/replay.md)",
              file=sys.stderr)
        return 2
    gcc = os.environ.get("URR_CC_GCC", "gcc")
    try:
        cmd = command(args, gcc)
    except (CcError, OSError, subprocess.CalledProcessError) as e:
        print(f"urr-cc: {e}", file=sys.stderr)
        return 2
    return subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main())
