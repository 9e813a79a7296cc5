"""What a data set is once opened: its class names, and per split the labels with either the images
themselves (one uint8 tensor) or their files."""

from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class Split:
    """One split: labels, and either the images themselves (uint8, N x C x H x W) or their files."""

    labels: torch.Tensor
    images: torch.Tensor | None = None
    files: list[Path] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index) -> "Split":
        index = torch.as_tensor(index, dtype=torch.long)
        return Split(self.labels[index], None if self.images is None else self.images[index],
                     None if self.files is None else [self.files[i] for i in index.tolist()])


@dataclass
class Source:
    name: str
    classes: list[str]
    channels: int
    splits: dict[str, Split]
    size: int | None = None  # side of in-memory images; None for image files of any size
