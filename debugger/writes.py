"""Writes seen from a replay's timeline: last-write (the last write to some memory before the
position, the position left where it was) and the writes the recording's debugger made.

A debugger's write made while recording (GDB's `set var`) is logged and made again by the replay
between instructions, at its icount, before the instruction there (cpu.following): so the state
at that icount may be before or after it, which the log position tells. A watchpoint on its
bytes (debugger.stoppoints) stops right after it going forward; going back, the timeline lands
right before it (`seek_to_logged`), at the same icount.

Why a module of its own: the timeline (debugger.timeline) positions the replay by icount; this
is the one place that positions it between the records of one icount, and the query that needs
it. It is lent the timeline, whose runs and seeks it uses."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

from cpu.machine import GuestError
from debugger.search import Hit
from replay import log as L
from replay.player import Divergence
from snapshots.writeindex import WriteIndex

if TYPE_CHECKING:
    from debugger.timeline import Stop, Timeline


def last_write_text(found: Optional[tuple[int, Optional[int], bytes, bytes]], what: str,
                    instruction: Callable[[int], str]) -> str:
    """The console's and the GDB monitor's answer to last-write of `what` (the memory, named as
    they name addresses); `instruction(rip)` names the instruction that wrote."""
    if found is None:
        return f"no write to {what} since the start of the recording"
    icount, rip, old, new = found
    by = ", written from the debugger while recording" if rip is None else f" at {instruction(rip)}"
    return (f"last write to {what}: icount {icount}{by}\n"
            f"  old {old.hex(' ')}  (= {int.from_bytes(old, 'little'):#x})\n"
            f"  new {new.hex(' ')}  (= {int.from_bytes(new, 'little'):#x})")


class Writes:
    """The write queries of one timeline; see the module doc."""

    def __init__(self, timeline: Timeline) -> None:
        self.tl = timeline

    def last(self, addr: int, length: int) -> Optional[tuple[int, Optional[int], bytes, bytes]]:
        """Timeline.last_write: a reverse search with a write watch, back where it started."""
        tl = self.tl
        here, here_pos = tl.icount, tl.machine.seam.core.player.pos
        key = (addr, length, "w")
        added, changes_only = key not in tl.watchpoints, key in tl.changes_only
        if added:
            tl.add_watchpoint(addr, length, "w")
        tl.changes_only.discard(key)  # a GDB `watch` on the same bytes: it must see every write here

        def writes_here(h: Hit) -> bool:
            return (h.reason == "interrupt" or h.reason == "watchpoint" and h.write
                    and h.addr < addr + length and h.addr + h.size > addr)
        try:
            found = tl.search.last_hit(tl.start, here, writes_here, tl.icount_breaks,
                                       WriteIndex.pages_of(addr, length))
            if found is None:
                return None
            if found.reason == "interrupt":
                raise ValueError("interrupted")
            if found.record is not None:
                self.seek_to_logged(found.icount, found.record, False)
                old = tl.read_memory(addr, length)
                self.seek_to_logged(found.icount, found.record, True)
                return found.icount, None, old, tl.read_memory(addr, length)
            tl.seek(found.icount)
            rip, old = tl.pc(), tl.read_memory(addr, length)
            tl.seek(found.icount + 1)
            return found.icount, rip, old, tl.read_memory(addr, length)
        finally:
            if added:
                tl.remove_watchpoint(addr, length, "w")
            elif changes_only:
                tl.changes_only.add(key)
            self._return_to(here, here_pos)

    def _return_to(self, icount: int, log_pos: int) -> None:
        """Seek back to a position left for a query: to `icount` before the recording's debugger
        write there if the position was (a reverse search stopped at it)."""
        records = self.tl.machine.seam.core.player.records
        pending = records[log_pos] if log_pos < len(records) else None
        if pending is not None and pending.kind == L.MEMWRITE and pending.icount == icount:
            self.seek_to_logged(icount, log_pos, False)
        else:
            self.tl.seek(icount)

    def seek_to_logged(self, icount: int, record: int, made: bool) -> Stop:
        """Go to `icount` with the recording's debugger write there (its record in the log) not
        made yet, or (`made`) just made: where going back (forward) over that write stops. The
        writes and events the log has before it at `icount` are made."""
        tl, machine = self.tl, self.tl.machine
        player = machine.seam.core.player
        if tl.icount != icount or player.pos > record or tl.off_recording:
            stop = tl.seek(max(icount - 1, tl.start))
            if stop.reason != "step":
                return stop

        def at_the_write(address: int, data: bytes) -> None:
            if player.pos == record:
                if made:
                    machine.stop_after = "debugger-write"
                else:
                    machine.stop_before = "debugger-write"
        machine.debugger_write_hooks.append(at_the_write)
        try:
            tl._replay_to(icount)
        except (Divergence, GuestError) as e:
            return tl._fault(e)
        finally:
            machine.debugger_write_hooks.remove(at_the_write)
        return tl._stop("step")

    def logged_text(self, hit: Hit) -> str:
        """What a watchpoint stop at a write the recording's debugger made says ("" for others)."""
        if hit.record is None:
            return ""
        write = self.tl.machine.seam.core.player.records[hit.record]
        size = len(write.fields[1])
        return (f"written from the debugger while recording: {size} byte{'s' if size != 1 else ''} at "
                f"{write.fields[0]:#x}, at icount {hit.icount}")
