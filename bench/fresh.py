"""One urr run in this process, for `bench.run.run_urr_fresh`: prints [wall, CPU] as JSON.

Usage: python -m bench.fresh KERNEL [urr options...]"""
from __future__ import annotations

import json
import sys

from bench.run import run_urr_timed


def main() -> None:
    _, wall, cpu = run_urr_timed(sys.argv[1], *sys.argv[2:])
    print(json.dumps([wall, cpu]))


if __name__ == "__main__":
    main()
