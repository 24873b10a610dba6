"""Soak: randomized record/replay pairs, and a fuzz pass over the event log's reader.

    python bench/soak.py --pairs 100 --seed 1 [--mutations 200] [--jobs 2] [--json]

Pairs: each records a guest picked at random (every example and test guest but the two
benchmark ones) with a random RAM size, icount shift, snapshot policy, initial snapshot or not,
disk image (random content and size) or none, and serial input typed at random host moments,
then replays it, from boot or from a snapshot. A pair passes when the replay ends with the
recording's exit status and final state hash (and, from boot, prints the same output), and every
line on standard error is one of urr's (no traceback). A recording refused before it starts
(a guest that does not fit in the RAM size drawn) counts as refused, not as a pair.

Mutations: a recording's log rewritten with one semantic change and valid checksums (a field's
value, a record's icount, a record dropped, repeated or of another kind, the end record's status
or reason), then replayed. The replay must end exactly as the unchanged one did (the change did
not matter), or stop with one line and status 2 (bad input), 4 (a fault the recording also
met), 6 (divergence) or 8 (incomplete log): never a traceback, never a different end reported
as a success.

Everything drawn comes from one random.Random(seed), so a run is repeatable but for the host
timing of serial input (which the recording captures). Figures: pairs, divergences, tracebacks,
silent differences, and the time taken."""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from replay import log as L  # noqa: E402

GUESTS = os.path.join(ROOT, "guests", "build")
SKIP = {"spin", "longloop"}  # benchmark guests: minutes of soak each
RAM_SIZES = ["2M", "3M", "4M", "8M", "16M", "32M", "64M", "256M", "1G"]
POLICIES = ["off", "10ms:1s,100ms", "100ms", "1ms:100ms,10ms:1s,100ms"]
QUIET_STATUSES = {2, 4, 6, 8}  # how a damaged log may end a replay: one line and one of these
RUN_TIMEOUT = 300.0


@dataclass
class Run:
    """One urr process: its exit status, guest output, urr's lines and final state hash."""
    status: int
    out: bytes
    err: str

    @property
    def state(self) -> Optional[str]:
        m = re.search(r"; state ([0-9a-f]+)$", self.err, re.M)
        return m[1] if m else None

    @property
    def traceback(self) -> bool:
        return any(not line.startswith("urr: ") for line in self.err.splitlines())


def urr(args: list[str], stdin: Optional[Callable[[subprocess.Popen], None]] = None) -> Run:
    """Run urr; `stdin(proc)` feeds its standard input (else it is empty)."""
    proc = subprocess.Popen([sys.executable, "-m", "urr", "-display", "none", *args], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if stdin is not None:
            stdin(proc)
        if proc.stdin is not None and not proc.stdin.closed:
            proc.stdin.close()
        proc.stdin = None  # all typed (communicate would flush it again)
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return Run(-1, out, err.decode(errors="replace") + "soak: timed out or stdin refused\n")
    return Run(proc.returncode, out, err.decode(errors="replace"))


def guests() -> list[str]:
    subprocess.run(["make", "-s", "-C", os.path.join(ROOT, "guests")], check=True, capture_output=True)
    return sorted(f[:-4] for f in os.listdir(GUESTS) if f.endswith(".elf") and f[:-4] not in SKIP)


def typing(rng: random.Random, name: str) -> tuple[Callable[[subprocess.Popen], None], str]:
    """A function typing serial input at random moments, and what it types."""
    words = [rng.choice(["hello", "abc", "x" * rng.randint(1, 90), "  ", "\x7fback"]) for _ in range(rng.randint(0, 5))]
    if name == "echo" and rng.random() < 0.8:
        words.append("quit")  # else the guest halts at the end of its input: urr ends it
    text = "".join(w + rng.choice(["\n", "\r", "\r\n"]) for w in words)
    delays = [rng.uniform(0, 0.02) for _ in text]

    def feed(proc: subprocess.Popen) -> None:
        try:
            for ch, delay in zip(text, delays):
                time.sleep(delay)
                proc.stdin.write(ch.encode())
                proc.stdin.flush()
            proc.stdin.close()
        except BrokenPipeError:  # the guest ended before all of it was typed
            proc.stdin = None
    return feed, text


@dataclass
class Pair:
    config: dict
    outcome: str  # "match", "refused", "divergence", "traceback", "timeout"
    detail: str = ""


def one_pair(rng: random.Random, names: list[str], work: str, n: int) -> Pair:
    name = rng.choice(names)
    rr = os.path.join(work, f"p{n}.rr")
    shift, ram, policy = rng.randint(0, 10), rng.choice(RAM_SIZES), rng.choice(POLICIES)
    init = rng.random() < 0.5
    icount = f"shift={shift},rr=record,rrfile={rr}" + (",rrsnapshot=init" if init else "")
    args = ["-kernel", os.path.join(GUESTS, f"{name}.elf"), "-m", ram, "-snapshots", policy]
    disk = None
    if name == "disk" or rng.random() < 0.2:
        disk = os.path.join(work, f"p{n}.img")
        with open(disk, "wb") as f:
            f.write(rng.randbytes(512 * rng.choice([2, 3, 8, 64, 100, 2048])))
        args += ["-drive", f"file={disk},format=raw"]
    feed, text = typing(rng, name)
    config = {"guest": name, "ram": ram, "shift": shift, "snapshots": policy, "init": init,
              "disk": disk is not None, "input": len(text)}
    rec = urr(args + ["-icount", icount], feed)
    if rec.status == -1:
        return Pair(config, "timeout", rec.err[-300:])
    if rec.traceback:
        return Pair(config, "traceback", rec.err[-2000:])
    if rec.status == 2:
        return Pair(config, "refused", rec.err.strip())
    start: list[str] = []
    if init and rng.random() < 0.5:
        start = ["-icount", f"shift={shift},rr=replay,rrfile={rr},rrsnapshot=init"]
    else:
        start = ["-icount", f"shift={shift},rr=replay,rrfile={rr}"]
    config["from"] = "init" if "rrsnapshot" in start[1] else "boot"
    rep = urr(["-kernel", os.path.join(GUESTS, f"{name}.elf"), "-m", ram, "-snapshots", policy, *start])
    for path in (rr, rr + ".db", rr + ".db-wal", rr + ".db-shm", disk):
        if path and os.path.exists(path):
            os.remove(path)
    if rep.status == -1:
        return Pair(config, "timeout", rep.err[-300:])
    if rep.traceback:
        return Pair(config, "traceback", rep.err[-2000:])
    same = rep.status == expected_replay_status(rec) and rep.state == rec.state and rep.out == rec.out
    if same:
        return Pair(config, "match")
    return Pair(config, "divergence", f"record {rec.status} {rec.state} {len(rec.out)}B / replay "
                                      f"{rep.status} {rep.state} {len(rep.out)}B: {rep.err.strip()[-500:]}")


def expected_replay_status(rec: Run) -> int:
    """A replay ends as its recording did, except where the recording was ended by urr rather
    than by the guest (a signal, a closed output): the replay reaches that end record, status 0."""
    return 0 if rec.status in (129, 130, 141, 143) else rec.status


# -- mutations --------------------------------------------------------------------------------

def mutate(records: list[L.Record], rng: random.Random) -> tuple[list[L.Record], str]:
    """The records with one semantic change (what it was, in words)."""
    out = list(records)
    i = rng.randrange(len(out))
    r = out[i]
    prev = out[i - 1].icount if i else 0
    nxt = out[i + 1].icount if i + 1 < len(out) else r.icount + 1000
    how = rng.choice(["field", "field", "icount", "drop", "repeat", "kind", "end"])
    if how == "end":
        i = len(out) - 1
        r = out[i]
        if r.kind != L.END:
            return out, "none (no end record)"
        status = rng.choice([-1, 0, 1, 33, r.fields[0] + 2])
        reason = rng.choice([r.fields[1], b"exit", b"interrupted", b"guest fault: made up (icount 1, rip 0x0)"])
        out[i] = L.Record(L.END, r.icount, (status, reason))
        return out, f"end record {r.fields} -> {(status, reason)}"
    if how == "field":
        f = rng.randrange(len(r.fields))
        fields = list(r.fields)
        value = fields[f]
        if isinstance(value, bytes):
            b = bytearray(value)
            op = rng.choice(["flip", "cut", "grow"]) if b else "grow"
            if op == "flip":
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            elif op == "cut":
                del b[rng.randrange(len(b)):]
            else:
                b += rng.randbytes(rng.randint(1, 8))
            fields[f] = bytes(b)
        else:
            fields[f] = max(-1 if L.FIELDS[r.kind][f] == "z" else 0,
                            rng.choice([value + 1, value - 1, 0, value ^ (1 << rng.randrange(32)), rng.getrandbits(64)]))
        out[i] = L.Record(r.kind, r.icount, tuple(fields))
        return out, f"{L.NAMES[r.kind]}@{r.icount} field {f}"
    if how == "icount":
        new = rng.randint(prev, max(prev, nxt))
        out[i] = L.Record(r.kind, new, r.fields)
        return out, f"{L.NAMES[r.kind]}@{r.icount} -> @{new}"
    if how == "drop":
        del out[i]
        return out, f"{L.NAMES[r.kind]}@{r.icount} dropped"
    if how == "repeat":
        out.insert(i, r)
        return out, f"{L.NAMES[r.kind]}@{r.icount} repeated"
    same_layout = [k for k, layout in L.FIELDS.items() if layout == L.FIELDS[r.kind] and k != r.kind]
    if not same_layout:
        return out, "none (no kind with its layout)"
    kind = rng.choice(same_layout)
    out[i] = L.Record(kind, r.icount, r.fields)
    return out, f"{L.NAMES[r.kind]}@{r.icount} -> {L.NAMES[kind]}"


def write_log(path: str, config: dict, records: list[L.Record], per_chunk: int) -> None:
    """A log of these records, a chunk every `per_chunk` of them, with valid checksums."""
    w = L.LogWriter(path, config)
    last = 0
    for n, r in enumerate(records, 1):
        w.append(r.kind, r.icount, *r.fields)
        last = r.icount
        if n % per_chunk == 0:
            w.flush(last)
    w.close(last)


@dataclass
class Fuzzed:
    guest: str
    change: str
    outcome: str  # "same", "refused" (one line, a quiet status), "silent", "traceback"
    detail: str = ""


def fuzz_bases(names: list[str], work: str) -> list[tuple[str, str, Run]]:
    """(guest, rrfile, its replay) for the guests the mutations start from."""
    bases = []
    for name in ("ticks", "clock", "echo", "disk", "rdrand", "irqtime", "hello"):
        if name not in names:
            continue
        rr = os.path.join(work, f"base-{name}.rr")
        args = ["-kernel", os.path.join(GUESTS, f"{name}.elf"), "-snapshots", "off"]
        if name == "disk":
            img = os.path.join(work, "base.img")
            with open(img, "wb") as f:
                f.write(random.Random(7).randbytes(512 * 64))
            args += ["-drive", f"file={img},format=raw"]

        def feed(proc: subprocess.Popen) -> None:
            try:
                proc.stdin.write(b"hello\nworld\nquit\n")
                proc.stdin.close()
            except BrokenPipeError:
                proc.stdin = None
        urr(args + ["-icount", f"shift=7,rr=record,rrfile={rr}"], feed)
        rep = urr(["-kernel", os.path.join(GUESTS, f"{name}.elf"), "-snapshots", "off",
                   "-icount", f"shift=7,rr=replay,rrfile={rr}"])
        bases.append((name, rr, rep))
    return bases


def one_mutation(rng: random.Random, base: tuple[str, str, Run], work: str, n: int) -> Fuzzed:
    name, rr, original = base
    reader = L.LogReader(rr)
    records = [r for c in reader.chunks() for r in c.records]
    changed, what = mutate(records, rng)
    bad = os.path.join(work, f"m{n}.rr")
    write_log(bad, reader.config, changed, rng.choice([5, 50, 100000]))
    rep = urr(["-kernel", os.path.join(GUESTS, f"{name}.elf"), "-snapshots", "off",
               "-icount", f"shift=7,rr=replay,rrfile={bad}"])
    os.remove(bad)
    if rep.traceback or rep.status == -1:
        return Fuzzed(name, what, "traceback", rep.err[-2000:])
    if (rep.status, rep.state, rep.out) == (original.status, original.state, original.out):
        return Fuzzed(name, what, "same")
    if rep.status in QUIET_STATUSES and len(rep.err.strip().splitlines()) <= 2:
        return Fuzzed(name, what, "refused", rep.err.strip().splitlines()[0] if rep.err.strip() else "")
    return Fuzzed(name, what, "silent", f"status {rep.status}: {rep.err.strip()[-300:]}")


# -- the run ----------------------------------------------------------------------------------

@dataclass
class Report:
    pairs: list[Pair] = field(default_factory=list)
    fuzzed: list[Fuzzed] = field(default_factory=list)
    seconds: float = 0.0

    def figures(self) -> dict:
        count = lambda items, outcome: sum(1 for i in items if i.outcome == outcome)  # noqa: E731
        return {
            "pairs": count(self.pairs, "match") + count(self.pairs, "divergence") + count(self.pairs, "traceback"),
            "pairs_matched": count(self.pairs, "match"),
            "pairs_refused": count(self.pairs, "refused"),
            "divergences": count(self.pairs, "divergence"),
            "timeouts": count(self.pairs, "timeout"),
            "mutations": len(self.fuzzed),
            "mutations_same": count(self.fuzzed, "same"),
            "mutations_refused": count(self.fuzzed, "refused"),
            "silent_differences": count(self.fuzzed, "silent"),
            "tracebacks": count(self.pairs, "traceback") + count(self.fuzzed, "traceback"),
            "seconds": round(self.seconds, 1),
        }

    def failures(self) -> list[str]:
        bad = [f"pair {p.config}: {p.outcome}: {p.detail}" for p in self.pairs
               if p.outcome in ("divergence", "traceback", "timeout")]
        return bad + [f"mutation {m.guest} {m.change}: {m.outcome}: {m.detail}" for m in self.fuzzed
                      if m.outcome in ("silent", "traceback")]


def soak(pairs: int, mutations: int, seed: int, jobs: int = 1) -> Report:
    rng = random.Random(seed)
    names = guests()
    report = Report()
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="urr-soak-") as work, \
            concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        # Each task gets its own generator, seeded in order: the draws do not depend on the
        # order in which the threads run.
        seeds = [rng.getrandbits(64) for _ in range(pairs)]
        report.pairs = list(pool.map(lambda n: one_pair(random.Random(seeds[n]), names, work, n), range(pairs)))
        if mutations:
            bases = fuzz_bases(names, work)
            seeds = [rng.getrandbits(64) for _ in range(mutations)]

            def mutation(n: int) -> Fuzzed:
                r = random.Random(seeds[n])
                return one_mutation(r, r.choice(bases), work, n)
            report.fuzzed = list(pool.map(mutation, range(mutations)))
    report.seconds = time.monotonic() - start
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=100, help="randomized record/replay pairs")
    ap.add_argument("--mutations", type=int, default=100, help="mutated logs to replay")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1, help="urr processes at a time")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    report = soak(args.pairs, args.mutations, args.seed, args.jobs)
    figures = report.figures()
    if args.json:
        print(json.dumps({**figures, "failures": report.failures()}, indent=1))
    else:
        for key, value in figures.items():
            print(f"{key:<20}{value}")
        for line in report.failures():
            print(line)
    return 1 if report.failures() else 0


if __name__ == "__main__":
    raise SystemExit(main())
