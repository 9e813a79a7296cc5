"""Data for training and evaluation: find the images, hold or stream them, shape them for the model.

Small images (the built-in sample, MNIST, Fashion-MNIST, CIFAR-10, .npz files) are held in memory
as one uint8 tensor; each batch is cut from it, converted, resized, normalized and augmented as a
whole. Image folders are decoded file by file in DataLoader workers. Either way the order of an
epoch and its augmentations are a function of (seed, epoch), so a resumed run sees the same batches
as an uninterrupted one, and under torchrun each process takes its share of every global batch.
"""

import gzip
import logging
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError, DataError, InputSizeError
from .predict import IMAGE_SUFFIXES, is_listed_image, read_image
from .transfer import CROP_FRACTION, Preprocessing

log = logging.getLogger("inceptorch")

BUILTIN = Path(__file__).parent / "sample" / "builtin.npz"
SPLIT_SEED = 0  # held-out validation sets never change with --seed, so evaluate finds the same images
MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
IDX_SETS = {"mnist": ("MNIST", MNIST_CLASSES), "fashion-mnist": ("FashionMNIST", FASHION_CLASSES)}
IDX_FILES = {"train": "train-{}-ubyte", "test": "t10k-{}-ubyte"}
KNOWN_SETS = ("builtin", "mnist", "fashion-mnist", "cifar10")


# ---------------------------------------------------------------------------------------------------
# Sources: what the images are, before any shaping for a model


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


def open_source(config, splits=("train", "val")) -> Source:
    """Reads ``config.data`` and returns the requested splits ('train', 'val', 'test').

    A data set without its own validation split gets one held out from its training split
    (``config.val_split``: a fraction, or a number of images), the same for every seed.
    """
    data = config.data
    if data == "builtin":
        source = _from_npz(BUILTIN, "builtin")
    elif data in IDX_SETS:
        source = _from_idx(data, config.data_root, splits)
    elif data == "cifar10":
        source = _from_cifar10(config.data_root, splits)
    elif Path(data).is_dir():
        source = _from_folder(Path(data))
    elif data.endswith(".npz"):
        if not Path(data).is_file():
            raise DataError(f"data file {data} does not exist: check the path given to --data")
        source = _from_npz(Path(data), Path(data).stem)
    else:
        raise DataError(f"data '{data}' is neither one of {', '.join(KNOWN_SETS)} nor an existing folder or "
                        ".npz file: check the path given to --data")
    if "val" in splits and "val" not in source.splits:
        source.splits["train"], source.splits["val"] = _hold_out(source.splits["train"], config.val_split,
                                                                 data)
    if "test" in splits and "test" not in source.splits:
        raise DataError(f"{data} has no test split here: score the validation split instead (--split val)")
    source.splits = {name: source.splits[name] for name in splits}
    for name, limit in (("train", config.train_samples), ("val", config.val_samples)):
        if limit and name in source.splits:
            source.splits[name] = source.splits[name].take(range(min(limit, len(source.splits[name]))))
    for name, split in source.splits.items():
        if len(split) == 0:
            raise DataError(f"the {name} split of {data} holds no images: add images or change --val-split")
    return source


def _hold_out(train: Split, val_split: float, data: str) -> tuple[Split, Split]:
    count = round(val_split * len(train)) if val_split < 1 else int(val_split)
    if not 1 <= count < len(train):
        raise ConfigError(f"--val-split {val_split} leaves no training or no validation images out of the "
                          f"{len(train)} of {data}: use a fraction such as 0.1")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(SPLIT_SEED))
    return train.take(order[count:]), train.take(order[:count])


def _in_memory(images: np.ndarray) -> torch.Tensor:
    """N x H x W (grey) or N x H x W x C uint8 arrays -> N x C x H x W uint8 tensor."""
    images = torch.from_numpy(np.array(images))  # a writable copy: IDX arrays are views of read-only bytes
    return images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2).contiguous()


def _from_npz(path: Path, name: str) -> Source:
    """An .npz with ``train_images`` and ``train_labels`` (optionally ``val_`` and ``test_`` ones too, and
    ``class_names``)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {key: f[key] for key in f.files}
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is not a readable .npz file ({e}): re-create it") from None
    if "train_images" not in arrays or "train_labels" not in arrays:
        raise DataError(f"{path} needs arrays train_images (N x H x W [x C], uint8) and train_labels (N)")
    splits = {}
    for split in ("train", "val", "test"):
        if f"{split}_images" in arrays:
            images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
            if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) != len(labels):
                raise DataError(f"{path}: {split}_images must be uint8 N x H x W [x C] with one label each")
            splits[split] = Split(torch.from_numpy(labels.astype(np.int64)), _in_memory(images))
    train = splits["train"]
    classes = ([str(c) for c in arrays["class_names"]] if "class_names" in arrays
               else [str(c) for c in range(int(train.labels.max()) + 1)])
    return Source(name, classes, train.images.shape[1], splits, train.images.shape[-1])


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format), gzipped or not: big-endian magic and sizes, then uint8 values."""
    try:
        with (gzip.open(path) if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path} is not a readable IDX file ({e}): re-download it") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or not 1 <= raw[3] <= 3:
        raise DataError(f"{path} is not an IDX file of uint8 values (wrong magic number): re-download it")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated (incomplete header): re-download it")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != math.prod(dims):
        raise DataError(f"{path} holds {len(raw) - header} values where its header announces "
                        f"{' x '.join(map(str, dims))}: the file is truncated or corrupt, re-download it")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _files_needed(splits) -> set[str]:
    """The splits to read from files: a held-out validation split comes out of the training one."""
    return {"train" if split == "val" else split for split in splits}


def _idx_file(folder: Path, split: str, kind: str) -> Path:
    stem = IDX_FILES[split].format(kind)
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"the {split} split is missing: neither {stem} nor {stem}.gz is in {folder}")


def _idx_folder(data: str, data_root: str | None) -> Path:
    """The folder holding the IDX files: torchvision's ``root/MNIST/raw`` layout, or the files directly."""
    folder_name, _ = IDX_SETS[data]
    if data_root is None:
        data_root = _download_root()
        _download(data, data_root)
    root = Path(data_root)
    for folder in (root / folder_name / "raw", root / folder_name, root / "raw", root):
        if any(folder.glob("train-images-idx3-ubyte*")) or any(folder.glob("t10k-images-idx3-ubyte*")):
            return folder
    raise DataError(f"no {data} IDX files under {root}: expected {root / folder_name / 'raw'}/"
                    "train-images-idx3-ubyte[.gz] (torchvision's layout)")


def _from_idx(data: str, data_root: str | None, splits) -> Source:
    folder = _idx_folder(data, data_root)
    loaded = {}
    for split in _files_needed(splits):
        images_path = _idx_file(folder, split, "images-idx3")
        labels_path = _idx_file(folder, split, "labels-idx1")
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{images_path} and {labels_path} do not match: {images.shape} images, "
                            f"{labels.shape} labels; re-download them")
        loaded[split] = Split(torch.from_numpy(labels.astype(np.int64)), _in_memory(images))
    return Source(data, IDX_SETS[data][1], 1, loaded, 28)


def _download_root() -> str:
    return str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "inceptorch" / "data")


def _download(data: str, root: str) -> None:
    """Fetches a torchvision data set into the cache (a no-op when it is there already)."""
    import torchvision.datasets as tvd

    dataset = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[data]
    try:
        for train in (True, False):
            dataset(root, train=train, download=True)
    except (OSError, RuntimeError) as e:  # no network, or a download that failed its checksum
        raise DataError(f"could not download {data} into {root} ({type(e).__name__}): with no network, "
                        "pass --data-root with a local copy, or train on the built-in sample (--data builtin)"
                        ) from None


def _from_cifar10(data_root: str | None, splits) -> Source:
    import torchvision.datasets as tvd

    if data_root is None:
        data_root = _download_root()
        _download("cifar10", data_root)
    loaded = {}
    for split in _files_needed(splits):
        try:
            dataset = tvd.CIFAR10(data_root, train=split == "train", download=False)
        except RuntimeError:
            raise DataError(f"no CIFAR-10 {split} split in {Path(data_root) / 'cifar-10-batches-py'}: give "
                            "the folder that holds cifar-10-batches-py with --data-root") from None
        loaded[split] = Split(torch.tensor(dataset.targets), _in_memory(dataset.data))
    return Source("cifar10", list(dataset.classes), 3, loaded, 32)


def _class_files(folder: Path, classes: list[str]) -> Split:
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (folder / name).rglob("*") if is_listed_image(p))
        if not found:
            raise DataError(f"class folder {folder / name} holds no images "
                            f"({', '.join(sorted(IMAGE_SUFFIXES))}): add images or remove the folder")
        files += found
        labels += [label] * len(found)
    return Split(torch.tensor(labels), files=files)


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _from_folder(root: Path) -> Source:
    """``root/<class>/*`` or ``root/train/<class>/*`` with ``root/val`` (and ``root/test``) beside it."""
    top = _subfolders(root)
    layout_with_splits = "train" in top and _subfolders(root / "train")
    base = root / "train" if layout_with_splits else root
    classes = _subfolders(base)
    if not classes:
        raise DataError(f"image folder {base} has no class folders: put the images of each class in "
                        f"{base}/<class name>/")
    splits = {"train": _class_files(base, classes)}
    for split in ("val", "test") if layout_with_splits else ():
        if (root / split).is_dir():
            extra = sorted(set(_subfolders(root / split)) - set(classes))
            if extra:
                raise DataError(f"{root / split} has class folders that {base} lacks: {', '.join(extra)}")
            present = [c for c in classes if (root / split / c).is_dir()]
            split_files = _class_files(root / split, present)
            split_files.labels = torch.tensor([classes.index(present[i])
                                               for i in split_files.labels.tolist()])
            splits[split] = split_files
    return Source(root.name, classes, 3, splits)


# ---------------------------------------------------------------------------------------------------
# Preprocessing: how images become model inputs (saved in checkpoints, so evaluate and predict reuse it)


def preprocessing(source: Source, model, config) -> Preprocessing:
    """Input size and normalization for ``model`` on ``source``, with the size checked.

    Images held in memory are resized whole; image files are resized to side / 0.875 and center-cropped
    (randomly cropped in training with ``--augment crop``), as ImageNet models are evaluated.
    """
    size = config.image_size
    if size is None:
        small_model = model.default_input_size <= 32
        size = source.size if source.size and small_model else model.default_input_size
    name = getattr(model, "model_name", type(model).__name__)
    smallest, aux_note, aux_fix = model.min_input_size, "", ""
    if getattr(config, "aux_weight", 0) and model.has_aux:
        from .analysis import min_input_size

        with_aux = min_input_size(model, train=True)
        if with_aux > smallest:  # the aux head reads a mid-network map and needs its full size
            smallest, aux_note, aux_fix = with_aux, " when training its auxiliary head", \
                ", or turn the aux head off with --aux-weight 0"
    if size < smallest:
        origin = (f"--image-size {size}" if config.image_size
                  else f"the images of {source.name} ({size}x{size})")
        suggested = max(smallest, min(model.default_input_size, 4 * smallest))
        raise InputSizeError(f"{origin} is smaller than {name}'s minimum input of {smallest}x{smallest}"
                             f"{aux_note}: pass --image-size {suggested} or more{aux_fix}")
    resize = size if source.size else round(size / CROP_FRACTION)
    mean, std = config.mean, config.std
    if mean is None or std is None:
        data_mean, data_std = channel_stats(source.splits["train"], model.in_chans, size, resize)
        mean, std = mean or data_mean, std or data_std
    return Preprocessing(size, resize, _per_channel(mean, model.in_chans), _per_channel(std, model.in_chans))


def _per_channel(values, channels: int) -> tuple[float, ...]:
    return tuple(float(v) for v in values) * (channels if len(values) == 1 else 1)


def match_channels(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Grey -> RGB by repeating; RGB -> grey by luminance (ITU-R 601)."""
    if x.shape[1] == in_chans:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, in_chans, -1, -1)
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def channel_stats(split: Split, in_chans: int, crop: int, resize: int, sample: int = 256
                  ) -> tuple[list, list]:
    """Mean and std per model input channel, of all images in memory or of a sample of image files."""
    if split.images is not None:
        total, total_sq, count = torch.zeros(in_chans, dtype=torch.float64), 0, 0
        for chunk in split.images.split(4096):
            x = match_channels(chunk.float() / 255, in_chans).double()
            total = total + x.sum((0, 2, 3))
            total_sq = total_sq + (x * x).sum((0, 2, 3))
            count += x[:, 0].numel()
    else:
        every = max(1, len(split) // sample)
        decode = ImageFiles(split.files[::every], split.labels[::every],
                            Preprocessing(crop, resize, (), ()).transform(normalize=False), in_chans)
        images = [item[0] for item in (decode[i] for i in range(len(decode))) if item[0] is not None]
        if not images:
            raise DataError(f"none of the {len(decode)} sampled training images could be decoded: check "
                            "the folder")
        x = torch.stack(images).double()
        total, total_sq, count = x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), x[:, 0].numel()
    mean = total / count
    std = (total_sq / count - mean ** 2).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()


# ---------------------------------------------------------------------------------------------------
# Batches


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A seed for one epoch of one random stream (the data order is stream 0, a process's own randomness
    stream rank + 1), so that every epoch can be replayed alone."""
    return (seed * 1_000_003 + epoch) * 1_009 + stream


def shard(n: int, batch_size: int, *, shuffle: bool, seed: int, epoch: int, rank: int, world: int
          ) -> torch.Tensor:
    """This process's indices for one epoch.

    Training: a permutation of (seed, epoch), cut to whole global batches, then every world-th index, so
    that the processes together see exactly the batches one process would. Evaluation: every index once.
    """
    if not shuffle:
        return torch.arange(rank, n, world)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))
    usable = n - n % batch_size if n >= batch_size else n - n % world
    return order[:usable][rank::world]


@dataclass
class Batches:
    """Common state of the two loaders: which shard of which split, in what order, for which epoch."""

    split: Split
    prep: Preprocessing
    batch_size: int  # per process
    train: bool
    augment: tuple[str, ...] = ()
    seed: int = 0
    rank: int = 0
    world: int = 1
    epoch: int = 0
    warned: set = field(default_factory=set)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> torch.Tensor:
        return shard(len(self.split), self.batch_size * self.world, shuffle=self.train, seed=self.seed,
                     epoch=self.epoch, rank=self.rank, world=self.world)

    def __len__(self) -> int:
        return math.ceil(len(self.indices()) / self.batch_size)

    @property
    def num_samples(self) -> int:
        """Images this process sees per epoch."""
        return len(self.indices())


class TensorBatches(Batches):
    """Batches of images held in memory, shaped and augmented a whole batch at a time."""

    def __init__(self, *args, device="cpu", **kwargs):
        super().__init__(*args, **kwargs)
        self.device = torch.device(device)
        self.images = self.split.images.to(self.device)
        self.labels = self.split.labels.to(self.device)

    def __iter__(self):
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, 1))
        for index in self.indices().to(self.device).split(self.batch_size):
            x = shape_batch(self.images[index], self.prep)
            if self.train and self.augment:
                x = augment_batch(x, self.augment, generator, self.rank, self.world)
            yield x, self.labels[index]


def shape_batch(images: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """uint8 N x C x H x W -> float model input: channels matched, resized, normalized."""
    x = match_channels(images.float().div_(255), len(prep.mean))
    if x.shape[-2:] != (prep.crop, prep.crop):
        x = F.interpolate(x, size=(prep.crop, prep.crop), mode="bilinear", antialias=True,
                          align_corners=False)
    mean = torch.tensor(prep.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(prep.std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def augment_batch(x: torch.Tensor, augment, generator: torch.Generator, rank: int = 0, world: int = 1):
    """Per-image random horizontal flips and random crops (shifts by up to 1/8 of the side, zero padded
    in normalized space, that is with the mean colour), drawn for the whole batch at once.

    The draws are made for the global batch, of which this process takes every world-th: the images of
    the global batch get the same flips and crops however many processes share it.
    """
    n, _, h, w = x.shape
    if "flip" in augment:
        flip = (torch.rand(n * world, generator=generator)[rank::world] < 0.5).to(x.device).view(n, 1, 1, 1)
        x = torch.where(flip, x.flip(-1), x)
    if "crop" in augment:
        pad = max(1, h // 8)
        padded = F.pad(x, (pad, pad, pad, pad))
        shifts = torch.randint(0, 2 * pad + 1, (2, n * world), generator=generator)
        dy, dx = shifts[:, rank::world].to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # n, 1, h, 1
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # n, 1, 1, w
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, channel, rows, cols]
    return x


class ImageFiles(torch.utils.data.Dataset):
    """Decodes image files; one that cannot be decoded comes back as (None, label, reason)."""

    def __init__(self, files, labels, transform, in_chans: int, seed: int | None = None):
        self.files, self.labels, self.transform, self.in_chans = files, labels, transform, in_chans
        self.seed = seed  # set per epoch; each image's augmentation is a function of (seed, index)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        label = int(self.labels[i])
        try:
            image = read_image(self.files[i], self.in_chans)
        except DataError as e:
            return None, label, str(e)
        if self.seed is None:
            return self.transform(image), label, None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + i)
            return self.transform(image), label, None


def _collate(items):
    images = [image for image, _, _ in items if image is not None]
    labels = [label for image, label, _ in items if image is not None]
    failures = [reason for image, _, reason in items if image is None]
    x = torch.stack(images) if images else torch.empty(0)
    return x, torch.tensor(labels, dtype=torch.long), failures


class FileBatches(Batches):
    """Batches of image files decoded in DataLoader worker processes."""

    def __init__(self, *args, workers: int = 2, strict: bool = False, pin_memory: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.workers, self.strict, self.pin_memory = workers, strict, pin_memory
        augment = self.augment if self.train else ()
        transform = self.prep.transform(augment)
        self.dataset = ImageFiles(self.split.files, self.split.labels, transform, len(self.prep.mean))

    def __iter__(self):
        self.dataset.seed = epoch_seed(self.seed, self.epoch, 1) if self.train else None
        batches = torch.utils.data.DataLoader(
            self.dataset, batch_size=self.batch_size, sampler=self.indices().tolist(),
            num_workers=self.workers, collate_fn=_collate, pin_memory=self.pin_memory)
        for x, y, failures in batches:
            for reason in failures:
                if self.strict:
                    raise DataError(f"{reason} (--strict): remove or replace the file")
                if reason not in self.warned:
                    self.warned.add(reason)
                    log.warning("warning: %s", reason)
            if len(y):
                yield x, y


def loaders(source: Source, prep: Preprocessing, config, *, rank=0, world=1, device="cpu", splits=None):
    """One loader per split of ``source``: the training one shuffled and augmented, the others in order."""
    if config.batch_size % world:
        raise ConfigError(f"--batch-size {config.batch_size} does not split evenly over {world} processes: "
                          f"use a multiple of {world}")
    augment = tuple(a for a in config.augment.split(",") if a)
    result = {}
    for name in splits or source.splits:
        split = source.splits[name]
        common = {"batch_size": config.batch_size // world, "train": name == "train", "augment": augment,
                  "seed": config.seed, "rank": rank, "world": world}
        if split.images is not None:
            result[name] = TensorBatches(split, prep, device=device, **common)
        else:
            result[name] = FileBatches(split, prep, workers=config.workers, strict=config.strict,
                                       pin_memory=torch.device(device).type == "cuda", **common)
    return result
