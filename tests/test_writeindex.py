"""The write index's answers from digest lists, without a machine (the property test comparing
its searches with full scans is in tests/test_timeline.py)."""
from __future__ import annotations

from snapshots.writeindex import WriteIndex

# Digests at 100, 200, 300, 400: page 7 written in [100, 200) and [300, 400), page 9 in [0, 100).
DIGESTS = [100, 200, 300, 400]
LISTS = [[9], [7], [], [7, 9]]


def test_ranges_are_the_intervals_listing_a_page_newest_first_and_merged():
    index = WriteIndex(DIGESTS, LISTS, exact=True)
    # After the last digest nothing is known: [400, hi) always counts.
    assert index.ranges({7}, 0, 1000) == [(300, 1000), (100, 200)]
    assert index.ranges({7, 9}, 0, 1000) == [(300, 1000), (0, 200)]
    assert index.ranges({7}, 150, 350) == [(300, 350), (150, 200)]
    assert index.ranges({5}, 0, 400) == []
    assert index.ranges({5}, 0, 400, points=[250, 399]) == [(399, 400), (250, 251)]
    assert index.ranges({7}, 50, 50) == []


def test_logs_that_list_only_changed_pages_are_scanned_whole():
    index = WriteIndex(DIGESTS, LISTS, exact=False)
    assert index.ranges({5}, 10, 350) == [(10, 350)]


def test_pages_of_an_access():
    assert WriteIndex.pages_of(0x1FFF, 2) == {1, 2}
    assert WriteIndex.pages_of(0x2000, 0) == {2}
