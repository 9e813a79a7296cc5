"""Prediction, feature extraction and image decoding on real files, including ones that cannot be read."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import inceptorch
from inceptorch.cli import main
from inceptorch.errors import DataError
from inceptorch.images import Preprocessing, read_image
from inceptorch.predict import extract_features, predict
from inceptorch.weights import save_weights

SIDE = 32
MEAN, STD = (0.2, 0.4, 0.6), (0.5, 0.25, 0.3)
IDENTITY = Preprocessing(crop=SIDE, resize=SIDE, mean=MEAN, std=STD)  # images already at SIDE: no resampling


def _pixels(seed: int, channels: int = 3) -> np.ndarray:
    shape = (SIDE, SIDE, channels) if channels > 1 else (SIDE, SIDE)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _expected_input(rgb: np.ndarray) -> torch.Tensor:
    """The model input computed by hand: scale to [0, 1], normalize per channel."""
    x = torch.from_numpy(rgb).permute(2, 0, 1).double() / 255
    return ((x - torch.tensor(MEAN, dtype=torch.float64).view(3, 1, 1))
            / torch.tensor(STD, dtype=torch.float64).view(3, 1, 1)).float()


@pytest.fixture
def model():
    net = inceptorch.create_model("mnist_inception", num_classes=4, in_chans=3).eval()
    net.class_names = ["ant", "bee", "cat", "dog"]
    return net


@pytest.fixture
def image_dir(tmp_path):
    """PNG, JPEG, WebP, grey, transparent and 16-bit files, a file that is no image and a truncated JPEG."""
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(_pixels(1)).save(folder / "rgb.png")
    Image.fromarray(_pixels(2)).save(folder / "photo.jpg", quality=95)
    Image.fromarray(_pixels(3)).save(folder / "lossless.webp", lossless=True)
    Image.fromarray(_pixels(4, channels=1)).save(folder / "grey.png")
    Image.fromarray(_pixels(5, channels=4)).save(folder / "alpha.png")
    Image.fromarray(_pixels(6, channels=1).astype(np.uint16) * 257).save(folder / "deep.png")
    (folder / "notes.jpg").write_bytes(b"this is not a JPEG")
    (folder / "cut.jpg").write_bytes((folder / "photo.jpg").read_bytes()[:400])
    return folder


def test_predict_matches_the_model_on_hand_preprocessed_pixels(model, image_dir):
    results = predict(model, [image_dir / "rgb.png", image_dir / "lossless.webp"], topk=4, preprocessing=IDENTITY)
    batch = torch.stack([_expected_input(_pixels(1)), _expected_input(_pixels(3))])
    with torch.no_grad():
        expected = model(batch).softmax(dim=1)
    for result, probabilities in zip(results, expected):
        assert result.error is None
        order = probabilities.argsort(descending=True)
        assert result.classes == [model.class_names[i] for i in order]
        assert result.probabilities == pytest.approx(probabilities[order].tolist(), abs=1e-5)


def test_grey_and_transparent_images_are_converted_to_the_models_channels(model, image_dir):
    grey = read_image(image_dir / "grey.png", channels=3)
    assert grey.mode == "RGB" and np.array_equal(np.asarray(grey), np.repeat(_pixels(4, 1)[..., None], 3, axis=2))
    rgba = _pixels(5, channels=4).astype(np.float64)
    on_white = rgba[..., :3] * rgba[..., 3:] / 255 + 255 * (1 - rgba[..., 3:] / 255)
    assert np.abs(np.asarray(read_image(image_dir / "alpha.png")).astype(np.float64) - on_white).max() <= 1
    deep = np.asarray(read_image(image_dir / "deep.png", channels=1))
    source = _pixels(6, channels=1).astype(np.float64)
    assert np.array_equal(deep, np.round((source - source.min()) * 255 / (source.max() - source.min())))
    one_channel = inceptorch.create_model("mnist_inception", num_classes=3, in_chans=1)
    gray_of_rgb = np.asarray(Image.fromarray(_pixels(1)).convert("L"))
    assert np.array_equal(np.asarray(read_image(image_dir / "rgb.png", channels=one_channel.in_chans)), gray_of_rgb)


def test_unreadable_files_are_named_and_the_rest_still_predicted(model, image_dir):
    results = {r.source.rsplit("/", 1)[-1]: r for r in predict(model, [image_dir], topk=2)}
    assert set(results) == {"rgb.png", "photo.jpg", "lossless.webp", "grey.png", "alpha.png", "deep.png",
                            "notes.jpg", "cut.jpg"}
    for bad in ("notes.jpg", "cut.jpg"):
        assert results[bad].classes == [] and bad in results[bad].error
    for name, result in results.items():
        if name not in ("notes.jpg", "cut.jpg"):
            assert result.error is None and len(result.classes) == 2
            assert 0 < result.probabilities[1] <= result.probabilities[0] <= 1
    with pytest.raises(DataError, match="notes.jpg"):
        read_image(image_dir / "notes.jpg")


def test_extract_features_are_what_the_classifier_reads(model, image_dir):
    files = [image_dir / "rgb.png", image_dir / "photo.jpg", image_dir / "grey.png"]
    features = extract_features(model, files, preprocessing=IDENTITY, batch_size=2)
    batch = torch.stack([IDENTITY.transform()(read_image(f)) for f in files])
    with torch.no_grad():
        expected = torch.flatten(nn.functional.adaptive_avg_pool2d(model.forward_features(batch), 4), 1)
    assert features.shape == (3, 88 * 4 * 4)  # InceptionA's 88 channels pooled to 4x4: the FC's input
    assert torch.allclose(features, expected, atol=1e-5)
    assert torch.allclose(extract_features(model, batch), expected, atol=1e-5)
    skipped = []
    features = extract_features(model, [image_dir / "notes.jpg", *files], preprocessing=IDENTITY, skipped=skipped)
    assert features.shape == (3, 88 * 4 * 4) and [s.source for s in skipped] == [str(image_dir / "notes.jpg")]


def test_predict_and_extract_features_leave_the_model_in_train_mode(model, image_dir):
    model.train()
    try:
        predict(model, [image_dir / "rgb.png"], preprocessing=IDENTITY)
        assert model.training
        extract_features(model, [image_dir / "rgb.png"], preprocessing=IDENTITY)
        assert model.training
    finally:
        model.eval()
    predict(model, [image_dir / "rgb.png"], preprocessing=IDENTITY)
    assert not model.training


def _checkpoint(model, tmp_path):
    path = tmp_path / "animals.safetensors"
    save_weights(model, path)
    return path


def test_predict_command_prints_json_and_warns_about_bad_files(model, image_dir, tmp_path, capsys):
    weights = _checkpoint(model, tmp_path)
    status = main(["predict", "--weights", str(weights), "--format", "json", "--topk", "3",
                   str(image_dir / "photo.jpg"), str(image_dir / "notes.jpg")])
    out, err = capsys.readouterr()
    assert status == 0
    rows = json.loads(out)
    assert [r["file"].rsplit("/", 1)[-1] for r in rows] == ["photo.jpg", "notes.jpg"]
    expected = predict(model, [image_dir / "photo.jpg"], topk=3)[0]  # the model's own pretrained_cfg
    assert [t["class"] for t in rows[0]["top"]] == expected.classes
    assert [t["probability"] for t in rows[0]["top"]] == pytest.approx(expected.probabilities, abs=1e-6)
    assert "notes.jpg" in rows[1]["error"]
    assert len([line for line in err.splitlines() if "notes.jpg" in line]) == 1


def test_predict_command_fails_with_status_2_when_no_image_can_be_read(model, image_dir, tmp_path, capsys):
    weights = _checkpoint(model, tmp_path)
    status = main(["predict", "--weights", str(weights), str(image_dir / "notes.jpg"), str(tmp_path / "gone.png")])
    err = capsys.readouterr().err
    assert status == 2 and "notes.jpg" in err and "gone.png" in err


def test_embed_command_writes_one_row_per_readable_file(model, image_dir, tmp_path, capsys):
    weights = _checkpoint(model, tmp_path)
    assert main(["embed", "--weights", str(weights), str(image_dir), "--out", str(tmp_path / "f.csv")]) == 0
    lines = (tmp_path / "f.csv").read_text().splitlines()
    assert lines[0].split(",")[:2] == ["file", "f0"] and len(lines[0].split(",")) == 1 + 88 * 4 * 4
    assert len(lines) == 1 + 6  # six readable images
    assert main(["embed", "--weights", str(weights), str(image_dir), "--out", str(tmp_path / "f.npy")]) == 0
    features = np.load(tmp_path / "f.npy")
    files = (tmp_path / "f.files.txt").read_text().splitlines()
    assert features.shape == (6, 88 * 4 * 4) and len(files) == 6
    csv_row = np.array([float(v) for v in lines[1].split(",")[1:]])
    assert lines[1].split(",")[0] == files[0] and np.allclose(csv_row, features[0], rtol=1e-5, atol=1e-6)


def test_real_photos_get_predictions_and_a_corrupt_copy_is_named(data_root, tmp_path):
    source = data_root / "cats_vs_dogs" / "train"
    folder = tmp_path / "photos"
    folder.mkdir()
    photos = sorted((source / "cat").glob("*.jpg"))[:2] + sorted((source / "dog").glob("*.jpg"))[:2]
    for photo in photos:
        shutil.copy(photo, folder / photo.name)
    (folder / "broken.jpg").write_bytes(photos[0].read_bytes()[: photos[0].stat().st_size // 3])
    net = inceptorch.create_model("googlenet_small", num_classes=2, in_chans=3).eval()
    net.class_names = ["cat", "dog"]
    results = {r.source.rsplit("/", 1)[-1]: r for r in predict(net, [folder], topk=2)}
    assert "broken.jpg" in results["broken.jpg"].error
    for photo in photos:
        result = results[photo.name]
        assert result.error is None and sorted(result.classes) == ["cat", "dog"]
        assert sum(result.probabilities) == pytest.approx(1, abs=1e-5)


def test_foreign_checkpoint_gets_its_classes_from_the_head_and_torchvision_preprocessing(tmp_path):
    import torchvision

    from inceptorch.predict import load_for_inference

    reference = torchvision.models.googlenet(weights=None, num_classes=7, aux_logits=False, init_weights=False)
    path = tmp_path / "googlenet-custom.pth"
    torch.save(reference.state_dict(), path)
    model, prep = load_for_inference(path, "googlenet")
    assert model.num_classes == 7 and not model.training
    assert torch.equal(model.fc.weight, reference.fc.weight)
    assert (prep.crop, prep.resize, prep.mean) == (224, 256, (0.5, 0.5, 0.5))  # transform_input's [-1, 1] pixels
