"""The optional engines' imports: a missing one is a one-line error naming the extra that installs it."""

import importlib

from ..errors import ConfigError

# module -> the extra of pyproject.toml that installs it
EXTRAS = {"onnx": "onnx", "onnxruntime": "onnx", "onnxscript": "onnx", "openvino": "openvino", "nncf": "openvino",
          "torchao": "int8"}


def require(module: str, purpose: str):
    """``module`` imported, or a ``ConfigError`` saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{purpose} needs {module.split('.')[0]}: pip install \"inceptorch[{EXTRAS[module.split('.')[0]]}]\""
                          ) from None


def available(module: str) -> bool:
    """Whether ``module`` imports (for ``auto``, which leaves out the engines that are not installed)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
