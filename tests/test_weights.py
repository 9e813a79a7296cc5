"""Reading and writing weights: layouts, safety, damaged files, and the registry's errors."""

import json
import logging
import pickle

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import inceptorch
from inceptorch import create_model, load_model
from inceptorch.errors import CheckpointError, ConfigError
from inceptorch.weights import METADATA_KEY, save_weights


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module, skip: str = "") -> None:
    state_b = b.state_dict()
    for key, value in a.state_dict().items():
        if skip and key.startswith(skip):
            continue
        assert torch.equal(value, state_b[key]), key


def _inceptorch_notices(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("inceptorch")]


# --- inceptorch's own format ------------------------------------------------------------------------

def test_own_checkpoint_round_trip_rebuilds_the_model_from_its_metadata(tmp_path):
    model = create_model("mnist_inception", num_classes=10, in_chans=1)
    model.class_names = [f"digit {i}" for i in range(10)]
    path = tmp_path / "digits.safetensors"
    save_weights(model, path)

    with safe_open(str(path), framework="pt") as f:  # a plain safetensors file with JSON metadata
        meta = json.loads(f.metadata()[METADATA_KEY])
    assert meta["model"] == "mnist_inception"

    loaded = load_model(path)
    assert (loaded.model_name, loaded.num_classes, loaded.in_chans) == ("mnist_inception", 10, 1)
    assert loaded.class_names == model.class_names
    _assert_same_state(model, loaded)
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(loaded.eval()(x), model.eval()(x), rtol=0, atol=0)


def test_load_model_needs_metadata_naming_the_model(tmp_path):
    path = tmp_path / "plain.pth"
    torch.save(create_model("lenet").state_dict(), path)
    with pytest.raises(ConfigError, match="no inceptorch metadata"):
        load_model(path)


def test_malformed_metadata_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "bad_meta.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={METADATA_KEY: "{not json"})
    with pytest.raises(CheckpointError, match="bad_meta.safetensors"):
        load_model(path)


# --- layouts of other tools -------------------------------------------------------------------------

@pytest.mark.parametrize(("wrapper", "prefix", "suffix"), [
    (None, "", ".pth"),
    ("state_dict", "", ".pth"),
    (None, "module.", ".pt"),
    ("model", "module.", ".pth"),
])
def test_torch_state_dicts_load_plain_wrapped_and_prefixed(tmp_path, wrapper, prefix, suffix):
    source = create_model("lenet", num_classes=10)
    state = {prefix + k: v for k, v in source.state_dict().items()}
    path = tmp_path / f"lenet{suffix}"
    torch.save({wrapper: state, "epoch": 3, "best_acc": 0.5} if wrapper else state, path)
    loaded = create_model("lenet", num_classes=10, weights=path)
    _assert_same_state(source, loaded)


def test_other_num_classes_keeps_the_backbone_and_starts_fresh_heads(tmp_path, caplog):
    source = create_model("mnist_inception", num_classes=10, in_chans=1)
    path = tmp_path / "ten.pth"
    torch.save(source.state_dict(), path)
    with caplog.at_level(logging.INFO, logger="inceptorch"):
        loaded = create_model("mnist_inception", num_classes=4, in_chans=1, weights=path)
    _assert_same_state(source, loaded, skip="classifier.fc.")
    head = loaded.classifier.fc
    assert head.weight.shape == (4, 1408)
    assert not torch.equal(head.weight, source.classifier.fc.weight[:4])
    notices = _inceptorch_notices(caplog)
    assert len(notices) == 1 and "\n" not in notices[0]
    assert "10 classes" in notices[0] and "4" in notices[0]


def test_other_num_classes_replaces_nins_1x1_conv_head(tmp_path):
    source = create_model("nin", num_classes=10, in_chans=1)
    path = tmp_path / "nin.pth"
    torch.save(source.state_dict(), path)
    loaded = create_model("nin", num_classes=3, in_chans=1, weights=path)
    _assert_same_state(source, loaded, skip="classifier.conv.")
    assert loaded.classifier.conv.weight.shape[0] == 3
    assert loaded.eval()(torch.randn(1, 1, 67, 67)).shape == (1, 3)


def test_grey_model_from_rgb_checkpoint_sums_the_first_filters(tmp_path):
    source = create_model("lenet", num_classes=10).eval()
    path = tmp_path / "rgb.pth"
    torch.save(source.state_dict(), path)
    grey = create_model("lenet", num_classes=10, in_chans=1, weights=path).eval()
    torch.testing.assert_close(grey.features.conv1.weight, source.features.conv1.weight.sum(1, keepdim=True))
    # A convolution is linear: summed filters on one channel see what the RGB filters see on grey RGB.
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(grey(x), source(x.expand(-1, 3, -1, -1)))


def test_checkpoint_of_another_architecture_names_missing_and_unexpected_keys(tmp_path, caplog):
    path = tmp_path / "lenet.safetensors"
    save_weights(create_model("lenet", num_classes=10, in_chans=1), path)
    with caplog.at_level(logging.INFO, logger="inceptorch"), pytest.raises(CheckpointError) as error:
        create_model("mnist_inception", num_classes=10, in_chans=1, weights=path)
    message = str(error.value)
    assert "missing keys features.inception1.branch1x1.weight" in message
    assert "unexpected keys" in message and "classifier.fc1.weight" in message
    assert "saved from lenet" in message and "\n" not in message
    assert _inceptorch_notices(caplog) == []  # no "keeping the backbone" notice for a backbone that does not fit


def test_wrong_shapes_are_named(tmp_path):
    path = tmp_path / "grey.pth"
    torch.save(create_model("mnist_inception", num_classes=10, in_chans=1).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"wrong shapes features\.conv1\.weight \(10, 1, 5, 5\) vs \(10, 2, 5, 5\)"):
        create_model("mnist_inception", num_classes=10, in_chans=2, weights=path)


# --- safety and damaged files ------------------------------------------------------------------------

class _WritesAFile:
    """Unpickling this calls ``open(marker, "w")``: code that runs on load, harmless but visible."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_the_payload_runs_when_unpickled_unsafely(tmp_path):
    """Proves the payload below is live, so that the refusal tests mean something."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_WritesAFile(marker))).close()
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle protocol 2", "pickle default protocol"])
def test_pickle_that_would_run_code_is_refused_and_not_run(tmp_path, writer):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    payload = {"conv.weight": torch.zeros(1), "trap": _WritesAFile(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2 if "2" in writer else pickle.DEFAULT_PROTOCOL))
    with pytest.raises(CheckpointError, match="evil.pth"):
        create_model("lenet", weights=path)
    assert not marker.exists()


def test_whole_pickled_model_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "whole.pth"
    torch.save(create_model("lenet"), path)
    with pytest.raises(CheckpointError, match="refused.*plain state dict"):
        create_model("lenet", weights=path)


def test_file_without_tensors_is_refused(tmp_path):
    path = tmp_path / "numbers.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="no state dict of tensors"):
        create_model("lenet", weights=path)


@pytest.fixture(scope="module")
def good_files(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("good")
    model = create_model("lenet", num_classes=10)
    torch.save(model.state_dict(), folder / "m.pth")
    save_weights(model, folder / "m.safetensors")
    return {suffix: (folder / f"m{suffix}").read_bytes() for suffix in (".pth", ".safetensors")}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("damage", ["truncated", "random bytes", "empty"])
def test_damaged_files_are_checkpoint_errors(tmp_path, good_files, suffix, damage):
    good = good_files[suffix]
    data = {"truncated": good[: len(good) // 2],
            "random bytes": torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes(),
            "empty": b""}[damage]
    path = tmp_path / f"damaged{suffix}"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=r"damaged.*re-save or re-download"):
        create_model("lenet", num_classes=10, weights=path)


def test_missing_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        create_model("lenet", weights=tmp_path / "absent.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "absent.safetensors")


# --- registry errors -------------------------------------------------------------------------------

def test_unknown_model_lists_the_models():
    with pytest.raises(ConfigError) as error:
        create_model("nope")
    assert "nope" in str(error.value)
    assert all(name in str(error.value) for name in inceptorch.list_models())


def test_aux_logits_for_a_model_without_aux_heads_is_a_config_error():
    with pytest.raises(ConfigError, match="lenet has no auxiliary classifiers"):
        create_model("lenet", aux_logits=True)
