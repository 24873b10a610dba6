"""A recording cut at its snapshots into segments that replay independently.

Every snapshot starts an independent replay: restoring it and replaying forward reaches exactly
the states a straight replay reaches. So the intervals between consecutive snapshots (and, for
whole-history queries, from boot to the first snapshot and from the last one to the end of the
recording) can replay at the same time, in other processes or on other machines, and their
results, concatenated in icount order, are those of one straight replay.

Segment size. Consecutive intervals are merged into segments of at least
`max(min(MIN_SEGMENT, total / workers), total / (workers * SEGMENTS_PER_WORKER))` instructions:
- the slowest segment bounds the run, so there are about SEGMENTS_PER_WORKER segments per worker:
  a worker that got a slow one is not left holding the whole run's tail, while the others take
  the rest;
- each segment costs a fixed amount besides its replay (sending it to a worker, restoring its
  snapshot, translating the guest's code again: a few ms), which segments of MIN_SEGMENT (8 M
  instructions, ~0.15 s of replay here) keep to a few percent; but never so large that workers
  are left without a segment: with many workers, one segment each.
A segment cannot be cut finer than the snapshots: the longest interval between two of them
bounds the speed-up (docs/replay.md projects it).

A worker builds its machine once and reuses it for every segment it replays (`Replayer`)."""
from __future__ import annotations

import dataclasses

import os
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol

from cpu.disk import DiskImage
from cpu.loader import Kernel, Module, load_kernel
from cpu.machine import GuestError, Machine, Stop
from replay import log as L
from replay.player import Player
from replay.seam import Seam, SeamCore
from snapshots.catalog import Catalog, Snapshot, SnapshotInfo
from snapshots.state import restore

MIN_SEGMENT = 8_000_000  # icounts: a segment's fixed cost stays a few percent of its replay
SEGMENTS_PER_WORKER = 4  # so that the slowest segment is a small part of a worker's share
NO_KERNEL = Kernel("(from snapshots)", 0, (), "")  # a machine whose RAM comes from a snapshot


@dataclass(frozen=True)
class Interval:
    """Replay from snapshot `start` (None: boot) to `end_icount`, where snapshot `end` was taken
    (None: the end of the recording)."""
    start: Optional[str]
    start_icount: int
    end: Optional[str]
    end_icount: int

    @property
    def length(self) -> int:
        return self.end_icount - self.start_icount


@dataclass(frozen=True)
class Segment:
    """Consecutive intervals given to one worker as one task; `index` orders the results."""
    index: int
    intervals: tuple[Interval, ...]

    @property
    def start(self) -> Optional[str]:
        return self.intervals[0].start

    @property
    def start_icount(self) -> int:
        return self.intervals[0].start_icount

    @property
    def end_icount(self) -> int:
        return self.intervals[-1].end_icount

    @property
    def to_the_end(self) -> bool:
        """Whether it runs to the end of the recording (its end is no snapshot)."""
        return self.intervals[-1].end is None

    def describe(self) -> str:
        return f"segment {self.index} (icount {self.start_icount} to {self.end_icount})"

    def runs(self) -> list[tuple[Interval, ...]]:
        """Its stretches of consecutive intervals (all of it, unless a query skipped some):
        each replayed straight through from its first interval's snapshot."""
        out: list[list[Interval]] = []
        for interval in self.intervals:
            last = out[-1][-1] if out else None
            if last is not None and last.end is not None and last.end == interval.start:
                out[-1].append(interval)
            else:
                out.append([interval])
        return [tuple(run) for run in out]


def snapshot_pairs(infos: list[SnapshotInfo]) -> list[Interval]:
    """From each snapshot to the next (snapshots at the same icount make no interval)."""
    return [Interval(a.name, a.icount, b.name, b.icount) for a, b in zip(infos, infos[1:])
            if b.icount != a.icount]


def whole_history(infos: list[SnapshotInfo], end_icount: int, from_boot: bool) -> list[Interval]:
    """Intervals covering the recording: boot to the first snapshot (if `from_boot`), snapshot to
    snapshot, the last snapshot to `end_icount`."""
    out = []
    if not infos or (from_boot and infos[0].icount > 0):
        out.append(Interval(None, 0, infos[0].name if infos else None,
                            infos[0].icount if infos else end_icount))
    out += snapshot_pairs(infos)
    if infos and infos[-1].icount < end_icount:
        out.append(Interval(infos[-1].name, infos[-1].icount, None, end_icount))
    return [i for i in out if i.length > 0 or i.end is None]


def overlapping(intervals: list[Interval], ranges: list[tuple[int, int]]) -> list[Interval]:
    """The intervals that overlap any of the icount `ranges` ([begin, end) each): a query that
    knows where what it looks for can be (a write index) replays only those."""
    ordered = sorted(ranges)
    return [i for i in intervals
            if any(begin < (i.end_icount if i.end is not None else float("inf")) and i.start_icount < end
                   for begin, end in ordered)]


def plan(intervals: list[Interval], workers: int, min_segment: int = MIN_SEGMENT) -> list[Segment]:
    """Merge consecutive intervals into segments of at least the size the module doc gives."""
    total = sum(i.length for i in intervals)
    workers = max(1, workers)
    target = max(min(min_segment, total // workers), total // (workers * SEGMENTS_PER_WORKER))
    segments: list[Segment] = []
    current: list[Interval] = []
    for interval in intervals:
        current.append(interval)
        if sum(i.length for i in current) >= target:
            segments.append(Segment(len(segments), tuple(current)))
            current = []
    if current:
        segments.append(Segment(len(segments), tuple(current)))
    return segments


# -- what a worker has of the recording ---------------------------------------------------------


class Opened(Protocol):
    """A recording as one worker sees it: the log, the snapshots, their content, the kernel."""
    player: Player

    def snapshot(self, name: str) -> Snapshot: ...

    def blob(self, h: bytes) -> bytes: ...

    def kernel(self) -> Kernel: ...


class Source(Protocol):
    """How a worker gets the recording: picklable, opened in the worker."""
    recording_id: str

    def open(self) -> Opened: ...


class RecordingError(ValueError):
    """The recording cannot be replayed as asked; one line for the user."""


@dataclass
class FileSource:
    """The recording's files, which each worker opens itself (same machine, or shared storage)."""
    rrfile: str
    db: str
    kernel_path: Optional[str]
    recording_id: str
    modules: tuple[tuple[str, str], ...] = ()  # each -initrd module: (recorded command line, file)
    _opened: Optional["OpenedFiles"] = field(default=None, repr=False, compare=False)

    def open(self) -> "OpenedFiles":
        if self._opened is None:  # once per process: the log is read and checked once
            self._opened = OpenedFiles(self)
        return self._opened

    def close(self) -> None:
        if self._opened is not None and self._opened.catalog is not None:
            self._opened.catalog.close()
        self._opened = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_opened": None}


class OpenedFiles:
    def __init__(self, source: FileSource) -> None:
        self.source = source
        self.player = Player(L.LogReader(source.rrfile))
        # Opened for reading only: nothing here writes to it.
        self.catalog = (Catalog.open(source.db, source.recording_id, create=False, read_only=True)
                        if os.path.exists(source.db) else None)
        self._kernel: Optional[Kernel] = None

    def snapshot(self, name: str) -> Snapshot:
        assert self.catalog is not None
        return self.catalog.load(name)

    def blob(self, h: bytes) -> bytes:
        assert self.catalog is not None
        return self.catalog.get_blob(h)

    def kernel(self) -> Kernel:
        if self._kernel is None:
            if self.source.kernel_path is None:
                raise RecordingError("replaying from boot needs the kernel (--kernel ELF)")
            kernel = load_kernel(self.source.kernel_path, self.player.reader.config["ram_size"])
            # the recorded command lines: the boot writes them into RAM
            modules = tuple(Module(cmdline, _read(path)) for cmdline, path in self.source.modules)
            self._kernel = dataclasses.replace(kernel, modules=modules)
        return self._kernel


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise RecordingError(f"cannot read -initrd module {path}: {e.strerror}") from None


# -- replaying a segment ------------------------------------------------------------------------


def replay_machine(config: dict, kernel: Kernel, player: Player) -> Machine:
    """A replay machine for a recording with this header (guest output goes nowhere)."""
    seam = Seam(SeamCore("replay", lambda: 0, None, player))
    disk = DiskImage.without_base(int(config["disk"]["sectors"])) if config.get("disk") else None
    return Machine(kernel, config["ram_size"], config["shift"], seam, disk,
                   cmdline=config.get("cmdline", ""))  # the boot puts it in RAM: the recorded one


class Replayer:
    """A worker's machine, reused for each segment: restored to a snapshot, or booted afresh."""

    def __init__(self) -> None:
        self.opened: Optional[Opened] = None
        self._machine: Optional[Machine] = None

    def bind(self, opened: Opened) -> "Replayer":
        self.opened = opened
        return self

    def at(self, snapshot: Optional[str]) -> Machine:
        """The machine at snapshot `snapshot` (None: at boot), its log cursor there."""
        opened = self.opened
        assert opened is not None
        config = opened.player.reader.config
        if snapshot is None:
            opened.player.pos = 0
            return replay_machine(config, opened.kernel(), opened.player)
        if self._machine is None:
            self._machine = replay_machine(config, NO_KERNEL, opened.player)
        machine = self._machine
        machine.seam.core.player = opened.player
        restore(machine, opened.snapshot(snapshot), opened.blob)
        return machine


def run_until(machine: Machine, until: Optional[int]) -> Stop:
    """`machine.run(until)`, a recording's own end by a guest fault counting as its end."""
    try:
        return machine.run(until)
    except GuestError as e:
        player = machine.seam.core.player
        last = player.records[-1] if player.records else None
        if player.finished and last is not None and last.icount == e.icount:
            return Stop("end", e.icount, None, str(e))
        raise


def recording_span(reader: L.LogReader, start_chunk: int, end_icount: Optional[int]) -> tuple[bytes, int]:
    """The log header and the chunks from offset `start_chunk` on that a replay to `end_icount`
    (None: the end) reads, as one log; and by how much its chunk offsets moved down."""
    data = reader.data
    first = reader.first_chunk
    stop = start_chunk
    for chunk in reader.chunks(start_chunk):
        stop = chunk.next_offset
        # Records at exactly a chunk's end_icount may be in the next chunk: stop after a chunk
        # that ends past the target.
        if end_icount is not None and chunk.end_icount > end_icount:
            break
    else:
        stop = len(data)  # to the end: a torn tail stays torn
    return data[:first] + data[start_chunk:stop], start_chunk - first


@dataclass
class ShippedSource:
    """A segment's share of the recording, carried to a worker that has no access to its files
    (a Ray task): the log span, the snapshots it restores or compares, their content, the kernel."""
    recording_id: str
    name: str
    log: bytes
    snapshots: dict[str, Snapshot]
    blobs: dict[bytes, bytes]
    kernel_image: Optional[Kernel]
    player: Optional[Player] = None  # made in the worker by `open`

    def open(self) -> "ShippedSource":
        if self.player is None:
            self.player = Player(L.LogReader.from_bytes(self.name, self.log))
        return self

    def snapshot(self, name: str) -> Snapshot:
        return self.snapshots[name]

    def blob(self, h: bytes) -> bytes:
        return self.blobs[h]

    def kernel(self) -> Kernel:
        if self.kernel_image is None:
            raise RecordingError("replaying from boot needs the kernel (--kernel ELF)")
        return self.kernel_image


def ship(source: FileSource, segment: Segment, restored: list[str], compared: list[str],
         kernel: Optional[Kernel]) -> ShippedSource:
    """What `segment` needs of `source`, for a worker without its files: the snapshots it
    restores, with their content, and those it compares with (log positions moved to the
    span's offsets)."""
    opened = source.open()
    reader = opened.player.reader
    names = list(dict.fromkeys(restored + compared))
    snaps = {n: opened.snapshot(n) for n in names}
    start = snaps[segment.start].log_pos["chunk"] if segment.start is not None else reader.first_chunk
    end = None if segment.to_the_end else segment.end_icount
    log, moved = recording_span(reader, start, end)
    for snap in snaps.values():
        snap.log_pos = {**snap.log_pos, "chunk": snap.log_pos["chunk"] - moved}
    needed = {h for n in restored for h in snaps[n].references()}
    blobs = {h: opened.blob(h) for h in needed}
    return ShippedSource(source.recording_id, f"{source.rrfile} (span from byte {start})", log,
                         snaps, blobs, kernel if segment.start is None else None)


class Query(Protocol):
    """Work done on every segment of a recording, its results merged in icount order."""
    label: str  # what progress bars and errors call it

    def intervals(self, infos: list[SnapshotInfo], end_icount: int, from_boot: bool) -> list[Interval]:
        """The intervals the query replays."""

    def snapshots_used(self, segment: Segment) -> tuple[list[str], list[str]]:
        """The snapshots a segment restores, and those it only compares with."""

    def run(self, replayer: Replayer, segment: Segment) -> list:
        """The segment's results, in icount order."""


Progress = Callable[[int], None]  # told the icounts each finished segment covered
