"""The ``inceptorch`` command: parse the arguments, call the library, print the result.

Each sub-command is an ``add_*`` function that declares its arguments and sets ``run`` to a
function of the parsed arguments. Errors a user can fix (``InceptorchError``) print one line and
exit with status 2.
"""

import argparse
import logging
import sys

from .errors import InceptorchError


def _input_size(text: str) -> tuple[int, ...]:
    """'224', '3x224x224' or '1x3x224x224' -> a shape tuple (channels and batch filled in later)."""
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size like 224, 3x224x224 or 1x3x224x224") from None
    if not 1 <= len(dims) <= 4 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size like 224, 3x224x224 or 1x3x224x224")
    return dims


def add_list(sub):
    p = sub.add_parser("list", help="list the registered models")
    p.set_defaults(run=lambda args: print("\n".join(__import__("inceptorch").list_models())))


COMMANDS = [add_list]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inceptorch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    try:
        result = args.run(args)
    except InceptorchError as e:
        print(f"inceptorch: error: {e}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
