"""Data sources, splits, sharding and batch shaping."""

import gzip
import logging
import struct

import numpy as np
import pytest
import torch
from _training_data import bar_images
from PIL import Image

from inceptorch import data, sources
from inceptorch.config import resolve
from inceptorch.errors import ConfigError, DataError
from inceptorch.images import Preprocessing


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX format as its README describes it: zero, zero, 0x08 (uint8), the number of dimensions,
    the sizes as big-endian int32, then the values."""
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_set(folder, split, images, labels, compressed):
    folder.mkdir(parents=True, exist_ok=True)
    prefix = {"train": "train", "test": "t10k"}[split]
    for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
        path = folder / f"{prefix}-{kind}-ubyte"
        if compressed:
            path.with_name(path.name + ".gz").write_bytes(gzip.compress(idx_bytes(array)))
        else:
            path.write_bytes(idx_bytes(array))


@pytest.fixture
def digits():
    images, labels = bar_images(40, seed=0)
    return images, labels.astype(np.uint8)


@pytest.mark.parametrize("compressed", [True, False])
def test_idx_folder_in_torchvision_layout(tmp_path, digits, compressed):
    images, labels = digits
    write_idx_set(tmp_path / "MNIST" / "raw", "train", images, labels, compressed)
    config = resolve({"data": "mnist", "data_root": str(tmp_path), "val_split": 10})
    source = sources.open_source(config)
    train, val = source.splits["train"], source.splits["val"]
    assert (len(train), len(val)) == (30, 10)
    assert train.images.shape == (30, 1, 28, 28) and train.images.dtype == torch.uint8
    # every image keeps its own label, and the two parts together are the whole file
    together = torch.cat([train.images, val.images]).flatten(1)
    together_labels = torch.cat([train.labels, val.labels])
    for image, label in zip(torch.from_numpy(images).flatten(1), labels):
        match = (together == image).all(1).nonzero().flatten()
        assert len(match) == 1 and together_labels[match[0]] == int(label)
    assert source.classes == [str(d) for d in range(10)]


def test_missing_split_names_the_file(tmp_path, digits):
    write_idx_set(tmp_path / "FashionMNIST" / "raw", "train", *digits, compressed=True)
    config = resolve({"data": "fashion-mnist", "data_root": str(tmp_path)})
    assert len(sources.open_source(config, ("train", "val")).splits["train"]) > 0
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        sources.open_source(config, ("test",))


def test_test_split_is_read_where_present(tmp_path, digits):
    write_idx_set(tmp_path / "MNIST" / "raw", "train", *digits, compressed=False)
    write_idx_set(tmp_path / "MNIST" / "raw", "test", digits[0][:7], digits[1][:7], compressed=True)
    source = sources.open_source(resolve({"data": "mnist", "data_root": str(tmp_path)}), ("test",))
    assert torch.equal(source.splits["test"].images[:, 0], torch.from_numpy(digits[0][:7]))


@pytest.mark.parametrize("damage, words", [
    (lambda b: b"\x00\x00\x09\x03" + b[4:], "magic"),
    (lambda b: b[:-5], "truncated"),
    (lambda b: b[:10], "truncated"),
])
def test_malformed_idx_files_are_named(tmp_path, digits, damage, words):
    folder = tmp_path / "MNIST" / "raw"
    write_idx_set(folder, "train", *digits, compressed=False)
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=words) as error:
        sources.open_source(resolve({"data": "mnist", "data_root": str(tmp_path)}))
    assert str(path) in str(error.value)


def test_held_out_split_is_fixed_and_independent_of_the_seed(tmp_path, digits):
    write_idx_set(tmp_path, "train", *digits, compressed=True)
    first = sources.open_source(resolve({"data": "mnist", "data_root": str(tmp_path), "seed": 1}))
    second = sources.open_source(resolve({"data": "mnist", "data_root": str(tmp_path), "seed": 2}))
    assert torch.equal(first.splits["val"].images, second.splits["val"].images)
    assert len(first.splits["val"]) == 4  # the default 10 %
    with pytest.raises(ConfigError, match="val-split"):
        sources.open_source(resolve({"data": "mnist", "data_root": str(tmp_path), "val_split": 40}))


def test_builtin_sample_is_small_real_and_balanced():
    assert sources.BUILTIN.stat().st_size <= 2_000_000
    source = sources.open_source(resolve({}))
    assert source.classes == sources.FASHION_CLASSES
    train, val = source.splits["train"], source.splits["val"]
    assert train.images.shape[1:] == (1, 28, 28) and len(train) >= 1000 and len(val) >= 200
    assert torch.bincount(val.labels).min() == torch.bincount(val.labels).max()
    assert train.images.float().std() > 50  # real pictures, not blank arrays


def test_shards_of_all_processes_make_the_same_global_batches():
    alone = data.shard(103, 16, shuffle=True, seed=5, epoch=2, rank=0, world=1)
    parts = [data.shard(103, 16, shuffle=True, seed=5, epoch=2, rank=r, world=2) for r in range(2)]
    assert len(alone) == 96 and all(len(p) == 48 for p in parts)
    for step in range(6):  # global batch `step`: 16 images, 8 from each process
        together = torch.cat([p[step * 8:(step + 1) * 8] for p in parts])
        assert set(together.tolist()) == set(alone[step * 16:(step + 1) * 16].tolist())
    other_epoch = data.shard(103, 16, shuffle=True, seed=5, epoch=3, rank=0, world=1)
    assert not torch.equal(alone, other_epoch)
    evaluation = [data.shard(103, 16, shuffle=False, seed=5, epoch=0, rank=r, world=2) for r in range(2)]
    assert sorted(torch.cat(evaluation).tolist()) == list(range(103))


def test_batches_are_shaped_for_the_model():
    images = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    prep = Preprocessing(crop=56, resize=56, mean=(0.2, 0.3, 0.4), std=(0.5, 0.5, 0.5))
    x = data.shape_batch(images, prep)
    assert x.shape == (6, 3, 56, 56)
    from torchvision.transforms import v2

    reference = v2.Normalize(prep.mean, prep.std)(
        v2.Resize(56, antialias=True)(images.float() / 255).expand(-1, 3, -1, -1))
    assert torch.allclose(x, reference, atol=1e-4)


def test_flip_and_crop_act_per_image():
    x = torch.randn(64, 2, 16, 16)
    generator = torch.Generator().manual_seed(0)
    flipped = data.augment_batch(x, ("flip",), generator)
    is_flipped = [torch.equal(f, i.flip(-1)) for f, i in zip(flipped, x)]
    assert 10 < sum(is_flipped) < 54
    assert all(a or torch.equal(f, i) for a, f, i in zip(is_flipped, flipped, x))
    cropped = data.augment_batch(x, ("crop",), generator)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    shifts = []
    for c, p in zip(cropped, padded):  # each output is one 16x16 window of its zero-padded input
        found = [(dy, dx) for dy in range(5) for dx in range(5)
                 if torch.equal(c, p[:, dy:dy + 16, dx:dx + 16])]
        assert found
        shifts.append(found[0])
    assert len(set(shifts)) > 5


def test_random_erasing_zeroes_one_rectangle_in_about_half_the_images():
    x = torch.randn(400, 2, 20, 20)
    erased = data.augment_batch(x, ("erase",), torch.Generator().manual_seed(0))
    zeroed = erased == 0
    assert torch.equal(zeroed[:, 0], zeroed[:, 1])  # the same rectangle in every channel
    touched = zeroed[:, 0].flatten(1).any(1)
    assert 150 < int(touched.sum()) < 250
    assert torch.equal(erased[~zeroed], x[~zeroed])  # nothing outside the rectangle changes
    for mask in zeroed[touched, 0]:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        height, width = len(rows), len(cols)
        assert int(mask.sum()) == height * width  # one solid rectangle
        assert rows[-1] - rows[0] + 1 == height and cols[-1] - cols[0] + 1 == width
        assert 0.02 * 400 - 4 <= height * width <= 0.4 * 400 + 8
    again = data.augment_batch(x, ("erase",), torch.Generator().manual_seed(0))
    assert torch.equal(again, erased)


def test_channel_statistics_normalize_the_training_data():
    images = torch.randint(0, 200, (50, 1, 28, 28), dtype=torch.uint8)
    split = sources.Split(torch.zeros(50, dtype=torch.long), images)
    mean, std = data.channel_stats(split, 3, 28, 28)
    x = data.shape_batch(images, Preprocessing(28, 28, tuple(mean), tuple(std)))
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std((0, 2, 3)), torch.ones(3), atol=1e-3)


def make_folder(root, classes=("cat", "dog"), per_class=3, size=40):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")


def folder_loader(root, **options):
    config = resolve({"data": str(root), "val_split": 0.34, "workers": 0, "batch_size": 4, **options})
    source = sources.open_source(config)
    prep = Preprocessing(crop=32, resize=36, mean=(0.5,) * 3, std=(0.25,) * 3)
    return source, data.loaders(source, prep, config)


def test_image_folder_with_a_held_out_split(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "notes.txt").write_text("not a class")
    (tmp_path / "cat" / "readme.txt").write_text("not an image")
    source, loaders = folder_loader(tmp_path, augment="flip,crop,erase")
    assert source.classes == ["cat", "dog"]
    assert len(source.splits["train"]) + len(source.splits["val"]) == 6
    x, y = next(iter(loaders["train"]))
    assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.float32 and set(y.tolist()) <= {0, 1}


def test_image_folder_with_train_and_val_folders(tmp_path):
    make_folder(tmp_path / "train")
    make_folder(tmp_path / "val", per_class=2)
    source, loaders = folder_loader(tmp_path)
    assert len(source.splits["val"]) == 4
    assert sum(len(y) for _, y in loaders["val"]) == 4


def test_unreadable_image_is_skipped_with_a_warning_or_refused_when_strict(tmp_path, caplog):
    make_folder(tmp_path / "train", per_class=4)
    make_folder(tmp_path / "val", per_class=1)
    broken = tmp_path / "train" / "dog" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    _, loaders = folder_loader(tmp_path, batch_size=9)  # one batch of all nine files
    with caplog.at_level(logging.WARNING, logger="inceptorch"):
        seen = sum(len(y) for _, y in loaders["train"])
    assert seen == 8 and "broken.jpg" in caplog.text
    with pytest.raises(DataError, match="broken.jpg"):  # small images are decoded once, when the folder is read
        _, strict = folder_loader(tmp_path, strict=True, batch_size=9)
        list(strict["train"])


@pytest.mark.parametrize("make, words", [
    (lambda root: None, "neither"),
    (lambda root: root.mkdir(), "no class folders"),
    (lambda root: (root / "cat").mkdir(parents=True), "holds no images"),
])
def test_bad_folders_are_data_errors(tmp_path, make, words):
    root = tmp_path / "photos"
    make(root)
    with pytest.raises(DataError, match=words):
        sources.open_source(resolve({"data": str(root)}))


def test_cifar10_batches_failing_torchvisions_checksum_are_a_data_error(tmp_path):
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (batches / name).write_bytes(b"truncated")
    with pytest.raises(DataError, match="no intact CIFAR-10 train split in .*cifar-10-batches-py"):
        sources.open_source(resolve({"data": "cifar10", "data_root": str(tmp_path)}))


def test_npz_file_with_colour_images(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "colour.npz"
    np.savez(path, train_images=rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8),
             train_labels=np.arange(20) % 3)
    source = sources.open_source(resolve({"data": str(path), "val_split": 5}))
    assert source.channels == 3 and source.size == 32 and source.classes == ["0", "1", "2"]
    assert source.splits["train"].images.shape == (15, 3, 32, 32)
