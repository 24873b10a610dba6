"""Segments as Ray tasks, on a local Ray instance or a cluster.

A task gets what its segment needs as its arguments, which Ray carries through its object
store to whichever node runs it: the log chunks of the segment's span, the snapshots it restores
(with their page content) or compares with, and the kernel if it starts at boot (see
`history.segments.ship`). So the nodes need urr installed, not the recording's files. Each Ray
worker process keeps its machine between tasks (`history.runner.run_segment`).

A task whose worker dies is retried once by Ray (`max_retries`); a second death fails the query.
Tasks are submitted a few per CPU at a time, so the driver holds only those segments' content."""
from __future__ import annotations

import logging
import os
import socket
import sys
from collections import deque
from contextlib import contextmanager
from typing import Iterator

from history.runner import CANCEL_POLL_S, RETRIES, Cancel, Cancelled, Done, SegmentFailed, default_jobs, run_segment
from history.segments import FileSource, Progress, Query, Segment, ShippedSource, ship

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_FLIGHT_PER_CPU = 2


def _segment_task(query: Query, segment: Segment, shipped: ShippedSource) -> tuple[bool, object]:
    return run_segment(shipped, query, segment)


def _reachable(address: str) -> None:
    """Fail in one line, at once, when nothing listens at HOST:PORT (ray.init would retry for a
    minute before saying so)."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except ValueError:
        raise SegmentFailed(f"bad Ray address '{address}' (HOST:PORT, auto, or ray://HOST:PORT)") from None
    except OSError as e:
        raise SegmentFailed(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from None


def connect(address: str) -> bool:
    """Connect to the cluster at `address` ("": start a local instance), unless this process
    is connected already; whether this call connected (and so should disconnect)."""
    try:
        import ray
    except ImportError:
        raise SegmentFailed("--ray needs Ray: pip install 'urr[ray]'") from None
    if ray.is_initialized():
        return False
    if address and address != "auto" and not address.startswith("ray://"):
        _reachable(address)
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    try:
        with _quiet_stderr():  # Ray's notes on starting or joining a cluster: not the user's business
            ray.init(address=address or None, num_cpus=None if address else default_jobs(),
                     include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                     runtime_env={"env_vars": {"PYTHONPATH": path}})
    except Exception as e:  # Ray's own errors: one line of them
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SegmentFailed(f"cannot connect to the Ray cluster at {address or '(local)'}: {first}") from None
    return True


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Standard error (the file descriptor: Ray's C++ core writes there too) to /dev/null."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def run_on_ray(query: Query, source: FileSource, segments: list[Segment], address: str,
               progress: Progress, cancelled: Cancel) -> dict[int, Done]:
    started = connect(address)
    import ray

    task = ray.remote(max_retries=RETRIES, num_cpus=1)(_segment_task)
    try:
        capacity = max(1, int(ray.cluster_resources().get("CPU", 1))) * IN_FLIGHT_PER_CPU
        kernel = source.open().kernel() if any(s.start is None for s in segments) else None
        queue = deque(segments)
        running: dict = {}
        results: dict[int, Done] = {}
        try:
            while queue or running:
                while queue and len(running) < capacity:
                    seg = queue.popleft()
                    restored, compared = query.snapshots_used(seg)
                    running[task.remote(query, seg, ship(source, seg, restored, compared, kernel))] = seg
                if cancelled():
                    raise Cancelled()
                done, _ = ray.wait(list(running), num_returns=1, timeout=CANCEL_POLL_S)
                for ref in done:
                    seg = running.pop(ref)
                    try:
                        ok, value = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        raise SegmentFailed(f"{seg.describe()}: its Ray worker died twice "
                                            f"({type(e).__name__})") from None
                    if not ok:
                        raise SegmentFailed(value)
                    results[seg.index] = value
                    progress(seg.end_icount - seg.start_icount)
            return results
        finally:
            for ref in running:
                ray.cancel(ref, force=True)
    finally:
        source.close()
        if started:
            ray.shutdown()
