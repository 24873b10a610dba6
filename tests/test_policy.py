"""The thinning policy: which periodic snapshots survive, checked against survivors worked out
independently of the implementation."""
from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snapshots.catalog import SnapshotInfo
from snapshots.policy import DEFAULT_TIERS, kept_at, tier_of, to_delete

MS = 1_000_000
S = 1_000_000_000


def snap(vtime_ns: int, kind: str = "periodic", name: str | None = None) -> SnapshotInfo:
    return SnapshotInfo(name or f"auto-{vtime_ns:015d}", kind, vtime_ns // 100, vtime_ns, 1, 0)


def survivors(snaps: list[SnapshotInfo], position_ns: int, tiers=DEFAULT_TIERS) -> list[int]:
    doomed = set(to_delete(snaps, position_ns, tiers))
    return sorted(s.vtime_ns for s in snaps if s.name not in doomed)


def test_tier_boundaries():
    assert tier_of(0, DEFAULT_TIERS) == 0
    assert tier_of(S, DEFAULT_TIERS) == 0  # the horizon itself is still near
    assert tier_of(S + 1, DEFAULT_TIERS) == 1
    assert tier_of(10**15, DEFAULT_TIERS) == 1
    assert tier_of(10 * S, [(S, MS), (2 * S, 10 * MS)]) == 1  # past every horizon: the last tier


def test_dense_near_the_position_sparse_beyond():
    snaps = [snap(t * MS) for t in range(0, 3000, 10)]
    kept = survivors(snaps, 3 * S)
    assert kept == [t * MS for t in range(0, 2000, 100)] + [t * MS for t in range(2000, 3000, 10)]


def test_earliest_in_its_bucket_survives_off_the_grid():
    # Snapshots need not sit on the grid: the earliest of each 100 ms bucket is the one kept.
    snaps = [snap(t * MS) for t in (5, 37, 99, 100, 101, 250, 299, 301)]
    assert survivors(snaps, 10 * S) == [5 * MS, 100 * MS, 250 * MS, 301 * MS]


def test_initial_and_named_are_never_deleted():
    snaps = [snap(0, "initial", "init"), snap(1, "named", "a"), snap(2, "named", "b"),
             snap(3), snap(4), snap(5, "named", "c")]
    assert to_delete(snaps, 100 * S) == ["auto-000000000000004"]


def test_distance_counts_both_ways():
    # After seeking back to 1 s, the snapshots just after the position are near too.
    snaps = [snap(t * MS) for t in range(0, 4000, 10)]
    kept = survivors(snaps, 1 * S)
    # 2.01 s is the earliest far snapshot of its 100 ms bucket (2.00 s is near): it stays too.
    assert kept == ([t * MS for t in range(0, 2001, 10)] + [2010 * MS]
                    + [t * MS for t in range(2100, 4000, 100)])


def test_buckets_are_per_tier():
    # The 100 ms bucket [0.9 s, 1.0 s) straddles the 1 s horizon from a position at 1.95 s:
    # 0.90-0.94 s are far (one survives), 0.95-0.99 s near (all survive).
    snaps = [snap(t * MS) for t in range(900, 1000, 10)]
    assert survivors(snaps, 1950 * MS) == [900 * MS] + [t * MS for t in range(950, 1000, 10)]


def test_three_configurable_tiers():
    tiers = [(100 * MS, 1 * MS), (S, 10 * MS), (None, S)]
    snaps = [snap(t * MS) for t in range(0, 5000)]
    kept = survivors(snaps, 5 * S, tiers)
    assert kept == ([t * MS for t in range(0, 4000, 1000)] + [t * MS for t in range(4000, 4900, 10)]
                    + [t * MS for t in range(4900, 5000)])


def test_order_of_the_input_does_not_matter():
    snaps = [snap(t * MS) for t in range(0, 3000, 7)]
    expected = to_delete(snaps, 2500 * MS)
    random.Random(3).shuffle(snaps)
    assert to_delete(snaps, 2500 * MS) == expected


def test_no_tiers_is_an_error():
    with pytest.raises(ValueError):
        to_delete([snap(0)], 0, [])


@pytest.mark.parametrize("thin_every", [1, 10, 37])
def test_five_second_recording_thinned_as_it_goes(thin_every):
    """One snapshot every 10 ms for 5 s, thinned every `thin_every` snapshots and at the end:
    the last second keeps the whole 10 ms grid, everything before it the 100 ms grid."""
    live: list[SnapshotInfo] = [snap(0, "initial", "init")]
    taken = 0
    for t in range(10 * MS, 5 * S + 1, 10 * MS):
        live.append(snap(t))
        taken += 1
        if taken % thin_every == 0:
            doomed = set(to_delete(live, t))
            live = [s for s in live if s.name not in doomed]
    doomed = set(to_delete(live, 5 * S))
    live = [s for s in live if s.name not in doomed]

    end_ms = 5000
    # Independently: the last second on the 10 ms grid, before it the 100 ms grid, where the
    # first bucket's periodic survivor is 10 ms (0 is the initial snapshot, not periodic).
    expected = {t * MS for t in range(10, end_ms + 1, 10)
                if end_ms - t <= 1000 or t % 100 == 0 or t == 10}
    assert {s.vtime_ns for s in live if s.kind == "periodic"} == expected
    assert len(expected) == 101 + 39 + 1  # 4.00-5.00 s every 10 ms, 0.1-3.9 s every 100 ms, 10 ms
    assert any(s.name == "init" for s in live)
    assert to_delete(live, 5 * S) == []  # a second pass deletes nothing more


def _brute_force_doomed(snaps, position, tiers) -> set[str]:
    """The rule as stated, pair by pair: a periodic snapshot goes if another periodic snapshot of
    the same tier and bucket comes before it."""
    def key(s):
        d = abs(position - s.vtime_ns)
        tier = next((i for i, (h, _) in enumerate(tiers) if h is None or d <= h), len(tiers) - 1)
        return tier, s.vtime_ns // tiers[tier][1]
    periodic = [s for s in snaps if s.kind == "periodic"]
    return {s.name for s in periodic
            if any(key(o) == key(s) and (o.vtime_ns, o.name) < (s.vtime_ns, s.name) for o in periodic)}


@given(st.lists(st.tuples(st.integers(0, 3 * S), st.sampled_from(["periodic"] * 4 + ["named", "initial"])),
                max_size=40, unique_by=lambda x: x[0]),
       st.integers(0, 3 * S))
def test_matches_the_rule_pair_by_pair(entries, position):
    snaps = [snap(v, kind, f"{kind}-{v}") for v, kind in entries]
    assert set(to_delete(snaps, position)) == _brute_force_doomed(snaps, position, DEFAULT_TIERS)


@given(st.lists(st.tuples(st.integers(0, 3000), st.sampled_from(["periodic", "periodic", "initial", "named"])),
                max_size=60),
       st.integers(0, 3000), st.integers(0, 4000), st.booleans())
def test_kept_at_says_whether_to_delete_would_spare_a_new_snapshot(earlier, at, position, three):
    """`kept_at` answers, for one snapshot more, what `to_delete` over all of them answers."""
    tiers = [(100 * MS, MS), (S, 10 * MS), (None, 100 * MS)] if three else DEFAULT_TIERS
    snaps = sorted((snap(t * MS, kind, f"{kind}-{i}") for i, (t, kind) in enumerate(earlier)
                    if t != at), key=lambda s: s.vtime_ns)
    new = snap(at * MS, "periodic", "new")
    spared = "new" not in to_delete(snaps + [new], position * MS, tiers)
    assert kept_at(new.vtime_ns, position * MS, snaps, tiers) == spared
