"""inceptorch: the GoogLeNet / Inception family of convolutional networks, readable next to their papers."""

from . import errors
from .analysis import min_input_size
from .models import create_model, list_models, load_model

__all__ = ["errors", "list_models", "create_model", "load_model", "min_input_size"]
__version__ = "0.1.0"
