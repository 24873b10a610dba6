"""Taking, thinning and restoring snapshots of a running machine.

Periodic snapshots are taken on a virtual-time grid (every finest-tier interval, 10 ms by
default) while recording and while replaying; the policy thins them so that density follows the
current position. Catalog writes happen in a separate process (snapshots.writer).

Most dense snapshots are thinned away within a second of being taken, so the manager holds
them in memory and writes only those the policy still keeps when they leave the dense window
(or when the catalog must be complete: a restore, a flush, the end), and never more than
MAX_HELD of them, the oldest going to the writer first. Snapshots on the coarsest
grid, initial and named ones are written at once, so a killed run keeps those. A write carries
only the content its snapshot refers to that the catalog lacks, so the content of snapshots that
were thinned before being written never reaches the file."""
from __future__ import annotations

from typing import Optional

from unicorn import UcError

from cpu.machine import Machine
from snapshots import policy
from snapshots.catalog import Catalog, CatalogError, Snapshot, SnapshotInfo
from snapshots.state import capture, restore
from snapshots.writer import CatalogWriter

GC_EVERY = 64  # deletions between garbage collections of unreferenced pages
THIN_EVERY = 10  # periodic snapshots between thinning passes
SLACK_DIVISOR = 4  # a periodic snapshot is at most a quarter interval late (2.5 ms of 10 ms)
MAX_POOL = 4096  # pooled contents (16 MiB of pages) before the pool is pruned
MAX_HELD = 128  # snapshots held in memory at most (the default 1 s dense window holds ~100)
RECENT_PAGES = 8192  # recently captured page contents kept in memory for fast restores (32 MiB)


def parse_tiers(text: str) -> list[tuple[Optional[int], int]]:
    """'10ms:1s,100ms' -> [(1e9 ns horizon, 1e7 ns interval), (None, 1e8)]."""
    tiers: list[tuple[Optional[int], int]] = []
    for part in text.split(","):
        interval, _, horizon = part.partition(":")
        tiers.append((_duration(horizon) if horizon else None, _duration(interval)))
    if not tiers or tiers[-1][0] is not None or any(h is None for h, _ in tiers[:-1]):
        raise ValueError(f"bad snapshot policy '{text}': the last tier (only) has no horizon")
    return tiers


def _duration(text: str) -> int:
    for suffix, scale in (("ms", 10**6), ("us", 10**3), ("ns", 1), ("s", 10**9)):
        if text.endswith(suffix) and text[:-len(suffix)].replace(".", "", 1).isdigit():
            value = int(float(text[:-len(suffix)]) * scale)
            if value > 0:
                return value
    raise ValueError(f"bad duration '{text}' in snapshot policy (use e.g. 10ms, 1s)")


class SnapshotManager:
    OWN_TIMERS = {"snapshot", "log-flush"}

    def __init__(self, machine: Machine, db_path: str, recording_id: str,
                 tiers: Optional[list[tuple[Optional[int], int]]], create: bool) -> None:
        self.machine = machine
        self.tiers = tiers
        self.catalog = Catalog.open(db_path, recording_id, create=create)
        self.writer = CatalogWriter(db_path, recording_id)
        self.infos: dict[str, SnapshotInfo] = {i.name: i for i in self.catalog.list()}
        self.held: dict[str, Snapshot] = {}  # periodic snapshots not yet written, oldest first
        # Content captured but not sent to the catalog, kept while a held snapshot or the RAM
        # refers to it; `sent`: content the catalog has (or will have: it is on its way).
        self.pool: dict[bytes, bytes] = {}
        self.sent: set[bytes] = set()
        self.recent: dict[bytes, bytes] = {}  # content captured lately, oldest first
        self.deleted_since_gc = 0
        self.since_thin = 0
        # The grid point is a soft deadline: the snapshot is taken at the first slice boundary at
        # or after it (a PIT tick usually comes first); the timer, armed a quarter interval later,
        # only makes sure there is one. So snapshots add no slices of their own to a ticking guest.
        self.timer = machine.timers.new("snapshot", lambda when: None, internal=True)
        self.next_due: Optional[int] = None
        machine.boundary_hooks.append(self._at_boundary)
        self.interval = None
        self.grid: set[int] = set()  # grid points (icount // interval) with a periodic snapshot
        if tiers:
            self.interval = max(1, min(i for _, i in tiers) >> machine.shift)
            self.grid = {i.icount // self.interval for i in self.infos.values() if i.kind == "periodic"}
            self.arm()

    def arm(self) -> None:
        """Schedule the next periodic snapshot on the grid after the current icount."""
        if self.interval:
            self.next_due = (self.machine.icount // self.interval + 1) * self.interval
            self.timer.arm(self.next_due + self.interval // SLACK_DIVISOR)

    def _write(self, snap: Snapshot) -> None:
        """Send a snapshot with the content it refers to that the catalog lacks.

        Content that only thinned snapshots referred to (most of it: dense snapshots of pages
        that changed again) is never sent."""
        refs = snap.references() - self.sent
        blobs = {h: self.pool.pop(h) for h in refs if h in self.pool}
        self.sent.update(blobs)
        self.writer.submit_save(snap, blobs)

    def _prune_pool(self) -> set[bytes]:
        """Drop pooled content nothing can refer to any more; what still can (held snapshots,
        the RAM as it is now: a later snapshot refers to unchanged pages without recapturing)."""
        live = set(self.machine.pages.hashes.values())
        for snap in self.held.values():
            live |= snap.references()
        self.pool = {h: c for h, c in self.pool.items() if h in live}
        return live

    def _keeps_long(self, vtime_ns: int) -> bool:
        """Whether a periodic snapshot is the first of its bucket on the coarsest grid."""
        coarse = self.tiers[-1][1] if self.tiers else 1
        return vtime_ns % coarse < (self.interval << self.machine.shift if self.interval else 1)

    def take(self, name: str, kind: str) -> SnapshotInfo:
        snap, blobs = capture(self.machine, name, kind)
        self._remember(blobs)
        self.pool.update(blobs)
        if kind == "periodic" and not self._keeps_long(snap.vtime_ns):
            self.held[name] = snap
            if len(self.held) > MAX_HELD:  # a wide dense tier: write the oldest as we go
                self._write(self.held.pop(next(iter(self.held))))
        else:
            self._write(snap)
        info = SnapshotInfo(name=name, kind=kind, icount=snap.icount, vtime_ns=snap.vtime_ns,
                            pages=len(snap.pages), bytes=0)
        self.infos[name] = info
        if kind == "periodic" and self.interval:
            self.grid.add(snap.icount // self.interval)
        return info

    def _at_boundary(self) -> None:
        if self.next_due is None or self.machine.icount < self.next_due:
            return
        # One per grid point: a replay of the same stretch (a seek, a reverse scan) may reach the
        # point at another boundary, and must not take a second snapshot for it.
        if self.machine.icount // self.interval not in self.grid:
            self.take(f"auto-{self.machine.icount:015d}", "periodic")
        self.since_thin += 1
        if self.since_thin >= THIN_EVERY:
            self.thin()
        self.arm()

    def thin(self) -> None:
        """Apply the policy; write held snapshots that survive and have left the dense window."""
        self.since_thin = 0
        if not self.tiers:
            return
        position = self.machine.vtime_ns()
        doomed = policy.to_delete(list(self.infos.values()), position, self.tiers)
        written = []
        for name in doomed:
            info = self.infos.pop(name)
            self.grid.discard(info.icount // self.interval)
            if self.held.pop(name, None) is None:
                written.append(name)
        dense = self.tiers[0][0] or 0
        for name in [n for n, snap in self.held.items() if position - snap.vtime_ns > dense]:
            self._write(self.held.pop(name))
        if len(self.pool) > MAX_POOL:
            self._prune_pool()
        if not written:
            return
        self.writer.submit_delete(written)
        self.deleted_since_gc += len(doomed)
        if self.deleted_since_gc >= GC_EVERY:
            live = self._prune_pool()
            # Content held snapshots or the RAM refer to may be in the file only: keep it. What
            # else the catalog keeps (its snapshots' content) is unknown here, so `sent` is cut
            # to what is sure to stay; content dropped from it is simply sent again if needed.
            self.writer.submit_gc(live)
            self.sent &= live
            self.deleted_since_gc = 0

    def nearest(self, icount: int) -> Optional[SnapshotInfo]:
        """The latest snapshot at or before `icount`."""
        best = None
        for info in self.infos.values():
            if info.icount <= icount and (best is None or info.icount > best.icount):
                best = info
        return best

    def flush(self) -> None:
        """Make the catalog complete: write every held snapshot and wait for the writer."""
        for name in list(self.held):
            self._write(self.held.pop(name))
        self.writer.flush()

    def _remember(self, blobs: dict[bytes, bytes]) -> None:
        self.recent.update(blobs)
        excess = len(self.recent) - RECENT_PAGES
        if excess > 0:
            for _ in range(excess):  # the oldest first: dicts keep insertion order
                del self.recent[next(iter(self.recent))]

    def _blob(self, h: bytes) -> bytes:
        """Page content: from memory when it was captured lately, else from the catalog."""
        data = self.recent.get(h) or self.pool.get(h)
        if data is None:
            self.writer.flush()
            data = self.catalog.get_blob(h)
            self._remember({h: data})
        return data

    def restore(self, name: str) -> None:
        """Load a snapshot: a held one straight from memory, others from the catalog."""
        snap = self.held.get(name)
        if snap is None:
            self.writer.flush()
            snap = self.catalog.load(name)
        try:
            restore(self.machine, snap, self._blob, self.OWN_TIMERS)
        except CatalogError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, UcError) as e:
            # Rows are checksummed only as content: a state of the wrong shape ends up here.
            raise CatalogError(f"snapshot '{name}' in {self.catalog.path} is corrupt (its state "
                               f"does not fit this machine: {type(e).__name__} {e})") from None
        self.arm()

    def close(self) -> None:
        self.thin()
        self.flush()
        self.writer.close()
        self.catalog.close()
