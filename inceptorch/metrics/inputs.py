"""The images a metric reads, each prepared for the FID Inception as one reference tool prepares it.

A source is a folder (its top level, as pytorch-fid reads it, or every class folder below it), a list
of image files, or tensors (one image, a batch, or a list of them: uint8 in [0, 255] or float in
[0, 1], as torchmetrics takes them). Each image is resized on its own, so a folder of mixed sizes
gives what each tool gives at batch size 1, and then batched.

The three modes are three tools' preprocessing, reproduced step for step:

- ``pytorch-fid``: PIL's RGB conversion, [0, 1] floats, bilinear resize to 299 (``align_corners=False``,
  no antialiasing), then 2x - 1;
- ``torch-fidelity``: uint8 pixels, TensorFlow 1's bilinear resize (source pixel = output pixel x
  scale, no half-pixel offset), then (x - 128) / 128;
- ``clean`` (clean-fid): each channel resized as a float image by PIL's bicubic filter, clipped to
  [0, 255], then (x - 128) / 128.

Files are decoded as the tools decode them (``Image.open(path).convert("RGB")``: no EXIF rotation,
transparency dropped), not with ``images.read_image``, whose corrections would change the numbers.
"""

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ConfigError, DataError

MODES = ("pytorch-fid", "torch-fidelity", "clean")
SIDE = 299  # the FID Inception's input side in every tool
# pytorch-fid's suffixes, matched as its glob matches them (case-sensitively, so IMG.JPG is not read).
SUFFIXES = ("bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp")


def folder_files(folder: Path, recursive: bool = False) -> list[Path]:
    """The image files pytorch-fid reads in ``folder`` (its top level), sorted; ``recursive``: below it too."""
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.suffix[1:] in SUFFIXES and p.is_file())


@dataclass(frozen=True)
class ImageSource:
    """The images of one side of a metric: files, or tensors of single images (C, H, W)."""

    items: tuple  # Path or torch.Tensor, in order
    name: str  # for messages and the progress bar
    folder: Path | None = None  # where the files were found, when a folder was given

    def __len__(self) -> int:
        return len(self.items)

    @property
    def files(self) -> list[Path] | None:
        """The files, when the source is made of files only (the statistics cache keys on them)."""
        return list(self.items) if all(isinstance(i, Path) for i in self.items) else None


def image_source(images, recursive: bool = False) -> ImageSource:
    """A folder, a list of files or tensors -> ``ImageSource``; an empty or missing folder is a ``DataError``."""
    if isinstance(images, torch.Tensor):
        batch = images.unsqueeze(0) if images.dim() == 3 else images
        _check_tensor(batch)
        return ImageSource(tuple(batch), f"{len(batch)} images")
    if isinstance(images, (str, Path)):
        folder = Path(images)
        if not folder.is_dir():
            raise DataError(f"{folder}: no such folder: give a folder of images, or a statistics .npz")
        files = folder_files(folder, recursive)
        if not files:
            where = "in it or its subfolders" if recursive else "at its top level (--recursive reads subfolders)"
            raise DataError(f"{folder} holds no image files ({', '.join(SUFFIXES)}) {where}")
        return ImageSource(tuple(files), str(folder), folder)
    items = []
    for item in images:
        if isinstance(item, torch.Tensor):
            batch = item.unsqueeze(0) if item.dim() == 3 else item
            _check_tensor(batch)
            items += list(batch)
        else:
            items.append(Path(item))
    if not items:
        raise DataError("no images given: pass a folder, image files or tensors")
    return ImageSource(tuple(items), f"{len(items)} images")


def _check_tensor(batch: torch.Tensor) -> None:
    if batch.dim() != 4 or batch.shape[1] != 3:
        raise ConfigError(f"image tensors must be (3, H, W) or (N, 3, H, W) RGB, got shape {tuple(batch.shape)}")
    if batch.dtype != torch.uint8 and not batch.is_floating_point():
        raise ConfigError(f"image tensors must be uint8 in [0, 255] or float in [0, 1], got {batch.dtype}")


def decode(path: Path) -> torch.Tensor:
    """A file's pixels as the tools read them, a (3, H, W) uint8 tensor; ``DataError`` if unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                pixels = np.array(opened.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0][:100]
        raise DataError(f"{path}: cannot read it as an image ({reason})") from None
    return torch.from_numpy(pixels).permute(2, 0, 1)


def _as_uint8(image: torch.Tensor) -> torch.Tensor:
    if image.dtype == torch.uint8:
        return image
    return (image.float().clamp(0, 1) * 255).round().to(torch.uint8)


def tf1_bilinear(image: torch.Tensor, side: int = SIDE) -> torch.Tensor:
    """TensorFlow 1's ``resize_bilinear`` (no corner alignment, no half-pixel centres) of a float
    (C, H, W) image: output pixel i reads source position i x (in / out), between its two neighbours."""

    def positions(size_in: int):
        where = torch.arange(side, dtype=torch.float32) * torch.tensor(size_in / side, dtype=torch.float32)
        low = where.long()
        return low, (low + 1).clamp_max(size_in - 1), where - low.float()

    y0, y1, dy = positions(image.shape[1])
    x0, x1, dx = positions(image.shape[2])
    def between(a, b, weight):  # a + (b - a) w, in this order of operations, as TensorFlow rounds it
        return a + (b - a) * weight

    top = between(image[:, y0][:, :, x0], image[:, y0][:, :, x1], dx)
    bottom = between(image[:, y1][:, :, x0], image[:, y1][:, :, x1], dx)
    return between(top, bottom, dy[:, None])


def clean_resize(pixels: np.ndarray, side: int = SIDE) -> np.ndarray:
    """clean-fid's resize of an (H, W, 3) uint8 image: each channel as a 32-bit float PIL image,
    bicubic to ``side`` x ``side``, clipped to [0, 255]; an (side, side, 3) float32 array."""
    channels = [np.asarray(Image.fromarray(pixels[:, :, c].astype(np.float32), mode="F")
                           .resize((side, side), resample=Image.BICUBIC)).clip(0, 255) for c in range(3)]
    return np.stack(channels, axis=2).astype(np.float32)


def prepared(image: torch.Tensor, mode: str) -> torch.Tensor:
    """One (3, H, W) image (uint8, or float in [0, 1]) -> the (3, 299, 299) input ``mode``'s tool feeds."""
    if mode == "pytorch-fid":
        unit = image.float() / 255 if image.dtype == torch.uint8 else image.float()
        return F.interpolate(unit[None], size=(SIDE, SIDE), mode="bilinear", align_corners=False)[0] * 2 - 1
    if mode == "torch-fidelity":
        return (tf1_bilinear(_as_uint8(image).float()) - 128) / 128
    if mode == "clean":
        resized = clean_resize(_as_uint8(image).permute(1, 2, 0).numpy())
        return (torch.from_numpy(resized).permute(2, 0, 1) - 128) / 128
    raise ConfigError(f"unknown mode '{mode}': choose one of {', '.join(MODES)}")


class PreparedImages(torch.utils.data.Dataset):
    """Each image of a source, decoded and prepared; an unreadable file gives its error instead."""

    def __init__(self, source: ImageSource, mode: str):
        self.source, self.mode = source, mode

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        item = self.source.items[index]
        try:
            image = decode(item) if isinstance(item, Path) else item
        except DataError as e:
            return index, None, str(e)
        return index, prepared(image, self.mode), None


def batches(source: ImageSource, mode: str, batch_size: int, indices=None, workers: int = 0):
    """Yields (batch of prepared images, their positions in the source, errors of the files skipped),
    in the source's order; ``indices``: only those images (a process's shard)."""
    dataset = PreparedImages(source, mode)
    if indices is not None:
        dataset = torch.utils.data.Subset(dataset, list(indices))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                         collate_fn=_stack_readable)
    yield from loader


def _stack_readable(samples):
    readable = [(index, image) for index, image, _ in samples if image is not None]
    errors = [error for _, _, error in samples if error is not None]
    images = torch.stack([image for _, image in readable]) if readable else None
    return images, [index for index, _ in readable], errors
