"""Shared fixtures. Ray starts once per session, only for the tests that ask for it."""

import os

import pytest

# The local Ray settings of harness/sweep.py (start_local_ray sets them too), set before any Ray starts, for
# the tests that start a Ray cluster of their own (tests/test_cluster_storage.py)
from condgen_bench.harness.sweep import set_local_ray_env

set_local_ray_env()


def pytest_collection_modifyitems(session, config, items):
    """The killed-driver drill runs last: its first run (a subprocess with a local Ray of its own) starts in the
    background as the drills' module begins (pytest_runtest_setup) and is long paused where the drill kills
    it by then. Its minute of process starts, one after another, is mostly a core waiting: the tests run
    meanwhile fill it, and the suite is about a minute shorter."""
    from drill_tools import KILLED_DRIVER

    items[:] = [i for i in items if i.name != KILLED_DRIVER] + [i for i in items if i.name == KILLED_DRIVER]


def pytest_runtest_setup(item):
    """Start the killed-driver drill's first run when the drills' module begins, if the drill was selected
    (after tests/test_devices.py, whose placement test allows a task 2 s to start)."""
    from drill_tools import BACKGROUND, KILLED_DRIVER

    if getattr(item.module, "__name__", "") == "test_drills" and not BACKGROUND.get("started") \
            and any(i.name == KILLED_DRIVER for i in item.session.items):
        import tempfile
        from pathlib import Path

        from test_drills import start_killed_driver_run

        BACKGROUND["started"] = True
        BACKGROUND[KILLED_DRIVER] = start_killed_driver_run(Path(tempfile.mkdtemp(prefix="killed-driver-drill-")))


def pytest_sessionfinish(session, exitstatus):
    """A first run the drill never took (a failure before it, -x): killed with its Ray."""
    from drill_tools import BACKGROUND, KILLED_DRIVER

    run = BACKGROUND.pop(KILLED_DRIVER, None)
    if run is not None and run.process.poll() is None:
        run.kill()


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
