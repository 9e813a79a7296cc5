"""Pretrained weights by name: caches found offline, downloads through a loopback server, hash checks,
the offline error, outputs equal to torchvision's and timm's models, class names and preprocessing.

No test touches the network: downloads come from an HTTP server on 127.0.0.1 (``INCEPTORCH_WEIGHTS_URL``
points the tags there), and caches are temporary folders filled as torch.hub and huggingface_hub fill them.
"""

import functools
import hashlib
import http.server
import json
import logging
import socket
import sys
import threading
from pathlib import Path

import pytest
import torch
import torchvision
from inception_reference import randomize_
from PIL import Image
from safetensors.torch import save_file

import inceptorch
from inceptorch import create_model, hub
from inceptorch.cli import main
from inceptorch.errors import CheckpointError, ConfigError
from inceptorch.images import Preprocessing, resolve_data_config
from inceptorch.models import default_cfg, list_models, model_entry

TIMM_TAGS = [n for n in list_models(pretrained=True) if default_cfg(n)["source"] == "timm"]


@pytest.fixture(autouse=True)
def caches(tmp_path, monkeypatch):
    """Empty torch and Hugging Face caches, downloads allowed (as on a user's machine)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for var in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "INCEPTORCH_OFFLINE", "INCEPTORCH_WEIGHTS_URL", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


class _Server:
    """Files of a folder over HTTP on 127.0.0.1, counting the requests."""

    def __init__(self, folder: Path):
        self.requests = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def do_GET(self):
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server(tmp_path, monkeypatch):
    folder = tmp_path / "served"
    folder.mkdir()
    s = _Server(folder)
    s.folder = folder
    monkeypatch.setenv("INCEPTORCH_WEIGHTS_URL", s.url + "/models")
    (folder / "models").mkdir()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.cache
def _torchvision_googlenet_state() -> dict:
    """A random-weight checkpoint in torchvision's GoogLeNet layout (aux heads included, as theirs)."""
    torch.manual_seed(1)
    return torchvision.models.googlenet(aux_logits=True, init_weights=False).state_dict()


def _serve_googlenet(server, monkeypatch, tamper: bool = False) -> Path:
    """Serves a random GoogLeNet checkpoint and points googlenet.tv_in1k at it (the file's own hash)."""
    staged = server.folder / "staged.pth"
    torch.save(_torchvision_googlenet_state(), staged)
    prefix = _sha256(staged)[:8]
    name = f"googlenet-{prefix}.pth"
    data = staged.read_bytes()
    (server.folder / "models" / name).write_bytes(data[:-1] + bytes([data[-1] ^ 1]) if tamper else data)
    cfgs = model_entry("googlenet").cfgs
    monkeypatch.setitem(cfgs, "tv_in1k", {**cfgs["tv_in1k"], "hash_prefix": prefix,
                                          "url": f"https://download.pytorch.org/models/{name}"})
    return staged


def _googlenet_file() -> str:
    return hub.file_name(default_cfg("googlenet.tv_in1k"))


def _hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


# --- downloads -----------------------------------------------------------------------------------------

def test_download_shows_progress_checks_the_hash_and_is_cached_once(server, monkeypatch, capsys):
    staged = _serve_googlenet(server, monkeypatch)
    model = create_model("googlenet", pretrained=True).eval()
    assert "100%" in capsys.readouterr().err  # torch.hub's tqdm bar
    cached = _hub_checkpoints() / _googlenet_file()
    assert cached.read_bytes() == staged.read_bytes()
    assert [p for p in cached.parent.iterdir()] == [cached]  # no temporary file left behind
    assert len(server.requests) == 1

    again = create_model("googlenet", pretrained="tv_in1k").eval()
    assert len(server.requests) == 1  # found in the cache: no network
    reference = torchvision.models.googlenet(aux_logits=False, transform_input=True, init_weights=False).eval()
    reference.load_state_dict({k: v for k, v in _torchvision_googlenet_state().items() if not k.startswith("aux")})
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
        torch.testing.assert_close(again(x), reference(x), rtol=0, atol=0)


def test_a_tampered_download_is_deleted_and_the_cache_left_as_it_was(server, monkeypatch):
    _serve_googlenet(server, monkeypatch, tamper=True)
    cfg = default_cfg("googlenet.tv_in1k")
    with pytest.raises(CheckpointError, match="sha256 does not start with .*deleted") as error:
        create_model("googlenet", pretrained=True)
    assert "\n" not in str(error.value)
    assert not any(_hub_checkpoints().iterdir())  # neither the file nor a partial one

    cached = _hub_checkpoints() / hub.file_name(cfg)  # a good cached copy survives a failed forced download
    cached.write_bytes(b"the good copy")
    with pytest.raises(CheckpointError, match="deleted"):
        hub.weights_file(cfg, force=True)
    assert cached.read_bytes() == b"the good copy"
    assert sorted(p.name for p in _hub_checkpoints().iterdir()) == [hub.file_name(cfg)]


def test_no_network_and_nothing_cached_is_one_line_naming_tag_url_and_cache_path(monkeypatch, tmp_path, capsys):
    with socket.socket() as s:  # a port nothing listens on: the connection is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("INCEPTORCH_WEIGHTS_URL", f"http://127.0.0.1:{port}/models")
    image = tmp_path / "photo.png"
    torchvision.transforms.functional.to_pil_image(torch.rand(3, 64, 64)).save(image)
    assert main(["predict", "--model", "inception_v3", "--pretrained", str(image)]) == 2
    err = capsys.readouterr().err.strip()
    path = _hub_checkpoints() / "inception_v3_google-0cc3c7bd.pth"
    assert err.count("\n") == 0
    assert "inception_v3.tv_in1k" in err and f"127.0.0.1:{port}/models/inception_v3_google-0cc3c7bd.pth" in err
    assert str(path) in err and not path.exists()


def test_offline_with_an_empty_cache_fails_before_any_request(server, monkeypatch, capsys):
    _serve_googlenet(server, monkeypatch)
    monkeypatch.setenv("INCEPTORCH_OFFLINE", "1")
    assert main(["weights", "download", "googlenet.tv_in1k"]) == 2
    err = capsys.readouterr().err
    assert "googlenet.tv_in1k is not in the local cache and downloads are off" in err
    assert server.requests == []


def test_weights_download_command_fetches_then_finds_the_cached_file(server, monkeypatch, capsys):
    _serve_googlenet(server, monkeypatch)
    assert main(["weights", "download", "googlenet.tv_in1k"]) == 0
    assert main(["weights", "download", "googlenet"]) == 0  # the default tag: already cached
    out = capsys.readouterr().out.splitlines()
    path = _hub_checkpoints() / _googlenet_file()
    assert out == [f"googlenet.tv_in1k: {path}"] * 2 and len(server.requests) == 1


# --- caches filled by torchvision, timm and facenet-pytorch ------------------------------------------------

def _random_bn_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """Batch norms that are not the identity, so that equal outputs mean equal loading."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("name, builder, enum, size", [
    ("googlenet", torchvision.models.googlenet, torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1, 224),
    ("inception_v3", torchvision.models.inception_v3, torchvision.models.Inception_V3_Weights.IMAGENET1K_V1, 299),
])
def test_torchvisions_cache_loads_offline_with_torchvisions_outputs(name, builder, enum, size, monkeypatch):
    monkeypatch.setenv("INCEPTORCH_OFFLINE", "1")
    path = _hub_checkpoints() / Path(enum.url).name
    path.parent.mkdir(parents=True)
    with torch.no_grad():
        torch.save(_random_bn_statistics(builder(aux_logits=True, init_weights=False)).state_dict(), path)
    reference = builder(weights=enum).eval()  # torchvision's own loader, from the same cache
    ours = create_model(name, pretrained=True).eval()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=1e-5)
    assert ours.class_names == enum.meta["categories"]
    prep = Preprocessing.from_data_config(resolve_data_config(ours))
    transforms = enum.transforms()
    assert (prep.crop, prep.resize, prep.interpolation) == (transforms.crop_size[0], transforms.resize_size[0],
                                                            transforms.interpolation.value)
    assert prep.mean == tuple(transforms.mean)  # transform_input does the rest


def _hf_snapshot(cfg: dict, state: dict) -> Path:
    """huggingface_hub's cache layout: refs/main -> snapshots/<commit>/model.safetensors -> blobs/<sha256>."""
    repo = hub.hf_cache() / f"models--{cfg['hf_hub_id'].replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    blob = repo / "blobs" / "staged"
    blob.parent.mkdir()
    save_file({k: v.contiguous() for k, v in state.items() if not k.endswith("num_batches_tracked")}, str(blob))
    blob = blob.rename(blob.with_name(_sha256(blob)))
    snapshot = repo / "snapshots" / commit / "model.safetensors"
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(Path("../../blobs") / blob.name)
    return snapshot


@pytest.mark.parametrize("tag_name", TIMM_TAGS)
def test_each_timm_tag_from_the_hugging_face_cache_gives_timms_logits_and_its_pretrained_cfg(tag_name, monkeypatch):
    timm = pytest.importorskip("timm")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = default_cfg(tag_name)
    reference = randomize_(timm.create_model(tag_name))  # timm's model, with the tag's pretrained_cfg
    snapshot = _hf_snapshot(cfg, reference.state_dict())
    ours = create_model(tag_name, pretrained=True).eval()
    x = torch.randn(1, 3, 299, 299)  # the models' own size: no search for the smallest input
    with torch.no_grad():
        expected = reference(x)
        torch.testing.assert_close(ours(x), expected, rtol=1e-4, atol=1e-4)
    assert expected.std() > 0.1  # a comparison of outputs that differ from image to image, not of constants
    for key in ("input_size", "interpolation", "mean", "std", "crop_pct"):
        assert ours.pretrained_cfg[key] == reference.pretrained_cfg[key], key
    assert hub.cached_file(cfg) == snapshot


def test_timm_tags_without_huggingface_hub_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # what an installation without it imports
    with pytest.raises(ConfigError, match=r'pip install "inceptorch\[hub\]"'):
        create_model("inception_v3", pretrained="tf_in1k")


def test_hand_downloaded_timm_file_in_torch_hubs_cache_is_found(monkeypatch):
    monkeypatch.setenv("INCEPTORCH_OFFLINE", "1")
    state = create_model("inception_v3").state_dict()
    path = hub.local_path(default_cfg("inception_v3.gluon_in1k"))
    path.parent.mkdir(parents=True)
    save_file(state, str(path))
    model = create_model("inception_v3", pretrained="inception_v3.gluon_in1k")
    assert torch.equal(model.fc.weight, state["fc.weight"])
    assert model.pretrained_cfg["mean"] == (0.485, 0.456, 0.406)  # gluon's ImageNet statistics


def test_facenet_checkpoints_load_key_for_key_with_facenets_outputs_and_embeddings(monkeypatch):
    try:
        from facenet_pytorch import InceptionResnetV1
    except ImportError as e:
        pytest.skip(f"facenet-pytorch cannot be imported ({e}): pip install --no-deps facenet-pytorch==2.6.0")
    monkeypatch.setenv("INCEPTORCH_OFFLINE", "1")
    cfg = default_cfg("inception_resnet_v1.casia-webface")
    with torch.no_grad():
        reference = _random_bn_statistics(InceptionResnetV1(classify=True, num_classes=cfg["num_classes"])).eval()
    path = hub.torch_home() / "checkpoints" / hub.file_name(cfg)  # where facenet-pytorch caches it
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)

    ours = create_model("inception_resnet_v1", pretrained="casia-webface").eval()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    x = torch.randn(1, 3, 160, 160)
    embedder = create_model("inception_resnet_v1", pretrained="casia-webface", num_classes=0).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=1e-5)
        reference.classify = False
        embeddings = embedder(x)
        torch.testing.assert_close(embeddings, reference(x), rtol=0, atol=1e-6)
    assert embeddings.shape == (1, 512) and ours.num_classes == 10575
    assert ours.pretrained_cfg["std"][0] == pytest.approx(128 / 255) and ours.pretrained_cfg["input_size"][-1] == 160


# --- what a pretrained model carries, and the options around it ------------------------------------------

def _cache_googlenet() -> Path:
    path = _hub_checkpoints() / _googlenet_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(_torchvision_googlenet_state(), path)
    return path


def test_torchvisions_untrained_googlenet_aux_heads_start_fresh_with_a_notice(caplog):
    _cache_googlenet()
    caplog.set_level(logging.WARNING, "inceptorch")
    model = create_model("googlenet", pretrained=True, aux_logits=True)
    file_state = _torchvision_googlenet_state()
    assert torch.equal(model.conv1.conv.weight, file_state["conv1.conv.weight"])
    assert not torch.equal(model.aux1.fc1.weight, file_state["aux1.fc1.weight"])
    assert any("never trained" in r.getMessage() for r in caplog.records)


def test_checkpoint_without_aux_keys_loads_its_backbone_and_starts_fresh_aux_heads(tmp_path, caplog):
    source = create_model("googlenet", num_classes=5)
    path = tmp_path / "no_aux.pth"
    torch.save(source.state_dict(), path)
    caplog.set_level(logging.WARNING, "inceptorch")
    model = create_model("googlenet", num_classes=5, aux_logits=True, weights=path)
    assert torch.equal(model.inception5b.branch1.conv.weight, source.inception5b.branch1.conv.weight)
    assert model.has_aux
    notices = [r.getMessage() for r in caplog.records]
    assert any("no weights for the aux heads aux1, aux2" in n for n in notices)


def test_pretrained_options_are_checked():
    with pytest.raises(ConfigError, match="not both"):
        create_model("googlenet", pretrained=True, weights="some.pth")
    with pytest.raises(ConfigError, match="choose one of tv_in1k, tf_in1k, gluon_in1k, tf_adv_in1k"):
        create_model("inception_v3", pretrained="nope")
    with pytest.raises(ConfigError, match="has no pretrained weights"):
        create_model("lenet", pretrained=True)


def test_other_num_classes_and_grey_input_keep_the_pretrained_backbone():
    _cache_googlenet()
    model = create_model("googlenet", pretrained=True, num_classes=2, in_chans=1)
    state = _torchvision_googlenet_state()
    assert torch.equal(model.conv1.conv.weight, state["conv1.conv.weight"].sum(dim=1, keepdim=True))
    assert model.fc.out_features == 2 and model.class_names is None
    # Without transform_input (RGB only), the weights are fed [-1, 1] pixels directly.
    assert not model.transform_input and resolve_data_config(model)["mean"] == (0.5,)


def test_num_classes_zero_gives_pooled_features_and_global_pool_empty_the_map():
    model = create_model("googlenet", num_classes=0).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        features = model(x)
        torch.testing.assert_close(features, model.forward_features(x).mean(dim=(2, 3)))
        assert create_model("googlenet", num_classes=0, global_pool="").eval()(x).shape == (1, 1024, 7, 7)
        assert create_model("googlenet", num_classes=0, global_pool=False).eval()(x).shape == (1, 1024, 7, 7)
        model.reset_classifier(0, "max")
        torch.testing.assert_close(model(x), model.forward_features(x).amax(dim=(2, 3)))
    assert features.shape == (1, 1024) and not any(k.startswith("fc.") for k in model.state_dict())
    with pytest.raises(ConfigError, match="num_classes=0"):
        create_model("googlenet", global_pool="")
    with pytest.raises(ConfigError, match="global_pool must be 'avg', 'max' or ''"):
        create_model("googlenet", num_classes=0, global_pool="mean")


def test_endpoints_name_every_layer_in_order_and_final_endpoint_stops_there():
    model = create_model("googlenet", aux_logits=True, num_classes=10).eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        points = model.endpoints(x)
        logits, aux = model.forward_with_aux(x)
        torch.testing.assert_close(points["inception5b"], model.forward_features(x))
        torch.testing.assert_close(points["logits"], logits)
        torch.testing.assert_close(points["aux1"], aux[0])
        partial = model.endpoints(x, final_endpoint="inception4a")
    names = list(points)
    assert names[:3] == ["conv1", "maxpool1", "conv2"] and names[-2:] == ["global_pool", "logits"]
    assert names.index("inception4a") + 1 == names.index("aux1")  # the aux head right after its input
    assert list(partial) == names[:names.index("inception4a") + 1]
    with pytest.raises(ConfigError, match="unknown endpoint 'mixed_9z'"):
        model.endpoints(x, final_endpoint="mixed_9z")


def test_finetune_from_pretrained_uses_the_tags_preprocessing(tmp_path):
    _cache_googlenet()
    result = inceptorch.finetune(model="googlenet", pretrained=True, data="builtin", train_samples=32,
                                 val_samples=16, epochs=1, batch_size=16, image_size=32, out_dir=str(tmp_path),
                                 quiet=True, workers=0)
    saved = inceptorch.load_model(result.run_dir / "last.safetensors")
    assert saved.num_classes == 10 and saved.class_names[0] == "T-shirt/top"
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["pretrained"] is True
    # grey input: no transform_input, so [-1, 1] pixels; the checkpoint carries it in its config
    assert (saved.pretrained_cfg["mean"], saved.pretrained_cfg["std"]) == ((0.5,), (0.5,))
    assert saved.pretrained_cfg["input_size"] == (1, 32, 32) and saved.pretrained_cfg["tag"] is None


# --- ImageNet class names on real photos ----------------------------------------------------------------

def test_predict_pretrained_gives_torchvisions_top3_for_real_photos_with_the_same_planted_weights(data_root, capsys):
    """The cached googlenet.tv_in1k file holds random weights planted in torchvision's model: the top-3
    classes and probabilities printed must be what torchvision's model, preprocessing (its weights'
    transforms) and class names give on the same photos."""
    weights = torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1
    torch.manual_seed(4)
    reference = randomize_(torchvision.models.googlenet(aux_logits=True, init_weights=False, transform_input=True))
    path = _hub_checkpoints() / _googlenet_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(reference.state_dict(), path)
    photos = sorted((data_root / "cats_vs_dogs" / "train" / "cat").glob("*.jpg"))[:2]
    photos += sorted((data_root / "cats_vs_dogs" / "train" / "dog").glob("*.jpg"))[:1]
    assert main(["predict", "--model", "googlenet", "--pretrained", *map(str, photos), "--topk", "3",
                 "--format", "json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in results] == list(map(str, photos))
    x = torch.stack([weights.transforms()(Image.open(p).convert("RGB")) for p in photos])
    with torch.no_grad():
        expected = reference(x).softmax(1).topk(3)
    names = [[top["class"] for top in r["top"]] for r in results]
    assert names == [[weights.meta["categories"][i] for i in row] for row in expected.indices.tolist()]
    printed = torch.tensor([[top["probability"] for top in r["top"]] for r in results])
    torch.testing.assert_close(printed, expected.values, rtol=1e-3, atol=1e-4)
    model = create_model("googlenet", pretrained=True)
    python = inceptorch.predict(model.eval(), photos, topk=3)  # the transform of its pretrained_cfg
    assert [p.classes for p in python] == names


def test_weights_table_lists_every_tag_and_the_cached_path(capsys):
    path = _cache_googlenet()
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    for name in list_models(pretrained=True):
        assert name in out
    row = next(line for line in out.splitlines() if line.startswith("googlenet.tv_in1k"))
    assert row.split()[-1] == "yes" and "69.78%" in row and "49.7 MB" in row and "BSD-3-Clause" in row
    assert f"googlenet.tv_in1k: {path}" in out
    assert main(["weights", "inception_v4"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:] if line.startswith("inception")]
    assert listed[0] == "inception_v4.tf_in1k"
