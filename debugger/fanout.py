"""A reverse search to breakpoints spread over cores.

The serial search (debugger.search) replays stretches newest first on this process's machine:
one core. When a search to breakpoints (no watchpoints; conditions only as GDB's bytecode, which
the workers evaluate themselves) has found nothing in its first stretches, what is left is cut
at the catalog's snapshots into segments that worker
processes replay at the same time (history.runner, the segment runner `urr-snap` uses), newest
first, in batches that double: a hit not far back costs one small batch, a hit far back about
the replay of the distance divided by the cores. Every snapshot restores to the state a straight
replay reaches, so a segment's hits are exactly those the serial search would collect there."""
from __future__ import annotations

from typing import Callable, Optional

from debugger.agentexpr import Condition
from debugger.search import Hit
from history.queries import Executions
from history.runner import Backend, Cancelled, SegmentFailed, execute
from history.segments import MIN_SEGMENT, FileSource, Interval, plan, snapshot_pairs
from snapshots.manager import SnapshotManager

BATCH_PER_WORKER = 1 << 25  # the first batch's icounts per worker; each next batch twice as many,
BATCH_PER_WORKER_MAX = 1 << 27  # up to this


class FanOut:
    """Reverse searches to breakpoints over `jobs` worker processes (see the module doc)."""

    def __init__(self, snapshots: SnapshotManager, rrfile: str, jobs: int) -> None:
        self.snapshots = snapshots
        self.rrfile = rrfile
        self.jobs = jobs

    def last_hit(self, breaks: dict[int, Optional[Condition]], first: int, last: int,
                 take_interrupt: Callable[[], bool]) -> Optional[Hit]:
        """The last execution in [first, last) (`last` a snapshot's icount) of an instruction at
        a key of `breaks` whose condition (or None) holds there; a Hit "interrupt" (at the
        earliest icount searched) as soon as `take_interrupt()` says so, the workers stopped
        wherever they are: a batch is up to ~9 s of replay, too long to wait for a Ctrl-C."""
        self.snapshots.flush()  # the workers read the catalog: it must hold every snapshot
        catalog = self.snapshots.catalog
        source = FileSource(self.rrfile, catalog.path, None, catalog.recording_id)
        ordered, _ = self.snapshots.by_icount()
        origin = self.snapshots.nearest(first)
        assert origin is not None
        intervals = [i for i in snapshot_pairs(ordered) if origin.icount <= i.start_icount and i.end_icount <= last]
        per_worker = BATCH_PER_WORKER
        while intervals:
            batch: list[Interval] = []
            size = 0
            while intervals and size < per_worker * self.jobs:
                batch.insert(0, intervals.pop())
                size += batch[0].length
            try:
                found, _ = execute(Executions(breaks), source, plan(batch, self.jobs, MIN_SEGMENT),
                                   Backend(jobs=self.jobs), cancelled=take_interrupt)
            except Cancelled:
                return Hit(last, "interrupt")
            except SegmentFailed as e:
                raise ValueError(f"reverse search: {e}") from None
            hits = [(icount, addr) for icount, addr in found if first <= icount < last]
            if hits:
                icount, addr = max(hits)
                return Hit(icount, "breakpoint", addr)
            last = batch[0].start_icount
            if take_interrupt():
                return Hit(last, "interrupt")
            per_worker = min(2 * per_worker, BATCH_PER_WORKER_MAX)
        return None
