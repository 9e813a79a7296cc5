"""An image folder decoded once into one uint8 tensor per split, when its images share one size and fit
in memory (CIFAR-10 as JPEG files): it then trains through the same in-memory batches as the IDX sets
instead of decoding every file every epoch. Decoded by ``decoding.ImageFiles``, as the streamed files."""

import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from .decoding import ImageFiles, decoded_batches, image_size, report_unreadable
from .errors import DataError
from .splits import Source, Split

log = logging.getLogger("inceptorch")


def _uint8_hwc(image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy())


def _available_memory() -> int:
    """Bytes of memory available to new data (Linux's MemAvailable; free pages elsewhere)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def hold_in_memory(source: Source, config) -> Source:
    """Decodes the image files of every split once into one uint8 tensor each, when they all share one
    size and fit: by default ``config.cache_limit_mb`` decoded, with ``cache_images`` True up to 3/4 of
    the available memory. Otherwise returns the source as it is, files streamed, and says why.

    Unreadable files are left out with a warning, as the streaming loader does (``strict``: an error).
    """
    splits = source.splits
    files = [f for split in splits.values() for f in split.files]
    first = next((f for f in files if image_size(f)), None)
    if first is None:
        return source
    size = image_size(first)
    forced = config.cache_images is True
    needed = 3 * size[0] * size[1] * len(files)
    limit = _available_memory() * 3 // 4 if forced else int(config.cache_limit_mb * 2 ** 20)
    notice = log.warning if forced else log.info
    if needed > limit:
        notice("%s: its %d images would take %.0f MB decoded, over the %s of %.0f MB: streaming them from "
               "the files", source.name, len(files), needed / 2 ** 20,
               "memory available" if forced else "--cache-limit-mb", limit / 2 ** 20)
        return source
    started = time.perf_counter()
    chunks, decoded, warned = [], [], set()  # batches of decoded images; per file, whether it was decoded
    # labels: each file's index, so that the files left out of a batch are known
    dataset = ImageFiles(files, range(len(files)), _uint8_hwc, 3, size=size)
    for images, indices, problems in decoded_batches(dataset, 256, config.workers):
        kept = set(indices.tolist())
        for problem in problems:
            if isinstance(problem, tuple):
                notice("%s: its images differ in size (%s is %dx%d, %s %dx%d): streaming them from the files",
                       source.name, first, *size, problem[0], *problem[1])
                return source
            report_unreadable(problem, config.strict, warned)
        decoded.extend(i in kept for i in range(len(decoded), len(decoded) + len(indices) + len(problems)))
        if len(images):
            chunks.append(images)
    images = torch.cat(chunks).permute(0, 3, 1, 2).contiguous()
    position = torch.cumsum(torch.tensor(decoded), 0) - 1  # of each decoded file in ``images``
    start, held = 0, {}
    for name, split in splits.items():
        kept = [i for i in range(len(split)) if decoded[start + i]]
        if not kept:
            raise DataError(f"none of the {len(split)} images of the {name} split of {source.name} could be "
                            "decoded: check the folder")
        held[name] = Split(split.labels[kept], images[position[[start + i for i in kept]]],
                           [split.files[i] for i in kept])
        start += len(split)
    megabytes = sum(s.images.numel() for s in held.values()) / 2 ** 20
    log.info("%s: %d images held in memory as uint8 tensors, %.0f MB (decoded in %.1f s)", source.name,
             len(images), megabytes, time.perf_counter() - started)
    return Source(source.name, source.classes, 3, held, min(size))
