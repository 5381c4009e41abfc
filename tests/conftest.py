"""Shared fixtures. Ray starts once per session, only for the tests that ask for it."""

import os

import pytest

# Ray Train's controller looks at its workers every 2 s by default: for seconds-long test trials that is
# most of their time (a report, a finished or dead worker waits for the next look). Set before any Ray
# starts, so the local Ray's processes, and the sweeps the drills start in subprocesses, inherit it.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
# and it starts an actor (a process) per trial that watches for preempted cloud nodes, of no use here
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


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
