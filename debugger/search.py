"""Reverse searches over a replay, replaying only what can matter: the last breakpoint or
watchpoint hit before a position, the last write to some memory, and a forward run to a write
watchpoint that jumps over the stretches that cannot hold one.

A search replays stretches of the recording newest first, each from the latest snapshot before
it, with the breakpoint and watchpoint hooks collecting hits (exact icounts from the instruction
counter, see cpu.icount) rather than stopping. Each stretch is about twice as long as the one
before (fewer restores over a long search), up to SCAN_MAX instructions between checks for
Ctrl-C. When every hit a search accepts is a write to known pages, the write index
(snapshots.writeindex) names the digest intervals that may hold one, and only those run.

Mixed into debugger.timeline.Timeline, whose position, hooks and snapshot restores it uses."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

from unicorn import UC_HOOK_CODE, Uc

from snapshots.writeindex import WriteIndex

if TYPE_CHECKING:
    from debugger.timeline import Stop

SCAN_MAX = 1 << 23
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


class ReverseSearches:
    """Timeline's searches; see the module doc."""

    def write_index(self) -> Optional[WriteIndex]:
        """Which digest intervals of the recording may hold writes to a page (replay only)."""
        player = self.machine.seam.core.player
        if not self.use_write_index:
            return None
        if self._write_index is None and player is not None:
            self._write_index = WriteIndex.from_log(player.reader.config, player.records)
        return self._write_index

    def _watched_pages(self) -> Optional[set[int]]:
        """The pages of the watchpoints when every place a run may stop is a write watchpoint
        (or a replay breakpoint) and the log's digests list every page written: then only the
        intervals that wrote those pages need to run with hooks. Else None (also during a range
        step, which stops where the PC leaves its range)."""
        index = self.write_index()
        if (index is None or not index.exact or self.breakpoints or self._range is not None
                or not self.watchpoints or any(kind != "w" for _, _, kind in self.watchpoints)):
            return None
        return set().union(*(WriteIndex.pages_of(a, n) for a, n, _ in self.watchpoints))

    def _skip_to_writes(self) -> None:
        """Running to a write watchpoint: jump (by a snapshot) over stretches in which no
        watched page was written and no replay breakpoint lies."""
        pages = self._watched_pages()
        if pages is None or self.snapshots is None:
            return
        index = self.write_index()
        assert index is not None
        ahead = index.ranges(pages, self.icount, 1 << 63, self.icount_breaks)
        if ahead and ahead[-1][0] >= self.icount + FORWARD_RESTORE_MIN:
            self._restore_ahead(ahead[-1][0])

    def _hits_between(self, begin_snapshot: int, end: int) -> list[Hit]:
        """Replay [snapshot, end) collecting every breakpoint/watchpoint hit (already restored)."""
        _, hits = self._replay_to(end)
        hits = [h for h in hits if h.icount < end]
        hits += [Hit(b, "icount-break") for b in self.icount_breaks if begin_snapshot <= b < end]
        return sorted(hits, key=lambda h: h.icount)

    def _last_hit(self, lowest: int, end: int, accept: Callable[[Hit], bool],
                  pages: Optional[set[int]] = None) -> Optional[Hit]:
        """The last hit in [lowest, end) that `accept`s; a Hit "interrupt" if interrupted. Leaves
        the position anywhere.

        Replays the stretches before `end` newest first, each from the latest snapshot before
        it, collecting hits. With `pages` (every hit it accepts is a write to them), only the
        stretches in which the write index says those pages may have been written."""
        index = self.write_index()
        if pages is None or index is None:
            ranges = [(lowest, end)]
        else:
            ranges = index.ranges(pages, lowest, end, [b for b in self.icount_breaks if accept(Hit(b, "icount-break"))])
        grow = 0
        for first, last in ranges:
            last = min(last, end)  # everything from `end` on has no hit
            while last > first:
                if self._interrupt.is_set():
                    self._interrupt.clear()
                    return Hit(last, "interrupt")
                begin = self._restore_before(max(first, last - 1 - grow))
                hits = [h for h in self._hits_between(begin, last) if h.icount >= lowest and accept(h)]
                if hits:
                    return hits[-1]
                grow = min(2 * (last - begin), SCAN_MAX)
                last = end = begin
        return None

    def _go_to_hit(self, hit: Hit) -> Stop:
        stop = self.seek(hit.icount)
        if stop.reason != "step":
            return stop
        return self._stop(hit.reason, watch_addr=hit.addr if hit.kind else None, watch_kind=hit.kind)

    def _scan_back(self, predicate: Callable[[Uc], bool], end: int) -> Optional[int]:
        """The last icount before `end` at which `predicate` held before an instruction ran.

        Runs every instruction through a Python hook: slow, but only over the intervals between
        the nearest snapshots, newest first. Leaves the position anywhere."""
        while end > self.start:
            begin = self._restore_before(end - 1)
            seen: list[int] = []

            def hook(uc: Uc, address: int, size: int, _ud: object) -> None:
                if predicate(uc):
                    seen.append(self.machine.now())
            handle = self.machine.uc.hook_add(UC_HOOK_CODE, hook)
            self.machine.uc.ctl_flush_tb()
            try:
                self._replay_to(end)
            finally:
                self.machine.uc.hook_del(handle)
                self.machine.uc.ctl_flush_tb()
            seen = [i for i in seen if i < end]
            if seen:
                return seen[-1]
            end = begin
        return None

    def last_write(self, addr: int, length: int = 1) -> Optional[tuple[int, int, bytes, bytes]]:
        """The last write to [addr, addr+length) before the current position: (icount, rip, old, new),
        or None if there was none since the start.

        Undo's `last` / TTD's memory query: a reverse search with a write watch that leaves the
        position where it was."""
        self._require_reverse()
        here = self.icount
        key = (addr, length, "w")
        added, changes_only = key not in self.watchpoints, key in self.changes_only
        if added:
            self.add_watchpoint(addr, length, "w")
        self.changes_only.discard(key)  # a GDB `watch` on the same bytes: it must see every write here

        def writes_here(h: Hit) -> bool:
            return (h.reason == "interrupt" or h.reason == "watchpoint" and h.write
                    and h.addr < addr + length and h.addr + h.size > addr)
        try:
            found = self._last_hit(self.start, here, writes_here, WriteIndex.pages_of(addr, length))
            if found is None:
                return None
            if found.reason == "interrupt":
                raise ValueError("interrupted")
            self.seek(found.icount)
            rip, old = self.pc(), self.read_memory(addr, length)
            self.seek(found.icount + 1)
            return found.icount, rip, old, self.read_memory(addr, length)
        finally:
            if added:
                self.remove_watchpoint(addr, length, "w")
            elif changes_only:
                self.changes_only.add(key)
            self.seek(here)

