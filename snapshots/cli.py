"""`urr-snap`: inspect and maintain snapshot catalogs, as qemu-img does for QEMU's images.

    urr-snap list RRFILE            snapshots as an aligned table
    urr-snap info RRFILE [NAME]     catalog summary, or one snapshot's details
    urr-snap delete RRFILE NAME     delete a snapshot (its pages go at the next gc)
    urr-snap gc RRFILE              free content no snapshot refers to
    urr-snap verify RRFILE          replay from each snapshot to the next and compare

The catalog is RRFILE.db unless --db PATH is given. Errors: one line, exit status 2."""
from __future__ import annotations

import argparse
import sys
from typing import Optional

from tabulate import tabulate
from tqdm import tqdm

from replay.log import LogError
from snapshots.catalog import Catalog, CatalogError


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def cmd_list(catalog: Catalog, args) -> int:
    rows = [(i.name, i.icount, f"{i.vtime_ns / 1e9:.3f} s", i.kind, i.pages, human_bytes(i.bytes))
            for i in catalog.list()]
    print(tabulate(rows, headers=["name", "icount", "virtual time", "kind", "pages", "bytes"],
                   colalign=("left", "right", "right", "left", "right", "right")))
    return 0


def cmd_info(catalog: Catalog, args) -> int:
    if args.name:
        snap = catalog.load(args.name)
        print(f"name          {snap.name}\nkind          {snap.kind}\nicount        {snap.icount}\n"
              f"virtual time  {snap.vtime_ns / 1e9:.6f} s\nrip           {snap.cpu.get('rip', 0):#x}\n"
              f"RAM pages     {len(snap.pages)} non-zero of {snap.ram_size // 4096}\n"
              f"disk overlay  {len(snap.disk)} sectors\nlog position  {snap.log_pos}")
        return 0
    infos = catalog.list()
    blobs, stored, raw = catalog.db.execute(
        "SELECT count(*), coalesce(sum(length(data)), 0), coalesce(sum(size), 0) FROM blobs").fetchone()
    referenced = sum(i.pages for i in infos)
    print(f"catalog       {catalog.path}\nrecording     {catalog.recording_id}\n"
          f"snapshots     {len(infos)} ({', '.join(f'{k} {n}' for k, n in _kinds(infos))})\n"
          f"pages stored  {blobs} ({human_bytes(stored)} compressed, {human_bytes(raw)} raw)\n"
          f"pages used    {referenced} by all snapshots: dedup ratio "
          f"{referenced / blobs if blobs else 0:.1f}x")
    return 0


def _kinds(infos) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for i in infos:
        counts[i.kind] = counts.get(i.kind, 0) + 1
    return sorted(counts.items())


def cmd_delete(catalog: Catalog, args) -> int:
    catalog.load(args.name)  # a clear error for an unknown name
    catalog.delete([args.name])
    print(f"deleted {args.name}")
    return 0


def cmd_gc(catalog: Catalog, args) -> int:
    removed, freed = catalog.gc()
    print(f"removed {removed} unreferenced pages, {human_bytes(freed)} freed")
    return 0


def cmd_verify(catalog: Catalog, args) -> int:
    from replay.verify import first_mismatch_text, verify_catalog

    catalog.close()
    problems = verify_catalog(args.rrfile, args.db or f"{args.rrfile}.db",
                              lambda it: tqdm(it, desc="verify", unit="interval", file=sys.stderr,
                                              disable=not sys.stderr.isatty()))
    text = first_mismatch_text(problems)
    if text:
        print(f"urr-snap: {text}", file=sys.stderr)
        return 1
    print("all snapshots match their replay")
    return 0


COMMANDS = {"list": cmd_list, "info": cmd_info, "delete": cmd_delete, "gc": cmd_gc, "verify": cmd_verify}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="urr-snap", description="Inspect and maintain urr snapshot catalogs.")
    p.add_argument("--db", help="catalog path (default: RRFILE.db)")
    sub = p.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        s = sub.add_parser(name, help=COMMANDS[name].__name__.removeprefix("cmd_"))
        s.add_argument("rrfile", metavar="RRFILE")
        if name in ("info", "delete"):
            s.add_argument("name", nargs="?" if name == "info" else None, metavar="NAME")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        catalog = Catalog.open_existing(args.db or f"{args.rrfile}.db")
        try:
            return COMMANDS[args.command](catalog, args)
        finally:
            catalog.close()
    except (CatalogError, LogError, OSError) as e:
        print(f"urr-snap: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
