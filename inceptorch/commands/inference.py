"""Commands that run a model on images or for speed: predict, embed, export, bench."""

import argparse
import json
import sys

from ..errors import ConfigError
from ..inference import BACKENDS, EXPORT_FORMATS, PRECISIONS, benchmark, export
from ..models import create_model
from ..predict import embed, load_for_inference, predict, prediction_table
from .options import (
    add_checkpoint_options,
    add_command,
    add_input_size,
    add_output,
    add_pretrained,
    inference_model,
    optimized,
    warn_unreadable,
)


def _run_predict(args) -> int:
    """Predicts the top classes of each image. Unreadable files are named in a warning and the others
    still predicted; exit status 0 when at least one image was predicted, 2 when none could be."""
    model, preprocessing = inference_model(args)
    model = optimized(args, model, preprocessing)
    results = predict(model, args.images, topk=args.topk, preprocessing=preprocessing, batch_size=args.batch_size)
    warn_unreadable(r for r in results if r.error)
    good = [r for r in results if not r.error]
    if args.format == "json":
        print(json.dumps([r.to_dict() for r in results], indent=2))
    elif good:
        print(prediction_table(good))
    if not good:
        print("inceptorch: error: none of the images could be read", file=sys.stderr)
        return 2
    return 0


def add_predict(sub):
    p = add_command(sub, "predict", _run_predict, "class names and probabilities for image files")
    add_checkpoint_options(p)
    p.add_argument("--topk", type=int, default=5, help="classes shown per image")
    p.add_argument("--format", choices=("table", "json"), default="table")


def _run_embed(args) -> int:
    """Writes one feature vector per image (the global average of the last feature map): .npy (rows in the
    order of OUT.files.txt) or .csv (one row per file)."""
    model, preprocessing = inference_model(args)
    model = optimized(args, model, preprocessing, features=True)
    shape, skipped = embed(model, args.images, args.out, preprocessing=preprocessing, batch_size=args.batch_size)
    warn_unreadable(skipped)
    print(f"{shape[0]} images x {shape[1]} features -> {args.out}")
    return 0


def add_embed(sub):
    p = add_command(sub, "embed", _run_embed, "pooled feature vectors of image files, for use in other tools")
    add_checkpoint_options(p)
    add_output(p, "--out", (".npy", ".csv"), required=True, help="features.npy or features.csv")


def _run_export(args) -> int:
    """Writes MODEL with the weights of CKPT as an ONNX file (checked with onnx.checker), OpenVINO IR
    (FILE.xml beside FILE.bin, fp32) or a frozen TorchScript module, then runs the file on a random input
    (onnxruntime, OpenVINO or torch.jit.load) and compares its outputs with PyTorch's. Exit status 1 if
    they differ by more than 1e-4."""
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
    p = add_command(sub, "export", _run_export,
                    "write a model to ONNX, OpenVINO IR or TorchScript, checked against PyTorch")
    p.add_argument("model", help="model name (see: inceptorch list)")
    p.add_argument("--weights", metavar="CKPT", help="checkpoint: inceptorch's own, or a torchvision/timm file")
    add_pretrained(p)
    p.add_argument("--random-init", action="store_true", help="export untrained weights (without --weights)")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="onnx")
    add_output(p, "--out", required=True, metavar="FILE", help="file to write")
    add_input_size(p, "the model's own, batch 1")
    p.add_argument("--dynamic-batch", action="store_true", help="accept any batch size, not only --input's")


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(b) for b in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of batch sizes like 1,16")
    return sizes


def _run_bench(args) -> int:
    """Times, in this one process, each model's inference paths: torchvision's or timm's eager model with
    the same weights (where one exists), inceptorch eager, optimize_for_inference in fp32, bf16 (where the
    CPU has it) and int8, onnxruntime and OpenVINO; images/s, ms per batch, achieved GFLOP/s, share of the
    CPU's measured fp32 and bf16 peaks, top-1 agreement with fp32, and the ratios to the first path and to
    the best peer engine. The CPU's name and ISA flags head the notes. Medians of rounds that interleave
    the paths, after warm-up."""
    report = benchmark(args.models, batches=args.batch, train_batches=args.batch if args.train else (),
                       input_size=args.input, threads=args.threads, peak_gflops=args.peak_gflops,
                       repeats=args.repeats, compile=args.compile, onnx=not args.no_onnx,
                       backend=args.backend, precision=args.precision, pretrained=args.pretrained)
    print(report.table())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(report.to_json() + "\n")
        print(f"results written to {args.json}")
    return 0


def add_bench(sub):
    p = add_command(sub, "bench", _run_bench,
                    "CPU throughput of the reference, eager, optimized and engine paths")
    p.add_argument("models", nargs="+", metavar="MODEL")
    p.add_argument("--batch", type=_batch_sizes, default=(1, 16), help="batch sizes, comma-separated (default 1,16)")
    add_input_size(p, "each model's own")
    p.add_argument("--train", action="store_true",
                   help="also time training steps (forward, backward, SGD step) at each batch size")
    p.add_argument("--compile", action="store_true",
                   help="also time optimize_for_inference(compile=True) (minutes of compilation per shape)")
    p.add_argument("--no-onnx", action="store_true", help="leave out the onnxruntime and OpenVINO paths")
    p.add_argument("--backend", default="all", choices=("all", *BACKENDS[:-1]),
                   help="time only this backend's paths, beside the references and peers (default all)")
    p.add_argument("--precision", default="all", choices=("all", *PRECISIONS[:-1]),
                   help="time only this precision's paths, beside the references and peers (default all)")
    add_pretrained(p)
    p.add_argument("--threads", type=int, help="threads for PyTorch and onnxruntime (default: PyTorch's)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    p.add_argument("--peak-gflops", type=float,
                   help="the CPU's fp32 peak, for the share-of-peak column (default: the fp32 and bf16 "
                        "peaks measured with a large matrix product at the start)")
    add_output(p, "--json", metavar="FILE", help="also write the results as JSON")

