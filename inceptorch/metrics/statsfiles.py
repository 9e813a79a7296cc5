"""FID statistics on disk: ``.npz`` files in pytorch-fid's format, and the cache of a folder's statistics.

pytorch-fid's format is an ``.npz`` with ``mu`` and ``sigma`` (float64); inceptorch adds the image
count ``n``, which pytorch-fid ignores, so files go both ways. The cache keeps a file list's
statistics under ``$XDG_CACHE_HOME/inceptorch/fid_statistics`` (``~/.cache``), keyed by everything the
numbers depend on: mode, feature depth, the weights' sha256, precision, backend, device, and each
file's path, size and modification time, so that a reference set is read once and a changed folder
is read again. The cache keeps the ``CACHE_ENTRIES`` entries used last (an entry of 2048 features
is about 30 MB) and deletes older ones when it stores a new one.
"""

import hashlib
import io
import json
import os
import time
import zipfile
from pathlib import Path

import numpy as np

from .. import hub
from ..errors import DataError
from ..weights import write_atomically

CACHE_ENTRIES = 32  # at most ~1 GB of 2048-feature statistics


def save_statistics(path, mu: np.ndarray, sigma: np.ndarray, count: int | None = None,
                    skipped: list[str] = ()) -> Path:
    """Writes ``mu``, ``sigma`` (and the image count) as pytorch-fid's compressed ``.npz``, atomically."""
    path = Path(path)
    if path.suffix != ".npz":
        raise DataError(f"{path}: statistics files end in .npz (pytorch-fid's format): rename it")
    buffer = io.BytesIO()
    extra = {"n": np.int64(count)} if count is not None else {}
    np.savez_compressed(buffer, mu=mu, sigma=sigma, skipped=np.array(list(skipped), dtype=str), **extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, buffer.getvalue())
    return path


def load_statistics(path) -> tuple[np.ndarray, np.ndarray, int | None, list[str]]:
    """``mu``, ``sigma``, the image count (None in pytorch-fid's own files) and the files skipped."""
    try:
        with np.load(path, allow_pickle=False) as f:
            mu, sigma = f["mu"][:], f["sigma"][:]
            count = int(f["n"]) if "n" in f.files else None
            skipped = [str(s) for s in f["skipped"]] if "skipped" in f.files else []
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a statistics file with mu and sigma ({e}): write one with "
                        "--save-stats or pytorch-fid's --save-stats") from None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise DataError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not fit together")
    return mu, sigma, count, skipped


def cache_folder() -> Path:
    return hub.inceptorch_cache() / "fid_statistics"


def cache_key(files: list[Path], **settings) -> str:
    """A digest of the settings and of every file's resolved path, size and modification time."""
    listed = []
    for file in files:
        try:
            stat = file.stat()
            listed.append([str(file.resolve()), stat.st_size, stat.st_mtime_ns])
        except OSError:
            listed.append([str(file), None, None])  # unreadable now: keyed as such
    text = json.dumps({"settings": settings, "files": listed}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cached(key: str):
    """The cached (mu, sigma, count, skipped) under ``key``, or None."""
    path = cache_folder() / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        statistics = load_statistics(path)
    except DataError:
        return None  # a damaged entry is recomputed and overwritten
    _mark_used(path)
    return statistics


def store(key: str, mu, sigma, count: int, skipped: list[str]) -> None:
    """Stores an entry, then deletes all but the ``CACHE_ENTRIES`` used last."""
    _mark_used(save_statistics(cache_folder() / f"{key}.npz", mu, sigma, count, skipped))
    entries = sorted(cache_folder().glob("*.npz"), key=_last_used, reverse=True)
    for stale in entries[CACHE_ENTRIES:]:
        stale.unlink(missing_ok=True)


def _mark_used(path: Path) -> None:
    """Stamps ``path`` as used now, the last to be pruned. Not ``touch`` nor the write's own time: the
    kernel stamps files from a coarse clock (a tick of milliseconds), so a read just after another
    entry's store could get the same time and lose the order; ``time.time_ns`` keeps it."""
    now = time.time_ns()
    os.utime(path, ns=(now, now))


def _last_used(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0  # deleted meanwhile by another process
