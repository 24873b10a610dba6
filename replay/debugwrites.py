"""A debugger's writes to memory and registers: inputs like any other.

Recording: each write GDB or the console makes is logged at its icount (address and bytes, or
register name and value), so the replay makes the same write at the same point and follows the
run the recording saw. Replay: the logged writes are made by the executor, as it delivers
interrupts; a write the user makes now is no input of the recording, so it takes the replay off
its recording (`changed_at`) until a snapshot of the recording is restored."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from replay import log as L

if TYPE_CHECKING:
    from replay.seam import SeamCore  # which imports this module


class DebuggerWrites:
    """The seam's input class for a debugger's writes (see the module doc)."""

    def __init__(self, core: SeamCore) -> None:
        self.core = core
        self.changed_at: Optional[int] = None  # replay: the icount of the first write off the recording
        self.changed: str = ""  # what that write changed, for the divergence it makes

    def memory(self, address: int, data: bytes) -> None:
        """Before the debugger writes `data` at `address`."""
        if self.core.replaying:
            self._off_recording(f"memory at {address:#x}")
        else:
            self.core.log(L.MEMWRITE, address, bytes(data))

    def register(self, name: str, value: int) -> None:
        """Before the debugger writes `value` into register `name` (cpu.cpustate's name)."""
        if self.core.replaying:
            self._off_recording(f"register {name}")
        else:
            self.core.log(L.REGWRITE, name.encode(), value)

    def _off_recording(self, what: str) -> None:
        if self.changed_at is None:
            self.changed_at, self.changed = self.core.now(), what

    def back_on_recording(self) -> None:
        """A snapshot of the recording was restored: the state is the recording's again."""
        self.changed_at, self.changed = None, ""

    def divergence_text(self) -> str:
        """What a replay left off its recording says (empty while on it)."""
        if self.changed_at is None:
            return ""
        return (f"the debugger changed {self.changed} there, so this is not the recorded run "
                "(go back to return to it, or branch to record the changed run)")
