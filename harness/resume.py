"""What a resume may change, and the record of what it changed.

A resumed run keeps its own saved config (config.json). The invocation that resumes it builds a config from
its flags too; the two are compared setting by setting, as the trials see them (a searched setting by its
sweep.space entry). The cluster settings may differ (they are this invocation's: workers, GPUs, retries);
the experiment's name and its data folder may too (a resume under another ``--name``; a moved dataset, whose
content harness/sweep.py checks by fingerprint); a setting the run resolved (RESOLVED) may be left unset. Any
other difference is refused with the list of
differing settings, unless ``--allow-changes KEY...`` names every one of them. An allowed change:

- may set a model.*, train.* or eval.* setting, to one value (a searched setting given one value: every
  trial that trains on takes it); the data, the method and the search itself cannot change in a run;
- is saved in config.json (what the next resume compares with) and in the run's invocations.json;
- reaches each trial when it next starts (harness/trial.py), and the trial's worker records in
  artifacts/<trial>/changes.json the epoch from which it trained under it: its rows say so.

invocations.json lists every driver that ran the run: its start time, code version (harness/results.py
code_version), the cluster settings and the changes it made. A different code version is logged; the rows
say which code made each evaluation.
"""

from __future__ import annotations

import json
import time

from condgen_bench.harness.config import flatten, set_path
from condgen_bench.reports.run_folder import layout, storage

CHANGEABLE = ("model.", "train.", "eval.")  # what --allow-changes may set in a run that has trained
FREE = ("name", "data.data_root")  # may differ without a word (a resume under another --name; a moved dataset)
# settings a run fills in when left unset (harness/sweep.py resolve_resources): unset in the resume is the run's
RESOLVED = ("sweep.max_concurrent_trials",)


class ResumeChangeError(ValueError):
    """A resume whose flags would change the experiment in a way it does not allow."""


def settings(values: dict) -> dict[str, object]:
    """{dotted path: value} of an experiment's config dict (``to_dict``) as its trials see it: a searched
    path by its sweep.space entry (the values listed, or the distribution's text) in place of the base value;
    the cluster settings left out (they are the invocation's)."""
    values = {k: v for k, v in values.items() if k != "cluster"}
    space = dict(values.get("sweep", {}).get("space") or {})
    flat = flatten({**values, "sweep": {k: v for k, v in values.get("sweep", {}).items() if k != "space"}})
    for path, entry in space.items():
        flat[path] = entry
    return flat


def differences(saved: dict, given: dict) -> dict[str, tuple]:
    """{path: (saved value, given value)} where two experiments' configs (``to_dict``) differ as their trials
    see them (``settings``), FREE paths and paths that only the given config has (fields the saved run's
    code did not know: ``new_fields``) left out."""
    old, new = settings(saved), settings(given)
    return {path: (old[path], new[path]) for path in sorted(old.keys() & new.keys())
            if path not in FREE and not (path in RESOLVED and new[path] is None)
            and json.dumps(old[path], sort_keys=True) != json.dumps(new[path], sort_keys=True)}


def new_fields(saved: dict, given: dict) -> dict[str, object]:
    """{path: given value} of the settings the saved config lacks (its run was made by older code, and its
    trials take these values: the defaults)."""
    old, new = settings(saved), settings(given)
    return {path: new[path] for path in sorted(new.keys() - old.keys())}


def searched(values: dict, path: str) -> bool:
    return path in (values.get("sweep", {}).get("space") or {})


def allowed_changes(saved: dict, given: dict, allow: list[str]) -> dict[str, tuple]:
    """The changes a resume makes to one experiment: {path: (old, new value the trials take)}. Raises
    ResumeChangeError naming every differing setting that ``allow`` does not name, and every allowed one that
    cannot change in a run (see the module's note)."""
    found = differences(saved, given)
    refused = [p for p in found if p not in allow]
    if refused:
        raise ResumeChangeError(
            f"the resume's settings differ from the run's saved config ({layout.CONFIG}) in "
            + "; ".join(f"{p}: {json.dumps(found[p][0])} -> {json.dumps(found[p][1])}" for p in refused)
            + ". Resume with the run's own settings, or apply the change to every trial from its next epoch "
            f"with --resume --allow-changes {' '.join(refused)}")
    changes, fixed = {}, []
    for path, (old, new) in found.items():
        if not path.startswith(CHANGEABLE):
            fixed.append(f"{path} (the data, the method and the search are fixed in a run)")
            continue
        if searched(given, path):
            listed = new if isinstance(new, list) else None
            if listed is None or len(listed) != 1:
                fixed.append(f"{path} (searched with {json.dumps(new)}: a resume cannot draw its trials again; give one value)")
                continue
            new = listed[0]
        changes[path] = (old, new)
    if fixed:
        raise ResumeChangeError("a resume cannot change " + "; ".join(fixed) + ": start a new run for that")
    return changes


def apply(values: dict, changes: dict[str, object]) -> dict:
    """A copy of a config dict (``to_dict``, or a trial's resolved one) with {path: value} set, and each
    changed path's sweep.space entry, where it has one, made that one value."""
    out = json.loads(json.dumps(values))
    space = out.get("sweep", {}).get("space")
    for path, value in changes.items():
        set_path(out, path, value)
        if space and path in space:
            space[path] = [value]
    return out


def record_invocation(run_dir: str, code: str, cluster: dict, changes: dict[str, dict], log=print) -> list[dict]:
    """Append this driver to the run's invocations.json ({"started", "code_version", "cluster", "changes":
    {experiment: {path: [old, new]}}}), logging a code version that differs from the last driver's. Returns
    every invocation, this one last."""
    path = layout.run_file(run_dir, layout.INVOCATIONS)
    past = json.loads(storage.read_bytes(path)) if storage.exists(path) else []
    if past and past[-1].get("code_version") != code:
        log(f"code version changed since this run's last driver: {past[-1].get('code_version')} -> {code}; "
            "the rows its evaluations make from now on say so (git_commit)")
    entry = {"started": time.time(), "code_version": code, "cluster": cluster,
             "changes": {name: {p: list(v) for p, v in c.items()} for name, c in changes.items() if c}}
    storage.write_bytes(path, json.dumps(past + [entry], indent=1).encode())
    return past + [entry]


def run_changes(invocations: list[dict], experiment: str) -> list[dict]:
    """The changes made to one experiment so far, in order: [{"id": invocation number, "values": {path: [old,
    new]}}] (what harness/trial.py applies and the worker records)."""
    return [{"id": number, "values": entry["changes"][experiment]} for number, entry in enumerate(invocations)
            if experiment in entry.get("changes", {})]


def record_trial_changes(run_dir: str, trial_id: str, changes: list[dict], from_epoch: int) -> list[dict]:
    """Add to artifacts/<trial>/changes.json the run's changes (``run_changes``) this trial had not trained
    under yet, each with ``from_epoch``, the first epoch it trains under them (its start epoch + 1). Returns
    the trial's records: [{"id", "values": {path: [old, new]}, "from_epoch"}]."""
    records = trial_changes(run_dir, trial_id)
    known = {r["id"] for r in records}
    new = [{**change, "from_epoch": from_epoch} for change in changes if change["id"] not in known]
    if new:
        records += new
        storage.write_bytes(layout.trial_changes_file(run_dir, trial_id), json.dumps(records, indent=1).encode())
    return records


def trial_changes(run_dir: str, trial_id: str) -> list[dict]:
    """The trial's change records (``record_trial_changes``), [] where it trained under none."""
    path = layout.trial_changes_file(run_dir, trial_id)
    return json.loads(storage.read_bytes(path)) if storage.exists(path) else []


def values_at(values: dict, records: list[dict], epoch: int | None) -> dict:
    """A trial's config dict (Tune's, as the run first made it) as it stood at ``epoch``: with the values of
    the changes it trained under from that epoch or before (None: every change)."""
    return apply(values, {p: v[1] for r in records if epoch is None or r["from_epoch"] <= epoch
                          for p, v in r["values"].items()})


def with_last_restart(values: dict, run_dir: str, trial_id: str) -> tuple[dict, int]:
    """A trial's config dict with the settings ("after") of the last restart record its scheduler wrote
    (layout.restart_record), and the number of its restarts. The record is written before Tune saves the
    trial's new config: where a kill came between the two, Tune's config is the old one, and the record,
    which the trial's weights follow, wins."""
    records = layout.restart_records(run_dir, trial_id)
    if not records:
        return values, 0
    out = json.loads(json.dumps(values))
    for path, value in json.loads(storage.read_bytes(records[-1]))["after"].items():
        set_path(out, path, value)
    return out, len(records)

