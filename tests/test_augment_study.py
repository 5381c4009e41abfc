"""The augmentation study (harness/evaluation/augment_study.py): the pairing of the real arm with the
generator's training set, the ratios, the selection rules, the paired interval, and the classifier's
ordinary augmentation."""

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from condgen_bench import datasets
from condgen_bench.harness.config import EvalConfig
from condgen_bench.harness.evaluation import augment_study as study
from condgen_bench.harness.evaluation import downstream
from condgen_bench.models.classifier import ClassifierConfig, random_flip_jitter
import test_worker_loop

train_in_process = test_worker_loop.train_in_process  # the fixture: the worker loop in this process


def few_shot(shots: int = 4):
    return datasets.load(datasets.DataConfig(name="synthetic_faces", num_train=70, num_test=35, image_size=16,
                                             shots_per_class=shots))


def pool(data, per_class: int = 30):
    """A generated pool stand-in: per_class real-test-like images a class, labels in class order."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(data.num_classes).repeat_interleave(per_class)
    images = torch.randint(0, 256, (len(labels), *data.train.images.shape[1:]), generator=gen, dtype=torch.uint8)
    return images, labels


def test_the_arms_ratios_and_counts():
    config = study.StudyConfig(ratios=(0.5, 2.0), selections=("uniform",), seeds=3)
    names = [arm.name for arm in study.study_arms(config)]
    assert names == ["real", "real+0.5x (uniform)", "real+2x (uniform)", "synthetic (uniform)",
                     "real +aug", "real+0.5x (uniform) +aug", "real+2x (uniform) +aug", "synthetic (uniform) +aug"]
    assert study.synthetic_counts([4, 5, 1], 0.5, (0.5, 2.0)) == [2, 2, 0]  # round half to even: 2.5 -> 2
    assert study.synthetic_counts([4, 5, 1], math.inf, (0.5, 2.0)) == [8, 10, 2]  # generated only: the largest ratio
    with pytest.raises(ValueError, match="unknown eval.augment_study_selections"):
        study.StudyConfig(selections=("best",))


def test_the_selection_rules_pick_by_class_confidence_and_novelty():
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    confidence = torch.tensor([0.2, 0.9, 0.5, 0.1, 0.3, 0.8])
    near_copy = torch.tensor([True, False, False, False, True, False])
    assert study.select(labels, [2, 1], "uniform").tolist() == [0, 1, 3]
    assert study.select(labels, [2, 1], "confident", confidence).tolist() == [1, 2, 5]
    assert study.select(labels, [2, 2], "novel", near_copy=near_copy).tolist() == [1, 2, 3, 5]
    with pytest.raises(ValueError, match="2 usable images of class 1 for selection 'novel', 3 asked for"):
        study.select(labels, [0, 3], "novel", near_copy=near_copy)
    with pytest.raises(ValueError, match="needs the evaluation classifier"):
        study.select(labels, [1, 1], "confident")


def test_the_paired_interval_of_a_gain():
    real = np.array([[1, 0, 1, 0], [1, 0, 1, 0], [1, 1, 1, 0]], dtype=bool)
    arm = np.array([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=bool)
    out = study.paired_gain(arm, real)
    per_seed = np.array([0.25, 0.25, 0.25])  # every seed gains one image of four: no spread between seeds
    per_image = np.array([0, 2 / 3, 0, 1 / 3])
    se = math.sqrt(per_seed.var(ddof=1) / 3 + per_image.var(ddof=1) / 4)
    assert out["gain"] == pytest.approx(0.25) and out["gain_se"] == pytest.approx(se)
    assert (out["gain_low"], out["gain_high"]) == pytest.approx((0.25 - study.Z * se, 0.25 + study.Z * se))
    assert out["beyond_noise"] == (out["gain_low"] > 0)
    same = study.paired_gain(real, real)  # an arm no different from the real one: a zero-width interval at 0
    assert (same["gain"], same["gain_se"], same["beyond_noise"]) == (0.0, 0.0, False)
    big = np.ones((3, 400), dtype=bool), np.zeros((3, 400), dtype=bool)
    assert study.paired_gain(*big)["beyond_noise"] and study.paired_gain(big[1], big[0])["gain"] == -1.0


def test_the_real_arm_trains_on_the_generators_k_shot_set_and_each_arm_on_its_ratio(monkeypatch):
    """The generator trains on data.train (harness/worker.py start: training_tensors(data.train, ...)); in a
    few-shot dataset that is the K-shot set, and the study's real arm trains on exactly those images. Each
    mixed arm adds round(ratio x K) generated images a class; the generated-only arm has no real image."""
    import inspect

    from condgen_bench.harness import worker

    assert "training_tensors(data.train," in inspect.getsource(worker.start)
    data = few_shot(shots=4)
    seen = []

    def recording(images, labels, num_classes, recipe, device="cpu", log=None):
        seen.append((images.clone(), labels.clone(), recipe))
        return None

    monkeypatch.setattr(downstream, "train_classifier", recording)  # where the runner's jobs train
    monkeypatch.setattr(downstream, "predict", lambda net, images: torch.nn.functional.one_hot(
        torch.zeros(len(images), dtype=torch.long), data.num_classes).float())
    images, labels = pool(data)
    config = study.StudyConfig(ratios=(0.5, 2.0), selections=("uniform",), seeds=2, steps=10)
    rows = study.augmentation_study(images, labels, data, EvalConfig(), config)
    k = data.num_classes
    real_images, real_labels, recipe = seen[0]
    assert torch.equal(real_images, data.train.images) and torch.equal(real_labels, data.train.labels)
    assert len(data.train) == 4 * k and (recipe.flip, recipe.jitter) == (False, 0.0)
    sizes = [len(x) for x, _, _ in seen[::2]]  # one per arm (two seeds each)
    assert sizes == [4 * k, 6 * k, 12 * k, 8 * k] * 2
    assert torch.equal(seen[2][0][:4 * k], data.train.images)  # the mixed arm keeps every real image
    mixed_labels = seen[2][1][4 * k:]
    assert torch.bincount(mixed_labels, minlength=k).tolist() == [2] * k
    assert [r["arm"] for r in rows][4] == "real +aug" and seen[8][2].flip and seen[8][2].jitter == 0.1
    assert {r["generated_images"] for r in rows if r["ratio"] == 2.0} == {8 * k}
    # every prediction is class 0, the same for every arm: each gain is exactly 0, within noise
    assert all(r["gain"] == 0.0 and not r["beyond_noise"] for r in rows if r["kind"] != "real")
    assert [r["kind"] for r in rows[:4]] == ["real", "mixed", "mixed", "generated"] and rows[3]["ratio"] is None
    assert rows[0]["recall"][0] == 1.0 and rows[0]["recall"][1] == 0.0


def test_a_dataset_that_is_not_few_shot_is_refused():
    data = datasets.load(datasets.DataConfig(name="synthetic_faces", num_train=14, num_test=7, image_size=16))
    images, labels = pool(data, 2)
    with pytest.raises(ValueError, match="needs a few-shot dataset"):
        study.augmentation_study(images, labels, data, EvalConfig(), study.StudyConfig())


def test_a_small_study_runs_end_to_end_with_real_classifiers():
    data = few_shot(shots=3)
    images, labels = pool(data, 10)
    confidence = torch.rand(len(labels), generator=torch.Generator().manual_seed(1))
    eval_config = EvalConfig(classifier=ClassifierConfig(width=4, batch_size=32))
    config = study.StudyConfig(ratios=(1.0,), selections=("uniform", "confident"), seeds=2, steps=3)
    rows = study.augmentation_study(images, labels, data, eval_config, config, confidence=confidence)
    assert len(rows) == 2 * (1 + 2 * 2)
    for row in rows:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["accuracy_se"] > 0 and len(row["recall"]) == data.num_classes
    best = study.best_setting(rows)
    assert best["ratio"] == 1.0 and best["gain"] == max(r["gain"] for r in rows if r["ratio"] == 1.0)


def test_ordinary_augmentation_flips_and_jitters_and_draws_nothing_when_off():
    x = torch.linspace(-1, 1, 2 * 1 * 4 * 4).reshape(2, 1, 4, 4)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(random_flip_jitter(x, False, 0.0, gen), x)
    assert torch.equal(gen.get_state(), torch.Generator().manual_seed(0).get_state())  # nothing drawn
    flipped = random_flip_jitter(x, True, 0.0, torch.Generator().manual_seed(0))
    for image, out in zip(x, flipped):
        assert torch.equal(out, image) or torch.equal(out, image.flip(2))
    jittered = random_flip_jitter(x, False, 0.5, torch.Generator().manual_seed(0))
    assert jittered.min() >= -1 and jittered.max() <= 1 and not torch.equal(jittered, x)


def test_the_finalist_evaluation_of_a_few_shot_run_writes_the_study_beside_its_record(tmp_path):
    """scoring.evaluate under a finalist plan with eval.augment_study on, for the toy family of
    tests/test_toy_family.py on a few-shot dataset: the headline figures, the arms' table and the grid of real
    and selected images, and no study where the dataset is not few-shot (the reason is the plan's)."""
    import json

    from condgen_bench.harness.evaluation.plan import Capabilities, finalist_plan
    from condgen_bench.harness.evaluation.reference import prepare_reference
    from condgen_bench.harness.evaluation.scoring import evaluate
    from condgen_bench.reports.run_folder import layout
    from test_ray_sweep import tiny_experiment
    from test_toy_family import MeanConfig, MeanMethod

    config = tiny_experiment(tmp_path)
    config.data = datasets.DataConfig(name="synthetic_faces", num_train=70, num_test=35, image_size=16,
                                      shots_per_class=4)
    ev = config.eval
    ev.cas, ev.augment, ev.sampling_sweep, ev.augment_seeds, ev.augment_steps = False, False, {}, 2, 3
    ev.augment_study, ev.augment_study_ratios = True, [0.5, 1.0]
    data = datasets.load(config.data)
    reference = prepare_reference(data, ev, str(tmp_path / "cache"), log=lambda *_: None)
    method = MeanMethod(MeanConfig(), data.spec())
    for _ in range(3):
        method.train_step(data.train.images, data.train.labels)
    record, grid = evaluate(method, data, reference, ev, finalist_plan(config, Capabilities.of(method, reference, data)))
    metrics, protocol = record["metrics"], record["protocol"]
    assert "study_best_gain" not in record["missing"] and -1 <= metrics["study_best_gain"] <= 1
    assert metrics["study_best_gain_se"] >= 0 and metrics["study_seconds"] > 0
    assert metrics["study_best_ratio"] in (0.5, 1.0) and protocol["study_best_arm"].startswith("real+")
    assert "the same 28 training images (4-4 a class" in protocol["study_pairing"]
    rows = json.loads(record["files"][layout.AUGMENT_STUDY])
    assert len(rows) == 2 * (1 + 3 * 3) and {r["selection"] for r in rows} == {None, "uniform", "confident", "novel"}
    assert layout.AUGMENT_STUDY_GRID in record["files"]
    config.data.shots_per_class = None  # the same run on the whole training split: no pairing, no study
    whole = datasets.load(config.data)
    plan = finalist_plan(config, Capabilities.of(method, reference, whole))
    assert "not few-shot" in plan.skip["augment_study"]
    # the report: the study's section from the record's files, through the finalist's results row
    import pandas as pd

    from condgen_bench.harness.config import to_dict
    from condgen_bench.harness.results import write_results
    from condgen_bench.reports import build_report
    from condgen_bench.reports.run_folder import storage
    from condgen_bench.reports.run_folder.records import EvalRecord, record_files

    run_dir = str(tmp_path / "run")
    finalists = []
    for trial, family in (("t_mean", "mean"), ("t_other", "other")):  # two families: the cross-family figure
        EvalRecord.of({**record, "epoch": 2, "step": 8}, grid).write(layout.finalist_dir(run_dir, trial))
        finalists.append({"trial_id": trial, "method": family, "status": "completed", "stage": "finalist",
                          "epoch": 2, "sampling_setting": "default", "dataset": data.name, "finalist_rank": 1,
                          **metrics, "missing": json.dumps(record["missing"]),
                          "protocol.study_pairing": protocol["study_pairing"],
                          **record_files(run_dir, f"finalists/{trial}")})
    assert finalists[0]["augment_study"] == "finalists/t_mean/augment_study.json"
    storage.write_bytes(layout.run_file(run_dir, layout.CONFIG), json.dumps(to_dict(config)).encode())
    storage.write_bytes(layout.run_file(run_dir, layout.DATASET_SUMMARY), json.dumps(
        {"name": data.name, "fingerprint": data.fingerprint, "options": data.options, "counts": data.summary()}).encode())
    write_results(pd.DataFrame(finalists), pd.DataFrame([{"trial_id": t, "epoch": 2} for t in ("t_mean", "t_other")]),
                  run_dir)
    page = open(build_report(run_dir)).read()
    assert "<h2>Augmentation study</h2>" in page and "t_mean: gain against ratio" in page
    assert "gain against ratio, by family" in page and "augmentation study: best gain" in page.split("<h2>")[1]
    import shutil
    shutil.copytree(run_dir, str(tmp_path / "run2"))  # one page over two runs: each study read from its own
    both = open(build_report([run_dir, str(tmp_path / "run2")], str(tmp_path / "both.html"))).read()
    assert "not found" not in both.split("Augmentation study</h2>")[1].split("<h2>")[0]
    assert both.count("t_mean: gain against ratio") == 2
    from condgen_bench.reports.study import verdict
    assert verdict(rows).split(":")[0].split(";")[0] in page and "Per-class recall" in page
    assert "pairing: the generator and the real arm: the same 28 training images" in page


def test_the_verdict_says_plainly_whether_any_setting_beat_real_only_beyond_noise():
    from condgen_bench.reports.study import verdict

    def arm(name, kind, gain, low, high, ratio=1.0):
        return {"arm": name, "kind": kind, "ratio": ratio, "gain": gain, "gain_low": low, "gain_high": high,
                "gain_se": (high - low) / (2 * study.Z), "beyond_noise": low > 0 or high < 0}

    real = {"arm": "real", "kind": "real", "ratio": None}
    within = [real, arm("real+1x (uniform)", "mixed", 0.01, -0.02, 0.04), arm("real+5x (uniform)", "mixed", -0.05, -0.08, -0.02, 5.0)]
    text = verdict(within)
    assert text.startswith("No setting beat real-only beyond noise: the best, real+1x (uniform), gained +1.0 [-2.0, +4.0]")
    assert "1 of 2 mixed settings were worse than real-only beyond noise." in text
    # the best of two: 0.01 / (0.06 / 3.92) = 0.65 standard errors, below Bonferroni's 2.24 for 2 comparisons
    assert text.endswith("its gain is 0.7 standard errors from 0, below the 2.24 that 2 comparisons at 95% ask "
                         "for (Bonferroni).")
    beyond = [real, arm("real+2x (confident) +aug", "mixed", 0.03, 0.01, 0.05, 2.0)]
    assert verdict(beyond).startswith(
        "1 setting beat real-only beyond noise; the best, real+2x (confident) +aug, by +3.0 [+1.0, +5.0] points")


def test_the_preset_runs_end_to_end_on_an_image_folder_and_its_report_shows_the_curve_and_verdict(
        train_in_process, tmp_path, monkeypatch):
    """--preset augmentation --dataset imagefolder --data-root ... --shots-per-class 6 on FastGAN's script (its
    smoke-test sizes), through the worker loop in this process, the finalist stage and the report: the
    generator trains on the 6 shots a class the study's real arm uses, and the report shows the study."""
    import json
    import runpy
    import shutil
    import sys

    import pandas as pd
    import ray.train
    from PIL import Image

    from condgen_bench.harness.cli import build_parser, resolve
    from condgen_bench.harness.config import to_dict
    from condgen_bench.harness.evaluation.reference import prepare_reference
    from condgen_bench.harness.finalists import score_finalist
    from condgen_bench.harness.results import write_results
    from condgen_bench.reports import build_report
    from condgen_bench.reports.run_folder import layout, storage
    from test_worker_loop import rows_of

    folder = tmp_path / "parts"
    rng = np.random.default_rng(0)
    for c, colour in enumerate([(200, 40, 40), (40, 200, 40), (40, 40, 200)]):  # a class: a tinted noise
        (folder / f"part{c}").mkdir(parents=True)
        for i in range(20):
            pixels = np.clip(np.array(colour) + rng.normal(0, 40, (20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"part{c}" / f"{i}.png")
    experiments = str(Path(__file__).resolve().parents[1] / "experiments")
    sys.path.insert(0, experiments)
    try:
        script = runpy.run_path(f"{experiments}/sweep_fastgan.py")
    finally:
        sys.path.remove(experiments)
    argv = ["--preset", "augmentation", "--smoke-test", "--dataset", "imagefolder", "--data-root", str(folder),
            "--shots-per-class", "6", "--image-size", "16", "--storage-path", str(tmp_path / "runs"),
            # fewer arms and seeds than the preset's, and none of the finalist's other parts: the suite's time
            "--set", 'eval.augment_study_selections=["uniform", "confident"]', "--set", "eval.augment_seeds=2",
            "--set", "eval.augment_study_ratios=[1.0, 2.0]", "--set", "eval.bootstrap=0", "--set", "eval.cas=false",
            "--set", "eval.memorization=false", "--set", "eval.inception_at=never"]
    args = build_parser("", script["PRESETS"]).parse_args(argv)
    config = resolve(args, script["local_profile"](), script["SMOKE_TEST"], script["PRESETS"])
    config.train.epochs = 1
    assert (config.eval.augment_study, config.data.shots_per_class, config.eval.finalists) == (True, 6, 1)

    run_dir = str(tmp_path / "run")
    monkeypatch.setattr(ray.train, "report", lambda metrics, checkpoint=None: checkpoint and shutil.copytree(
        checkpoint.path, layout.train_checkpoint_dir(layout.train_storage(run_dir), "t_parts", "checkpoint_000000")))
    train_in_process(config, "t_parts")
    data = datasets.load(config.data)
    assert len(data.train) == 18 and data.train_full is not None  # the generator's 6 shots a class
    reference = prepare_reference(data, config.eval, str(tmp_path / "cache"), log=lambda *_: None)
    score_finalist("t_parts", 1, run_dir, data, reference, threads=1, device="cpu")
    rows = rows_of(run_dir, config, "t_parts", type("Result", (), {"error": None, "metrics": {"epoch": 1}})())
    finalist = rows[-1]
    assert finalist["stage"] == "finalist" and -1 <= finalist["study_best_gain"] <= 1
    assert "the same 18 training images (6-6 a class" in finalist["protocol.study_pairing"]
    storage.write_bytes(layout.run_file(run_dir, layout.CONFIG), json.dumps(to_dict(config)).encode())
    storage.write_bytes(layout.run_file(run_dir, layout.DATASET_SUMMARY), json.dumps(
        {"name": data.name, "fingerprint": data.fingerprint, "options": data.options, "counts": data.summary()}).encode())
    write_results(pd.DataFrame(rows), pd.DataFrame([{"trial_id": "t_parts", "epoch": 1}]), run_dir)
    page = open(build_report(run_dir)).read()
    assert "<h2>Augmentation study</h2>" in page and "t_parts: gain against ratio" in page
    assert "beat real-only beyond noise" in page and "part2 generated" in page


@pytest.mark.ray
def test_the_arms_as_ray_tasks_score_as_they_do_in_the_process(ray_local):
    """harness/finalists.py ClassifiersAsRayTasks: each arm a one-CPU Ray task; the same classifiers from the
    same seeds as classifiers_in_process, one thread each in both places, so the same hits on the same test images, in
    the jobs' order."""
    from condgen_bench.harness.evaluation.downstream import classifiers_in_process
    from condgen_bench.harness.finalists import ClassifiersAsRayTasks

    data = few_shot(shots=3)
    images, labels = pool(data, 6)
    eval_config = EvalConfig(classifier=ClassifierConfig(width=4, batch_size=32))
    config = study.StudyConfig(ratios=(1.0,), selections=("uniform",), seeds=2, steps=3)
    jobs = [(arm.name, x, y, study.arm_recipes(arm, len(x), eval_config, config))
            for arm in study.study_arms(config)[:3]
            for x, y in [study.arm_training_set(arm, data.train.images, data.train.labels, images, labels,
                                                {("uniform", 1.0): torch.arange(12), ("uniform", math.inf): torch.arange(12)})]]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = classifiers_in_process(jobs, data.test.images, data.test.labels, data.num_classes)
    finally:
        torch.set_num_threads(threads)
    there = ClassifiersAsRayTasks()(jobs, data.test.images, data.test.labels, data.num_classes)
    assert [h.shape for h in there] == [(2, len(data.test))] * 3
    for a, b in zip(here, there):
        np.testing.assert_array_equal(a, b)
    from ray.util.state import list_tasks

    wanted, deadline = {name for name, *_ in jobs}, time.time() + 30  # each task named by its job
    while not wanted <= (ran := {t.name for t in list_tasks(filters=[("state", "=", "FINISHED")], limit=1000,
                                                             raise_on_missing_output=False)}):
        assert time.time() < deadline, f"Ray's task list never showed the arms' tasks: {sorted(wanted - ran)}"
        time.sleep(0.5)  # the task events reach the state API a moment after the tasks end


def test_whole_batches_only_where_drop_last_asks_and_the_arms_take_the_same_steps(monkeypatch):
    """ClassifierConfig.drop_last: 70 images in batches of 32 are 2 steps of 32 an epoch (not 32, 32, 6); a
    set smaller than a batch is one batch. The study's recipes ask for it, with the epochs that come closest
    to its steps."""
    from condgen_bench.models import classifier

    sizes = []
    forward = classifier.ResNetClassifier.forward
    monkeypatch.setattr(classifier.ResNetClassifier, "forward", lambda self, x: sizes.append(len(x)) or forward(self, x))
    x, y = torch.randint(0, 256, (70, 1, 8, 8), dtype=torch.uint8), torch.arange(70) % 3
    for drop_last, expected in ((True, [32, 32]), (False, [32, 32, 6])):
        sizes.clear()
        classifier.train_classifier(x, y, 3, ClassifierConfig(width=4, epochs=1, batch_size=32, drop_last=drop_last))
        assert sizes == expected
    sizes.clear()
    classifier.train_classifier(x[:20], y[:20], 3, ClassifierConfig(width=4, epochs=1, batch_size=32, drop_last=True))
    assert sizes == [20]
    config = study.StudyConfig(steps=100)
    recipes = study.arm_recipes(study.Arm(1.0, "uniform", True), 525, EvalConfig(), config)
    assert all(r.drop_last and r.epochs == 25 and r.flip for r in recipes)  # 525 // 128 = 4 steps an epoch
