"""The evaluation reference of one dataset: what every evaluation of every trial compares with.

``prepare_reference`` runs once per run, before any trial: it trains the evaluation classifier on the
real training split (the whole of it in few-shot runs), or reads it from the cache keyed by the dataset
fingerprint and the classifier recipe (its settings and code: ``recipe_key``); measures its real test accuracy; trains the same recipe on as many
real images a class as CAS will train on (``eval.cas_pool_per_class``), the real-data ceiling CAS is read
against; chooses the Inception extractor; and extracts the real test split's features in every extractor
(or reads them from the cache). The reference is small and travels to every trial and every finalist
through the object store, so no trial extracts real features.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import math
import time
from dataclasses import asdict, dataclass, field

import torch

from condgen_bench.datasets.base import DatasetSplits
from condgen_bench.harness.evaluation.downstream import (capped_counts, first_of_each_class, gain_real_hits, gain_real_sets,
                                                         steps_recipe)
from condgen_bench.harness.evaluation.extractors import (Extractor, extract_features, file_extractor, register_classifier,
                                              resolve_inception)
from condgen_bench.harness.evaluation.fidelity import accuracy
from condgen_bench.models.accel import evaluation_math
from condgen_bench.models.classifier import ClassifierConfig, ResNetClassifier, predict, train_classifier
from condgen_bench.reports.run_folder import layout, storage


@dataclass
class EvalReference:
    """What every trial of one dataset shares (small: shipped to trials through the object store)."""

    classifier_state: dict  # ResNetClassifier weights
    classifier_config: dict  # its ClassifierConfig
    weights_hash: str  # names the torch-fidelity extractor and its cache entries
    classifier_accuracy: float  # on the real test split
    classifier_per_class: dict[str, float]
    classifier_accuracy_std: float  # over the real test images
    # the same recipe trained on the real images CAS's pool stands in for (capped per class): CAS's ceiling
    cas_real_accuracy: float
    cas_real_images: int
    reference_split: str  # the real split the reported (finalist) figures compare with; "validation" decides
    inception: Extractor | None  # None: no Inception network available (see inception_missing)
    inception_missing: str  # why there is no Inception extractor ("" when there is one)
    real_features: dict[str, dict[str, torch.Tensor]]  # {"domain" / "inception" / a file's: {layer: [N_ref, D]}}
    extractors: dict[str, Extractor] = field(default_factory=dict)  # eval.extractors' networks, by name
    # the validation split's features, as real_features: what the trial stages (the sweep's decisions) compare with
    validation_features: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    # the augmentation gain's real-only arm (downstream.gain_real_hits): [augment_seeds, T] bool hits on the real
    # test split, trained once for every finalist of the run; None where the gain is off. aug_real_key: the
    # settings it was trained under (gain_real_key), so that a finalist with other settings trains its own
    aug_real_hits: torch.Tensor | None = None
    aug_real_key: str = ""

    def features(self, split: str) -> dict[str, dict[str, torch.Tensor]]:
        """The real features of ``split`` ("test", or "validation" where the dataset has one), by extractor kind."""
        return self.validation_features if split == "validation" and self.validation_features else self.real_features

    def gain_real_hits(self, eval_config) -> torch.Tensor | None:
        """The real-only arm's hits [augment_seeds, T] bool where they were trained under ``eval_config``'s
        gain settings, else None (the caller trains them)."""
        if self.aug_real_hits is None or self.aug_real_key != gain_real_key(eval_config):
            return None
        return self.aug_real_hits

    def classifier(self, in_channels: int, num_classes: int, device="cpu") -> ResNetClassifier:
        net = ResNetClassifier(in_channels, num_classes, ClassifierConfig(**self.classifier_config))
        net.load_state_dict(self.classifier_state)
        return net.to(device).eval()

    def pins(self) -> dict:
        """What the run's rows were scored with, to pin across resumes (harness/sweep.py pin_references): the
        classifier's weights hash and real accuracy, CAS's ceiling, the augmentation gain's real-only accuracy per
        seed, and a hash of each extractor's real features."""
        return {"classifier": self.weights_hash, "classifier_accuracy": self.classifier_accuracy,
                "cas_real_accuracy": None if math.isnan(self.cas_real_accuracy) else self.cas_real_accuracy,
                "aug_real_accuracy": (None if self.aug_real_hits is None
                                      else self.aug_real_hits.double().mean(1).tolist()),
                "features": {kind: _weights_hash(layers) for kind, layers in sorted(self.real_features.items())},
                "validation_features": {kind: _weights_hash(layers)
                                        for kind, layers in sorted(self.validation_features.items())}}


def _weights_hash(state: dict) -> str:
    """12 hex digits of sha256 over {name: tensor}, in name order."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def recipe_key(config: ClassifierConfig) -> str:
    """The cache key of the evaluation classifier's recipe: its settings and the source of
    models/classifier.py (the network and its training code), so that a changed classifier is never read
    from a cache that an older one wrote."""
    from condgen_bench.models import classifier

    text = json.dumps(asdict(config), sort_keys=True) + inspect.getsource(classifier)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def gain_real_key(eval_config) -> str:
    """The cache key of the augmentation gain's real-only arm: the classifier's recipe (recipe_key), the shots,
    seeds and steps, and the source of the code that draws its sets and steps (a changed draw is never read
    from an older cache; the real images themselves are the dataset's fingerprint's)."""
    code = inspect.getsource(gain_real_sets) + inspect.getsource(steps_recipe)
    return (f"{recipe_key(eval_config.classifier)}-aug{eval_config.augment_shots}x{eval_config.augment_seeds}"
            f"x{eval_config.augment_steps}-{hashlib.sha256(code.encode()).hexdigest()[:6]}")


def _cached(path: str, make, log, what: str):
    """torch.load of ``path`` where it exists, else ``make()`` saved there. ``what`` names it in the log."""
    if storage.exists(path):
        log(f"{what}: read from cache {path}")
        return torch.load(io.BytesIO(storage.read_bytes(path)), weights_only=True)
    value = make()
    buffer = io.BytesIO()
    torch.save(value, buffer)
    storage.write_bytes(path, buffer.getvalue())
    return value


def reference_features(images: torch.Tensor, extractor: Extractor, path: str, batch_size: int = 64,
                       device: str = "cpu", log=print) -> dict[str, torch.Tensor]:
    """The features of a real split, read from ``path`` (layout.features_cache) or extracted once and
    cached there. images: [N, C, H, W] uint8. Returns {layer: [N, D] float64}."""
    def make():
        features = extract_features(images, extractor, batch_size, device)
        log(f"real features ({extractor.name}): extracted {len(images)} images, cached at {path}")
        return features

    return _cached(path, make, log, f"real features ({extractor.name})")


def prepare_reference(data: DatasetSplits, eval_config, cache_dir: str, log=print, device: str = "cpu") -> EvalReference:
    """Train (or load from ``cache_dir``, a local path or URI) the evaluation classifier for ``data``
    (eval_config: EvalConfig) and CAS's real ceiling, choose the Inception extractor, and extract (or load)
    the real test split's features for each extractor, on ``device``, in the evaluation's math mode (plain
    fp32: the real features must be computed as the generated ones are). Everything returned is on the CPU
    (it travels to CPU and GPU workers alike)."""
    with evaluation_math():
        return _prepare_reference(data, eval_config, cache_dir, log, device)


def _prepare_reference(data: DatasetSplits, eval_config, cache_dir: str, log, device: str) -> EvalReference:
    config = eval_config.classifier
    config_key = recipe_key(config)

    def train_evaluation_classifier():
        real = data.classifier_train  # the whole training split, also in few-shot runs
        log(f"evaluation classifier: training on {len(real)} real images ({config.epochs} epochs)")
        t0 = time.time()
        net = train_classifier(real.images, real.labels, data.num_classes, config, device=device, log=log)
        acc, per_class = accuracy(predict(net, data.test.images), data.test.labels, data.class_names)
        return {"state": {k: v.cpu() for k, v in net.state_dict().items()}, "accuracy": acc,
                "per_class": per_class, "seconds": time.time() - t0}

    saved = _cached(layout.classifier_cache(cache_dir, data.name, data.fingerprint, config_key),
                    train_evaluation_classifier, log, "evaluation classifier")
    acc = saved["accuracy"]
    log(f"evaluation classifier: real test accuracy {acc:.4f}")

    real = data.classifier_train
    counts = capped_counts(real.labels, data.num_classes, eval_config.cas_pool_per_class)
    idx = first_of_each_class(real.labels, counts)

    def train_cas_ceiling():
        net = train_classifier(real.images[idx], real.labels[idx], data.num_classes, config, device=device)
        hits = predict(net, data.test.images).argmax(1) == data.test.labels
        return {"accuracy": hits.double().mean().item(), "images": len(idx)}

    ceiling = {"accuracy": math.nan, "images": 0}
    if eval_config.cas:
        path = layout.classifier_cache(cache_dir, data.name, data.fingerprint,
                                       f"{config_key}-cas{eval_config.cas_pool_per_class}")
        ceiling = _cached(path, train_cas_ceiling, log, "CAS's real ceiling")
    gain_real, gain_key = None, ""
    if eval_config.augment:  # the same for every finalist: trained once here, not in each
        gain_key = gain_real_key(eval_config)
        path = layout.classifier_cache(cache_dir, data.name, data.fingerprint, gain_key)
        gain_real = _cached(path, lambda: gain_real_hits(data, eval_config, device), log,
                            "the augmentation gain's real-only arm")
    inception, inception_missing = resolve_inception(eval_config.inception_weights, eval_config.inception_download)
    log(f"Inception metrics: {inception.description if inception else 'missing: ' + inception_missing}")
    weights_hash = _weights_hash(saved["state"])
    ref = EvalReference(
        classifier_state=saved["state"], classifier_config=asdict(config), weights_hash=weights_hash,
        classifier_accuracy=acc, classifier_per_class=saved["per_class"],
        classifier_accuracy_std=math.sqrt(acc * (1 - acc) / len(data.test)),
        cas_real_accuracy=ceiling["accuracy"], cas_real_images=ceiling["images"], reference_split="test",
        aug_real_hits=gain_real, aug_real_key=gain_key,
        inception=inception, inception_missing=inception_missing, real_features={},
        extractors={name: file_extractor(name, spec) for name, spec in eval_config.extractors.items()},
    )
    domain = register_classifier(ref.classifier(data.channels, data.num_classes), weights_hash)
    for kind, extractor in (("domain", domain), ("inception", inception), *ref.extractors.items()):
        if extractor is None or (kind != "domain" and eval_config.inception_at == "never"):
            continue
        path = layout.features_cache(cache_dir, data.name, data.fingerprint, "test", extractor.key)
        ref.real_features[kind] = reference_features(data.test.images, extractor, path,
                                                     batch_size=eval_config.batch_size, device=device, log=log)
        # the validation split's, for the trial stages: Inception's and the files' only where they score there
        if data.validation is not None and (kind == "domain" or eval_config.inception_at in ("every", "final")):
            path = layout.features_cache(cache_dir, data.name, data.fingerprint, "validation", extractor.key)
            ref.validation_features[kind] = reference_features(data.validation.images, extractor, path,
                                                               batch_size=eval_config.batch_size, device=device,
                                                               log=log)
    return ref

