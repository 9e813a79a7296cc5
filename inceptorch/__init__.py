"""inceptorch: the GoogLeNet / Inception family of convolutional networks, readable next to their papers."""

from . import errors, metrics
from .analysis import count_macs
from .draw import draw
from .ensemble import evaluate_ensemble, train_ensemble
from .images import create_transform, resolve_data_config
from .inference import optimize_for_inference
from .models import create_model, list_models, load_model
from .models.meta import min_input_size
from .predict import extract_features, predict
from .summary import branch_breakdown, compare, summary
from .training import evaluate, finetune, train
from .transfer import freeze, unfreeze

__all__ = [
           "branch_breakdown",
           "compare",
           "count_macs",
           "create_model",
           "create_transform",
           "draw",
           "errors",
           "evaluate",
           "evaluate_ensemble",
           "extract_features",
           "finetune",
           "freeze",
           "list_models",
           "load_model",
           "metrics",
           "min_input_size",
           "optimize_for_inference",
           "predict",
           "resolve_data_config",
           "summary",
           "train",
           "train_ensemble",
           "unfreeze",
]
__version__ = "0.1.0"
