"""The shared-storage check (harness/nodes.py) and the node-loss drill on a real two-node Ray cluster on
this machine.

The head node comes from ray.cluster_utils.Cluster; the second node is a `ray start` in its own mount
namespace with a private tmpfs over one folder: that folder is then node-local storage, exactly what a
local ``./runs`` is on a real cluster, while every other folder is shared as over NFS.

This module's name sorts before every other Ray test: it must run before the session's local Ray starts
(two Ray instances at once break each other's cleanup).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

ray = pytest.importorskip("ray")

from condgen_bench.harness.nodes import CHECK_PREFIX, SharedStorageError, check_shared_storage  # noqa: E402

pytestmark = pytest.mark.ray


def _can_unshare_mounts() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


class Node:
    """The cluster's second node: a `ray start` in its own mount namespace, with a private tmpfs over
    ``private`` and the custom resource "drill_node" (trials that ask for it run there)."""

    def __init__(self, address: str, private):
        ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")  # this environment's, on PATH or not
        resources = json.dumps({"drill_node": 1})
        self.process = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             f"mount -t tmpfs tmpfs {private} && exec {ray_cli} start --address={address} --num-cpus=1 "
             f"--resources='{resources}' --block --disable-usage-stats"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def wait_joined(self, nodes: int) -> None:
        deadline = time.time() + 90
        while sum(n["Alive"] for n in ray.nodes()) < nodes:
            assert time.time() < deadline and self.process.poll() is None, "the second node did not join"
            time.sleep(0.5)

    def kill(self) -> None:
        """Lose the node: SIGKILL to every process of it at once (no graceful drain)."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """{"cluster", "node" (the second Node), "private" (the folder only it sees privately)}, with this
    process connected as the driver."""
    if ray.is_initialized():
        pytest.skip("needs its own Ray cluster; another Ray is running in this session")
    if not _can_unshare_mounts():
        pytest.skip("needs `unshare -m` (a mount namespace) to give the second node private storage")
    from ray.cluster_utils import Cluster

    private = tmp_path_factory.mktemp("node-local")
    # the head notices a lost node after 2 missed health checks 1 s apart (Ray's default: 5, 3 s apart)
    # ("drill_head": the trial drivers, and with them Ray Train's controllers, stay on the head)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"drill_head": 1},
        "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 2}})
    nodes = {"cluster": cluster, "private": private, "node": Node(cluster.address, private)}
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        nodes["node"].wait_joined(2)
        yield nodes
    finally:
        ray.shutdown()
        nodes["node"].stop()
        cluster.shutdown()


def test_a_node_local_storage_path_fails_the_check_and_a_shared_one_passes(two_nodes, tmp_path):
    with pytest.raises(SharedStorageError, match=r"not shared by every node.*s3://.*gs://"):
        check_shared_storage(str(two_nodes["private"]), log=lambda line: None)
    shared = tmp_path / "shared"
    lines = []
    check_shared_storage(str(shared), log=lines.append)
    assert lines == [f"storage path {shared}: shared by all 2 nodes"]
    assert not [name for name in os.listdir(shared) if name.startswith(CHECK_PREFIX)]  # no marker left behind
    check_shared_storage("s3://bucket/runs", log=lines.append)  # a URI is shared by construction: no tasks
    assert len(lines) == 1


def test_a_lost_node_costs_one_epoch_and_the_data_travels_with_the_run(two_nodes, tmp_path, monkeypatch):
    """The trial's worker runs on the second node, its driver (cluster.driver_resources) on the head; after
    its epoch-1 checkpoint the node is lost (every process SIGKILLed) and an identical one joins: Ray Train
    (max_failures 3 on a cluster) restarts the worker there from checkpoint 1, the trial itself never failed,
    and the sweep completes. The dataset's CSV is renamed once the driver
    has loaded it: the data reaches the new node through Ray's object store, not the file."""
    from condgen_bench.datasets import DataConfig
    from condgen_bench.datasets.export import synthetic_rows, write_fer2013_csv
    from condgen_bench.harness.sweep import run_sweep
    from condgen_bench.reports.run_folder import faults
    from drill_tools import checkpointed_epoch, epoch_record, tune_trial_failures, wait_for
    from test_ray_sweep import tiny_experiment

    csv = tmp_path / "fer2013.csv"
    images, labels, identity = synthetic_rows(6)
    write_fer2013_csv(str(csv), images, labels, ["Training" if i < 4 else "PrivateTest" for i in identity])
    marker = tmp_path / "epoch1"
    monkeypatch.setenv(faults.ENV, json.dumps({"at": "epoch_end", "epoch": 1, "rank": 0, "do": "pause",
                                               "once": str(marker)}))
    config = tiny_experiment(tmp_path)
    config.data = DataConfig(name="fer2013", data_root=str(csv), image_size=16)
    config.cluster.address = two_nodes["cluster"].address
    config.cluster.workers_per_trial, config.cluster.cpus_per_worker = 1, 0.5
    config.cluster.worker_resources = {"drill_node": 0.5}  # the worker (and the scoring tasks) on the second node
    config.cluster.driver_resources = {"drill_head": 0.5}  # the trial's driver and controller on the head
    config.train.eval_every, config.eval.finalists = 0, 0
    lost = {}

    def lose_the_node():
        try:
            wait_for(lambda: marker.exists(), "the worker to finish epoch 1")
            [train_dir] = list((tmp_path / "tiny").glob("*/train/*"))
            wait_for(lambda: checkpointed_epoch(train_dir) == 1, "the epoch-1 checkpoint")
            csv.rename(tmp_path / "moved.csv")
            two_nodes["node"].kill()
            two_nodes["node"] = Node(two_nodes["cluster"].address, two_nodes["private"])
            lost["done"] = True
        except BaseException as error:  # noqa: BLE001 - re-raised by the test
            lost["error"] = error

    thread = threading.Thread(target=lose_the_node, daemon=True)
    thread.start()
    outcome = run_sweep(config, log=lambda *_: None)
    thread.join(60)
    if "error" in lost:
        raise lost["error"]
    assert lost.get("done")
    import pandas as pd

    frame = pd.read_parquet(outcome.results_path)
    assert list(frame["status"]) == ["completed"] and list(frame["epoch"]) == [2]
    [trial] = frame["trial_id"]
    run_dir = outcome.run_dir
    from pathlib import Path

    assert epoch_record(Path(run_dir), trial, 2)["resumed_from_epoch"] == 1
    assert epoch_record(Path(run_dir), trial, 1)["resumed_from_epoch"] == 0
    assert tune_trial_failures(Path(run_dir)) == {trial: 0}  # its driver, on the head, never failed
