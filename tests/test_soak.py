"""A CI-sized sample of bench/soak.py: random record/replay pairs, and semantic log mutations
(valid checksums) that must never give a traceback or a different end reported as success."""
from __future__ import annotations

import io
import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from bench import soak
from cpu.machine import GuestError
from replay import log as L
from replay.player import Divergence
from tests.conftest import run_urr
from urr.options import parse_args
from urr.session import Session


def test_random_pairs_and_mutations_match_or_are_refused(guests):
    report = soak.soak(pairs=2, mutations=6, seed=20261130)
    figures = report.figures()
    assert report.failures() == [], report.failures()
    assert figures["pairs"] + figures["pairs_refused"] == 2 and figures["mutations"] == 6


def test_short_pairs_interrupted_at_random_moments_match(guests):
    """--short: recordings ended by a Ctrl-C at a random host moment replay to the same state."""
    report = soak.soak(pairs=4, mutations=0, seed=7, jobs=2, short=True)
    assert report.failures() == [], report.failures()
    assert report.figures()["pairs"] + report.figures()["pairs_refused"] == 4


def test_long_pairs_record_millions_of_instructions_and_match(guests):
    """--long: a short run's pair made long (a long-running guest, a later Ctrl-C) records far
    more than the few thousand instructions most guests end within, and replays to the same state."""
    report = soak.soak(pairs=1, mutations=0, seed=11, short=True, long_share=1.0)
    assert report.failures() == [], report.failures()
    pair, = report.pairs
    assert pair.config["long"] and pair.config["guest"] in soak.LONG_GUESTS
    assert pair.outcome == "match" and pair.config["icount"] > 1_000_000, pair


def _replay_end(kernel: str, rr: str) -> tuple[str, object, object]:
    """How an in-process replay ends: ("end", status, state hash) or ("refused", kind, text)."""
    opts = parse_args(["-kernel", kernel, "-serial", "none", "-snapshots", "off",
                       "-icount", f"shift=7,rr=replay,rrfile={rr}"])
    try:
        session = Session(opts, out=io.BytesIO(), stdin_fd=None)
        stop = session.run()
    except (Divergence, GuestError, ValueError) as e:  # LogError and SessionError are ValueErrors
        return ("refused", type(e).__name__, str(e))
    finished = session.player.finished
    state = session.state_hash()
    session.close(None, "test")
    return ("end", (stop.reason, stop.status, finished), state)


@pytest.fixture(scope="module")
def ticks_log(guests, tmp_path_factory):
    """A recording of ticks and how its replay ends."""
    rr = str(tmp_path_factory.mktemp("mut") / "ticks.rr")
    run_urr("-kernel", guests["ticks"], "-icount", f"shift=7,rr=record,rrfile={rr}", "-snapshots", "off")
    original = _replay_end(guests["ticks"], rr)
    assert original[0] == "end"
    return rr, original


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32))
def test_semantic_log_mutations_are_never_silent(guests, ticks_log, tmp_path_factory, seed):
    rr, original = ticks_log
    work = tmp_path_factory.mktemp("mut")
    reader = L.LogReader(rr)
    records = [r for c in reader.chunks() for r in c.records]
    rng = random.Random(seed)
    changed, what = soak.mutate(records, rng)
    bad = str(work / "bad.rr")
    soak.write_log(bad, reader.config, changed, rng.choice([3, 40, 100000]))
    got = _replay_end(guests["ticks"], bad)
    assert got[0] == "refused" or got == original, (what, got, original)


def test_hostile_gdb_packets_get_replies_and_no_traceback(guests):
    """A CI-sized sample of the stub fuzz pass (bench/stubfuzz.py): one batch of random and
    hostile packets against a replay, in a child process."""
    report = soak.soak(pairs=0, mutations=0, seed=20261130, stub=1)
    assert report.failures() == [], report.failures()
    figures = report.figures()
    assert figures["stub_packets"] == soak.STUB_PACKETS and figures["tracebacks"] == 0
