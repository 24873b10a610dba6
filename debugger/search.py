"""Reverse searches over a replay, replaying only what can matter: the last breakpoint or
watchpoint hit before a position, the last instruction before a position at which something
held, and where the next write to some pages can lie.

A search replays stretches of the recording newest first, each from the latest snapshot before
it, with the breakpoint and watchpoint hooks collecting hits (exact icounts from the instruction
counter, see cpu.icount) rather than stopping. Each stretch is about twice as long as the one
before (fewer restores over a long search), up to SCAN_MAX instructions between checks for
Ctrl-C. When every hit a search accepts is a write to known pages, the write index
(snapshots.writeindex) names the digest intervals that may hold one, and only those run.

The timeline (debugger.timeline) owns the position, the snapshots and the breakpoints, as rr's
ReplayTimeline does; its ReverseSearch is lent only the three moves a search makes (restore a
snapshot, replay collecting hits, check for Ctrl-C) and leaves the position anywhere: the
timeline goes where the search says."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Collection, Optional

from unicorn import UC_HOOK_CODE, Uc

from cpu.machine import Machine
from debugger.agentexpr import Condition
from snapshots.writeindex import WriteIndex

SCAN_MAX = 1 << 23
FAN_OUT_MIN = 1 << 25  # icounts still to search for fanning out to pay for starting workers
# A forward seek, or a forward run to a write watchpoint, restores a snapshot ahead rather than
# replay to it when that skips at least this many instructions (a restore costs about what
# replaying ~50,000 does).
FORWARD_RESTORE_MIN = 1 << 18


@dataclass(frozen=True)
class Hit:
    """Where a breakpoint, watchpoint or replay breakpoint fired, found by a reverse search."""

    icount: int
    reason: str
    addr: Optional[int] = None  # the instruction's, or the access's first byte
    kind: Optional[str] = None  # the watchpoint's kind: "w", "r", "a"
    size: int = 0  # bytes accessed
    write: bool = False
    # A write the recording's debugger made (logged, made again by the replay): its record's
    # index in the log. It is made between instructions, at `icount` before the instruction
    # there, so the state at `icount` may be before or after it: the log position tells.
    record: Optional[int] = None

    def before(self, icount: int, log_pos: int) -> bool:
        """Whether the hit lies before the state at `icount` whose log position is `log_pos`."""
        return self.icount < icount or self.record is not None and self.icount == icount and self.record < log_pos


class ReverseSearch:
    """The searches over one replay; see the module doc."""

    def __init__(self, machine: Machine, start: int, restore_before: Callable[[int], int],
                 replay_collecting: Callable[[int], list[Hit]], take_interrupt: Callable[[], bool]) -> None:
        """What the timeline lends a search: `restore_before(icount)` restores the latest
        snapshot at or before icount (not before `start`, the replay's first position) and
        returns its icount; `replay_collecting(end)` replays to `end` with breakpoints and
        watchpoints collecting their hits; `take_interrupt()` tells (and clears) whether the user
        asked the run to stop."""
        self.machine = machine
        self.start = start
        self.restore_before = restore_before
        self.replay_collecting = replay_collecting
        self.take_interrupt = take_interrupt
        self.use_write_index = True  # False: searches for writes replay everything (a reference)
        # debugger.fanout's FanOut.last_hit, when there are cores and a catalog file to share:
        # searches to breakpoints that go far back spread over worker processes.
        self.fan_out: Optional[Callable[[dict[int, Optional[Condition]], int, int, Callable[[], bool]], Optional[Hit]]] = None
        self.fan_out_min = FAN_OUT_MIN
        self.fan_out_after = SCAN_MAX  # the serial stretches' length first: near hits start no workers
        self._write_index: Optional[WriteIndex] = None

    def write_index(self) -> Optional[WriteIndex]:
        """Which digest intervals of the recording may hold writes to a page (replay only)."""
        player = self.machine.seam.core.player
        if not self.use_write_index:
            return None
        if self._write_index is None and player is not None:
            self._write_index = WriteIndex.from_log(player.reader.config, player.records)
        return self._write_index

    def forget(self) -> None:
        """The machine left the recording (a branch): its write index and catalog no longer apply."""
        self._write_index = None
        self.fan_out = None

    def exact_index(self) -> Optional[WriteIndex]:
        """The write index when its digests list every page written (else None: scan it all)."""
        index = self.write_index()
        return index if index is not None and index.exact else None

    def next_writes(self, pages: set[int], here: int, icount_breaks: Collection[int]) -> Optional[int]:
        """Where the first stretch from `here` on that may write `pages` (or holds a replay
        breakpoint) begins; None if none does or the index cannot tell."""
        index = self.exact_index()
        if index is None:
            return None
        ahead = index.ranges(pages, here, 1 << 63, icount_breaks)
        return ahead[-1][0] if ahead else None

    def last_hit(self, lowest: int, end: int, accept: Callable[[Hit], bool], icount_breaks: Collection[int],
                 pages: Optional[set[int]] = None, breaks: Optional[dict[int, Optional[Condition]]] = None) -> Optional[Hit]:
        """The last hit in [lowest, end) that `accept`s (replay breakpoints at `icount_breaks`
        are hits too); a Hit "interrupt" if interrupted. Leaves the position anywhere.

        Replays the stretches before `end` newest first, each from the latest snapshot before
        it, collecting hits. With `pages` (every hit it accepts is a write to them), only the
        stretches in which the write index says those pages may have been written. With
        `breaks` (every hit is a breakpoint at these addresses whose condition, GDB's bytecode or
        None, holds; all accepted), the stretches left once they have grown to fan_out_after go
        to fan_out."""
        index = self.write_index()
        if pages is None or index is None:
            ranges = [(lowest, end)]
        else:
            ranges = index.ranges(pages, lowest, end, [b for b in icount_breaks if accept(Hit(b, "icount-break"))])
        grow = 0
        end_pos = self._log_pos()  # the debugger writes at `end` made in the state searched from
        for first, last in ranges:
            last_pos = end_pos if last >= end else 0  # a range's end is no state: none made there
            last = min(last, end)  # everything from `end` on has no hit
            while last > first:
                if self.take_interrupt():
                    return Hit(last, "interrupt")
                if (breaks and not icount_breaks and self.fan_out is not None and grow  # `last`: a snapshot's
                        and grow >= self.fan_out_after and last - first >= self.fan_out_min):
                    return self.fan_out(breaks, first, last, self.take_interrupt)
                begin = self.restore_before(max(first, last - 1 - grow))
                begin_pos = self._log_pos()
                hits = [h for h in self._hits_between(begin, last, last_pos, icount_breaks)
                        if h.icount >= lowest and accept(h)]
                if hits:
                    return hits[-1]
                grow = min(2 * (last - begin), SCAN_MAX)
                last = end = begin
                last_pos = end_pos = begin_pos
        return None

    def _log_pos(self) -> int:
        """The replay's position in its log (how far its records are taken)."""
        player = self.machine.seam.core.player
        return player.pos if player is not None else 0

    def _hits_between(self, begin_snapshot: int, end: int, end_pos: int, icount_breaks: Collection[int]) -> list[Hit]:
        """Replay [snapshot, end) collecting every breakpoint/watchpoint hit (already restored);
        a debugger write at `end` counts if its record lies before `end_pos`."""
        hits = [h for h in self.replay_collecting(end) if h.before(end, end_pos)]
        hits += [Hit(b, "icount-break") for b in icount_breaks if begin_snapshot <= b < end]
        return sorted(hits, key=lambda h: h.icount)

    def scan_back(self, predicate: Callable[[Uc], bool], end: int) -> Optional[int]:
        """The last icount before `end` at which `predicate` held before an instruction ran.

        Runs every instruction through a Python hook: slow, but only over the intervals between
        the nearest snapshots, newest first. Leaves the position anywhere."""
        while end > self.start:
            begin = self.restore_before(end - 1)
            seen: list[int] = []

            def hook(uc: Uc, address: int, size: int, _ud: object) -> None:
                if predicate(uc):
                    seen.append(self.machine.now())
            handle = self.machine.uc.hook_add(UC_HOOK_CODE, hook)
            self.machine.uc.ctl_flush_tb()
            try:
                self.replay_collecting(end)
            finally:
                self.machine.uc.hook_del(handle)
                self.machine.uc.ctl_flush_tb()
            seen = [i for i in seen if i < end]
            if seen:
                return seen[-1]
            end = begin
        return None
