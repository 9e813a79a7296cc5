"""Pretrained configs: what a model's weights expect and where they come from, as dicts with timm's keys.

Each family module defines ``default_cfgs`` beside its builders, as timm does: keys ``"model.tag"``
for published weights (the first tag of a model is its default) and ``"model"`` for a model whose
untrained build needs its own (otherwise it carries its default tag's, as in timm). The helpers here
fill in what every config of one kind shares; ``registry`` adds ``architecture`` and ``tag``.

The keys are timm's (``input_size``, ``interpolation``, ``mean``, ``std``, ``crop_pct``,
``crop_mode``, ``num_classes``, ``label_names``, ``pool_size``, ``first_conv``, ``classifier``,
``hf_hub_id``, ``url``, ``file``, ``license``, ``description``), plus the facts inceptorch needs:
``source`` (whose cache holds the file: torchvision, timm or facenet), ``top1`` (ImageNet-1k
top-1 in %, as published), ``size_mb``, ``hash_prefix`` (of the file's sha256, where published),
``model_args`` (options the checkpoint was made for), ``untrained_heads`` (heads the file carries
that were never trained), ``tv_weights`` (torchvision's enum member for the same file) and
``aux_weight`` (the trainer's default weight of the aux loss, for models with aux heads).
"""

import functools
from collections.abc import Sequence

from ..images import IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN, INCEPTION_STD


@functools.cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, as torchvision ships them (offline) with its weights' metadata.

    torchvision is imported here, on first use, not with the package: its import pulls in
    torch._dynamo and takes seconds that commands with no ImageNet head would wait for.
    """
    from torchvision.models import Inception_V3_Weights

    return tuple(Inception_V3_Weights.IMAGENET1K_V1.meta["categories"])


class ImageNetClasses(Sequence):
    """The ImageNet-1k class names, read from torchvision when first indexed (so configs stay cheap)."""

    def __len__(self) -> int:
        return 1000

    def __getitem__(self, index):
        return imagenet_classes()[index]

    def __repr__(self) -> str:
        return "<ImageNet-1k class names (1000)>"


IMAGENET_1K = ImageNetClasses()


def plain_cfg(arch: dict, **facts) -> dict:
    """A model's config without published weights: ``arch`` (its ``input_size`` side, ``pool_size``,
    ``first_conv``, ``classifier``...) over ImageNet's usual evaluation (bilinear, crop 0.875)."""
    side = facts.pop("input_size", arch.get("input_size", 224))
    cfg = {"input_size": None, "url": None, "hf_hub_id": None, "file": None, "source": None, "interpolation": "bilinear",
           "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "crop_pct": 0.875, "crop_mode": "center",
           "num_classes": 1000, "label_names": None, "classifier": "fc", "license": None,
           "description": "", "top1": None, "size_mb": None, "hash_prefix": None, "model_args": {},
           "untrained_heads": (), "tv_weights": None}
    cfg.update(arch)
    cfg.update(facts)
    cfg["input_size"] = (3, side, side)
    return cfg


def torchvision_tag(arch: dict, file: str, **facts) -> dict:
    """torchvision's ImageNet checkpoint ``file``: bilinear resizing, ImageNet statistics, which its
    Inception models turn into [-1, 1] pixels themselves (``transform_input``); its sha256 prefix
    is in the file name. ``tv_weights`` names the enum member torchvision calls it."""
    return plain_cfg(arch, **{
        "source": "torchvision", "url": f"https://download.pytorch.org/models/{file}",
        "hash_prefix": file.rsplit("-", 1)[1].split(".")[0], "license": "BSD-3-Clause",
        "label_names": IMAGENET_1K, "model_args": {"transform_input": True}, "tv_weights": "IMAGENET1K_V1",
        **facts})


def timm_tag(arch: dict, **facts) -> dict:
    """A checkpoint timm publishes on the Hugging Face hub (``timm/<model>.<tag>``, completed by the
    registry, as timm's ``hf_hub_id="timm/"``): bicubic, crop 0.875, pixels in [-1, 1] unless ``facts``
    say otherwise."""
    return plain_cfg(arch, **{
        "source": "timm", "hf_hub_id": "timm/", "license": "Apache-2.0", "interpolation": "bicubic",
        "mean": INCEPTION_MEAN, "std": INCEPTION_STD, "label_names": IMAGENET_1K, **facts})


def facenet_tag(arch: dict, file: str, num_classes: int, **facts) -> dict:
    """facenet-pytorch's face-identity checkpoint ``file``: 160x160 whole faces, (pixel - 127.5) / 128."""
    return plain_cfg(arch, **{
        "source": "facenet", "url": f"https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/{file}",
        "license": "MIT", "input_size": 160, "crop_pct": 1.0, "mean": INCEPTION_MEAN, "std": (128 / 255,) * 3,
        "num_classes": num_classes, "model_args": {"layout": "facenet"},
        "description": "face identities; num_classes=0 gives 512-d embeddings", **facts})



def trained_cfg(cfg: dict, data_config: dict, class_names) -> dict:
    """The config of weights trained from ``cfg``'s model on other data: ``data_config``'s preprocessing
    (input size, interpolation, mean, std, crop_pct) and the data's class names; no longer a published tag."""
    published = {"tag": None, "url": None, "hf_hub_id": None, "file": None, "source": None, "license": None,
                 "top1": None, "size_mb": None, "hash_prefix": None, "model_args": {}, "untrained_heads": (),
                 "tv_weights": None, "description": ""}
    data_config = {k: tuple(v) if isinstance(v, list) else v for k, v in data_config.items()}  # from JSON
    return {**cfg, **published, **data_config,
            "num_classes": len(class_names) if class_names else cfg["num_classes"], "label_names": class_names}
