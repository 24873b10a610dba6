"""Capturing and restoring the complete machine state at an exact icount.

What a snapshot holds: the registers (cpu.cpustate), RAM by page content hash (cpu.pagetrack
keeps those current at the cost of what changed), every device's state, every pending timer, the
disk overlay by sector content hash, the virtual clock and the position in the event log.
Restoring then replaying forward reaches exactly the state a straight replay reaches."""
from __future__ import annotations

from typing import Callable, Optional

from cpu import cpustate
from cpu.machine import Machine
from cpu.pagetrack import page_digest
from replay import log as L
from snapshots.catalog import Snapshot


def log_position(machine: Machine) -> dict:
    core = machine.seam.core
    if core.writer is not None:
        pos = core.writer.position()
    elif core.player is not None:
        pos = core.player.position()
    else:
        pos = L.Position(0, 0)
    return {"chunk": pos.chunk, "index": pos.index}


def capture(machine: Machine, name: str, kind: str) -> tuple[Snapshot, dict[bytes, bytes]]:
    """The snapshot and the content (hash -> bytes) of pages and sectors it references."""
    machine.pages.update()
    pages = dict(machine.pages.hashes)
    referenced = set(pages.values())
    blobs = {h: c for h, c in machine.pages.new_content.items() if h in referenced}
    machine.pages.new_content = {}
    disk: dict[int, bytes] = {}
    if machine.disk is not None:
        for sector, data in machine.disk.get_overlay().items():
            h = page_digest(data)
            disk[sector] = h
            blobs[h] = data
    snap = Snapshot(
        name=name, kind=kind, icount=machine.icount, vtime_ns=machine.vtime_ns(),
        cpu=machine.registers.read(),
        devices={
            "board": machine.board.get_state(),
            "timers": {t.name: t.deadline for t in machine.timers.timers},
            "halted": machine.halted,
            "exit_status": machine.exit_status,
        },
        log_pos=log_position(machine),
        pages=pages,
        disk=disk,
        ram_size=machine.ram.size,
    )
    return snap, blobs


def restore(machine: Machine, snap: Snapshot, blob: Callable[[bytes], bytes],
            own_timers: Optional[set[str]] = None) -> None:
    """Put the machine (and the replay cursor) exactly where `snap` was taken.

    `blob(hash)` fetches verified content. Timers named in `own_timers` belong to the caller,
    which re-arms them itself."""
    if snap.ram_size != machine.ram.size:
        raise ValueError(f"snapshot {snap.name} has {snap.ram_size} bytes of RAM, the machine {machine.ram.size}")
    contents = {h: blob(h) for h in set(snap.pages.values())}
    machine.pages.load(snap.pages, contents)
    machine.pages.new_content = {}
    cpustate.restore(machine.uc, snap.cpu)
    machine.board.set_state(snap.devices["board"])
    saved = snap.devices["timers"]
    for t in machine.timers.timers:
        if own_timers is None or t.name not in own_timers:
            t.deadline = saved.get(t.name)
    machine.halted = snap.devices["halted"]
    machine.exit_status = snap.devices["exit_status"]
    if machine.disk is not None:
        machine.disk.set_overlay({s: blob(h) for s, h in snap.disk.items()})
    machine.icount = snap.icount
    machine.uc.ctl_flush_tb()  # RAM changed under Unicorn: drop translations of old code
    player = machine.seam.core.player
    if player is not None:
        player.seek(L.Position(snap.log_pos["chunk"], snap.log_pos["index"]))
