"""Which periodic snapshots to keep: dense near the current position, sparse elsewhere.

Tiers are (horizon_ns, interval_ns) pairs, the last with no horizon. A periodic snapshot at
distance d from the position falls in the first tier whose horizon is at least d, and survives
only if it is the earliest periodic snapshot in its bucket floor(vtime / interval) among those
in the same tier. The default keeps one every 10 ms within a second and one every 100 ms beyond,
as the qemu-devel reverse-debugging thread proposed. Initial and named snapshots always stay."""
from __future__ import annotations

from typing import Optional, Protocol, Sequence

Tiers = list[tuple[Optional[int], int]]
DEFAULT_TIERS: Tiers = [(1_000_000_000, 10_000_000), (None, 100_000_000)]


class Info(Protocol):
    name: str
    kind: str
    vtime_ns: int


def tier_of(distance_ns: int, tiers: Tiers) -> int:
    for i, (horizon, _) in enumerate(tiers):
        if horizon is None or distance_ns <= horizon:
            return i
    return len(tiers) - 1


def to_delete(snaps: Sequence[Info], position_ns: int, tiers: Tiers = DEFAULT_TIERS) -> list[str]:
    """Names of the periodic snapshots the policy no longer keeps."""
    kept: set[tuple[int, int]] = set()
    doomed = []
    for s in sorted((s for s in snaps if s.kind == "periodic"), key=lambda s: (s.vtime_ns, s.name)):
        tier = tier_of(abs(position_ns - s.vtime_ns), tiers)
        bucket = (tier, s.vtime_ns // tiers[tier][1])
        if bucket in kept:
            doomed.append(s.name)
        else:
            kept.add(bucket)
    return doomed
