"""timm's and torchvision's spellings: ``name.tag`` models, ``list_models`` patterns, ``weights=`` as
torchvision spells it, ``pretrained_cfg`` and the transforms built from it, against timm and torchvision
themselves on real photos.

Caches are temporary folders filled as torch.hub fills them; no test touches the network.
"""

import json
from pathlib import Path

import pytest
import torch
import torchvision
from inception_reference import randomize_
from PIL import Image
from safetensors.torch import save_file

from inceptorch import create_model, create_transform, list_models, load_model, resolve_data_config
from inceptorch.errors import ConfigError
from inceptorch.images import Preprocessing
from inceptorch.models import default_cfg
from inceptorch.weights import METADATA_KEY

TIMM_TAGS = [n for n in list_models(pretrained=True) if default_cfg(n)["source"] == "timm"]
TORCHVISION = [("googlenet", torchvision.models.googlenet, torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1),
               ("inception_v3", torchvision.models.inception_v3, torchvision.models.Inception_V3_Weights.IMAGENET1K_V1)]


@pytest.fixture(autouse=True)
def caches(tmp_path, monkeypatch):
    """An empty torch cache, and no downloads."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("INCEPTORCH_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)


@pytest.fixture
def photos(data_root) -> list[Image.Image]:
    """Four real photos of different sizes and aspect ratios, as PIL images (what timm's transform takes)."""
    files = [p for kind in ("cat", "dog") for p in sorted((data_root / "cats_vs_dogs" / "train" / kind).glob("*.jpg"))[:2]]
    return [Image.open(f).convert("RGB") for f in files]


def _plant_torchvision_file(builder, enum) -> Path:
    """A random-weight checkpoint at the path torchvision's own loader reads ``enum`` from."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(randomize_(builder(aux_logits=True, init_weights=False)).state_dict(), path)
    return path


# --- names ------------------------------------------------------------------------------------------

def test_list_models_patterns_and_pretrained_tags_are_timms_for_the_models_both_have():
    timm = pytest.importorskip("timm")
    for pattern in ("inception_v3.*", "inception_v4*", "inception_resnet_v2*"):  # timm has no inception_v3_fid
        assert list_models(pattern, pretrained=True) == timm.list_models(pattern, pretrained=True)
    assert list_models("*resnet*") == ["inception_resnet_v1", "inception_resnet_v2"]
    assert list_models(["lenet", "nin"]) == ["lenet", "nin"]
    assert list_models("inception*", pretrained=True, exclude_filters="*_v1.*") == [
        "inception_resnet_v2.tf_ens_adv_in1k", "inception_resnet_v2.tf_in1k", "inception_v3.gluon_in1k",
        "inception_v3.tf_adv_in1k", "inception_v3.tf_in1k", "inception_v3.tv_in1k", "inception_v3_fid.tf_in1k",
        "inception_v4.tf_in1k"]
    assert "lenet" in list_models() and not any("." in n for n in list_models())


def test_a_tag_in_the_name_or_in_pretrained_picks_the_same_config_and_conflicting_tags_are_refused():
    with torch.device("meta"):
        named = create_model("inception_v3.gluon_in1k")
        untagged = create_model("inception_v3")
        with pytest.raises(ConfigError, match="tf_in1k and gluon_in1k"):
            create_model("inception_v3.tf_in1k", pretrained="gluon_in1k")
    assert named.pretrained_cfg == default_cfg("inception_v3.gluon_in1k")
    assert named.pretrained_cfg["hf_hub_id"] == "timm/inception_v3.gluon_in1k"
    assert untagged.pretrained_cfg["tag"] == "tv_in1k"  # the default tag's config, as timm's models carry


def test_torchvisions_spellings_of_weights_load_its_file_with_its_class_names():
    path = _plant_torchvision_file(torchvision.models.googlenet, torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1)
    state = torch.load(path)
    for weights in ("DEFAULT", "IMAGENET1K_V1", torchvision.models.GoogLeNet_Weights.DEFAULT):
        model = create_model("googlenet", weights=weights)
        assert model.pretrained_cfg["tag"] == "tv_in1k" and model.transform_input
        assert torch.equal(model.conv1.conv.weight, state["conv1.conv.weight"])
        assert model.class_names == torchvision.models.GoogLeNet_Weights.DEFAULT.meta["categories"]
    with pytest.raises(ConfigError, match="not weights of googlenet"):
        create_model("googlenet", weights=torchvision.models.Inception_V3_Weights.DEFAULT)
    with pytest.raises(ConfigError, match="lenet has no torchvision weights named DEFAULT"):
        create_model("lenet", weights="DEFAULT")


def test_checkpoint_path_weights_and_pretrained_cfg_overlay_file_load_the_same_file(tmp_path):
    source = create_model("inception_v4", num_classes=3)
    path = tmp_path / "v4.safetensors"
    save_file(source.state_dict(), str(path))
    by_path = create_model("inception_v4", num_classes=3, checkpoint_path=path)
    by_weights = create_model("inception_v4", num_classes=3, weights=str(path))
    by_overlay = create_model("inception_v4", pretrained=True, num_classes=3, pretrained_cfg_overlay={"file": str(path)})
    for model in (by_path, by_weights, by_overlay):
        assert torch.equal(model.last_linear.weight, source.last_linear.weight)
    with pytest.raises(ConfigError, match="not both"):
        create_model("inception_v4", checkpoint_path=path, weights=str(path))


def test_drop_rate_is_the_dropout_before_the_classifier():
    with torch.device("meta"):
        assert create_model("inception_v3", drop_rate=0.25).dropout.p == 0.25
        assert create_model("inception_v4", drop_rate=0.1).head_drop.p == 0.1
        with pytest.raises(ConfigError, match="lenet does not take the option 'dropout' \\(drop_rate\\)"):
            create_model("lenet", drop_rate=0.1)


# --- transforms ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("tag_name", TIMM_TAGS)
def test_eval_transform_of_each_timm_tag_is_timms_on_real_photos(tag_name, photos):
    timm = pytest.importorskip("timm")
    with torch.device("meta"):  # only the configs matter: no weights are made
        reference = timm.create_model(tag_name)
        ours = create_model(tag_name)
    expected = timm.data.create_transform(**timm.data.resolve_model_data_config(reference))
    transform = create_transform(ours)
    assert repr(create_transform(default_cfg(tag_name))) == repr(transform)  # a config will do too
    for photo in photos:
        torch.testing.assert_close(transform(photo), expected(photo), rtol=0, atol=1e-4)


@pytest.mark.parametrize("name, builder, enum", TORCHVISION)
def test_torchvision_tags_transform_and_model_are_weights_transforms_and_torchvisions_model(
        name, builder, enum, photos):
    _plant_torchvision_file(builder, enum)
    reference = builder(weights=enum).eval()  # torchvision's own loader, from the same cache
    ours = create_model(name, weights=enum).eval()
    transform = create_transform(ours)
    with torch.no_grad():  # two photos of other sizes and shapes
        expected = reference(torch.stack([enum.transforms()(p) for p in photos[1:3]]))
        got = ours(torch.stack([transform(p) for p in photos[1:3]]))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    assert expected.std() > 0.1  # logits that differ from photo to photo
    assert resolve_data_config(ours)["mean"] == tuple(enum.transforms().mean)  # transform_input stays in the model


def test_training_transform_crops_randomly_at_the_input_size(photos):
    with torch.device("meta"):
        model = create_model("inception_v3.tf_in1k")
    transform = create_transform(model, training=True)
    torch.manual_seed(0)
    first, second = transform(photos[0]), transform(photos[0])
    assert first.shape == second.shape == (3, 299, 299) and not torch.equal(first, second)


# --- checkpoints carry their config -------------------------------------------------------------------

def test_a_checkpoint_saved_before_pretrained_cfg_existed_keeps_its_preprocessing(tmp_path):
    """Old files recorded ``preprocessing`` (crop, resize, mean, std) in their metadata: the same
    numbers come back through pretrained_cfg."""
    model = create_model("googlenet_small", num_classes=2, in_chans=1)
    old = {"crop": 32, "resize": 37, "mean": [0.3], "std": [0.2], "interpolation": "bilinear"}
    meta = {"model": "googlenet_small", "build_config": {"num_classes": 2, "in_chans": 1},
            "class_names": ["ant", "bee"], "preprocessing": old}
    path = tmp_path / "old.safetensors"
    save_file(model.state_dict(), str(path), metadata={METADATA_KEY: json.dumps(meta)})
    loaded = load_model(path)
    assert loaded.class_names == ["ant", "bee"] and loaded.pretrained_cfg["label_names"] == ["ant", "bee"]
    prep = Preprocessing.from_data_config(resolve_data_config(loaded))
    assert (prep.crop, prep.resize, prep.mean, prep.std, prep.interpolation) == (32, 37, (0.3,), (0.2,), "bilinear")
