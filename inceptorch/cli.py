"""The ``inceptorch`` command: parse the arguments, call the library, print the result.

Each sub-command is an ``add_*`` function in ``inceptorch.commands`` that declares its arguments and
sets ``run`` to a function of the parsed arguments. Errors a user can fix (``InceptorchError``) print
one line and exit with status 2.

The library is imported at the top, not command by command: ``import inceptorch`` loads it whole
anyway (about 6 s on a slow 2-core Xeon, 3.3 s of it torch's own import and 1 s matplotlib's), so
lazy imports would save little. torchvision, which brings torch._dynamo with it (3 s more there),
is imported only by the functions that use it.
"""

import argparse
import logging
import sys
from pathlib import Path

from .commands import analysis, inference, metrics, training
from .errors import InceptorchError
from .images import IMAGE_SUFFIXES
from .models import list_models

COMMANDS = [analysis.add_list, inference.add_predict, inference.add_embed, analysis.add_summary,
            analysis.add_compare, analysis.add_draw, analysis.add_explore, training.add_train,
            training.add_evaluate, training.add_finetune, inference.add_export, inference.add_bench,
            analysis.add_weights, metrics.add_fid, metrics.add_kid, metrics.add_isc, metrics.add_metrics]


class OneLineErrors(argparse.ArgumentParser):
    """A wrong flag or value is one line and exit status 2, as every other error; --help has the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(
        prog="inceptorch", description="GoogLeNet and the Inception family: analyse, train, fine-tune, predict, export.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def _pretrained_then_images(argv: list[str]) -> list[str]:
    """``--pretrained cat.jpg dog.jpg`` means the default tag, then images: a word after --pretrained is
    its value only when it is not an image path (tags have no slash and no image suffix)."""
    argv = list(argv)
    for i, word in enumerate(argv[:-1]):
        following = argv[i + 1]
        if word == "--pretrained" and following not in list_models(pretrained=True) and (
                Path(following).exists() or "/" in following or Path(following).suffix.lower() in IMAGE_SUFFIXES):
            argv[i] = "--pretrained=default"
    return argv


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = build_parser().parse_args(_pretrained_then_images(sys.argv[1:] if argv is None else argv))
    try:
        result = args.run(args)
    except InceptorchError as e:
        print(f"inceptorch: error: {e}", file=sys.stderr)
        return getattr(e, "exit_status", 2)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
