"""The segment runner on Ray: a real local Ray instance (2 CPUs, on 127.0.0.1), started once for
this module and stopped at its end, gives what one straight replay gives."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import ray

from history.queries import Writes
from tests.conftest import ROOT
from tests.histories import make_case, queries, straight_results, worker_deaths
from tests.replays import recorded  # noqa: F401  (recorded is a fixture)


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance; its workers import this checkout. Its memory monitor is off: it
    kills tasks when the whole (shared) machine runs short, whoever uses the memory."""
    os.environ["RAY_memory_monitor_refresh_ms"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1", runtime_env={"env_vars": {"PYTHONPATH": ROOT}})
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        del os.environ["RAY_memory_monitor_refresh_ms"]


@pytest.fixture(scope="module", params=(1, 2))
def case(request, guests, tmp_path_factory):
    return make_case(request.param, guests, str(tmp_path_factory.mktemp("history-ray")))


def test_ray_gives_the_straight_results(cluster, case):
    rec = case.recording()
    straight = straight_results(case)
    assert queries(rec, case, ray="") == straight
    assert len(rec.last_run.segments) > 1
    # Segments of separate stretches (a write index skipping intervals): each shipped snapshot
    symbol, length = case.watch
    ranges = [(w.icount, w.icount + 1) for w in straight["writes"]]
    assert rec.run(Writes(rec.address(symbol), length, ranges), ray="") == straight["writes"]


def test_a_ray_worker_that_dies_once_is_retried(cluster, recorded, tmp_path):
    worker_deaths(recorded("ticks"), str(tmp_path / "died"), r"its Ray worker died twice \(\w+\)", ray="")


def test_cli_on_the_cluster_by_its_address(cluster, recorded):
    r = recorded("corrupt")
    common = [sys.executable, "-m", "snapshots.cli"]
    run = lambda *a: subprocess.run([*common, *a], capture_output=True, text=True, cwd=ROOT, timeout=300)  # noqa: E731
    out = run("verify", r.rrfile, "--ray", cluster)
    assert out.returncode == 0 and out.stdout == "all snapshots match their replay\n", out.stderr
    on_ray = run("writes", r.rrfile, "total_checks", "--kernel", r.kernel, "--ray", cluster)
    local = run("writes", r.rrfile, "total_checks", "--kernel", r.kernel, "--jobs", "1")
    assert on_ray.returncode == 0, on_ray.stderr
    assert on_ray.stdout == local.stdout and on_ray.stdout.count("icount ") > 10
