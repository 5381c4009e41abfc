"""Shared fixtures. Ray starts once per session, only for the tests that ask for it."""

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray with 2 CPUs and its dashboard (Ray Train frees early-stopped trials' resources
    through it)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=True, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()
