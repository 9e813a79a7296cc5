"""optimize_for_inference's auto choice: bf16 and int8 judged on enough images held out of their
calibration, the choice cached per weights, and re-checked (or measured again) whenever it is used."""

import copy
import json
import logging

import numpy as np
import pytest
import torch
from inception_reference import randomize_
from PIL import Image
from torch import nn

from inceptorch import create_model, optimize_for_inference
from inceptorch.cli import main
from inceptorch.errors import ConfigError
from inceptorch.inference.choose import REDUCED_NEEDS_IMAGES, weights_digest
from inceptorch.weights import save_weights

SAMPLE = np.load(__import__("inceptorch").__path__[0] + "/sample/builtin.npz")
IMAGES = torch.from_numpy(SAMPLE["val_images"][:64]).float().div(127.5).sub(1)[:, None]  # real clothes


def _linear(fragile: bool) -> nn.Module:
    """One architecture, two checkpoints: a linear classifier of 28x28 images whose ten rows are either
    independent, or one shared row plus 1e-3 of noise, so that its classes are told apart by
    differences far below int8's resolution of the weights (int8 keeps none of its predictions)."""
    torch.manual_seed(0)
    layer = nn.Linear(784, 10)
    with torch.no_grad():
        rows = torch.randn(10, 784)
        layer.weight.copy_(rows[:1] + 1e-3 * rows if fragile else rows / 10)
        layer.bias.zero_()
    return nn.Sequential(nn.Flatten(), layer).eval()


@pytest.fixture
def cache_file(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    caplog.set_level(logging.INFO, logger="inceptorch")
    return tmp_path / "inceptorch" / "inference_choices.json"


def _top1(model, x) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def _auto_on_openvino(model, calibration=IMAGES):
    """auto precision on OpenVINO: fp32, int8 (NNCF) and, where the CPU has it, bf16; seconds each."""
    return optimize_for_inference(model, IMAGES[:16], backend="openvino", precision="auto", calibration=calibration)


def test_the_weights_digest_tells_two_checkpoints_of_one_architecture_apart():
    robust, fragile = _linear(False), _linear(True)
    assert weights_digest(robust) != weights_digest(fragile)
    assert weights_digest(robust) == weights_digest(copy.deepcopy(robust))


def test_two_checkpoints_of_one_architecture_get_their_own_choices(cache_file, caplog):
    robust, fragile = _linear(False), _linear(True)
    _auto_on_openvino(robust)
    caplog.clear()
    chosen = _auto_on_openvino(fragile)
    assert "ms a call" in caplog.text and "cached choice" not in caplog.text  # measured, not the first's
    assert "openvino int8: " in caplog.text and "top-1 agreement 0.0%" in caplog.text  # int8 failed it
    assert len(json.loads(cache_file.read_text())) == 2
    assert chosen.path != "openvino int8"
    assert torch.equal(_top1(chosen, IMAGES), _top1(fragile, IMAGES))


def test_the_log_line_states_the_held_out_count(cache_file, caplog):
    _auto_on_openvino(_linear(False))
    held_out = len(IMAGES) // 2
    final = [line for line in caplog.text.splitlines() if "fastest of" in line]
    assert len(final) == 1
    assert f"on {held_out} held-out images, calibrated on {len(IMAGES) - held_out} others" in final[0]


def test_a_cached_choice_that_disagrees_is_measured_again(cache_file, caplog):
    fragile = _linear(True)
    _auto_on_openvino(fragile)
    (key, choice), = json.loads(cache_file.read_text()).items()
    assert choice["precision"] != "int8"
    cache_file.write_text(json.dumps({key: {**choice, "backend": "openvino", "precision": "int8"}}))
    caplog.clear()
    chosen = _auto_on_openvino(fragile)
    assert "the cached choice openvino int8 agrees with fp32 on 0.0% of 32 held-out images" in caplog.text
    assert "measuring again" in caplog.text and "ms a call" in caplog.text
    assert chosen.path != "openvino int8"
    assert json.loads(cache_file.read_text())[key]["precision"] != "int8"


def test_a_cached_choice_that_still_agrees_is_used_after_its_re_check(cache_file, caplog):
    robust = _linear(False)
    first = _auto_on_openvino(robust)
    caplog.clear()
    again = _auto_on_openvino(robust)
    assert again.path == first.path and "ms a call" not in caplog.text
    assert "cached choice" in caplog.text and "re-checked: top-1 agreement 100.0% on 32 held-out images" in caplog.text


@pytest.mark.parametrize("damage", ["an entry that is text", "an entry naming no path", "a file that is not JSON",
                                    "a file that is a list"])
def test_a_damaged_cache_is_measured_again(cache_file, caplog, damage):
    model = randomize_(create_model("mnist_inception", in_chans=1, num_classes=10)).eval()
    optimize_for_inference(model, IMAGES[:16], backend="auto")
    (key, _), = json.loads(cache_file.read_text()).items()
    cache_file.write_text({"an entry that is text": json.dumps({key: "garbage"}),
                           "an entry naming no path": json.dumps({key: {"backend": "tpu", "precision": "int4"}}),
                           "a file that is not JSON": '{"' + key + '": {"backend": "tor',
                           "a file that is a list": "[1, 2]"}[damage])
    caplog.clear()
    chosen = optimize_for_inference(model, IMAGES[:16], backend="auto")
    assert "ms a call" in caplog.text
    entry = json.loads(cache_file.read_text())[key]
    assert chosen.path == f"{entry['backend']} {entry['precision']}"
    assert torch.equal(_top1(chosen, IMAGES), _top1(model, IMAGES))


def test_too_few_calibration_images_never_give_a_reduced_precision(cache_file, caplog):
    robust = _linear(False)
    few = IMAGES[:REDUCED_NEEDS_IMAGES - 1]
    chosen = _auto_on_openvino(robust, calibration=few)
    assert chosen.path == "openvino fp32"
    assert f"{len(few)} calibration images, fewer than {REDUCED_NEEDS_IMAGES}: fp32 paths only" in caplog.text
    assert "int8" not in caplog.text.replace("bf16 and int8 are judged", "")
    for precision in ("int8", "bf16"):  # a reduced precision asked for by name, its backend left to auto
        with pytest.raises(ConfigError, match=f"at least {REDUCED_NEEDS_IMAGES} calibration images") as error:
            optimize_for_inference(robust, IMAGES[:16], backend="auto", precision=precision, calibration=few)
        assert "\n" not in str(error.value)


def test_predict_on_one_photo_with_auto_keeps_to_fp32(cache_file, tmp_path, caplog):
    """The issue's run: `predict --backend auto --precision auto` on one image once picked OpenVINO int8,
    calibrated and judged on that one image."""
    net = randomize_(create_model("mnist_inception", in_chans=1, num_classes=10))
    net.class_names = [str(c) for c in SAMPLE["class_names"]]
    weights = tmp_path / "m.safetensors"
    save_weights(net, weights)
    photo = tmp_path / "shirt.png"
    Image.fromarray(SAMPLE["val_images"][0]).save(photo)
    assert main(["predict", "--weights", str(weights), str(photo), "--backend", "auto", "--precision", "auto",
                 "--format", "json"]) == 0
    (choice,) = json.loads(cache_file.read_text()).values()
    assert choice["precision"] == "fp32" and "on 1 calibration image" in choice["why"]
    assert f"1 calibration image, fewer than {REDUCED_NEEDS_IMAGES}: fp32 paths only" in caplog.text
