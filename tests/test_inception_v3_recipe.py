"""The Inception v3 paper's recipe (inception_v3-imagenet): its values against the paper, and a few
steps of it on a small folder of photos on CPU."""

import numpy as np
import pytest
from PIL import Image

import inceptorch
from inceptorch.config import resolve
from inceptorch.optimizers import RMSpropTF
from inceptorch.training.steps import lr_factor, make_optimizer


def test_the_recipe_is_the_papers_section_8():
    config = resolve({"recipe": "inception_v3-imagenet"})
    assert (config.model, config.image_size, config.epochs, config.batch_size) == ("inception_v3", 299, 100, 50 * 32)
    assert (config.optimizer, config.lr, config.grad_clip, config.label_smoothing, config.aux_weight) == (
        "rmsproptf", 0.045, 2.0, 0.1, 0.4)
    # 0.045 x 0.94 every two epochs, from the first step
    assert [lr_factor(e * 800, 100 * 800, config, 800) for e in (0, 1, 2, 3, 4, 99)] == pytest.approx(
        [1, 1, 0.94, 0.94, 0.94 ** 2, 0.94 ** 49])
    optimizer = make_optimizer(inceptorch.create_model("inception_v3", num_classes=2), config)
    assert isinstance(optimizer, RMSpropTF)
    assert all((g["alpha"], g["eps"], g["momentum"]) == (0.9, 1.0, 0.9) for g in optimizer.param_groups)


@pytest.mark.slow
def test_the_recipe_trains_a_few_steps_on_a_folder_of_photos(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / "photos" / label).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "photos" / label / f"{i}.jpg")
    result = inceptorch.train({"recipe": "inception_v3-imagenet", "data": str(tmp_path / "photos"),
                               "val_split": 2, "batch_size": 3, "epochs": 1, "workers": 0, "amp": False,
                               "checkpoint_every_steps": 1, "out_dir": str(tmp_path), "quiet": True})
    row = result.history[-1]
    assert np.isfinite(row["train_loss"]) and 0 <= row["val_acc"] <= 1
    assert row["lr"] == 0.045  # the first two epochs at the paper's rate
    assert (result.run_dir / "checkpoints" / "step-000000001.state.pt").is_file()
