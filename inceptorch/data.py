"""Batches for training and evaluation: the preprocessing a model needs, and loaders that produce it.

Small images (the built-in sample, MNIST, Fashion-MNIST, CIFAR-10, .npz files; see ``sources``) are
held in memory as one uint8 tensor; each batch is cut from it, converted, resized, normalized and augmented as a
whole. Image folders are decoded file by file in DataLoader workers. Either way the order of an
epoch and its augmentations are a function of (seed, epoch), so a resumed run sees the same batches
as an uninterrupted one, and under torchrun each process takes its share of every global batch.
"""

import logging
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .decoding import ImageFiles, decoded_batches, report_unreadable
from .errors import ConfigError, DataError, InputSizeError
from .images import ERASING, Preprocessing, per_channel, resolve_data_config
from .models import cfg_for_origin
from .models.meta import min_input_size
from .splits import Source, Split

log = logging.getLogger("inceptorch")

# ---------------------------------------------------------------------------------------------------
# Preprocessing: how images become model inputs (saved in checkpoints, so evaluate and predict reuse it)


def preprocessing(source: Source, model, config) -> Preprocessing:
    """Input size and normalization for ``model`` on ``source``, with the size checked: a reader of the
    model's ``pretrained_cfg`` and of the options.

    A model started from a checkpoint (``--weights``, ``--pretrained``) is fed as its config says (its
    input size, mean and std; ``--weights-origin`` picks another publisher's); one trained from
    scratch gets the data's own mean and std. ``--image-size``, ``--mean`` and ``--std`` override
    either. Images held in memory are resized whole; image files are resized to side / crop_pct and
    center-cropped (randomly cropped in training with ``--augment crop``), as ImageNet models are evaluated.
    """
    from_checkpoint = bool(config.weights or config.pretrained)
    cfg = resolve_data_config(cfg_for_origin(model, config.weights_origin) if from_checkpoint
                              else model.pretrained_cfg, in_chans=model.in_chans)
    size = config.image_size
    if size is None:
        small_model = model.default_input_size <= 32
        size = source.size if source.size and small_model else cfg["input_size"][-1]
    name = getattr(model, "model_name", type(model).__name__)
    smallest, aux_note, aux_fix = model.min_input_size, "", ""
    if getattr(config, "aux_weight", 0) and model.has_aux:
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
    progressive = getattr(config, "progressive_size", None)
    if progressive is not None and not smallest <= progressive < size:
        raise InputSizeError(f"--progressive-size {progressive} must lie between {name}'s minimum input of "
                             f"{smallest}{aux_note} and the input size {size}: pass a size in between, for "
                             f"instance --progressive-size {max(smallest, round(size * 0.7))}")
    shape = Preprocessing.from_data_config({**cfg, "input_size": (model.in_chans, size, size)})
    resize = size if source.size else shape.resize
    mean, std = config.mean, config.std
    if (mean is None or std is None) and from_checkpoint:
        mean, std = mean or cfg["mean"], std or cfg["std"]
    if mean is None or std is None:
        data_mean, data_std = channel_stats(source.splits["train"], model.in_chans, size, resize)
        mean, std = mean or data_mean, std or data_std
    return Preprocessing(size, resize, per_channel(mean, model.in_chans), per_channel(std, model.in_chans),
                         shape.interpolation)


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
    accumulate: int = 1  # micro-batches per optimizer step: an epoch holds whole steps only
    epoch: int = 0
    warned: set = field(default_factory=set)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> torch.Tensor:
        return shard(len(self.split), self.batch_size * self.world * self.accumulate, shuffle=self.train,
                     seed=self.seed, epoch=self.epoch, rank=self.rank, world=self.world)

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
    x = resized(match_channels(images.float().div_(255), len(prep.mean)), prep.crop)
    mean = torch.tensor(prep.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(prep.std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def resized(x: torch.Tensor, size: int) -> torch.Tensor:
    """A batch at size x size pixels, bilinear with antialiasing: the model's input size, or the smaller
    one of progressive resizing's first epochs (``--progressive-size``)."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def augment_batch(x: torch.Tensor, augment, generator: torch.Generator, rank: int = 0, world: int = 1):
    """Per-image random horizontal flips, random crops (shifts by up to 1/8 of the side, zero padded
    in normalized space, that is with the mean colour) and random erasing, drawn for the whole batch at
    once.

    The draws are made for the global batch, of which this process takes every world-th: the images of
    the global batch get the same flips, crops and erasing however many processes share it.
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
    if "erase" in augment:
        keep = ~erased_rectangles(n * world, h, w, generator)[rank::world].to(x.device)
        x = x * keep[:, None]
    return x


def erased_rectangles(n: int, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
    """Masks (n x h x w, True inside) of random erasing (Zhong et al., 2017): with probability 0.5 an
    image loses a rectangle of 2-40 % of its area, of height/width ratio 0.3-3.3, anywhere inside it
    (``images.ERASING``, which the per-file path gives torchvision's RandomErasing).

    Filled with zeros of the normalized input, the mean colour, as torchvision's RandomErasing does.

    Not ``torchvision.transforms.v2.RandomErasing`` on the batch: it draws from torch's global generator
    one rectangle for a whole batch tensor, where this draws one per image from the run's own generator
    for the global batch, so a run erases the same pixels on any number of processes and on resume.
    """
    area, ratio = ERASING["scale"], ERASING["ratio"]
    draws = torch.rand(5, n, generator=generator)
    share = area[0] + (area[1] - area[0]) * draws[0]
    aspect = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * draws[1])
    heights = (share * h * w * aspect).sqrt().round().clamp(1, h)
    widths = (share * h * w / aspect).sqrt().round().clamp(1, w)
    tops = ((h - heights + 1) * draws[2]).floor()
    lefts = ((w - widths + 1) * draws[3]).floor()
    rows = torch.arange(h)[None, :]
    cols = torch.arange(w)[None, :]
    inside_rows = (rows >= tops[:, None]) & (rows < (tops + heights)[:, None])  # n, h
    inside_cols = (cols >= lefts[:, None]) & (cols < (lefts + widths)[:, None])  # n, w
    chosen = (draws[4] < ERASING["p"])[:, None, None]
    return chosen & inside_rows[:, :, None] & inside_cols[:, None, :]


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
        batches = decoded_batches(self.dataset, self.batch_size, self.workers, sampler=self.indices().tolist(),
                                  pin_memory=self.pin_memory)
        for x, y, failures in batches:
            for reason in failures:
                report_unreadable(reason, self.strict, self.warned)
            if len(y):
                yield x, y


def loaders(source: Source, prep: Preprocessing, config, *, rank=0, world=1, device="cpu", splits=None):
    """One loader per split of ``source``: the training one shuffled and augmented, the others in order."""
    if config.batch_size % world:
        raise ConfigError(f"--batch-size {config.batch_size} does not split evenly over {world} processes: "
                          f"use a multiple of {world}")
    augment = tuple(a for a in config.augment.split(",") if a)
    if config.auto_augment:
        augment += (config.auto_augment,)
    result = {}
    for name in splits or source.splits:
        split = source.splits[name]
        common = {"batch_size": config.batch_size // world, "train": name == "train", "augment": augment,
                  "seed": config.seed, "rank": rank, "world": world,
                  "accumulate": config.grad_accum_steps if name == "train" else 1}
        if split.images is not None and config.auto_augment:
            raise ConfigError(f"--auto-augment applies to image folders, and {source.name} is held in memory as "
                              "small images: use --augment flip,crop,erase for it, or leave --auto-augment out")
        if split.images is not None:
            result[name] = TensorBatches(split, prep, device=device, **common)
        else:
            result[name] = FileBatches(split, prep, workers=config.workers, strict=config.strict,
                                       pin_memory=torch.device(device).type == "cuda", **common)
    return result
