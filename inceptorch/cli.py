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

from .commands import analysis, inference, metrics, training
from .errors import InceptorchError

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


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        args = build_parser().parse_args(argv)  # an output path that cannot be written stops here
        result = args.run(args)
    except InceptorchError as e:
        print(f"inceptorch: error: {e}", file=sys.stderr)
        return getattr(e, "exit_status", 2)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
