"""The augmentation study: does a classifier trained on a small real set generalise better with generated
images added, at which ratio, with which images, and beyond what ordinary augmentation already gives?

The real arm trains on the K-shot training split, the same images the generator trained on (a few-shot
dataset: ``data.train`` holds K images a class and ``data.train_full`` the rest; nothing else is paired).
Every arm is one classifier recipe (EvalConfig.classifier, ``steps`` optimizer steps), trained from the same
seeds and tested on the same real test images:

- "real": the K-shot set only;
- "real+<r>x": the K-shot set plus r generated images per real image of each class (r in ``ratios``);
- "synthetic": generated images only, as many a class as the largest ratio's;

each without and with ordinary classifier augmentation (``ClassifierConfig.flip`` where the data allows,
``jitter``; the translation ``max_shift`` is on in both, as in the evaluation classifier), so a gain that
ordinary augmentation already gives is not credited to the generator. The generated images of an arm are
chosen by a selection rule:

- "uniform": the pool's first n of each class (the pool is drawn with seeded noise: a uniform draw);
- "confident": the n of each class the evaluation classifier is most confident are of the asked-for class;
- "novel": uniform among those that are not near-copies of a training image (memorization check:
  harness/evaluation/diversity.py, the training set's own nearest-neighbour quantile).

A gain is an arm's test accuracy less the real arm's under the same augmentation setting and seed, on the
same test images: a paired difference. Its standard error combines the seeds' spread of the per-seed
differences and the test images' spread of the per-image differences (averaged over the seeds), and its
95% interval is the gain ± 1.96 of that; "beyond noise" means the interval excludes 0.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from condgen_bench.harness.config import EvalConfig
from condgen_bench.datasets.base import DatasetSplits
from condgen_bench.harness.evaluation.downstream import class_counts, classifiers_in_process, steps_recipe
from condgen_bench.models.classifier import predict

Z = 1.959964  # the normal quantile of a two-sided 95% interval
SELECTIONS = ("uniform", "confident", "novel")


@dataclass(frozen=True)
class StudyConfig:
    ratios: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0)  # generated images per real image, per class
    selections: tuple[str, ...] = ("uniform", "confident")  # rules compared; "novel" needs near-copy flags
    seeds: int = 3  # classifier seeds per arm (>= 3 for a standard error)
    steps: int = 100  # optimizer steps of every arm's classifier
    flip: bool = True  # the "with augmentation" arms flip left-right (False for digits, text)
    jitter: float = 0.1  # and change brightness and contrast by up to this fraction

    def __post_init__(self):
        unknown = set(self.selections) - set(SELECTIONS)
        if unknown or not self.selections:
            raise ValueError(f"unknown eval.augment_study_selections {sorted(unknown)}; valid: {list(SELECTIONS)}")
        if not self.ratios or min(self.ratios) <= 0 or self.seeds < 1 or self.steps < 1:
            raise ValueError("the augmentation study needs ratios > 0 (eval.augment_study_ratios), seeds >= 1 "
                             "(eval.augment_seeds) and steps >= 1 (eval.augment_steps)")

    @classmethod
    def of(cls, config: EvalConfig) -> StudyConfig:
        """The study eval.augment_study_* and the augmentation gain's seeds and steps describe."""
        return cls(tuple(float(r) for r in config.augment_study_ratios), tuple(config.augment_study_selections),
                   config.augment_seeds, config.augment_steps, config.augment_study_flip, config.augment_study_jitter)


@dataclass(frozen=True)
class Arm:
    """One training set of the study. ratio: generated per real image (None: real only; math.inf: generated
    only, as many a class as the largest ratio); selection: the rule that picks them (None: real only)."""
    ratio: float | None
    selection: str | None
    augment: bool  # ordinary classifier augmentation on

    @property
    def name(self) -> str:
        base = ("real" if self.ratio is None else "synthetic" if math.isinf(self.ratio)
                else f"real+{self.ratio:g}x")
        return base + (f" ({self.selection})" if self.selection else "") + (" +aug" if self.augment else "")


def study_arms(config: StudyConfig) -> list[Arm]:
    """Every arm of the study: per augmentation setting, the real arm, then each selection's ratios and its
    generated-only arm."""
    out = []
    for augment in (False, True):
        out.append(Arm(None, None, augment))
        for selection in config.selections:
            out += [Arm(r, selection, augment) for r in (*config.ratios, math.inf)]
    return out


def synthetic_counts(real_counts: list[int], ratio: float, ratios: tuple[float, ...]) -> list[int]:
    """Generated images a class of an arm: round(ratio x the class's real images); the generated-only arm
    (ratio inf) takes the largest ratio's."""
    r = max(ratios) if math.isinf(ratio) else ratio
    return [int(round(r * n)) for n in real_counts]


def select(labels: torch.Tensor, counts: list[int], rule: str, confidence: torch.Tensor | None = None,
           near_copy: torch.Tensor | None = None) -> torch.Tensor:
    """Indices into a generated pool of counts[c] images of each class c. labels: [N] int64, the asked-for
    class of each; confidence: [N], the evaluation classifier's probability of that class ("confident");
    near_copy: [N] bool, too close to a training image ("novel"). Raises ValueError naming the class where
    the pool (or what the rule leaves of it) holds too few. -> [sum(counts)] int64."""
    keep = torch.ones(len(labels), dtype=torch.bool)
    if rule == "novel":
        if near_copy is None:
            raise ValueError('selection "novel" needs the memorization check\'s near-copy flags')
        keep = ~near_copy
    elif rule == "confident" and confidence is None:
        raise ValueError('selection "confident" needs the evaluation classifier\'s confidences')
    elif rule not in SELECTIONS:
        raise ValueError(f"unknown selection {rule!r}; valid: {list(SELECTIONS)}")
    out = []
    for c, n in enumerate(counts):
        members = torch.nonzero((labels == c) & keep).flatten()
        if len(members) < n:
            raise ValueError(f"the generated pool has {len(members)} usable images of class {c} for selection "
                             f"{rule!r}, {n} asked for: draw a larger pool")
        if rule == "confident":  # most confident first; ties in pool order
            members = members[torch.argsort(-confidence[members].double(), stable=True)]
        out.append(members[:n])
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def paired_gain(arm_hits: np.ndarray, real_hits: np.ndarray) -> dict:
    """The gain of an arm over the real arm from their hits on the same test images with the same seeds:
    arm_hits, real_hits [S, T] bool (seed x test image). Returns {"gain": mean accuracy difference,
    "gain_se": sqrt(var_s(d_s) / S + var_t(e_t) / T) where d_s is seed s's difference and e_t image t's
    difference averaged over the seeds (the seed term NaN-free: 0 from one seed), "gain_low", "gain_high":
    gain ± Z se, "beyond_noise": the interval excludes 0}."""
    diff = arm_hits.astype(np.float64) - real_hits.astype(np.float64)  # [S, T]
    seeds, images = diff.shape
    per_seed, per_image = diff.mean(axis=1), diff.mean(axis=0)
    between = per_seed.var(ddof=1) / seeds if seeds > 1 else 0.0
    within = per_image.var(ddof=1) / images if images > 1 else 0.0
    gain, se = float(diff.mean()), math.sqrt(between + within)
    low, high = gain - Z * se, gain + Z * se
    return {"gain": gain, "gain_se": se, "gain_low": low, "gain_high": high, "beyond_noise": bool(low > 0 or high < 0)}


def per_class_recall(hits: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float]:
    """Recall of each class, averaged over the seeds: hits [S, T] bool, labels [T] int -> [num_classes]
    (NaN for a class absent from the test split)."""
    return [float(hits[:, labels == c].mean()) if (labels == c).any() else math.nan for c in range(num_classes)]


def arm_training_set(arm: Arm, real_x: torch.Tensor, real_y: torch.Tensor, pool_x: torch.Tensor,
                     pool_y: torch.Tensor, picked: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """An arm's training images and labels: the K-shot set (real_x [K, C, H, W] uint8, real_y [K]), plus or
    instead of (generated only) the generated images ``picked[(selection, ratio)]`` indexes in pool_x / pool_y."""
    if arm.ratio is None:
        return real_x, real_y
    idx = picked[(arm.selection, arm.ratio)]
    if math.isinf(arm.ratio):
        return pool_x[idx], pool_y[idx]
    return torch.cat([real_x, pool_x[idx]]), torch.cat([real_y, pool_y[idx]])


def arm_recipes(arm: Arm, images: int, eval_config: EvalConfig, config: StudyConfig) -> list:
    """The classifier recipe of each seed of an arm training on ``images`` images: the evaluation recipe with
    the arm's augmentation, at ``config.steps`` optimizer steps of whole batches (downstream.steps_recipe:
    the arms' sizes differ)."""
    return [steps_recipe(dataclasses.replace(eval_config.classifier, seed=eval_config.classifier.seed + 2000 + s,
                                             flip=arm.augment and config.flip,
                                             jitter=config.jitter if arm.augment else 0.0), images, config.steps)
            for s in range(config.seeds)]


def augmentation_study(pool_x: torch.Tensor, pool_y: torch.Tensor, data: DatasetSplits, eval_config: EvalConfig,
                       config: StudyConfig, confidence: torch.Tensor | None = None,
                       near_copy: torch.Tensor | None = None, device="cpu", runner=None) -> list[dict]:
    """Run every arm of the study on a generated pool: pool_x [N, C, H, W] uint8, pool_y [N] int64 (the
    asked-for classes), confidence [N] and near_copy [N] bool as ``select`` needs them; runner(jobs, test_x,
    test_y, num_classes) -> each job's hits trains the arms' classifiers (None: classifiers_in_process on
    ``device``). The real arm is the
    few-shot training split ``data.train``; a dataset that is not few-shot raises ValueError (the generator
    would have trained on more real images than the real arm has). Returns one dict per arm: {"arm", "ratio",
    "selection", "augment", "train_images", "accuracy", "accuracy_se" (the seeds' and the test images'
    spread), "recall": [per class], "kind": "real", "mixed" or "generated" (only; "ratio" None), and for
    every arm but the real ones, paired_gain's figures against the real arm of its augmentation setting}: plain
    JSON values."""
    if data.train_full is None:
        raise ValueError("the augmentation study needs a few-shot dataset (data.shots_per_class): its real arm "
                         "must train on the same K images a class as the generator")
    real_x, real_y = data.train.images, data.train.labels
    real_counts = class_counts(real_y, data.num_classes)
    picked = {(rule, r): select(pool_y, synthetic_counts(real_counts, r, config.ratios), rule, confidence, near_copy)
              for rule in config.selections for r in (*config.ratios, math.inf)}
    test_labels = data.test.labels.numpy()
    arms = study_arms(config)
    jobs = []
    for arm in arms:
        x, y = arm_training_set(arm, real_x, real_y, pool_x, pool_y, picked)
        jobs.append((f"augmentation study: {arm.name}", x, y, arm_recipes(arm, len(x), eval_config, config)))
    rows, real = [], {}
    run = runner or (lambda *args: classifiers_in_process(*args, device=device))
    for arm, hits in zip(arms, run(jobs, data.test.images, data.test.labels, data.num_classes)):
        if arm.ratio is None:
            real[arm.augment] = hits
        per_seed = hits.mean(axis=1)
        p = float(per_seed.mean())
        spread = per_seed.var(ddof=1) / len(per_seed) if len(per_seed) > 1 else 0.0
        real_images = 0 if arm.ratio is not None and math.isinf(arm.ratio) else len(real_y)
        generated = 0 if arm.ratio is None else len(picked[(arm.selection, arm.ratio)])
        kind = "real" if arm.ratio is None else "generated" if math.isinf(arm.ratio) else "mixed"
        row = {"arm": arm.name, "kind": kind, "ratio": arm.ratio if kind == "mixed" else None,
               "selection": arm.selection, "augment": arm.augment,
               "train_images": real_images + generated, "generated_images": generated,
               "accuracy": p, "accuracy_se": math.sqrt(p * (1 - p) / hits.shape[1] + spread),
               "recall": per_class_recall(hits, test_labels, data.num_classes)}
        if arm.ratio is not None:
            row.update(paired_gain(hits, real[arm.augment]))
        rows.append(row)
    return rows


def best_setting(rows: list[dict]) -> dict | None:
    """The headline: the mixed arm (real plus generated) with the largest gain, or None where there is none."""
    mixed = [r for r in rows if r["kind"] == "mixed"]
    return max(mixed, key=lambda r: r["gain"]) if mixed else None


def study_of_method(method, data: DatasetSplits, ref, eval_config: EvalConfig,
                    device="cpu", runner=None) -> tuple[list[dict], dict, torch.Tensor]:
    """The study of ``method`` (models/interface.py Method) under its own sampler: a seeded generated pool of
    1 / eval.augment_study_keep times the largest arm's need a class, the evaluation classifier's confidence
    in each image's asked-for class (``ref``: reference.EvalReference), and, where "novel" is compared, the
    near-copies: images whose nearest training image in the domain features is at most the training set's
    own 5% nearest-neighbour quantile away (diversity.py). ``runner``: augmentation_study's (its
    ``description`` goes in the protocol). Returns (augmentation_study's rows, the protocol,
    the report's grid: [2 k m, C, H, W] uint8, per class a row of m real images then a row of the best mixed
    arm's first m generated ones, m = min(8, the fewest of either in a class))."""
    from condgen_bench.harness.evaluation.diversity import nearest_train, train_nn_quantile
    from condgen_bench.harness.evaluation.extractors import extract_features, register_classifier

    config = StudyConfig.of(eval_config)
    k = data.num_classes
    real_counts = class_counts(data.train.labels, k)
    need = max(max(synthetic_counts(real_counts, r, config.ratios)) for r in config.ratios)
    per_class = math.ceil(need / eval_config.augment_study_keep)
    labels = torch.arange(k).repeat_interleave(per_class)
    seeds = eval_config.seed + 2_000_000 + torch.arange(len(labels))  # apart from the scored samples' and CAS's
    pool = method.sample(labels, seeds, batch_size=eval_config.batch_size)
    classifier = ref.classifier(data.channels, k, device)
    confidence = predict(classifier, pool)[torch.arange(len(labels)), labels]
    near_copy = None
    if "novel" in config.selections:
        domain = register_classifier(classifier, ref.weights_hash)
        layer = domain.layer("fid")
        features = extract_features(pool, domain, eval_config.batch_size, device)[layer]
        train_features = extract_features(data.train.images, domain, eval_config.batch_size, device)[layer]
        distance, _ = nearest_train(features, train_features)
        near_copy = (distance <= train_nn_quantile(train_features, 0.05, seed=eval_config.seed)).cpu()
    rows = augmentation_study(pool, labels, data, eval_config, config, confidence, near_copy, device, runner)
    best = best_setting(rows)
    protocol = {"study_pairing": f"the generator and the real arm: the same {len(data.train)} training images "
                                 f"({min(real_counts)}-{max(real_counts)} a class, data.train)",
                "study_ratios": list(config.ratios), "study_selections": list(config.selections),
                "study_seeds": config.seeds, "study_steps": config.steps, "study_pool_per_class": per_class,
                "study_classifier_augmentation": f"flip {config.flip}, jitter {config.jitter}",
                "study_best_arm": best["arm"],
                "study_classifiers": getattr(runner, "description", f"one after another in the scoring process ({device})")}
    if near_copy is not None:
        protocol["study_near_copies"] = int(near_copy.sum())
    chosen = select(labels, synthetic_counts(real_counts, best["ratio"], config.ratios), best["selection"],
                    confidence, near_copy)
    picked = [pool[chosen][labels[chosen] == c] for c in range(k)]
    real = [data.train.images[data.train.labels == c] for c in range(k)]
    m = min(8, *(len(x) for x in picked + real))
    grid = torch.cat([torch.cat([real[c][:m], picked[c][:m]]) for c in range(k)])
    return rows, protocol, grid
