"""Arguments several commands share: sizes, output files, weights, engines, and running a checkpoint on
image files."""

import argparse
import inspect
import sys
from pathlib import Path

from ..config import WEIGHT_ORIGINS
from ..devices import pick_device
from ..errors import ConfigError
from ..images import IMAGE_SUFFIXES
from ..inference import BACKENDS, PRECISIONS
from ..inference.choose import REDUCED_NEEDS_IMAGES
from ..models import list_models
from ..outputs import writable_file
from ..predict import load_for_inference, optimized_for_images


def add_command(sub, name: str, run, help: str):
    """A sub-command running ``run`` on the parsed arguments; ``run``'s docstring is its --help text."""
    p = sub.add_parser(name, help=help, description=inspect.cleandoc(run.__doc__))
    p.set_defaults(run=run)
    return p


def input_size(text: str) -> tuple[int, ...]:
    """'224', '3x224x224' or '1x3x224x224' -> a shape tuple (channels and batch filled in later)."""
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size like 224, 3x224x224 or 1x3x224x224") from None
    if not 1 <= len(dims) <= 4 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size like 224, 3x224x224 or 1x3x224x224")
    return dims


def add_input_size(p, default: str = "the model's own") -> None:
    p.add_argument("--input", type=input_size, metavar="SIZE",
                   help=f"input size: 224, 3x224x224 or 1x3x224x224 (default: {default})")


def add_output(p, option: str, suffixes: tuple[str, ...] = (), **kwargs) -> None:
    """An option naming a file to write, checked by ``outputs.writable_file`` as the arguments are parsed:
    before any work, so that a path that cannot be written is one line (``main`` prints it, status 2)."""
    def checked(text: str) -> Path:
        try:
            return writable_file(text, suffixes)
        except ConfigError as e:
            raise ConfigError(f"{option} {e}") from None
    p.add_argument(option, type=checked, **kwargs)


class _TagOrFirstImage(argparse.Action):
    """``--pretrained cat.jpg dog.jpg`` is the default tag, then images: the word after --pretrained is
    its tag only when it is not an image path (tags have no slash and no image suffix)."""

    def __call__(self, parser, namespace, value, option_string=None):
        if isinstance(value, str) and value not in list_models(pretrained=True) and (
                Path(value).exists() or "/" in value or Path(value).suffix.lower() in IMAGE_SUFFIXES):
            namespace.images = [*(namespace.images or []), value]
            value = self.const
        setattr(namespace, self.dest, value)


def add_pretrained(p, images_follow: bool = False) -> None:
    p.add_argument("--pretrained", nargs="?", const=True, default=False, metavar="TAG",
                   action=_TagOrFirstImage if images_follow else "store",
                   help="published weights instead of --weights: the model's default, or a tag "
                        "(see: inceptorch weights), from the local cache or downloaded once")


def add_checkpoint_options(p) -> None:
    """Options shared by the commands that run a checkpoint on image files."""
    p.add_argument("--weights", metavar="CKPT",
                   help="checkpoint: inceptorch's own, or a torchvision/timm file together with --model")
    p.add_argument("--model", help="model name, for checkpoints that do not name theirs (torchvision, timm) "
                                   "and for --pretrained")
    add_pretrained(p, images_follow=True)
    p.add_argument("--weights-origin", default="auto", choices=WEIGHT_ORIGINS,
                   help="whose preprocessing the weights expect (auto: the checkpoint's own, else the "
                        "model's layout)")
    p.add_argument("--image-size", type=int, help="crop side in pixels (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_engine_options(p, "the images given")
    # "*" and "extend": --pretrained may have taken the first image (_TagOrFirstImage)
    p.add_argument("images", nargs="*", action="extend", metavar="IMAGE_OR_FOLDER",
                   help="image files, or folders of them")


def add_engine_options(p, calibration_default: str) -> None:
    """--backend, --precision and --calibration: optimize_for_inference's choices, on the CPU."""
    p.add_argument("--backend", choices=BACKENDS,
                   help="run on the CPU through torch, onnxruntime or openvino (the [onnx] and [openvino] "
                        "extras), or auto: the fastest that keeps the predictions (default: eager PyTorch)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="fp32 (default), bf16 (CPUs with AVX512-BF16 or AMX), int8 (calibrated) or auto")
    p.add_argument("--calibration", metavar="FOLDER",
                   help=f"images to calibrate int8 on, a few hundred; auto holds half of them out to judge "
                        f"bf16 and int8 on, and with fewer than {REDUCED_NEEDS_IMAGES} keeps to fp32 (default: {calibration_default})")


def engine_choice(args) -> dict | None:
    """optimize_for_inference's backend and precision from the flags, or None for eager PyTorch."""
    if args.backend is None and args.precision is None:
        return None
    return {"backend": args.backend or "torch", "precision": args.precision or "fp32"}


def inference_model(args):
    """The checkpoint's model on the chosen device, and its preprocessing."""
    if not args.images:
        raise ConfigError("name the images to run on: image files, or folders of them")
    model, preprocessing = load_for_inference(args.weights, args.model, origin=args.weights_origin,
                                              image_size=args.image_size, pretrained=args.pretrained)
    device = "cpu" if engine_choice(args) and args.device == "auto" else args.device
    return model.to(pick_device(device)), preprocessing


def optimized(args, model, preprocessing, features: bool = False):
    """The model the flags ask for, prepared on the first batch of the images to run."""
    choice = engine_choice(args)
    if choice is None:
        return model
    return optimized_for_images(model, args.images, preprocessing=preprocessing, batch_size=args.batch_size,
                                calibration=args.calibration, features=features, **choice)


def warn_unreadable(failures) -> None:
    for failure in failures:
        print(f"inceptorch: warning: {failure.error}", file=sys.stderr)

