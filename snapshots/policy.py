"""Which periodic snapshots to keep: dense near the current position, sparse elsewhere.

Seeking starts from the nearest snapshot at or before the target, so the cost of a step back
is the replay from there: snapshots are worth most where the user is. Tiers are
(horizon_ns, interval_ns) pairs, nearest first, the last with no horizon (None). A periodic
snapshot at distance d = |position - vtime| belongs to the first tier whose horizon is at least
d, and survives only if it is the earliest periodic snapshot of that tier in its bucket
floor(vtime / interval): one per interval. Initial and named snapshots always stay.

The functions are pure: the caller deletes what `to_delete` names, and does not take what
`kept_at` says it would delete.

By default a recording keeps only the coarsest tier (one snapshot per 100 ms, and its initial
one): the dense tier is made where the user works, by replays and debugging sessions, which
add to the recording's catalog. Recording dense snapshots too cost a recording 1.1x instead of
1.02x for a guest that touches little memory (docs/replay.md); `-snapshots 10ms:1s,100ms`
still asks for them."""
from __future__ import annotations

import bisect
from typing import Optional, Protocol, Sequence

Tiers = Sequence[tuple[Optional[int], int]]
DEFAULT_TIERS: Tiers = [(1_000_000_000, 10_000_000), (None, 100_000_000)]
DEFAULT_REPLAY = "10ms:1s,100ms"  # DEFAULT_TIERS as `-snapshots` text
DEFAULT_RECORD = "100ms"  # its coarsest tier


def default_policy(recording: bool) -> str:
    """The `-snapshots` policy when none is given."""
    return DEFAULT_RECORD if recording else DEFAULT_REPLAY


class Info(Protocol):
    """What the policy needs of a snapshot (SnapshotInfo has it)."""
    name: str
    kind: str
    vtime_ns: int


def tier_of(distance_ns: int, tiers: Tiers) -> int:
    """The first tier reaching `distance_ns`; the last when none does."""
    for i, (horizon, _) in enumerate(tiers):
        if horizon is None or distance_ns <= horizon:
            return i
    return len(tiers) - 1


def to_delete(snaps: Sequence[Info], position_ns: int, tiers: Tiers = DEFAULT_TIERS) -> list[str]:
    """Names of the periodic snapshots the policy no longer keeps, earliest first."""
    if not tiers:
        raise ValueError("a snapshot policy needs at least one tier")
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


def kept_at(vtime_ns: int, position_ns: int, snaps: Sequence[Info], tiers: Tiers = DEFAULT_TIERS) -> bool:
    """Whether a periodic snapshot taken at `vtime_ns` beside `snaps` (sorted by vtime)
    survives `to_delete` at `position_ns`: whether no periodic one of them before it shares
    its bucket there. A run that knows where it will stop need not take a snapshot it would
    delete on arriving (SnapshotManager.stops_at)."""
    tier = tier_of(abs(position_ns - vtime_ns), tiers)
    interval = tiers[tier][1]
    i = bisect.bisect_left(snaps, vtime_ns - vtime_ns % interval, key=lambda s: s.vtime_ns)
    while i < len(snaps) and snaps[i].vtime_ns < vtime_ns:
        s = snaps[i]
        i += 1
        if s.kind == "periodic" and tier_of(abs(position_ns - s.vtime_ns), tiers) == tier:
            return False
    return True
