"""`inceptorch train` and `inceptorch evaluate` end to end, bad input, and training on real MNIST."""

import json

import numpy as np
import pytest
import torch
from _training_data import CLASSES, bar_images, write_bars_npz
from PIL import Image
from safetensors.torch import load_file

import inceptorch
from inceptorch.cli import main
from inceptorch.weights import read_metadata


@pytest.fixture(scope="module")
def bars(tmp_path_factory):
    return write_bars_npz(tmp_path_factory.mktemp("data") / "bars.npz", n_train=64, n_val=32)


@pytest.fixture(scope="module")
def trained(bars, tmp_path_factory):
    """One short run through the command line, shared by the tests that read its folder."""
    out = tmp_path_factory.mktemp("runs")
    code = main(["train", "--model", "mnist_inception", "--data", str(bars), "--epochs", "2", "--batch-size",
                 "16", "--out-dir", str(out), "--name", "cli", "--quiet", "--augment", "flip"])
    assert code == 0
    return out / "cli"


def test_run_folder_holds_everything(trained):
    names = {p.name for p in trained.iterdir()}
    assert {"config.json", "metrics.csv", "metrics.json", "curves.png", "confusion.png", "per_class.json",
            "best.safetensors", "last.safetensors", "last.state.pt", "train.log"} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    assert not [n for n in names if n.endswith(".tmp")]
    config = json.loads((trained / "config.json").read_text())
    assert config["model"] == "mnist_inception" and config["epochs"] == 2 and config["augment"] == "flip"
    metrics = json.loads((trained / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics] == [1, 2]
    header = (trained / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,train_loss,train_acc,val_loss")
    assert "epoch 2/2" in (trained / "train.log").read_text()
    per_class = json.loads((trained / "per_class.json").read_text())
    assert list(per_class["classes"]) == CLASSES and sum(map(sum, per_class["confusion"])) == 32
    state = torch.load(trained / "last.state.pt", weights_only=True)
    assert state["epoch"] == 2 and {"model", "optimizer", "schedule"} <= set(state)


def test_checkpoint_metadata_rebuilds_the_model(trained):
    meta = read_metadata(trained / "last.safetensors")
    assert meta["model"] == "mnist_inception" and meta["class_names"] == CLASSES and meta["epoch"] == 2
    cfg = meta["pretrained_cfg"]  # the training's preprocessing, as timm's keys
    assert cfg["input_size"] == [1, 28, 28] and len(cfg["mean"]) == 1 and len(cfg["std"]) == 1
    model = inceptorch.load_model(trained / "last.safetensors")
    saved = load_file(trained / "last.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


def test_evaluate_reproduces_the_validation_accuracy(trained, capsys):
    last_epoch = json.loads((trained / "metrics.json").read_text())[-1]
    result = inceptorch.evaluate(trained / "last.safetensors")
    assert result.num_images == 32
    assert result.accuracy == pytest.approx(last_epoch["val_acc"])
    assert main(["evaluate", "--weights", str(trained / "last.safetensors")]) == 0
    out = capsys.readouterr().out
    assert f"accuracy {last_epoch['val_acc']:.4f}" in out and "precision" in out and "confusion" in out


def test_evaluate_on_the_module_equals_evaluate_on_its_checkpoint_and_keeps_its_mode(trained, bars):
    weights = trained / "last.safetensors"
    from_file = inceptorch.evaluate(weights)
    model = inceptorch.load_model(weights).train()
    on_module = inceptorch.evaluate(model, str(bars))
    assert model.training
    assert on_module.num_images == from_file.num_images == 32
    assert on_module.confusion == from_file.confusion and on_module.loss == pytest.approx(from_file.loss)
    with pytest.raises(inceptorch.errors.ConfigError, match="evaluate needs its weights named once"):
        inceptorch.evaluate(None, str(bars))


def test_evaluate_through_another_backend_scores_the_same(trained, capsys):
    """The CLI builds the engine's model and hands it to evaluate; fp32 engines give the same predictions."""
    weights = trained / "last.safetensors"
    eager = inceptorch.evaluate(weights)
    model = inceptorch.optimize_for_inference(inceptorch.load_model(weights), backend="onnxruntime")
    assert inceptorch.evaluate(weights, runner=model).confusion == eager.confusion
    assert main(["evaluate", "--weights", str(weights), "--backend", "openvino", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["confusion"] == eager.confusion


def test_val_split_0_trains_on_every_image_and_evaluate_refuses_the_training_images(tmp_path, capsys):
    """The final model of a fixed recipe: no image held out, so nothing to score it on but other data."""
    images, labels = bar_images(40, seed=1)
    data = tmp_path / "train-only.npz"
    np.savez_compressed(data, train_images=images, train_labels=labels, class_names=np.array(CLASSES))
    out = tmp_path / "runs"
    code = main(["train", "--model", "mnist_inception", "--data", str(data), "--val-split", "0", "--epochs", "2",
                 "--batch-size", "8", "--out-dir", str(out), "--name", "all"])
    assert code == 0
    assert "trained 2 epochs on every image, none validated" in capsys.readouterr().out
    folder = out / "all"
    assert "40 training and no validation" in (folder / "train.log").read_text()
    metrics = json.loads((folder / "metrics.json").read_text())
    assert [row["val_acc"] for row in metrics] == [None, None]
    assert (folder / "last.safetensors").is_file() and (folder / "curves.png").is_file()
    assert not (folder / "best.safetensors").exists() and not (folder / "per_class.json").exists()
    assert read_metadata(folder / "last.safetensors")["data"]["val_split"] == 0
    code = main(["evaluate", "--weights", str(folder / "last.safetensors")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "trained on every image" in err and "--data" in err
    code = main(["evaluate", "--weights", str(folder / "last.safetensors"), "--val-split", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--val-split 0 holds no images" in err


def bad_folder(tmp_path, kind):
    root = tmp_path / "photos"
    if kind == "empty folder":
        root.mkdir()
    elif kind == "class without images":
        (root / "cat").mkdir(parents=True)
        (root / "dog").mkdir()
        Image.new("RGB", (40, 40)).save(root / "cat" / "a.png")
    elif kind == "unreadable image, strict":
        for name in ("cat", "dog"):
            (root / name).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (40, 40), (i * 80, 0, 0)).save(root / name / f"{i}.png")
        (root / "dog" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


@pytest.mark.parametrize("arguments, words", [
    (["--lr", "0"], "--lr"),
    (["--lr", "-0.1"], "--lr"),
    (["--batch-size", "0"], "--batch-size"),
    (["--data", "{tmp}/no-such-folder"], "no-such-folder"),
    (["--data", "{empty folder}"], "no class folders"),
    (["--data", "{class without images}"], "holds no images"),
    (["--data", "{unreadable image, strict}", "--strict", "--workers", "0", "--val-split", "2",
      "--batch-size", "5"], "3.png"),
    (["--data", "{bars}", "--model", "mnist_inception", "--image-size", "8"], "minimum"),
    (["--data", "{bars}", "--model", "no_such_net"], "no_such_net"),
    (["--data", "{bars}", "--model", "mnist_inception", "--aux-weight", "0.3"], "aux"),
    (["--resume", "{tmp}"], "config.json"),
    (["--data", "{bars}", "--model", "mnist_inception", "--epochs", "2", "--progressive-size", "8",
      "--progressive-epochs", "1"], "--progressive-size 8 must lie between mnist_inception's minimum input"),
    (["--data", "{bars}", "--progressive-size", "20"], "--progressive-size and --progressive-epochs go together"),
    (["--data", "{bars}", "--progressive-size", "20", "--progressive-epochs", "1"],
     "--progressive-epochs must leave the last epoch at full size"),
])
def test_bad_input_is_one_line_and_exit_status_2(tmp_path, bars, capsys, arguments, words):
    fill = {"tmp": str(tmp_path), "bars": str(bars)}
    arguments = [a.format(**fill) if "{tmp}" in a or "{bars}" in a else a for a in arguments]
    arguments = [str(bad_folder(tmp_path, a[1:-1])) if a.startswith("{") else a for a in arguments]
    code = main(["train", "--epochs", "1", "--quiet", "--out-dir", str(tmp_path / "runs"), *arguments])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("inceptorch: error:") and words in lines[0], err
    assert "Traceback" not in err


@pytest.mark.slow
@pytest.mark.realdata
def test_mnist_inception_learns_real_mnist(data_root, tmp_path):
    """A subset of the real MNIST training digits; the held-out digits are scored."""
    result = inceptorch.train(model="mnist_inception", data="mnist", data_root=str(data_root), val_split=2000,
                              train_samples=16000, epochs=2, warmup_epochs=0.3, out_dir=str(tmp_path),
                              device="cpu", quiet=True)
    assert result.metrics["val_acc"] > 0.97
