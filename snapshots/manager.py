"""Taking, thinning and restoring snapshots of a running machine.

Periodic snapshots are taken on a virtual-time grid (every finest-tier interval, 10 ms by
default) while recording and while replaying; the policy thins them so that density follows the
current position. A snapshot is captured as what changed since the previous one and handed to
the catalog writer's process (snapshots.writer), which makes it whole and stores it, so the
emulator's share of a snapshot is finding and copying what changed; thinning sends deletions the
same way. The last snapshots taken stay in memory as their tree roots and state, and (in a
replay) the content and tree nodes captured lately too, so restoring a recent snapshot (a
reverse step) neither waits for the writer nor reads much from the catalog: a restore waits
only when something it needs is neither in memory nor in the file yet."""
from __future__ import annotations

import bisect
import dataclasses
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Optional

from unicorn import UcError

from cpu.machine import Machine
from cpu.pagemap import PAGE
from snapshots import held, policy
from snapshots.catalog import Catalog, CatalogError, Snapshot, SnapshotInfo, TreePages
from snapshots.state import Capture, capture, restore
from snapshots.writer import CatalogWriter

GC_EVERY = 64  # deletions between asking for a gc (done once due: Catalog.gc_due)
THIN_EVERY = 50  # periodic snapshots between thinning passes (a pass costs ~0.3 ms)
SLACK_DIVISOR = 4  # a periodic snapshot is at most a quarter interval late (2.5 ms of 10 ms)
RECENT_PAGES = 8192  # page contents kept in a replay for fast restores (32 MiB)
RECENT_NODES = 16384  # tree nodes kept in a replay for fast restores (16 MiB)
LOADED = 32  # snapshots kept as loaded, for restoring the same one again (reverse steps do)
TAKEN = 64  # snapshots taken lately kept in memory (a root and state each: a few KiB)
HOLD_SPAN = held.DEFER_MAX // 2  # the most snapshots a first tier's horizon may span for the
# writer to hold those it thins (a thinning pass comes every THIN_EVERY: they go before DEFER_MAX)


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
                 tiers: Optional[list[tuple[Optional[int], int]]]) -> None:
        self.machine = machine
        self.tiers = tiers
        # The writer first: a process forked with an SQLite connection open shares that
        # connection's locks without holding them, so its writes could be lost when the parent's
        # connection closes as if it were the last.
        # A recording syncs its catalog when it ends, as its log; a replay keeps the recording's
        # catalog synced as it adds to it.
        self.writer = CatalogWriter(db_path, recording_id, stream=not machine.seam.core.replaying)
        try:
            self.catalog = Catalog.open(db_path, recording_id, create=False)  # the writer made it
        except CatalogError:
            self.writer.close()
            raise
        self.infos: dict[str, SnapshotInfo] = {i.name: i for i in self.catalog.list()}
        # `infos` sorted by icount, and their icounts (`nearest`); None after a change.
        self._by_icount: Optional[tuple[list[SnapshotInfo], list[int]]] = None
        self.recent: OrderedDict[bytes, bytes] = OrderedDict()  # content captured lately, oldest first
        self.recent_nodes: OrderedDict[bytes, bytes] = OrderedDict()  # tree nodes made lately, oldest first
        # Off until a debugger says it will restore (`expect_restores`; the session says so
        # before its first restore when a debugger was asked for): a recording never restores,
        # nor does a replay nobody debugs.
        self.recent_limit = 0
        # Where this run will stop, when nobody can stop it elsewhere (`stops_at`); None: unknown.
        self.stop_at: Optional[int] = None
        self.unneeded = 0  # periodic snapshots not taken because the policy would delete them by stop_at
        self.loaded: OrderedDict[str, Snapshot] = OrderedDict()
        # Snapshots taken lately, without content: restorable before the writer stores them.
        self.taken: OrderedDict[str, Capture] = OrderedDict()
        self.disk_map: dict[int, bytes] = {}  # the disk overlay's sector map as of the last capture
        self.submitted: dict[str, int] = {}  # snapshot -> its number at the writer
        self.deleted_since_gc = 0
        self.since_thin = 0
        self.skipped = 0  # periodic snapshots not taken because the writer was behind
        self.hold_until = 0  # see held()
        machine.pages.for_snapshots = True
        self.full_next = True  # the writer knows nothing of this machine's RAM yet
        # The grid point is a soft deadline: the snapshot is taken at the first slice boundary at
        # or after it (a PIT tick usually comes first); the timer, armed a quarter interval later,
        # only makes sure there is one. So snapshots add no slices of their own to a ticking guest.
        self.timer = machine.timers.new("snapshot", lambda when: None, internal=True)
        self.next_due: Optional[int] = None
        machine.boundary_hooks.append(self._at_boundary)
        self.interval = None
        self.coarse = 0  # the coarsest tier's interval, in icounts
        self.big_at: Optional[int] = None  # where the last capture big enough to feed was taken
        self.grid: set[int] = set()  # grid points (icount // interval) with a periodic snapshot
        # A periodic snapshot that is not the first in its interval of the second tier is
        # thinned once it is the first tier's horizon behind: soon, if that horizon spans few
        # snapshots. The writer may hold such a one back until then (snapshots.held).
        self.hold_interval = 0  # icounts; 0: none is provisional
        self.hold_taken: set[int] = set()  # such intervals a periodic snapshot was taken in
        if tiers:
            self.interval = max(1, min(i for _, i in tiers) >> machine.shift)
            self.coarse = max(1, max(i for _, i in tiers) >> machine.shift)
            self.grid = {i.icount // self.interval for i in self.infos.values() if i.kind == "periodic"}
            (horizon, finest), *rest = tiers
            if rest and horizon is not None and horizon // finest <= HOLD_SPAN:
                self.hold_interval = max(1, rest[0][1] >> machine.shift)
            self.arm()

    def expect_restores(self) -> None:
        """From now on keep what captures and restores hold (content, tree nodes), so that the
        restores a debugger makes near where it works need not read them back from the catalog
        or wait for the writer to store them. Only in a replay: a recording never restores.
        Keeping them costs each snapshot ~0.3 ms (copies, and page faults as the cache fills:
        ~4% of a dense bigmem replay), which a replay nobody debugs need not pay."""
        if self.machine.seam.core.replaying:
            self.recent_limit = RECENT_PAGES
        self.stop_at = None

    def stops_at(self, icount: int) -> None:
        """The run goes on to `icount` (a replay nobody debugs: the end of its log) and stops
        nowhere before it, so a periodic snapshot the policy would delete on arriving there is
        not taken: an unattended replay of bigmem took 613 dense snapshots to keep ~150 of them.
        The catalog ends as it would have; a run cut short before `icount` has the coarse tier
        where the dense one would have been. Ignored once restores are expected: a debugger
        may stop the run anywhere."""
        if not self.recent_limit:
            self.stop_at = icount

    def arm(self) -> None:
        """Schedule the next periodic snapshot on the grid after the current icount."""
        if self.interval:
            self.next_due = (self.machine.icount // self.interval + 1) * self.interval
            self.timer.arm(self.next_due + self.interval // SLACK_DIVISOR)

    def pause(self) -> None:
        """No periodic snapshot until the next restore: a debugger changed the replay's state,
        which is not the recording's, and the catalog holds only the recording's states."""
        self.next_due = None

    def take(self, name: str, kind: str) -> SnapshotInfo:
        cap = capture(self.machine, name, kind, full=self.full_next, tree=self._tree_here)
        self.full_next = False
        if kind == "periodic" and self.hold_interval:
            bucket = cap.icount // self.hold_interval
            cap.provisional = bucket in self.hold_taken
            self.hold_taken.add(bucket)
        if self.writer.big(cap.content_bytes()):
            self.big_at = cap.icount
        elif self.recent_limit:
            self._remember(cap.all_blobs())
        if self.recent_limit:
            _keep_recent(self.recent_nodes, cap.nodes.items(), RECENT_NODES)
        self.writer.submit_capture(cap)
        self.submitted[name] = self.writer.submitted
        self.loaded.pop(name, None)
        if cap.full:
            self.disk_map.clear()
        self.disk_map.update(cap.disk)
        if cap.root is not None:  # else a restore of it reads it from the file
            self.taken[name] = dataclasses.replace(cap, nodes={}, blobs={}, content=None,
                                                   disk=dict(self.disk_map), full=True)
            self.taken.move_to_end(name)
            if len(self.taken) > TAKEN:
                self.taken.popitem(last=False)
        info = SnapshotInfo(name=name, kind=kind, icount=cap.icount, vtime_ns=cap.vtime_ns,
                            pages=self.machine.pages.count, bytes=0)
        self._add_info(info)
        if kind == "periodic" and self.interval:
            self.grid.add(cap.icount // self.interval)
        return info

    def _tree_here(self, pages: int) -> bool:
        """Whether a capture of `pages` changed pages gets its page tree from the emulator rather
        than the writer: where restores are expected (they need it here), or where the capture
        is big enough to be fed, when the writer has its content to store and a big write fills
        whole leaves, cheaper rehashed here (~2 us a leaf) than listed page by page for the
        writer (~1.5 us a page of its time; bigmem1g's first pass, 245,760 pages, made the end of
        its recording wait ~0.4 s longer)."""
        return bool(self.recent_limit) or self.writer.big(pages * PAGE)

    @contextmanager
    def held(self, until: int = 1 << 63) -> Iterator[None]:
        """No periodic snapshot and no thinning before icount `until` inside the block.

        A seek passing through intervals on its way to a position needs snapshots only near
        where it lands, and a reverse search replays stretches it then leaves: their snapshots
        would each cost a capture, and thinning at a search's position (far from the user's)
        would delete the dense snapshots where the user works (a reverse-continue over 590 M
        instructions took and then deleted 6,710 snapshots: 7 of its 56 s)."""
        saved, self.hold_until = self.hold_until, max(self.hold_until, until)
        try:
            yield
        finally:
            self.hold_until = saved

    def _at_boundary(self) -> None:
        if self.next_due is None or self.machine.icount < self.next_due:
            return
        if self.machine.icount < self.hold_until:
            self.arm()
            return
        # One per grid point: a replay of the same stretch (a seek, a reverse scan) may reach the
        # point at another boundary, and must not take a second snapshot for it. None while the
        # writer is behind: the emulator must not wait for it (the next one holds the changes).
        if self.machine.icount // self.interval not in self.grid:
            if not self._kept_at_stop():
                self.unneeded += 1
            elif self.writer.behind() or self._big_while_feeding():
                self.skipped += 1
            else:
                self.take(f"auto-{self.machine.icount:015d}", "periodic")
        self.since_thin += 1
        if self.since_thin >= THIN_EVERY:
            self.thin()
        self.arm()

    def _kept_at_stop(self) -> bool:
        """Whether a periodic snapshot taken now would still be kept when the run reaches
        `stop_at` (True when that is not known)."""
        if self.stop_at is None or self.machine.icount >= self.stop_at:
            return True
        return policy.kept_at(self.machine.vtime_ns(), self.machine.vtime_ns(self.stop_at),
                              self.by_icount()[0], self.tiers)

    def _big_while_feeding(self) -> bool:
        """Whether a periodic snapshot now would be fed to the writer by a forked copy while
        another copy still feeds it (until the writer has read the last one's content: seconds
        for bigmem's 256 MiB under load), less than the coarsest tier's interval after the last
        such snapshot. Each fork costs the emulator its page tables and, while the copies live, a
        copy of every page it writes, its own heap's included: bigmem's first pass forked 6-10
        times at the dense tier. Such a snapshot is skipped as one the writer is behind for (the
        next one holds the changes), so a burst of writing forks about once per coarse interval."""
        since = self.machine.icount - self.big_at if self.big_at is not None else self.coarse
        if not 0 <= since < self.coarse or not self.writer.feeding():
            return False
        tracker = self.machine.pages
        tracker.update()
        pages = tracker.count if self.full_next else len(tracker.since_snapshot)
        return self.writer.big(pages * PAGE)

    def thin(self) -> None:
        """Apply the policy: delete the periodic snapshots it no longer keeps."""
        self.since_thin = 0
        if not self.tiers:
            return
        doomed = policy.to_delete(list(self.infos.values()), self.machine.vtime_ns(), self.tiers)
        if not doomed:
            return
        for name in doomed:
            info = self.infos.pop(name)
            self._by_icount = None
            self.grid.discard(info.icount // self.interval)
            self.submitted.pop(name, None)
            self.loaded.pop(name, None)
            self.taken.pop(name, None)
        self.writer.submit_delete(doomed)
        self.deleted_since_gc += len(doomed)
        if self.deleted_since_gc >= GC_EVERY:
            self.writer.submit_gc(when_due=True)
            self.deleted_since_gc = 0

    def nearest(self, icount: int) -> Optional[SnapshotInfo]:
        """The latest snapshot at or before `icount` (of several there, the first listed)."""
        ordered, icounts = self.by_icount()
        at = bisect.bisect_right(icounts, icount) - 1
        return ordered[bisect.bisect_left(icounts, icounts[at])] if at >= 0 else None

    def _add_info(self, info: SnapshotInfo) -> None:
        """List a snapshot just taken, in `infos` and in order (`by_icount`) without sorting
        them all again: a run's periodic snapshots come in icount order, one per grid point,
        and a run that knows where it stops looks at that order at every grid point."""
        replaced = info.name in self.infos
        self.infos[info.name] = info
        if replaced or self._by_icount is None:
            self._by_icount = None
            return
        ordered, icounts = self._by_icount
        at = bisect.bisect_right(icounts, info.icount)
        ordered.insert(at, info)
        icounts.insert(at, info.icount)

    def by_icount(self) -> tuple[list[SnapshotInfo], list[int]]:
        """`infos` sorted by icount (stable: listing order), and their icounts: kept as snapshots
        are taken, not sorted again for each caller. Read only."""
        if self._by_icount is None or len(self._by_icount[0]) != len(self.infos):
            ordered = sorted(self.infos.values(), key=lambda i: i.icount)
            self._by_icount = (ordered, [i.icount for i in ordered])
        return self._by_icount

    def flush(self) -> None:
        """Wait until the catalog holds every snapshot taken."""
        self.writer.flush()

    def _remember(self, blobs: dict) -> None:
        """Keep copies of content (captured pages are views of the live RAM). Not of a capture
        bigger than an eighth of the cache: it would push out what the reverse steps near here
        need, for pages only a restore into a stretch that wrote much memory needs (copying
        them cost a 1 GiB guest's replay a second)."""
        if self.recent_limit and len(blobs) <= self.recent_limit // 8:
            _keep_recent(self.recent, zip(blobs, map(bytes, blobs.values())), self.recent_limit)

    def _stored(self, fetch: Callable[[Any], Any], h: Any) -> Any:
        """`fetch(h)` from the catalog, waiting for the writer only if it is not there yet and
        the writer may still be storing it."""
        try:
            return fetch(h)
        except CatalogError:
            if self.writer.submitted <= self.writer.committed():
                raise
        self.writer.flush()
        return fetch(h)

    def _blob(self, h: bytes) -> bytes:
        """Page content: from memory when it was captured lately, else from the catalog."""
        data = self.recent.get(h)
        if data is None:
            data = self._stored(self.catalog.get_blob, h)
            self._remember({h: data})
        return data

    def _blobs(self, hashes: list[bytes]) -> dict[bytes, bytes]:
        """Page contents: those captured lately from memory, the rest from the catalog at once."""
        recent = self.recent
        out = {h: recent[h] for h in hashes if h in recent}
        missing = [h for h in hashes if h not in out]
        if missing:
            stored = self._stored(self.catalog.get_blobs, missing)
            self._remember(stored)
            out.update(stored)
        return out

    def _node(self, h: bytes) -> bytes:
        """A tree node: from memory when it was made lately, else from the catalog."""
        data = self.recent_nodes.get(h)
        return data if data is not None else self._stored(self.catalog.get_node, h)

    def _load(self, name: str) -> Snapshot:
        """A snapshot: from memory if taken lately, else from the catalog, waiting for the
        writer only if it may not be there yet."""
        snap = self.loaded.get(name)
        if snap is not None:
            self.loaded.move_to_end(name)
            return snap
        cap = self.taken.get(name)
        if cap is not None:
            snap = cap.snapshot({}, self._node)
        else:
            if self.submitted.get(name, 0) > self.writer.committed():
                self.writer.flush()
            try:
                snap = self.catalog.load(name)
            except CatalogError:
                self.writer.flush()  # one that failed to store: its error, not "no such snapshot"
                raise
            snap.pages = TreePages(snap.pages.root, len(snap.pages), self._node)
        self.loaded[name] = snap
        if len(self.loaded) > LOADED:
            self.loaded.popitem(last=False)
        return snap

    def restore(self, name: str) -> None:
        """Load a snapshot (from the catalog, or as loaded before) and put the machine there."""
        snap = self._load(name)
        self.stop_at = None  # the run goes on from elsewhere: where it will stop is not known
        self.full_next = True  # until the writer is told where the RAM now comes from
        try:
            restore(self.machine, snap, self._blob, self.OWN_TIMERS, self._blobs)
        except CatalogError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, UcError) as e:
            # Rows are checksummed only as content: a state of the wrong shape ends up here.
            raise CatalogError(f"snapshot '{name}' in {self.catalog.path} is corrupt (its state "
                               f"does not fit this machine: {type(e).__name__} {e})") from None
        self.writer.submit_base(name)
        self.full_next = False
        self.disk_map = dict(snap.disk)
        self.arm()

    def close(self) -> None:
        """Store everything, finish the catalog, and let go of the machine (its boundary hook
        and timer), which may go on under another manager (a branch)."""
        if self._at_boundary in self.machine.boundary_hooks:
            self.machine.boundary_hooks.remove(self._at_boundary)
            self.machine.timers.remove(self.timer)
        try:
            self.thin()
            if self.deleted_since_gc:
                self.writer.submit_gc()
        finally:
            self.catalog.close()  # first: the writer's connection, the last, tidies the file up
            self.writer.close()  # once all is stored; raises what storing any of it hit


def _keep_recent(cache: OrderedDict[bytes, bytes], items: Iterable[tuple[bytes, bytes]], limit: int) -> None:
    """Add `items` to an insertion-ordered cache, dropping the oldest beyond `limit` once an
    eighth more has come (a dense snapshot adds ~100 entries: dropped in a batch now and then,
    not checked one by one every time). (With a plain dict, finding the oldest steps over every
    slot deleted before it: quadratic, 5 s of a 1 GiB guest's replay.)"""
    cache.update(items)
    excess = len(cache) - limit
    if excess > limit // 8:
        for _ in range(excess):
            cache.popitem(last=False)
