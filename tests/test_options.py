"""QEMU-style option parsing and the launcher's error handling."""
from __future__ import annotations

import subprocess
import sys

import pytest

from urr.options import UsageError, parse_args, parse_size


def test_full_command_line():
    o = parse_args(["-kernel", "g.elf", "-m", "64M", "-drive", "file=d.img,format=raw",
                    "-serial", "file:out.txt", "-icount", "shift=5,sleep=on,rr=record,rrfile=r.rr,rrsnapshot=init",
                    "-display", "none", "-s", "-S"])
    assert (o.kernel, o.ram_size, o.drive, o.serial) == ("g.elf", 64 << 20, "d.img", "file:out.txt")
    assert (o.shift, o.sleep, o.rr, o.rrfile, o.rrsnapshot) == (5, True, "record", "r.rr", "init")
    assert o.gdb == "tcp::1234" and o.freeze


def test_defaults_and_help():
    o = parse_args(["-kernel", "g.elf"])
    assert (o.ram_size, o.shift, o.rr, o.serial) == (16 << 20, 7, "plain", "stdio")
    assert parse_args(["-kernel", "g.elf", "-h"]) is None


@pytest.mark.parametrize("text,size", [("16M", 16 << 20), ("1G", 1 << 30), ("32", 32 << 20), ("2048K", 2 << 20)])
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("argv,message", [
    ([], "no guest"),
    (["-kernel"], "needs a value"),
    (["-kernel", "g", "-m", "lots"], "bad memory size"),
    (["-kernel", "g", "-icount", "shift=99"], "shift must be"),
    (["-kernel", "g", "-icount", "shift=7,rr=record"], "needs rrfile"),
    (["-kernel", "g", "-icount", "shift=7,rr=sideways,rrfile=x"], "record or replay"),
    (["-kernel", "g", "-icount", "shift=7,bogus=1"], "unknown -icount option"),
    (["-kernel", "g", "-drive", "file=x,format=qcow2"], "only raw"),
    (["-kernel", "g", "-serial", "tcp:1"], "not supported"),
    (["-kernel", "g", "-frobnicate"], "unknown option"),
    (["-kernel", "g", "-loadvm", "x"], "needs -icount"),
])
def test_bad_options(argv, message):
    with pytest.raises(UsageError, match=message):
        parse_args(argv)


def run_urr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "urr", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args,message", [
    (["-kernel", "/nonexistent.elf"], "cannot read kernel"),
    (["-kernel", "/etc/hostname"], "is not a supported format"),
    (["-frob"], "unknown option"),
])
def test_launcher_errors_are_one_line(args, message):
    r = run_urr(*args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
