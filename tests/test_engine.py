"""The training loop on generated tensors: learning, losses, schedules, non-finite losses, exact resume."""

import math
from collections import OrderedDict

import pytest
import torch
from _training_data import CLASSES, bar_images, write_bars_npz
from safetensors.torch import load_file
from torch import nn

import inceptorch
from inceptorch import data, runs, sources
from inceptorch.config import TrainConfig, resolve
from inceptorch.errors import ConfigError, TrainingError
from inceptorch.models.base import ImageClassifier
from inceptorch.models.layers import ConvBNAct
from inceptorch.training import evaluation, loop, steps


class TinyNet(ImageClassifier):
    """One conv block, a main head and one auxiliary head on the same features (pooled to a few cells,
    so that the heads see where the bars are)."""

    default_input_size = 16
    aux_heads = ("aux",)
    head_layers = ("fc", "aux.fc")

    def __init__(self, num_classes=4, in_chans=1, aux_logits=True):
        super().__init__(num_classes, in_chans)
        self.conv = ConvBNAct(in_chans, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, num_classes)
        self.aux = nn.Sequential(OrderedDict(pool=nn.AdaptiveAvgPool2d(2), flatten=nn.Flatten(),
                                             fc=nn.Linear(8 * 2 * 2, num_classes))) if aux_logits else None

    def forward_features(self, x):
        return self.conv(x)

    def forward_head(self, features):
        return self.fc(nn.functional.adaptive_avg_pool2d(features, 4).flatten(1))

    def forward_with_aux(self, x):
        features = self.forward_features(x)
        aux = [self.aux(features)] if self.aux is not None and self.training else []
        return self.forward_head(features), aux


def bars_source(n_train=128, n_val=64, size=16) -> sources.Source:
    splits = {}
    for name, n, seed in (("train", n_train, 1), ("val", n_val, 2)):
        images, labels = bar_images(n, seed, size)
        splits[name] = sources.Split(torch.from_numpy(labels), torch.from_numpy(images).unsqueeze(1))
    return sources.Source("bars", CLASSES, 1, splits, size)


def loaders_for(model, config, source=None):
    source = source or bars_source()
    prep = data.preprocessing(source, model, config)
    return data.loaders(source, prep, config)


def test_fit_learns_a_generated_task():
    config = resolve({"epochs": 3, "batch_size": 16, "lr": 0.1, "aux_weight": 0.0, "quiet": True})
    model = TinyNet(aux_logits=False)
    history = loop.fit(model, loaders_for(model, config), config)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history[-1]["val_acc"] >= 0.9
    assert history[-1]["train_loss"] < history[0]["train_loss"]


@pytest.mark.parametrize("val_every, validated", [
    (2, [False, True, False, True, True]), ("end", [False, False, False, False, True])])
def test_val_every_scores_only_every_nth_and_the_last_epoch(tmp_path, val_every, validated):
    config = resolve({"epochs": 5, "val_every": val_every, "batch_size": 16, "lr": 0.1, "aux_weight": 0.0,
                      "quiet": True, "out_dir": str(tmp_path), "name": "sparse"})
    model = TinyNet(aux_logits=False)
    run = runs.Run(config)
    history = loop.fit(model, loaders_for(model, config), config, run)
    run.close()
    assert [row["val_acc"] is not None for row in history] == validated
    assert history[-1]["val_acc"] >= 0.9 and history[0]["val_loss"] is None
    folder = tmp_path / "sparse"
    csv_rows = (folder / "metrics.csv").read_text().splitlines()
    val_column = csv_rows[0].split(",").index("val_acc")
    assert [line.split(",")[val_column] == "" for line in csv_rows[1:]] == [not v for v in validated]
    scored = [row for row in history if row["val_acc"] is not None]
    best = max(scored, key=lambda row: row["val_acc"])
    assert inceptorch.weights.read_metadata(folder / "best.safetensors")["epoch"] == best["epoch"]


def test_progressive_resizing_trains_the_first_epochs_on_smaller_inputs():
    """--progressive-size 8 --progressive-epochs 2 of 3: the model's training inputs are 8x8 in epochs 1
    and 2 and 16x16 in epoch 3; every validation input is 16x16, the full size."""
    config = resolve({"epochs": 3, "batch_size": 16, "lr": 0.1, "aux_weight": 0.0, "quiet": True,
                      "progressive_size": 8, "progressive_epochs": 2, "val_every": 1})
    model = TinyNet(aux_logits=False)
    loaders, seen = loaders_for(model, config), []  # (the input size checks run the model too)
    model.conv.register_forward_pre_hook(lambda _, inputs: seen.append((model.training, inputs[0].shape[-2:])))
    history = loop.fit(model, loaders, config)
    training = [size for is_training, size in seen if is_training]
    assert training == [(8, 8)] * 16 + [(16, 16)] * 8  # 128 images in batches of 16: 8 steps an epoch
    assert {size for is_training, size in seen if not is_training} == {(16, 16)}
    assert history[-1]["val_acc"] >= 0.9


def reference_cross_entropy(logits, target, smoothing=0.0):
    """Written from the definition: the smoothed target puts 1 - e + e/K on the label, e/K elsewhere."""
    log_p = logits.log_softmax(1)
    k = logits.shape[1]
    weights = torch.full_like(log_p, smoothing / k)
    weights[torch.arange(len(target)), target] += 1 - smoothing
    return -(weights * log_p).sum(1).mean()


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_training_loss_is_main_plus_weighted_aux(smoothing):
    logits, aux1, aux2 = torch.randn(3, 8, 5).unbind(0)
    target = torch.randint(0, 5, (8,))
    loss = steps.training_loss(logits, [aux1, aux2], target, 0.3, smoothing)
    expected = sum(w * reference_cross_entropy(z, target, smoothing)
                   for w, z in ((1.0, logits), (0.3, aux1), (0.3, aux2)))
    assert torch.allclose(loss, expected, atol=1e-6)


@pytest.mark.parametrize("aux_weight", [0.0, 0.5])
def test_aux_head_trains_only_when_weighted(aux_weight):
    config = resolve({"epochs": 1, "batch_size": 16, "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0,
                      "aux_weight": aux_weight, "quiet": True})
    model = TinyNet(aux_logits=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loop.fit(model, loaders_for(model, config), config)
    after = model.state_dict()
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert torch.equal(before["aux.fc.weight"], after["aux.fc.weight"]) == (aux_weight == 0)


class NaNAfter(TinyNet):
    """Gives a NaN loss from its ``bad_step``-th training forward on."""

    def __init__(self, bad_step):
        super().__init__(aux_logits=False)
        self.bad_step, self.calls = bad_step, 0

    def forward_with_aux(self, x):
        self.calls += 1
        logits, aux = super().forward_with_aux(x)
        return (logits * math.nan if self.calls >= self.bad_step else logits), aux


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_checkpoint(tmp_path):
    config = resolve({"epochs": 2, "batch_size": 16, "aux_weight": 0.0, "quiet": True,
                      "out_dir": str(tmp_path), "name": "nan"})
    source = bars_source()
    steps_per_epoch = len(source.splits["train"]) // 16
    model = NaNAfter(bad_step=steps_per_epoch + 2)
    run = runs.Run(config)
    with pytest.raises(TrainingError) as error:
        loop.fit(model, loaders_for(model, config, source), config, run)
    run.close()
    message = str(error.value)
    assert f"step {steps_per_epoch + 2} " in message and "--lr" in message and "\n" not in message
    kept = inceptorch.weights.read_metadata(tmp_path / "nan" / "last.safetensors")
    assert kept["epoch"] == 1
    assert runs.load_state(tmp_path / "nan")["epoch"] == 1


def test_schedules_follow_their_definitions():
    def factors(**options):
        config = TrainConfig(epochs=10, **options)
        return [steps.lr_factor(step, 100, config, 10) for step in range(100)]

    cosine = factors(schedule="cosine", warmup_epochs=0)
    assert cosine[0] == 1 and cosine[50] == pytest.approx(0.5) and cosine[-1] < 0.001
    warm = factors(schedule="cosine", warmup_epochs=2)
    assert warm[0] == pytest.approx(0.1) and warm[10] == pytest.approx(0.55) and warm[20] == pytest.approx(1)
    assert factors(schedule="cosine", warmup_epochs=30)[50] == pytest.approx(1)  # at most half the run
    step = factors(schedule="step", step_epochs=3, step_gamma=0.5, warmup_epochs=0)
    assert step[29] == 1 and step[30] == 0.5 and step[60] == 0.25
    onecycle = factors(schedule="onecycle", warmup_epochs=2.5)
    assert onecycle[0] == pytest.approx(1 / 25) and max(onecycle) == pytest.approx(1)
    assert onecycle.index(max(onecycle)) == 25 and onecycle[-1] < 0.01


@pytest.mark.parametrize("name, kind", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                        ("adamw", torch.optim.AdamW), ("rmsprop", torch.optim.RMSprop)])
def test_optimizers_decay_weights_but_not_biases(name, kind):
    model = TinyNet(aux_logits=False)
    optimizer = steps.make_optimizer(model, TrainConfig(optimizer=name, weight_decay=0.01, lr=0.2))
    assert isinstance(optimizer, kind)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.01 for p in g["params"]}
    assert id(model.fc.weight) in decayed and id(model.fc.bias) not in decayed
    assert all(g["lr"] == 0.2 for g in optimizer.param_groups)
    if name == "rmsprop":  # Inception v3's settings
        assert optimizer.defaults["alpha"] == 0.9 and optimizer.defaults["eps"] == 1.0


def test_classification_report_from_a_confusion_matrix():
    confusion = torch.tensor([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    report = evaluation.classification_report(confusion, ["a", "b", "c"])
    assert report["accuracy"] == pytest.approx(8 / 11)
    assert report["classes"]["a"]["precision"] == pytest.approx(5 / 7)
    assert report["classes"]["a"]["recall"] == pytest.approx(5 / 6)
    assert report["classes"]["b"]["precision"] == pytest.approx(3 / 4)
    assert report["classes"]["c"] == {"precision": 0, "recall": 0, "f1": 0, "support": 0}


@pytest.mark.slow
def test_resumed_run_ends_exactly_where_an_uninterrupted_one_does(tmp_path, monkeypatch):
    bars = write_bars_npz(tmp_path / "bars.npz", n_train=96, n_val=32)
    options = {"model": "mnist_inception", "data": str(bars), "epochs": 2, "batch_size": 16, "lr": 0.05,
               "augment": "flip,crop", "out_dir": str(tmp_path), "quiet": True, "seed": 3}
    whole = inceptorch.train(options, name="whole")

    real_loss, calls = loop.training_loss, []

    def crash_mid_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 96 // 16 + 3:
            raise KeyboardInterrupt  # as if the process were stopped after 3 steps of epoch 2
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(loop, "training_loss", crash_mid_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        inceptorch.train(options, name="split")
    monkeypatch.setattr(loop, "training_loss", real_loss)
    assert runs.load_state(tmp_path / "split")["epoch"] == 1
    resumed = inceptorch.train({"resume": str(tmp_path / "split"), "quiet": True})

    assert resumed.run_dir == tmp_path / "split"
    expected = load_file(whole.run_dir / "last.safetensors")
    got = load_file(resumed.run_dir / "last.safetensors")
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    def timeless(history):
        return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in history]

    assert timeless(resumed.history) == timeless(whole.history)


def test_recipe_file_is_overridden_by_explicit_options(tmp_path):
    recipe = tmp_path / "quick.yaml"
    recipe.write_text("model: googlenet_small\nepochs: 7\nlr: 0.2\naugment: [flip, crop]\n"
                      "label-smoothing: 0.1\n")
    config = resolve({"recipe": str(recipe), "lr": "0.05"})
    assert (config.model, config.epochs, config.lr, config.augment, config.label_smoothing) == (
        "googlenet_small", 7, 0.05, "flip,crop", 0.1)
    assert resolve(TrainConfig(recipe=str(recipe), epochs=3)).epochs == 3


def test_a_recipe_validated_at_the_end_stays_so_when_epochs_change(tmp_path):
    recipe = tmp_path / "end.yaml"
    recipe.write_text("epochs: 8\nval_every: end\n")
    for epochs in ("8", "16"):  # as the command line gives them
        config = resolve({"recipe": str(recipe), "epochs": epochs})
        assert [e for e in range(1, config.epochs + 1) if config.validates_after(e)] == [config.epochs]
    every_eighth = resolve({"epochs": 16, "val_every": "8"})
    assert [e for e in range(1, 17) if every_eighth.validates_after(e)] == [8, 16]


@pytest.mark.parametrize("options, words", [
    ({"lr": 0}, "--lr"), ({"lr": -1}, "--lr"), ({"batch_size": 0}, "--batch-size"),
    ({"optimizer": "lion"}, "optimizer"), ({"augment": "flip,rotate"}, "rotate"),
    ({"batchsize": 32}, "did you mean 'batch_size'"), ({"recipe": "no-such-recipe"}, "no-such-recipe"),
    ({"epochs": "ten"}, "epochs"), ({"model_args": "width"}, "KEY=VALUE"), ({"val_every": 0}, "--val-every"),
    ({"val_every": "often"}, "number or end"),
    ({"val_split": -0.1}, "--val-split"),
    ({"progressive_size": 20}, "go together"), ({"progressive_epochs": 2}, "go together"),
    ({"progressive_size": 20, "progressive_epochs": 4, "epochs": 4}, "between 0 and --epochs - 1 \\(3\\)"),
    ({"progressive_size": 0, "progressive_epochs": 1}, "--progressive-size must be at least 1"),
])
def test_bad_options_are_config_errors(options, words):
    with pytest.raises(ConfigError, match=words):
        resolve(options)


def test_model_args_and_normalization_parse_from_text():
    config = resolve({"model_args": "width=0.5,dropout=0.2,name=x", "mean": "0.5", "std": "0.2,0.3,0.4"})
    assert config.model_args == {"width": 0.5, "dropout": 0.2, "name": "x"}
    assert config.mean == (0.5,) and config.std == (0.2, 0.3, 0.4)


def test_label_smoothing_reaches_the_loss():
    """The configured smoothing is what the loop optimizes: one SGD step from the same start moves the
    head exactly as the gradient of the reference smoothed loss says."""
    torch.manual_seed(0)
    config = resolve({"epochs": 1, "batch_size": 128, "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0,
                      "label_smoothing": 0.2, "schedule": "constant", "aux_weight": 0.0, "quiet": True})
    model = TinyNet(aux_logits=False)
    source = bars_source(n_train=128)
    batches = loaders_for(model, config, source)
    x, y = next(iter(batches["train"]))
    reference = TinyNet(aux_logits=False)
    reference.load_state_dict(model.state_dict())
    reference.train()
    logits = reference(x)
    smoothed_grad, = torch.autograd.grad(reference_cross_entropy(logits, y, 0.2), reference.fc.weight,
                                         retain_graph=True)
    plain_grad, = torch.autograd.grad(reference_cross_entropy(logits, y, 0.0), reference.fc.weight)
    loop.fit(model, batches, config)
    assert torch.allclose(model.fc.weight, reference.fc.weight - 0.1 * smoothed_grad, atol=1e-6)
    assert not torch.allclose(model.fc.weight, reference.fc.weight - 0.1 * plain_grad, atol=1e-6)
