"""Training and scoring classification models: ``train``, ``finetune``, ``evaluate``, and the loop ``fit``.

The rooms, from the top: ``entry`` (a run from its options), ``loop`` (``fit``), then ``steps`` (the
pieces of one optimizer step), ``evaluation`` (scoring held-out images) and ``stopping`` (Ctrl-C).
Devices and torchrun's processes are ``inceptorch.devices``, below both training and inference.
"""

from .entry import TrainResult, build_model, finetune, train
from .evaluation import EvalResult, evaluate
from .loop import fit

__all__ = ["EvalResult", "TrainResult", "build_model", "evaluate", "finetune", "fit", "train"]
