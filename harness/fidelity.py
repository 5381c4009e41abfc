"""The evaluation classifier as a torch-fidelity feature extractor, and the metric call around it.

torch-fidelity builds extractors from its registry by name (``cls(name, features, **kwargs)``), so a
trained classifier is registered as a subclass bound to its weights, under a name that carries the
weights' hash: its cached real-data features can never be mistaken for another classifier's.
"""

from __future__ import annotations

import torch
import torch_fidelity
from torch.utils.data import Dataset
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from models.classifier import ResNetClassifier


class ImageTensorDataset(Dataset):
    """A torch-fidelity input over in-memory images: item i is images[i], [C, H, W] uint8."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


class DomainFeatureExtractor(FeatureExtractorBase):
    """Features of a ResNetClassifier: "pool" (penultimate layer, for FID / KID / precision-recall)
    and "logits" (for IS). Input: [B, C, H, W] uint8 at the dataset's own size and channels."""

    classifier: ResNetClassifier = None  # set on the subclass that ``register_classifier`` makes

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)
        self.net = type(self).classifier

    @staticmethod
    def get_provided_features_list():
        return "pool", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "pool", "kid": "pool", "prc": "pool"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        device = next(self.net.parameters()).device
        pool = self.net.features(x.to(device).float() / 127.5 - 1.0)
        out = {"pool": pool, "logits": self.net.fc(pool)}
        return tuple(out[name].double().cpu() for name in self.features_list)


def register_classifier(classifier: ResNetClassifier, weights_hash: str) -> str:
    """Register ``classifier`` with torch-fidelity; returns the extractor name ("domain-<hash>")."""
    name = f"domain-{weights_hash}"
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        cls = type(f"DomainFeatureExtractor_{weights_hash}", (DomainFeatureExtractor,),
                   {"classifier": classifier.eval()})
        torch_fidelity.register_feature_extractor(name, cls)
    return name


def fidelity_metrics(samples: torch.Tensor, real: torch.Tensor, *, extractor: str, real_cache_name: str,
                     cache_root: str, kid_subset_size: int, kid_subsets: int, isc_splits: int,
                     isc: bool = True, fid: bool = True, kid: bool = True, prc: bool = False,
                     cuda: bool = False) -> dict[str, float]:
    """FID / KID / IS (/ precision-recall) of ``samples`` against ``real`` through torch-fidelity.

    samples, real: [N, C, H, W] uint8. The real features and FID statistics are cached under
    ``cache_root`` as ``real_cache_name`` (one extraction per dataset, split and extractor). KID's subset
    size and IS's split count are capped at the sample counts.
    """
    n = min(len(samples), len(real))
    return torch_fidelity.calculate_metrics(
        input1=ImageTensorDataset(samples), input2=ImageTensorDataset(real),
        input2_cache_name=real_cache_name, cache_root=cache_root, cache=True,
        feature_extractor=extractor, isc=isc, fid=fid, kid=kid, prc=prc,
        kid_subset_size=min(kid_subset_size, n), kid_subsets=kid_subsets, isc_splits=min(isc_splits, len(samples)),
        batch_size=256, cuda=cuda, save_cpu_ram=True, verbose=False,
    )
