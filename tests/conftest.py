"""Shared fixtures. Ray starts once per session, only for the tests that ask for it.

The fast loop, `pytest -m "not ray" -n 2`, runs the tests without Ray in two processes (pytest-xdist), each
with one torch thread: on 2 cores two processes of two spinning OpenMP threads each took 370 s for the
tests that take 108 s with one thread each (169 s in one process, with one thread or two). The whole suite
stays in one process: with `-n 2` its Ray tests (one xdist group, below) slowed by as much as the other
process saved (444 s against 446 s), since they are bound by the CPU themselves."""

import os

if os.environ.get("PYTEST_XDIST_WORKER"):  # set by xdist in its workers, before this file is imported
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported (the import below brings it in)

import pytest

# The local Ray settings of harness/sweep.py (start_local_ray sets them too), set before any Ray starts, for
# the tests that start a Ray cluster of their own (tests/test_cluster_storage.py)
from condgen_bench.harness.sweep import set_local_ray_env

set_local_ray_env()


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray with 2 CPUs and its dashboard (Ray Train frees early-stopped trials' resources
    through it), started the way the sweep starts one: its address given to every process it starts, so
    a sweep run beside the tests (tests/test_drills.py does) does not confuse it."""
    import ray

    from condgen_bench.harness.sweep import start_local_ray

    start_local_ray(2, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    os.environ.pop("RAY_API_SERVER_ADDRESS", None)


def pytest_collection_modifyitems(items):
    """The Ray tests in one xdist group: one process runs them in turn on its one local Ray. The tests that
    start a Ray cluster of their own (tests/test_cluster_storage.py two_nodes) go first: once any test has
    started the session's local Ray (ray_local), they can only skip."""
    items.sort(key=lambda item: "two_nodes" not in getattr(item, "fixturenames", ()))  # stable: the rest keep their order
    for item in items:
        if item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.xdist_group("ray"))
