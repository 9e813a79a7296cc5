"""The FID Inception as the metrics run it: its features at one depth (and the logits IS needs), on the
project's fast CPU path.

Only the layers up to the one the depth reads run (``--dims 64`` stops after the first pool). The
exact modes run the fused fp32 path (batch norm folded, oneDNN convolutions, channels-last): its
features stay within 1e-4 of pytorch-fid's eager ones. ``precision`` bf16 or int8 and ``backend``
openvino are approximate paths, judged by their FID's deviation from the exact one
(``benchmarks/fid.py``), never by top-1 agreement.
"""

import functools
import hashlib
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import hub
from ..errors import ConfigError
from ..inference import optimize_for_inference
from ..models import create_model, default_cfg
from ..models.inception_v3 import FID_FEATURE_LAYERS

DEPTHS = tuple(FID_FEATURE_LAYERS)  # 64, 192, 768, 2048: pytorch-fid's --dims
LOGITS = 1008  # the FID Inception's classes (1000 of ImageNet and 8 unused)
MODEL = "inception_v3_fid"


class InceptionFeatures(nn.Module):
    """The FID Inception's layers up to the depth ``dims`` reads, its map averaged over the grid.

    With ``logits=True`` the network runs to the end and the 1008 logits follow the features in the
    same output row: torch-fidelity's "unbiased" logits, the pooled features times ``fc``'s weight
    without its bias, which its Inception Score reads.
    """

    def __init__(self, model: nn.Module, dims: int, logits: bool = False):
        super().__init__()
        if dims not in FID_FEATURE_LAYERS:
            raise ConfigError(f"--dims must be one of {', '.join(map(str, DEPTHS))} (pytorch-fid's), got {dims}")
        layers = model.feature_layers()
        names = [name for name, _ in layers]
        last = names.index(FID_FEATURE_LAYERS[2048 if logits else dims])
        self.tap = names.index(FID_FEATURE_LAYERS[dims])
        self.body = nn.Sequential(OrderedDict(layers[:last + 1]))
        self.logits = logits
        if logits:
            self.register_buffer("class_weight", model.fc.weight.detach().clone())

    def forward(self, x):
        features = None
        for index, layer in enumerate(self.body):
            x = layer(x)
            if index == self.tap:
                features = F.adaptive_avg_pool2d(x, 1).flatten(1)
        if not self.logits:
            return features
        pooled = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return torch.cat([features, pooled @ self.class_weight.T], dim=1)


def approximate(precision: str, backend: str) -> bool:
    """Whether a path gives approximate features (anything but fp32 through torch)."""
    return (precision, backend) != ("fp32", "torch")


def fid_inception(dims: int, *, logits: bool = False, weights=None, precision: str = "fp32",
                  backend: str = "torch", device: str = "cpu", calibration=None, batch_size: int = 1) -> nn.Module:
    """The feature extractor: pytorch-fid's weights (``weights``: another file of the same layout),
    on the fast path for ``precision`` and ``backend`` (approximate ones compiled for ``batch_size``
    images, the shape ``collect`` pads every batch to); on a GPU, the eager model."""
    model = create_model(MODEL, num_classes=LOGITS, weights=weights_path(weights)).eval()
    features = InceptionFeatures(model, dims, logits).eval()
    if device != "cpu":
        if approximate(precision, backend):
            raise ConfigError("--precision and --backend choose CPU paths: leave them out with --device cuda")
        return features.to(device)
    example = torch.zeros(batch_size if approximate(precision, backend) else 1, 3, 299, 299)
    return optimize_for_inference(features, example, precision=precision, backend=backend, calibration=calibration)


def weights_path(weights=None) -> Path:
    """The weights file the metrics use: ``weights``, else the pretrained tag's (found or downloaded)."""
    return Path(weights) if weights is not None else hub.weights_file(default_cfg(MODEL))


@functools.cache
def _digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_digest(path: Path) -> str:
    """The sha256 of a weights file, computed once per process per file version."""
    stat = path.stat()
    return _digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
