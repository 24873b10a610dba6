"""Shared fixtures: the example guests (built once with make) and a runner for the urr CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "guests", "build")


@pytest.fixture(scope="session")
def guests() -> dict[str, str]:
    """name -> path of each example guest ELF, built by `make -C guests`."""
    subprocess.run(["make", "-s", "-C", os.path.join(ROOT, "guests")], check=True,
                   capture_output=True)
    return {f[:-4]: os.path.join(BUILD, f) for f in os.listdir(BUILD) if f.endswith(".elf")}


@dataclass
class Result:
    status: int
    out: bytes
    err: str

    def note(self, prefix: str) -> str:
        """The urr: line starting with `prefix` (e.g. 'recorded')."""
        for line in self.err.splitlines():
            if line.startswith(f"urr: {prefix}"):
                return line
        raise AssertionError(f"no 'urr: {prefix}' line in:\n{self.err}")

    def state(self) -> str:
        for line in self.err.splitlines():
            if "; state " in line:
                return line.rsplit("; state ", 1)[1]
        raise AssertionError(f"no state hash in:\n{self.err}")


def run_urr(*args: str, stdin: bytes | None = None, timeout: float = 120) -> Result:
    r = subprocess.run([sys.executable, "-m", "urr", "-display", "none", *args], input=stdin,
                       capture_output=True, timeout=timeout, cwd=ROOT)
    return Result(r.returncode, r.stdout, r.stderr.decode(errors="replace"))


@pytest.fixture
def urr():
    return run_urr


@pytest.fixture
def disk_image(tmp_path) -> str:
    """A 64-sector raw image with deterministic pseudo-random content."""
    path = tmp_path / "disk.img"
    data = bytearray()
    x = 1
    while len(data) < 64 * 512:
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        data += (x >> 32).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return str(path)
