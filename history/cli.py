"""`urr-snap verify | writes | hits | sample`: the whole-recording commands, on the segment runner.

    urr-snap verify RRFILE                       replay from each snapshot to the next and compare
    urr-snap writes RRFILE ADDR[:LEN]            every write to that memory (LEN bytes, default 8)
    urr-snap hits RRFILE ADDR|SYMBOL             every execution of that address
    urr-snap sample RRFILE EXPR --every N        a register or *ADDR[:LEN] every N icounts

Each takes --jobs N (local processes, default every core) or --ray [ADDRESS] (a Ray cluster; no
address: a local one for this command), --kernel ELF (symbols; replaying from boot) and --initrd
(the recorded modules, for a replay from boot).
This module holds no emulator import at its top: `urr-snap list` and the parser load it."""
from __future__ import annotations

import argparse
import csv
import sqlite3
import sys
from typing import Callable


class CommandError(Exception):
    """The command could not run; one line for the user (exit status 2)."""

COMMANDS: dict[str, str] = {
    "verify": "replay between consecutive snapshots and compare",
    "writes": "every write to ADDR[:LEN] over the whole recording",
    "hits": "every execution of an address",
    "sample": "a register or memory value at regular icounts",
}


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    """The arguments of command `name` (RRFILE and --db are the caller's)."""
    if name == "writes":
        p.add_argument("target", metavar="ADDR[:LEN]", help="address or symbol, LEN bytes (default 8)")
    elif name == "hits":
        p.add_argument("target", metavar="ADDR|SYMBOL")
        p.add_argument("--registers", action="store_true", help="the general registers at each hit")
    elif name == "sample":
        p.add_argument("expression", metavar="EXPR", help="a register (rax) or *ADDR[:LEN] (memory)")
        p.add_argument("--every", metavar="ICOUNTS", required=True, type=_icounts)
    if name != "verify":
        p.add_argument("--csv", action="store_true", help="comma-separated output with a header")
    p.add_argument("--kernel", metavar="ELF", help="the recorded kernel (symbols; replay from boot)")
    p.add_argument("--initrd", metavar="FILE[,FILE...]",
                   help="the recorded -initrd modules (replay from boot; default: the recorded paths, "
                        "or their names beside RRFILE)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--jobs", "-j", metavar="N", type=_positive, help="local processes (default: every core)")
    where.add_argument("--ray", metavar="ADDRESS", nargs="?", const="",
                       help="run segments as Ray tasks on the cluster at ADDRESS (none: a local one)")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive number")
    return value


def _icounts(text: str) -> int:
    """10000, 0x1000, 1e6, 2M, 500k."""
    scale = {"k": 10**3, "m": 10**6, "g": 10**9}.get(text[-1:].lower(), 1)
    try:
        value = int(float(text[:-1] if scale > 1 else text) * scale) if "x" not in text else int(text, 0)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive icount")
    return value


def run(args: argparse.Namespace) -> int:
    """Run one of COMMANDS; problems become one-line CommandErrors."""
    try:
        from history.recording import Recording
        from history.runner import SegmentFailed
    except ImportError as e:
        raise CommandError(f"{args.command} needs the emulator, which cannot be loaded ({e})") from None
    try:
        rec = Recording(args.rrfile, args.kernel, args.db, note=lambda text: print(f"urr-snap: {text}", file=sys.stderr),
                        initrd=args.initrd)
        return _COMMANDS[args.command](rec, args)
    except BrokenPipeError:
        raise  # the reader went away: `urr-snap` ends quietly
    except (SegmentFailed, ValueError, OSError, sqlite3.Error) as e:
        raise CommandError(str(e)) from None


def _options(args: argparse.Namespace) -> dict:
    return {"jobs": args.jobs, "ray": args.ray, "progress": True}


def _verify(rec, args: argparse.Namespace) -> int:
    from history.verify import first_mismatch_text

    text = first_mismatch_text(rec.verify(**_options(args)))
    if text:
        print(f"urr-snap: {text}", file=sys.stderr)
        return 1
    print("all snapshots match their replay" if len(rec.snapshots) >= 2
          else "the recording replays to its end as recorded")
    return 0


def _table(args: argparse.Namespace, header: list[str], rows: list[list[str]], text: Callable[[list[str]], str]) -> None:
    if args.csv:
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(header)
        out.writerows(rows)
    else:
        for row in rows:
            print(text(row))


def _span(rec, target: str) -> tuple[int, int]:
    from debugger.symbols import parse_number

    where, colon, length = target.rpartition(":")
    return (rec.address(where), parse_number(length, "length", minimum=1)) if colon else (rec.address(target), 8)


def _writes(rec, args: argparse.Namespace) -> int:
    addr, length = _span(rec, args.target)
    found = rec.writes(addr, length, **_options(args))
    rows = [[str(w.icount), f"{w.rip:#x}", rec.symbols.where(w.rip), w.instruction, w.old.hex(" "), w.new.hex(" ")]
            for w in found]
    _table(args, ["icount", "rip", "where", "instruction", "old", "new"], rows,
           lambda r: f"icount {r[0]}  {r[2]}:  {r[3]}\n  old {r[4]}\n  new {r[5]}")
    if not args.csv:
        print(f"{len(found)} writes to {rec.symbols.where(addr)} ({length} bytes)")
    return 0


def _hits(rec, args: argparse.Namespace) -> int:
    addr = rec.address(args.target)
    found = rec.hits(addr, args.registers, **_options(args))
    names = list(found[0].registers) if found and found[0].registers else []
    rows = [[str(h.icount), *(f"{h.registers[n]:#x}" for n in names)] for h in found]
    _table(args, ["icount", *names], rows,
           lambda r: "  ".join([f"icount {r[0]}", *(f"{n} {v}" for n, v in zip(names, r[1:]))]))
    if not args.csv:
        print(f"{len(found)} executions of {rec.symbols.where(addr)}")
    return 0


def _sample(rec, args: argparse.Namespace) -> int:
    found = rec.sample(args.expression, args.every, **_options(args))
    _table(args, ["icount", args.expression], [[str(s.icount), f"{s.value:#x}"] for s in found],
           lambda r: f"{r[0]:>14}  {r[1]}")
    return 0


_COMMANDS = {"verify": _verify, "writes": _writes, "hits": _hits, "sample": _sample}
