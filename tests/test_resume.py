"""What a resume may change (harness/resume.py): differing settings are refused with their list unless
--allow-changes names them; an allowed change reaches each trial from its next epoch and its rows say so.
No Ray (a resume of a real run with a refused and an allowed change: tests/test_drills.py)."""

import json
import re
from types import SimpleNamespace

import pytest

from condgen_bench import datasets
from condgen_bench.harness import resume
from condgen_bench.harness.config import to_dict
from condgen_bench.harness.resume import ResumeChangeError
from condgen_bench.harness.results import TrialOutcome, _trial_rows, training_progress
from condgen_bench.reports.run_folder import layout, storage
from condgen_bench.reports.run_folder.records import EvalRecord
from test_ray_sweep import tiny_experiment


def test_a_resume_with_other_settings_is_refused_naming_each_unless_allowed(tmp_path):
    saved = tiny_experiment(tmp_path, space={"model.lr": [1e-3, 2e-3]})
    same = to_dict(saved)
    same["name"], same["cluster"]["workers_per_trial"] = "another-name", 3  # free: a name, the cluster
    same["data"]["data_root"] = "/moved/data"
    assert resume.allowed_changes(to_dict(saved), same, []) == {}

    given = to_dict(saved)
    given["sweep"]["space"]["model.lr"] = [5e-4]  # --lr 5e-4
    given["eval"]["samples_per_class"] = 5
    with pytest.raises(ResumeChangeError) as refused:
        resume.allowed_changes(to_dict(saved), given, ["eval.samples_per_class"])
    message = str(refused.value)
    assert "model.lr: [0.001, 0.002] -> [0.0005]" in message and "--allow-changes model.lr" in message
    assert "eval.samples_per_class" not in message  # allowed
    changes = resume.allowed_changes(to_dict(saved), given, ["model.lr", "eval.samples_per_class"])
    assert changes == {"model.lr": ([1e-3, 2e-3], 5e-4), "eval.samples_per_class": (3, 5)}

    given["sweep"]["space"]["model.lr"] = [5e-4, 1e-3]  # trials cannot be drawn again
    given["data"]["num_train"] = 10  # the data is the run's
    with pytest.raises(ResumeChangeError, match=r"cannot change data.num_train .*; model.lr \(searched with"):
        resume.allowed_changes(to_dict(saved), given, ["model.lr", "eval.samples_per_class", "data.num_train"])

    older = to_dict(saved)
    del older["eval"]["bpd_images"]  # a field the run's code did not have: logged, not refused
    assert resume.differences(older, to_dict(saved)) == {}
    assert resume.new_fields(older, to_dict(saved)) == {"eval.bpd_images": saved.eval.bpd_images}


def test_a_change_reaches_a_trial_from_its_next_epoch_and_its_rows_say_so(tmp_path):
    """A trial trained epoch 1 under the first driver; a resume changed eval.samples_per_class and ran epoch 2 on
    another cluster setting and code. The worker's record says from which epoch; the epoch-1 row keeps the old
    settings, code and cluster, the epoch-2 row has the new, and both name the change."""
    config = tiny_experiment(tmp_path)
    run_dir, trial_id = str(tmp_path / "run"), "abcde_00000"
    first = to_dict(config)
    drivers = [resume.record_invocation(run_dir, "aaa111", first["cluster"], {}, log=print)]
    lines = []
    drivers.append(resume.record_invocation(run_dir, "bbb222", {**first["cluster"], "workers_per_trial": 2},
                                            {config.name: {"eval.samples_per_class": (3, 5)}}, log=lines.append))
    assert lines == ["code version changed since this run's last driver: aaa111 -> bbb222; the rows its evaluations "
                     "make from now on say so (git_commit)"]
    changes = resume.run_changes(drivers[-1], config.name)
    assert changes == [{"id": 1, "values": {"eval.samples_per_class": [3, 5]}}]
    for epoch, code, workers in ((1, "aaa111", 1), (2, "bbb222", 2)):  # what the worker leaves per epoch
        storage.write_bytes(layout.history_file(run_dir, trial_id, epoch), json.dumps(
            {"epoch": epoch, "step": 4 * epoch, "loss": 1.0, "code_version": code,
             "cluster": {**first["cluster"], "workers_per_trial": workers}}).encode())
        EvalRecord({"stage": "tracking", "epoch": epoch, "step": 4 * epoch, "metrics": {"loss": 1.0}, "missing": {},
                    "protocol": {}, "code_version": code}, grid_png=b"png").write(layout.epoch_dir(run_dir, trial_id, epoch))
    # the worker, started again at epoch 1 after the resume, records the change once however often it restarts
    for _ in range(2):
        recorded = resume.record_trial_changes(run_dir, trial_id, changes, from_epoch=2)
    assert recorded == [{"id": 1, "values": {"eval.samples_per_class": [3, 5]}, "from_epoch": 2}]
    assert resume.apply(first, {"eval.samples_per_class": 5})["eval"]["samples_per_class"] == 5

    trial = TrialOutcome(trial_id, SimpleNamespace(error=None, metrics={"epoch": 2}),
                         training_progress(run_dir, trial_id, None), None)
    rows, _ = _trial_rows(run_dir, trial, first, {"git_commit": "the collecting driver's"},
                          datasets.load(config.data).spec())
    before, after = rows
    assert (before["config.eval.samples_per_class"], after["config.eval.samples_per_class"]) == (3, 5)
    assert (before["git_commit"], after["git_commit"]) == ("aaa111", "bbb222")
    assert (before["config.cluster.workers_per_trial"], after["config.cluster.workers_per_trial"]) == (1, 2)
    assert before["config_hash"] != after["config_hash"]
    assert json.loads(after["config_changes"]) == [{"setting": "eval.samples_per_class", "old": 3, "new": 5,
                                                    "from_epoch": 2}] == json.loads(before["config_changes"])


def test_a_setting_pbt_mutates_cannot_change_on_a_resume_and_experiments_pair_up(tmp_path):
    from condgen_bench.harness.sweep import resume_changes

    config = tiny_experiment(tmp_path, scheduler="pbt", space={"model.lr": [1e-3, 2e-3]})
    given = to_dict(config)
    given["sweep"]["space"]["model.lr"] = [5e-4]
    with pytest.raises(ResumeChangeError, match=r"cannot change model.lr: the scheduler \(pbt\) sets it"):
        resume_changes([to_dict(config)], [given], ["model.lr"])
    with pytest.raises(ResumeChangeError, match=r"the run has 1 experiments \(tiny\), this invocation 2"):
        resume_changes([to_dict(config)], [given, given], [])
    lines = []
    assert resume_changes([to_dict(config)], [to_dict(config)], ["eval.bpd_images"], log=lines.append) == {"tiny": {}}
    assert lines == ["--allow-changes eval.bpd_images: no such difference (nothing changed there)"]


def test_a_resume_scores_with_the_runs_own_reference_or_refuses_naming_what_differs(tmp_path):
    """The run pins its evaluation reference (reference.json); a resume whose classifier or real features
    differ is refused before it scores anything. An extractor that is missing now is not a difference."""
    from condgen_bench.harness.sweep import pin_references

    run_dir, data = str(tmp_path), SimpleNamespace(name="faces", fingerprint="fp1")

    def reference(classifier="aaa", features=None, **more):
        pins = {"classifier": classifier, "classifier_accuracy": 0.9, "cas_real_accuracy": 0.5,
                "features": features or {"domain": "d1", "inception": "i1"}, **more}
        return SimpleNamespace(pins=lambda: pins)

    pin_references(run_dir, [data], [reference()])
    lines = []
    pin_references(run_dir, [data], [reference(features={"domain": "d1"})], log=lines.append)  # no Inception here
    assert lines == ["evaluation reference of faces: the run's own (classifier aaa)"]
    pinned = (tmp_path / "reference.json").read_text()
    for changed, named in ((reference(classifier="bbb"), "weights (aaa -> bbb)"),
                           (reference(features={"domain": "d2"}), "the real domain features (d1 -> d2)")):
        with pytest.raises(ResumeChangeError, match=rf"scored with another evaluation reference .*{re.escape(named)}"):
            pin_references(run_dir, [data], [changed])
    assert (tmp_path / "reference.json").read_text() == pinned
    # a run pinned before the gain's real-only arm was pinned: its resume pins it, and the next is held to it
    pin_references(run_dir, [data], [reference(aug_real_accuracy=[0.4, 0.5])])
    assert json.loads((tmp_path / "reference.json").read_text())["fp1"]["aug_real_accuracy"] == [0.4, 0.5]
    with pytest.raises(ResumeChangeError, match=re.escape("real-only arm ([0.4, 0.5] -> [0.4, 0.6])")):
        pin_references(run_dir, [data], [reference(aug_real_accuracy=[0.4, 0.6])])


def test_the_classifier_cache_key_covers_its_settings_and_its_code(monkeypatch):
    import inspect

    from condgen_bench.harness.evaluation import reference
    from condgen_bench.models.classifier import ClassifierConfig

    key = reference.recipe_key(ClassifierConfig())
    assert reference.recipe_key(ClassifierConfig(epochs=2)) != key
    real = inspect.getsource
    monkeypatch.setattr(inspect, "getsource", lambda obj: real(obj) + "\n# changed training code")
    assert reference.recipe_key(ClassifierConfig()) != key


def test_the_gain_s_real_only_cache_key_covers_its_settings_and_the_code_that_draws_its_sets(monkeypatch):
    import inspect

    from condgen_bench.harness.config import EvalConfig
    from condgen_bench.harness.evaluation import downstream, reference

    key = reference.gain_real_key(EvalConfig())
    for changed in ({"augment_shots": 5}, {"augment_seeds": 2}, {"augment_steps": 50}):
        assert reference.gain_real_key(EvalConfig(**changed)) != key, changed
    real = inspect.getsource
    monkeypatch.setattr(inspect, "getsource",
                        lambda obj: real(obj) + ("\n# another draw" if obj is downstream.gain_real_sets else ""))
    assert reference.gain_real_key(EvalConfig()) != key
