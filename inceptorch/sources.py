"""Data sources: what the images are, before any shaping for a model.

The built-in sample, MNIST and Fashion-MNIST (IDX files, gzipped or not), CIFAR-10, .npz files and
image folders become a ``Source``: class names, and per split the labels with either the images
themselves (one uint8 tensor) or their files. A set without a validation split gets one held out
from its training split, the same for every seed. A folder of images that all share one size and
fit in memory is decoded once into one uint8 tensor (``held``).
"""

import gzip
import logging
import math
import struct
from pathlib import Path

import numpy as np
import torch

from . import hub
from .errors import ConfigError, DataError
from .held import hold_in_memory
from .images import IMAGE_SUFFIXES, is_listed_image
from .splits import Source, Split

log = logging.getLogger("inceptorch")

BUILTIN = Path(__file__).parent / "sample" / "builtin.npz"
SPLIT_SEED = 0  # held-out validation sets never change with --seed, so evaluate finds the same images
MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
IDX_SETS = {"mnist": ("MNIST", MNIST_CLASSES), "fashion-mnist": ("FashionMNIST", FASHION_CLASSES)}
IDX_FILES = {"train": "train-{}-ubyte", "test": "t10k-{}-ubyte"}
KNOWN_SETS = ("builtin", "mnist", "fashion-mnist", "cifar10")


def open_source(config, splits=("train", "val")) -> Source:
    """Reads ``config.data`` and returns the requested splits ('train', 'val', 'test').

    A data set without its own validation split gets one held out from its training split
    (``config.val_split``: a fraction, or a number of images; 0: none), the same for every seed.
    """
    data = config.data
    if data == "builtin":
        source = _from_npz(BUILTIN, "builtin")
    elif data in IDX_SETS:
        source = _from_idx(data, config.data_root, splits)
    elif data == "cifar10" and _cifar10_folder(config.data_root):
        source = _from_folder(_cifar10_folder(config.data_root))
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
    if "val" in splits and "val" not in source.splits and config.val_split > 0:
        source.splits["train"], source.splits["val"] = _hold_out(source.splits["train"], config.val_split,
                                                                 data)
    beside = Path(data).parent / "test"
    if "test" in splits and "test" not in source.splits and Path(data).name == "train" and beside.is_dir():
        source.splits["test"] = _split_folder(beside, source.classes)  # --data ROOT/train, ROOT/test beside it
    if "test" in splits and "test" not in source.splits:
        raise DataError(f"{data} has no test split here: score the validation split instead (--split val)")
    source.splits = {name: source.splits[name] for name in splits if name in source.splits}  # val_split 0: no val
    for name, limit in (("train", config.train_samples), ("val", config.val_samples)):
        if limit and name in source.splits:
            source.splits[name] = source.splits[name].take(range(min(limit, len(source.splits[name]))))
    for name, split in source.splits.items():
        if len(split) == 0:
            raise DataError(f"the {name} split of {data} holds no images: add images or change --val-split")
    if source.size is None and config.cache_images is not False:
        source = hold_in_memory(source, config)
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
    return str(hub.inceptorch_cache() / "data")


def _download(data: str, root: str) -> None:
    """Fetches a torchvision data set into the cache (a no-op when it is there already)."""
    import torchvision.datasets as tvd  # here, not with the package: its import takes seconds

    dataset = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[data]
    try:
        for train in (True, False):
            dataset(root, train=train, download=True)
    except (OSError, RuntimeError) as e:  # no network, or a download that failed its checksum
        raise DataError(f"could not download {data} into {root} ({type(e).__name__}): with no network, "
                        "pass --data-root with a local copy, or train on the built-in sample (--data builtin)"
                        ) from None


def _cifar10_folder(data_root: str | None) -> Path | None:
    """``DATA_ROOT/cifar10``, where it holds the images as files (``train/<class>/*.jpg``) rather than
    torchvision's ``cifar-10-batches-py``."""
    folder = Path(data_root) / "cifar10" if data_root else None
    if folder and (folder / "train").is_dir() and not (Path(data_root) / "cifar-10-batches-py").is_dir():
        return folder
    return None


def _from_cifar10(data_root: str | None, splits) -> Source:
    if data_root is None:
        data_root = _download_root()
        _download("cifar10", data_root)
    import torchvision.datasets as tvd

    loaded = {}
    for split in _files_needed(splits):
        try:
            dataset = tvd.CIFAR10(data_root, train=split == "train", download=False)
        except RuntimeError:
            raise DataError(f"no intact CIFAR-10 {split} split in {Path(data_root) / 'cifar-10-batches-py'} "
                            "(files missing, or failing torchvision's checksum): give the folder that holds "
                            "an intact cifar-10-batches-py with --data-root") from None
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
            splits[split] = _split_folder(root / split, classes)
    return Source(root.name, classes, 3, splits)


def _split_folder(folder: Path, classes: list[str]) -> Split:
    """A val or test folder beside train/: class folders named as the training ones (some may be absent)."""
    extra = sorted(set(_subfolders(folder)) - set(classes))
    if extra:
        raise DataError(f"{folder} has class folders that the training split lacks: {', '.join(extra)}")
    present = [c for c in classes if (folder / c).is_dir()]
    split = _class_files(folder, present)
    split.labels = torch.tensor([classes.index(present[i]) for i in split.labels.tolist()])
    return split
