"""Replay: the machine does what its recording did at each icount.

The executor (cpu.machine) runs the guest; in a replay it asks a `Follower`, at every slice
boundary, to take the log's records due there (interrupts, wake-ups, input bytes, a debugger's
writes, the end) and to check that the guest's exit or fault is the recording's."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Optional

from cpu import cpustate
from cpu.outcome import EXIT_REASON, FAULT_REASON, TRUNCATED_REASON, GuestError, RecordedFault, Stop
from replay import log as L
from replay.player import Divergence

if TYPE_CHECKING:
    from cpu.machine import Machine


class Follower:
    """The replay's side of one machine: its log's records, taken where they were made."""

    def __init__(self, machine: Machine) -> None:
        self.m = machine

    def events(self) -> Optional[Stop]:
        """Do what the recording did at this icount: deliver, wake, feed input, or end."""
        m = self.m
        player = m.seam.core.player
        while True:
            self.final_digest()
            rec = player.peek()
            if rec is not None and rec.icount < m.icount:
                raise Divergence(m.icount, f"the recording's {L.NAMES[rec.kind]} at icount "
                                           f"{rec.icount} was never reached")
            if rec is None or rec.icount != m.icount or rec.kind not in L.ASYNC:
                break
            if rec.kind == L.IRQ:
                player.take(L.IRQ, m.icount)
                if not m.pic.pending():
                    raise Divergence(m.icount, f"the recording delivered vector {rec.fields[0]:#x} "
                                               "but no interrupt is pending")
                vector = m.pic.acknowledge()
                if vector != rec.fields[0]:
                    raise Divergence(m.icount, f"interrupt vector {vector:#x} where the recording "
                                               f"delivered {rec.fields[0]:#x}")
                m._interrupt(vector)
            elif rec.kind == L.WAKE:
                if not m.halted:
                    raise Divergence(m.icount, "the recording woke a halted CPU here; this one runs")
                player.take(L.WAKE, m.icount)
                m.icount += rec.fields[0]  # still halted until an interrupt is delivered
                m.timers.fire_due(m.icount)
            elif rec.kind == L.CHAR:
                m.uart.receive(m.seam.char.logged())
            elif rec.kind in (L.MEMWRITE, L.REGWRITE):
                stop = self._debugger_write(rec)
                if stop is not None:
                    return stop
            else:  # END
                status, reason = rec.fields[0], rec.fields[1].decode(errors="replace")
                if status >= 0:
                    raise Divergence(m.icount, f"the recording's guest exited here with status "
                                               f"{status}; the replay's runs on")
                player.take(L.END, m.icount)
                if reason.startswith(FAULT_REASON):
                    self._fault_again(reason)
                return Stop("end", m.icount, None, reason)
        return self.log_cut()

    def _debugger_write(self, rec: L.Record) -> Optional[Stop]:
        """Make the write the recording's debugger made here. A debugger write hook may stop the
        run before a write to memory (setting the machine's stop_before: the next run makes it)
        or right after it (stop_after), as a watchpoint on those bytes does."""
        m = self.m
        m.stop_before = m.stop_after = None
        try:
            if rec.kind == L.MEMWRITE:
                for hook in m.debugger_write_hooks:
                    hook(rec.fields[0], rec.fields[1])
                if m.stop_before is not None:
                    return Stop(m.stop_before, m.icount)
                m.seam.core.player.take(rec.kind, m.icount)
                m._poke_memory(rec.fields[0], rec.fields[1])
            else:
                m.seam.core.player.take(rec.kind, m.icount)
                cpustate.write_register(m.uc, rec.fields[0].decode("ascii", errors="replace"), rec.fields[1])
        except ValueError as e:
            raise Divergence(m.icount, f"the recording's {L.NAMES[rec.kind]} here cannot be "
                                       f"made: {e}") from None
        return Stop(m.stop_after, m.icount) if m.stop_after is not None else None

    def log_cut(self) -> Optional[Stop]:
        """The end of a log that has no end record (a killed recording), once reached."""
        player = self.m.seam.core.player
        if self.m.icount >= player.end_icount and not player.finished:
            return Stop("end", self.m.icount, None, TRUNCATED_REASON)
        return None

    def exit(self) -> Optional[Stop]:
        """The guest exited, so the recording must end here with the same status (its end
        record is taken), unless the log was cut off before it got here."""
        m = self.m
        player = m.seam.core.player
        self.final_digest()
        rec = player.peek()
        if rec is None:
            last = player.records[-1] if player.records else None
            if last is not None and last.kind == L.END and last.icount == m.icount \
                    and last.fields[0] == m.exit_status:
                return None  # taken already: the position was at this exit before
            cut = self.log_cut()
            if cut is not None:
                return cut
        said = f"the guest exited with status {m.exit_status}"
        if rec is None or rec.kind != L.END or rec.icount != m.icount:
            where = "has no more records" if rec is None else \
                f"has {L.NAMES[rec.kind]} at icount {rec.icount}"
            raise Divergence(m.icount, f"{said} but the log {where}")
        reason = rec.fields[1].decode(errors="replace")
        if rec.fields[0] != m.exit_status or reason != EXIT_REASON:
            status = "no status" if rec.fields[0] < 0 else f"status {rec.fields[0]}"
            raise Divergence(m.icount, f"{said} where the recording ended with {status} ({reason})")
        player.take(L.END, m.icount)
        return None

    def _fault_again(self, reason: str) -> None:
        """The recording ended in a guest fault here: the replay must meet it too, and raises the
        same GuestError; running on instead is a divergence."""
        m = self.m
        at = m.icount
        try:
            if m.halted:
                m._idle(None)
            else:
                m._slice(1)
        except GuestError as e:
            raise self.as_recorded(reason, at, e) from None
        raise Divergence(at, f"the recording ended here with '{reason}'; the replay runs on")

    def fault(self, e: GuestError) -> Exception:
        """What a guest fault the replay met is: the recording's own end there (an unmapped
        fetch faults at the end of the slice before the end record), or a divergence."""
        player = self.m.seam.core.player
        rec = player.peek()
        if rec is not None and rec.kind == L.END and rec.icount == e.icount:
            player.take(L.END, e.icount)
            return self.as_recorded(rec.fields[1].decode(errors="replace"), e.icount, e)
        return Divergence(e.icount, f"the guest faulted where the recording did not: {e}")

    def as_recorded(self, reason: str, at: int, e: GuestError) -> Exception:
        """What the replay's fault `e` is where the recording ended with `reason`: the same
        fault (icount and RIP), told in the recording's words (why a halt is final depends on
        whether host input was still open, which a replay does not have), or a divergence."""
        recorded = re.fullmatch(rf"{re.escape(FAULT_REASON)}(.*) \(icount (\d+), rip (0x[0-9a-f]+)\)", reason)
        if recorded is None or (int(recorded[2]), int(recorded[3], 16)) != (e.icount, e.rip):
            return Divergence(at, f"the recording ended here with '{reason}'; the replay with '{FAULT_REASON}{e}'")
        return RecordedFault(recorded[1], e.icount, e.rip)

    def final_digest(self) -> None:
        """Check the digest a recording logs of its final state, just before its end record (a
        run that ends within 2^20 icounts of the last digest, or before the first, is checked
        too; recordings that ended in a fault, which are checked by where it is, and logs
        written before it have none)."""
        m = self.m
        player = m.seam.core.player
        rec = player.peek()
        if rec is None or rec.kind != L.DIGEST or rec.icount != m.icount:
            return
        following = player.records[player.pos + 1] if player.pos + 1 < len(player.records) else None
        if following is not None and following.kind == L.END and following.icount == m.icount:
            m._state_digest()
