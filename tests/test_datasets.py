"""The real-format loaders (FER2013 CSV and folders, CK+48, imagefolder) on small files written here in
those formats, their splits and fingerprints, and an error naming the file (and line) for each bad input."""

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from condgen_bench import datasets
from condgen_bench.datasets import DataConfig, DatasetError, FER_EMOTIONS
from condgen_bench.datasets.export import save_image, write_class_folders, write_fer2013_csv
from condgen_bench.datasets.splits import grouped_split, stratified_split, take_shots


def random_images(n, c=1, size=48, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, c, size, size), dtype=np.uint8))


def load(name, root, **kw):
    return datasets.load(DataConfig(name=name, data_root=str(root), **kw))


# ---------------------------------------------------------------- FER2013, CSV


@pytest.fixture
def fer_csv(tmp_path):
    """A FER2013 CSV of 21 rows: every emotion once per Usage value, rows interleaved."""
    usages = ["Training", "PublicTest", "PrivateTest"] * 7
    labels = torch.arange(7).repeat_interleave(3)
    images = random_images(21)
    path = tmp_path / "fer2013.csv"
    write_fer2013_csv(str(path), images, labels, usages)
    return path, images, labels, usages


def test_fer_csv_splits_labels_and_pixels(fer_csv):
    path, images, labels, usages = fer_csv
    data = load("fer2013", path)
    assert data.class_names == FER_EMOTIONS
    assert data.options["format"] == "csv"
    for split, usage in (("train", "Training"), ("validation", "PublicTest"), ("test", "PrivateTest")):
        rows = [i for i, u in enumerate(usages) if u == usage]
        part = data.splits()[split]
        assert torch.equal(part.images, images[rows]) and torch.equal(part.labels, labels[rows])
        assert part.split == split
    assert data.summary()["validation"] == dict.fromkeys(FER_EMOTIONS, 1)


def test_fer_csv_found_in_folder_and_with_icml_header(fer_csv, tmp_path):
    path, images, _, _ = fer_csv
    kaggle = tmp_path / "download" / "fer2013"
    kaggle.mkdir(parents=True)
    shutil.copy(path, kaggle / "fer2013.csv")
    assert torch.equal(load("fer2013", tmp_path / "download").train.images, load("fer2013", path).train.images)
    # the ICML copy: columns in another order, with spaces after the commas
    lines = path.read_text().splitlines()
    icml = ["emotion, Usage, pixels"] + [f"{e}, {u}, {p}" for e, p, u in (line.split(",") for line in lines[1:])]
    (tmp_path / "icml.csv").write_text("\n".join(icml) + "\n")
    assert torch.equal(load("fer2013", tmp_path / "icml.csv").test.images, load("fer2013", path).test.images)


def test_fer_csv_class_subset_resize_and_channels(fer_csv):
    path, images, _, _ = fer_csv
    data = load("fer2013", path, classes=["neutral", "fear", "angry"], image_size=24, channels=3)
    assert data.class_names == ("angry", "fear", "neutral")  # the dataset's order
    assert data.train.images.shape == (3, 3, 24, 24)
    assert sorted(data.train.labels.tolist()) == [0, 1, 2]
    # the neutral training image, downscaled: close to the 2x2 block means of the original
    neutral = data.train.images[data.train.labels == 2][0, 0].float()
    blocks = images[18, 0].float().reshape(24, 2, 24, 2).mean((1, 3))
    assert (neutral - blocks).abs().mean() < 40  # random pixels: bicubic differs from box, but not wildly


BAD_CSV = {  # what to write after the header, what the error must say
    "pixel count": ("3,1 2 3,Training", "line 2: 3 pixel values, expected 2304"),
    "non-integer": ("3," + " ".join(["7"] * 100 + ["x8"] + ["7"] * 2203) + ",Training", "line 2: pixel 101 is 'x8'"),
    "fraction": ("3," + " ".join(["7"] * 2303 + ["7.5"]) + ",Training", "line 2: pixel 2304 is '7.5'"),
    "over 255": ("3," + " ".join(["256"] + ["7"] * 2303) + ",Training", "line 2: pixel 1 is 256, out of range"),
    "label range": ("9," + " ".join(["7"] * 2304) + ",Training", "line 2: emotion label 9 out of range 0..6"),
    "label text": ("happy," + " ".join(["7"] * 2304) + ",Training", "line 2: emotion 'happy' is not an integer"),
    "usage": ("3," + " ".join(["7"] * 2304) + ",Validation", "line 2: Usage 'Validation' is not one of"),
    "fields": ("3," + " ".join(["7"] * 2304), "line 2: 2 fields, expected 3"),
}


@pytest.mark.parametrize("case", sorted(BAD_CSV))
def test_fer_csv_bad_rows_name_file_and_line(fer_csv, tmp_path, case):
    path, *_ = fer_csv
    row, message = BAD_CSV[case]
    good = path.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([good[0], good[1], "", row, good[2]]) + "\n")  # the bad row is line 4
    with pytest.raises(DatasetError) as err:
        load("fer2013", bad)
    assert str(bad) in str(err.value)
    assert message.replace("line 2", "line 4") in str(err.value)


def test_fer_csv_wrong_header_and_missing_path(fer_csv, tmp_path):
    path, *_ = fer_csv
    lines = path.read_text().splitlines()
    bad = tmp_path / "train.csv"
    bad.write_text("\n".join(["emotion,pixels"] + [",".join(line.split(",")[:2]) for line in lines[1:]]) + "\n")
    with pytest.raises(DatasetError, match=r"train.csv, line 1: header 'emotion,pixels' lacks Usage"):
        load("fer2013", bad)
    with pytest.raises(DatasetError, match="nowhere.csv: no such file"):
        load("fer2013", tmp_path / "nowhere.csv")
    with pytest.raises(DatasetError, match="needs a data root"):
        datasets.load(DataConfig(name="fer2013"))


# ---------------------------------------------------------------- FER2013, folders


def test_fer_folders_labels_follow_the_csv_order(tmp_path):
    images = random_images(14, seed=1)
    labels = torch.arange(7).repeat(2)
    for split, rows in (("train", slice(0, 7)), ("test", slice(7, 14))):
        write_class_folders(str(tmp_path / split), images[rows], labels[rows], list(FER_EMOTIONS), ".png")
    (tmp_path / "train" / "happy" / ".DS_Store").write_bytes(b"\x00\x01junk")
    (tmp_path / "train" / "happy" / "Thumbs.db").write_bytes(b"junk")
    data = load("fer2013", tmp_path)
    assert data.options["format"] == "folders" and data.validation is None
    assert data.class_names == FER_EMOTIONS
    for part, rows in ((data.train, slice(0, 7)), (data.test, slice(7, 14))):
        order = torch.argsort(part.labels)
        assert part.labels[order].tolist() == list(range(7))
        assert torch.equal(part.images[order], images[rows])  # png: exact; neutral keeps label 6


def test_fer_folders_unknown_emotion_folder(tmp_path):
    write_class_folders(str(tmp_path / "train"), random_images(2), torch.tensor([0, 1]), ["angry", "contempt"])
    with pytest.raises(DatasetError, match=r"train/contempt: not a FER2013 emotion folder"):
        load("fer2013", tmp_path)


# ---------------------------------------------------------------- CK+


def write_ckplus(root, subjects=30, seed=0):
    """CK+48-like folders: each subject posed a random subset of the emotions, three frames each."""
    rng = np.random.default_rng(seed)
    folders = ["anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"]
    for s in range(subjects):
        for k, folder in enumerate(folders):
            if rng.random() < 0.6:
                os.makedirs(root / folder, exist_ok=True)
                for frame in range(3):
                    save_image(str(root / folder / f"S{s + 5:03d}_{k + 1:03d}_{frame + 14:08d}.png"),
                               random_images(1, seed=s * 100 + k * 10 + frame)[0])


def test_ckplus_names_and_subject_split(tmp_path):
    write_ckplus(tmp_path)
    data = load("ckplus", tmp_path, seed=3)
    assert data.class_names == ("angry", "disgust", "fear", "happy", "sad", "surprise", "contempt")
    assert data.options["split"].startswith("by subject")
    # which subject each image shows, recovered from the pixels (each file is unique random noise)
    subject_of = {}
    for folder in tmp_path.iterdir():
        for f in folder.iterdir():
            subject_of[np.asarray(Image.open(f)).tobytes()] = f.name[:4]
    train = {subject_of[img[0].numpy().tobytes()] for img in data.train.images}
    test = {subject_of[img[0].numpy().tobytes()] for img in data.test.images}
    assert train and test and not train & test
    # the validation split (which the sweep's decisions use) is held out of train by subject too
    validation = {subject_of[img[0].numpy().tobytes()] for img in data.validation.images}
    assert validation and not validation & train and not validation & test
    assert data.options["validation"].startswith("held out from train by subject")
    # stratified as well as subjects allow: every class near 20% in test
    counts = data.summary()
    for name in data.class_names:
        share = counts["test"][name] / (counts["test"][name] + counts["train"][name])
        assert 0.1 < share < 0.3, (name, share)
    # seeded: the same seed gives the same split, another seed another
    assert load("ckplus", tmp_path, seed=3).fingerprint == data.fingerprint
    assert load("ckplus", tmp_path, seed=4).fingerprint != data.fingerprint


def test_ckplus_without_subject_names_and_aliases(tmp_path):
    write_class_folders(str(tmp_path), random_images(20, seed=2), torch.arange(2).repeat(10), ["anger", "sadness"])
    data = load("ckplus", tmp_path, classes=["anger", "sad"])  # CK+ folder name or canonical name
    assert data.class_names == ("angry", "sad")
    assert data.options["split"].startswith("stratified")
    assert data.summary()["test"] == {"angry": 2, "sad": 2}
    with pytest.raises(DatasetError, match="unknown class 'neutral'; known classes: angry, sad"):
        load("ckplus", tmp_path, classes=["neutral"])


def test_grouped_split_keeps_groups_whole():
    rng = np.random.default_rng(0)
    groups = [f"S{g}" for g in rng.integers(0, 40, 600)]
    labels = rng.integers(0, 5, 600)
    train, test = grouped_split(labels, groups, 0.25, seed=1)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(600))
    assert not {groups[i] for i in train} & {groups[i] for i in test}
    assert abs(len(test) / 600 - 0.25) < 0.05


# ---------------------------------------------------------------- imagefolder


def write_mixed_folder(root):
    """Two classes of images in mixed sizes, modes and extension cases, plus files that are not images."""
    rng = np.random.default_rng(5)
    os.makedirs(root / "cats")
    os.makedirs(root / "dogs")
    specs = [("RGB", (40, 30), ".PNG"), ("L", (64, 64), ".jpg"), ("CMYK", (17, 50), ".JpEg"), ("P", (33, 33), ".bmp"),
             ("RGB", (20, 20), ".webp"), ("I;16", (24, 48), ".TIF"), ("RGBA", (48, 48), ".tiff"), ("LA", (30, 30), ".png")]
    for cls in ("cats", "dogs"):
        for i in range(10):
            mode, size, ext = specs[i % len(specs)]
            if mode == "I;16":
                img = Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16))
            else:
                img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
            img.save(root / cls / f"{cls}_{i}{ext}")
    (root / "cats" / ".DS_Store").write_bytes(b"\x00junk")
    (root / "dogs" / "Thumbs.db").write_bytes(b"junk")
    (root / "dogs" / "._dogs_0.jpg").write_bytes(b"mac resource fork")
    (root / "dogs" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()


def test_imagefolder_mixed_files(tmp_path):
    write_mixed_folder(tmp_path)
    data = load("imagefolder", tmp_path, image_size=16, test_fraction=0.3)
    assert data.class_names == ("cats", "dogs")
    # 20 images: 6 to test, then 1 a class of the remaining 7 held out as the validation split
    assert data.train.images.shape == (12, 3, 16, 16) and data.test.images.shape == (6, 3, 16, 16)
    assert data.summary()["test"] == {"cats": 3, "dogs": 3} and data.summary()["validation"] == {"cats": 1, "dogs": 1}
    gray = load("imagefolder", tmp_path, image_size=16, channels=1)
    assert gray.channels == 1 and gray.fingerprint != data.fingerprint


def test_imagefolder_crop(tmp_path):
    wide = np.zeros((20, 60), dtype=np.uint8)
    wide[:, 20:40] = 255  # a white centred square between black sides
    for cls in ("a", "b"):
        os.makedirs(tmp_path / cls)
        for i in range(2):
            Image.fromarray(wide).save(tmp_path / cls / f"{i}.png")
    center = load("imagefolder", tmp_path, image_size=10, channels=1)
    assert center.train.images.min() == 255
    squashed = load("imagefolder", tmp_path, image_size=10, channels=1, crop="none")
    assert squashed.train.images[0, 0, 5, 0] < 20 and squashed.train.images[0, 0, 5, 5] > 235


def test_imagefolder_train_test_layout_and_few_shot(tmp_path):
    labels = torch.arange(3).repeat(12)
    write_class_folders(str(tmp_path / "train"), random_images(36, seed=3), labels, ["x", "y", "z"])
    write_class_folders(str(tmp_path / "test"), random_images(9, seed=4), labels[:9], ["x", "y", "z"])
    data = load("imagefolder", tmp_path, image_size=48, channels=1)
    # no val/ folder: 10% of each class of train/ held out as the validation split (at least one)
    assert data.summary() == {"train": {"x": 11, "y": 11, "z": 11}, "validation": {"x": 1, "y": 1, "z": 1},
                              "test": {"x": 3, "y": 3, "z": 3}}
    few = load("imagefolder", tmp_path, image_size=48, channels=1, shots_per_class=4)
    # a few-shot run draws its validation split from the whole training split, before its shots
    assert few.summary() == {"train": {"x": 4, "y": 4, "z": 4}, "train_full": {"x": 11, "y": 11, "z": 11},
                             "validation": {"x": 1, "y": 1, "z": 1}, "test": {"x": 3, "y": 3, "z": 3}}
    assert torch.equal(few.validation.images, data.validation.images)
    assert torch.equal(few.test.images, data.test.images)
    # the evaluation classifier learns from the whole training split; generators see the shots only
    assert torch.equal(few.classifier_train.images, data.train.images) and data.classifier_train is data.train
    two = load("imagefolder", tmp_path, image_size=48, channels=1, shots_per_class=2)
    as_bytes = lambda images: {img.numpy().tobytes() for img in images}  # noqa: E731
    assert as_bytes(two.train.images) <= as_bytes(few.train.images)  # K-shot sets are nested
    other = load("imagefolder", tmp_path, image_size=48, channels=1, shots_per_class=4, seed=1)
    assert as_bytes(other.train.images) != as_bytes(few.train.images)
    with pytest.raises(DatasetError, match="class 'x' has 11 training images, fewer than shots_per_class=13"):
        load("imagefolder", tmp_path, shots_per_class=13)


def test_imagefolder_bad_input(tmp_path):
    with pytest.raises(DatasetError, match="nothing-here: no such file or folder"):
        load("imagefolder", tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no folders here")
    with pytest.raises(DatasetError, match="empty: no class folders found"):
        load("imagefolder", tmp_path / "empty")
    root = tmp_path / "data"
    write_class_folders(str(root), random_images(4), torch.tensor([0, 0, 1, 1]), ["a", "b"], ".jpg")
    (root / "c").mkdir()
    (root / "c" / ".DS_Store").write_bytes(b"junk")
    with pytest.raises(DatasetError, match=r"data/c: class folder holds no images"):
        load("imagefolder", root)
    shutil.rmtree(root / "c")
    with pytest.raises(DatasetError, match="unknown class 'd'; known classes: a, b"):
        load("imagefolder", root, classes=["a", "d"])
    victim = root / "b" / "img_00002.jpg"
    victim.write_bytes(victim.read_bytes()[:200])  # truncated
    with pytest.raises(DatasetError, match=r"img_00002.jpg: unreadable image"):
        load("imagefolder", root)
    victim.write_bytes(b"this is not a jpeg at all")
    with pytest.raises(DatasetError, match=r"b/img_00002.jpg: unreadable image"):
        load("imagefolder", root)


# ---------------------------------------------------------------- every dataset


def test_fingerprint_follows_data_split_and_preprocessing_only(fer_csv, tmp_path):
    path, images, labels, usages = fer_csv
    base = load("fer2013", path).fingerprint
    moved = tmp_path / "elsewhere" / "copy.csv"
    moved.parent.mkdir()
    shutil.copy(path, moved)
    assert load("fer2013", moved).fingerprint == base  # same data, another path
    assert load("fer2013", path, seed=7).fingerprint == base  # the seed plays no part in FER2013's split
    assert load("fer2013", path, image_size=32).fingerprint != base
    assert load("fer2013", path, classes=["happy", "sad"]).fingerprint != base
    changed = images.clone()
    changed[0, 0, 0, 0] ^= 1
    write_fer2013_csv(str(moved), changed, labels, usages)
    assert load("fer2013", moved).fingerprint != base  # one pixel
    write_fer2013_csv(str(moved), images, labels, ["Training"] + usages[1:4] + ["Training"] + usages[5:])
    assert load("fer2013", moved).fingerprint != base  # the split


def test_synthetic_faces_class_subset_and_shots():
    data = datasets.load(DataConfig(image_size=16, num_train=140, num_test=70, classes=["surprise", "angry"],
                                    shots_per_class=5))
    assert data.class_names == ("angry", "surprise")
    assert data.summary() == {"train": {"angry": 5, "surprise": 5}, "train_full": {"angry": 20, "surprise": 20},
                              "validation": {"angry": 10, "surprise": 10}, "test": {"angry": 10, "surprise": 10}}


def test_stratified_split_and_shots_are_seeded():
    labels = np.repeat(np.arange(3), [10, 5, 1])
    train, test = stratified_split(labels, 0.2, seed=0)
    assert np.bincount(labels[test], minlength=3).tolist() == [2, 1, 0]
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(16))
    again, _ = stratified_split(labels, 0.2, seed=0)
    assert np.array_equal(train, again)
    rows = take_shots(labels, 1, seed=0, class_names=("a", "b", "c"), source="x")
    assert sorted(labels[rows].tolist()) == [0, 1, 2]


def test_sixteen_bit_and_alpha_images_convert_to_8_bit(tmp_path):
    from condgen_bench.datasets.image_files import read_image

    Image.fromarray(np.full((8, 8), 128 * 257, dtype=np.uint16)).save(tmp_path / "deep.png")
    assert (read_image(str(tmp_path / "deep.png"), channels=1, size=8) == 128).all()
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # red, fully transparent: the colour is kept, alpha dropped
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    assert read_image(str(tmp_path / "alpha.png"), channels=3, size=4)[:, 0, 0].tolist() == [200, 0, 0]


def test_the_synthetic_validation_split_has_identities_of_its_own_and_leaves_train_and_test_as_they_were():
    """The sweep decides on a validation split: the synthetic faces render one from new identities (as many
    images as test), so the training and test images are those of a dataset without one."""
    from condgen_bench.datasets.synthetic_faces import render_faces

    data = datasets.load(DataConfig(image_size=16, num_train=140, num_test=70))
    assert data.summary()["validation"] == data.summary()["test"]
    seen = {img.numpy().tobytes() for img in torch.cat([data.train.images, data.test.images])}
    assert not any(img.numpy().tobytes() in seen for img in data.validation.images)
    images, _ = render_faces(0, 30, 16)  # stream 0: the train and test identities, unchanged
    assert {img.tobytes() for img in images} == seen
    assert "identities of its own" in data.options["validation"]
