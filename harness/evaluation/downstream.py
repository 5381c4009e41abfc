"""Do the samples serve a downstream classifier? Two scores, each a classifier trained from scratch with
the evaluation classifier's recipe (EvalConfig.classifier) and tested on the real test split:

- classification accuracy score, CAS ("GAN-train", Ravuri & Vinyals 2019): trained on generated images
  only, as many per class as the real training split has up to ``eval.cas_pool_per_class`` (so its cost
  does not grow with the training split); read it beside the same recipe trained on as many real images
  (the reference's ``cas_real_accuracy``).
- augmentation gain: in the few-shot setting, trained on K real images a class, and on those plus M
  generated images a class; the gain is the difference of the two test accuracies, over several seeds.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import torch

from condgen_bench.harness.config import EvalConfig
from condgen_bench.datasets.base import DatasetSplits
from condgen_bench.models.classifier import ClassifierConfig, predict, train_classifier


def class_counts(labels: torch.Tensor, num_classes: int) -> list[int]:
    """Images per class: labels [N] int64 -> [num_classes] counts."""
    return torch.bincount(labels, minlength=num_classes).tolist()


def capped_counts(labels: torch.Tensor, num_classes: int, cap: int) -> list[int]:
    """Images per class of labels [N], each at most ``cap``: the per-class size of CAS's training set."""
    return [min(count, cap) for count in class_counts(labels, num_classes)]


def pool_labels(data: DatasetSplits, config: EvalConfig) -> torch.Tensor:
    """Labels [N] of the generated pool both scores draw from: per class, the real training split's count
    capped at cas_pool_per_class (for CAS) or augment_synthetic_per_class (for the gain), whichever is
    larger among those enabled."""
    counts = [0] * data.num_classes
    if config.cas:
        counts = capped_counts(data.classifier_train.labels, data.num_classes, config.cas_pool_per_class)
    if config.augment:
        counts = [max(c, config.augment_synthetic_per_class) for c in counts]
    return torch.arange(data.num_classes).repeat_interleave(torch.tensor(counts))


def steps_recipe(recipe: ClassifierConfig, images: int, steps: int) -> ClassifierConfig:
    """``recipe`` for a set of ``images`` images at about ``steps`` optimizer steps of whole batches
    (drop_last: sets of different sizes compared at equal steps, a small tail batch every epoch would tell
    them apart more than their images do): the epochs that come closest."""
    steps_per_epoch = max(1, images // recipe.batch_size)  # or one batch of a set smaller than a batch
    return dataclasses.replace(recipe, epochs=max(1, round(steps / steps_per_epoch)), drop_last=True)


def classifier_hits(x: torch.Tensor, y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                    num_classes: int, recipes: list, device="cpu", threads: int | None = None) -> np.ndarray:
    """One job's hits on the real test split: a classifier per recipe trained on x [N, C, H, W] uint8 /
    y [N] int64, tested on test_x [T, C, H, W] uint8 / test_y [T] -> [len(recipes), T] bool. threads: torch's
    intra-op threads for the call (a Ray task's one CPU), restored after."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        hits = []
        for recipe in recipes:
            net = train_classifier(x, y, num_classes, recipe, device=device)
            hits.append((predict(net, test_x).argmax(1).cpu() == test_y).numpy())
        return np.stack(hits)
    finally:
        torch.set_num_threads(before)


def classifiers_in_process(jobs: list[tuple], test_x: torch.Tensor, test_y: torch.Tensor, num_classes: int,
                           device="cpu") -> list[np.ndarray]:
    """classifier_hits of each job (name, x, y, recipes), one after another in this process: the hits
    [len(recipes), T] bool of each, in order. The default runner of CAS, the augmentation gain and the
    augmentation study; harness/finalists.py has one that sends the jobs out as Ray tasks."""
    return [classifier_hits(x, y, test_x, test_y, num_classes, recipes, device) for _, x, y, recipes in jobs]


def run_jobs(jobs: list[tuple], data: DatasetSplits, device="cpu", runner=None) -> list[np.ndarray]:
    """Each job's (name, x, y, recipes) hits [len(recipes), T] bool on the real test split of ``data``, by
    ``runner`` (None: classifiers_in_process on ``device``)."""
    run = runner or (lambda *args: classifiers_in_process(*args, device=device))
    return run(jobs, data.test.images, data.test.labels, data.num_classes)


def first_of_each_class(labels: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Indices of the first counts[c] entries of each class c in labels [N] -> [<= sum(counts)] int64."""
    return torch.cat([torch.nonzero(labels == c).flatten()[:n] for c, n in enumerate(counts)])


def classification_accuracy_score(samples: torch.Tensor, labels: torch.Tensor, data: DatasetSplits,
                                  config, device="cpu", runner=None) -> tuple[dict, dict]:
    """CAS of a generated pool: samples [N, C, H, W] uint8 with labels [N] (from ``pool_labels``): the mean
    real test accuracy of ``cas_seeds`` classifiers trained on it from different seeds, each a job of
    ``runner`` (run_jobs).
    Returns ({cas, cas_std (its standard error: the test images' binomial error, shared by the seeds, and
    the seeds' spread / sqrt(seeds)), cas_seed_std (one seed's spread; NaN from one), cas_seconds}, protocol)."""
    t0 = time.time()
    idx = first_of_each_class(labels, capped_counts(data.classifier_train.labels, data.num_classes,
                                                    config.cas_pool_per_class))
    jobs = [(f"CAS: seed {s}", samples[idx], labels[idx], [dataclasses.replace(config.classifier,
                                                                                seed=config.classifier.seed + s)])
            for s in range(config.cas_seeds)]
    accuracies = np.array([float(hits.mean()) for hits in run_jobs(jobs, data, device, runner)])
    p, n = float(accuracies.mean()), len(data.test)
    seed_std = float(accuracies.std(ddof=1)) if len(accuracies) > 1 else math.nan
    between = seed_std ** 2 / len(accuracies) if len(accuracies) > 1 else 0.0
    metrics = {"cas": p, "cas_std": math.sqrt(p * (1 - p) / n + between), "cas_seed_std": seed_std,
               "cas_seconds": time.time() - t0}
    return metrics, {"cas_train_images": len(idx), "cas_test_images": n, "cas_seeds": config.cas_seeds,
                     "cas_pool_per_class": config.cas_pool_per_class}


def gain_real_sets(data: DatasetSplits, config) -> list[tuple[torch.Tensor, torch.Tensor, ClassifierConfig]]:
    """The augmentation gain's real-only arm, one per seed of ``augment_seeds``: (x [K*classes, C, H, W] uint8,
    y [K*classes] int64, recipe). K real images a class: the few-shot training split, or a seeded draw of
    augment_shots a class from the training split. Nothing generated: every generator of one run shares it."""
    k = data.num_classes
    sets = []
    for s in range(config.augment_seeds):
        seed = config.classifier.seed + 1000 + s
        if data.train_full is not None:
            real = torch.arange(len(data.train))
        else:
            order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))
            real = order[first_of_each_class(data.train.labels[order], [config.augment_shots] * k)]
        recipe = dataclasses.replace(config.classifier, seed=seed)
        sets.append((data.train.images[real], data.train.labels[real], recipe))
    return sets


def gain_real_hits(data: DatasetSplits, config, device="cpu", runner=None) -> torch.Tensor:
    """The real-only arm of the augmentation gain on the real test split: [augment_seeds, T] bool, a classifier
    per seed (gain_real_sets) at augment_steps steps, each a job of ``runner`` (run_jobs). The evaluation
    reference trains it once for a run (reference.py), so a finalist trains only its mixed arms."""
    jobs = [(f"augmentation gain: seed {s}, real", x, y, [steps_recipe(recipe, len(x), config.augment_steps)])
            for s, (x, y, recipe) in enumerate(gain_real_sets(data, config))]
    return torch.from_numpy(np.concatenate(run_jobs(jobs, data, device, runner)))


def augmentation_gain(samples: torch.Tensor, labels: torch.Tensor, data: DatasetSplits,
                      config, device="cpu", runner=None, real_hits: torch.Tensor | None = None) -> tuple[dict, dict]:
    """The augmentation gain of a generated pool (samples [N, C, H, W] uint8, labels [N]) over
    ``augment_seeds`` seeds. Per seed: K real images a class (gain_real_sets), one classifier on them and one
    on them plus the first augment_synthetic_per_class generated images a class, the same number of steps
    each; each classifier a job of ``runner`` (run_jobs). real_hits: the real-only arm's hits [augment_seeds, T]
    bool from gain_real_hits (the reference's, trained once a run); None: trained here beside the mixed arms.
    Returns ({aug_real_accuracy, aug_mixed_accuracy, aug_gain (means over the seeds), each with _std (one
    seed's std) and _se (the mean's standard error; both NaN from one seed), aug_seconds (this call's time:
    the mixed arms only where real_hits are given)}, protocol)."""
    t0 = time.time()
    if real_hits is not None and real_hits.shape != (config.augment_seeds, len(data.test)):
        raise ValueError(f"real_hits {tuple(real_hits.shape)}: expected [{config.augment_seeds}, {len(data.test)}] "
                         "(eval.augment_seeds by the real test split)")
    k = data.num_classes
    synthetic = first_of_each_class(labels, [config.augment_synthetic_per_class] * k)
    jobs = []
    for s, (x_real, y_real, recipe) in enumerate(gain_real_sets(data, config)):
        arms = [("mixed", torch.cat([x_real, samples[synthetic]]), torch.cat([y_real, labels[synthetic]]))]
        if real_hits is None:  # trained here too, before the mixed one
            arms.insert(0, ("real", x_real, y_real))
        for arm, x, y in arms:
            jobs.append((f"augmentation gain: seed {s}, {arm}", x, y,
                         [steps_recipe(recipe, len(x), config.augment_steps)]))
    accuracies = [float(hits.mean()) for hits in run_jobs(jobs, data, device, runner)]
    if real_hits is not None:
        real_acc, mixed_acc = real_hits.double().mean(1).numpy(), np.array(accuracies)
    else:
        real_acc, mixed_acc = np.array(accuracies[0::2]), np.array(accuracies[1::2])
    gain = mixed_acc - real_acc
    metrics = {"aug_seconds": time.time() - t0}
    for name, values in (("aug_real_accuracy", real_acc), ("aug_mixed_accuracy", mixed_acc), ("aug_gain", gain)):
        # the mean over seeds; "_std": one seed's spread, "_se": the mean's standard error (none from one seed)
        spread = values.std(ddof=1) if len(values) > 1 else math.nan
        metrics.update({name: values.mean(), f"{name}_std": spread, f"{name}_se": spread / math.sqrt(len(values))})
    few_shot = data.train_full is not None
    shots = class_counts(data.train.labels, k) if few_shot else [config.augment_shots] * k
    protocol = {"aug_shots_per_class": min(shots), "aug_synthetic_per_class": config.augment_synthetic_per_class,
                "aug_seeds": config.augment_seeds, "aug_steps": config.augment_steps,
                "aug_real_images": "the few-shot training split" if few_shot else "a seeded draw per seed"}
    return {key: float(v) for key, v in metrics.items()}, protocol
