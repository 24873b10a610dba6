"""Checking a snapshot catalog against its recording: restore each snapshot, replay to the next,
and compare the machine with what the next one stored.

No kernel file is needed: a snapshot holds all of RAM, code included."""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from cpu.loader import Kernel
from cpu.machine import Machine
from replay import log as L
from replay.player import Divergence, Player
from replay.seam import Seam, SeamCore
from snapshots.catalog import Catalog, Snapshot
from snapshots.state import capture, restore


@dataclass
class Mismatch:
    name: str
    icount: int
    what: str


def _differences(expected: Snapshot, got: Snapshot) -> list[str]:
    out = []
    regs = [k for k in expected.cpu if expected.cpu[k] != got.cpu.get(k)]
    if regs:
        out.append("registers " + ", ".join(regs[:8]))
    pages = sorted(p for p in set(expected.pages) | set(got.pages)
                   if expected.pages.get(p) != got.pages.get(p))
    if pages:
        out.append("RAM pages " + ", ".join(f"{p * 4096:#x}" for p in pages[:8]))
    devices = [d for d in expected.devices["board"] if expected.devices["board"][d] != got.devices["board"].get(d)]
    if devices:
        out.append("devices " + ", ".join(devices))
    if expected.disk != got.disk:
        out.append("disk overlay")
    return out


def verify_catalog(rrfile: str, db_path: str,
                   progress: Callable[[Iterable], Iterable] = lambda it: it) -> list[Mismatch]:
    """Replay between consecutive snapshots; the mismatches found (empty when all agree)."""
    player = Player(L.LogReader(rrfile))
    config = player.reader.config
    catalog = Catalog.open(db_path, config["recording_id"], create=False)
    try:
        infos = catalog.list()
        seam = Seam(SeamCore("replay", lambda: 0, None, player))
        from cpu.disk import DiskImage
        disk = DiskImage.without_base(config["disk"]["sectors"]) if config.get("disk") else None
        empty = Kernel("(from snapshots)", 0, (), "")
        machine = Machine(empty, config["ram_size"], config["shift"], seam, disk,
                          serial_out=io.BytesIO().write)
        problems: list[Mismatch] = []
        for before, after in progress(list(zip(infos, infos[1:]))):
            if after.icount == before.icount:
                continue
            restore(machine, catalog.load(before.name), catalog.get_blob)
            try:
                machine.run(after.icount)
            except Divergence as e:
                problems.append(Mismatch(after.name, e.icount, str(e)))
                continue
            got = capture(machine, after.name, after.kind, full=True).snapshot({}, {})
            diffs = _differences(catalog.load(after.name), got)
            if diffs:
                problems.append(Mismatch(after.name, after.icount, "; ".join(diffs)))
        return problems
    finally:
        catalog.close()


def first_mismatch_text(problems: list[Mismatch]) -> Optional[str]:
    if not problems:
        return None
    p = problems[0]
    return f"snapshot {p.name} (icount {p.icount}) does not match its replay: {p.what}"
