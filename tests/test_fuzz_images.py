"""Hostile image folders: every file is decoded or skipped with its name, nothing crashes or hangs,
and decompression bombs are refused before their pixels are allocated.

Three layers: hand-made hostile files (truncated, zero bytes, wrong suffix, huge declared size, CMYK,
16 bits, animated, symlinks out of the folder, a symlink loop); a seeded fuzz run of byte mutations of
valid files of every format; and a hypothesis property over arbitrary mutations. Both the training
loader (``data``) and ``predict`` meet the same files.
"""

import io
import logging
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from inceptorch import data, sources
from inceptorch.config import resolve
from inceptorch.errors import DataError
from inceptorch.images import read_image
from inceptorch.models import create_model
from inceptorch.predict import predict


def _encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def _png_declaring(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header claims ``width`` x ``height``: a few dozen bytes."""
    png = bytearray(_encode(Image.new("L", (1, 1)), "PNG"))
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(png[24:29])
    png[12:29] = header
    png[29:33] = struct.pack(">I", zlib.crc32(header))
    return bytes(png)


def seed_files() -> dict[str, bytes]:
    """Valid files of each format and mode the readers meet, 24x20 pixels."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    frames = [Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8), "L").convert("P") for _ in range(3)]
    return {
        "rgb.jpg": _encode(rgb, "JPEG"),
        "cmyk.jpg": _encode(rgb.convert("CMYK"), "JPEG"),
        "rgba.png": _encode(rgb.convert("RGBA"), "PNG"),
        "deep.png": _encode(Image.fromarray(rng.integers(0, 65536, (20, 24), dtype=np.uint16)), "PNG"),
        "animated.gif": _encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "grey.bmp": _encode(rgb.convert("L"), "BMP"),
        "photo.webp": _encode(rgb, "WEBP"),
        "float.tif": _encode(Image.fromarray(rng.random((20, 24), dtype=np.float32)), "TIFF"),
    }


def hostile_folder(root: Path, outside: Path) -> dict[str, bool]:
    """Writes good and hostile files into ``root``; returns file name -> whether it must decode."""
    seeds = seed_files()
    files = {name: True for name in seeds}
    for name, content in seeds.items():
        (root / name).write_bytes(content)
    bad = {
        "empty.jpg": b"",
        "half.jpg": seeds["rgb.jpg"][: len(seeds["rgb.jpg"]) // 2],
        "half.png": seeds["rgba.png"][: len(seeds["rgba.png"]) // 2],
        "text.png": b"not an image at all\n" * 10,
        "bomb.png": _png_declaring(60_000, 60_000),  # 3.6 G pixels in 70 bytes
        "wide.png": _png_declaring(12_000, 8_000),  # 96 M pixels: over the limit, under twice it
    }
    for name, content in bad.items():
        (root / name).write_bytes(content)
        files[name] = False
    (root / "png-named.jpg").write_bytes(seeds["rgba.png"])  # a wrong suffix is no obstacle
    files["png-named.jpg"] = True
    (outside / "elsewhere.png").write_bytes(seeds["rgba.png"])
    (outside / "secret.txt").write_text("password\n")
    (root / "link-out.png").symlink_to(outside / "elsewhere.png")
    (root / "link-secret.jpg").symlink_to(outside / "secret.txt")
    (root / "dangling.jpg").symlink_to(outside / "gone.jpg")
    (root / "loop").symlink_to(root)  # a folder that contains itself
    files.update({"link-out.png": True, "link-secret.jpg": False, "dangling.jpg": False})
    return files


@pytest.fixture
def hostile(tmp_path) -> tuple[Path, dict[str, bool]]:
    root, outside = tmp_path / "images", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    return root, hostile_folder(root, outside)


def check_read(path: Path, channels: int = 3) -> bool:
    """``read_image`` gives an 8-bit image of the right mode or a DataError naming the file; True when
    it decoded."""
    try:
        image = read_image(path, channels)
    except DataError as e:
        assert str(path) in str(e) and "\n" not in str(e)
        return False
    assert image.mode == ("RGB" if channels == 3 else "L") and min(image.size) >= 1
    return True


def test_each_hostile_file_is_decoded_or_named(hostile):
    root, expected = hostile
    for name, decodes in expected.items():
        for channels in (1, 3):
            assert check_read(root / name, channels) == decodes, name


def test_decompression_bombs_are_refused_from_the_header_without_loading_pixels(hostile, monkeypatch):
    root, _ = hostile

    def no_pixels(image):
        raise AssertionError(f"{image.filename}: pixels loaded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_pixels)  # any decode of the pixel data fails the test
    for name in ("bomb.png", "wide.png"):
        with pytest.raises(DataError, match="pixels") as error:
            read_image(root / name)
        assert str(root / name) in str(error.value)


def test_predict_names_every_skipped_file_and_predicts_the_rest(hostile):
    root, expected = hostile
    model = create_model("lenet", num_classes=3)
    results = {Path(r.source).name: r for r in predict(model, root, topk=2)}
    assert set(results) == set(expected)  # the loop was not followed; the dangling link is listed
    for name, decodes in expected.items():
        assert (results[name].error is None) == decodes, name
        if not decodes:
            assert name in results[name].error


def test_training_loader_skips_and_names_the_hostile_files(tmp_path, caplog):
    folder, outside = tmp_path / "folder", tmp_path / "outside"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
    outside.mkdir()
    expected = hostile_folder(folder / "a", outside)
    for name, content in seed_files().items():
        (folder / "b" / name).write_bytes(content)
    config = resolve({"data": str(folder), "val_split": 4, "batch_size": 1, "workers": 0, "image_size": 32,
                      "model": "lenet"})
    source = sources.open_source(config)
    model = create_model("lenet", num_classes=2)
    prep = data.preprocessing(source, model, config)
    listed = {Path(f).name for split in source.splits.values() for f in split.files if Path(f).parent.name == "a"}
    assert listed == set(expected)
    with caplog.at_level(logging.WARNING, logger="inceptorch"):
        batches = data.loaders(source, prep, config)
        seen = sum(len(y) for split in batches.values() for _, y in split)
    bad = [name for name, decodes in expected.items() if not decodes]
    good = len(source.splits["train"]) + len(source.splits["val"]) - len(bad)
    assert seen == good
    for name in bad:
        assert any(name in message for message in caplog.messages), name


FORMATS = sorted(seed_files())


def mutate(content: bytes, rng: random.Random) -> bytes:
    """One of: truncate, flip bytes, overwrite a run with random bytes, insert, or cut a block out."""
    content = bytearray(content)
    kind = rng.randrange(5)
    at = rng.randrange(len(content))
    if kind == 0:
        return bytes(content[:at])
    if kind == 1:
        for _ in range(rng.randint(1, 8)):
            content[rng.randrange(len(content))] ^= 1 << rng.randrange(8)
    elif kind == 2:
        content[at:at + 16] = rng.randbytes(min(16, len(content) - at))
    elif kind == 3:
        content[at:at] = rng.randbytes(rng.randint(1, 64))
    else:
        del content[at:at + rng.randint(1, 64)]
    return bytes(content)


def test_fuzzed_files_of_every_format_decode_or_are_named(tmp_path):
    """A seeded fuzz run: 100 mutations of each seed file, each read as RGB (their read times: the
    benchmark benchmarks/fuzz_images.py)."""
    rng = random.Random(8)
    decoded = named = 0
    for name, content in seed_files().items():
        for i in range(100):
            path = tmp_path / f"{i}-{name}"
            path.write_bytes(mutate(content, rng))
            if check_read(path):
                decoded += 1
            else:
                named += 1
    print(f"fuzz: {decoded + named} files, {decoded} decoded, {named} skipped with their names")
    assert decoded + named == 100 * len(FORMATS) and named > 0 and decoded > 0


# deadline=None: hypothesis' per-example time limit is a wall-clock assertion (read times are in
# benchmarks/fuzz_images.py)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(FORMATS), seed=st.integers(0, 2**32 - 1), channels=st.sampled_from([1, 3]),
       prefix=st.binary(max_size=32))
def test_any_mutation_decodes_or_is_named(tmp_path, fmt, seed, channels, prefix):
    """Property: whatever bytes a file holds (a mutation of a valid file, after random leading bytes or
    none), reading it ends in an image or a named DataError."""
    content = mutate(seed_files()[fmt], random.Random(seed))
    path = tmp_path / f"case{Path(fmt).suffix}"
    path.write_bytes(prefix + content if seed % 4 == 0 else content)
    check_read(path, channels)
