"""Soak: randomized record/replay pairs, and a fuzz pass over the event log's reader.

    python bench/soak.py --pairs 100 --seed 1 [--mutations 200] [--stub 4] [--short [--long F]] [--jobs 2] [--json]

Pairs: each records a guest picked at random (every example and test guest but the two
benchmark ones) with a random RAM size, icount shift, snapshot policy, initial snapshot or not,
disk image (random content and size) or none, and serial input typed at random host moments,
then replays it, from boot or from a snapshot. A pair passes when the replay ends with the
recording's exit status and final state hash (and, from boot, prints the same output), and every
line on standard error is one of urr's (no traceback). A recording refused before it starts
(a guest that does not fit in the RAM size drawn) counts as refused, not as a pair. `--short`
pairs draw RAM sizes up to 64M and end each recording by a Ctrl-C at a random moment within
SHORT_SECONDS of host time (its replay must reach that end record, in the same state), so that
a pair costs about a second whatever the guest. Most guests end within a few thousand
instructions by themselves (the fault guests, hello), so `--long F` makes a share F of short pairs
long ones (default LONG_SHARE): a guest that runs for tens of millions of instructions or more
(LONG_GUESTS, the benchmark ones included) cut by a Ctrl-C within LONG_SECONDS, millions to
hundreds of millions of instructions, at a few seconds each.

urr runs in-process (urr.cli.main, with standard input, output and error captured and Ctrl-C as a
real SIGINT), in `--jobs` spawned worker processes: a run costs no interpreter start-up.

Mutations: a recording's log rewritten with one semantic change and valid checksums (a field's
value, a record's icount, a record dropped, repeated or of another kind, the end record's status
or reason), then replayed. The replay must end exactly as the unchanged one did (the change did
not matter), or stop with one line and status 2 (bad input), 4 (a fault the recording also
met), 6 (divergence) or 8 (incomplete log): never a traceback, never a different end reported
as a success.

Stub fuzzing (`--stub N`): N batches of bench/stubfuzz.py (STUB_PACKETS random and hostile GDB
packets each, against a replay of hello), each in a child process with its own copy of the
recording. A batch passes when every packet got its reply, the stub logged no unexpected
exception and the process ended normally with only urr's lines on standard error.

Everything drawn comes from one random.Random(seed), so a run is repeatable but for the host
timing of serial input (which the recording captures). Figures: pairs, divergences, tracebacks,
silent differences, and the time taken."""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import importlib
import io
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from replay import log as L  # noqa: E402

GUESTS = os.path.join(ROOT, "guests", "build")
SKIP = {"spin", "longloop"}  # benchmark guests: minutes of soak each
RAM_SIZES = ["2M", "3M", "4M", "8M", "16M", "32M", "64M", "256M", "1G"]
POLICIES = ["off", "10ms:1s,100ms", "100ms", "1ms:100ms,10ms:1s,100ms"]
QUIET_STATUSES = {2, 4, 6, 8}  # how a damaged log may end a replay: one line and one of these
SHORT_RAM_SIZES = ["2M", "3M", "4M", "8M", "16M", "32M", "64M"]
SHORT_SECONDS = (0.2, 1.5)  # a short pair's recording ends by a Ctrl-C in this range (host seconds)
LONG_GUESTS = ("corrupt", "cpuloop", "longcalls", "longloop", "revloop-long", "spin")  # 10^7-10^8 instructions
LONG_SECONDS = (1.5, 4.0)  # a long pair's Ctrl-C
LONG_SHARE = 0.05  # of short pairs, by default
_LONG_DRAW = 0x4C4F4E47  # the long-or-not draw has a Random of its own: other pairs draw as before
RUN_TIMEOUT = 300.0
RUNS_PER_WORKER = 25  # pool tasks before a worker is replaced by a fresh one
STUB_PACKETS = 300


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
    def icount(self) -> Optional[int]:
        """Where a recording ended (its last line says), if it says."""
        m = re.search(r"recorded (\d+) instructions|at icount (\d+); state|\(icount (\d+), rip", self.err)
        return int(m[1] or m[2] or m[3]) if m else None

    @property
    def traceback(self) -> bool:
        return any(not line.startswith("urr: ") for line in self.err.splitlines())


@dataclass
class Typing:
    """Serial input typed into a recording: each byte after its delay (seconds)."""
    text: bytes
    delays: list[float]


def urr(args: list[str], typed: Optional[Typing] = None, stop_after: Optional[float] = None) -> Run:
    """urr's launcher (urr.cli.main) in this process, as a pool worker runs many: no interpreter
    start-up per run. Standard input is a pipe `typed` is written into, standard output and error
    are captured. A Ctrl-C (SIGINT to this process, what urr's signal handling takes) ends the run
    after `stop_after` seconds of host time if it has not ended, and after RUN_TIMEOUT anyway."""
    from urr.cli import main

    read_end, write_end = os.pipe()
    saved_stdin, saved_stdout = os.dup(0), sys.stdout
    os.dup2(read_end, 0)
    os.close(read_end)
    done = threading.Event()

    def type_in() -> None:
        try:
            for byte, delay in zip(typed.text if typed else b"", typed.delays if typed else []):
                if done.wait(delay):
                    break
                os.write(write_end, bytes((byte,)))
        finally:
            os.close(write_end)  # end of input
    typist = threading.Thread(target=type_in, daemon=True)
    timers = [threading.Timer(t, os.kill, (os.getpid(), signal.SIGINT))
              for t in (stop_after, RUN_TIMEOUT) if t is not None]
    out, err = io.BytesIO(), io.StringIO()
    sys.stdout = captured = io.TextIOWrapper(out, write_through=True)
    try:
        typist.start()
        for timer in timers:
            timer.start()
        with contextlib.redirect_stderr(err):
            try:
                status = main(args + ["-display", "none"])
            except BaseException:  # what urr let through: a traceback, as a process would print it
                err.write(traceback.format_exc())
                status = -1
    finally:
        for timer in timers:
            timer.cancel()
        done.set()
        typist.join()
        captured.detach()  # leaves `out` open
        sys.stdout = saved_stdout
        os.dup2(saved_stdin, 0)
        os.close(saved_stdin)
        for thread in threading.enumerate():  # urr's reader of the pipe: at its end by now
            if thread.name == "urr-serial-input":
                thread.join(5)
    text = err.getvalue()
    if status == 130 and stop_after is None:
        status, text = -1, text + "soak: timed out\n"
    return Run(status, out.getvalue(), text)


def guests() -> list[str]:
    subprocess.run(["make", "-s", "-C", os.path.join(ROOT, "guests")], check=True, capture_output=True)
    return sorted(f[:-4] for f in os.listdir(GUESTS) if f.endswith(".elf") and f[:-4] not in SKIP)


def typing(rng: random.Random, name: str) -> Typing:
    """Serial input typed at random moments."""
    words = [rng.choice(["hello", "abc", "x" * rng.randint(1, 90), "  ", "\x7fback"]) for _ in range(rng.randint(0, 5))]
    if name == "echo" and rng.random() < 0.8:
        words.append("quit")  # else the guest halts at the end of its input: urr ends it
    text = "".join(w + rng.choice(["\n", "\r", "\r\n"]) for w in words).encode()
    return Typing(text, [rng.uniform(0, 0.02) for _ in text])


@dataclass
class Pair:
    config: dict
    outcome: str  # "match", "refused", "divergence", "traceback", "timeout"
    detail: str = ""


def one_pair(seed: int, names: list[str], work: str, n: int, short: bool = False, long_share: float = 0.0) -> Pair:
    """Pair number `n`, drawn from `seed`. `short`: RAM sizes up to 64M, and the recording ends
    by a Ctrl-C within SHORT_SECONDS of host time if the guest has not ended by then; with
    probability `long_share` it is a long pair instead (a LONG_GUESTS guest, LONG_SECONDS)."""
    rng = random.Random(seed)
    long = short and random.Random(seed ^ _LONG_DRAW).random() < long_share
    name = rng.choice(LONG_GUESTS if long else names)
    rr = os.path.join(work, f"p{n}.rr")
    shift, ram, policy = rng.randint(0, 10), rng.choice(SHORT_RAM_SIZES if short else RAM_SIZES), rng.choice(POLICIES)
    init = rng.random() < 0.5
    icount = f"shift={shift},rr=record,rrfile={rr}" + (",rrsnapshot=init" if init else "")
    args = ["-kernel", os.path.join(GUESTS, f"{name}.elf"), "-m", ram, "-snapshots", policy]
    disk = None
    if name == "disk" or rng.random() < 0.2:
        disk = os.path.join(work, f"p{n}.img")
        with open(disk, "wb") as f:
            f.write(rng.randbytes(512 * rng.choice([2, 3, 8, 64, 100, 2048])))
        args += ["-drive", f"file={disk},format=raw"]
    typed = typing(rng, name)
    stop_after = rng.uniform(*(LONG_SECONDS if long else SHORT_SECONDS)) if short else None
    config = {"guest": name, "ram": ram, "shift": shift, "snapshots": policy, "init": init,
              "disk": disk is not None, "input": len(typed.text), "stop_after": stop_after, "long": long}
    rec = urr(args + ["-icount", icount], typed, stop_after)
    if rec.status == -1:
        return Pair(config, "timeout", rec.err[-300:])
    if rec.traceback:
        return Pair(config, "traceback", rec.err[-2000:])
    if rec.status == 2:
        return Pair(config, "refused", rec.err.strip())
    config["icount"] = rec.icount
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
        text = b"hello\nworld\nquit\n"
        urr(args + ["-icount", f"shift=7,rr=record,rrfile={rr}"], Typing(text, [0.0] * len(text)))
        rep = urr(["-kernel", os.path.join(GUESTS, f"{name}.elf"), "-snapshots", "off",
                   "-icount", f"shift=7,rr=replay,rrfile={rr}"])
        bases.append((name, rr, rep))
    return bases


def one_mutation(seed: int, bases: list[tuple[str, str, Run]], work: str, n: int) -> Fuzzed:
    rng = random.Random(seed)
    name, rr, original = rng.choice(bases)
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


# -- the GDB stub -----------------------------------------------------------------------------

@dataclass
class StubBatch:
    seed: int
    packets: int
    unexpected: list[str]
    failures: list[str]
    traceback: bool


def one_stub_batch(seed: int, base: str, work: str, n: int) -> StubBatch:
    """bench/stubfuzz.py with `seed` in a child process, on its own copy of the recording `base`."""
    rr = os.path.join(work, f"stub{n}.rr")
    for suffix in ("", ".db", ".db-wal"):
        if os.path.exists(base + suffix):
            shutil.copyfile(base + suffix, rr + suffix)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "stubfuzz.py"), "--seed", str(seed),
                           "--packets", str(STUB_PACKETS), "--rrfile", rr, "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT * 4)
    for path in os.listdir(work):
        if path.startswith(f"stub{n}.rr"):
            os.remove(os.path.join(work, path))
    traceback = any(not line.startswith("urr: ") for line in proc.stderr.splitlines())
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return StubBatch(seed, 0, [], [f"seed {seed}: status {proc.returncode}: {proc.stderr[-1500:]}"], traceback)
    return StubBatch(seed, result["packets"], result["unexpected"], result["failures"], traceback)


# -- the run ----------------------------------------------------------------------------------

@dataclass
class Report:
    pairs: list[Pair] = field(default_factory=list)
    fuzzed: list[Fuzzed] = field(default_factory=list)
    stubs: list[StubBatch] = field(default_factory=list)
    seconds: float = 0.0

    def figures(self) -> dict:
        count = lambda items, outcome: sum(1 for i in items if i.outcome == outcome)  # noqa: E731
        return {
            "pairs": count(self.pairs, "match") + count(self.pairs, "divergence") + count(self.pairs, "traceback"),
            "pairs_matched": count(self.pairs, "match"),
            "pairs_refused": count(self.pairs, "refused"),
            "divergences": count(self.pairs, "divergence"),
            "pair_icount_median": statistics.median([p.config.get("icount") or 0 for p in self.pairs] or [0]),
            "pair_icount_max": max([p.config.get("icount") or 0 for p in self.pairs] or [0]),
            "long_pairs": sum(1 for p in self.pairs if p.config.get("long")),
            "long_pair_icount_median": statistics.median([p.config.get("icount") or 0 for p in self.pairs
                                                         if p.config.get("long")] or [0]),
            "timeouts": count(self.pairs, "timeout"),
            "mutations": len(self.fuzzed),
            "mutations_same": count(self.fuzzed, "same"),
            "mutations_refused": count(self.fuzzed, "refused"),
            "silent_differences": count(self.fuzzed, "silent"),
            "stub_packets": sum(b.packets for b in self.stubs),
            "stub_unexpected_errors": sum(len(b.unexpected) for b in self.stubs),
            "stub_failures": sum(len(b.failures) for b in self.stubs),
            "tracebacks": count(self.pairs, "traceback") + count(self.fuzzed, "traceback")
                          + sum(b.traceback for b in self.stubs),
            "seconds": round(self.seconds, 1),
        }

    def failures(self) -> list[str]:
        bad = [f"pair {p.config}: {p.outcome}: {p.detail}" for p in self.pairs
               if p.outcome in ("divergence", "traceback", "timeout")]
        bad += [f"mutation {m.guest} {m.change}: {m.outcome}: {m.detail}" for m in self.fuzzed
                if m.outcome in ("silent", "traceback")]
        for b in self.stubs:
            bad += [f"stub seed {b.seed}: unexpected: {u}" for u in b.unexpected] + b.failures
            bad += [f"stub seed {b.seed}: a traceback on standard error"] if b.traceback else []
        return bad


def _warm_worker() -> None:
    """Import what a run needs once, before the first run's Ctrl-C timer starts."""
    for module in ("urr.session", "snapshots.manager"):
        importlib.import_module(module)


def _pooled(jobs: int, task, *columns: list) -> list:
    """`task` over the rows of `columns`, in `jobs` spawned worker processes (no threads or locks
    inherited), each running urr many times in-process; the workers are renewed after
    RUNS_PER_WORKER tasks each, so what a run leaves behind goes with them (the pool's own
    max_tasks_per_child hung under Python 3.11 here)."""
    rows = list(zip(*columns))
    results: list = []
    step = jobs * RUNS_PER_WORKER
    context = multiprocessing.get_context("spawn")
    for first in range(0, len(rows), step):
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context, initializer=_warm_worker) as pool:
            results += pool.map(task, *zip(*rows[first:first + step]))
        if len(rows) > step:
            print(f"soak: {len(results)}/{len(rows)} {task.__name__} done", file=sys.stderr, flush=True)
    return results


def soak(pairs: int, mutations: int, seed: int, jobs: int = 1, stub: int = 0, short: bool = False,
         long_share: float = LONG_SHARE) -> Report:
    rng = random.Random(seed)
    names = guests()
    report = Report()
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="urr-soak-") as work:
        # Each task gets its own seed, drawn in order: the draws do not depend on the order in
        # which the workers run.
        seeds = [rng.getrandbits(64) for _ in range(pairs)]
        report.pairs = _pooled(jobs, one_pair, seeds, [names] * pairs, [work] * pairs, list(range(pairs)),
                               [short] * pairs, [long_share] * pairs)
        if mutations:
            bases = _pooled(1, fuzz_bases, [names], [work])[0]
            seeds = [rng.getrandbits(64) for _ in range(mutations)]
            report.fuzzed = _pooled(jobs, one_mutation, seeds, [bases] * mutations, [work] * mutations,
                                    list(range(mutations)))
        if stub:
            from bench.stubfuzz import record_base
            base = record_base(work)
            seeds = [rng.getrandbits(32) for _ in range(stub)]
            report.stubs = _pooled(jobs, one_stub_batch, seeds, [base] * stub, [work] * stub, list(range(stub)))
    report.seconds = time.monotonic() - start
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=100, help="randomized record/replay pairs")
    ap.add_argument("--mutations", type=int, default=100, help="mutated logs to replay")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1, help="urr processes at a time")
    ap.add_argument("--stub", type=int, default=0, help=f"batches of {STUB_PACKETS} fuzzed GDB packets")
    ap.add_argument("--short", action="store_true",
                    help=f"short pairs: RAM up to 64M, a Ctrl-C within {SHORT_SECONDS[1]} s ends each recording")
    ap.add_argument("--long", type=float, default=LONG_SHARE, metavar="F",
                    help=f"with --short, the share of pairs that are long (a long-running guest, a Ctrl-C "
                         f"within {LONG_SECONDS[1]} s); default {LONG_SHARE}")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not 0 <= args.long <= 1:
        ap.error(f"--long {args.long}: a share between 0 and 1")
    report = soak(args.pairs, args.mutations, args.seed, args.jobs, args.stub, args.short, args.long)
    figures = report.figures()
    if args.json:
        print(json.dumps({**figures, "failures": report.failures()}, indent=1))
    else:
        for key, value in figures.items():
            print(f"{key:<24}{value}")
        for line in report.failures():
            print(line)
    return 1 if report.failures() else 0


if __name__ == "__main__":
    raise SystemExit(main())
