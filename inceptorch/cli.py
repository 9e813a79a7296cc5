"""The ``inceptorch`` command: parse the arguments, call the library, print the result.

Each sub-command is an ``add_*`` function that declares its arguments and sets ``run`` to a
function of the parsed arguments. Errors a user can fix (``InceptorchError``) print one line and
exit with status 2.

The library is imported at the top, not command by command: ``import inceptorch`` loads it whole
anyway (2.6 s here, 1.8 s of it torch's own import), so lazy imports would save nothing.
"""

import argparse
import json
import logging
import sys
from dataclasses import MISSING, fields
from pathlib import Path

import numpy as np
import torch

from . import hub
from .analysis import model_for_input
from .config import WEIGHT_ORIGINS, TrainConfig
from .draw import draw, save_figure
from .engine import evaluate, finetune, train
from .errors import ConfigError, InceptorchError
from .explore import compare_chart, compare_html, explore_html, write_page
from .images import IMAGE_SUFFIXES, image_files
from .inference import BACKENDS, EXPORT_FORMATS, PRECISIONS, benchmark, export, optimize_for_inference
from .models import create_model, list_models
from .predict import extract_features, load_for_inference, optimized_for_images, predict
from .summary import compare, summary
from .tables import text_table
from .training import pick_device


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
    p.set_defaults(run=lambda args: print("\n".join(list_models())))


def _add_pretrained(p) -> None:
    p.add_argument("--pretrained", nargs="?", const=True, default=False, metavar="TAG",
                   help="published weights instead of --weights: the model's default, or a tag "
                        "(see: inceptorch weights), from the local cache or downloaded once")


def _add_checkpoint_options(p) -> None:
    """Options shared by the commands that run a checkpoint on image files."""
    p.add_argument("--weights", metavar="CKPT",
                   help="checkpoint: inceptorch's own, or a torchvision/timm file together with --model")
    p.add_argument("--model", help="model name, for checkpoints that do not name theirs (torchvision, timm) "
                                   "and for --pretrained")
    _add_pretrained(p)

    p.add_argument("--weights-origin", default="auto", choices=WEIGHT_ORIGINS,
                   help="whose preprocessing the weights expect (auto: the checkpoint's own, else the "
                        "model's layout)")
    p.add_argument("--image-size", type=int, help="crop side in pixels (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    _add_engine_options(p, "the images given")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files, or folders of them")


def _add_engine_options(p, calibration_default: str) -> None:
    """--backend, --precision and --calibration: optimize_for_inference's choices, on the CPU."""
    p.add_argument("--backend", choices=BACKENDS,
                   help="run on the CPU through torch, onnxruntime or openvino (the [onnx] and [openvino] "
                        "extras), or auto: the fastest that keeps the predictions (default: eager PyTorch)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="fp32 (default), bf16 (CPUs with AVX512-BF16 or AMX), int8 (calibrated) or auto")
    p.add_argument("--calibration", metavar="FOLDER",
                   help=f"images to calibrate int8 on, a few hundred (default: {calibration_default})")


def _engine_choice(args) -> dict | None:
    """optimize_for_inference's backend and precision from the flags, or None for eager PyTorch."""
    if args.backend is None and args.precision is None:
        return None
    return {"backend": args.backend or "torch", "precision": args.precision or "fp32"}


def _inference_model(args):
    """The checkpoint's model on the chosen device, and its preprocessing."""
    model, preprocessing = load_for_inference(args.weights, args.model, origin=args.weights_origin,
                                              image_size=args.image_size, pretrained=args.pretrained)
    device = "cpu" if _engine_choice(args) and args.device == "auto" else args.device
    return model.to(pick_device(device)), preprocessing


def _optimized(args, model, preprocessing, features: bool = False):
    """The model the flags ask for, prepared on the first batch of the images to run."""
    choice = _engine_choice(args)
    if choice is None:
        return model
    return optimized_for_images(model, args.images, preprocessing=preprocessing, batch_size=args.batch_size,
                                calibration=args.calibration, features=features, **choice)


def _warn_unreadable(failures) -> None:
    for failure in failures:
        print(f"inceptorch: warning: {failure.error}", file=sys.stderr)


def _run_predict(args) -> int:
    model, preprocessing = _inference_model(args)
    model = _optimized(args, model, preprocessing)
    results = predict(model, args.images, topk=args.topk, preprocessing=preprocessing, batch_size=args.batch_size)
    _warn_unreadable(r for r in results if r.error)
    good = [r for r in results if not r.error]
    if args.format == "json":
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        width = max((len(r.source) for r in good), default=0)
        for r in good:
            tops = "  ".join(f"{c} {p:6.1%}" for c, p in zip(r.classes, r.probabilities))
            print(f"{r.source:<{width}}  {tops}")
    if not good:
        print("inceptorch: error: none of the images could be read", file=sys.stderr)
        return 2
    return 0


def add_predict(sub):
    p = sub.add_parser("predict", help="class names and probabilities for image files",
                       description="Predicts the top classes of each image. Unreadable files are named in "
                                   "a warning and the others still predicted; exit status 0 when at least "
                                   "one image was predicted, 2 when none could be.")
    _add_checkpoint_options(p)
    p.add_argument("--topk", type=int, default=5, help="classes shown per image")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(run=_run_predict)


def _run_embed(args) -> int:
    out = Path(args.out)
    if out.suffix not in (".npy", ".csv"):
        raise ConfigError(f"--out {out} must end in .npy or .csv: choose the file format by its suffix")
    model, preprocessing = _inference_model(args)
    model = _optimized(args, model, preprocessing, features=True)
    files, skipped = image_files(args.images), []
    features = extract_features(model, files, preprocessing=preprocessing, batch_size=args.batch_size,
                                skipped=skipped).numpy()
    _warn_unreadable(skipped)
    failed = {s.source for s in skipped}
    rows = [str(f) for f in files if str(f) not in failed]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, features)
        out.with_suffix(".files.txt").write_text("".join(f"{r}\n" for r in rows))
    else:
        header = "file," + ",".join(f"f{i}" for i in range(features.shape[1]))
        lines = [f"{r}," + ",".join(f"{v:.7g}" for v in row) for r, row in zip(rows, features)]
        out.write_text("\n".join([header, *lines]) + "\n")
    print(f"{features.shape[0]} images x {features.shape[1]} features -> {out}")
    return 0


def add_embed(sub):
    p = sub.add_parser("embed", help="pooled feature vectors of image files, for use in other tools",
                       description="Writes one feature vector per image (the global average of the last "
                                   "feature map): .npy (rows in the order of OUT.files.txt) or .csv (one "
                                   "row per file).")
    _add_checkpoint_options(p)
    p.add_argument("--out", required=True, help="features.npy or features.csv")
    p.set_defaults(run=_run_embed)


def _run_summary(args) -> int:
    model = model_for_input(args.model, args.input, num_classes=args.num_classes)
    result = summary(model, args.input, depth=args.depth)
    if args.format == "json":
        print(result.to_json())
    elif args.format == "csv":
        print(result.to_csv(branches=args.branches), end="")
    else:
        print(result)
        if args.branches:
            print()
            print(result.branch_table())
    return 0


def add_summary(sub):
    p = sub.add_parser("summary", help="output shape, parameters and multiply-adds of each layer of a model",
                       description="One row a layer: by default the top-level stages and every Inception "
                                   "block. Counted on PyTorch's meta device: no weights are needed.")
    p.add_argument("model", help="model name (see: inceptorch list)")
    p.add_argument("--input", type=_input_size, metavar="SIZE",
                   help="input size: 224, 3x224x224 or 1x3x224x224; its channels set the model's in_chans "
                        "(default: the model's own size, 3 channels)")
    p.add_argument("--num-classes", type=int, default=1000, help="classes of the classifier (default 1000)")
    p.add_argument("--depth", type=int, help="a row for every module down to this depth (1: top-level layers)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--branches", action="store_true",
                   help="the per-branch breakdown of every Inception block (with --format csv: instead of "
                        "the layer rows; JSON always has it)")
    p.set_defaults(run=_run_summary)


def _run_compare(args) -> int:
    if args.out and Path(args.out).suffix.lower() != ".html":
        raise ConfigError(f"--out {args.out} must end in .html (for a picture, use --plot FILE.png)")
    result = compare(args.models, args.input, bench=args.bench)
    print(result.to_json() if args.format == "json" else result.to_csv() if args.format == "csv" else result,
          end="" if args.format == "csv" else "\n")
    if args.out:
        print(f"page written to {write_page(compare_html(result), args.out)}", file=sys.stderr)
    if args.plot:
        print(f"chart written to {save_figure(compare_chart(result), args.plot)}", file=sys.stderr)
    return 0


def add_compare(sub):
    p = sub.add_parser("compare", help="parameters, multiply-adds and smallest input of several models",
                       description="One row a model, built with 1000 classes; parameters are also given "
                                   "relative to the first model named.")
    p.add_argument("models", nargs="+", metavar="MODEL")
    p.add_argument("--input", type=_input_size, metavar="SIZE",
                   help="one input size for all models (default: each model's own)")
    p.add_argument("--bench", action="store_true",
                   help="also time eager CPU inference at batch 8 (images/s, after a warm-up)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--out", metavar="FILE.html",
                   help="also write a self-contained page: the table and the chart of MACs against parameters")
    p.add_argument("--plot", metavar="FILE", help="also write the chart alone (.png, .svg or .pdf)")
    p.set_defaults(run=_run_compare)


def _run_draw(args) -> int:
    path = save_figure(draw(args.model, block=args.block, input_size=args.input), args.out, dpi=args.dpi)
    print(f"wrote {path}")
    return 0


def add_draw(sub):
    p = sub.add_parser("draw", help="draw an Inception block as its paper does, or the whole model",
                       description="With --block, the block's branches side by side between the previous layer "
                                   "and the filter concatenation, with each branch's channels, parameters and "
                                   "multiply-adds (and the shortcut, projection, scale and sum of a residual "
                                   "block); without it, the model's stages as a column. Drawn from the modules "
                                   "on the meta device: no weights, no Graphviz.")
    p.add_argument("model", help="model name (see: inceptorch list)")
    p.add_argument("--block", metavar="NAME", help="the block to draw, such as inception3a, Mixed_7b, repeat.0 "
                                                   "(inceptorch summary MODEL lists them)")
    p.add_argument("--input", type=_input_size, metavar="SIZE", help="input size (default: the model's own)")
    p.add_argument("--out", required=True, metavar="FILE", help="the picture: .svg, .png or .pdf")
    p.add_argument("--dpi", type=int, default=150, help="pixels per inch of a .png (default 150)")
    p.set_defaults(run=_run_draw)


def _run_explore(args) -> int:
    if Path(args.out).suffix.lower() != ".html":
        raise ConfigError(f"--out {args.out} must end in .html")
    path = write_page(explore_html(args.model, args.input), args.out)
    print(f"wrote {path}; open {path.resolve().as_uri()} in a browser (it needs no network)")
    return 0


def add_explore(sub):
    p = sub.add_parser("explore", help="one self-contained HTML page to explore a model",
                       description="Writes the whole-model picture, every block's picture (shown on a click) "
                                   "and the per-layer table of summary, block rows opening into their "
                                   "branches, as one HTML file with no network needs.")
    p.add_argument("model", help="model name (see: inceptorch list)")
    p.add_argument("--input", type=_input_size, metavar="SIZE", help="input size (default: the model's own)")
    p.add_argument("--out", required=True, metavar="FILE.html")
    p.set_defaults(run=_run_explore)


def _add_config_flags(p) -> None:
    """One flag per ``TrainConfig`` field. Only the flags given reach the config, so a recipe (or the
    run being resumed) supplies the rest."""


    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        shown = f" (default: {default})" if default not in (None, "", False) else ""
        if "const" in f.metadata:  # a flag whose value may be left out
            p.add_argument(flag, nargs="?", const=f.metadata["const"], default=argparse.SUPPRESS,
                           metavar=f.metadata["metavar"], help=f.metadata["help"])
        elif f.type in (bool, bool | str, bool | None):  # amp's auto is for recipes; --amp and --no-amp choose
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=f.metadata["help"])
        else:
            p.add_argument(flag, default=argparse.SUPPRESS, metavar=f.metadata.get("metavar") or f.name.upper(),
                           help=f.metadata["help"] + shown)


def _run_train(args, start=None) -> int:
    options = {k: v for k, v in vars(args).items() if k not in ("run", "command")}
    result = (start or train)(options)
    last = result.metrics
    print(f"val acc {last['val_acc']:.4f} after {last['epoch']} epochs (best {result.best_val_acc:.4f} at epoch "
          f"{result.best_epoch}); run folder {result.run_dir}")
    return 0


def add_train(sub):
    p = sub.add_parser("train", help="train a model (default: on the built-in sample, offline)",
                       description="Trains MODEL on DATA and writes a run folder: config, metrics, curves, "
                                   "checkpoints, log. Options come from the defaults, then --recipe, then "
                                   "the flags given. Under torchrun every process runs the same command.")
    _add_config_flags(p)
    p.set_defaults(run=_run_train)


def _run_evaluate(args) -> int:
    runner, device = None, args.device
    if _engine_choice(args):
        net, preprocessing = load_for_inference(args.weights, args.model, pretrained=args.pretrained)
        if args.calibration:
            runner = optimized_for_images(net, args.calibration, preprocessing=preprocessing, **_engine_choice(args))
        else:
            example = torch.randn(min(args.batch_size, 16), net.in_chans, preprocessing.crop, preprocessing.crop)
            runner = optimize_for_inference(net, example, **_engine_choice(args))
        device = "cpu"
    result = evaluate(args.weights, args.data, split=args.split, data_root=args.data_root,
                      val_split=args.val_split, batch_size=args.batch_size, device=device,
                      workers=args.workers, strict=args.strict, test_flip=args.test_flip, model=args.model,
                      pretrained=args.pretrained, runner=runner)
    if args.format == "json":
        print(json.dumps(vars(result), indent=1))
        return 0
    print(f"accuracy {result.accuracy:.4f} on {result.num_images} images (loss {result.loss:.4f})\n")
    width = max(len(c) for c in result.classes)
    print(f"{'class':<{width}}  precision  recall     f1  support")
    for name, row in result.per_class.items():
        print(f"{name:<{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  {row['f1']:5.4f}  "
              f"{row['support']:7d}")
    cell = max(4, len(str(max(max(r) for r in result.confusion))) + 1)
    print("\nconfusion matrix (rows: true class, columns: predicted, in the order above)")
    for name, row in zip(result.classes, result.confusion):
        print(f"{name:<{width}}  " + "".join(f"{v:>{cell}}" for v in row))
    return 0


def add_evaluate(sub):
    p = sub.add_parser("evaluate", help="accuracy, per-class precision/recall and confusion matrix of a checkpoint",
                       description="Scores an inceptorch checkpoint; the model and its preprocessing come from "
                                   "the checkpoint, the data by default too (the validation images it was "
                                   "trained beside).")
    p.add_argument("--weights", metavar="CKPT", help="an inceptorch .safetensors checkpoint")
    p.add_argument("--model", help="model name, with --pretrained")
    _add_pretrained(p)
    p.add_argument("--data", help="builtin, mnist, fashion-mnist, cifar10, a .npz file or an image folder "
                                  "(default: the checkpoint's)")
    p.add_argument("--data-root", help="folder holding a local copy of mnist, fashion-mnist or cifar10")
    p.add_argument("--split", choices=("val", "test"), default="val")
    p.add_argument("--val-split", type=float, help="held-out part of the training data (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--workers", type=int, default=2, help="data loader processes for image folders")
    p.add_argument("--strict", action="store_true", help="stop on an unreadable image instead of skipping it")
    p.add_argument("--test-flip", action="store_true",
                   help="average each image's logits with its mirror image's (as --test-flip in training)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    _add_engine_options(p, "none: int8 needs it")
    p.set_defaults(run=_run_evaluate)


def _run_finetune(args) -> int:
    return _run_train(args, start=finetune)


def add_finetune(sub):
    p = sub.add_parser("finetune", help="fine-tune a pretrained model on an image folder (or any train data)",
                       description="Train with a pretrained backbone: --pretrained [TAG] (published weights, "
                                   "see inceptorch weights) or --weights CKPT (inceptorch, torchvision "
                                   "or timm) is required, --freeze defaults to backbone (only the heads "
                                   "train), and --unfreeze-after EPOCHS adds a second phase that trains "
                                   "everything, the freed layers at --lr-unfrozen. Every train option applies.")
    _add_config_flags(p)
    p.set_defaults(run=_run_finetune)


def _run_export(args) -> int:
    if args.weights or args.pretrained:
        model, _ = load_for_inference(args.weights, args.model, pretrained=args.pretrained)
        if getattr(model, "model_name", args.model) != args.model:
            raise ConfigError(f"{args.weights} holds a {model.model_name} checkpoint, not {args.model}: "
                              f"export it as {model.model_name}")
    elif args.random_init:

        model = create_model(args.model, in_chans=args.input[-3] if args.input and len(args.input) >= 3 else 3)
    else:
        raise ConfigError("give the weights to export with --weights CKPT (or --random-init for untrained "
                          "weights, to try the export)")
    result = export(model, args.out, args.format, args.input, dynamic_batch=args.dynamic_batch)
    runner = {"onnx": "onnxruntime", "openvino": "OpenVINO (fp32)"}.get(args.format, "torch.jit.load")
    batch = ("any batch size" if args.dynamic_batch else f"traced at batch {result.input_shape[0]}"
             if args.format == "torchscript" else f"batch {result.input_shape[0]} only")
    print(f"wrote {result.path} ({args.format}, input {'x'.join(map(str, result.input_shape))}, {batch}); "
          f"{runner} output vs PyTorch: max |difference| {result.max_difference:.1e}")
    if result.max_difference > 1e-4:
        print("inceptorch: warning: the exported model's outputs differ from PyTorch's by more than 1e-4",
              file=sys.stderr)
        return 1
    return 0


def add_export(sub):
    p = sub.add_parser("export", help="write a model to ONNX, OpenVINO IR or TorchScript, checked against PyTorch",
                       description="Writes MODEL with the weights of CKPT as an ONNX file (checked with "
                                   "onnx.checker), OpenVINO IR (FILE.xml beside FILE.bin, fp32) or a frozen "
                                   "TorchScript module, then runs the file on a random input (onnxruntime, "
                                   "OpenVINO or torch.jit.load) and compares its outputs with PyTorch's. "
                                   "Exit status 1 if they differ by more than 1e-4.")
    p.add_argument("model", help="model name (see: inceptorch list)")
    p.add_argument("--weights", metavar="CKPT", help="checkpoint: inceptorch's own, or a torchvision/timm file")
    _add_pretrained(p)
    p.add_argument("--random-init", action="store_true", help="export untrained weights (without --weights)")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="onnx")
    p.add_argument("--out", required=True, metavar="FILE", help="file to write")
    p.add_argument("--input", type=_input_size, metavar="SIZE",
                   help="input size: 224, 3x224x224 or 1x3x224x224 (default: the model's own, batch 1)")
    p.add_argument("--dynamic-batch", action="store_true", help="accept any batch size, not only --input's")
    p.set_defaults(run=_run_export)


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(b) for b in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of batch sizes like 1,16")
    return sizes


def _run_bench(args) -> int:
    report = benchmark(args.models, batches=args.batch, train_batches=args.batch if args.train else (),
                       input_size=args.input, threads=args.threads, peak_gflops=args.peak_gflops,
                       repeats=args.repeats, compile=args.compile, onnx=not args.no_onnx,
                       backend=args.backend, precision=args.precision, pretrained=args.pretrained)
    print(report.table())
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(report.to_json() + "\n")
        print(f"results written to {args.json}")
    return 0


def add_bench(sub):
    p = sub.add_parser("bench", help="CPU throughput of the reference, eager, optimized and engine paths",
                       description="Times, in this one process, each model's inference paths: torchvision's "
                                   "or timm's eager model with the same weights (where one exists), "
                                   "inceptorch eager, optimize_for_inference in fp32, bf16 (where the CPU has "
                                   "it) and int8, onnxruntime and OpenVINO; images/s, ms per batch, achieved "
                                   "GFLOP/s, share of the CPU's measured fp32 and bf16 peaks, top-1 agreement "
                                   "with fp32, and the ratios to the first path and to the best peer engine. "
                                   "The CPU's name and ISA flags head the notes. Medians of rounds that "
                                   "interleave the paths, after warm-up.")
    p.add_argument("models", nargs="+", metavar="MODEL")
    p.add_argument("--batch", type=_batch_sizes, default=(1, 16), help="batch sizes, comma-separated (default 1,16)")
    p.add_argument("--input", type=_input_size, metavar="SIZE", help="input size (default: each model's own)")
    p.add_argument("--train", action="store_true",
                   help="also time training steps (forward, backward, SGD step) at each batch size")
    p.add_argument("--compile", action="store_true",
                   help="also time optimize_for_inference(compile=True) (minutes of compilation per shape)")
    p.add_argument("--no-onnx", action="store_true", help="leave out the onnxruntime and OpenVINO paths")
    p.add_argument("--backend", default="all", choices=("all", *BACKENDS[:-1]),
                   help="time only this backend's paths, beside the references and peers (default all)")
    p.add_argument("--precision", default="all", choices=("all", *PRECISIONS[:-1]),
                   help="time only this precision's paths, beside the references and peers (default all)")
    _add_pretrained(p)
    p.add_argument("--threads", type=int, help="threads for PyTorch and onnxruntime (default: PyTorch's)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    p.add_argument("--peak-gflops", type=float,
                   help="the CPU's fp32 peak, for the share-of-peak column (default: the fp32 and bf16 "
                        "peaks measured with a large matrix product at the start)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.set_defaults(run=_run_bench)


COMMANDS = [add_list]
COMMANDS += [add_predict, add_embed]
COMMANDS += [add_summary, add_compare, add_draw, add_explore]
COMMANDS += [add_train, add_evaluate]
COMMANDS += [add_finetune]
COMMANDS += [add_export, add_bench]


def _tag_row(tag: hub.WeightsTag, cached) -> list[str]:
    source = {"torchvision": "torchvision", "timm": f"hf:{tag.location}", "facenet": "facenet-pytorch"}[tag.source]
    return [tag.name, source, tag.license, f"{tag.top1:.2f}%" if tag.top1 else "-", f"{tag.size_mb:.1f} MB",
            "yes" if cached else "no"]


def _run_weights(args) -> int:
    if args.words[:1] == ["download"]:
        if len(args.words) < 2:
            raise ConfigError("name what to download: inceptorch weights download MODEL.TAG (see: inceptorch weights)")
        for name in args.words[1:]:
            model, _, tag = name.partition(".")
            found = hub.find_tag(model, tag or True)
            print(f"{found.name}: {hub.weights_file(found, force=args.force)}")
        return 0
    if len(args.words) > 1:
        raise ConfigError(f"give one model name or none, not {' '.join(args.words)} (or: weights download MODEL.TAG)")
    names = hub.list_pretrained(args.words[0] if args.words else None)
    if not names:
        raise ConfigError(f"{args.words[0]} has no pretrained weights: models with them are "
                          f"{', '.join(hub.DEFAULT_TAGS)}")
    tags = [hub.TAGS[n] for n in names]
    cached = {t.name: hub.cached_file(t) for t in tags}
    print(text_table(["tag", "source", "license", "top-1", "size", "cached"],
                     [_tag_row(t, cached[t.name]) for t in tags], left=3))
    if any(cached.values()):
        print("\ncached files:\n" + "\n".join(f"  {name}: {path}" for name, path in cached.items() if path))
    notes = [f"  {t.name}: {t.note}" for t in tags if t.note]
    defaults = ", ".join(f"{m}.{t}" for m, t in hub.DEFAULT_TAGS.items() if f"{m}.{t}" in names)
    print("\ntop-1: ImageNet-1k validation accuracy as published (torchvision's weight enums, timm's results "
          "tables); size: torchvision's as published, the others their tensors' bytes; --pretrained alone "
          f"picks {defaults}")
    if notes:
        print("notes:\n" + "\n".join(notes))
    return 0


def add_weights(sub):
    p = sub.add_parser("weights", help="pretrained weights by name: list them, or download one",
                       description="`inceptorch weights [MODEL]` lists every pretrained tag: source, reported "
                                   "ImageNet top-1, file size, license and the local file when it is already "
                                   "cached (torch.hub's, the Hugging Face or facenet-pytorch's cache). "
                                   "`inceptorch weights download MODEL.TAG ...` fetches them (with a progress bar "
                                   "and the hash check; nothing is fetched for a cached file).")
    p.add_argument("words", nargs="*", metavar="MODEL | download MODEL.TAG",
                   help="a model name, or download and the tags to fetch")
    p.add_argument("--force", action="store_true", help="download again even where a cached file exists")
    p.set_defaults(run=_run_weights)


COMMANDS += [add_weights]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
        if word == "--pretrained" and following not in hub.TAGS and (
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
