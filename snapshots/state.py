"""Capturing and restoring the complete machine state at an exact icount.

What a snapshot holds: the registers (cpu.cpustate), RAM by page content hash (cpu.pagetrack
keeps those current at the cost of what changed), every device's state, every pending timer, the
disk overlay by sector content hash, the virtual clock and the position in the event log.
Restoring then replaying forward reaches exactly the state a straight replay reaches.

Taking a snapshot must cost what changed, not what the guest uses: a `Capture` holds RAM as
the pages that changed since the previous capture, by hash, with their content (and the page
tree's root and new nodes, or the catalog writer makes those), the disk as the sectors changed,
and the registers as raw bytes. The catalog writer, which sees every capture in order, turns
it into a `Snapshot` (`Capture.snapshot`). Restoring compares the snapshot's tree with the
machine's and rewrites only the pages that differ."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from cpu import cpustate
from cpu.machine import Machine
from cpu.pagemap import PAGE
from cpu.pagetrack import PageContent, page_digest
from cpu.pagetree import NodeSource
from replay import log as L
from snapshots.catalog import Snapshot, TreePages, tree_of


@dataclass
class Capture:
    """A snapshot as taken: RAM as a page tree and the nodes and content it may add, disk as
    changes (or whole, if `full`)."""
    name: str
    kind: str
    icount: int
    vtime_ns: int
    registers: bytes  # cpustate.RegisterReader.read_raw()
    devices: dict
    log_pos: dict
    root: Optional[bytes]  # the RAM's page tree (cpu.pagetree); None: made by the writer from `changes`
    pages: int  # non-zero RAM pages
    nodes: dict[bytes, bytes]  # tree nodes made since the previous capture (all, if `full`)
    disk: dict[int, bytes]  # overlay sector -> content hash
    # Content by hash: of those sectors, and of the RAM pages given as such rather than as
    # `content`. Views of the live RAM are valid until the guest runs again (the catalog writer
    # copies them out at once, or a forked copy of the emulator sees them as they were).
    blobs: dict[bytes, bytes | memoryview]
    ram_size: int
    full: bool  # nodes, blobs and disk are whole, not changes
    content: Optional[PageContent] = None  # the pages changed since the previous capture (all, if `full`)
    # A dense snapshot the policy will likely thin (its coarse interval has one already): the
    # writer may hold it back from the file until it outlives that (snapshots.held).
    provisional: bool = False
    # Without a root: the pages changed since the previous capture and their hashes
    # (cpu.pagetrack's PageContent.changes), from which the writer's copy of the tree makes it.
    changes: Optional[tuple[list[int], bytes]] = None

    def content_bytes(self) -> int:
        """The content's size at most: what the writer decides how to carry it by."""
        pages = self.content.count if self.content is not None else 0
        return pages * PAGE + sum(map(len, self.blobs.values()))

    def all_blobs(self) -> dict[bytes, bytes | memoryview]:
        """Every content by hash, pages read now (see PageContent)."""
        return {**self.content.blobs, **self.blobs} if self.content is not None else self.blobs

    def snapshot(self, disk: dict[int, bytes], node: NodeSource) -> Snapshot:
        """The whole snapshot, given the sector map as of the previous capture (brought up to
        date in place: the caller keeps it for the next one) and where its tree's nodes are."""
        if self.full:
            disk.clear()
        disk.update(self.disk)
        return Snapshot(name=self.name, kind=self.kind, icount=self.icount, vtime_ns=self.vtime_ns,
                        cpu=cpustate.decode(self.registers), devices=self.devices,
                        log_pos=self.log_pos, pages=TreePages(self.root, self.pages, node),
                        disk=dict(disk), ram_size=self.ram_size)


def log_position(machine: Machine) -> dict:
    core = machine.seam.core
    if core.writer is not None:
        pos = core.writer.position()
    elif core.player is not None:
        pos = core.player.position()
    else:
        pos = L.Position(0, 0)
    return {"chunk": pos.chunk, "index": pos.index}


def capture(machine: Machine, name: str, kind: str, full: bool,
            tree: Optional[Callable[[int], bool]] = None) -> Capture:
    """The machine state now: RAM and disk changed since the previous capture, or all of them
    (with all their content) if `full`. Where `tree(pages changed)` says no, RAM comes as the
    pages changed and their hashes, the page tree left for the catalog writer to make (a root
    and ~400 nodes cost the emulator ~0.6 ms of each of bigmem's 100 ms snapshots)."""
    tracker = machine.pages
    tracker.update()
    here = full or tree is None or tree(len(tracker.since_snapshot))
    pages, root, nodes = tracker.take_snapshot_changes(here)
    changes = pages.changes() if root is None else None
    written = machine.disk.take_written() if machine.disk is not None else {}
    if full:
        pages = tracker.whole_content()
        root, nodes = tracker.whole_tree()
        written = machine.disk.get_overlay() if machine.disk is not None else {}
    blobs: dict[bytes, bytes | memoryview] = {}
    disk: dict[int, bytes] = {}
    for sector, data in written.items():
        h = page_digest(data)
        disk[sector] = h
        blobs[h] = data
    return Capture(
        name=name, kind=kind, icount=machine.icount, vtime_ns=machine.vtime_ns(),
        registers=machine.registers.read_raw(),
        devices={
            "board": machine.board.get_state(),
            "timers": {t.name: t.deadline for t in machine.timers.timers},
            "halted": machine.halted,
            "exit_status": machine.exit_status,
        },
        log_pos=log_position(machine), root=root, pages=tracker.count, nodes=nodes,
        disk=disk, blobs=blobs, ram_size=machine.ram.size, full=full, content=pages, changes=changes)


def restore(machine: Machine, snap: Snapshot, blob: Callable[[bytes], bytes],
            own_timers: Optional[set[str]] = None,
            blobs: Optional[Callable[[list[bytes]], dict[bytes, bytes]]] = None) -> None:
    """Put the machine (and the replay cursor) exactly where `snap` was taken.

    `blob(hash)` fetches verified content (the tree's nodes come with `snap.pages`), or
    `blobs(hashes)` many at once; only the pages that differ from the machine's RAM are
    fetched and written. Timers named in `own_timers` belong to the caller, which re-arms
    them itself."""
    if snap.ram_size != machine.ram.size:
        raise ValueError(f"snapshot {snap.name} has {snap.ram_size} bytes of RAM, the machine {machine.ram.size}")
    root, built = tree_of(snap.pages, snap.ram_size)
    node = snap.pages.node if isinstance(snap.pages, TreePages) else built.__getitem__
    machine.pages.load_tree(root, node, blob, blobs)
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
