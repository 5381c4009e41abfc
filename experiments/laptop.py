"""The laptop profile the experiment scripts share: the data, the evaluation classifier and the
smoke-test overrides of both (each script adds its own model, training budget and search space)."""

from condgen_bench.datasets import DataConfig
from condgen_bench.models.classifier import ClassifierConfig


def data(**changes) -> DataConfig:
    """3,500 training and 700 test synthetic faces at 24 px (changes: other DataConfig fields)."""
    return DataConfig(**{"name": "synthetic_faces", "image_size": 24, "num_train": 3500, "num_test": 700, **changes})


def classifier() -> ClassifierConfig:
    """The evaluation classifier every script trains (94.7% on the real test faces)."""
    return ClassifierConfig(width=16, epochs=10)


# --smoke-test: tiny data and evaluation, every stage runs, nothing is worth looking at
SMOKE_DATA_AND_EVAL = {
    "data.image_size": 16, "data.num_train": 140, "data.num_test": 70, "train.eval_every": 0,
    "eval.samples_per_class": 4, "eval.classifier.width": 8, "eval.classifier.epochs": 1,
    "eval.augment_steps": 20, "eval.final_samples_per_class": 4, "eval.cas_pool_per_class": 10,
}


def smoke(**script_overrides) -> dict:
    """The shared smoke-test overrides with a script's own (its network, batch and search space) on top."""
    return {**SMOKE_DATA_AND_EVAL, **script_overrides}


def augmentation(**script_overrides) -> dict:
    """--preset augmentation, every family: its sweep on 50 training faces a class (--shots-per-class sets
    another K; the evaluation classifier still learns from the whole split), then the augmentation study on
    the best trial (harness/evaluation/augment_study.py): classifiers on the same K images a class alone and
    with 0.5, 1, 2 and 5 generated images per real one, or generated only, without and with flips and
    jitter, the generated images chosen uniformly, by the evaluation classifier's confidence, or away from
    near-copies of the training images. It replaces the one-number augmentation gain."""
    # the Inception features (700 real and 700 generated images, ~3.5 minutes on 2 cores) are left out: the
    # study's question is the classifier's, and the preset must fit 25 minutes
    return {"data.shots_per_class": 50, "eval.augment_study": True, "eval.augment": False, "eval.finalists": 1,
            "eval.sampling_sweep": {}, "eval.inception_at": "never", **script_overrides}
