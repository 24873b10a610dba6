"""Taking, thinning and restoring snapshots of a running machine.

Periodic snapshots are taken on a virtual-time grid (every finest-tier interval, 10 ms by
default) while recording and while replaying; after each one the policy thins the catalog so
that density follows the current position. Catalog writes happen on a background thread
(snapshots.writer) so SQLite runs while Unicorn runs."""
from __future__ import annotations

from typing import Optional

from cpu.machine import Machine
from snapshots import policy
from snapshots.catalog import Catalog, SnapshotInfo
from snapshots.state import capture, restore
from snapshots.writer import CatalogWriter

GC_EVERY = 64  # deletions between garbage collections of unreferenced pages


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
        self.deleted_since_gc = 0
        self.timer = machine.timers.new("snapshot", self._periodic, internal=True)
        self.interval = None
        if tiers:
            self.interval = max(1, min(i for _, i in tiers) >> machine.shift)
            self.arm()

    def arm(self) -> None:
        """Schedule the next periodic snapshot on the grid after the current icount."""
        if self.interval:
            self.timer.arm((self.machine.icount // self.interval + 1) * self.interval)

    def take(self, name: str, kind: str) -> SnapshotInfo:
        snap, blobs = capture(self.machine, name, kind)
        self.writer.submit_save(snap, blobs)
        info = SnapshotInfo(name=name, kind=kind, icount=snap.icount, vtime_ns=snap.vtime_ns,
                            pages=len(snap.pages), bytes=0)
        self.infos[name] = info
        return info

    def _periodic(self, when: int) -> None:
        name = f"auto-{when:015d}"
        if name not in self.infos:
            self.take(name, "periodic")
        self.thin()
        self.arm()

    def thin(self) -> None:
        if not self.tiers:
            return
        doomed = policy.to_delete(list(self.infos.values()), self.machine.vtime_ns(), self.tiers)
        if not doomed:
            return
        for name in doomed:
            del self.infos[name]
        self.writer.submit_delete(doomed)
        self.deleted_since_gc += len(doomed)
        if self.deleted_since_gc >= GC_EVERY:
            self.writer.submit_gc()
            self.deleted_since_gc = 0

    def nearest(self, icount: int) -> Optional[SnapshotInfo]:
        """The latest snapshot at or before `icount`."""
        best = None
        for info in self.infos.values():
            if info.icount <= icount and (best is None or info.icount > best.icount):
                best = info
        return best

    def restore(self, name: str) -> None:
        self.writer.flush()
        snap = self.catalog.load(name)
        restore(self.machine, snap, self.catalog.get_blob, self.OWN_TIMERS)
        self.arm()

    def close(self) -> None:
        self.writer.close()
        self.catalog.close()
