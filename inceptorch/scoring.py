"""What ``inceptorch evaluate`` scores: a checkpoint, an ensemble of checkpoints or published weights,
eagerly or through an inference engine."""

import torch

from .config import check_weights_choice
from .ensemble import evaluate_ensemble
from .errors import ConfigError
from .inference import optimize_for_inference
from .predict import load_for_inference, optimized_for_images
from .training import EvalResult, evaluate


def score(weights: list | None = None, model: str | None = None, *, pretrained: bool | str = False,
          engine: dict | None = None, calibration=None, device: str = "auto", **scoring) -> EvalResult:
    """``evaluate`` of one checkpoint (or, with ``pretrained``, of ``model``'s published weights), or
    ``evaluate_ensemble`` of several checkpoints. ``engine``: ``optimize_for_inference``'s backend and
    precision, the model then run on the CPU, int8 calibrated on ``calibration`` (a folder of images) or
    else on random input. ``scoring``: ``evaluate``'s other options (data, split, batch_size, ...)."""
    weights = weights or [None]
    if len(weights) > 1:
        if engine or pretrained:
            raise ConfigError("an ensemble (several --weights) is scored by PyTorch on its checkpoints: leave "
                              "out --pretrained, --backend, --precision and --calibration")
        return evaluate_ensemble(weights, device=device, **scoring)
    check_weights_choice(weights[0], model, pretrained, "evaluate")
    runner = None
    if engine:
        net, preprocessing = load_for_inference(weights[0], model, pretrained=pretrained)
        if calibration:
            runner = optimized_for_images(net, calibration, preprocessing=preprocessing, **engine)
        else:
            side = preprocessing.crop
            example = torch.randn(min(scoring.get("batch_size", 256), 16), net.in_chans, side, side)
            runner = optimize_for_inference(net, example, **engine)
        device = "cpu"
    return evaluate(model if pretrained else weights[0], device=device, pretrained=pretrained, runner=runner,
                    **scoring)
