"""The seam between the machine and the event log.

`Seam` is what devices and the executor hold. It has one attribute per input class (time, block,
entropy, char, events, digest: one small module each) and one core that knows the mode:

- "plain": inputs come from the host, nothing is logged;
- "record": inputs come from the host and each is logged, stamped with the current icount;
- "replay": inputs come from the log; the host is never consulted.

A debugger's writes (replay.debugwrites) are inputs too: logged in a recording, made again in
its replay; in a replay, one made by the user takes the run off its recording.

A device makes one call at its point of non-determinism and cannot tell the modes apart."""
from __future__ import annotations

from typing import Any, Callable, Optional

from replay import log as L
from replay.block import BlockInputs
from replay.char import CharInputs
from replay.debugwrites import DebuggerWrites
from replay.digest import DigestCheck
from replay.entropy import EntropyInputs
from replay.events import AsyncEvents
from replay.player import Divergence, Player
from replay.time import TimeInputs


class SeamCore:
    """Mode, clock and log end shared by the input-class modules."""

    def __init__(self, mode: str, now: Callable[[], int],
                 writer: Optional[L.LogWriter] = None, player: Optional[Player] = None) -> None:
        self.mode = mode
        self.now = now
        self.writer = writer
        self.player = player

    @property
    def recording(self) -> bool:
        return self.mode == "record"

    @property
    def replaying(self) -> bool:
        return self.mode == "replay"

    def log(self, kind: int, *fields: Any) -> None:
        if self.writer is not None:
            self.writer.append(kind, self.now(), *fields)

    def take(self, kind: int) -> L.Record:
        """The logged record this input must correspond to (replay only)."""
        assert self.player is not None
        return self.player.take(kind, self.now())

    def value(self, kind: int, prefix: tuple[Any, ...], produce: Callable[[], Any]) -> Any:
        """One synchronous input: the produced value (logged) or the logged value (replay).

        `prefix` identifies the input (a source number, an LBA); replay checks it matches."""
        if self.replaying:
            rec = self.take(kind)
            if rec.fields[:len(prefix)] != prefix:
                raise Divergence(self.now(), f"replay expected {L.NAMES[kind]} {rec.fields[:len(prefix)]} "
                                             f"but the guest asked for {prefix}")
            return rec.fields[-1]
        value = produce()
        self.log(kind, *prefix, value)
        return value


class Seam:
    """Everything non-deterministic, by input class (time, block, entropy, char, events, digest,
    debugger)."""

    def __init__(self, core: SeamCore) -> None:
        self.core = core
        self.mode = core.mode
        self.time = TimeInputs(core)
        self.block = BlockInputs(core)
        self.entropy = EntropyInputs(core)
        self.char = CharInputs(core)
        self.events = AsyncEvents(core)
        self.digest = DigestCheck(core)
        self.debugger = DebuggerWrites(core)

    def record_into(self, writer: L.LogWriter) -> None:
        """Leave replay: from now on inputs come from the host and are logged to `writer` (a
        branch). Devices ask the core at every input; the executor at every `run`."""
        self.core.mode = self.mode = "record"
        self.core.writer = writer
        self.core.player = None
        self.debugger.back_on_recording()  # the changed state is the branch's own start

    @classmethod
    def plain(cls, now: Callable[[], int] = lambda: 0) -> "Seam":
        return cls(SeamCore("plain", now))


def PlainSeam() -> Seam:
    """A seam for tests and plain runs: host inputs, nothing logged."""
    return Seam.plain()
