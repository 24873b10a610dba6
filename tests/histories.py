"""Random recordings for the segment runner's tests, and the queries asked of them.

A seed picks the guest, the icount shift, the snapshot policy and whether the recording starts
with an initial snapshot (without one, its first snapshot is a periodic one and queries replay
from boot to it); then a data object to watch, a function to count and a sampling interval, all
from the guest's ELF. Expected results come from a straight replay (one segment from boot) or
the debugger, never from numbers written here."""
from __future__ import annotations

import os
import random
import signal
from dataclasses import dataclass

from debugger.symbols import symbol_table
from history import Recording
from history.queries import Hits
from history.segments import Replayer, Segment
from tests.conftest import run_urr
from tests.replays import Elf

GUESTS = ("ticks", "clock", "irqtime", "corrupt")
STRAIGHT = 10**15  # a min_segment no recording reaches: the whole recording as one segment


@dataclass
class Case:
    seed: int
    guest: str
    kernel: str
    rrfile: str
    policy: str
    initial: bool
    watch: tuple[str, int]  # symbol, length
    function: str
    every: int

    def recording(self, min_segment: int = 0) -> Recording:
        """The recording, cut into segments of at least `min_segment` icounts (0: about a
        sixteenth of it, so that every recording here has several)."""
        rec = Recording(self.rrfile, self.kernel)
        rec.min_segment = min_segment or max(1000, rec.end_icount // 16)
        return rec


def make_case(seed: int, guests: dict[str, str], folder: str) -> Case:
    rng = random.Random(seed)
    guest = rng.choice(GUESTS)
    shift = rng.choice((6, 7, 8))
    fine = rng.choice((1, 2, 3))
    policy = rng.choice((f"{fine}ms", f"{fine}ms:{fine * 10}ms,{fine * 5}ms", "off"))
    initial = policy == "off" or rng.random() < 0.5
    rrfile = os.path.join(folder, f"{guest}-{seed}.rr")
    rr = f"shift={shift},rr=record,rrfile={rrfile}" + (",rrsnapshot=init" if initial else "")
    result = run_urr("-kernel", guests[guest], "-serial", "none", "-snapshots", policy, "-icount", rr, stdin=b"")
    assert "recorded" in result.err, result.err
    elf = Elf(guests[guest])
    table = symbol_table(guests[guest])
    objects = sorted(n for n, _, kind in table if kind == "STT_OBJECT" and elf.symbols[n][1] >= 4)
    functions = sorted(n for n, _, kind in table if kind == "STT_FUNC")
    name = rng.choice(objects)
    return Case(seed, guest, guests[guest], rrfile, policy, initial,
                (name, min(8, elf.symbols[name][1])), rng.choice(functions), rng.choice((50_000, 333_333, 1_000_000)))


def queries(rec: Recording, case: Case, **backend) -> dict:
    """Every query's results on the case's recording, run by `backend` (jobs=, ray=)."""
    symbol, length = case.watch
    return {"verify": rec.verify(**backend),
            "writes": rec.writes(symbol, length, **backend),
            "hits": rec.hits(case.function, registers=True, **backend),
            "sample": rec.sample("rsp", case.every, **backend)}


def straight_results(case: Case) -> dict:
    """The reference: every query as one segment replayed straight through from icount 0."""
    rec = case.recording(min_segment=STRAIGHT)
    out = queries(rec, case, jobs=1)
    assert len(rec.last_run.segments) == 1 and rec.last_run.segments[0].start_icount == 0
    return out


class DyingHits(Hits):
    """Hits whose worker is killed while replaying segment `victim`: the first time only if
    `marker` is a path (created then), every time if it is None."""

    def __init__(self, addr: int, victim: int, marker: str | None) -> None:
        super().__init__(addr)
        self.victim, self.marker = victim, marker

    def run(self, replayer: Replayer, segment: Segment) -> list:
        if segment.index == self.victim and (self.marker is None or not os.path.exists(self.marker)):
            if self.marker is not None:
                open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().run(replayer, segment)


def worker_deaths(rec_of_ticks, marker: str, died: str, **backend) -> None:
    """A worker killed in segment 1 once: the segment is retried and the results are the serial
    ones; killed every time: the query fails with one line matching `died`."""
    import pytest

    from history.runner import SegmentFailed

    rec = Recording(rec_of_ticks.rrfile, rec_of_ticks.kernel)
    rec.min_segment = 300_000
    addr = rec_of_ticks.elf.addr("pic_eoi")
    expected = rec.hits(addr, jobs=1)
    assert rec.run(DyingHits(addr, 1, marker), **backend) == expected
    assert os.path.exists(marker)
    with pytest.raises(SegmentFailed, match=r"^segment 1 \(icount \d+ to \d+\): " + died + "$"):
        rec.run(DyingHits(addr, 1, None), **backend)
