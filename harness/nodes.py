"""Checks that a Ray cluster's nodes can work on one run: a storage path that is a plain folder (not an
s3:// or gs:// URI) must be the same folder on every node (a shared mount such as NFS), or checkpoints and
evaluation records land on whichever node wrote them and the driver finds "no evaluation ran".

``check_shared_storage`` proves it before any trial: the driver writes a marker, a task pinned to every
other node reads it and writes its own, and the driver must see each of those.
"""

from __future__ import annotations

import shutil
import uuid

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from condgen_bench.reports import storage

CHECK_PREFIX = ".storage-check-"  # a folder under the storage path, removed after the check


class SharedStorageError(RuntimeError):
    """A local storage path that some node of the cluster does not share."""


def _node_marker(folder: str, node_id: str) -> bool:
    """On one node: write this node's marker into ``folder``; True when the driver's marker is visible."""
    seen = storage.exists(storage.join(folder, "driver"))
    storage.write_bytes(storage.join(folder, node_id), node_id.encode())
    return seen


def check_shared_storage(path: str, what: str = "storage path", log=print, timeout_s: float = 120.0) -> None:
    """Raise SharedStorageError unless every alive node of the connected cluster sees the same files under
    ``path`` (a local folder; URIs are shared by construction and pass). ``what`` names the setting in the
    message. Each check task asks for no CPU, so it runs even while the cluster is busy."""
    if storage.is_uri(path):
        return
    here = ray.get_runtime_context().get_node_id()
    others = [n for n in ray.nodes() if n["Alive"] and n["NodeID"] != here]
    if not others:
        log(f"{what} {path}: the cluster has one node, nothing to share")
        return
    folder = storage.join(path, CHECK_PREFIX + uuid.uuid4().hex)
    storage.write_bytes(storage.join(folder, "driver"), b"driver")
    task = ray.remote(num_cpus=0)(_node_marker)
    try:
        refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
                             name="storage check").remote(folder, n["NodeID"]) for n in others]
        saw_driver = ray.get(refs, timeout=timeout_s)
        blind = [n["NodeManagerAddress"] + f" ({n['NodeID'][:8]})" for n, seen in zip(others, saw_driver)
                 if not seen or not storage.exists(storage.join(folder, n["NodeID"]))]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if blind:
        raise SharedStorageError(
            f"the {what} {path} is not shared by every node of the cluster: node(s) {', '.join(blind)} "
            "see other files there, so their checkpoints and evaluations would be lost to this driver. "
            "Pass --storage-path s3://bucket/runs, gs://bucket/runs or a folder on a mount every node shares (NFS).")
    log(f"{what} {path}: shared by all {len(others) + 1} nodes")
