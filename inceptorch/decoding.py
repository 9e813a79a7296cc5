"""Image files decoded in DataLoader workers: one Dataset, one collate and one rule for files that cannot
be read, shared by the training batches of an image folder and by a folder decoded once into memory."""

import logging
from pathlib import Path

import torch
from PIL import Image

from .errors import DataError
from .images import read_image

log = logging.getLogger("inceptorch")


class ImageFiles(torch.utils.data.Dataset):
    """Decodes image files and transforms them: (image, label, None); for a file that cannot be decoded
    (None, label, why); with ``size`` (width, height), for a file of another size, told from its header
    before decoding, (None, label, (file, its size))."""

    def __init__(self, files, labels, transform, in_chans: int, seed: int | None = None,
                 size: tuple[int, int] | None = None):
        self.files, self.labels, self.transform, self.in_chans = files, labels, transform, in_chans
        self.seed = seed  # set per epoch; each image's augmentation is a function of (seed, index)
        self.size = size

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        label = int(self.labels[i])
        announced = image_size(self.files[i]) if self.size is not None else None
        if announced is not None and announced != self.size:
            return None, label, (self.files[i], announced)
        try:
            image = read_image(self.files[i], self.in_chans)
        except DataError as e:
            return None, label, str(e)
        if self.size is not None and image.size != self.size:  # turned by its EXIF orientation
            return None, label, (self.files[i], image.size)
        if self.seed is None:
            return self.transform(image), label, None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + i)
            return self.transform(image), label, None


def collate_images(items):
    """One tensor of the batch's decoded images (one shared-memory transfer from a worker, not one a
    file), their labels, and per file left out what went wrong (``ImageFiles``)."""
    images = [image for image, _, _ in items if image is not None]
    labels = [label for image, label, _ in items if image is not None]
    problems = [problem for image, _, problem in items if image is None]
    x = torch.stack(images) if images else torch.empty(0)
    return x, torch.tensor(labels, dtype=torch.long), problems


def decoded_batches(dataset: ImageFiles, batch_size: int, workers: int, sampler=None, pin_memory: bool = False):
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                       collate_fn=collate_images, pin_memory=pin_memory)


def report_unreadable(reason: str, strict: bool, warned: set) -> None:
    """A file that cannot be decoded: an error with ``strict``, else a warning (once a file)."""
    if strict:
        raise DataError(f"{reason} (--strict): remove or replace the file")
    if reason not in warned:
        warned.add(reason)
        log.warning("warning: %s", reason)


def image_size(path: Path) -> tuple[int, int] | None:
    """The size a file's header announces, or None for a file ``read_image`` will name as unreadable
    (a decompression bomb included: its header is all that is read here)."""
    try:
        with Image.open(path) as opened:
            return opened.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
