"""Checks a path a command will write, once and before any work: one that cannot be written is a
one-line error naming why, not a traceback after the model was built, drawn or timed."""

import tempfile
from pathlib import Path

from .errors import ConfigError


def writable_file(path, suffixes: tuple[str, ...] = ()) -> Path:
    """``path`` as a Path, or a ``ConfigError`` saying why no file can be written there: a suffix not in
    ``suffixes`` (when given), a folder in its place, a file where a folder of it should be, or a folder
    in which no file can be created. Missing folders are fine: the writer creates them."""
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise ConfigError(f"{path} must end in {', '.join(suffixes)}: the suffix chooses the format")
    if path.is_dir():
        raise ConfigError(f"{path} is a folder: name a file inside it")
    folder = path.parent
    while not folder.exists():  # the nearest folder that exists; the writer creates the rest
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{path} cannot be written: {folder} is a file, not a folder")
    # Creating a file is the test: os.access says yes to root on a read-only file system or in /proc.
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ConfigError(f"{path} cannot be written: no file can be created in {folder} ({e.strerror})") from None
    return path
