"""Supplying logged inputs in order during replay, and noticing when the guest goes elsewhere."""
from __future__ import annotations

import bisect
from typing import Optional

from replay import log as L


class Divergence(Exception):
    """Replay no longer matches the recording; `icount` is where it was noticed."""

    def __init__(self, icount: int, message: str) -> None:
        super().__init__(f"replay diverged at icount {icount}: {message}")
        self.icount = icount
        self.detail = message


class Player:
    """All records of a log, validated up front, with a cursor.

    The whole log is checked (checksums, decoding) before replay starts, so a corrupt log is
    refused with one message instead of failing halfway."""

    def __init__(self, reader: L.LogReader) -> None:
        self.reader = reader
        self.records: list[L.Record] = []
        self.chunk_offsets: list[int] = []
        self.chunk_first: list[int] = []
        end = 0
        last_offset = reader.first_chunk
        for chunk in reader.chunks():
            self.chunk_offsets.append(chunk.offset)
            self.chunk_first.append(len(self.records))
            self.records.extend(chunk.records)
            end = chunk.end_icount
            last_offset = chunk.next_offset
        self.end_icount = end
        self.end_offset = last_offset  # where the writer's next chunk would have gone
        self.finished = bool(self.records) and self.records[-1].kind == L.END
        self.torn_tail = reader.truncated_tail(last_offset)
        self.pos = 0
        self._async_cache: tuple[int, Optional[L.Record]] = (-1, None)

    def peek(self) -> Optional[L.Record]:
        return self.records[self.pos] if self.pos < len(self.records) else None

    def take(self, kind: int, now: int) -> L.Record:
        """The next record, which must be of `kind` at `now`; anything else is a divergence."""
        rec = self.peek()
        want = f"{L.NAMES[kind]} at icount {now}"
        if rec is None:
            raise Divergence(now, f"the guest made a {want} but the log has no more records")
        if rec.kind != kind or rec.icount != now:
            raise Divergence(now, f"the guest made a {want} but the log has {L.NAMES[rec.kind]} at icount {rec.icount}")
        self.pos += 1
        return rec

    def next_async(self) -> Optional[L.Record]:
        """The next record the executor acts on between slices (interrupt, wake-up, input, end)."""
        if self._async_cache[0] == self.pos:
            return self._async_cache[1]
        found = None
        for i in range(self.pos, len(self.records)):
            if self.records[i].kind in L.ASYNC:
                found = self.records[i]
                break
        self._async_cache = (self.pos, found)
        return found

    def position(self) -> L.Position:
        """The cursor as (chunk offset, index in chunk): stable across processes, for snapshots."""
        if not self.chunk_first:
            return L.Position(self.reader.first_chunk, 0)
        c = max(bisect.bisect_right(self.chunk_first, self.pos) - 1, 0)
        return L.Position(self.chunk_offsets[c], self.pos - self.chunk_first[c])

    def seek(self, position: L.Position) -> None:
        """Move the cursor to a position made by `position()` or by a recording LogWriter."""
        if position.chunk in self.chunk_offsets:
            c = self.chunk_offsets.index(position.chunk)
            following = self.chunk_first[c + 1] if c + 1 < len(self.chunk_first) else len(self.records)
            if not 0 <= position.index <= following - self.chunk_first[c]:
                raise L.LogError(f"log position {position} is not in {self.reader.path}")
            self.pos = self.chunk_first[c] + position.index
        elif position.index == 0 and position.chunk == self.end_offset:
            self.pos = len(self.records)  # the writer's position after its last flushed chunk
        else:
            raise L.LogError(f"log position {position} is not in {self.reader.path}")
