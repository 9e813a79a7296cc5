"""The shipped training recipes: each loads, trains a few steps, and yields to the command line's flags;
``evaluate --split test`` and test-time flipping on a generated IDX folder."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from _training_data import bar_images
from PIL import Image
from test_data import write_idx_set

import inceptorch
from inceptorch.cli import main
from inceptorch.config import FIELDS, RECIPES_DIR, resolve
from inceptorch.ensemble import train_ensemble
from inceptorch.images import Preprocessing
from inceptorch.training import train
from inceptorch.training.evaluation import evaluate_batches
from inceptorch.weights import read_metadata

RECIPES = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
PHOTO_RECIPES = ["inception_v3-imagenet"]  # trained on a folder of photos in test_inception_v3_recipe.py
TEST_IMAGES = 12


def recipe_options(name: str) -> dict:
    return yaml.safe_load((RECIPES_DIR / f"{name}.yaml").read_text())


@pytest.fixture(scope="module")
def idx_root(tmp_path_factory):
    """MNIST and Fashion-MNIST folders in torchvision's layout, with a small train and t10k split."""
    root = tmp_path_factory.mktemp("idx")
    for folder in ("MNIST", "FashionMNIST"):
        for split, count, seed in (("train", 40, 0), ("test", TEST_IMAGES, 1)):
            images, labels = bar_images(count, seed=seed)
            write_idx_set(root / folder / "raw", split, images, labels.astype(np.uint8), compressed=True)
    images, labels = bar_images(30, seed=2, size=32)  # CIFAR-10 as image files: cifar10/train/<class>/
    for i, (image, label) in enumerate(zip(images, labels)):
        (root / "cifar10" / "train" / f"class{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.stack([image] * 3, -1)).save(root / "cifar10" / "train" / f"class{label}" / f"{i}.png")
    return root


def test_the_issue_recipes_are_shipped():
    assert {"fashion-mnist-fast", "fashion-mnist-best", "mnist-fast", "mnist-best", "fashion-mnist-d2l",
            "cifar10-fast"} <= set(RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_sets_only_known_options_and_they_apply(name):
    options = recipe_options(name)
    assert set(options) <= set(FIELDS)
    config = resolve({"recipe": name})
    for key, value in options.items():
        assert getattr(config, key) == (tuple(value) if isinstance(value, list) else value), key
    # the held-out sets the benchmarks and the issues' targets use
    assert config.val_split == (5_000 if name == "cifar10-fast" else 10_000)


def test_d2l_recipe_is_the_books():
    """The issue's description of the book's recipe: 96x96, batch 128, SGD at lr 0.1, 10 epochs."""
    config = resolve({"recipe": "fashion-mnist-d2l"})
    assert (config.image_size, config.batch_size, config.optimizer, config.lr, config.epochs) == \
        (96, 128, "sgd", 0.1, 10)
    assert config.momentum == 0 and config.weight_decay == 0 and config.schedule == "constant"
    assert config.augment == "" and not config.test_flip and config.aux_weight == 0


@pytest.mark.parametrize("name", ["mnist-fast", "mnist-best"])
def test_digits_are_never_flipped(name):
    config = resolve({"recipe": name})
    assert "flip" not in config.augment and not config.test_flip


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n.endswith("d2l") else n
                                  for n in RECIPES if n not in PHOTO_RECIPES])  # d2l: 6M parameters at 96x96
def test_recipe_trains_a_few_steps_and_reports_the_accuracy_of_the_weights_it_saved(name, idx_root, tmp_path):
    recipe = recipe_options(name)
    early = recipe.get("progressive_epochs", 0)  # one epoch at full size after them
    # float32 (no autocast), so that the saved weights scored again give the very answers the run counted
    options = {"recipe": name, "data_root": str(idx_root), "val_split": 8, "train_samples": 8,
               "batch_size": 8, "epochs": early + 1, "out_dir": str(tmp_path), "quiet": True, "amp": False}
    flip = bool(recipe.get("test_flip"))
    members = recipe.get("ensemble", 1)
    if members > 1:
        ensemble = train_ensemble(options)
        saved = [member.run_dir / "last.safetensors" for member in ensemble.members]
        assert len(ensemble.members) == members
        # the ensemble's reported accuracy is its saved members' mean probabilities scored from disk
        assert ensemble.val_acc == inceptorch.evaluate_ensemble(saved, test_flip=flip).accuracy
        result = ensemble.members[0]
    else:
        result = train(options)
    row = result.history[-1]
    assert len(result.history) == early + 1 and np.isfinite(row["train_loss"])
    # the last epoch's val_acc is that of last.safetensors, loaded from disk and scored on the 8 images
    # held out of the data its metadata names (evaluate re-opens them), as a count of right answers
    scored = inceptorch.evaluate(result.run_dir / "last.safetensors", test_flip=flip)
    assert scored.num_images == 8 and row["val_acc"] == scored.accuracy == sum(scored.confusion[i][i] for i in
                                                                               range(len(scored.classes))) / 8
    meta = read_metadata(result.run_dir / "last.safetensors")
    assert meta["model"] == recipe["model"]
    assert meta["pretrained_cfg"]["input_size"][-1] == recipe.get("image_size", 32 if recipe["data"] == "cifar10" else 28)
    saved = json.loads((result.run_dir / "config.json").read_text())
    assert saved["recipe"] == name and saved["lr"] == recipe["lr"]


@pytest.fixture(scope="module")
def cli_run(idx_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    code = main(["train", "--recipe", "mnist-fast", "--data-root", str(idx_root), "--val-split", "8",
                 "--train-samples", "16", "--batch-size", "8", "--epochs", "1", "--lr", "0.02",
                 "--model-args", "width=0.125", "--no-channels-last", "--no-amp", "--out-dir", str(out), "--name", "cli",
                 "--quiet"])
    assert code == 0
    return out / "cli"


def test_command_line_flags_override_the_recipe(cli_run):
    config = json.loads((cli_run / "config.json").read_text())
    recipe = recipe_options("mnist-fast")
    # given on the command line
    assert (config["lr"], config["epochs"], config["batch_size"]) == (0.02, 1, 8)
    assert config["model_args"] == {"width": 0.125} and config["channels_last"] is False
    assert config["amp"] is False  # --no-amp over the recipe's auto
    assert recipe["lr"] != 0.02 and recipe["channels_last"] is True and recipe["amp"] == "auto"
    # left to the recipe
    for key in ("model", "data", "schedule", "nesterov", "label_smoothing", "weight_decay"):
        assert config[key] == recipe[key], key


def reference_scores(weights, flip: bool) -> tuple[float, float]:
    """Accuracy and mean loss on the t10k images, computed here from the checkpoint's preprocessing."""
    model = inceptorch.load_model(weights).eval()
    prep = Preprocessing.of(model)
    images, labels = bar_images(TEST_IMAGES, seed=1)
    x = (torch.from_numpy(images).float().unsqueeze(1) / 255 - torch.tensor(prep.mean).view(1, -1, 1, 1)) \
        / torch.tensor(prep.std).view(1, -1, 1, 1)
    y = torch.from_numpy(labels).long()
    with torch.no_grad():
        logits = model(x)
        if flip:
            logits = (logits + model(x.flip(-1))) / 2
    return (logits.argmax(1) == y).float().mean().item(), F.cross_entropy(logits, y).item()


@pytest.mark.parametrize("flip", [False, True])
def test_evaluate_scores_the_official_test_split(cli_run, capsys, flip):
    weights = cli_run / "best.safetensors"
    code = main(["evaluate", "--weights", str(weights), "--split", "test", "--format", "json",
                 *(["--test-flip"] if flip else [])])
    assert code == 0
    scored = json.loads(capsys.readouterr().out)
    accuracy, loss = reference_scores(weights, flip)
    assert scored["num_images"] == TEST_IMAGES
    assert scored["accuracy"] == pytest.approx(accuracy) and scored["loss"] == pytest.approx(loss, rel=1e-4)


def test_evaluate_test_split_missing_is_a_one_line_error(cli_run, tmp_path, capsys):
    images, labels = bar_images(20, seed=0)
    write_idx_set(tmp_path / "MNIST" / "raw", "train", images, labels.astype(np.uint8), compressed=False)
    code = main(["evaluate", "--weights", str(cli_run / "best.safetensors"), "--split", "test",
                 "--data-root", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "t10k-images-idx3-ubyte" in err


def test_test_flip_averages_the_logits_of_each_image_and_its_mirror():
    model = inceptorch.create_model("googlenet_small", num_classes=4, in_chans=1, width=0.125).eval()
    x, y = torch.randn(6, 1, 28, 28), torch.tensor([0, 1, 2, 3, 0, 1])
    with torch.no_grad():
        averaged = (model(x) + model(x.flip(-1))) / 2
    scored = evaluate_batches(model, [(x[:4], y[:4]), (x[4:], y[4:])], 4, torch.device("cpu"), flip=True)
    assert scored["loss"] == pytest.approx(F.cross_entropy(averaged, y).item(), rel=1e-5)
    assert scored["acc"] == pytest.approx((averaged.argmax(1) == y).float().mean().item())


def test_mnist_best_is_mnist_fast_trained_twice_at_once():
    fast, best = recipe_options("mnist-fast"), recipe_options("mnist-best")
    assert best.pop("ensemble") == 2 and best == fast
