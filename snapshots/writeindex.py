"""Which stretches of a recording may contain a write to given RAM pages.

The log's digest records (every 2^20 icounts, cpu.machine) each list the pages that may have been
written since the previous digest. A log whose header says `"digest_pages": "written"` lists
every page the host kernel saw written, same-value writes included, so a page a digest does not
list was not written in its interval: a search for writes (last-write, reverse-continue or
continue to a write watchpoint) need only replay the intervals that list a watched page. Older
logs list only the pages whose content changed, which misses same-value writes: for them, and
after the last digest, every interval may hold a write.

An interval is [previous digest's icount, this digest's icount): a write by the instruction at
icount p (a hit's icount) is listed by the first digest taken after p.

    index = WriteIndex.from_log(player.reader.config, player.records)
    for begin, end in index.ranges({page}, lo, hi):   # newest first
        ...
"""
from __future__ import annotations

from typing import Iterable, Sequence

from replay import log as L
from replay.digest import unpack_pages

PAGE_SHIFT = 12


class WriteIndex:
    """Page -> the digest intervals that may hold a write to it."""

    def __init__(self, digest_icounts: Sequence[int], pages: Sequence[Iterable[int]], exact: bool) -> None:
        """`digest_icounts[k]` is where digest k was taken, `pages[k]` the pages it lists;
        `exact`: the lists are written lists (same-value writes included)."""
        self.exact = exact
        self.ends = list(digest_icounts)  # interval k is [ends[k-1] (0 for k=0), ends[k])
        self.by_page: dict[int, list[int]] = {}
        for k, listed in enumerate(pages):
            for page in listed:
                self.by_page.setdefault(page, []).append(k)

    @classmethod
    def from_log(cls, config: dict, records: Iterable[L.Record]) -> "WriteIndex":
        """From a log's header config and its records (only the DIGEST ones are read)."""
        icounts: list[int] = []
        pages: list[list[int]] = []
        for rec in records:
            if rec.kind == L.DIGEST:
                icounts.append(rec.icount)
                pages.append(list(unpack_pages(rec.fields[3])))
        return cls(icounts, pages, config.get("digest_pages") == "written")

    @staticmethod
    def pages_of(addr: int, length: int) -> set[int]:
        """The pages an access to [addr, addr+length) touches."""
        return set(range(addr >> PAGE_SHIFT, ((addr + max(length, 1) - 1) >> PAGE_SHIFT) + 1))

    def ranges(self, pages: Iterable[int], lo: int, hi: int,
               points: Iterable[int] = ()) -> list[tuple[int, int]]:
        """The stretches of [lo, hi) in which any of `pages` may have been written, and the
        icounts `points` (each as [p, p+1)), as (begin, end) icount ranges, newest first,
        adjacent ones merged. Everything after the last digest may hold writes; so does all of
        [lo, hi) when the lists are not written lists."""
        if hi <= lo:
            return []
        if not self.exact:
            return [(lo, hi)]
        tail = self.ends[-1] if self.ends else 0
        intervals = {k for p in pages for k in self.by_page.get(p, ())}
        spans = sorted([(self.ends[k - 1] if k else 0, self.ends[k]) for k in intervals]
                       + [(p, p + 1) for p in points] + [(tail, hi)])
        merged: list[tuple[int, int]] = []
        for begin, end in spans:
            begin, end = max(begin, lo), min(end, hi)
            if begin >= end:
                continue
            if merged and merged[-1][1] >= begin:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((begin, end))
        return merged[::-1]
