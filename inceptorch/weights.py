"""Checkpoint files: reading and writing state dicts and their metadata safely.

Checkpoints are read with safetensors or ``torch.load(weights_only=True)``: a file that would run
code when unpickled is refused, never executed. Wrapper dicts (``state_dict``, ``model``) and
``module.`` prefixes are unwrapped here; fitting the tensors to a model is ``models.loading``'s job.
Files are written atomically: a reader sees the old file or the new one, never a torn one.
"""

import json
import logging
import os
import pickle
import signal
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from .errors import CheckpointError

log = logging.getLogger("inceptorch")

METADATA_KEY = "inceptorch"
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "state_dict_ema", "model_ema")
_PREFIXES = ("module.", "_orig_mod.")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Test hook: a process writing the file of this name is SIGKILLed after the temporary file is complete and
# before its rename, the moment a kill is most likely to hurt (tests/test_elastic.py).
KILL_BEFORE_RENAME = "INCEPTORCH_TEST_KILL_BEFORE_RENAME"


def _first_attempt() -> bool:
    """Whether this is not a process torchrun restarted (--max-restarts), which the test hook spares."""
    return os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"


def write_atomically(path, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that a reader sees the old file or the new one, never a torn one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes files private; give them the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if os.environ.get(KILL_BEFORE_RENAME) == path.name and _first_attempt():  # the tests' kill in a write
            os.kill(os.getpid(), signal.SIGKILL)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_weights(model: torch.nn.Module, path, metadata: dict | None = None) -> None:
    """Saves the state dict as safetensors, with JSON ``metadata`` (model name, options, class names, and
    the pretrained config that says how its inputs were made; its label names are the class names)."""
    cfg = {k: v for k, v in (getattr(model, "pretrained_cfg", None) or {}).items() if k != "label_names"}
    meta = {"model": getattr(model, "model_name", None), "build_config": getattr(model, "build_config", {}),
            "class_names": getattr(model, "class_names", None), "pretrained_cfg": cfg or None, **(metadata or {})}
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    data = save_safetensors_bytes(tensors, metadata={METADATA_KEY: json.dumps(meta)})
    write_atomically(path, data)


def is_safetensors(path: Path) -> bool:
    return path.suffix == ".safetensors"


def read_metadata(path) -> dict:
    """The inceptorch metadata of a safetensors checkpoint ({} for other files)."""
    path = _existing(path)
    if not is_safetensors(path):
        return {}
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
        meta = json.loads(raw) if raw else {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({_reason(e)}): "
                              "re-save or re-download it") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} has malformed inceptorch metadata: re-save it with inceptorch")
    return meta


def _reason(error: Exception) -> str:
    """The informative line of a loader's error, without torch's boilerplate about ``weights_only``."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    informative = [line for line in lines if not line.startswith(boilerplate)]
    return (informative or lines or [type(error).__name__])[0][:160]


def _existing(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: check the path given to --weights")
    return path


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, unwrapped from training dicts and DDP/compile prefixes."""
    path = _existing(path)
    try:
        if is_safetensors(path):
            state = load_safetensors_bytes(path.read_bytes())
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e):  # the restricted unpickler met an import: the file holds Python objects
            raise CheckpointError(f"{path} was refused: it holds Python objects that could run code when "
                                  f"loaded ({_reason(e)}); use a plain state dict or a .safetensors file") from None
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated, not a weights file, or a pickle "
                              f"torch.load cannot read safely: {_reason(e)}): re-save or re-download it") from None
    except (SafetensorError, RuntimeError, ValueError, LookupError, TypeError, EOFError, OSError) as e:
        # A damaged file surfaces as any of these, from deep inside the readers.
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or not a weights file: "
                              f"{_reason(e)}): re-save or re-download it") from None
    for key in _WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors: save model.state_dict(), not the model")
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state
