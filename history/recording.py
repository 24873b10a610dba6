"""A recording as a whole, for questions about its entire history:

    from history import Recording

    rec = Recording("corrupt.rr", "guests/build/corrupt.elf")
    for w in rec.writes("total_checks", 8, jobs=2):    # every write, in icount order
        print(w.icount, hex(w.rip), w.instruction, w.old.hex(), w.new.hex())
    hits = rec.hits("report_corruption", registers=True)
    series = rec.sample("*total_checks", every=1_000_000)
    problems = rec.verify(ray="")                        # "" : a local Ray instance

Each query is split into segments at the snapshots (history.segments) and run by a backend
(history.runner): `jobs` local processes (default: every core; 1 runs in this process) or a Ray
cluster (`ray=ADDRESS`). Every backend returns what the serial replay returns."""
from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

from cpu import cpustate
from cpu.loader import KernelError, read_modules
from debugger.symbols import Symbols, parse_number
from history.queries import Expression, Hit, Hits, Sample, Samples, Write, Writes
from history.runner import Backend, Done, default_jobs, execute
from history.segments import MIN_SEGMENT, FileSource, Query, RecordingError, Segment, plan
from history.verify import Mismatch, Verify
from replay import log as L
from replay.player import Player
from snapshots.catalog import Catalog, SnapshotInfo
from snapshots.writeindex import WriteIndex

Address = Union[int, str]
SAMPLE_REGISTERS = (cpustate.GPRS + cpustate.SELECTORS + cpustate.CONTROL + cpustate.BASES
                    + ("mxcsr",) + tuple(cpustate.MSRS))


@dataclass
class RunStats:
    """How the last query ran: its segments, how each ran (seconds and CPU seconds in its
    worker, which worker: `history.runner.Done` without the results), the whole time."""
    segments: list[Segment] = field(default_factory=list)
    ran: list[Done] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def segment_seconds(self) -> list[float]:
        return [d.seconds for d in self.ran]


def _sha256_of(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


class Recording:
    """An rrfile with its snapshot catalog (`rrfile.db`, or `db`) and, when given or found, its
    kernel ELF (needed for symbols and to replay from boot to the first snapshot)."""

    def __init__(self, rrfile: str, kernel: Optional[str] = None, db: Optional[str] = None,
                 note: Callable[[str], None] = lambda text: None, initrd: Optional[str] = None) -> None:
        self.rrfile = rrfile
        self.db = db or f"{rrfile}.db"
        self.note = note  # told what the user should know (no snapshots, a span not covered)
        player = Player(L.LogReader(rrfile))
        self.config = player.reader.config
        self.end_icount = player.end_icount
        # Which digest intervals may hold a write to a page (the debugger's searches use it too)
        self.write_index = WriteIndex.from_log(self.config, player.records)
        self.kernel = self._kernel(kernel)
        self.modules = self._modules(initrd)
        self.symbols = Symbols(self.kernel)
        self.snapshots = self._snapshots()
        self.min_segment = MIN_SEGMENT  # fewest icounts per segment (see history.segments)
        self.last_run = RunStats()

    def _kernel(self, given: Optional[str]) -> Optional[str]:
        """The given ELF (which must be the recorded one), else the recorded kernel's file name
        beside the rrfile or in the current directory, if its hash matches."""
        want = self.config.get("kernel_sha256")
        if given is not None:
            try:
                with open(given, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            except OSError as e:
                raise RecordingError(f"cannot read kernel {given}: {e.strerror}") from None
            if digest != want:
                raise RecordingError(f"{given} is not the kernel {self.rrfile} was recorded with "
                                     f"({self.config.get('kernel', '?')}, sha256 mismatch)")
            return given
        name = self.config.get("kernel")
        for folder in (os.path.dirname(os.path.abspath(self.rrfile)), os.getcwd()):
            path = os.path.join(folder, name) if name else ""
            if path and os.path.isfile(path):
                with open(path, "rb") as f:
                    if hashlib.sha256(f.read()).hexdigest() == want:
                        return path
        return None

    def _modules(self, given: Optional[str]) -> Optional[tuple[tuple[str, str], ...]]:
        """(recorded command line, file) of each recorded -initrd module, for a replay from boot:
        the files given (-initrd's syntax), else the recorded paths or those names beside the
        rrfile; each must have the recorded content (sha256). None: not all were found."""
        recorded = self.config.get("modules", [])
        if given is not None:
            try:
                files = read_modules(given)
            except KernelError as e:
                raise RecordingError(str(e)) from None
            if [hashlib.sha256(m.data).hexdigest() for m in files] != [m.get("sha256") for m in recorded]:
                raise RecordingError(f"--initrd {given}: the modules differ from those {self.rrfile} was "
                                     f"recorded with ({len(recorded)}: {', '.join(m.get('cmdline', '?') for m in recorded) or 'none'})")
            return tuple((m["cmdline"], f.cmdline.split()[0]) for m, f in zip(recorded, files))
        found = []
        for module in recorded:
            path = str(module.get("cmdline", "")).split(" ")[0]
            places = [path, os.path.join(os.path.dirname(os.path.abspath(self.rrfile)), os.path.basename(path))]
            match = next((p for p in places if p and _sha256_of(p) == module.get("sha256")), None)
            if match is None:
                return None
            found.append((module["cmdline"], match))
        return tuple(found)

    def _snapshots(self) -> list[SnapshotInfo]:
        if not os.path.exists(self.db):
            return []
        with Catalog.open(self.db, self.config["recording_id"], create=False, read_only=True) as catalog:
            infos = catalog.list()
        # A recording killed leaves snapshots taken after its log's last complete chunk: they
        # cannot be replayed from, and are left out (a replay from them would find no log).
        past = [i for i in infos if i.icount > self.end_icount]
        if past:
            self.note(f"{len(past)} snapshots past the end of {self.rrfile} (icount {self.end_icount}: "
                      f"its recording was cut short) are left out")
        return [i for i in infos if i.icount <= self.end_icount]

    def address(self, where: Address) -> int:
        """An address, or a symbol (`total_checks`, `kmain+16`) of the kernel."""
        if isinstance(where, int):
            return where
        if not self.kernel and not where.strip().lstrip("*")[:1].isdigit():
            raise RecordingError(f"symbol '{where}' needs the kernel ELF (--kernel; "
                                 f"{self.rrfile} was recorded with {self.config.get('kernel', '?')})")
        return self.symbols.address(where)

    def expression(self, text: str) -> Expression:
        """`rax` / `$rax` (a register) or `*ADDR[:LEN]` (LEN bytes of memory, default 8)."""
        text = text.strip()
        if text.startswith("*"):
            where, _, length = text[1:].partition(":")
            n = parse_number(length, "length", minimum=1) if length else 8
            if n > 8:
                raise RecordingError(f"bad expression '{text}': at most 8 bytes")
            return Expression(addr=self.address(where), length=n)
        name = text.lstrip("$").lower()
        name = "rflags" if name == "eflags" else name
        if name not in SAMPLE_REGISTERS:
            raise RecordingError(f"bad expression '{text}': a register (rax, rip, cr3, ...) or *ADDR[:LEN]")
        return Expression(register=name)

    # -- queries --------------------------------------------------------------------------------

    def run(self, query: Query, jobs: Optional[int] = None, ray: Optional[str] = None,
            progress: bool = False) -> list:
        """Run any segment query; its results in icount order."""
        backend = Backend(jobs or default_jobs(), ray)
        branch = "parent" in self.config  # its log starts at its branch point (urr.branch)
        from_boot = self.kernel is not None and self.modules is not None and not branch
        if not self.snapshots and not from_boot:
            missing = (f"the -initrd modules (--initrd; it was recorded with "
                       f"{', '.join(m.get('cmdline', '?') for m in self.config.get('modules', []))})"
                       if self.kernel is not None else
                       f"the kernel (--kernel; it was recorded with {self.config.get('kernel', '?')})")
            raise RecordingError(f"{self.rrfile} has no snapshots to replay from: give {missing}")
        if not self.snapshots:
            where = "no snapshot catalog" if not os.path.exists(self.db) else "no snapshots"
            self.note(f"{self.rrfile} has {where}: replaying it as one segment from boot")
        elif not from_boot and self.snapshots[0].icount > 0 and not isinstance(query, Verify):
            self.note(f"icounts before {self.snapshots[0].icount} (the first snapshot) are not covered: "
                      + ("they are the parent recording's" if branch
                         else "replaying them needs the kernel (--kernel)" if self.kernel is None
                         else "replaying them needs the -initrd modules (--initrd)"))
        segments = plan(query.intervals(self.snapshots, self.end_icount, from_boot), backend.workers(),
                        self.min_segment)
        source = FileSource(self.rrfile, self.db, self.kernel, self.config["recording_id"], self.modules or ())
        bar = _progress_bar(query.label, sum(s.end_icount - s.start_icount for s in segments), progress)
        t0 = time.perf_counter()
        try:
            results, ran = execute(query, source, segments, backend, bar.update)
        finally:
            bar.close()
        self.last_run = RunStats(segments, ran, time.perf_counter() - t0)
        return results

    def verify(self, jobs: Optional[int] = None, ray: Optional[str] = None,
               progress: bool = False) -> list[Mismatch]:
        """Replay from each snapshot to the next and compare; the mismatches (none: all agree)."""
        return self.run(Verify(), jobs, ray, progress)

    def writes(self, where: Address, length: int = 8, jobs: Optional[int] = None,
               ray: Optional[str] = None, progress: bool = False) -> list[Write]:
        """Every write to [where, where+length) over the whole recording. Only the snapshot
        intervals in which the log's digests say the memory's pages may have been written are
        replayed (all of them for a log whose digests list changed pages only)."""
        addr = self.address(where)
        ranges = self.write_index.ranges(WriteIndex.pages_of(addr, length), 0, self.end_icount)
        return self.run(Writes(addr, length, ranges), jobs, ray, progress)

    def hits(self, where: Address, registers: bool = False, jobs: Optional[int] = None,
             ray: Optional[str] = None, progress: bool = False) -> list[Hit]:
        """Every execution of the instruction at `where`."""
        return self.run(Hits(self.address(where), registers), jobs, ray, progress)

    def sample(self, expression: str, every: int, jobs: Optional[int] = None,
               ray: Optional[str] = None, progress: bool = False) -> list[Sample]:
        """The expression's value at icounts 0, every, 2*every, ..."""
        if every < 1:
            raise RecordingError(f"bad interval {every}: at least 1 icount")
        return self.run(Samples(self.expression(expression), every), jobs, ray, progress)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(label: str, total: int, shown: bool):
    """A tqdm bar in instructions on a terminal's stderr (nothing elsewhere)."""
    if not shown:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=label, unit="instr", unit_scale=True, file=sys.stderr,
                disable=not sys.stderr.isatty())
