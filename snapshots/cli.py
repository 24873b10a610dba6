"""`urr-snap`: inspect and maintain snapshot catalogs, as qemu-img does for QEMU's images.

    urr-snap list RRFILE            snapshots as an aligned table
    urr-snap info RRFILE [NAME]     catalog summary, or one snapshot's details
    urr-snap delete RRFILE NAME     delete a snapshot (its unshared pages go at the next gc)
    urr-snap gc RRFILE              free content no snapshot refers to
    urr-snap verify RRFILE          replay from each snapshot to the next and compare
    urr-snap writes|hits|sample     whole-history queries (history.cli)
    urr-snap upgrade RRFILE         convert a format-1 catalog to the current format in place

The catalog is RRFILE.db unless --db PATH is given. Errors are one line on stderr: exit status 2
when the command could not run, 1 when verify finds a mismatch. The commands that replay live in
history.cli, above the snapshots: imported here only to parse and dispatch them."""
from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from typing import Callable, Optional

from history import cli as history_cli
from snapshots.catalog import Catalog, CatalogError


class UsageError(Exception):
    """A problem with what was asked, reported as one line."""


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def seconds(ns: int) -> str:
    return f"{ns / 1e9:.3f} s"


def cmd_list(catalog: Catalog, args: argparse.Namespace) -> int:
    from tabulate import tabulate

    rows = [(i.name, i.icount, seconds(i.vtime_ns), i.kind, i.pages, human_bytes(i.bytes))
            for i in catalog.list()]
    print(tabulate(rows, headers=["name", "icount", "virtual time", "kind", "pages", "bytes"],
                   colalign=("left", "right", "right", "left", "right", "right"), disable_numparse=True))
    return 0


def _fields(pairs: list[tuple[str, object]]) -> None:
    for label, value in pairs:
        print(f"{label:<14}{value}")


def lineage(rrfile: str) -> Optional[str]:
    """Where a branch's recording came from, from its log header (None if not a branch, or no
    readable log is there)."""
    from replay.log import LogError, LogReader

    try:
        parent = LogReader(rrfile).config.get("parent")
    except LogError:
        return None
    if not isinstance(parent, dict):
        return None
    start = f", from its snapshot '{parent['snapshot']}'" if parent.get("snapshot") else ""
    return (f"branch of {parent.get('rrfile')} (recording {parent.get('recording_id')}) "
            f"at icount {parent.get('icount')}{start}")


def debugger_writes(rrfile: str) -> Optional[str]:
    """What the log holds of a debugger's writes made while recording (GDB's `set var`, logged
    and made again by every replay): None if none, or no readable log is there."""
    from replay import log as L

    try:
        kinds = [r.kind for c in L.LogReader(rrfile).chunks() for r in c.records
                 if r.kind in (L.MEMWRITE, L.REGWRITE)]
    except L.LogError:
        return None
    if not kinds:
        return None
    memory, registers = kinds.count(L.MEMWRITE), kinds.count(L.REGWRITE)
    where = f": `urr-snap writes {rrfile} ADDR[:LEN]` lists those to an address" if memory else ""
    return f"{memory} writes to memory, {registers} to registers, made while recording (replays make them again){where}"


def cmd_info(catalog: Catalog, args: argparse.Namespace) -> int:
    if args.name:
        snap = catalog.load(args.name)
        info = next(i for i in catalog.list() if i.name == snap.name)
        _fields([("name", snap.name), ("kind", snap.kind), ("icount", snap.icount),
                 ("virtual time", f"{snap.vtime_ns / 1e9:.9f} s"),
                 ("rip", f"{snap.cpu['rip']:#x}" if isinstance(snap.cpu.get("rip"), int) else "?"),
                 ("RAM pages", f"{len(snap.pages)} non-zero of {snap.ram_size // 4096}"),
                 ("disk overlay", f"{len(snap.disk)} sectors"),
                 ("log position", ", ".join(f"{k} {v}" for k, v in snap.log_pos.items())),
                 ("bytes", f"{human_bytes(info.bytes)} added to the catalog when saved")])
        return 0
    s = catalog.stats()
    garbage = sum(n for _, n in s.garbage)
    parent, written = lineage(args.rrfile), debugger_writes(args.rrfile)
    _fields([("catalog", catalog.path), ("recording", catalog.recording_id),
             *([("parent", parent)] if parent else []),
             *([("debugger", written)] if written else []),
             ("snapshots", f"{sum(s.kinds.values())} ({', '.join(f'{k} {n}' for k, n in s.kinds.items())})"),
             ("content", f"{s.blobs} pages and sectors, {human_bytes(s.stored_bytes)} stored "
                         f"({human_bytes(s.raw_bytes)} before lz4)"),
             ("dedup ratio", f"{s.dedup_ratio:.1f}x ({s.references} references to {s.referenced} contents)"),
             ("page trees", f"{s.nodes} nodes, {human_bytes(s.node_bytes)} stored; shared "
                            f"{s.tree_sharing:.1f}x ({s.node_references} references)"
                            + (f", {s.garbage_nodes} unreferenced" if s.garbage_nodes else "")),
             ("unreferenced", f"{len(s.garbage)} ({human_bytes(garbage)})"
                              + (": `urr-snap gc` frees them" if s.garbage else ""))])
    return 0


def cmd_delete(catalog: Catalog, args: argparse.Namespace) -> int:
    if not catalog.delete(args.name):
        raise UsageError(f"no snapshot named '{args.name}' in {catalog.path}")
    print(f"deleted {args.name}; `urr-snap gc` frees the content only it used")
    return 0


def cmd_gc(catalog: Catalog, args: argparse.Namespace) -> int:
    removed, freed = catalog.gc()
    print(f"removed {removed} unreferenced pages, {human_bytes(freed)} freed")
    return 0


def cmd_upgrade(path: str) -> int:
    """Runs on the file, not on an open catalog: opening refuses the old format."""
    from snapshots.upgrade import upgrade

    converted, nodes = upgrade(path)
    if converted or nodes:
        print(f"upgraded {path}: {converted} snapshots now page trees ({nodes} tree nodes stored)")
    else:
        print(f"{path} is already in the current format")
    return 0


COMMANDS: dict[str, tuple[Callable[[Catalog, argparse.Namespace], int], str]] = {
    "list": (cmd_list, "snapshots as an aligned table"),
    "info": (cmd_info, "catalog summary, or one snapshot's details"),
    "delete": (cmd_delete, "delete a snapshot"),
    "gc": (cmd_gc, "free content no snapshot refers to"),
}
# Commands on the file itself, which must not be opened as a catalog first.
FILE_COMMANDS: dict[str, tuple[Callable[[str], int], str]] = {
    "upgrade": (cmd_upgrade, "convert a format-1 catalog to the current format in place"),
}


READ_ONLY = frozenset(("list", "info"))  # commands that open the catalog read-only


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="urr-snap", description="Inspect and maintain urr snapshot catalogs.")
    p.add_argument("--db", metavar="PATH", help="catalog path (default: RRFILE.db)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    texts = ({name: text for name, (_, text) in {**COMMANDS, **FILE_COMMANDS}.items()}
             | history_cli.COMMANDS)
    for name, text in texts.items():
        s = sub.add_parser(name, help=text, description=text)
        s.add_argument("rrfile", metavar="RRFILE")
        s.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS, help="catalog path (default: RRFILE.db)")
        if name == "info":
            s.add_argument("name", nargs="?", metavar="NAME")
        elif name == "delete":
            s.add_argument("name", metavar="NAME")
        elif name in history_cli.COMMANDS:
            history_cli.add_arguments(name, s)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command in history_cli.COMMANDS:  # they open the recording themselves
            return history_cli.run(args)
        if args.command in FILE_COMMANDS:
            return FILE_COMMANDS[args.command][0](args.db or f"{args.rrfile}.db")
        with Catalog.open_existing(args.db or f"{args.rrfile}.db", cache_blobs=0,
                                   read_only=args.command in READ_ONLY) as catalog:
            return COMMANDS[args.command][0](catalog, args)
    except BrokenPipeError:  # the reader went away (`urr-snap list X | head`): as other tools, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    except (CatalogError, UsageError, history_cli.CommandError, OSError, sqlite3.Error) as e:
        print(f"urr-snap: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("urr-snap: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
