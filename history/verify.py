"""Checking a snapshot catalog against its recording: restore each snapshot, replay to the next,
and compare the machine with what the next one stored.

No kernel file is needed: a snapshot holds all of RAM, code included. Each pair of snapshots is
checked on its own (the earlier one restored, even inside a segment), so a bad snapshot spoils
only its own two comparisons, and any split into segments finds the same mismatches. A catalog
with fewer than two snapshots has nothing to compare: the recording is replayed as one segment
(from boot, with the kernel, or from its one snapshot), its digests checking the replay."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from cpu.machine import GuestError
from history.segments import Interval, Replayer, Segment, run_until, snapshot_pairs, whole_history
from replay.player import Divergence
from snapshots.catalog import Snapshot, SnapshotInfo, TreePages
from snapshots.state import capture

END = "(end of the recording)"


@dataclass(frozen=True)
class Mismatch:
    name: str  # the snapshot that does not match its replay (END: the replay to the end failed)
    icount: int
    what: str


def _differences(expected: Snapshot, got: Snapshot) -> list[str]:
    out = []
    regs = [k for k in expected.cpu if expected.cpu[k] != got.cpu.get(k)]
    if regs:
        out.append("registers " + ", ".join(regs[:8]))
    same_tree = (isinstance(expected.pages, TreePages) and isinstance(got.pages, TreePages)
                 and expected.pages.root == got.pages.root)  # equal roots: every page equal
    pages = [] if same_tree else sorted(p for p in set(expected.pages) | set(got.pages)
                                        if expected.pages.get(p) != got.pages.get(p))
    if pages:
        out.append("RAM pages " + ", ".join(f"{p * 4096:#x}" for p in pages[:8]))
    devices = [d for d in expected.devices["board"] if expected.devices["board"][d] != got.devices["board"].get(d)]
    if devices:
        out.append("devices " + ", ".join(devices))
    if expected.disk != got.disk:
        out.append("disk overlay")
    return out


class Verify:
    """The segment query `urr-snap verify` runs."""
    label = "verify"

    def intervals(self, infos: list[SnapshotInfo], end_icount: int, from_boot: bool) -> list[Interval]:
        pairs = snapshot_pairs(infos)
        return pairs if pairs else whole_history(infos, end_icount, from_boot)

    def snapshots_used(self, segment: Segment) -> tuple[list[str], list[str]]:
        return ([i.start for i in segment.intervals if i.start is not None],
                [i.end for i in segment.intervals if i.end is not None])

    def run(self, replayer: Replayer, segment: Segment) -> list[Mismatch]:
        problems: list[Mismatch] = []
        for interval in segment.intervals:
            machine = replayer.at(interval.start)
            name = interval.end or END
            try:
                run_until(machine, interval.end_icount if interval.end is not None else None)
            except (Divergence, GuestError) as e:
                problems.append(Mismatch(name, e.icount, str(e)))
                continue
            if interval.end is None:
                continue
            cap = capture(machine, interval.end, "periodic", full=True)
            got = cap.snapshot({}, cap.nodes.__getitem__)
            assert replayer.opened is not None
            diffs = _differences(replayer.opened.snapshot(interval.end), got)
            if diffs:
                problems.append(Mismatch(interval.end, interval.end_icount, "; ".join(diffs)))
        return problems


def first_mismatch_text(problems: list[Mismatch]) -> Optional[str]:
    if not problems:
        return None
    p = problems[0]
    if p.name == END:
        return f"the replay to the end of the recording failed: {p.what}"
    return f"snapshot {p.name} (icount {p.icount}) does not match its replay: {p.what}"
