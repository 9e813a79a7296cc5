"""Image folders held in memory: the same batches as the files they were decoded from, the limits that
keep a folder streamed, a test split beside train/, and fine-tuning a 10-class checkpoint on real photos."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

import inceptorch
from inceptorch import data, sources
from inceptorch.cli import build_parser, main
from inceptorch.config import resolve
from inceptorch.errors import DataError
from inceptorch.images import Preprocessing
from inceptorch.models.cfgs import trained_cfg
from inceptorch.weights import read_metadata, save_weights

SIDE = 32


def make_small_folder(root, classes=("bird", "cat", "dog"), per_class=7, side=SIDE):
    """Class folders of JPEG and PNG files, all side x side."""
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def open_folder(root, **options):
    return sources.open_source(resolve({"data": str(root), "val_split": 5, "workers": 0, **options}))


def test_folder_in_memory_gives_the_same_batches_as_the_files(tmp_path, caplog):
    make_small_folder(tmp_path)
    with caplog.at_level(logging.INFO, logger="inceptorch"):
        held = open_folder(tmp_path)
    streamed = open_folder(tmp_path, cache_images=False)
    assert "21 images held in memory" in caplog.text and " MB" in caplog.text
    assert held.size == SIDE and streamed.size is None
    assert held.splits["train"].images.shape == (16, 3, SIDE, SIDE) and streamed.splits["train"].images is None
    prep = Preprocessing(SIDE, SIDE, (0.5, 0.4, 0.3), (0.25, 0.2, 0.3))  # the files: resize 32, crop 32
    config = resolve({"batch_size": 3, "workers": 0, "seed": 7})
    memory, files = data.loaders(held, prep, config), data.loaders(streamed, prep, config)
    assert isinstance(memory["train"], data.TensorBatches) and isinstance(files["train"], data.FileBatches)
    for split in ("train", "val"):
        pairs = list(zip(memory[split], files[split], strict=True))
        assert len(pairs) == (5 if split == "train" else 2)  # 16 shuffled: 5 whole batches; 5 in order: 2
        for (x_memory, y_memory), (x_files, y_files) in pairs:
            assert torch.equal(y_memory, y_files)
            torch.testing.assert_close(x_memory, x_files, rtol=0, atol=1e-5)
    order = [y.tolist() for _, y in memory["train"]]
    memory["train"].set_epoch(1)
    assert [y.tolist() for _, y in memory["train"]] != order  # shuffled again, by (seed, epoch)


def test_over_the_memory_limit_the_folder_is_streamed_with_a_notice(tmp_path, caplog):
    make_small_folder(tmp_path)  # 21 x 3 x 32 x 32 bytes: 0.06 MB
    with caplog.at_level(logging.INFO, logger="inceptorch"):
        source = open_folder(tmp_path, cache_limit_mb=0.05)
    assert source.splits["train"].images is None and source.splits["train"].files
    assert "over the --cache-limit-mb of 0 MB: streaming them from the files" in caplog.text
    assert open_folder(tmp_path, cache_limit_mb=0.05, cache_images=True).splits["train"].images is not None


def test_images_of_mixed_sizes_are_streamed_with_a_notice(tmp_path, caplog):
    make_small_folder(tmp_path)
    Image.new("RGB", (SIDE, SIDE + 1)).save(tmp_path / "dog" / "tall.png")
    with caplog.at_level(logging.INFO, logger="inceptorch"):
        source = open_folder(tmp_path, cache_images=True)
    assert source.splits["train"].images is None
    assert "differ in size" in caplog.text and "tall.png 32x33" in caplog.text
    assert any(r.levelno == logging.WARNING for r in caplog.records)  # asked for, so a warning


def test_unreadable_file_is_left_out_of_memory_with_a_warning(tmp_path, caplog):
    make_small_folder(tmp_path)
    (tmp_path / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    with caplog.at_level(logging.WARNING, logger="inceptorch"):
        source = open_folder(tmp_path)
    assert sum(len(s.images) for s in source.splits.values()) == 21 and "broken.jpg" in caplog.text
    assert all(len(s.images) == len(s.labels) == len(s.files) for s in source.splits.values())
    with pytest.raises(DataError, match="broken.jpg.*--strict"):
        open_folder(tmp_path, strict=True)


def test_cache_flags_and_cifar10_image_folder_under_data_root(tmp_path):
    parse = build_parser().parse_args
    assert parse(["train", "--no-cache-images"]).cache_images is False
    assert parse(["train", "--cache-images", "--cache-limit-mb", "64"]).cache_limit_mb == 64.0  # typed by the flag
    make_small_folder(tmp_path / "cifar10" / "train", classes=("airplane", "cat"), per_class=3)
    source = sources.open_source(resolve({"data": "cifar10", "data_root": str(tmp_path), "val_split": 2,
                                          "workers": 0}))
    assert source.classes == ["airplane", "cat"] and source.size == SIDE
    assert len(source.splits["train"].images) == 4 and len(source.splits["val"].images) == 2


def test_evaluate_and_predict_score_a_test_folder_beside_train(tmp_path, capsys):
    make_small_folder(tmp_path / "photos" / "train", classes=("cat", "dog"), per_class=6)
    make_small_folder(tmp_path / "photos" / "test", classes=("cat", "dog"), per_class=3)
    assert main(["train", "--model", "googlenet_small", "--model-args", "width=0.125", "--data",
                 str(tmp_path / "photos"), "--val-split", "4", "--epochs", "1", "--batch-size", "4",
                 "--workers", "0", "--out-dir", str(tmp_path / "runs"), "--name", "pets", "--quiet"]) == 0
    weights = tmp_path / "runs" / "pets" / "last.safetensors"
    for data_option in ([], ["--data", str(tmp_path / "photos" / "train")]):  # as trained; train/ given itself
        capsys.readouterr()
        assert main(["evaluate", "--weights", str(weights), "--split", "test", "--workers", "0",
                     *data_option]) == 0
        assert "on 6 images" in capsys.readouterr().out
    assert main(["predict", "--weights", str(weights), "--topk", "1", str(tmp_path / "photos" / "test")]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 6 and all(("cat " in r or "dog " in r) and "/test/" in r for r in rows)


def test_finetuning_a_10_class_checkpoint_on_photos_changes_only_what_is_not_frozen(data_root, tmp_path):
    """The issue's command: the model, its width and its input size come from the checkpoint."""
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    source = inceptorch.create_model("googlenet_small", num_classes=10, width=0.25)
    source.class_names = classes
    cifar = Preprocessing(32, 32, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)).data_config()  # what its training used
    source.pretrained_cfg = trained_cfg(source.pretrained_cfg, cifar, classes)
    checkpoint = tmp_path / "cifar10.safetensors"
    save_weights(source, checkpoint)
    photos = data_root / "cats_vs_dogs" / "train"
    assert main(["finetune", "--weights", str(checkpoint), "--data", str(photos), "--epochs", "1",
                 "--train-samples", "48", "--val-samples", "16", "--batch-size", "16", "--workers", "2",
                 "--out-dir", str(tmp_path / "runs"), "--name", "pets", "--quiet"]) == 0
    tuned = tmp_path / "runs" / "pets" / "last.safetensors"
    model, meta = inceptorch.load_model(tuned), read_metadata(tuned)
    assert model.class_names == ["cat", "dog"] and model.fc.out_features == 2
    assert meta["build_config"]["width"] == 0.25
    cfg = meta["pretrained_cfg"]
    assert cfg["input_size"] == [3, 32, 32] and cfg["mean"] == pytest.approx([0.49, 0.48, 0.45])
    before, after = source.state_dict(), model.state_dict()
    backbone = [k for k in before if not k.startswith("fc.")]
    assert backbone and all(torch.equal(before[k], after[k]) for k in backbone)  # weights and BN statistics
    assert not torch.equal(before["fc.bias"][:2], after["fc.bias"])
