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

from condgen_bench.reports.run_folder import storage

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


# ---------------------------------------------------------------------------------------------
# Placing a one-off task (the evaluation reference) on what the cluster has

# task states in which Ray has not yet found the task a node (ray.util.state's TaskState.state)
UNPLACED = ("PENDING_NODE_ASSIGNMENT", "PENDING_ARGS_AVAIL", "PENDING_ARGS_FETCH", "PENDING_OBJ_STORE_MEM_AVAIL")


def reference_options(cpus: float, nodes: list[dict]) -> dict:
    """Ray task options for the evaluation reference: ``cpus`` CPUs (a training worker's, or the largest node's
    where none has that many) and one GPU where some alive node has a GPU beside those CPUs. Never the workers'
    custom resources (``cluster.worker_resources`` steer the workers, e.g. onto spot nodes; the reference needs
    none, and asking for both a GPU and them waits forever where no node has the two). nodes: ray.nodes()."""
    totals = [node.get("Resources", {}) for node in nodes if node.get("Alive")]
    if not totals:
        raise RuntimeError("the cluster has no alive node to make the evaluation reference on")
    cpus = min(cpus, max(r.get("CPU", 0.0) for r in totals))
    gpu = any(r.get("GPU", 0.0) >= 1 and r.get("CPU", 0.0) >= cpus for r in totals)
    return {"num_cpus": cpus, "num_gpus": 1 if gpu else 0, "resources": {}}


def await_placed(refs: list, what: str, asks: dict, log=print, patience_s: float = 60.0,
                 state_of=None, wait=None) -> list:
    """ray.get(refs), saying within ``patience_s`` when a task still has no node: one log line naming what
    it asks for and what the cluster has free, again every ``patience_s`` while it waits. ``state_of(ref)``:
    the task's state (ray.util.state; None where it cannot be read), ``wait``: ray.wait (both replaceable
    for tests)."""
    state_of = state_of or _task_state
    wait = wait or ray.wait
    waited, pending = 0.0, list(refs)
    while pending:
        _, pending = wait(pending, num_returns=len(pending), timeout=patience_s)
        waited += patience_s
        unplaced = [ref for ref in pending if state_of(ref) in UNPLACED]
        if unplaced:
            free = {k: round(v, 2) for k, v in ray.available_resources().items()
                    if k in ("CPU", "GPU") or not k.startswith(("node:", "memory", "object_store"))}
            log(f"WARNING: {len(unplaced)} {what} task(s) have waited {waited:.0f} s for a node with {asks}: no node "
                f"can take it now (free in the cluster: {free}); it runs when one can")
    return ray.get(list(refs))


def _task_state(ref) -> str | None:
    """The task behind ``ref``'s state ("PENDING_NODE_ASSIGNMENT", "RUNNING", ...), None where unknown."""
    try:
        from ray.util.state import get_task

        task = get_task(ref.task_id().hex(), timeout=10)
    except Exception:  # noqa: BLE001 - the state API needs the dashboard; without it nothing is said
        return None
    task = task[-1] if isinstance(task, list) and task else task
    return getattr(task, "state", None)
