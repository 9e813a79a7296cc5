"""Pretrained weights' files: the caches they are found in, fetching them once, and checking their hashes.

A tag (``inception_v3.tv_in1k``) names one published checkpoint; its pretrained config, defined
beside the model's builder (``models/``), says where the file comes from (``hf_hub_id`` or ``url``)
and its hash; here the file is found or fetched. Files are looked up where the libraries that
publish them cache them, so weights torchvision, timm or facenet-pytorch already fetched are never
fetched again:

- torchvision's: torch.hub's cache, ``$TORCH_HOME/hub/checkpoints/<file>`` (``~/.cache/torch``);
- timm's: the Hugging Face cache (``HF_HOME``, ``HF_HUB_CACHE``) through ``huggingface_hub``, or a
  hand-downloaded file in torch.hub's cache named ``<model>.<tag>.safetensors``;
- facenet-pytorch's: ``$TORCH_HOME/checkpoints/<file>``, where facenet-pytorch keeps them;
- the FID Inception's: torch.hub's cache, under pytorch-fid's file name or torch-fidelity's.

Downloads show a progress bar, go to a temporary file beside the cached one and are renamed only
once complete and, where the publisher gives a hash, once it matches: a failed download leaves the
cache as it was. ``INCEPTORCH_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) forbids any download;
``INCEPTORCH_WEIGHTS_URL`` replaces the address a file is downloaded from (a mirror) but not its name.
"""

import hashlib
import os
import urllib.error
from pathlib import Path

import torch

from .errors import CheckpointError, ConfigError

HF_ENDPOINT = "https://huggingface.co"
HF_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's repositories: safetensors first, as timm reads


def tag_name(cfg: dict) -> str:
    """``model.tag`` of a pretrained config."""
    return f"{cfg['architecture']}.{cfg['tag']}"


def file_name(cfg: dict) -> str:
    """The published file's name: the last part of its URL (timm's: the first of ``HF_FILES``)."""
    return cfg["url"].rsplit("/", 1)[1] if cfg.get("url") else HF_FILES[0]


def download_url(cfg: dict) -> str:
    """Where the file is downloaded from (``INCEPTORCH_WEIGHTS_URL`` replaces all but the file name)."""
    if cfg.get("hf_hub_id"):
        return f"{os.environ.get('HF_ENDPOINT', HF_ENDPOINT)}/{cfg['hf_hub_id']}/resolve/main/{file_name(cfg)}"
    mirror = os.environ.get("INCEPTORCH_WEIGHTS_URL")
    return f"{mirror.rstrip('/')}/{file_name(cfg)}" if mirror else cfg["url"]


# --- caches ------------------------------------------------------------------------------------------

def inceptorch_cache() -> Path:
    """``$XDG_CACHE_HOME/inceptorch`` (``~/.cache/inceptorch``), read from the environment now: where
    inceptorch keeps what it works out once (inference choices, data set downloads, FID statistics)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "inceptorch"


def torch_home() -> Path:
    """``$TORCH_HOME``, else ``$XDG_CACHE_HOME/torch``, else ``~/.cache/torch``, as torch reads it."""
    default = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "torch"
    return Path(os.environ.get("TORCH_HOME", default)).expanduser()


def hf_cache() -> Path:
    """The Hugging Face hub cache, read from the environment now (``HF_HUB_CACHE``, ``HF_HOME``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    default = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
    return Path(os.environ.get("HF_HOME", default)).expanduser() / "hub"


def local_path(cfg: dict) -> Path:
    """Where a downloaded (or hand-downloaded) file of the tag ``cfg`` is found outside the Hugging Face cache."""
    if cfg["source"] == "facenet":
        return torch_home() / "checkpoints" / file_name(cfg)
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"  # honours torch.hub.set_dir
    return checkpoints / (f"{tag_name(cfg)}.safetensors" if cfg.get("hf_hub_id") else file_name(cfg))


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("INCEPTORCH_OFFLINE", "HF_HUB_OFFLINE"))


def _huggingface_hub():
    try:
        import huggingface_hub
    except ImportError:
        raise ConfigError('timm\'s weights come from the Hugging Face hub, which needs huggingface_hub: '
                          'pip install "inceptorch[hub]"') from None
    return huggingface_hub


def cached_file(cfg: dict) -> Path | None:
    """The file of the tag ``cfg`` already on this machine, found without any network access, or None."""
    if cfg.get("hf_hub_id"):
        try:
            hub = _huggingface_hub()
        except ConfigError:
            hub = None
        for file in HF_FILES if hub else ():
            found = hub.try_to_load_from_cache(cfg["hf_hub_id"], file, cache_dir=hf_cache())
            if isinstance(found, str):
                return Path(found)
    path = local_path(cfg)
    return next((p for p in (path, *(path.with_name(f) for f in cfg.get("other_files", ()))) if p.is_file()),
                None)


def weights_file(cfg: dict, *, force: bool = False) -> Path:
    """The local file of the tag ``cfg``: ``file`` where it names one (as timm's
    ``pretrained_cfg_overlay=dict(file=...)``), the cached one, else downloaded once (``force``: again)."""
    if cfg.get("file"):
        return Path(cfg["file"])
    found = None if force else cached_file(cfg)
    if found is not None:
        return found
    if _offline():
        raise _not_found(cfg, "downloads are off (INCEPTORCH_OFFLINE or HF_HUB_OFFLINE is set)")
    return _download_hf(cfg, force) if cfg.get("hf_hub_id") else _download_url(cfg, local_path(cfg))


def _not_found(cfg: dict, reason: str) -> CheckpointError:
    return CheckpointError(f"{tag_name(cfg)} is not in the local cache and {reason}: download "
                           f"{download_url(cfg)} by hand to {local_path(cfg)}")


def _download_url(cfg: dict, path: Path) -> Path:
    """torch.hub's download: a progress bar, a temporary file in the cache folder, renamed once the
    sha256 prefix (torchvision's file names carry it) matches; a mismatching file is deleted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(download_url(cfg), str(path), hash_prefix=cfg.get("hash_prefix"),
                                       progress=True)
    except (urllib.error.URLError, OSError) as e:
        raise _not_found(cfg, f"downloading it failed ({getattr(e, 'reason', None) or e})") from None
    except RuntimeError as e:
        if "invalid hash" not in str(e):
            raise
        raise CheckpointError(f"{download_url(cfg)} was downloaded but is not {file_name(cfg)} (its sha256 does "
                              f"not start with {cfg['hash_prefix']}): it was deleted and the cache left as it was; "
                              "retry, or check INCEPTORCH_WEIGHTS_URL") from None
    return path


def _download_hf(cfg: dict, force: bool) -> Path:
    """huggingface_hub's download into its cache (``HF_ENDPOINT`` honoured), then the sha256 check of
    the stored blob, which the hub names by the file's sha256."""
    hub = _huggingface_hub()
    endpoint = os.environ.get("HF_ENDPOINT")
    for file in HF_FILES:
        try:
            path = Path(hub.hf_hub_download(cfg["hf_hub_id"], file, cache_dir=hf_cache(), endpoint=endpoint,
                                            force_download=force, library_name="inceptorch"))
        except hub.errors.EntryNotFoundError as e:
            if isinstance(e, hub.errors.LocalEntryNotFoundError):
                raise _not_found(cfg, f"the Hugging Face hub cannot be reached ({_first_line(e)})") from None
            continue  # this repository has no such file: try the next kind
        except (hub.errors.HfHubHTTPError, OSError, ValueError) as e:
            raise _not_found(cfg, f"downloading it failed ({_first_line(e)})") from None
        _check_blob(cfg, path)
        return path
    raise _not_found(cfg, f"{cfg['hf_hub_id']} holds none of {', '.join(HF_FILES)}")


def _check_blob(cfg: dict, path: Path) -> None:
    blob = path.resolve()
    if len(blob.name) != 64 or not all(c in "0123456789abcdef" for c in blob.name):
        return  # not a large (LFS) file: the hub names its blob by a git hash, not a sha256
    digest = hashlib.sha256()
    with open(blob, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != blob.name:
        blob.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        raise CheckpointError(f"{download_url(cfg)} was downloaded but its sha256 does not match the hub's: it was "
                              "deleted; retry the download")


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
