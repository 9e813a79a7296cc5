"""Pretrained weights by name: the tags, the caches their files are found in, and fetching them once.

A tag (``inception_v3.tv_in1k``) names one published checkpoint: where it comes from, its file, hash,
reported ImageNet top-1, license, the preprocessing it was evaluated with and its class names.
Files are looked up where the libraries that publish them cache them, so weights torchvision, timm
or facenet-pytorch already fetched are never fetched again:

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

import functools
import hashlib
import os
import urllib.error
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from .errors import CheckpointError, ConfigError
from .images import IMAGENET_MEAN, IMAGENET_STD, Preprocessing


@functools.cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, as torchvision ships them (offline) with its weights' metadata.

    torchvision is imported here, on first use, not with the package: its import pulls in
    torch._dynamo and takes seconds that commands with no ImageNet head would wait for.
    """
    from torchvision.models import Inception_V3_Weights

    return tuple(Inception_V3_Weights.IMAGENET1K_V1.meta["categories"])


HF_ENDPOINT = "https://huggingface.co"
HF_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's repositories: safetensors first, as timm reads
_HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class WeightsTag:
    """One published checkpoint of one model. ``source`` is ``torchvision``, ``timm``, ``facenet`` or ``pytorch-fid``;
    ``location`` a URL, or for timm a Hugging Face repository."""

    model: str
    tag: str
    source: str
    location: str
    file: str
    top1: float | None  # ImageNet-1k top-1 (%) as its publisher reports it; None for face weights
    size_mb: float
    license: str
    preprocessing: Preprocessing
    num_classes: int = 1000
    hash_prefix: str | None = None  # leading hex digits of the file's sha256, where the publisher gives them
    options: dict = field(default_factory=dict)  # model options the checkpoint was made for
    untrained: tuple[str, ...] = ()  # heads the file carries but that were never trained
    other_files: tuple[str, ...] = ()  # names other libraries cache the same file under, beside ``file``
    note: str = ""

    @property
    def name(self) -> str:
        return f"{self.model}.{self.tag}"

    @property
    def class_names(self) -> list[str] | None:
        return list(imagenet_classes()) if self.num_classes == 1000 else None

    @property
    def url(self) -> str:
        """Where the file is downloaded from (``INCEPTORCH_WEIGHTS_URL`` replaces all but the file name)."""
        if self.source == "timm":
            return f"{os.environ.get('HF_ENDPOINT', HF_ENDPOINT)}/{self.location}/resolve/main/{self.file}"
        mirror = os.environ.get("INCEPTORCH_WEIGHTS_URL")
        return f"{mirror.rstrip('/')}/{self.file}" if mirror else self.location

    def model_options(self, in_chans: int) -> dict:
        """The options the model is built with for this checkpoint; ``transform_input`` rescales RGB only."""
        return {k: v for k, v in self.options.items() if not (k == "transform_input" and in_chans != 3)}

    def preprocessing_for(self, model) -> Preprocessing:
        """This checkpoint's preprocessing for ``model``: torchvision's weights expect ImageNet statistics
        only where the model rescales them itself (``transform_input``), and [-1, 1] pixels otherwise."""
        prep = self.preprocessing
        if self.options.get("transform_input") and not getattr(model, "transform_input", False):
            prep = replace(prep, mean=_HALF, std=_HALF)
        return prep.adapted(getattr(model, "in_chans", 3))


def _tv(model, file, top1, size_mb, prep, **extra) -> WeightsTag:
    return WeightsTag(model, "tv_in1k", "torchvision", f"https://download.pytorch.org/models/{file}", file, top1,
                      size_mb, "BSD-3-Clause", prep, hash_prefix=file.rsplit("-", 1)[1].split(".")[0],
                      options={"transform_input": True}, **extra)


def _timm(model, tag, top1, size_mb, prep, note="") -> WeightsTag:
    return WeightsTag(model, tag, "timm", f"timm/{model}.{tag}", HF_FILES[0], top1, size_mb, "Apache-2.0", prep,
                      note=note)


def _facenet(tag, file, num_classes, size_mb) -> WeightsTag:
    url = f"https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/{file}"
    prep = Preprocessing(crop=160, resize=160, mean=_HALF, std=(128 / 255,) * 3)  # (pixel - 127.5) / 128
    return WeightsTag("inception_resnet_v1", tag, "facenet", url, file, None, size_mb, "MIT", prep, num_classes,
                      options={"layout": "facenet"}, note="face identities; num_classes=0 gives 512-d embeddings")


def _fid() -> WeightsTag:
    """pytorch-fid's port of TF's 2015-12-05 Inception v3; torch-fidelity publishes the same file (same sha256)."""
    file = "pt_inception-2015-12-05-6726825d.pth"
    url = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{file}"
    prep = Preprocessing(crop=299, resize=299, mean=_HALF, std=_HALF)  # pytorch-fid: 299x299, 2x - 1
    return WeightsTag("inception_v3_fid", "tf_in1k", "pytorch-fid", url, file, None, 95.6, "Apache-2.0", prep, 1008,
                      hash_prefix="6726825d", other_files=("weights-inception-2015-12-05-6726825d.pth",),
                      note="the Inception of FID, KID and IS (see: inceptorch fid); 1008 classes")


_TIMM_299 = Preprocessing(crop=299, resize=341, mean=_HALF, std=_HALF, interpolation="bicubic")  # crop_pct 0.875
_TIMM_IRV2 = replace(_TIMM_299, resize=333)  # crop_pct 0.8975

TAGS: dict[str, WeightsTag] = {t.name: t for t in (
    _tv("googlenet", "googlenet-1378be20.pth", 69.778, 49.7,
        Preprocessing(crop=224, resize=256, mean=IMAGENET_MEAN, std=IMAGENET_STD), untrained=("aux1", "aux2"),
        note="aux heads never trained (torchvision's docs): started fresh"),
    _tv("inception_v3", "inception_v3_google-0cc3c7bd.pth", 77.294, 103.9,
        Preprocessing(crop=299, resize=342, mean=IMAGENET_MEAN, std=IMAGENET_STD)),
    _timm("inception_v3", "tf_in1k", 77.866, 95.5, _TIMM_299),
    _timm("inception_v3", "gluon_in1k", 78.806, 95.5, replace(_TIMM_299, mean=IMAGENET_MEAN, std=IMAGENET_STD)),
    _timm("inception_v3", "tf_adv_in1k", 77.598, 95.5, _TIMM_299, note="adversarially trained"),
    _timm("inception_v4", "tf_in1k", 80.144, 171.0, _TIMM_299),
    _timm("inception_resnet_v2", "tf_in1k", 80.434, 223.6, _TIMM_IRV2),
    _timm("inception_resnet_v2", "tf_ens_adv_in1k", 79.998, 223.6, _TIMM_IRV2,
          note="ensemble adversarial training"),
    _facenet("vggface2", "20180402-114759-vggface2.pt", 8631, 111.8),
    _facenet("casia-webface", "20180408-102900-casia-webface.pt", 10575, 115.7),
    _fid(),
)}
DEFAULT_TAGS = {"googlenet": "tv_in1k", "inception_v3": "tv_in1k", "inception_v4": "tf_in1k",
                "inception_resnet_v2": "tf_in1k", "inception_resnet_v1": "vggface2",
                "inception_v3_fid": "tf_in1k"}


def list_pretrained(model: str | None = None) -> list[str]:
    """Names of the pretrained tags (``model.tag``), of one model or all."""
    return [name for name, t in TAGS.items() if model is None or t.model == model]


def find_tag(model: str, pretrained: bool | str = True) -> WeightsTag:
    """The tag ``pretrained`` names for ``model``: True for its default, ``"tf_in1k"`` or ``"inception_v3.tf_in1k"``."""
    tags = list_pretrained(model)
    if pretrained is True or pretrained == "default":
        if model not in DEFAULT_TAGS:
            raise ConfigError(f"{model} has no pretrained weights: models with them are "
                              f"{', '.join(DEFAULT_TAGS)} (see: inceptorch weights)")
        pretrained = DEFAULT_TAGS[model]
    name = pretrained if "." in str(pretrained) else f"{model}.{pretrained}"
    if name not in TAGS or TAGS[name].model != model:
        choices = ", ".join(t.split(".", 1)[1] for t in tags) or "none (see: inceptorch weights)"
        raise ConfigError(f"unknown pretrained tag '{pretrained}' for {model}: choose one of {choices}")
    return TAGS[name]


def tag_of_file(path) -> WeightsTag | None:
    """The tag whose published file ``path`` is, by its file name (unique for torchvision's and facenet's)."""
    name = Path(path).name
    return next((t for t in TAGS.values() if t.source != "timm" and name in (t.file, *t.other_files)), None)


# --- caches ------------------------------------------------------------------------------------------

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


def local_path(tag: WeightsTag) -> Path:
    """Where a downloaded (or hand-downloaded) file of ``tag`` is found outside the Hugging Face cache."""
    if tag.source == "facenet":
        return torch_home() / "checkpoints" / tag.file
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"  # honours torch.hub.set_dir
    return checkpoints / (f"{tag.name}.safetensors" if tag.source == "timm" else tag.file)


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


def cached_file(tag: WeightsTag) -> Path | None:
    """The file of ``tag`` already on this machine, found without any network access, or None."""
    if tag.source == "timm":
        try:
            hub = _huggingface_hub()
        except ConfigError:
            hub = None
        for file in HF_FILES if hub else ():
            found = hub.try_to_load_from_cache(tag.location, file, cache_dir=hf_cache())
            if isinstance(found, str):
                return Path(found)
    path = local_path(tag)
    return next((p for p in (path, *(path.with_name(f) for f in tag.other_files)) if p.is_file()), None)


def weights_file(tag: WeightsTag, *, force: bool = False) -> Path:
    """The local file of ``tag``: the cached one, else downloaded once (``force``: downloaded again)."""
    found = None if force else cached_file(tag)
    if found is not None:
        return found
    if _offline():
        raise _not_found(tag, "downloads are off (INCEPTORCH_OFFLINE or HF_HUB_OFFLINE is set)")
    return _download_hf(tag, force) if tag.source == "timm" else _download_url(tag, local_path(tag))


def _not_found(tag: WeightsTag, reason: str) -> CheckpointError:
    return CheckpointError(f"{tag.name} is not in the local cache and {reason}: download {tag.url} "
                           f"by hand to {local_path(tag)}")


def _download_url(tag: WeightsTag, path: Path) -> Path:
    """torch.hub's download: a progress bar, a temporary file in the cache folder, renamed once the
    sha256 prefix (torchvision's file names carry it) matches; a mismatching file is deleted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(tag.url, str(path), hash_prefix=tag.hash_prefix, progress=True)
    except (urllib.error.URLError, OSError) as e:
        raise _not_found(tag, f"downloading it failed ({getattr(e, 'reason', None) or e})") from None
    except RuntimeError as e:
        if "invalid hash" not in str(e):
            raise
        raise CheckpointError(f"{tag.url} was downloaded but is not {tag.file} (its sha256 does not start "
                              f"with {tag.hash_prefix}): it was deleted and the cache left as it was; "
                              "retry, or check INCEPTORCH_WEIGHTS_URL") from None
    return path


def _download_hf(tag: WeightsTag, force: bool) -> Path:
    """huggingface_hub's download into its cache (``HF_ENDPOINT`` honoured), then the sha256 check of
    the stored blob, which the hub names by the file's sha256."""
    hub = _huggingface_hub()
    endpoint = os.environ.get("HF_ENDPOINT")
    for file in HF_FILES:
        try:
            path = Path(hub.hf_hub_download(tag.location, file, cache_dir=hf_cache(), endpoint=endpoint,
                                            force_download=force, library_name="inceptorch"))
        except hub.errors.EntryNotFoundError as e:
            if isinstance(e, hub.errors.LocalEntryNotFoundError):
                raise _not_found(tag, f"the Hugging Face hub cannot be reached ({_first_line(e)})") from None
            continue  # this repository has no such file: try the next kind
        except (hub.errors.HfHubHTTPError, OSError, ValueError) as e:
            raise _not_found(tag, f"downloading it failed ({_first_line(e)})") from None
        _check_blob(tag, path)
        return path
    raise _not_found(tag, f"{tag.location} holds none of {', '.join(HF_FILES)}")


def _check_blob(tag: WeightsTag, path: Path) -> None:
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
        raise CheckpointError(f"{tag.url} was downloaded but its sha256 does not match the hub's: it was "
                              "deleted; retry the download")


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
