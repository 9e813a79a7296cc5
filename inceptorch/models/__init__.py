"""The model zoo: one module per family, each registering its builders; ``create_model`` builds any of them."""

from . import bn_inception, classic, googlenet, inception_resnet, inception_v3, inception_v4, mnist  # noqa: F401
from .registry import cfg_for_origin, create_model, default_cfg, list_models, load_model, model_entry

__all__ = ["cfg_for_origin", "create_model", "default_cfg", "list_models", "load_model", "model_entry"]
