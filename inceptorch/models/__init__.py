"""Model families, one module each; importing a module registers its builders."""

from .registry import create_model, list_models, load_model

__all__ = ["create_model", "list_models", "load_model"]
