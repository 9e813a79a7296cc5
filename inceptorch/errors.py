"""Errors a user can fix. The CLI prints their message on one line and exits with status 2.

Anything else that escapes is a bug in inceptorch and keeps its traceback.
"""


class InceptorchError(Exception):
    """Base class: the message names the problem and the fix."""


class ConfigError(InceptorchError):
    """An option or argument has a value that cannot work (a zero batch size, an unknown model)."""


class InputSizeError(InceptorchError):
    """An input tensor or image is too small, or has the wrong number of channels or dimensions."""


class CheckpointError(InceptorchError):
    """A weights file is missing, unreadable, unsafe, or made for another architecture."""


class DataError(InceptorchError):
    """A data folder or file is missing, empty or malformed."""


class TrainingError(InceptorchError):
    """Training cannot go on (for instance a non-finite loss); the last good checkpoint is kept."""
