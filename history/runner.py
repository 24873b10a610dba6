"""Running a query's segments: in this process, in local worker processes, or as Ray tasks.

Every backend hands each segment to `run_segment` and concatenates the results in segment
order, so they are the serial run's, whatever ran where and finished when. A segment whose
replay fails (a divergence, a corrupt snapshot) fails the query at once: replaying it again would
fail the same way. A worker that dies while replaying a segment (killed, out of memory) is
replaced and the segment retried once; a second death fails the query, naming the segment.
A caller that may be asked to stop (a reverse search's Ctrl-C) gives `cancelled`, which every
backend asks at least every CANCEL_POLL_S while it waits: the workers stop at once."""
from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Callable, NamedTuple, Optional

from history.segments import FileSource, Progress, Query, Replayer, Segment, Source

RETRIES = 1  # a segment whose worker died is given to another worker this many times
CANCEL_POLL_S = 0.05  # the longest a backend waits for results before asking `cancelled`
Cancel = Callable[[], bool]


class SegmentFailed(Exception):
    """A segment could not be replayed; the message is one line naming it."""


class Cancelled(Exception):
    """The caller's `cancelled()` said to stop: the segments still running were abandoned."""


def _never() -> bool:
    return False


@dataclass(frozen=True)
class Backend:
    """Where segments run: `jobs` local processes (1: this process), or a Ray cluster when
    `ray` is set ("": a local Ray instance started for this run; else its address)."""
    jobs: int = 1
    ray: Optional[str] = None

    def workers(self) -> int:
        """How many segments can run at once (a Ray cluster's size is known once connected:
        this is a lower bound for planning)."""
        return max(1, self.jobs)


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


_replayer: dict[str, Replayer] = {}  # this process's machine, by recording: reused per segment
_inherited: list[Replayer] = []  # a forked worker's copy of its parent's: never used, never freed


class Done(NamedTuple):
    """A segment's results, the seconds its worker spent on it (setting up included), the CPU
    seconds of those, and which worker process it was."""
    results: list
    seconds: float
    cpu: float
    worker: int


def run_segment(source: Source, query: Query, segment: Segment) -> tuple[bool, object]:
    """(True, Done) or (False, one line saying why): what a worker returns for a segment."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        opened = source.open()
        replayer = _replayer.get(source.recording_id)
        if replayer is None:
            _replayer.clear()  # one recording's machine at a time
            replayer = _replayer[source.recording_id] = Replayer()
        results = query.run(replayer.bind(opened), segment)
        return True, Done(results, time.perf_counter() - t0, time.process_time() - cpu0, os.getpid())
    except Exception as e:  # a worker reports every failure as a line, never a traceback
        return False, f"{segment.describe()}: {e}"


def execute(query: Query, source: FileSource, segments: list[Segment], backend: Backend,
            progress: Progress = lambda n: None, cancelled: Cancel = _never) -> tuple[list, list[Done]]:
    """Every segment's results, concatenated in segment (icount) order; each segment's Done.
    Raises Cancelled as soon as `cancelled()` says so (asked while waiting for results)."""
    if backend.ray is not None:
        from history.raybackend import run_on_ray

        done = run_on_ray(query, source, segments, backend.ray, progress, cancelled)
    elif backend.jobs <= 1 or len(segments) <= 1:
        done = _serial(query, source, segments, progress, cancelled)
    else:
        done = ProcessPool(source, min(backend.jobs, len(segments))).run(query, segments, progress, cancelled)
    return ([item for seg in segments for item in done[seg.index].results],
            [done[seg.index]._replace(results=[]) for seg in segments])


def _serial(query: Query, source: FileSource, segments: list[Segment], progress: Progress,
            cancelled: Cancel) -> dict[int, Done]:
    done = {}
    try:
        for seg in segments:
            if cancelled():
                raise Cancelled()
            ok, value = run_segment(source, query, seg)
            if not ok:
                raise SegmentFailed(value)
            done[seg.index] = value
            progress(seg.end_icount - seg.start_icount)
    finally:
        source.close()
    return done


def _worker(conn: Connection, source: FileSource) -> None:
    """A worker process: replay each segment it is sent, until told to stop (None)."""
    # A machine copied from the parent by fork is not this process's to run (its engine and
    # RAM mapping were set up for the parent) nor to tear down: set it aside.
    _inherited.extend(_replayer.values())
    _replayer.clear()
    try:
        while True:
            task = conn.recv()
            if task is None:
                return
            query, segment = task
            conn.send(run_segment(source, query, segment))
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        return


class ProcessPool:
    """Local worker processes, forked, each opening the recording's files itself. Segments go
    one at a time to whichever worker is free, so the pool knows which segment a dead worker
    held."""

    def __init__(self, source: FileSource, jobs: int) -> None:
        self.source = FileSource(source.rrfile, source.db, source.kernel_path, source.recording_id, source.modules)
        self.jobs = jobs
        self.context = multiprocessing.get_context("fork")

    def _start(self) -> tuple[multiprocessing.Process, Connection]:
        ours, theirs = self.context.Pipe()
        proc = self.context.Process(target=_worker, args=(theirs, self.source), daemon=True)
        proc.start()
        theirs.close()
        return proc, ours

    def run(self, query: Query, segments: list[Segment], progress: Progress,
            cancelled: Cancel = _never) -> dict[int, Done]:
        pending = deque(segments)
        deaths: dict[int, int] = {}
        results: dict[int, Done] = {}
        workers = [self._start() for _ in range(self.jobs)]
        held: dict[int, Optional[Segment]] = {}  # worker pid -> its segment

        def give(worker: tuple[multiprocessing.Process, Connection]) -> None:
            proc, conn = worker
            held[proc.pid] = pending.popleft() if pending else None
            if held[proc.pid] is not None:
                conn.send((query, held[proc.pid]))

        try:
            for w in workers:
                give(w)
            while len(results) < len(segments):
                if cancelled():
                    raise Cancelled()
                busy = [w for w in workers if held.get(w[0].pid) is not None]
                ready = wait([w[1] for w in busy] + [w[0].sentinel for w in busy], timeout=CANCEL_POLL_S)
                for w in list(busy):
                    proc, conn = w
                    segment = held[proc.pid]
                    if conn in ready or conn.poll():
                        try:
                            ok, value = conn.recv()
                        except EOFError:
                            ok, value = None, None
                        if ok is not None:
                            if not ok:
                                raise SegmentFailed(value)
                            results[segment.index] = value
                            progress(segment.end_icount - segment.start_icount)
                            give(w)
                            continue
                    if proc.sentinel in ready or not proc.is_alive():
                        proc.join()
                        deaths[segment.index] = deaths.get(segment.index, 0) + 1
                        if deaths[segment.index] > RETRIES:
                            raise SegmentFailed(f"{segment.describe()}: its worker died twice "
                                                f"({_how(proc.exitcode)})")
                        conn.close()
                        workers.remove(w)
                        del held[proc.pid]
                        pending.appendleft(segment)
                        replacement = self._start()
                        workers.append(replacement)
                        give(replacement)
            return results
        finally:
            self._stop(workers, failed=len(results) < len(segments))

    @staticmethod
    def _stop(workers: list[tuple[multiprocessing.Process, Connection]], failed: bool) -> None:
        """Let idle workers end; when the query failed, kill those still replaying."""
        for proc, conn in workers:
            try:
                conn.send(None)
            except (OSError, ValueError):
                pass
        for proc, conn in workers:
            proc.join(timeout=0 if failed else 5)
            if proc.is_alive():
                proc.kill()
                proc.join()
            conn.close()


def _how(exitcode: Optional[int]) -> str:
    if exitcode is not None and exitcode < 0:
        import signal

        return f"killed by {signal.Signals(-exitcode).name}"
    return f"exit status {exitcode}"
