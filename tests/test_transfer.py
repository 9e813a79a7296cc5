"""Transfer learning: freezing, head replacement, aux-weighted fine-tuning, preprocessing by origin."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import inceptorch
from inceptorch import data as datasets
from inceptorch import sources
from inceptorch.cli import main
from inceptorch.config import resolve
from inceptorch.errors import ConfigError, InputSizeError
from inceptorch.images import Preprocessing
from inceptorch.models import cfg_for_origin
from inceptorch.models.base import ImageClassifier
from inceptorch.models.layers import ConvBNAct
from inceptorch.training.loop import fit
from inceptorch.training.steps import make_optimizer
from inceptorch.transfer import block_names, freeze, start_from_checkpoint, unfreeze
from inceptorch.weights import save_weights

SIDE = 12


class TinyAux(nn.Module):
    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.conv = ConvBNAct(in_channels, 8, 1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3)))


class TinyNet(ImageClassifier):
    """Stem, two blocks with batch norm, an aux head on block1 and a classifier: an Inception in miniature."""

    default_input_size = SIDE
    head_layers = ("fc", "aux.fc")
    aux_heads = ("aux",)

    def __init__(self, num_classes=3, in_chans=3, aux_logits=True):
        super().__init__(num_classes, in_chans)
        self.stem = ConvBNAct(in_chans, 8, 3, padding=1)
        self.block1 = ConvBNAct(8, 8, 3, padding=1)
        self.aux = TinyAux(8, num_classes) if aux_logits else None
        self.block2 = ConvBNAct(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16, num_classes)

    def forward_features(self, x):
        return self.block2(self.block1(self.stem(x)))

    def forward_head(self, features):
        return self.fc(features.mean(dim=(2, 3)))

    def forward_with_aux(self, x):
        middle = self.block1(self.stem(x))
        return self.forward_head(self.block2(middle)), [self.aux(middle)] if self.aux is not None else []


def _tensor_loaders(config, n_train=24, n_val=8, classes=3):
    """Loaders of the training engine over random uint8 images held in memory."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n_train + n_val, 3, SIDE, SIDE), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, classes, (n_train + n_val,), generator=generator)
    splits = {"train": sources.Split(labels[:n_train], images[:n_train]),
              "val": sources.Split(labels[n_train:], images[n_train:])}
    source = sources.Source("random", [str(c) for c in range(classes)], 3, splits, SIDE)
    prep = Preprocessing(SIDE, SIDE, (0.5,) * 3, (0.25,) * 3)
    return datasets.loaders(source, prep, config), images[:n_train], labels[:n_train], prep


def _config(**options):
    return resolve({"model": "lenet", "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.01,
                    "batch_size": 8, "epochs": 2, "aux_weight": 0.4, "quiet": True, **options})


def _frozen_names(model):
    return {name for name, p in model.named_parameters() if not p.requires_grad}


# --- freezing -------------------------------------------------------------------------------------

def test_backbone_stays_bit_identical_while_the_heads_learn():
    model = TinyNet()
    before = copy.deepcopy(model.state_dict())
    config = _config(freeze="backbone")
    fit(model, _tensor_loaders(config)[0], config)
    after = model.state_dict()
    backbone = [k for k in before if k.startswith(("stem.", "block1.", "block2."))]
    assert backbone and all(torch.equal(before[k], after[k]) for k in backbone)  # weights and BN statistics
    assert after["block1.bn.num_batches_tracked"] == 0
    for key in ("fc.weight", "aux.fc.weight", "aux.conv.conv.weight", "aux.conv.bn.running_mean"):
        assert not torch.equal(before[key], after[key]), key  # heads, aux head and its BN statistics learn


def test_frozen_batch_norm_stays_in_eval_mode_through_train_and_copies():
    model = freeze(TinyNet(), "backbone")
    model.train()
    assert not model.stem.bn.training and not model.block2.bn.training
    assert model.aux.conv.bn.training and model.fc.training
    assert not copy.deepcopy(model).train().block1.bn.training
    unfreeze(model).train()
    assert model.block1.bn.training and not _frozen_names(model)


def test_freeze_until_a_block_freezes_it_and_everything_before():
    model = freeze(TinyNet(), "block1")
    assert _frozen_names(model) == {"stem.conv.weight", "stem.bn.weight", "stem.bn.bias",
                                    "block1.conv.weight", "block1.bn.weight", "block1.bn.bias"}
    model.train()
    assert not model.block1.bn.training and model.block2.bn.training and model.aux.conv.bn.training
    with pytest.raises(ConfigError, match="stem, block1, block2"):
        freeze(model, "block3")


def test_real_model_blocks_can_be_frozen_by_name():
    with torch.device("meta"):
        model = inceptorch.create_model("inception_v3", num_classes=2, aux_logits=True)
    assert {"Mixed_5b", "Mixed_6e", "Mixed_7c"} <= set(block_names(model)) and "fc" not in block_names(model)
    freeze(model, "Mixed_6e")
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"AuxLogits", "Mixed_7a", "Mixed_7b", "Mixed_7c", "fc"}


def test_optimizer_gives_parameters_freed_later_the_lower_learning_rate():
    model = freeze(TinyNet(), "backbone")
    config = _config(freeze="backbone", unfreeze_after=1, lr=0.1, lr_unfrozen=0.003)
    rates = {id(p): group["lr"] for group in make_optimizer(model, config).param_groups for p in group["params"]}
    assert rates[id(model.fc.weight)] == 0.1 and rates[id(model.stem.conv.weight)] == 0.003
    assert len(rates) == len(list(model.parameters()))


def test_second_phase_unfreezes_after_the_given_epochs():
    model = TinyNet()
    initial = model.stem.conv.weight.detach().clone()
    seen = []  # per training forward: was the stem trainable, was it unchanged, was its BN in train mode

    def record(module, args):
        if module.training:
            seen.append((module.stem.conv.weight.requires_grad, torch.equal(module.stem.conv.weight, initial),
                         module.stem.bn.training))

    model.register_forward_pre_hook(record)
    config = _config(freeze="backbone", unfreeze_after=1, lr_unfrozen=0.01)
    fit(model, _tensor_loaders(config)[0], config)
    steps = len(seen) // 2
    assert seen[:steps] == [(False, True, False)] * steps  # epoch 1: frozen, untouched, BN in eval
    assert all(grad and bn for grad, _, bn in seen[steps:]) and not torch.equal(model.stem.conv.weight, initial)


# --- heads and the aux-weighted loss -------------------------------------------------------------

@pytest.mark.parametrize("name, heads", [("inception_v3", ("fc", "AuxLogits.fc")),
                                         ("googlenet", ("fc", "aux1.fc2", "aux2.fc2"))])
def test_reset_classifier_replaces_main_and_aux_heads(name, heads):
    with torch.device("meta"):
        model = inceptorch.create_model(name, num_classes=1000, aux_logits=True)
    widths = {h: model.get_submodule(h).in_features for h in heads}
    model.reset_classifier(5)
    for head in heads:
        layer = model.get_submodule(head)
        assert (layer.in_features, layer.out_features) == (widths[head], 5)
    assert model.num_classes == 5


@pytest.mark.parametrize("aux_weight", [0.0, 0.4])
def test_fine_tuning_loss_is_main_plus_weighted_aux(aux_weight):
    """One full batch at a negligible learning rate: the reported loss is that of the starting model."""
    model = TinyNet(aux_logits=True)
    config = _config(freeze="backbone", aux_weight=aux_weight, lr=1e-12, batch_size=24, epochs=1)
    loaders, images, labels, prep = _tensor_loaders(config)
    reference = freeze(copy.deepcopy(model), "backbone").train()
    with torch.no_grad():
        main_logits, (aux_logits,) = reference.forward_with_aux(datasets.shape_batch(images, prep))
        expected = F.cross_entropy(main_logits, labels) + aux_weight * F.cross_entropy(aux_logits, labels)
    history = fit(model, loaders, config)
    assert history[0]["train_loss"] == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.slow
def test_aux_head_of_inception_v3_needs_299_in_training():
    with torch.device("meta"):
        model = inceptorch.create_model("inception_v3", num_classes=2, aux_logits=True)
    source = sources.Source("photos", ["cat", "dog"], 3, {"train": sources.Split(torch.zeros(1))})
    config = resolve({"model": "inception_v3", "image_size": 224, "aux_weight": 0.4, "mean": "0.5", "std": "0.5"})
    with pytest.raises(InputSizeError, match=r"224 .*299x299 when training its auxiliary head.*--aux-weight 0"):
        datasets.preprocessing(source, model, config)
    assert datasets.preprocessing(source, model, resolve({**config.to_dict(), "aux_weight": 0})).crop == 224


# --- preprocessing by checkpoint origin ------------------------------------------------------------

def test_torchvision_origin_matches_torchvision_weights_transforms():
    from torchvision.models import GoogLeNet_Weights, Inception_V3_Weights

    for name, weights in (("inception_v3", Inception_V3_Weights.IMAGENET1K_V1),
                          ("googlenet", GoogLeNet_Weights.IMAGENET1K_V1)):
        reference = weights.transforms()
        with torch.device("meta"):
            model = inceptorch.create_model(name, transform_input=True)  # torchvision's convention for them
        prep = Preprocessing.of(cfg_for_origin(model, "torchvision"))
        assert (prep.crop, prep.resize) == (reference.crop_size[0], reference.resize_size[0])
        assert prep.mean == pytest.approx(reference.mean) and prep.std == pytest.approx(reference.std)


@pytest.mark.slow
def test_both_torchvision_conventions_feed_the_network_the_same_pixels(tmp_path):
    """transform_input with ImageNet statistics, or none with 0.5: the same logits from the same weights,
    each fed as its pretrained_cfg says."""
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 260, 3), dtype=np.uint8)).save(photo)
    plain = inceptorch.create_model("googlenet", num_classes=4).eval()
    converting = inceptorch.create_model("googlenet", num_classes=4, transform_input=True).eval()
    converting.load_state_dict(plain.state_dict())
    assert plain.pretrained_cfg["mean"] == (0.5, 0.5, 0.5) and converting.pretrained_cfg["mean"] == (0.485, 0.456, 0.406)
    results = [inceptorch.predict(m, [photo], topk=4)[0] for m in (plain, converting)]
    assert results[0].classes == results[1].classes
    assert results[0].probabilities == pytest.approx(results[1].probabilities, abs=1e-5)


def test_timm_and_default_origins():
    import timm

    reference = timm.models.get_pretrained_cfg("inception_v3.tf_in1k")
    with torch.device("meta"):
        model = inceptorch.create_model("inception_v3")
    prep = Preprocessing.of(cfg_for_origin(model, "timm"))
    assert prep.mean == reference.mean and prep.std == reference.std and prep.interpolation == reference.interpolation
    assert (prep.crop, prep.resize) == (reference.input_size[-1], int(reference.input_size[-1] / reference.crop_pct))
    grey = inceptorch.create_model("googlenet_small", in_chans=1)
    assert Preprocessing.of(cfg_for_origin(grey, "imagenet"), in_chans=1).mean == pytest.approx(
        (np.mean([0.485, 0.456, 0.406]),))


# --- fine-tuning end to end ---------------------------------------------------------------------------

@pytest.fixture
def two_class_npz(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 28, 28, 3), dtype=np.uint8)
    labels = np.arange(40) % 2
    images[labels == 1, :, :14] //= 3  # a darker top half: something learnable
    path = tmp_path / "pets.npz"
    np.savez(path, train_images=images, train_labels=labels, class_names=np.array(["cat", "dog"]))
    return path


@pytest.mark.slow
def test_finetune_command_keeps_the_source_backbone_and_saves_class_names(tmp_path, two_class_npz):
    source = inceptorch.create_model("googlenet_small", num_classes=10, in_chans=3)
    source.pretrained_cfg = {**source.pretrained_cfg, "mean": (0.3,) * 3, "std": (0.2,) * 3, "crop_pct": 1.0}
    source_weights = tmp_path / "source.safetensors"
    save_weights(source, source_weights)
    status = main(["finetune", "--model", "googlenet_small", "--weights", str(source_weights), "--data",
                   str(two_class_npz), "--epochs", "2", "--batch-size", "8", "--val-split", "8", "--lr", "0.05",
                   "--out-dir", str(tmp_path / "runs"), "--name", "pets", "--quiet"])
    assert status == 0
    tuned = tmp_path / "runs" / "pets" / "last.safetensors"
    model = inceptorch.load_model(tuned)
    assert model.class_names == ["cat", "dog"] and model.num_classes == 2
    before, after = source.state_dict(), model.state_dict()
    backbone = [k for k in before if not k.startswith("fc.")]
    assert all(torch.equal(before[k], after[k]) for k in backbone)
    assert not torch.equal(before["fc.weight"][:2], after["fc.weight"])
    assert model.pretrained_cfg["mean"] == pytest.approx((0.3,) * 3)  # the source's, kept


def test_finetune_without_weights_is_a_one_line_error(two_class_npz, capsys):
    assert main(["finetune", "--model", "googlenet_small", "--data", str(two_class_npz)]) == 2
    assert "--weights" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unfreeze-after"):
        resolve({"freeze": "backbone", "unfreeze_after": 5, "epochs": 5})


def test_heads_trained_on_other_classes_of_the_same_number_start_fresh(tmp_path):
    source = inceptorch.create_model("googlenet_small", num_classes=2)
    source.class_names = ["shirt", "shoe"]
    source.pretrained_cfg = {**source.pretrained_cfg, "mean": (0.3,) * 3, "std": (0.2,) * 3}
    weights = tmp_path / "clothes.safetensors"
    save_weights(source, weights)
    for classes, kept in ((["shirt", "shoe"], True), (["cat", "dog"], False)):
        model = inceptorch.create_model("googlenet_small", num_classes=2, weights=weights)
        model.class_names = classes
        start_from_checkpoint(resolve({"weights": str(weights)}), model)
        assert torch.equal(model.fc.weight, source.fc.weight) == kept
        assert torch.equal(model.inception4b.branch1.conv.weight, source.inception4b.branch1.conv.weight)
        assert (model.pretrained_cfg["mean"], model.pretrained_cfg["std"]) == ((0.3,) * 3, (0.2,) * 3)
