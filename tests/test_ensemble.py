"""Ensembles: members trained at once, a process and a seed each, scored on their mean probabilities."""

import json
import math
from contextlib import redirect_stdout
from io import StringIO

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from inceptorch import sources
from inceptorch.cli import main
from inceptorch.config import resolve
from inceptorch.ensemble import MeanProbabilities, evaluate_ensemble, train_ensemble
from inceptorch.errors import ConfigError, DataError
from inceptorch.images import Preprocessing
from inceptorch.models import load_model
from inceptorch.training import evaluate, train
from inceptorch.weights import METADATA_KEY


class Constant(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, x):
        return self.logits.expand(len(x), -1)


def test_the_mean_is_of_probabilities_not_of_logits():
    """One sure member against two that lean the other way: the mean logits (1.33, 3.33) say class 1,
    the mean probabilities class 0."""
    mean = MeanProbabilities([Constant([0.0, 10.0]), Constant([2.0, 0.0]), Constant([2.0, 0.0])])
    out = mean(torch.zeros(3, 1, 8, 8))
    leaning = 1 / (1 + math.exp(-2))  # softmax of (2, 0), class 0
    sure = 1 / (1 + math.exp(10))  # softmax of (0, 10), class 0
    class_0 = (sure + 2 * leaning) / 3
    assert torch.allclose(out.exp(), torch.tensor([[class_0, 1 - class_0]] * 3))
    assert out.argmax(1).tolist() == [0, 0, 0]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two members trained by the train command on the built-in sample, and what it printed."""
    out = tmp_path_factory.mktemp("ensemble")
    printed = StringIO()
    with redirect_stdout(printed):
        code = main(["train", "--ensemble", "2", "--epochs", "2", "--train-samples", "256", "--lr", "0.1",
                     "--batch-size", "32", "--out-dir", str(out), "--name", "pair", "--quiet"])
    assert code == 0
    return out / "pair", printed.getvalue()


def mean_probability_accuracy(checkpoints) -> float:
    """Accuracy of the averaged softmax on the built-in sample's held-out images, computed here."""
    prep = Preprocessing.of(load_model(checkpoints[0]))
    val = sources.open_source(resolve({"data": "builtin"})).splits["val"]
    x = (val.images.float() / 255 - torch.tensor(prep.mean).view(1, -1, 1, 1)) / torch.tensor(prep.std).view(1, -1, 1, 1)
    with torch.no_grad():
        probabilities = sum(load_model(c).eval()(x).softmax(1) for c in checkpoints) / len(checkpoints)
    return (probabilities.argmax(1) == val.labels).float().mean().item()


def test_members_differ_by_seed_alone(pair):
    folder, _ = pair
    configs = [json.loads((folder / f"member-{k}" / "config.json").read_text()) for k in (1, 2)]
    assert [c["seed"] for c in configs] == [0, 1]
    assert all(c["ensemble"] == 1 for c in configs)
    assert {k: v for k, v in configs[0].items() if k not in ("seed", "name")} == \
        {k: v for k, v in configs[1].items() if k not in ("seed", "name")}
    first, second = (load_file(folder / f"member-{k}" / "last.safetensors") for k in (1, 2))
    assert first.keys() == second.keys()
    assert any(not torch.equal(first[k], second[k]) for k in first if first[k].is_floating_point())


def test_the_ensemble_is_scored_on_the_mean_probabilities(pair):
    folder, printed = pair
    summary = json.loads((folder / "ensemble.json").read_text())
    checkpoints = [folder / f"member-{k}" / "last.safetensors" for k in (1, 2)]
    expected = mean_probability_accuracy(checkpoints)
    assert summary["val_acc"] == pytest.approx(expected)
    assert [m["seed"] for m in summary["members"]] == [0, 1]
    assert f"ensemble val acc {expected:.4f}" in printed and str(folder) in printed


def test_evaluate_scores_several_checkpoints_as_an_ensemble(pair, capsys):
    folder, _ = pair
    checkpoints = [str(folder / f"member-{k}" / "last.safetensors") for k in (1, 2)]
    assert main(["evaluate", "--weights", *checkpoints, "--format", "json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["accuracy"] == pytest.approx(mean_probability_accuracy(checkpoints))
    assert scored["num_images"] == len(sources.open_source(resolve({"data": "builtin"})).splits["val"])
    assert main(["evaluate", "--weights", *checkpoints, "--backend", "onnxruntime"]) == 2
    assert "leave out" in capsys.readouterr().err


def test_members_trained_otherwise_are_refused(pair, tmp_path):
    folder, _ = pair
    other = train({"epochs": 1, "train_samples": 16, "mean": (0.5,), "std": (0.5,), "out_dir": str(tmp_path),
                   "quiet": True})
    with pytest.raises(DataError, match="preprocessing"):
        evaluate_ensemble([folder / "member-1" / "last.safetensors", other.run_dir / "last.safetensors"])
    with pytest.raises(ConfigError, match="at least two"):
        evaluate_ensemble([other.run_dir / "last.safetensors"])


def test_members_of_other_classes_are_refused(pair, tmp_path):
    """The same data and preprocessing, but the classes named otherwise (another folder's labels)."""
    folder, _ = pair
    first = folder / "member-1" / "last.safetensors"
    with safe_open(str(first), framework="pt") as f:
        metadata = f.metadata()
    meta = json.loads(metadata[METADATA_KEY])
    renamed = tmp_path / "renamed.safetensors"
    save_file(load_file(first), renamed, {**metadata, METADATA_KEY: json.dumps(
        {**meta, "class_names": [f"class {name}" for name in meta["class_names"]]})})
    with pytest.raises(DataError, match="class_names"):
        evaluate_ensemble([first, renamed])


def test_members_and_single_checkpoints_are_scored_channels_last(pair):
    """evaluate runs the convolutions in oneDNN's fast layout, as training does, one net or several."""
    folder, _ = pair
    checkpoints = [folder / f"member-{k}" / "last.safetensors" for k in (1, 2)]
    layouts = []

    def record(module, inputs):
        if isinstance(module, nn.Conv2d):
            layouts.append(module.weight.is_contiguous(memory_format=torch.channels_last))

    hook = nn.modules.module.register_module_forward_pre_hook(record)
    try:
        single = evaluate(checkpoints[0])
        both = evaluate_ensemble(checkpoints)
    finally:
        hook.remove()
    assert layouts and all(layouts)
    assert single.num_images == both.num_images > 0


def test_ensemble_options_that_cannot_work(pair):
    folder, _ = pair
    with pytest.raises(ConfigError, match="--ensemble must be at least 1"):
        resolve({"ensemble": 0})
    with pytest.raises(ConfigError, match="train_ensemble"):
        train({"ensemble": 2})
    with pytest.raises(ConfigError, match="--ensemble 2 or more"):
        train_ensemble({"ensemble": 1})
    with pytest.raises(ConfigError, match="member-K"):
        train_ensemble({"ensemble": 2, "resume": str(folder / "member-1")})
