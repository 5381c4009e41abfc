"""Shared fixtures. Ray starts once per session, only for the tests that ask for it."""

import os

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
