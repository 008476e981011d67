"""The Ray executor on a real local Ray cluster: the same results, bit for bit, as the process pool.

The cluster is started once for the module (``ray.init(address="local", num_cpus=2)``, about
10 s here) and shut down by the fixture's finalizer. Two drivers use it: this test process,
through the connection it already has, and a second Python process that connects by address,
as a driver on a login node would connect to a cluster's head.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

ray = pytest.importorskip("ray")

from mechgrok.sweeps import run_sweep, sweep_results  # noqa: E402

from test_sweeps import AXES, BASE, BITWISE, SWEEP, assert_same_sweeps  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs; yields its address."""
    started = time.perf_counter()
    context = ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        assert time.perf_counter() - started < 120
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def process_pool_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("process") / "sweep"
    run_sweep(SWEEP, out, executor="process", workers=2, **BITWISE)
    return out


def test_a_ray_sweep_equals_the_process_pool_sweep(cluster, process_pool_sweep, tmp_path):
    done = []
    results = run_sweep(SWEEP, tmp_path / "sweep", executor="ray", on_chunk=done.append, **BITWISE)
    assert ray.is_initialized()  # a connection the caller made is left open
    assert sorted(map(len, done)) == [2, 2]  # a task of two runs per CPU of the cluster
    assert (results.status == "finished").all()
    assert_same_sweeps(tmp_path / "sweep", process_pool_sweep)
    again = []
    run_sweep(SWEEP, tmp_path / "sweep", executor="ray", on_chunk=again.append)
    assert again == []  # nothing left to train: no task was sent


@pytest.mark.slow  # a second Python process that imports mechgrok and connects: ~20 s; the in-process driver test stays
def test_a_driver_that_connects_by_address_equals_the_process_pool_sweep(cluster, process_pool_sweep, tmp_path):
    code = (
        "import json, sys\n"
        "from mechgrok.config import Config\n"
        "from mechgrok.sweeps import Sweep, run_sweep\n"
        "base, axes, out, address = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]\n"
        "run_sweep(Sweep(Config.from_dict(base), axes), out, executor='ray', address=address, chunk_size=2)\n"
        "import ray; assert not ray.is_initialized()  # the connection run_sweep made is closed\n"
    )
    done = subprocess.run([sys.executable, "-c", code, json.dumps(BASE.to_dict()), json.dumps(AXES),
                           str(tmp_path / "sweep"), cluster], capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (sweep_results(tmp_path / "sweep").status == "finished").all()
    assert_same_sweeps(tmp_path / "sweep", process_pool_sweep)


def test_a_worker_that_does_not_see_the_sweep_folder_is_refused_with_the_fix(cluster, tmp_path):
    from mechgrok.sweeps.chunks import train_chunk

    task = ray.remote(num_cpus=1, max_retries=0)(train_chunk)
    with pytest.raises(FileNotFoundError, match="must see the sweep folder at the same path. Put it on a shared filesystem"):
        ray.get(task.remote([BASE], [str(tmp_path / "run")], sweep_folder=str(tmp_path / "elsewhere")))


def test_options_for_an_existing_connection_are_refused(cluster, tmp_path):
    with pytest.raises(ValueError, match="Ray is already initialised in this process; pass address=None"):
        run_sweep(SWEEP, tmp_path / "sweep", executor="ray", address="auto")
