"""Options mean what they say: a value given equal to its default still overrides a recipe, a resumed
run's config and finetune's defaults, from Python and from the command line, and flags arrive typed."""

import json

import numpy as np
import pytest
import torch
from _training_data import write_bars_npz

import inceptorch
from inceptorch.cli import build_parser, main
from inceptorch.config import TrainConfig, resolve
from inceptorch.weights import save_weights

DEFAULT_LR = TrainConfig().lr


@pytest.fixture
def recipe(tmp_path):
    """A recipe whose learning rate and freeze differ from the defaults."""
    path = tmp_path / "recipe.yaml"
    path.write_text("lr: 0.2\nfreeze: none\nepochs: 3\n")
    assert DEFAULT_LR != 0.2 and TrainConfig().epochs != 3
    return path


def test_a_config_remembers_which_fields_were_given():
    assert TrainConfig(weights="a.safetensors", freeze="none").given == {"weights", "freeze"}
    assert TrainConfig().given == set()


def test_a_given_default_overrides_the_recipe_from_python(recipe):
    config = resolve(TrainConfig(recipe=str(recipe), lr=DEFAULT_LR))
    assert (config.lr, config.epochs) == (DEFAULT_LR, 3)  # the recipe supplies what was not given


def test_a_flag_given_the_default_value_overrides_the_recipe(recipe):
    args = build_parser().parse_args(["train", "--recipe", str(recipe), "--lr", str(DEFAULT_LR)])
    assert isinstance(args.lr, float)  # typed by argparse, not left a string until resolve
    options = {k: v for k, v in vars(args).items() if k not in ("run", "command")}
    config = resolve(options)
    assert (config.lr, config.epochs) == (DEFAULT_LR, 3)


def test_a_recipe_overrides_finetunes_defaults_and_a_given_value_overrides_both(recipe):
    assert resolve({"recipe": str(recipe)}, defaults={"freeze": "backbone"}).freeze == "none"
    assert resolve({"freeze": "backbone"}, defaults={"freeze": "none"}).freeze == "backbone"
    assert resolve({}, defaults={"freeze": "backbone"}).freeze == "backbone"


def test_flags_are_parsed_to_their_fields_types():
    args = build_parser().parse_args(["train", "--epochs", "3", "--mean", "0.5,0.4,0.3", "--val-every", "end",
                                      "--model-args", "width=0.5", "--val-split", "200", "--amp"])
    assert (args.epochs, args.mean, args.val_every) == (3, (0.5, 0.4, 0.3), "end")
    assert args.model_args == {"width": 0.5} and args.val_split == 200.0 and args.amp is True
    assert build_parser().parse_args(["train", "--val-every", "4"]).val_every == 4


@pytest.mark.parametrize("flags, words", [(["--lr", "fast"], "--lr: must be a number, got 'fast'"),
                                          (["--epochs", "2.5"], "--epochs: must be a whole number"),
                                          (["--val-every", "often"], "a whole number or end"),
                                          (["--model-args", "width"], "KEY=VALUE")])
def test_a_flag_of_the_wrong_type_is_one_line_and_exit_status_2(flags, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *flags])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and words in err, err


@pytest.fixture
def pets(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (32, 28, 28, 3), dtype=np.uint8)
    labels = np.arange(32) % 2
    images[labels == 1, :, :14] //= 3
    path = tmp_path / "pets.npz"
    np.savez(path, train_images=images, train_labels=labels, class_names=np.array(["cat", "dog"]))
    return path


@pytest.mark.parametrize("freeze", ["none", None])
def test_finetune_given_freeze_none_trains_the_backbone(tmp_path, pets, freeze):
    """freeze="none" is TrainConfig's default, yet given it means what it says; left out, finetune's own
    default (backbone) holds."""
    torch.manual_seed(0)
    source = inceptorch.create_model("googlenet_small", num_classes=10)
    weights = tmp_path / "source.safetensors"
    save_weights(source, weights)
    chosen = {"freeze": freeze} if freeze else {}
    result = inceptorch.finetune(TrainConfig(weights=str(weights), data=str(pets), epochs=1, batch_size=8,
                                             val_split=8, out_dir=str(tmp_path), quiet=True, **chosen))
    tuned = inceptorch.load_model(result.run_dir / "last.safetensors").state_dict()
    backbone = [k for k, v in source.state_dict().items()
                if not k.startswith(("fc.", "aux")) and v.is_floating_point()]
    changed = [k for k in backbone if not torch.equal(source.state_dict()[k], tuned[k])]
    assert json.loads((result.run_dir / "config.json").read_text())["freeze"] == (freeze or "backbone")
    assert bool(changed) == (freeze == "none")


def test_a_resumed_run_can_be_set_back_to_the_default_learning_rate(tmp_path):
    bars = write_bars_npz(tmp_path / "bars.npz", n_train=32, n_val=16)
    first = inceptorch.train(TrainConfig(model="mnist_inception", data=str(bars), epochs=1, batch_size=16,
                                         lr=0.2, schedule="constant", warmup_epochs=0, out_dir=str(tmp_path),
                                         quiet=True))
    resumed = inceptorch.train(TrainConfig(resume=str(first.run_dir), epochs=2, lr=DEFAULT_LR, quiet=True))
    assert [row["lr"] for row in resumed.history] == [0.2, DEFAULT_LR]  # epoch 2 ran at the lr given
    assert json.loads((first.run_dir / "config.json").read_text())["lr"] == DEFAULT_LR


@pytest.mark.parametrize(("words", "pretrained", "images"), [
    (["--pretrained", "cat.jpg", "dog.jpg"], True, ["cat.jpg", "dog.jpg"]),  # an image: the default tag
    (["--pretrained", "photos/cat", "dog.png"], True, ["photos/cat", "dog.png"]),  # a path with a slash
    (["--pretrained", "googlenet.tv_in1k", "cat.jpg"], "googlenet.tv_in1k", ["cat.jpg"]),  # a tag
    (["cat.jpg", "--pretrained"], True, ["cat.jpg"]),
    (["--weights", "w.safetensors", "cat.jpg"], False, ["cat.jpg"]),
])
def test_pretrained_takes_a_tag_or_leaves_the_first_image_to_the_images(words, pretrained, images):
    for command in ("predict", "embed"):
        out = ["--out", "f.npy"] if command == "embed" else []
        args = build_parser().parse_args([command, "--model", "googlenet", *words, *out])
        assert (args.pretrained, args.images) == (pretrained, images)


def test_predict_without_images_is_one_line_and_exit_status_2(capsys):
    assert main(["predict", "--model", "googlenet", "--pretrained"]) == 2
    assert capsys.readouterr().err == "inceptorch: error: name the images to run on: image files, or folders of them\n"
