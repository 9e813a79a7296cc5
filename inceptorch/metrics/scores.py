"""FID, KID and the Inception Score of image folders, file lists, tensors or statistics files.

``compute`` reads each side once and gives every metric asked for; ``fid``, ``kid``,
``inception_score`` and ``feature_statistics`` are its one-metric doors. Options (``Settings``) are
pytorch-fid's where it has them: ``dims``, ``batch_size`` (its 50 on a GPU); ``mode`` picks whose
preprocessing and arithmetic (see ``inputs`` and ``formulas``).
"""

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..inference import BACKENDS, PRECISIONS
from . import statsfiles
from .collect import collect, join_processes
from .extractor import DEPTHS, approximate, fid_inception, weights_digest, weights_path
from .formulas import frechet_distance, kernel_inception_distance
from .formulas import inception_score as _inception_score
from .inputs import MODES, ImageSource, batches, image_source

log = logging.getLogger("inceptorch")

# The default batch on the CPU: the fused fp32 path ran 17.2 images/s at 10 against 15.0 at
# pytorch-fid's 50 on 2 Zen 4 cores (smaller activations stay in cache); the results do not depend on it.
CPU_BATCH = 10


@dataclass(frozen=True)
class Settings:
    """How images become features: ``mode`` (pytorch-fid, torch-fidelity, clean), ``dims`` (64, 192,
    768, 2048), ``batch_size`` (``CPU_BATCH`` on the CPU, 50 on a GPU), ``recursive`` (read class
    folders below a folder), ``weights`` (another file of the FID Inception than pytorch-fid's),
    ``precision`` and ``backend`` (approximate CPU paths), ``device``, ``workers`` (image-decoding
    processes), ``cache`` (of folders' statistics), ``strict`` (stop at an unreadable file),
    ``progress`` (the bar)."""

    dims: int = 2048
    mode: str = "pytorch-fid"
    batch_size: int | None = None  # CPU_BATCH on the CPU, pytorch-fid's 50 on a GPU
    recursive: bool = False
    weights: str | None = None
    precision: str = "fp32"
    backend: str = "torch"
    device: str = "cpu"
    workers: int = 0
    cache: bool = True
    strict: bool = False
    progress: bool = True

    def __post_init__(self):
        if self.batch_size is None:
            object.__setattr__(self, "batch_size", CPU_BATCH if self.device == "cpu" else 50)
        choices = {"mode": MODES, "dims": DEPTHS, "precision": [p for p in PRECISIONS if p != "auto"],
                   "backend": [b for b in BACKENDS if b != "auto"]}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(map(str, allowed))}, got {getattr(self, name)}")
        if self.batch_size < 1 or self.workers < 0:
            raise ConfigError("batch_size must be at least 1 and workers at least 0")

    @property
    def path(self) -> str | None:
        """The approximate path's name, or None for the exact one."""
        return f"{self.backend} {self.precision}" if approximate(self.precision, self.backend) else None


@dataclass
class Side:
    """One side's results: FID statistics, and the features and logits where KID or IS need them."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int | None
    features: np.ndarray | None = None
    logits: np.ndarray | None = None


@dataclass
class Scores:
    """The metrics asked for (None where not), the image counts, and the approximate path, if any."""

    fid: float | None = None
    kid: tuple[float, float] | None = None
    isc: tuple[float, float] | None = None
    counts: list[int | None] = field(default_factory=list)
    approximate: str | None = None


class _Extractors:
    """Builds the feature extractor on first use, once per run; int8 calibrates on the first images it reads."""

    calibration_images = 128

    def __init__(self, settings: Settings):
        self.settings, self.built = settings, {}

    def get(self, logits: bool, source: ImageSource):
        if logits not in self.built:
            s = self.settings
            calibration = None
            if s.precision == "int8":
                first = range(min(self.calibration_images, len(source)))
                calibration = [images for images, _, _ in batches(source, s.mode, 32, first) if images is not None]
            self.built[logits] = fid_inception(s.dims, logits=logits, weights=s.weights, precision=s.precision,
                                               backend=s.backend, device=s.device, calibration=calibration,
                                               batch_size=s.batch_size)
        return self.built[logits]


def _is_statistics_file(images) -> bool:
    return isinstance(images, (str, Path)) and Path(images).suffix == ".npz"


def _side(images, settings: Settings, extractors: _Extractors, features: bool = False,
          logits: bool = False) -> Side:
    if _is_statistics_file(images):
        if features or logits:
            raise ConfigError(f"{images} holds FID statistics only: KID and IS need the images themselves")
        mu, sigma, count, _ = statsfiles.load_statistics(images)
        return Side(mu, sigma, count)
    source = image_source(images, settings.recursive)
    key = None
    if settings.cache and source.files is not None and not (features or logits):
        fields = asdict(settings)
        key = statsfiles.cache_key(source.files, weights=weights_digest(weights_path(settings.weights)),
                                   **{k: fields[k] for k in ("mode", "dims", "precision", "backend", "device")})
        hit = statsfiles.cached(key)
        if hit is not None:
            mu, sigma, count, skipped = hit
            _report(source.name, len(source), skipped)
            return Side(mu, sigma, count)
    got = collect(source, extractors.get(logits, source), mode=settings.mode, dims=settings.dims,
                  batch_size=settings.batch_size, keep_features=features, keep_logits=logits,
                  strict=settings.strict, progress=settings.progress, workers=settings.workers,
                  device=settings.device, fixed_batch=settings.path is not None)
    mu, sigma = got.mean_and_covariance()
    if key is not None and join_processes(settings.device).main:
        statsfiles.store(key, mu, sigma, got.count, got.skipped)
    _report(source.name, len(source), got.skipped)
    return Side(mu, sigma, got.count, got.features, got.logits)


def _report(name: str, total: int, skipped: list[str]) -> None:
    if skipped:
        log.warning("%d of the %d files of %s could not be read and were left out", len(skipped), total, name)


def _warn_if_singular(side: Side, dims: int, name) -> None:
    if side.count is not None and side.count <= dims:
        log.warning("%s: %d images give a singular covariance of %d features, so FID is unreliable: use more "
                    "images than features, or a smaller --dims", name, side.count, dims)


def compute(a, b=None, *, fid: bool = True, kid: bool = False, isc: bool = False, kid_subsets: int = 100,
            kid_subset_size: int = 1000, isc_splits: int = 10, seed: int = 2020, save_stats=None,
            **options) -> Scores:
    """Every metric asked for, ``a`` against ``b`` (IS: of ``a``); each side a folder, image files,
    tensors, or (for FID) a statistics ``.npz``. ``save_stats``: write ``a``'s statistics there."""
    settings = Settings(**options)
    if (fid or kid) and b is None:
        raise ConfigError("FID and KID compare two sets of images: give a second folder or statistics file")
    extractors = _Extractors(settings)
    first = _side(a, settings, extractors, features=kid, logits=isc)
    scores = Scores(counts=[first.count], approximate=settings.path)
    if save_stats is not None and join_processes(settings.device).main:
        statsfiles.save_statistics(save_stats, first.mu, first.sigma, first.count)
    if b is not None and (fid or kid):
        second = _side(b, settings, extractors, features=kid)
        scores.counts.append(second.count)
        if fid:
            for side, name in ((first, a), (second, b)):
                _warn_if_singular(side, len(side.mu), name if isinstance(name, (str, Path)) else "the images")
            scores.fid = frechet_distance(first.mu, first.sigma, second.mu, second.sigma, settings.mode,
                                          fast=settings.path is not None)
        if kid:
            scores.kid = kernel_inception_distance(first.features, second.features, kid_subsets, kid_subset_size, seed)
    if isc:
        scores.isc = _inception_score(first.logits, isc_splits, seed)
    return scores


def fid(a, b, **options) -> float:
    """The Frechet Inception Distance between ``a`` and ``b`` (folders, files, tensors or ``.npz``)."""
    return compute(a, b, **options).fid


def kid(a, b, *, subsets: int = 100, subset_size: int = 1000, seed: int = 2020, **options) -> tuple[float, float]:
    """The Kernel Inception Distance's mean and standard deviation over ``subsets`` random subsets."""
    return compute(a, b, fid=False, kid=True, kid_subsets=subsets, kid_subset_size=subset_size, seed=seed,
                   **options).kid


def inception_score(images, *, splits: int = 10, seed: int = 2020, **options) -> tuple[float, float]:
    """The Inception Score's mean and standard deviation over ``splits`` parts."""
    return compute(images, fid=False, isc=True, isc_splits=splits, seed=seed, **options).isc


def feature_statistics(images, **options) -> tuple[np.ndarray, np.ndarray, int]:
    """The FID statistics of ``images``: mean and covariance of the features (float64), image count."""
    settings = Settings(**options)
    side = _side(images, settings, _Extractors(settings))
    return side.mu, side.sigma, side.count
