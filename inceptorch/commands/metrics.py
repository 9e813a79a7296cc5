"""Commands that score images with the FID Inception: fid, kid, isc, and metrics for several at once."""

import os

from ..errors import ConfigError
from ..metrics import MODES, compute
from ..metrics.extractor import DEPTHS
from .options import add_output


def _add_common(p, sides: str) -> None:
    if sides == "one":
        p.add_argument("images", metavar="FOLDER", help="a folder of images (its top level; --recursive: below too)")
    else:
        p.add_argument("images", nargs=2 if sides == "two" else "+", metavar="FOLDER_OR_NPZ",
                       help="two folders of images (their top level; --recursive: below too) or statistics "
                            ".npz files, as pytorch-fid takes them")
    p.add_argument("--mode", choices=MODES, default="pytorch-fid",
                   help="whose preprocessing and arithmetic: pytorch-fid (default), torch-fidelity or clean (clean-fid)")
    p.add_argument("--dims", type=int, choices=DEPTHS, default=2048, help="feature depth, as pytorch-fid's --dims")
    p.add_argument("--batch-size", type=int, help="images per forward pass (default: 10 on the CPU, the fastest "
                                                  "measured; 50, pytorch-fid's, on a GPU)")
    p.add_argument("--recursive", action="store_true", help="read the class folders below each folder too")
    p.add_argument("--weights", metavar="PTH", help="another file of the FID Inception than pytorch-fid's")
    p.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                   help="bf16 or int8: faster, approximate (the benchmark gives the deviation)")
    p.add_argument("--backend", choices=("torch", "onnxruntime", "openvino"), default="torch",
                   help="onnxruntime or openvino: the [onnx] or [openvino] extra; approximate")
    p.add_argument("--device", default="cpu", help="cpu, or cuda for the eager model on a GPU")
    p.add_argument("--workers", type=int, default=0, help="processes decoding images beside the model")
    p.add_argument("--no-cache", dest="cache", action="store_false",
                   help="recompute folders' statistics instead of reading them from the cache")
    p.add_argument("--strict", action="store_true", help="stop at an unreadable file instead of skipping it")
    p.add_argument("--seed", type=int, default=2020, help="KID's subsets and IS's shuffle (torch-fidelity's seed)")
    p.add_argument("--kid-subsets", type=int, default=100, help="KID: number of random subsets")
    p.add_argument("--kid-subset-size", type=int, default=1000, help="KID: images per subset")
    p.add_argument("--isc-splits", type=int, default=10, help="IS: number of parts")


def _run(args, fid: bool, kid: bool, isc: bool) -> int:
    images = [args.images] if isinstance(args.images, str) else args.images
    if len(images) > 2:
        raise ConfigError(f"give one or two folders (or statistics files), not {len(images)}")
    save_stats = getattr(args, "save_stats", None)
    only_saving = save_stats is not None and len(images) == 1
    scores = compute(images[0], images[1] if len(images) > 1 else None, fid=fid and not only_saving, kid=kid,
                     isc=isc, kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size,
                     isc_splits=args.isc_splits, seed=args.seed, save_stats=save_stats, mode=args.mode,
                     dims=args.dims, batch_size=args.batch_size, recursive=args.recursive, weights=args.weights,
                     precision=args.precision, backend=args.backend, device=args.device, workers=args.workers,
                     cache=args.cache, strict=args.strict)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun, the first process prints
    if save_stats:
        print(f"statistics of {scores.counts[0]} images -> {save_stats}")
    if scores.fid is not None:
        print(f"FID: {scores.fid}")
    if scores.kid is not None:
        print(f"KID: {scores.kid[0]:.7g} ± {scores.kid[1]:.7g}")
    if scores.isc is not None:
        print(f"IS: {scores.isc[0]:.7g} ± {scores.isc[1]:.7g}")
    if scores.approximate:
        print(f"note: approximate ({scores.approximate} path): the exact mode's numbers differ slightly "
              "(benchmarks/fid.py measures by how much)")
    return 0


def add_fid(sub):
    p = sub.add_parser("fid", help="Frechet Inception Distance of two image folders (or statistics .npz)",
                       description="FID as pytorch-fid computes it (--mode for torch-fidelity's or clean-fid's). "
                                   "With --save-stats, one folder is enough: its statistics are written.")
    _add_common(p, "one or two")
    add_output(p, "--save-stats", (".npz",), metavar="OUT.npz", help="write the first folder's statistics (pytorch-fid's format)")
    p.set_defaults(run=lambda args: _run(args, fid=True, kid=False, isc=False))


def add_kid(sub):
    p = sub.add_parser("kid", help="Kernel Inception Distance of two image folders",
                       description="KID as torch-fidelity computes it: mean and standard deviation over subsets.")
    _add_common(p, "two")
    p.set_defaults(run=lambda args: _run(args, fid=False, kid=True, isc=False))


def add_isc(sub):
    p = sub.add_parser("isc", help="Inception Score of an image folder",
                       description="IS as torch-fidelity computes it: mean and standard deviation over splits.")
    _add_common(p, "one")
    p.set_defaults(run=lambda args: _run(args, fid=False, kid=False, isc=True))


def add_metrics(sub):
    p = sub.add_parser("metrics", help="FID, KID and IS at once, each image read once",
                       description="The metrics asked for (--fid --kid --isc; default --fid) over one pass of "
                                   "the images. IS is of the first folder.")
    _add_common(p, "one or two")
    for name in ("fid", "kid", "isc"):
        p.add_argument(f"--{name}", action="store_true", help=f"compute {name.upper()}")
    p.set_defaults(run=lambda args: _run(args, fid=args.fid or not (args.kid or args.isc), kid=args.kid,
                                         isc=args.isc))
