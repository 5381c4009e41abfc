"""The shared-storage check (harness/nodes.py) on a real two-node Ray cluster on this machine.

The head node comes from ray.cluster_utils.Cluster; the second node is a `ray start` in its own mount
namespace with a private tmpfs over one folder: that folder is then node-local storage, exactly what a
local ``./runs`` is on a real cluster, while every other folder is shared as over NFS.

This module's name sorts before every other Ray test: it must run before the session's local Ray starts
(two Ray instances at once break each other's cleanup).
"""

import os
import shutil
import subprocess
import sys
import time

import pytest

ray = pytest.importorskip("ray")

from harness.nodes import CHECK_PREFIX, SharedStorageError, check_shared_storage  # noqa: E402

pytestmark = pytest.mark.ray


def _can_unshare_mounts() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


@pytest.fixture
def two_nodes(tmp_path):
    """(driver connected to a 2-node cluster, the folder only the second node sees privately)."""
    if ray.is_initialized():
        pytest.skip("needs its own Ray cluster; another Ray is running in this session")
    if not _can_unshare_mounts():
        pytest.skip("needs `unshare -m` (a mount namespace) to give the second node private storage")
    from ray.cluster_utils import Cluster

    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")  # this environment's, on PATH or not
    private = tmp_path / "node-local"
    private.mkdir()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    node = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f"mount -t tmpfs tmpfs {private} && exec {ray_cli} start --address={cluster.address} --num-cpus=1 "
         "--block --disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        deadline = time.time() + 90
        while sum(n["Alive"] for n in ray.nodes()) < 2:
            assert time.time() < deadline and node.poll() is None, "the second node did not join"
            time.sleep(0.5)
        yield private
    finally:
        ray.shutdown()
        node.terminate()
        try:
            node.wait(30)
        except subprocess.TimeoutExpired:
            node.kill()
        cluster.shutdown()


def test_a_node_local_storage_path_fails_the_check_and_a_shared_one_passes(two_nodes, tmp_path):
    with pytest.raises(SharedStorageError, match=r"not shared by every node.*s3://.*gs://"):
        check_shared_storage(str(two_nodes), log=lambda line: None)
    shared = tmp_path / "shared"
    lines = []
    check_shared_storage(str(shared), log=lines.append)
    assert lines == [f"storage path {shared}: shared by all 2 nodes"]
    assert not [name for name in os.listdir(shared) if name.startswith(CHECK_PREFIX)]  # no marker left behind
    check_shared_storage("s3://bucket/runs", log=lines.append)  # a URI is shared by construction: no tasks
    assert len(lines) == 1
