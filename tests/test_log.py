"""The event log codec and file format: round trips, truncation, corruption."""
from __future__ import annotations


import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay import log as L
from replay.player import Divergence, Player


def field_value(kind: str):
    if kind == "v":
        return st.integers(min_value=0, max_value=(1 << 64) - 1)
    if kind == "z":
        return st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
    return st.binary(max_size=300)


@st.composite
def records(draw):
    out, icount = [], 0
    for _ in range(draw(st.integers(min_value=0, max_value=40))):
        kind = draw(st.sampled_from(sorted(L.FIELDS)))
        icount += draw(st.integers(min_value=0, max_value=1 << 40))
        fields = tuple(draw(field_value(f)) for f in L.FIELDS[kind])
        out.append(L.Record(kind, icount, fields))
    return out


@given(records(), st.integers(min_value=0, max_value=1 << 30))
def test_records_round_trip(recs, base):
    buf = bytearray()
    prev = base
    shifted = [L.Record(r.kind, r.icount + base, r.fields) for r in recs]
    for r in shifted:
        L.encode_record(buf, r, prev)
        prev = r.icount
    assert L.decode_records(bytes(buf), base) == shifted


@settings(max_examples=30, deadline=None)
@given(records(), st.lists(st.integers(min_value=0, max_value=40), max_size=5))
def test_file_round_trip_with_chunks(tmp_path_factory, recs, cuts):
    path = str(tmp_path_factory.mktemp("log") / "x.rr")
    w = L.LogWriter(path, {"a": 1})
    cut_set = set(cuts)
    for i, r in enumerate(recs):
        w.append(r.kind, r.icount, *r.fields)
        if i in cut_set:
            w.flush(r.icount)
    end = recs[-1].icount if recs else 0
    w.close(end)
    p = Player(L.LogReader(path))
    assert p.records == recs
    assert p.reader.config == {"a": 1}
    assert p.end_icount == end
    assert not p.torn_tail


def write_sample(path: str, n: int = 50) -> list[L.Record]:
    w = L.LogWriter(path, {"k": "v"})
    recs = []
    for i in range(n):
        r = L.Record(L.IRQ, i * 100, (0x20,))
        w.append(r.kind, r.icount, *r.fields)
        recs.append(r)
        if i % 10 == 9:
            w.flush(i * 100 + 1)
    w.close(n * 100)
    return recs


def test_truncated_log_replays_to_last_complete_chunk(tmp_path):
    path = str(tmp_path / "t.rr")
    recs = write_sample(path)
    data = open(path, "rb").read()
    # Cut in the middle of the last chunk: the previous chunks remain usable.
    reader = L.LogReader(path)
    offsets = [c.offset for c in reader.chunks()]
    with open(path, "wb") as f:
        f.write(data[:offsets[-1] + 10])
    p = Player(L.LogReader(path))
    assert p.records == recs[:len(p.records)]
    assert p.end_icount == 4901  # the fifth chunk promised completeness up to 49*100+1
    assert p.torn_tail and not p.finished


def test_corrupt_chunk_is_reported(tmp_path):
    path = str(tmp_path / "c.rr")
    write_sample(path)
    data = bytearray(open(path, "rb").read())
    reader = L.LogReader(path)
    second = list(reader.chunks())[1].offset
    data[second + L.CHUNK_HEADER_SIZE + 2] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(L.LogError, match="checksum mismatch"):
        Player(L.LogReader(path))


@pytest.mark.parametrize("content,message", [
    (b"", "not an urr event log"),
    (b"hello world, not a log at all", "not an urr event log"),
])
def test_foreign_files_refused(tmp_path, content, message):
    path = tmp_path / "f.rr"
    path.write_bytes(content)
    with pytest.raises(L.LogError, match=message):
        L.LogReader(str(path))


def test_other_version_refused(tmp_path):
    path = str(tmp_path / "v.rr")
    write_sample(path, 3)
    data = bytearray(open(path, "rb").read())
    data[8] = 99
    open(path, "wb").write(bytes(data))
    with pytest.raises(L.LogError, match="format version 99"):
        L.LogReader(path)


def test_corrupt_header_refused(tmp_path):
    path = str(tmp_path / "h.rr")
    write_sample(path, 3)
    data = bytearray(open(path, "rb").read())
    data[20] ^= 1
    open(path, "wb").write(bytes(data))
    with pytest.raises(L.LogError, match="header is corrupt"):
        L.LogReader(path)


def test_missing_and_unwritable(tmp_path):
    with pytest.raises(L.LogError, match="cannot read rrfile"):
        L.LogReader(str(tmp_path / "missing.rr"))
    with pytest.raises(L.LogError, match="cannot write rrfile"):
        L.LogWriter(str(tmp_path / "no" / "dir.rr"), {})


def test_player_take_checks_kind_and_icount(tmp_path):
    path = str(tmp_path / "p.rr")
    write_sample(path, 3)
    p = Player(L.LogReader(path))
    with pytest.raises(Divergence, match="diverged at icount 5"):
        p.take(L.IRQ, 5)
    with pytest.raises(Divergence, match="log has irq at icount 0"):
        p.take(L.CLOCK, 0)
    assert p.take(L.IRQ, 0).fields == (0x20,)
    pos = p.position()
    p.take(L.IRQ, 100)
    p.seek(pos)
    assert p.peek().icount == 100
