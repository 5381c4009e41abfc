"""The embedded synthetic faces: determinism, shapes, balance, and the no-shortcut rule."""

import pytest
import torch

from condgen_bench import datasets
from condgen_bench.datasets import DataConfig, FER_EMOTIONS
from condgen_bench.datasets.synthetic_faces import load_synthetic_faces, render_faces


@pytest.fixture(scope="module")
def faces():
    return load_synthetic_faces(image_size=32, num_train=1400, num_test=350, seed=3)


def test_shapes_dtypes_and_names(faces):
    assert faces.train.images.shape == (1400, 1, 32, 32) and faces.train.images.dtype == torch.uint8
    assert faces.test.images.shape == (350, 1, 32, 32)
    assert faces.train.labels.dtype == torch.int64
    assert faces.class_names == FER_EMOTIONS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert faces.train.split == "train" and faces.test.split == "test"
    assert faces.spec().num_classes == 7 and faces.spec().channels == 1 and faces.spec().image_size == 32


def test_classes_are_balanced(faces):
    assert set(faces.summary()["train"].values()) == {200}
    assert set(faces.summary()["test"].values()) == {50}


def test_deterministic_for_a_seed(faces):
    again = load_synthetic_faces(image_size=32, num_train=1400, num_test=350, seed=3)
    assert torch.equal(again.train.images, faces.train.images) and torch.equal(again.test.labels, faces.test.labels)
    assert again.fingerprint == faces.fingerprint
    other = load_synthetic_faces(image_size=32, num_train=1400, num_test=350, seed=4)
    assert other.fingerprint != faces.fingerprint
    assert not torch.equal(other.train.images, faces.train.images)


def test_fingerprint_follows_size_and_counts(faces):
    assert load_synthetic_faces(image_size=28, num_train=1400, num_test=350, seed=3).fingerprint != faces.fingerprint
    assert load_synthetic_faces(image_size=32, num_train=700, num_test=350, seed=3).fingerprint != faces.fingerprint


def test_no_shortcut_class_means_within_two_gray_levels(faces):
    for split in (faces.train, faces.test):
        means = [split.images[split.labels == k].float().mean().item() for k in range(7)]
        assert max(means) - min(means) <= 2.0, means


def test_each_image_mean_is_its_identitys_neutral_mean():
    """The emotion does not move an image's mean beyond noise and rounding: within one identity the
    seven renderings have (nearly) the same mean."""
    images, labels = render_faces(seed=0, num_identities=30, size=32)
    means = torch.from_numpy(images).float().mean(dim=(1, 2)).reshape(30, 7)
    assert (means.max(1).values - means.min(1).values).max().item() < 2.0
    assert labels.tolist()[:7] == list(range(7))


def test_emotions_change_the_face_not_only_noise():
    images, _ = render_faces(seed=0, num_identities=5, size=48)
    faces = torch.from_numpy(images).float().reshape(5, 7, 48, 48)
    # between emotions of one person the mouth region changes a lot more than pixel noise could
    mouth = faces[:, :, 28:44, 12:36]
    spread = (mouth - mouth.mean(1, keepdim=True)).abs().mean().item()
    assert spread > 8.0


@pytest.mark.parametrize("size", [28, 48, 64])
def test_any_size(size):
    d = load_synthetic_faces(image_size=size, num_train=70, num_test=70, seed=0)
    assert d.train.images.shape == (70, 1, size, size)
    assert d.train.images.float().std() > 20  # a picture, not a flat field


def test_registry_loads_by_name_and_lists_valid_names():
    d = datasets.load(DataConfig(name="synthetic_faces", image_size=24, num_train=70, num_test=70))
    assert d.name == "synthetic_faces" and d.image_size == 24
    with pytest.raises(ValueError, match="synthetic_faces"):
        datasets.load(DataConfig(name="mnist"))
